"""What would fit where cheap: for an estimate that does not fit, the cheapest GPU type on which
the same job fits (layout chosen afresh), so a "no" comes with a way forward."""

from __future__ import annotations

from typing import Any

from costplan.api import Estimate, estimate
from costplan.errors import CostplanError
from costplan.hardware import gpu as find_gpu
from costplan.hardware import gpu_names

PINNED_LAYOUT = ("gpus", "tp", "pp", "zero", "micro_batch", "grad_ckpt", "framework")
"""Layout choices dropped when looking elsewhere: each GPU type gets the layout that suits it."""
NOT_ASKED = ("maximize",)
"""Questions about the user's own GPU that the alternative does not answer (``--max`` searches a
dozen estimates per GPU type)."""


def cheapest_fit(model: Any, method: Any, **options: Any) -> Estimate | None:
    """The cheapest priced estimate that fits, over every GPU type with the precision (the given
    type included, with its layout chosen afresh); without any priced one, the fitting one with the
    fewest GPU-hours; None when nothing fits anywhere."""
    from costplan.api import make_method

    # No method: lora or the --adapter's (LoRA, prompt or prefix tuning), each of them training.
    trains = make_method(method).training if method is not None else True
    # Inference's micro-batch is the concurrency asked for, not a layout choice.
    options = {k: v for k, v in options.items()
               if k not in NOT_ASKED and (k not in PINNED_LAYOUT or (k == "micro_batch" and not trains))}
    options.pop("gpu", None)
    precision = options.get("precision", "bf16")
    priced: list[Estimate] = []
    unpriced: list[Estimate] = []
    for key in gpu_names():
        if precision not in find_gpu(key).peak_flops:
            continue
        try:
            est = estimate(model, method, gpu=key, **options)
        except CostplanError:
            continue  # e.g. a layout this GPU cannot take
        if not est.placement.fits:
            continue
        (priced if est.cost_usd is not None else unpriced).append(est)
    if priced:
        return min(priced, key=lambda e: (e.cost_usd, e.wall_seconds))
    if unpriced:
        return min(unpriced, key=lambda e: e.gpu_hours)
    return None


def describe(est: Estimate) -> str:
    """``8 x a100-80gb for 12.3 h, $1,234`` (or "no listed price")."""
    from costplan.units import fmt_duration, fmt_usd

    cost = fmt_usd(est.cost_usd) if est.cost_usd is not None else "no listed price"
    return f"{est.gpus} x {est.gpu.key} for {fmt_duration(est.wall_seconds)}, {cost}"
