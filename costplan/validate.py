"""``costplan validate``: predict published runs (``tables/published_runs.csv``) with the settings
their sources state, and compare.

No per-row tuning: every prediction uses the same default efficiencies as ``estimate``.

- pretraining and continual pretraining: GPU-hours = analytic FLOPs x tokens / (dense peak x
  default MFU); parallelism is assumed tuned (these runs use tensor/pipeline parallelism that the
  data-parallel communication model does not describe), so communication is not added. Where the
  source states an MFU, the MFU implied by its GPU-hours and our FLOPs is compared with it: a check
  of the FLOPs accounting.
- fine-tuning runs with a measured memory figure: the peak predicted for the stated model,
  method, rank/targets, sequence length, micro-batch, checkpointing and precision, compared as the
  source measured it (allocated: tensor peak; reserved: with allocator slack; nvidia-smi or
  unknown: with the CUDA context too).
- rows whose model is not a decoder we can rebuild, or whose settings are not stated, are listed as
  skipped with the reason.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from costplan.errors import CostplanError
from costplan.model import ModelSpec, preset
from costplan.tables import number, read_table
from costplan.units import GIB


@dataclass(frozen=True, slots=True)
class Validation:
    kind: str
    name: str
    quantity: str
    """``gpu_hours``, ``mfu`` or ``memory``."""
    predicted: float
    reported: float
    source: str
    detail: str

    @property
    def error(self) -> float:
        return self.predicted / self.reported - 1


@dataclass(frozen=True, slots=True)
class Skipped:
    kind: str
    name: str
    reason: str


_ARCH = re.compile(r"hidden=(\d+);layers=(\d+);heads=(\d+);kv_heads=(\d+);ffn=(\d+);vocab=(\d+)(.*)")


def _model(text: str, name: str) -> ModelSpec:
    try:
        return preset(text)
    except CostplanError:
        pass
    match = _ARCH.match(text.strip())
    if not match or "not llama-like" in match.group(7) or "ALiBi" in match.group(7):
        raise CostplanError(f"architecture {text!r} is not one costplan rebuilds")
    hidden, layers, heads, kv, ffn, vocab = (int(g) for g in match.groups()[:6])
    return ModelSpec(name=name, family="llama", hidden_size=hidden, num_layers=layers, num_heads=heads,
                     num_kv_heads=kv, head_dim=hidden // heads, ffn_size=ffn, vocab_size=vocab,
                     max_positions=1 << 20)


def _precision(text: str, gpu_key: str) -> str:
    from costplan.hardware import gpu

    text = text.lower()
    if "fp32" in text and "bf16" not in text:
        return "fp32"
    if "fp16" in text or "bf16" not in gpu(gpu_key).peak_flops:
        return "fp16"
    return "bf16"


def _lora_settings(detail: str) -> tuple[int, str]:
    rank = re.search(r"r\s*=\s*(\d+)", detail)
    targets = "all-linear" if "all linear" in detail.lower() else "q,v"
    return (int(rank.group(1)) if rank else 8), targets


class ValidationRun(NamedTuple):
    """What ``validate`` returns: the predicted rows and the skipped ones (unpacks as a pair)."""

    results: list[Validation]
    skipped: list[Skipped]

    def rows(self) -> list[dict[str, Any]]:
        return [dict(asdict(r), error=r.error) for r in self.results]

    def to_frame(self) -> Any:
        """The predicted rows as a pandas DataFrame (``pip install 'costplan[data]'``)."""
        from costplan.frames import to_frame

        return to_frame(self.rows())


def validate() -> ValidationRun:
    from costplan.api import estimate
    from costplan.hardware import gpu
    from costplan.profile import default_profile

    profile = default_profile()
    results: list[Validation] = []
    skipped: list[Skipped] = []
    for row in read_table("published_runs"):
        kind, name = row["kind"], row["name"]
        try:
            if not row["gpu"]:
                raise CostplanError("GPU not in costplan's table")
            spec = _model(row["model"], name)
            device = gpu(row["gpu"])
            seq = int(number(row, "seq_len") or 2048)
            if kind in ("pretrain", "cpt"):
                tokens, hours = number(row, "tokens"), number(row, "gpu_hours")
                derived = ""
                if not hours and number(row, "gpus") and number(row, "wall_days"):
                    hours = number(row, "gpus") * number(row, "wall_days") * 24  # type: ignore[operator]
                    derived = "; GPU-hours = GPUs x wall days x 24"
                if not tokens or not hours:
                    raise CostplanError("tokens or GPU-hours (or GPUs and days) not stated")
                precision = _precision(row["precision"], device.key)
                gpus = int(number(row, "gpus") or 0) or None
                batch = number(row, "global_batch_tokens")
                est = estimate(spec, kind if kind == "cpt" else "pretrain", gpu=device.key, gpus=gpus, tokens=tokens,
                               seq_len=seq, precision=precision, global_batch_tokens=batch, price=0.0,
                               profile=profile)
                results.append(Validation(kind, name, "gpu_hours", est.gpu_hours, hours, row["source"],
                                          f"{device.key} {precision}, {tokens:.3g} tokens, {est.gpus} GPUs, "
                                          f"MFU {est.mfu:.2f}" + derived))
                reported_mfu = number(row, "mfu_reported")
                if reported_mfu:
                    implied = est.flops_total / (hours * 3600 * device.peak(precision))
                    results.append(Validation(kind, name, "mfu", implied, reported_mfu, row["source"],
                                              "MFU implied by the reported GPU-hours and costplan's FLOPs"))
            elif kind in ("full", "lora", "qlora"):
                memory = number(row, "memory_reported_gib")
                if not memory:
                    raise CostplanError("no measured memory stated")
                micro = int(number(row, "micro_batch") or 0)
                if not micro or not number(row, "seq_len") or not row["grad_ckpt"]:
                    raise CostplanError("sequence length, micro-batch or checkpointing not stated")
                rank, targets = _lora_settings(row["method_detail"])
                gpus = int(number(row, "gpus") or 1)
                est = estimate(spec, kind, gpu=device.key, gpus=gpus, zero=3 if gpus > 1 else None, seq_len=seq,
                               micro_batch=micro, grad_ckpt=row["grad_ckpt"] == "true",
                               precision=_precision(row["precision"], device.key), lora_rank=rank,
                               lora_targets=targets, price=0.0, profile=profile)
                measured_as = row["memory_kind"] or "unknown"
                predicted = {"allocated": est.memory.peak_bytes, "reserved": est.memory.reserved_bytes}.get(
                    measured_as, est.memory.device_bytes)
                results.append(Validation(kind, name, "memory", predicted / GIB, memory, row["source"],
                                          f"{measured_as}; {kind} r={rank} {targets}, seq {seq}, micro-batch {micro}, "
                                          f"{gpus} GPU(s)"))
            else:
                raise CostplanError("inference settings (batch, prompt and output lengths) are not machine-readable")
        except CostplanError as exc:
            skipped.append(Skipped(kind, name, str(exc).rstrip(".")))
    return ValidationRun(results, skipped)


@dataclass(frozen=True, slots=True)
class ErrorSummary:
    kind: str
    quantity: str
    rows: int
    median_abs: float
    worst: float


def summarize(results: list[Validation]) -> list[ErrorSummary]:
    groups: dict[tuple[str, str], list[Validation]] = {}
    for r in results:
        key = ("pretrain/cpt" if r.kind in ("pretrain", "cpt") else "fine-tuning", r.quantity)
        groups.setdefault(key, []).append(r)
    return [ErrorSummary(kind, quantity, len(rows), statistics.median(abs(r.error) for r in rows),
                         max((r.error for r in rows), key=abs))
            for (kind, quantity), rows in sorted(groups.items())]
