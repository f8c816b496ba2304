"""How many GPUs: the fewest of the chosen type on which the per-GPU memory fits.

Training uses data parallelism, reaching for ZeRO-1, 2, then 3 (FSDP) sharding only when
replicas do not fit; inference splits weights and KV cache by tensor parallelism. Counts are
tried as 1-8 within a node, then whole nodes of 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from costplan.memory import InferenceMemory, MemoryBreakdown, TrainingMemory, shard, shard_inference
from costplan.profile import Profile
from costplan.units import fmt_bytes

MAX_GPUS = 16384


def gpu_counts(limit: int = MAX_GPUS) -> list[int]:
    return [*range(1, 9), *range(16, limit + 1, 8)]


@dataclass(frozen=True, slots=True)
class Placement:
    gpus: int
    zero: int
    grad_accum: int
    memory: MemoryBreakdown
    fits: bool
    reason: str
    """Why it does not fit (empty when it does)."""
    tp: int = 1
    """Tensor-parallel degree; ``gpus`` counts every GPU (data-parallel replicas x tp)."""

    @property
    def dp(self) -> int:
        return self.gpus // self.tp


def grad_accumulation(global_batch: int | None, micro_batch: int, gpus: int) -> int:
    if global_batch is None:
        return 1
    return max(1, math.ceil(global_batch / (micro_batch * gpus)))


def place_training(mem: TrainingMemory, capacity: float, profile: Profile, *, micro_batch: int,
                   global_batch: int | None, gpus: int | None, zero: int | None, tp: int = 1) -> Placement:
    """``mem`` is one tensor-parallel rank's share; data-parallel replicas of ``tp`` GPUs are added."""
    stages = [zero] if zero is not None else [0, 1, 2, 3]
    if gpus is not None and gpus % tp:
        raise ValueError(f"--gpus {gpus} is not a multiple of --tp {tp}")
    counts = [gpus // tp] if gpus is not None else gpu_counts(MAX_GPUS // tp)
    best: Placement | None = None
    for n in counts:
        accum = grad_accumulation(global_batch, micro_batch, n)
        for stage in stages:
            if stage > 0 and n == 1 and zero is None:
                continue  # sharding over one replica changes nothing
            breakdown = shard(mem, n, stage, accum, profile)
            placement = Placement(n * tp, stage, accum, breakdown, breakdown.device_bytes <= capacity, "", tp)
            if placement.fits:
                return placement
            if best is None or breakdown.device_bytes < best.memory.device_bytes:
                best = placement
    assert best is not None
    return Placement(best.gpus, best.zero, best.grad_accum, best.memory, False,
                     _why_not(mem, best, capacity, profile, fixed=gpus is not None), tp)


def _why_not(mem: TrainingMemory, best: Placement, capacity: float, profile: Profile, *, fixed: bool) -> str:
    need = fmt_bytes(best.memory.device_bytes)
    floor = (mem.activations + mem.logits_peak + mem.workspace + 2 * mem.layer_weights) * (
        1 + profile.allocator_slack()) + profile.cuda_context_bytes()
    if floor > capacity:
        return (f"one micro-batch's activations and logits alone need {fmt_bytes(floor)} per GPU "
                f"(GPU holds {fmt_bytes(capacity)}) however many GPUs share the rest; "
                "use --grad-ckpt, a smaller --micro-batch or --seq-len, or a larger GPU")
    where = f"on {best.gpus} GPU(s)" if fixed else f"even on {best.gpus} GPUs"
    return (f"needs {need} per GPU {where} with ZeRO-{best.zero} "
            f"(GPU holds {fmt_bytes(capacity)})")


def place_inference(mem: InferenceMemory, capacity: float, profile: Profile, *,
                    gpus: int | None) -> Placement:
    counts = [gpus] if gpus is not None else [1, 2, 4, 8, 16, 32, 64]
    breakdown = shard_inference(mem, counts[0], profile)
    for n in counts:
        breakdown = shard_inference(mem, n, profile)
        if breakdown.device_bytes <= capacity:
            return Placement(n, 0, 1, breakdown, True, "")
    return Placement(counts[-1], 0, 1, breakdown, False,
                     f"needs {fmt_bytes(breakdown.device_bytes)} per GPU on {counts[-1]} GPU(s) "
                     f"(GPU holds {fmt_bytes(capacity)}); reduce --micro-batch or the context")
