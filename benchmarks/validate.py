"""Accuracy against published measurements, beside the naive rules: the summary of `costplan validate`
by kind and split (fit: the rows the constants were fitted on; holdout: the rest), optionally as CSV.

    python benchmarks/validate.py [--csv tables/generated/validation.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()
    from rich.console import Console

    from costplan.render import validation_view
    from costplan.validate import summarize, validate

    results, skipped = validate()
    summary = summarize(results)
    Console().print(validation_view(results, summary, skipped))
    if args.csv:
        from costplan.files import write_csv

        write_csv(args.csv, [{"kind": s.kind, "split": s.split, "rows": s.rows, "median_abs_error": s.median_abs,
                              "worst_error": s.worst, "naive_median_abs_error": s.naive_median_abs,
                              "naive_worst_error": s.naive_worst} for s in summary])


if __name__ == "__main__":
    main()
