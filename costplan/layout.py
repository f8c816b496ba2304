"""The layout a practitioner would choose, found by searching the engine.

What the user does not pin (GPU count, tensor and pipeline parallelism, ZeRO stage, micro-batch,
activation checkpointing), ``choose`` fills in for the GPU type and the stack:

- the global batch comes from published practice for the method and model size
  (``tables/practice.csv``) unless given;
- the GPU count is the fewest that fit (fine-tuning), or, for pretraining and continual
  pretraining, the fewest whole nodes that finish within the practice table's target (a month);
- at that count every layout the stack supports is tried: the largest micro-batch that fits,
  gradient accumulation for the rest of the global batch, checkpointing only where it pays, and
  the fastest layout wins (among layouts within 1% of it, the simplest).

Pure Python over the scalar engine: a few hundred layouts in a few milliseconds, no numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from costplan import engine
from costplan.errors import CostplanError
from costplan.flops import FlopsBreakdown, training_flops
from costplan.frameworks import Framework
from costplan.hardware import GpuSpec
from costplan.memory import MemoryBreakdown, TrainingMemory, training_memory
from costplan.methods import Method
from costplan.model import ModelSpec, count_params
from costplan.optimizers import FP32
from costplan.optimizers import optimizer as find_optimizer
from costplan.profile import Profile
from costplan.record import record
from costplan.scaling import Link
from costplan.speed import Constants, StepShape, step_shape
from costplan.tables import number, read_table
from costplan.units import fmt_bytes, fmt_count
from costplan.workload import Workload

MAX_GPUS = 131072
"""The largest job considered (a 100k-GPU cluster fits under it)."""
NEAR = 0.01
"""Layouts within 1% of the fastest count as equally fast; the simplest of them is chosen."""
MARGIN = 0.05
"""Memory a chosen layout leaves free where it can (the fit verdict's "tight" threshold)."""


def practice(setting: str, method: str, params: float) -> tuple[float, str]:
    """A default from ``tables/practice.csv`` for the method and model size, with its source."""
    for row in read_table("practice"):
        low, high = number(row, "params_min") or 0.0, number(row, "params_max") or math.inf
        if row["setting"] == setting and method in row["method"].split(";") and low <= params < high:
            value = number(row, "value")
            assert value is not None
            return value, row["source"]
    raise LookupError(f"tables/practice.csv has no {setting} for {method}")


@record
class Parts:
    """What one checkpointing choice makes of a sequence: memory terms, FLOPs, step shape."""

    memory: TrainingMemory
    flops: FlopsBreakdown
    shape: StepShape


@dataclass(slots=True)
class Job:
    """A training job before its layout: everything the engine needs but the layout."""

    model: ModelSpec
    method: Method
    work: Workload
    """Sequence length, precision, optimizer, attention (micro-batch and checkpointing are the layout's)."""
    gpu: GpuSpec
    link: Link
    framework: Framework
    profile: Profile
    hw: engine.Hardware
    constants: Constants
    correction: float
    global_batch: int
    """Sequences per optimizer step."""
    _parts: dict[bool, Parts] = field(default_factory=dict)

    def parts(self, grad_ckpt: bool) -> Parts:
        if grad_ckpt not in self._parts:
            from dataclasses import replace

            work = replace(self.work, micro_batch=1, grad_ckpt=grad_ckpt)
            flops = training_flops(self.model, self.method, work)
            tensors = self.method.trainable_tensors(self.model)
            opt = find_optimizer(work.optimizer)
            trainable = sum(t.elements for t in tensors)
            master = self.method.trains_base and work.trained.master > 0
            # The dtype the step updates: the fp32 master copy, else the trained weight (fp32 under
            # autocast, bf16 when pure bf16), else the adapters'.
            element = (FP32 if master else work.trained.weights) if self.method.trains_base else work.adapter_bytes
            moved = trainable * opt.step_bytes_per_param(work.compute_bytes, master, element)
            # torch.compile (Inductor) fuses the elementwise chains between matmuls, as fused stacks do.
            fused = self.framework.kernels == "fused" or self.framework.runtime == "compiled"
            shape = step_shape(self.model, self.method, work, flops, optimizer_bytes=moved, fused_loss=fused,
                               fused_ops=self.framework.runtime != "eager")
            self._parts[grad_ckpt] = Parts(training_memory(self.model, self.method, work), flops, shape)
        return self._parts[grad_ckpt]

    @property
    def allocator_slack(self) -> float:
        """The caching allocator's reserve above the peak, in the mode the stack runs it."""
        return self.profile.allocator_slack(self.work.expandable_segments)

    def phases(self, layout: engine.Layout) -> dict:
        return engine.training_phases(self.parts(layout.grad_ckpt).memory, dp=layout.dp, zero=layout.zero,
                                      micro_batch=layout.micro_batch, grad_accum=layout.grad_accum, tp=layout.tp,
                                      pp=layout.pp, cp=layout.cp)

    def memory(self, layout: engine.Layout) -> MemoryBreakdown:
        """The peak phase and its terms, with paged states and host memory beside them."""
        mem = self.parts(layout.grad_ckpt).memory
        managed, host = engine.off_device_bytes(mem, dp=layout.dp, zero=layout.zero, micro_batch=layout.micro_batch,
                                                tp=layout.tp, pp=layout.pp, cp=layout.cp)
        return engine.breakdown(self.phases(layout), self.allocator_slack, self.profile.cuda_context_bytes(),
                                managed, host)

    def device_bytes(self, layout: engine.Layout) -> float:
        return engine.device_bytes(engine.peak_bytes(self.phases(layout)), self.allocator_slack,
                                   self.profile.cuda_context_bytes())

    def step(self, layout: engine.Layout) -> engine.StepTime:
        parts = self.parts(layout.grad_ckpt)
        return engine.training_step(parts.shape, parts.memory, hw=self.hw, constants=self.constants, dp=layout.dp,
                                    tp=layout.tp, pp=layout.pp, zero=layout.zero, micro_batch=layout.micro_batch,
                                    grad_accum=layout.grad_accum, hidden_size=self.model.hidden_size,
                                    correction=self.correction, cp=layout.cp)


@record(kw_only=True)
class Pins:
    """What the user fixed; None is "auto"."""

    gpus: int | None = None
    tp: int | None = None
    pp: int | None = None
    zero: int | None = None
    micro_batch: int | None = None
    grad_ckpt: bool | None = None
    cp: int = 1
    """Context parallelism: never chosen automatically, only given (--cp)."""


@record
class Placement:
    """The chosen layout with its memory, whether it fits, and why it was chosen."""

    layout: engine.Layout
    memory: MemoryBreakdown
    fits: bool
    reason: str
    """Why it does not fit (empty when it does)."""
    why: tuple[str, ...] = ()

    @property
    def gpus(self) -> int:
        return self.layout.gpus

    @property
    def tp(self) -> int:
        return self.layout.tp

    @property
    def pp(self) -> int:
        return self.layout.pp

    @property
    def dp(self) -> int:
        return self.layout.dp

    @property
    def zero(self) -> int:
        return self.layout.zero

    @property
    def grad_accum(self) -> int:
        return self.layout.grad_accum

    @property
    def micro_batch(self) -> int:
        return self.layout.micro_batch


def _powers_of_two(limit: int) -> list[int]:
    return [1 << i for i in range(max(0, int(math.log2(max(limit, 1)))) + 1)]


def tensor_parallel_options(job: Job, gpus: int, pinned: int | None) -> list[int]:
    if pinned is not None:
        return [pinned]
    if not job.framework.tensor_parallel:
        return [1]
    m = job.model
    return [t for t in _powers_of_two(job.link.gpus_per_node) if gpus % t == 0 and m.num_heads % t == 0
            and (m.num_kv_heads % t == 0 or t % m.num_kv_heads == 0)]


def pipeline_options(job: Job, gpus: int, tp: int, pinned: int | None) -> list[int]:
    if pinned is not None:
        return [pinned]
    if not job.framework.pipeline_parallel or gpus <= job.link.gpus_per_node:
        return [1]
    return [p for p in _powers_of_two(min(job.model.num_layers, gpus // tp)) if (gpus // tp) % p == 0]


@record
class _Tried:
    layout: engine.Layout
    device_bytes: float
    seconds_per_token: float


def _accumulation(job: Job, dp: int, micro_batch: int) -> int:
    """Micro-batches per optimizer step that make up the global batch over ``dp`` replicas (at least one;
    optimizer-in-backward cannot accumulate: each step is one micro-batch per replica)."""
    return 1 if job.work.optimizer_in_backward else max(1, math.ceil(job.global_batch / (dp * micro_batch)))


def _fastest_at(job: Job, gpus: int, pins: Pins) -> tuple[_Tried | None, _Tried | None, list[_Tried]]:
    """(fastest fitting layout, smallest non-fitting one, every fitting one) on ``gpus`` GPUs."""
    capacity = job.gpu.memory_bytes
    fitting: list[_Tried] = []
    smallest: _Tried | None = None
    ckpts = [pins.grad_ckpt] if pins.grad_ckpt is not None else [False, True]
    for ckpt in ckpts:
        for tp in tensor_parallel_options(job, gpus, pins.tp):
            for pp in pipeline_options(job, gpus, tp, pins.pp):
                if gpus % (tp * pp * pins.cp):
                    continue
                dp = gpus // (tp * pp * pins.cp)
                stages = [pins.zero] if pins.zero is not None else [z for z in job.framework.zero_stages
                                                                     if dp > 1 or z == 0]
                for zero in stages:
                    if pins.micro_batch is not None:
                        batches = [pins.micro_batch]
                    else:
                        batches = list(reversed(_powers_of_two(max(1, job.global_batch // dp))))
                    for mb in batches:
                        layout = engine.Layout(gpus=gpus, tp=tp, pp=pp, zero=zero, micro_batch=mb,
                                               grad_accum=_accumulation(job, dp, mb),
                                               grad_ckpt=ckpt, cp=pins.cp)
                        needed = job.device_bytes(layout)
                        if needed <= capacity:
                            step = job.step(layout)
                            fitting.append(_Tried(layout, needed, step.total / step.tokens))
                            if pp == 1:
                                break  # smaller micro-batches only pay off against a pipeline's bubble
                        if smallest is None or needed < smallest.device_bytes:
                            smallest = _Tried(layout, needed, math.inf)
    if not fitting:
        return None, smallest, []
    # Layouts with less than 5% of the card to spare run out of memory on fragmentation or a longer
    # batch: a practitioner keeps a margin where some layout allows it.
    roomy = [t for t in fitting if t.device_bytes <= capacity * (1 - MARGIN)]
    candidates = roomy or fitting
    fastest = min(t.seconds_per_token for t in candidates)
    near = [t for t in candidates if t.seconds_per_token <= fastest * (1 + NEAR)]
    best = min(near, key=lambda t: (t.layout.grad_ckpt, t.layout.pp, t.layout.tp, t.layout.zero,
                                    -t.layout.micro_batch))
    return best, smallest, fitting


def gpu_counts(per_node: int, limit: int = MAX_GPUS) -> list[int]:
    """1 to a node's GPUs, then whole nodes."""
    counts = list(range(1, per_node + 1))
    n = 2 * per_node
    while n <= limit:
        counts.append(n)
        n += per_node if n < 64 * per_node else n // 4 // per_node * per_node  # coarser beyond 64 nodes
    return counts


def _floor_fits(job: Job, gpus: int, pins: Pins) -> bool:
    """Whether the most memory-frugal layout the pins allow fits on ``gpus`` GPUs."""
    tps = tensor_parallel_options(job, gpus, pins.tp)
    tp = max(tps) if tps else 1
    pps = pipeline_options(job, gpus, tp, pins.pp)
    pp = max(pps) if pps else 1
    if gpus % (tp * pp * pins.cp):
        return False
    dp = gpus // (tp * pp * pins.cp)
    zero = pins.zero if pins.zero is not None else max(job.framework.zero_stages if dp > 1 else (0,))
    micro_batch = pins.micro_batch or 1
    # As few accumulation steps as the global batch allows, as every layout tried has: under FSDP's
    # accumulation without sync each extra micro-batch holds unsharded gradients.
    layout = engine.Layout(gpus=gpus, tp=tp, pp=pp, zero=zero, micro_batch=micro_batch,
                           grad_accum=_accumulation(job, dp, micro_batch),
                           grad_ckpt=pins.grad_ckpt if pins.grad_ckpt is not None else True, cp=pins.cp)
    return job.device_bytes(layout) <= job.gpu.memory_bytes


def choose(job: Job, pins: Pins, *, tokens: float, target_seconds: float | None,
           target_days: float | None = None) -> Placement:
    """The layout for ``job``: pinned values kept, the rest chosen (see the module's docstring)."""
    why: list[str] = []
    if pins.gpus is not None:
        count = pins.gpus
        why.append(f"{count} GPU(s) as given")
    else:
        counts = gpu_counts(job.link.gpus_per_node)
        # The fewest GPUs on which the most frugal layout fits (memory only falls as GPUs are added).
        low, high = 0, len(counts) - 1
        if not _floor_fits(job, counts[high], pins):
            count = counts[high]
        else:
            while low < high:
                mid = (low + high) // 2
                if _floor_fits(job, counts[mid], pins):
                    high = mid
                else:
                    low = mid + 1
            count = counts[low]
        why.append(f"{count} GPU(s): the fewest on which it fits")
        if target_seconds is not None:
            best, _, _ = _fastest_at(job, count, pins)
            if best is not None:
                rate = 1.0 / best.seconds_per_token / count  # tokens/s per GPU
                needed = tokens / rate / target_seconds
                if needed > count:
                    per_node = job.link.gpus_per_node
                    limit = job.global_batch * max(job.link.gpus_per_node, 1)  # one sequence per replica at most
                    larger = min(math.ceil(needed / per_node) * per_node, max(limit, count), MAX_GPUS)
                    if larger > count:
                        count = larger
                        days = target_days if target_days is not None else target_seconds / 86400
                        why[-1] = (f"{count} GPUs: the fewest whole nodes that finish in about {days:g} days "
                                   "(fits on fewer)")
    best, smallest, fitting = _fastest_at(job, count, pins)
    if best is None:
        chosen = smallest.layout if smallest is not None else engine.Layout(gpus=count)
        memory = job.memory(chosen)
        return Placement(chosen, memory, False, _why_not(job, chosen, memory, fixed=pins.gpus is not None),
                         tuple(why))
    layout = best.layout
    memory = job.memory(layout)
    why += _explain(job, layout, pins, fitting)
    return Placement(layout, memory, True, "", tuple(why))


def _explain(job: Job, layout: engine.Layout, pins: Pins, fitting: list[_Tried]) -> list[str]:
    lines = []
    if pins.micro_batch is None:
        lines.append(f"micro-batch {layout.micro_batch}: the fastest that fits"
                     + (f", {layout.grad_accum} accumulation steps" if layout.grad_accum > 1 else ""))
    if pins.grad_ckpt is None:
        if layout.grad_ckpt:
            without = [t for t in fitting if not t.layout.grad_ckpt]
            lines.append("activation checkpointing on: " + ("faster here (larger micro-batches fit)" if without
                                                             else "nothing fits without it"))
        else:
            lines.append("activation checkpointing off: not needed")
    if pins.zero is None and layout.dp > 1:
        names = {0: "DDP (replicas)", 1: "ZeRO-1 (optimizer states sharded)", 2: "ZeRO-2 (states and gradients "
                 "sharded)", 3: "ZeRO-3 / FSDP (everything sharded)"}
        lines.append(f"{names[layout.zero]} over {layout.dp} data-parallel replicas")
    if pins.tp is None and layout.tp > 1:
        lines.append(f"tensor parallel {layout.tp} inside each node")
    if layout.pp > 1:
        virtual = int(engine.virtual_stages(job.model.num_layers, layout.pp, job.work.virtual_stages))
        schedule = f"interleaved 1F1B, {virtual} virtual stages per GPU" if virtual > 1 else "1F1B, one stage per GPU"
        lines.append(f"{layout.pp} pipeline stages{' across nodes' if pins.pp is None else ''} ({schedule}; "
                     "--virtual-stages)")
    return lines


def _why_not(job: Job, layout: engine.Layout, memory: MemoryBreakdown, *, fixed: bool) -> str:
    capacity = job.gpu.memory_bytes
    need = fmt_bytes(memory.device_bytes)
    where = f"on {layout.gpus} GPU(s)" if fixed else f"even on {fmt_count(layout.gpus).strip()} GPUs"
    parts = job.parts(layout.grad_ckpt).memory
    floor = engine.device_bytes((parts.checkpoints + parts.recompute + parts.logits_peak) / layout.tp
                                if layout.grad_ckpt else (parts.activations + parts.logits_peak) / layout.tp,
                                job.allocator_slack, job.profile.cuda_context_bytes())
    if floor > capacity:
        return (f"one sequence's activations and logits alone need {fmt_bytes(floor)} per GPU (GPU holds "
                f"{fmt_bytes(capacity)}) however many GPUs share the rest; use a shorter --seq-len, "
                "--grad-ckpt, or a larger GPU")
    return (f"needs {need} per GPU {where} with {('ZeRO-' + str(layout.zero)) if layout.zero else 'no sharding'}"
            f", micro-batch {layout.micro_batch} (GPU holds {fmt_bytes(capacity)})")


def default_global_batch(model: ModelSpec, method: Method, seq_len: int) -> tuple[int, str]:
    """Sequences per optimizer step from published practice, and the sentence saying so."""
    params = count_params(model).total
    try:
        tokens, source = practice("global_batch_tokens", method.key, params)
        sequences = max(1, round(tokens / seq_len))
        return sequences, (f"global batch {sequences} sequences ({fmt_count(sequences * seq_len).strip()} tokens per "
                           f"step; {source})")
    except LookupError:
        pass
    sequences_f, source = practice("global_batch_sequences", method.key, params)
    sequences = int(sequences_f)
    return sequences, f"global batch {sequences} sequences ({source})"


def check_pins(model: ModelSpec, pins: Pins, framework: Framework, link: Link) -> None:
    """Refuse pinned layouts the model or stack cannot run, with the reason."""
    if pins.tp is not None:
        if pins.tp > link.gpus_per_node:
            raise CostplanError(f"--tp {pins.tp} exceeds the {link.gpus_per_node} GPUs of a node; tensor "
                                "parallelism is planned inside a node.")
        if model.num_heads % pins.tp or (model.num_kv_heads % pins.tp and pins.tp % model.num_kv_heads):
            raise CostplanError(f"--tp {pins.tp} does not divide {model.name}'s {model.num_heads} attention heads "
                                f"({model.num_kv_heads} key/value heads).")
    if pins.pp is not None and pins.pp > model.num_layers:
        raise CostplanError(f"--pp {pins.pp} exceeds {model.name}'s {model.num_layers} layers.")
    if pins.cp > 1 and not framework.tensor_parallel:
        raise CostplanError(f"{framework.key} has no context parallelism; use --framework megatron or torchtitan.")
    if pins.gpus is not None:
        split = (pins.tp or 1) * (pins.pp or 1) * pins.cp
        if pins.gpus % split:
            raise CostplanError(f"--gpus {pins.gpus} is not a multiple of --tp x --pp x --cp ({split}).")
