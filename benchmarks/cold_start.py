"""Cold-start latency of `costplan estimate` (a fresh process each time), and in-process time.

    python benchmarks/cold_start.py [--runs 15] [--csv tables/generated/cold_start.csv]

Targets: under 0.3 s cold on a 2-core machine (issue 2); under 0.15 s is the mission's bar.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = [
    ("lora 7b", ["estimate", "--model", "7b", "--method", "lora", "--tokens", "100M"]),
    ("full 70b --json", ["estimate", "--model", "70b", "--method", "full", "--json"]),
    ("inference 8b --brief", ["estimate", "--model", "8b", "--method", "inference", "--brief"]),
    ("--help", ["--help"]),
]


def cold(commands: list[list[str]], runs: int) -> list[list[float]]:
    """Seconds of each command in a fresh process, ``runs`` times. The commands take turns (one run
    of each, then the next round), so a slow spell of a shared machine falls on all of them alike."""
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for command, seconds in zip(commands, times, strict=True):
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            seconds.append(time.perf_counter() - start)
    return times


def warm(runs: int) -> list[float]:
    import costplan

    costplan.estimate("7b", "lora")  # load the tables once
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        costplan.estimate("7b", "lora", tokens=1e8)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--csv", type=Path, help="also write the rows to this CSV file")
    args = parser.parse_args()
    _compile_bytecode()
    commands = [[sys.executable, "-c", "pass"]] + [[sys.executable, "-m", "costplan", *cli] for _, cli in CASES]
    names = ["python -c pass (floor)"] + [f"costplan {name}" for name, _ in CASES]
    rows = list(zip(names, cold(commands, args.runs), strict=True))
    rows.append(("costplan.estimate() in-process", warm(args.runs * 10)))

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cold start, {args.runs} runs each ({platform.processor() or platform.machine()}, "
                        f"{os.cpu_count()} cores, Python {platform.python_version()})", title_justify="left")
    for column in ("case", "median s", "min s", "max s"):
        table.add_column(column, justify="left" if column == "case" else "right")
    out = []
    for name, times in rows:
        med = statistics.median(times)
        table.add_row(name, f"{med:.4f}", f"{min(times):.4f}", f"{max(times):.4f}")
        out.append({"case": name, "median_s": round(med, 4), "min_s": round(min(times), 4),
                    "max_s": round(max(times), 4), "runs": len(times)})
    Console().print(table)
    if args.csv:
        from costplan.files import write_csv

        write_csv(args.csv, out)


def _compile_bytecode() -> None:
    """Write current bytecode for the package first, as ``pip install`` does: where
    PYTHONDONTWRITEBYTECODE is set (some sandboxes and containers) an edited checkout would
    otherwise recompile every changed module at each start, and this would time the compiler."""
    import compileall

    import costplan

    compileall.compile_dir(str(Path(costplan.__file__).parent), quiet=1)


if __name__ == "__main__":
    main()
