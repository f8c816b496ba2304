"""``costplan validate``: predict the published measurements in ``tables/published_runs.csv`` with
the settings each source states and costplan's defaults for the rest, beside the naive rule a user
would otherwise apply, per kind and per split.

Every prediction goes through ``costplan.api.estimate``, the function ``costplan estimate`` runs: no
private formula. The kinds:

- ``pretrain``: GPU-hours of whole pretraining (and continual pretraining) runs; naive rule
  ``6 N D / (0.4 x dense peak)``;
- ``throughput``: tokens/s per GPU of published training-throughput tables; naive rule
  ``0.4 x peak / 6 N``;
- ``finetune_throughput``: tokens/s per GPU of fine-tuning runs; the same naive rule;
- ``decode``: tokens/s of one sequence while generating; naive rule: the bandwidth roofline
  (datasheet bandwidth over the bytes of the weights);
- ``memory``: peak memory of fine-tuning runs as the source measured it (allocated, reserved, or
  the device total for nvidia-smi and unknown); naive rule: 16 bytes per parameter for full
  fine-tuning (mixed-precision Adam), the weights' bytes plus 20% for adapters;
- ``fit``: whether a setup ran or went out of memory: the verdict is right or wrong.

``split`` says which rows the speed model's constants were fitted on (``fit``) and which were
kept apart (``holdout``); splits go by source, never by row.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from costplan.errors import CostplanError
from costplan.model import ModelSpec, count_params, preset
from costplan.tables import number, read_table
from costplan.units import GIB

KINDS = ("pretrain", "throughput", "finetune_throughput", "decode", "memory", "fit")
NAIVE_MFU = 0.4
"""The one-line rule's utilisation: 6 N D / (0.4 x peak)."""


@dataclass(frozen=True, slots=True)
class Validation:
    kind: str
    name: str
    quantity: str
    predicted: float
    reported: float
    naive: float | None
    split: str
    group: str
    source: str
    detail: str

    @property
    def error(self) -> float:
        """Relative error (for ``fit``: 0 when the verdict is right, 1 when wrong)."""
        if self.kind == "fit":
            return float(self.predicted != self.reported)
        return self.predicted / self.reported - 1

    @property
    def naive_error(self) -> float | None:
        if self.naive is None:
            return None
        if self.kind == "fit":
            return float(self.naive != self.reported)
        return self.naive / self.reported - 1


@dataclass(frozen=True, slots=True)
class Skipped:
    kind: str
    name: str
    reason: str


class ValidationRun(NamedTuple):
    """What ``validate`` returns: the predicted rows and the skipped ones (unpacks as a pair)."""

    results: list[Validation]
    skipped: list[Skipped]

    def rows(self) -> list[dict[str, Any]]:
        return [dict(asdict(r), error=r.error, naive_error=r.naive_error) for r in self.results]

    def to_frame(self) -> Any:
        """The predicted rows as a pandas DataFrame (``pip install 'costplan[data]'``)."""
        from costplan.frames import to_frame

        return to_frame(self.rows())


_ARCH_KEYS = ("hidden", "layers", "heads", "kv_heads", "ffn", "vocab")


def architecture(text: str, name: str = "", positions: int | None = None) -> ModelSpec:
    """A preset, or an ``hidden=...;layers=...;...`` string as the published table writes shapes
    (learned position embeddings sized for ``positions``, the row's sequence length)."""
    text = text.strip()
    if "=" not in text:
        return preset(text)
    fields = dict(part.split("=", 1) for part in text.split(";") if "=" in part)
    if any(fields.get(k, "unknown") == "unknown" for k in _ARCH_KEYS):
        raise CostplanError("the source does not state every shape")
    hidden, heads = int(fields["hidden"]), int(fields["heads"])
    gated = fields.get("mlp", "gated") == "gated"
    learned = fields.get("pos", "rope") == "learned"
    return ModelSpec(name=name or "published", family="llama", hidden_size=hidden, num_layers=int(fields["layers"]),
                     num_heads=heads, num_kv_heads=int(fields["kv_heads"]),
                     head_dim=int(fields.get("head_dim", hidden // heads)), ffn_size=int(fields["ffn"]),
                     vocab_size=int(fields["vocab"]),
                     max_positions=(positions or 2048) if learned else 1 << 21,
                     tied_embeddings=fields.get("tied", "false") == "true", gated_mlp=gated,
                     activation="silu" if gated else "gelu", norm="rmsnorm" if gated else "layernorm",
                     learned_positions=learned)


def _int(row: dict[str, str], column: str) -> int | None:
    value = number(row, column)
    return int(value) if value else None


def _bool(row: dict[str, str], column: str) -> bool | None:
    text = row.get(column, "").lower()
    if text in ("true", "offloaded"):
        return True
    if text == "false":
        return False
    return None


def _precision(text: str, gpu_key: str) -> str:
    from costplan.hardware import gpu

    text = text.lower()
    if "fp8" in text:
        return "fp8" if "fp8" in gpu(gpu_key).peak_flops else "bf16"
    if "fp32" in text and "bf16" not in text:
        return "fp32"
    if "fp16" in text or "bf16" not in gpu(gpu_key).peak_flops:
        return "fp16"
    return "bf16"


_TARGET_ROLES = {"q": "q", "k": "k", "v": "v", "o": "o", "gate": "gate", "up": "up", "down": "down"}


def _targets(text: str) -> str:
    roles = [_TARGET_ROLES[p] for p in (t.strip().removesuffix("_proj") for t in re.split(r"[;,]", text))
             if p in _TARGET_ROLES]
    return ",".join(roles) if roles else "q,v"


def _common(row: dict[str, str], spec: ModelSpec) -> dict[str, Any]:
    """The estimate options the row states."""
    from costplan.hardware import gpu

    device = gpu(row["gpu"])
    options: dict[str, Any] = {"gpu": device.key, "price": 0.0,
                               "precision": _precision(row.get("precision", ""), device.key)}
    for column, option in (("gpus", "gpus"), ("seq_len", "seq_len"), ("micro_batch", "micro_batch"),
                           ("tp", "tp"), ("pp", "pp"), ("cp", "cp"), ("global_batch", "global_batch")):
        value = _int(row, column)
        if value:
            options[option] = value
    if row.get("zero"):
        options["zero"] = int(row["zero"])
    ckpt = _bool(row, "grad_ckpt")
    if ckpt is not None:
        options["grad_ckpt"] = ckpt
    if row.get("runtime") in ("eager", "compiled", "native"):
        options["runtime"] = row["runtime"]
    from costplan.frameworks import frameworks

    framework = row.get("framework", "")
    if framework in frameworks():
        options["framework"] = framework
    if (options.get("tp", 1) > 1 or options.get("pp", 1) > 1 or options.get("cp", 1) > 1) and not (
            framework in frameworks() and frameworks()[framework].tensor_parallel):
        options["framework"] = "megatron"
    stack = frameworks().get(options.get("framework", ""))
    if stack is not None and "zero" in options and options["zero"] not in stack.zero_stages:
        options["zero"] = max(z for z in stack.zero_stages if z <= options["zero"])
    if "seq_len" in options and options["seq_len"] > spec.max_positions:
        raise CostplanError("sequence longer than the model's context")
    return options


def _naive_time(spec: ModelSpec, peak: float) -> float:
    """Seconds per token of the one-line rule, per GPU."""
    return 6 * count_params(spec).total / (NAIVE_MFU * peak)


def predict(row: dict[str, str], profile: Any = None) -> tuple[float, float | None, str]:
    """(predicted, naive, detail) for one published row (``profile``: other constants than the table's)."""
    from costplan.api import estimate
    from costplan.hardware import gpu

    kind = row["kind"]
    if not row.get("gpu"):
        raise CostplanError("GPU not in costplan's table")
    spec = architecture(row["model"], row["name"], _int(row, "seq_len"))
    device = gpu(row["gpu"])
    options = _common(row, spec)
    if profile is not None:
        options["profile"] = profile
    peak = device.peak(options["precision"])
    if kind == "pretrain":
        tokens = number(row, "tokens")
        if not tokens:
            raise CostplanError("tokens not stated")
        est = estimate(spec, row.get("method") or "pretrain", tokens=tokens, **options)
        naive = _naive_time(spec, device.peak(options["precision"])) * tokens / 3600
        return est.gpu_hours, naive, f"{est.gpus} GPUs, {_layout(est)}, MFU {est.mfu:.2f}"
    if kind == "throughput":
        est = estimate(spec, "pretrain", tokens=1e9, **options)
        return est.tokens_per_second / est.gpus, 1 / _naive_time(spec, peak), f"{_layout(est)}, MFU {est.mfu:.2f}"
    if kind == "finetune_throughput":
        method = row["method"]
        if row.get("quant", "").startswith("nf4") and method == "lora":
            method = "qlora"
        if options.get("micro_batch") and _int(row, "grad_accum"):
            options["global_batch"] = options["micro_batch"] * _int(row, "grad_accum") * options.get("gpus", 1)
        est = estimate(spec, method, tokens=1e8, lora_rank=_int(row, "lora_rank") or 8,
                       lora_targets=_targets(row.get("lora_targets", "")), **options)
        return est.tokens_per_second / est.gpus, 1 / _naive_time(spec, peak), f"{method}, {_layout(est)}"
    if kind == "decode":
        batch = _int(row, "batch") or 1
        weights = row.get("quant") or "bf16"
        prompt = _int(row, "prompt_len") or 128
        gen = _int(row, "gen_len") or 256
        tp = _int(row, "tp") or 1
        runtime = options.get("runtime", "eager")
        est = estimate(spec, "inference", gpu=device.key, gpus=tp, micro_batch=batch, prompt_len=max(prompt, 1),
                       gen_len=max(gen, 2), precision=options["precision"] if options["precision"] != "fp8" else "bf16",
                       weights=weights, runtime=runtime, price=0.0, profile=profile)
        from costplan.memory import weight_bytes_per_param

        roofline = device.bandwidth_bytes_per_s * tp / (count_params(spec).total
                                                        * weight_bytes_per_param(weights, 2))
        return est.tokens_per_second / batch, roofline, f"{weights}, TP {tp}, {runtime}"
    if kind in ("memory", "fit"):
        method = row["method"]
        if row.get("quant", "").startswith("nf4") and method == "lora":
            method = "qlora"
        if not options.get("micro_batch") or not options.get("seq_len"):
            raise CostplanError("sequence length or micro-batch not stated")
        options.setdefault("gpus", 1)
        options.setdefault("grad_ckpt", False)
        if options["gpus"] > 1:
            options.setdefault("zero", 3)
        est = estimate(spec, method, tokens=1e8, lora_rank=_int(row, "lora_rank") or 8,
                       lora_targets=_targets(row.get("lora_targets", "")), global_batch=options["micro_batch"]
                       * options["gpus"], **options)
        if kind == "fit":
            naive_fits = _naive_memory(spec, method) <= device.memory_bytes
            return (float(not est.placement.fits), float(not naive_fits),
                    f"{'fits' if est.placement.fits else 'does not fit'}: {est.memory.device_bytes / GIB:.1f} GiB")
        measured_as = row.get("metric") or "unknown"
        predicted = {"allocated": est.memory.peak_bytes, "reserved": est.memory.reserved_bytes}.get(
            measured_as, est.memory.device_bytes)
        return predicted / GIB, _naive_memory(spec, method) / GIB, f"{measured_as}; {_layout(est)}"
    raise CostplanError(f"kind {kind} is not predicted")


PLAUSIBLE_MFU = 0.85
"""No published training step exceeds this share of the dense peak on 6N (4N for a frozen base) FLOPs
per token; a row that would is mislabelled (a total over GPUs, another GPU)."""


def _beyond_peak(row: dict[str, str], reported: float) -> bool:
    """Whether ``reported`` tokens/s per GPU needs more than a plausible share of the dense peak."""
    from costplan.hardware import gpu

    spec = architecture(row["model"], row["name"], _int(row, "seq_len"))
    per_token = (6 if row.get("method") in ("full", "pretrain", "cpt") else 4) * count_params(spec).total
    precision = _precision(row.get("precision", ""), row["gpu"])
    return reported * per_token > PLAUSIBLE_MFU * gpu(row["gpu"]).peak(precision)


def _naive_memory(spec: ModelSpec, method: str) -> float:
    params = count_params(spec).total
    if method in ("full", "cpt", "pretrain"):
        return 16.0 * params
    return (0.55 if method == "qlora" else 2.0) * params * 1.2


def _layout(est: Any) -> str:
    layout = est.placement.layout
    text = f"mb {layout.micro_batch} x{layout.grad_accum}"
    if layout.tp > 1 or layout.pp > 1:
        text += f", TP {layout.tp} PP {layout.pp}"
    if layout.dp > 1:
        text += f", DP {layout.dp} ZeRO-{layout.zero}"
    return text + (", ckpt" if layout.grad_ckpt else "")


def validate(kinds: Iterable[str] = KINDS, *, split: str | None = None, profile: Any = None) -> ValidationRun:
    """Predict every row of the wanted kinds (and split); ``profile`` replaces the default constants."""
    wanted = set(kinds)
    results: list[Validation] = []
    skipped: list[Skipped] = []
    for row in read_table("published_runs"):
        kind, name = row["kind"], row["name"]
        if kind not in wanted or (split is not None and row.get("split") != split):
            continue
        try:
            predicted, naive, detail = predict(row, profile)
            reported = 1.0 if row["reported"] == "oom" else 0.0 if row["reported"] == "yes" else float(row["reported"])
        except (CostplanError, ValueError, LookupError) as exc:
            skipped.append(Skipped(kind, name, str(exc).rstrip(".")))
            continue
        if not (math.isfinite(predicted) and predicted >= 0):
            skipped.append(Skipped(kind, name, "no finite prediction"))
            continue
        if kind in ("throughput", "finetune_throughput") and _beyond_peak(row, reported):
            skipped.append(Skipped(kind, name, f"the reported tokens/s per GPU would need more than "
                                               f"{PLAUSIBLE_MFU:.0%} of the GPU's dense peak (6N or 4N FLOPs per "
                                               "token alone): the figure or its GPU is not as labelled"))
            continue
        results.append(Validation(kind, name, row["quantity"], predicted, reported, naive, row.get("split", ""),
                                  row.get("group", ""), row["source"], detail))
    return ValidationRun(results, skipped)


@dataclass(frozen=True, slots=True)
class ErrorSummary:
    kind: str
    quantity: str
    split: str
    rows: int
    median_abs: float
    worst: float
    naive_median_abs: float | None
    naive_worst: float | None

    @property
    def beats_naive(self) -> bool | None:
        if self.naive_median_abs is None:
            return None
        return self.median_abs < self.naive_median_abs


def _summary(kind: str, quantity: str, split: str, rows: list[Validation]) -> ErrorSummary:
    naive = [r.naive_error for r in rows if r.naive_error is not None]
    if kind == "fit":  # share of wrong verdicts
        wrong = statistics.mean(r.error for r in rows)
        naive_wrong = statistics.mean(naive) if naive else None
        return ErrorSummary(kind, quantity, split, len(rows), wrong, wrong, naive_wrong, naive_wrong)
    return ErrorSummary(kind, quantity, split, len(rows), statistics.median(abs(r.error) for r in rows),
                        max((r.error for r in rows), key=abs),
                        statistics.median(abs(e) for e in naive) if naive else None,
                        max(naive, key=abs) if naive else None)


def summarize(results: list[Validation]) -> list[ErrorSummary]:
    """Per kind: the fit rows, the held-out rows and all of them."""
    summaries = []
    for kind in KINDS:
        rows = [r for r in results if r.kind == kind]
        if not rows:
            continue
        for split in ("fit", "holdout", "all"):
            chosen = rows if split == "all" else [r for r in rows if r.split == split]
            if chosen:
                summaries.append(_summary(kind, chosen[0].quantity, split, chosen))
    return summaries
