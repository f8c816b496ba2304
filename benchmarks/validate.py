"""Accuracy against published runs: the same table as `costplan validate`, optionally as CSV.

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
    Console().print(validation_view(results, summarize(results), skipped))
    if args.csv:
        from costplan.files import write_csv

        write_csv(args.csv, [{"kind": r.kind, "run": r.name, "quantity": r.quantity,
                                         "predicted": r.predicted, "reported": r.reported, "error": r.error,
                                         "detail": r.detail, "source": r.source} for r in results])


if __name__ == "__main__":
    main()
