"""What users hand costplan, in bulk: every file of a folder run through the command that reads it.

    python benchmarks/input_sweep.py --from DIR --adapters DIR --configs DIR --logs DIR [--csv FILE]

Each folder holds files of one kind, gathered from public repositories (they are not tracked here):
- ``--from``: training configs (Axolotl, torchtune, LLaMA-Factory YAML; TrainingArguments JSON), run as
  ``estimate --from FILE`` and again with ``-m 8b`` (what a user does when the file names a model that is
  not cached);
- ``--adapters``: peft ``adapter_config.json`` files, as ``estimate --adapter FILE`` with and without ``-m 8b``;
- ``--configs``: model ``config.json`` files, as ``estimate -m FILE`` for LoRA and for inference;
- ``--logs``: Trainer ``trainer_state.json`` files, as ``calibrate --from-log FILE`` with and without
  ``--seq-len`` (into a throwaway cache).

The table counts, per kind: runs, answers (exit 0, valid JSON without NaN), one-line refusals (exit 2,
one ``Error:`` line), and failures: a traceback, any other exit code, a refusal of more than one line,
an answer that is not JSON, or a run over 3 s. The most frequent refusals are listed below it. The
script exits 1 when any run failed.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SLOW_S = 3.0


def _runs(kind: str, path: Path) -> list[list[str]]:
    if kind == "from":
        return [["estimate", "--from", str(path), "--json"], ["estimate", "--from", str(path), "-m", "8b", "--json"]]
    if kind == "adapters":
        return [["estimate", "--adapter", str(path), "--json"],
                ["estimate", "--adapter", str(path), "-m", "8b", "--json"]]
    if kind == "configs":
        return [["estimate", "-m", str(path), "--method", m, "--json"] for m in ("lora", "inference")]
    return [["calibrate", "--from-log", str(path), "-m", "8b", "--method", "lora", "--gpu", "a100", *extra]
            for extra in (["--seq-len", "1024"], [])]


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} in the JSON answer")


def sweep(kind: str, folder: Path) -> tuple[dict, collections.Counter, list[str]]:
    from click.testing import CliRunner

    from costplan.cli import cli

    runner = CliRunner()
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".yaml", ".yml"))
    counts = {"kind": kind, "files": len(files), "runs": 0, "answers": 0, "refusals": 0, "failures": 0}
    reasons: collections.Counter = collections.Counter()
    failures: list[str] = []
    for path in files:
        for args in _runs(kind, path):
            started = time.perf_counter()
            result = runner.invoke(cli, args, catch_exceptions=True)
            seconds = time.perf_counter() - started
            counts["runs"] += 1
            problem = None
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                problem = "traceback: " + "".join(traceback.format_exception(result.exception))[-300:]
            elif result.exit_code == 0:
                if "--json" in args:
                    try:
                        json.loads(result.stdout, parse_constant=_refuse_constant)
                    except ValueError as exc:
                        problem = f"answer is not JSON: {exc}"
            elif result.exit_code == 2:
                lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("Warning")]
                if len(lines) != 1 or not lines[0].startswith("Error: "):
                    problem = "refusal of more than one line"
                else:
                    reasons[re.sub(re.escape(str(path)), "FILE", lines[0])[:110]] += 1
            else:
                problem = f"exit code {result.exit_code}"
            if problem is None and seconds > SLOW_S:
                problem = f"{seconds:.1f} s"
            if problem is not None:
                counts["failures"] += 1
                failures.append(f"{' '.join(args)}: {problem}")
            elif result.exit_code == 0:
                counts["answers"] += 1
            else:
                counts["refusals"] += 1
    return counts, reasons, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for kind in ("from", "adapters", "configs", "logs"):
        parser.add_argument(f"--{kind}", type=Path, help=f"Folder of files for the {kind} sweep.")
    parser.add_argument("--csv", type=Path, help="Also write the table as CSV.")
    args = parser.parse_args()
    os.environ["COSTPLAN_CACHE"] = tempfile.mkdtemp(prefix="costplan-sweep-")  # learned corrections go here
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows, failed = [], []
    for kind in ("from", "adapters", "configs", "logs"):
        folder = getattr(args, kind)
        if folder is None:
            continue
        if not folder.is_dir():
            sys.exit(f"{folder} is not a folder.")
        counts, reasons, failures = sweep(kind, folder)
        rows.append(counts)
        failed += failures
        print(f"\n{kind}: most frequent refusals")
        for reason, n in reasons.most_common(8):
            print(f"  {n:4d}  {reason}")
    print(f"\n{'kind':10s} {'files':>6s} {'runs':>6s} {'answers':>8s} {'refusals':>9s} {'failures':>9s}")
    for r in rows:
        print(f"{r['kind']:10s} {r['files']:6d} {r['runs']:6d} {r['answers']:8d} {r['refusals']:9d} {r['failures']:9d}")
    for line in failed[:20]:
        print("FAILED", line)
    if args.csv and rows:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
