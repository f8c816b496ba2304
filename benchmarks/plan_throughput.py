"""Configurations evaluated per second by `costplan plan` (target: millions per second on a large search).

Two rates per search: end to end (the whole `plan.search` call: resolving the model, each method's
FLOPs, memory and step shape, every GPU's constants and offers, the layout grid, then the
evaluation), and the evaluation alone (the engine's vectorized memory, step time and cost over
every layout). A fine-tuning search holds a few thousand layouts, so its end-to-end rate is set by
the set-up, which does not grow with the grid.

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

    from costplan import plan

    evaluating = [0.0]
    evaluate = plan._evaluate

    def timed(*args, **kwargs):  # the time spent in the evaluation proper
        start = time.perf_counter()
        try:
            return evaluate(*args, **kwargs)
        finally:
            evaluating[0] += time.perf_counter() - start

    plan._evaluate = timed
    table = Table(title=f"plan search throughput ({platform.machine()}, {os.cpu_count()} cores)", title_justify="left")
    for column in ("case", "configurations", "median s", "configurations / s", "evaluation s", "evaluated / s",
                   "Pareto points"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for name, model, methods, tokens, deadline, extra in CASES:
        plan.search(model, methods, tokens=tokens, deadline_seconds=deadline, **extra)  # warm the table caches
        times, inner, result = [], [], None
        for _ in range(args.repeat):
            evaluating[0] = 0.0
            start = time.perf_counter()
            result = plan.search(model, methods, tokens=tokens, deadline_seconds=deadline, **extra)
            times.append(time.perf_counter() - start)
            inner.append(evaluating[0])
        assert result is not None
        med, med_inner = statistics.median(times), statistics.median(inner)
        table.add_row(name, f"{result.evaluated:,}", f"{med:.4f}", f"{result.evaluated / med:,.0f}", f"{med_inner:.4f}",
                      f"{result.evaluated / med_inner:,.0f}", str(len(result.pareto)))
        rows.append({"case": name, "configurations": result.evaluated, "median_s": round(med, 4),
                     "configurations_per_s": round(result.evaluated / med), "evaluation_s": round(med_inner, 4),
                     "evaluated_per_s": round(result.evaluated / med_inner)})
    Console().print(table)
    if args.csv:
        from costplan.files import write_csv

        write_csv(args.csv, rows)


if __name__ == "__main__":
    main()
