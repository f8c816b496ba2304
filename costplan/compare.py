"""Every approach side by side for one model and workload: ``costplan compare``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from costplan.api import Estimate, estimate

APPROACHES = ("inference", "prompt", "prefix", "lora", "qlora", "full", "cpt")


@dataclass(frozen=True, slots=True)
class Comparison:
    estimates: tuple[Estimate, ...]
    notes: tuple[str, ...]

    @property
    def cheapest_usd(self) -> float | None:
        costs = [e.cost_usd for e in self.estimates if e.cost_usd is not None and e.placement.fits]
        return min(costs) if costs else None

    def relative_cost(self, est: Estimate) -> float | None:
        cheapest = self.cheapest_usd
        if cheapest is None or est.cost_usd is None or cheapest == 0:
            return None
        return est.cost_usd / cheapest

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for e in self.estimates:
            rows.append({
                "method": e.method.key, "params_trainable": e.params_trainable, "tokens": e.tokens * e.epochs,
                "memory_device_bytes": e.memory.device_bytes, "fits": e.placement.fits, "gpus": e.gpus,
                "wall_hours": e.wall_hours, "gpu_hours": e.gpu_hours, "cost_usd": e.cost_usd,
                "cost_usd_range": e.cost_usd_range, "energy_kwh": e.energy_kwh, "co2_kg": e.co2_kg,
                "relative_cost": self.relative_cost(e),
                "total_cost_usd": e.total_cost_usd,
            })
        return rows


def compare(model: str, *, tokens: float | None = None, cpt_tokens: float | None = None,
            eval_tokens: float = 1e5, approaches: tuple[str, ...] = APPROACHES, **options: Any) -> Comparison:
    """Estimate each approach for the same model, GPU type and options.

    Fine-tuning approaches train on ``tokens``; continual pretraining on its own, larger budget
    (``cpt_tokens``, default 10B); inference-only (prompting) is priced for generating
    ``eval_tokens`` (default 100k: an evaluation or a pilot).
    """
    estimates = []
    for approach in approaches:
        if approach == "inference":
            volume = eval_tokens
        elif approach == "cpt":
            volume = cpt_tokens
        else:
            volume = tokens
        estimates.append(estimate(model, approach, tokens=volume, **options))
    notes = (
        f"inference-only: generating {eval_tokens:.3g} tokens with prompts (no training)",
        "continual pretraining: its own token budget " + (f"{cpt_tokens:.3g}" if cpt_tokens else "(10B default)"),
        "relative cost: dollars over the cheapest approach that fits",
    )
    return Comparison(tuple(estimates), notes)
