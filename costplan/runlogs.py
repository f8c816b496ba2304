"""Learning from the user's own finished runs: ``costplan calibrate --from-log FILE``.

A run's log gives its measured training speed; ``estimate`` with the run's settings gives the speed
model's prediction; their ratio is a correction that later estimates of the same model, method
and GPU type apply (as a calibration profile's measured step does). Two log formats are read:

- the Hugging Face Trainer's ``trainer_state.json`` (saved with every checkpoint): its last
  ``log_history`` entry holds ``train_runtime`` and ``train_samples_per_second``; tokens come from
  ``num_input_tokens_seen`` when the run logged it (``include_num_input_tokens_seen=True``), else
  samples x the sequence length given;
- torchtune's metric log (``DiskLogger``, ``log_<time>.txt``): lines ``Step N | key:value ...`` with
  ``tokens_per_second_per_gpu``; the median over steps after the first tenth (warm-up) is taken.

Corrections are saved per GPU type in ``$COSTPLAN_CACHE/runs/<gpu>.json`` (written atomically),
apart from the calibration profiles, and listed by ``estimate`` in its assumptions.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date
from pathlib import Path
from typing import Any

from costplan.errors import CostplanError
from costplan.files import write_atomically
from costplan.profile import Correction, runs_path
from costplan.record import record
from costplan.tables import read_json

MAX_LOG_BYTES = 64 * 2**20


@record
class MeasuredRun:
    """What a log says about a finished run."""

    tokens_per_second_per_gpu: float
    format: str
    detail: str


def read_log(path: str | Path, *, seq_len: int | None, gpus: int) -> MeasuredRun:
    """The measured speed in a Trainer ``trainer_state.json`` or a torchtune metric log."""
    path = Path(path)
    if path.suffix == ".json" or path.name == "trainer_state.json":
        return _trainer_state(path, seq_len=seq_len, gpus=gpus)
    return _torchtune_log(path)


def _trainer_state(path: Path, *, seq_len: int | None, gpus: int) -> MeasuredRun:
    data = read_json(path, "trainer_state.json", nonfinite=True)
    history = data.get("log_history") if isinstance(data, dict) else None
    if not isinstance(history, list) or not history:
        raise CostplanError(f"{path} has no log_history: not a Hugging Face trainer_state.json.")
    final = next((e for e in reversed(history) if isinstance(e, dict) and "train_runtime" in e), None)
    if final is None:
        raise CostplanError(f"{path} has no train_runtime: the run did not finish (or is not a Trainer state).")
    runtime = _positive(final.get("train_runtime"), "train_runtime", path)
    seen = next((e.get("num_input_tokens_seen") for e in reversed(history)
                 if isinstance(e, dict) and e.get("num_input_tokens_seen")), None)
    if seen:
        tokens = _positive(seen, "num_input_tokens_seen", path)
        how = f"{tokens:,.0f} input tokens seen in {runtime:,.0f} s"
    else:
        if seq_len is None:
            raise CostplanError(f"{path} does not log num_input_tokens_seen: give --seq-len to count tokens from "
                                "train_samples_per_second.")
        samples = _positive(final.get("train_samples_per_second"), "train_samples_per_second", path)
        tokens = samples * seq_len * runtime
        how = f"{samples:,.3g} samples/s x {seq_len} tokens over {runtime:,.0f} s"
    speed = tokens / runtime / gpus
    if not 0 < speed < math.inf:
        raise CostplanError(f"{path}: its tokens and train_runtime give {speed:.3g} tokens/s per GPU, not a "
                            "training speed.")
    return MeasuredRun(speed, "trainer_state.json", f"{how} on {gpus} GPU(s)")


_STEP = re.compile(r"^\s*Step\s+(\d+)\s*\|(.*)$")
_PAIR = re.compile(r"([A-Za-z_]+):\s*([-+0-9.eE]+)")


def _torchtune_log(path: Path) -> MeasuredRun:
    try:
        if not path.is_file():
            raise CostplanError(f"No log file at {path}.")
        if path.stat().st_size > MAX_LOG_BYTES:
            raise CostplanError(f"{path} is larger than {MAX_LOG_BYTES // 2**20} MiB; pass a metric log.")
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CostplanError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    speeds = []
    for line in text.splitlines():
        match = _STEP.match(line)
        if match:
            values = dict(_PAIR.findall(match.group(2)))
            if "tokens_per_second_per_gpu" in values:
                try:
                    speed = float(values["tokens_per_second_per_gpu"])
                except ValueError:  # e.g. "1.2.3": not a number, not a step's speed
                    continue
                if 0 < speed < math.inf:
                    speeds.append(speed)
    if not speeds:
        raise CostplanError(f"{path} has no 'Step N | ... tokens_per_second_per_gpu:...' lines: not a torchtune "
                            "metric log.")
    steady = speeds[len(speeds) // 10:] or speeds
    import statistics

    return MeasuredRun(statistics.median(steady), "torchtune log",
                       f"median of {len(steady)} steps' tokens_per_second_per_gpu")


def _positive(value: Any, name: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
        raise CostplanError(f"{path}: {name} must be a positive number, got {value!r}.")
    return float(value)


def load_corrections(gpu_key: str) -> tuple[Correction, ...]:
    """Corrections learned from logs for this GPU type (none when there is no readable file)."""
    path = runs_path(gpu_key)
    if not path.is_file():
        return ()
    try:
        data = read_json(path, "run calibration file")
        return tuple(Correction(float(e["factor"]), str(e["model"]), str(e["method"]), str(e["source"]), gpu_key)
                     for e in data["corrections"] if 0.05 < float(e["factor"]) < 20)
    except (CostplanError, KeyError, TypeError, ValueError):
        return ()  # a damaged file is ignored, never fatal


def save_correction(gpu_key: str, correction: Correction) -> Path:
    """Add (or replace) the correction for its model and method in the GPU type's file."""
    path = runs_path(gpu_key)
    kept = [c for c in load_corrections(gpu_key) if (c.model, c.method) != (correction.model, correction.method)]
    entries = [{"model": c.model, "method": c.method, "factor": c.factor, "source": c.source}
               for c in (*kept, correction)]
    write_atomically(path, json.dumps({"version": 1, "gpu_key": gpu_key, "updated": date.today().isoformat(),
                                       "corrections": entries}, indent=2))
    return path


def learn(log: str | Path, model: str, method: str, *, gpu: str, gpus: int = 1, seq_len: int | None = None,
          **options: Any) -> tuple[Correction, MeasuredRun, float, Path]:
    """Read ``log``, predict the same run with ``estimate`` (its settings pinned), save the ratio.

    Returns (correction, measurement, predicted tokens/s per GPU, where it was saved)."""
    from costplan.api import estimate
    from costplan.hardware import gpu as find_gpu

    device = find_gpu(gpu)
    measured = read_log(log, seq_len=seq_len, gpus=gpus)
    est = estimate(model, method, gpu=device.key, gpus=gpus, seq_len=seq_len, tokens=1e8, price=0.0,
                   startup_seconds=0.0, **options)
    base = est.correction_applied or 1.0
    predicted = est.tokens_per_second / est.gpus * base  # without an earlier correction for this run
    if not measured.tokens_per_second_per_gpu > 0:
        raise CostplanError(f"The log's speed rounds to 0 tokens/s per GPU ({measured.detail}): nothing to learn.")
    factor = predicted / measured.tokens_per_second_per_gpu
    if not 0.05 < factor < 20:
        raise CostplanError(f"The log's speed ({measured.tokens_per_second_per_gpu:,.0f} tokens/s per GPU) is "
                            f"{factor:.3g}x off the prediction: check --gpus, --seq-len and the method.")
    correction = Correction(factor, est.model.name, est.method.key,
                            f"{measured.format} {Path(log).name}, {date.today().isoformat()}: {measured.detail}",
                            device.key)
    return correction, measured, predicted, save_correction(device.key, correction)
