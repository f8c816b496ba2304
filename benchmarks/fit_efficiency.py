"""Fit the speed model's constants (tables/efficiency.csv) on the `fit` split of tables/published_runs.csv.

    python benchmarks/fit_efficiency.py            # fit, print the constants and both splits' errors
    python benchmarks/fit_efficiency.py --write    # also write the fitted values into tables/efficiency.csv
    python benchmarks/fit_efficiency.py --only dequant_ops/int4,run_goodput/*   # move only these constants

The loss is the mean Huber loss of the log error of the predicted against the published figure
(quadratic up to 25%, linear beyond, so that a few odd rows cannot pull the constants), each kind
(whole runs, throughput tables, fine-tuning, decode) weighted equally. Only rows whose split is `fit` are
used; `costplan validate` reports the held-out rows beside them. Coordinate descent with a golden
section search per constant, in log space, inside each constant's plausible range (low, high).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from costplan.profile import Profile  # noqa: E402
from costplan.tables import read_table  # noqa: E402
from costplan.validate import summarize, validate  # noqa: E402

KINDS = ("pretrain", "throughput", "finetune_throughput", "decode")
HUBER = 0.25
# (kind, scope) of every constant the fit moves; the rest stay as the table has them.
FITTED = [("gemm_efficiency", "ampere"), ("gemm_efficiency", "hopper"), ("gemm_efficiency", "ada"),
          ("attention_efficiency", "ampere"), ("attention_efficiency", "hopper"),
          ("attention_efficiency", "hopper-fused"), ("bandwidth_efficiency", "*"),
          ("elementwise_hidden", "*"), ("elementwise_ffn", "*"), ("elementwise_hidden", "fused"),
          ("elementwise_ffn", "fused"), ("dispatch_seconds", "eager"), ("dispatch_seconds", "compiled"),
          ("dispatch_seconds", "native"), ("dequant_bandwidth", "int8"), ("dequant_bandwidth", "int4"),
          ("dequant_ops", "int8"), ("dequant_ops", "int4"), ("run_goodput", "*"), ("collective_latency", "*"),
          ("fp8_gemm_factor", "*")]


def profile_with(rows: tuple[dict[str, str], ...], values: dict[tuple[str, str], float]) -> Profile:
    changed = []
    for row in rows:
        key = (row["kind"], row["scope"])
        changed.append({**row, "value": f"{values[key]:.6g}"} if key in values else row)
    return Profile(name="fit", calibrated=False, rows=tuple(changed))


def loss(rows: tuple[dict[str, str], ...], values: dict[tuple[str, str], float]) -> float:
    results, _ = validate(KINDS, split="fit", profile=profile_with(rows, values))
    per_kind: dict[str, list[float]] = {}
    for r in results:
        error = abs(math.log(r.predicted / r.reported))
        huber = 0.5 * error**2 if error <= HUBER else HUBER * (error - 0.5 * HUBER)
        per_kind.setdefault(r.kind, []).append(huber)
    return statistics.mean(statistics.mean(v) for v in per_kind.values())


def golden(f, low: float, high: float, iterations: int) -> float:
    ratio = (math.sqrt(5) - 1) / 2
    a, b = math.log(low), math.log(high)
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(math.exp(c)), f(math.exp(d))
    for _ in range(iterations):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(math.exp(d))
    return math.exp((a + b) / 2)


def fit(sweeps: int = 3, iterations: int = 10, only: list[tuple[str, str]] | None = None
        ) -> dict[tuple[str, str], float]:
    rows = read_table("efficiency")
    by_key = {(r["kind"], r["scope"]): r for r in rows}
    moved = only or FITTED
    values = {key: float(by_key[key]["value"]) for key in moved}
    best = loss(rows, values)
    print(f"start: loss {best:.4f}", file=sys.stderr)
    for sweep in range(sweeps):
        for key in moved:
            low, high = float(by_key[key]["low"]), float(by_key[key]["high"])

            def f(x: float, key: tuple[str, str] = key) -> float:
                return loss(rows, {**values, key: x})

            candidate = golden(f, low, high, iterations)
            value = f(candidate)
            if value < best:
                values[key], best = candidate, value
            print(f"sweep {sweep + 1} {key[0]}/{key[1]} = {values[key]:.4g}  loss {best:.4f}", file=sys.stderr)
    return values


def write(values: dict[tuple[str, str], float], note: str) -> None:
    path = ROOT / "tables" / "efficiency.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    header = [line for line in lines if line.lstrip().startswith("#")]
    body = [line for line in lines if not line.lstrip().startswith("#")]
    rows = list(csv.DictReader(body))
    for row in rows:
        key = (row["kind"], row["scope"])
        if key in values:
            row["value"] = f"{values[key]:.4g}"
            row["source"] = note + "; " + row["source"].split("; fitted")[0].removeprefix(note + "; ")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    from costplan.files import write_atomically

    write_atomically(path, "".join(header) + buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--only", help="kind/scope,... : fit these constants, keep the others as the table has them")
    args = parser.parse_args()
    only = [tuple(item.strip().split("/", 1)) for item in args.only.split(",")] if args.only else None
    if only and not set(only) <= set(FITTED):
        parser.error(f"--only takes constants the fit moves: {', '.join(f'{k}/{s}' for k, s in FITTED)}")
    values = fit(args.sweeps, only=only)  # type: ignore[arg-type]
    for key, value in values.items():
        print(f"{key[0]:24s} {key[1]:10s} {value:.4g}")
    if args.write:
        write(values, "fitted on the fit split of tables/published_runs.csv by benchmarks/fit_efficiency.py")
        read_table.cache_clear()
    results, _ = validate(KINDS, profile=profile_with(read_table("efficiency"), values))
    for s in summarize(results):
        naive = f"{s.naive_median_abs:.1%}" if s.naive_median_abs is not None else "-"
        print(f"{s.kind:20s} {s.split:8s} rows {s.rows:4d}  median {s.median_abs:6.1%}  worst {s.worst:+7.1%}  "
              f"naive {naive}")


if __name__ == "__main__":
    main()
