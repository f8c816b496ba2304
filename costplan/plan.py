"""``costplan plan``: search GPU type x count x micro-batch x checkpointing x ZeRO x precision (x
method variant) for the configurations that fit, meet a deadline and a budget, and keep the Pareto
front of dollars against wall time.

The per-token FLOPs and the per-sequence memory terms depend only on (method, precision,
checkpointing); they are computed once per such combination with the scalar model, then every
(GPU, count, micro-batch, ZeRO stage) is evaluated at once with numpy, using the same memory
phases (``memory.device_bytes_array``) and the same communication model (``scaling``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from costplan.api import make_method
from costplan.errors import CostplanError
from costplan.flops import training_flops
from costplan.hardware import gpu as find_gpu
from costplan.hardware import gpu_names
from costplan.hardware import price as find_price
from costplan.memory import device_bytes_array, training_memory
from costplan.model import count_params, resolve_model
from costplan.parallel import gpu_counts
from costplan.profile import Profile, default_profile
from costplan.scaling import data_parallel_bytes, link
from costplan.workload import Workload

MICRO_BATCHES = (1, 2, 4, 8, 16)
STARTUP_SECONDS = 600.0
"""Per run: provisioning, loading weights and data, warm-up (assumption). Without it a tiny job
would always spread over the most GPUs; with it, each GPU costs at least this much."""
ZERO_STAGES = (0, 1, 2, 3)


@dataclass(frozen=True, slots=True)
class Candidate:
    method: str
    gpu: str
    gpus: int
    micro_batch: int
    grad_ckpt: bool
    zero: int
    precision: str
    wall_seconds: float
    cost_usd: float
    device_bytes: float
    scaling_efficiency: float

    @property
    def wall_hours(self) -> float:
        return self.wall_seconds / 3600


@dataclass(frozen=True, slots=True)
class PlanResult:
    pareto: tuple[Candidate, ...]
    """Non-dominated in (cost, wall time), cheapest first."""
    evaluated: int
    fitting: int
    feasible: int
    """Fit and meet the deadline and budget."""
    notes: tuple[str, ...]
    samples: tuple[tuple[float, float], ...] = ()
    """(wall seconds, dollars) of up to a few thousand feasible configurations, for plotting."""

    @property
    def cheapest(self) -> Candidate:
        return self.pareto[0]

    @property
    def fastest(self) -> Candidate:
        return self.pareto[-1]


@dataclass(frozen=True, slots=True)
class _Gpus:
    keys: list[str]
    memory: Any
    price: Any
    intra: Any
    inter: Any
    per_node: Any


def _gpu_arrays(keys: list[str], provider: str | None, spot: bool, price: float | None) -> _Gpus:
    import numpy as np

    rows = []
    for key in keys:
        chosen = find_price(key, provider, spot, price)
        if chosen is None:
            continue  # unpriced GPUs cannot be planned for dollars
        spec, net = find_gpu(key), link(key)
        rows.append((key, spec.memory_bytes, chosen.usd_per_gpu_hour, net.intra_bytes_per_s,
                     net.inter_bytes_per_s, net.gpus_per_node))
    if not rows:
        raise CostplanError("None of the GPU types has a listed price; pass --price.")
    keys, memory, usd, intra, inter, per_node = zip(*rows, strict=True)
    return _Gpus(list(keys), np.array(memory), np.array(usd), np.array(intra), np.array(inter),
                 np.array(per_node))


def search(
    model: str,
    methods: tuple[str, ...] = ("lora",),
    *,
    tokens: float,
    epochs: float = 1.0,
    deadline_seconds: float | None = None,
    budget_usd: float | None = None,
    gpus: tuple[str, ...] | None = None,
    max_gpus: int = 1024,
    precisions: tuple[str, ...] = ("bf16", "fp8"),
    seq_len: int | None = None,
    global_batch: int | None = None,
    provider: str | None = None,
    spot: bool = False,
    price: float | None = None,
    lora_rank: int = 8,
    lora_targets: str = "q,v",
    profile: Profile | None = None,
) -> PlanResult:
    import numpy as np

    if tokens <= 0 or epochs <= 0:
        raise ValueError("--tokens and --epochs must be positive")
    if deadline_seconds is not None and deadline_seconds <= 0:
        raise ValueError("--deadline must be positive")
    if budget_usd is not None and budget_usd <= 0:
        raise ValueError("--budget must be positive")
    if max_gpus < 1:
        raise ValueError("--max-gpus must be positive")
    spec = resolve_model(model)
    profile = profile or default_profile()
    table = _gpu_arrays(list(gpus) if gpus else gpu_names(), provider, spot, price)
    seq = seq_len or min(2048, spec.max_positions)
    counts = np.array(gpu_counts(max_gpus), dtype=float)
    # Grid axes: GPU type x count x micro-batch x ZeRO stage.
    g_idx, n, mb, zero = np.meshgrid(np.arange(len(table.keys)), counts, np.array(MICRO_BATCHES, dtype=float),
                                     np.array(ZERO_STAGES), indexing="ij")
    g_idx, n, mb, zero = (a.ravel() for a in (g_idx, n, mb, zero))
    accum = np.ones_like(n) if global_batch is None else np.maximum(1, np.ceil(global_batch / (mb * n)))
    bandwidth = np.where(n <= table.per_node[g_idx], table.intra[g_idx],
                         np.minimum(table.intra[g_idx], table.inter[g_idx]))
    evaluated = fitting = feasible_count = 0
    best: list[Candidate] = []
    samples: list[tuple[float, float]] = []
    rng = np.random.default_rng(0)
    for method_key in methods:
        method = make_method(method_key, lora_rank=lora_rank, lora_targets=lora_targets, lora_dropout=0.0,
                             virtual_tokens=20)
        method.validate(spec)
        if not method.training:
            raise CostplanError("plan searches training configurations; use estimate for inference.")
        for precision in precisions:
            peaks = np.array([find_gpu(k).peak_flops.get(precision, 0.0) for k in table.keys])
            usable = peaks[g_idx] > 0
            mfu = profile.mfu(method.key, precision).value
            for ckpt in (False, True):
                work = Workload(seq_len=seq, micro_batch=1, precision=precision, grad_ckpt=ckpt)  # type: ignore[arg-type]
                mem = training_memory(spec, method, work)
                flops = training_flops(spec, method, work)
                device = device_bytes_array(mem, dp=n, zero=zero, grad_accum=accum, micro_batch=mb, profile=profile)
                fits = usable & (device <= table.memory[g_idx])
                # Remove stages that change nothing on one GPU, so each configuration counts once.
                fits &= (n > 1) | (zero == 0)
                rate = np.where(usable, peaks[g_idx], 1.0) * mfu
                per_micro = flops.per_token * seq * mb / rate
                compute = per_micro * accum
                overlap = per_micro * (flops.backward + np.where(zero >= 3, flops.forward, 0.0)) / flops.per_token
                comm_bytes = data_parallel_bytes(mem.gradients, mem.weights, n, zero)
                exposed = np.maximum(0.0, comm_bytes / bandwidth - overlap)
                efficiency = compute / (compute + exposed)
                seconds = flops.per_token * tokens * epochs / (n * rate) / efficiency + STARTUP_SECONDS
                cost = seconds / 3600 * n * table.price[g_idx]
                feasible = fits.copy()
                if deadline_seconds is not None:
                    feasible &= seconds <= deadline_seconds
                if budget_usd is not None:
                    feasible &= cost <= budget_usd
                evaluated += int(((n > 1) | (zero == 0)).sum())
                fitting += int(fits.sum())
                feasible_count += int(feasible.sum())
                chosen = np.flatnonzero(feasible)
                if chosen.size > 500:
                    chosen = rng.choice(chosen, 500, replace=False)
                samples += [(float(seconds[i]), float(cost[i])) for i in chosen]
                for i in np.flatnonzero(feasible & _pareto_mask(seconds, cost, feasible)):
                    best.append(Candidate(method.key, table.keys[g_idx[i]], int(n[i]), int(mb[i]), ckpt,
                                          int(zero[i]), precision, float(seconds[i]), float(cost[i]),
                                          float(device[i]), float(efficiency[i])))
    front = _front(best)
    notes = (
        f"{spec.name}, {count_params(spec).total / 1e9:.3g}B parameters, {tokens:.3g} tokens x {epochs:g} epochs, "
        f"sequence {seq}" + (f", global batch {global_batch}" if global_batch else ", no gradient accumulation"),
        f"searched {len(table.keys)} priced GPU types x {len(counts)} counts (1-8, then nodes of 8, up to "
        f"{max_gpus}) x micro-batch {MICRO_BATCHES} x ZeRO 0-3 x checkpointing on/off x {', '.join(precisions)}",
        "efficiency not calibrated: default MFU per method and precision (tables/efficiency.csv)",
        f"each run adds {STARTUP_SECONDS / 60:g} min of start-up (provisioning, loading; assumption) to wall time "
        "and cost",
    )
    return PlanResult(tuple(front), evaluated, fitting, feasible_count, notes, tuple(samples))


def _pareto_mask(seconds: Any, cost: Any, feasible: Any) -> Any:
    """Feasible points not dominated by another feasible point of the same batch."""
    import numpy as np

    mask = np.zeros_like(feasible)
    idx = np.flatnonzero(feasible)
    if idx.size == 0:
        return mask
    order = idx[np.lexsort((seconds[idx], cost[idx]))]  # by cost, then time
    fastest_so_far = math.inf
    for i in order:
        if seconds[i] < fastest_so_far:
            mask[i] = True
            fastest_so_far = seconds[i]
    return mask


def _front(candidates: list[Candidate]) -> list[Candidate]:
    """The non-dominated set over all batches, cheapest first (and so slowest first)."""
    front: list[Candidate] = []
    for c in sorted(candidates, key=lambda c: (c.cost_usd, c.wall_seconds)):
        if not front or c.wall_seconds < front[-1].wall_seconds:
            front.append(c)
    return front
