"""Run every benchmark, each printing its table and writing its CSV to benchmarks/output/ (untracked).

    python benchmarks/run_all.py [--skip-verify] [--skip-calibration] [--out tables/generated]

The tracked tables under tables/generated/ are rewritten only when asked with --out tables/generated.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "output"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-verify", action="store_true")
    parser.add_argument("--skip-calibration", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT,
                        help="Folder for the CSV files [default: benchmarks/output; tables/generated to update the "
                             "tracked tables].")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [("cold_start.py", ["--runs", "10"]), ("plan_throughput.py", []), ("validate.py", []),
            ("serve_latency.py", [])]
    if not args.skip_verify:
        jobs.append(("verify_accuracy.py", []))
    if not args.skip_calibration:
        jobs.append(("calibration.py", []))
    failed = []
    for script, extra in jobs:
        csv = args.out / (Path(script).stem + ".csv")
        print(f"== {script}", flush=True)
        if subprocess.run([sys.executable, str(HERE / script), *extra, "--csv", str(csv)], cwd=HERE.parent).returncode:
            failed.append(script)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
