"""Time to answer through `costplan serve`'s API: median of 100 estimates over HTTP (one kept-alive
connection to a real uvicorn server on 127.0.0.1), beside the same command run in-process.

    python benchmarks/serve_latency.py [--requests 100] [--csv tables/generated/serve_latency.csv]

Needs the serve extra (pip install -e '.[serve]').
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import statistics
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import serving  # noqa: E402

CASES = [  # (name, endpoint, query, share of --requests)
    ("estimate 7b lora 100M", "estimate", "model=7b&method=lora&tokens=100M", 1.0),
    ("estimate 70b full, layout search", "estimate", "model=70b&method=full&tokens=1B", 0.2),
    ("compare 7b (7 approaches)", "compare", "model=7b&tokens=100M", 0.2),
    ("plan 7b lora, every GPU", "plan", "model=7b&method=lora&tokens=100M", 0.2),
]


def over_http(base: str, endpoint: str, query: str, requests: int) -> list[float]:
    host = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(host.hostname, host.port, timeout=120)
    path = f"/api/{endpoint}?{query}"
    times = []
    for index in range(requests + 3):  # three warm-ups
        start = time.perf_counter()
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"{path}: HTTP {response.status} {body[:200]!r}")
        if index >= 3:
            times.append(time.perf_counter() - start)
    connection.close()
    return times


def in_process(endpoint: str, query: str, requests: int) -> list[float]:
    """The same click command and argument list the server runs, without HTTP and the worker hop."""
    from costplan.web.args import build_args, single_values
    from costplan.web.workers import run_command

    args = build_args(endpoint, single_values(urllib.parse.parse_qsl(query)))
    run_command(args)
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        run_command(args)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--csv", type=Path, help="also write the rows to this CSV file")
    args = parser.parse_args()
    rows = []
    with serving() as base:
        for name, endpoint, query, share in CASES:
            count = max(5, round(args.requests * share))
            rows.append((f"HTTP {name}", count, over_http(base, endpoint, query, count)))
    count = args.requests
    rows.insert(1, ("in-process CLI estimate 7b lora 100M", count, in_process("estimate", CASES[0][2], count)))

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"costplan serve latency ({platform.processor() or platform.machine()}, {os.cpu_count()} "
                        f"cores, Python {platform.python_version()})", title_justify="left")
    for column in ("case", "requests", "median ms", "p90 ms", "min ms"):
        table.add_column(column, justify="left" if column == "case" else "right")
    out = []
    for name, count, times in rows:
        times_ms = sorted(t * 1000 for t in times)
        p90 = times_ms[min(len(times_ms) - 1, int(0.9 * len(times_ms)))]
        med = statistics.median(times_ms)
        table.add_row(name, str(count), f"{med:.2f}", f"{p90:.2f}", f"{times_ms[0]:.2f}")
        out.append({"case": name, "requests": count, "median_ms": round(med, 3), "p90_ms": round(p90, 3),
                    "min_ms": round(times_ms[0], 3)})
    Console().print(table)
    head = rows[0]
    print(f"estimate through the API: median {statistics.median(head[2]) * 1000:.1f} ms over {head[1]} requests")
    if args.csv:
        from costplan.files import write_csv

        write_csv(args.csv, out)


if __name__ == "__main__":
    main()
