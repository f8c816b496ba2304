"""Does it fit, by how much, what each switch saves, and the cheapest change when it does not.

- The verdict (JSON ``fit``): ``fits`` with at least 5% of the card's memory to spare, ``tight`` under
  that margin (the allocator's fragmentation or a longer batch may tip it over), ``no`` beyond the card;
  ``headroom_bytes`` is the card's memory less what the GPU must hold.
- ``savings``: for each switch that is off, the bytes per GPU it would save at the same layout
  (activation checkpointing, an 8-bit or paged 8-bit optimizer, the optimizer stepped in backward, a
  chunked or fused cross-entropy, CPU offload of the optimizer or of the checkpoints, micro-batch 1,
  the next ZeRO stage, QLoRA's 4-bit base for LoRA, the allocator's expandable segments).
- The suggestion: for ``tight`` the largest saving; for ``no`` the switch that makes it fit at the least
  cost (one that leaves the arithmetic as it is before an 8-bit optimizer or a 4-bit base; among them
  the fastest step), else more GPUs.

Only memory is computed for the switches (the engine's phases), so this costs a few milliseconds.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from costplan import engine
from costplan.layout import Job
from costplan.record import record
from costplan.units import fmt_bytes

TIGHT = 0.05
"""Under 5% of the card's memory to spare is tight."""


@record
class Fit:
    verdict: str
    """``fits``, ``tight`` or ``no``."""
    headroom_bytes: float
    suggestion: str | None
    savings: dict[str, float]
    """Switch -> bytes per GPU it would save (0 or negative: it would not help)."""

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "headroom_bytes": self.headroom_bytes, "suggestion": self.suggestion}


def verdict(capacity: float, device_bytes: float) -> str:
    headroom = capacity - device_bytes
    if headroom < 0:
        return "no"
    return "tight" if headroom < TIGHT * capacity else "fits"


def _device(job: Job, layout: engine.Layout) -> float:
    return job.device_bytes(layout)


def _variants(job: Job, layout: engine.Layout) -> dict[str, tuple[Job, engine.Layout]]:
    """Each switch that is off, as (job, layout) with only that switch changed."""
    from costplan.methods import Lora, QLora

    out: dict[str, tuple[Job, engine.Layout]] = {}
    if not job.work.expandable_segments:  # first: a change of the environment wins a tie
        out[EXPANDABLE] = (_with_work(job, expandable_segments=True), layout)
    if not layout.grad_ckpt:
        out["activation checkpointing"] = (job, replace(layout, grad_ckpt=True))
    trains = job.method.training and job.method.trainable_params(job.model) > 0
    if trains and job.work.optimizer in ("adamw", "adamw-fused"):
        out["8-bit optimizer"] = (_with_work(job, optimizer="adamw-8bit"), layout)
        out["paged 8-bit optimizer"] = (_with_work(job, optimizer="paged-adamw-8bit"), layout)
    if trains and not job.work.optimizer_in_backward and layout.grad_accum == 1 and job.method.trains_base:
        out["optimizer in backward"] = (_with_work(job, optimizer_in_backward=True), layout)
    if job.method.training and job.work.loss == "full":
        out["chunked cross-entropy"] = (_with_work(job, loss="chunked"), layout)
        out["fused cross-entropy (Liger, Cut CE)"] = (_with_work(job, loss="fused"), layout)
    if trains and "optimizer" not in job.work.offload and job.method.trains_base:
        out["CPU offload of the optimizer"] = (_with_work(job, offload=(*job.work.offload, "optimizer")), layout)
    if layout.grad_ckpt and "activations" not in job.work.offload:
        out["checkpoints offloaded to the host"] = (_with_work(job, offload=(*job.work.offload, "activations")),
                                                    layout)
    if layout.micro_batch > 1:
        out["micro-batch 1"] = (job, replace(layout, micro_batch=1,
                                             grad_accum=layout.grad_accum * layout.micro_batch))
    if layout.dp > 1 and layout.zero < 3 and max(job.framework.zero_stages) > layout.zero:
        stage = min(z for z in job.framework.zero_stages if z > layout.zero)
        out[f"ZeRO-{stage}"] = (job, replace(layout, zero=stage))
    if isinstance(job.method, Lora) and not isinstance(job.method, QLora):
        qlora = QLora(rank=job.method.rank, targets=job.method.targets, dropout=job.method.dropout)
        out["QLoRA (4-bit base)"] = (_with_method(job, qlora), layout)
    return out


EXPANDABLE = "expandable segments (PYTORCH_CUDA_ALLOC_CONF)"
"""The caching allocator run with ``expandable_segments:True``: its reserve stays near the allocated peak
(``allocator_slack_expandable`` against ``allocator_slack``, tables/efficiency.csv); a switch of the
environment, not of the training code."""


def _with_work(job: Job, **changes: Any) -> Job:
    return replace(job, work=replace(job.work, **changes), _parts={})


def _with_method(job: Job, method: Any) -> Job:
    return replace(job, method=method, _parts={})


CHANGES_THE_MATH = ("8-bit optimizer", "paged 8-bit optimizer", "QLoRA (4-bit base)")
"""Switches that change what is computed (8-bit optimizer states, a 4-bit base), suggested only when no
other switch makes it fit."""


def _cheapest(variants: dict[str, tuple[Job, engine.Layout]], fixes: list[str]) -> str:
    """Of the switches that make it fit, those that leave the arithmetic as it is first, then the one whose
    step runs fastest per token (the least cost: the allocator's expandable segments cost nothing, CPU
    offload the most), the first listed on a tie."""
    def cost(name: str) -> tuple[bool, float]:
        variant, changed = variants[name]
        step = variant.step(changed)
        return name in CHANGES_THE_MATH, step.total / step.tokens

    return min(fixes, key=cost)


def assess(job: Job, layout: engine.Layout) -> Fit:
    """The verdict for ``layout`` with the savings of every switch that is off and a suggestion."""
    capacity = job.gpu.memory_bytes
    needed = _device(job, layout)
    savings = {}
    variants = _variants(job, layout)
    for name, (variant, changed) in variants.items():
        try:
            savings[name] = needed - _device(variant, changed)
        except ValueError:  # a variant the model cannot take (e.g. a rank beyond a matrix)
            continue
    state = verdict(capacity, needed)
    headroom = capacity - needed
    suggestion = None
    if state == "tight":
        best = max(savings.items(), key=lambda kv: kv[1], default=None)
        suggestion = (f"only {fmt_bytes(headroom)} to spare ({headroom / capacity:.1%} of the card): "
                      + (f"{best[0]} would free {fmt_bytes(best[1])}" if best and best[1] > 0
                         else "a shorter sequence or smaller micro-batch adds margin"))
    elif state == "no":
        fixes = [name for name, saved in savings.items() if needed - saved <= capacity]
        if fixes:
            suggestion = f"needs {fmt_bytes(-headroom)} more; {_cheapest(variants, fixes)} alone makes it fit"
        else:
            together = sum(max(s, 0.0) for s in savings.values())
            suggestion = (f"needs {fmt_bytes(-headroom)} more, more than any one switch saves"
                          + (f" ({fmt_bytes(together)} with all of them)" if together > 0 else "")
                          + "; more GPUs (let --gpus be chosen), a larger GPU, or a shorter sequence")
    return Fit(state, headroom, suggestion, savings)
