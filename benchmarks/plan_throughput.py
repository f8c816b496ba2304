"""Configurations evaluated per second by `costplan plan` (target: millions per second on a large search).

    python benchmarks/plan_throughput.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

CASES = [
    ("70b lora+qlora, 48h deadline", "70b", ("lora", "qlora"), 1e9, 48 * 3600.0, {}),
    ("8b full", "8b", ("full",), 1e9, None, {}),
    ("mixtral lora", "mixtral-8x7b", ("lora",), 1e9, None, {}),
    ("70b pretrain+cpt, Megatron TP/PP, bf16+fp8, any GPU at $2", "70b", ("cpt", "pretrain"), 1e12, None,
     {"framework": "megatron", "max_gpus": 16384, "price": 2.0, "precisions": ("bf16", "fp8")}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--csv", type=Path, help="also write the rows to this CSV file")
    args = parser.parse_args()
    rows = []
    from rich.console import Console
    from rich.table import Table

    from costplan.plan import search

    table = Table(title=f"plan search throughput ({platform.machine()}, {os.cpu_count()} cores)", title_justify="left")
    for column in ("case", "configurations", "median s", "configurations / s", "Pareto points"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for name, model, methods, tokens, deadline, extra in CASES:
        search(model, methods, tokens=tokens, deadline_seconds=deadline, **extra)  # warm the table caches
        times, result = [], None
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = search(model, methods, tokens=tokens, deadline_seconds=deadline, **extra)
            times.append(time.perf_counter() - start)
        assert result is not None
        med = statistics.median(times)
        table.add_row(name, f"{result.evaluated:,}", f"{med:.3f}", f"{result.evaluated / med:,.0f}",
                      str(len(result.pareto)))
        rows.append({"case": name, "configurations": result.evaluated, "median_s": round(med, 4),
                     "configurations_per_s": round(result.evaluated / med)})
    Console().print(table)
    if args.csv:
        from costplan.files import write_csv

        write_csv(args.csv, rows)


if __name__ == "__main__":
    main()
