"""Accuracy of the analytical model against traced steps of the real model code (meta device).

    python benchmarks/verify_accuracy.py [--full] [--csv tables/generated/verification_summary.csv]

The full per-check table is `costplan verify --all --full` (tables/verification.csv).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()
    from rich.console import Console

    from costplan.render import verify_matrix_table
    from costplan.verify import matrix, run_matrix, summarize

    results = run_matrix(matrix(full=args.full))
    Console().print(verify_matrix_table(results, summarize(results)))
    if args.csv:
        from costplan.files import write_csv

        write_csv(args.csv, [{"case": r.case.label, "length": r.length, "params_exact": r.params_exact,
                                         "flops_error": r.flops_error, "peak_error": r.peak_error,
                                         "largest_term": r.largest_term} for r in results])


if __name__ == "__main__":
    main()
