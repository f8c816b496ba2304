"""The projection engine: per-GPU memory, step time, communication, cost and energy of a layout.

One set of formulas serves one configuration (``costplan estimate``: Python numbers, no numpy) and
millions of them at once (``costplan plan``: numpy arrays over GPU type x count x micro-batch x
ZeRO stage x tensor parallelism ...), through the helpers in ``xp``. What depends only on the
model, method and workload (the per-sequence memory terms, the FLOPs and the shape of a step) is
computed once by the pure rules in ``memory``, ``flops`` and ``speed``; what depends on the GPU and
the layout is computed here.

Layout (Megatron/DeepSpeed vocabulary): ``gpus = dp x tp x pp``; tensor parallelism (``tp``) inside
a node, pipeline stages (``pp``) across nodes, data-parallel replicas (``dp``) with ZeRO stage
``zero`` (3 = FSDP full sharding); ``micro_batch`` sequences per GPU per forward/backward and
``grad_accum`` micro-batches per optimizer step.
"""

from __future__ import annotations

from typing import Any

from costplan import xp
from costplan.memory import InferenceMemory, MemoryBreakdown, TrainingMemory
from costplan.record import record
from costplan.speed import HOST_SHARPNESS, Constants, DecodeShape, StepShape, micro_batch_seconds, optimizer_seconds
from costplan.terms import Mem, Phase

NCCL_LATENCY_SECONDS = 10e-6
"""Latency of one collective inside a node (typical NCCL small-message latency; assumption).
Decode's many tiny all-reduces use the fitted ``collective_latency`` of tables/efficiency.csv."""
INTER_NODE_LATENCY_SECONDS = 25e-6
"""Extra latency of a collective that crosses nodes (InfiniBand/RoCE round trips; assumption)."""
DDP_BUCKET_BYTES = 25 * 2**20
"""PyTorch DDP's default gradient bucket (``bucket_cap_mb=25``): one all-reduce per bucket."""
BACKWARD_OVERLAP = 0.8
"""Fraction of a micro-batch's backward (and, for ZeRO-3, forward) during which bucketed
collectives can run; the first and last buckets cannot overlap (assumption)."""


@record(kw_only=True)
class Layout:
    """How a training job is laid out over GPUs."""

    gpus: int
    tp: int = 1
    pp: int = 1
    zero: int = 0
    micro_batch: int = 1
    grad_accum: int = 1
    grad_ckpt: bool = False
    cp: int = 1
    """Context parallelism: each sequence's tokens split over ``cp`` GPUs (ring attention)."""

    def __post_init__(self) -> None:
        if self.gpus % (self.tp * self.pp * self.cp):
            raise ValueError(f"{self.gpus} GPUs are not a multiple of tp {self.tp} x pp {self.pp} x cp {self.cp}")

    @property
    def dp(self) -> int:
        return self.gpus // (self.tp * self.pp * self.cp)


@record
class Hardware:
    """The GPU-dependent inputs; each a number, or (plan) an array over configurations."""

    memory_bytes: Any
    peak: Any
    """Dense peak FLOP/s at the matmul precision (fp8 under fp8)."""
    peak_16bit: Any
    """Dense peak FLOP/s at the 16-bit (or fp32) precision attention and adapters run at."""
    bandwidth: Any
    """Memory bandwidth, bytes/s (datasheet)."""
    gemm_efficiency: Any
    attention_efficiency: Any
    intra_bytes_per_s: Any
    """Per-GPU one-way bandwidth to the other GPUs of its node."""
    node_bytes_per_s: Any
    """A node's network bandwidth to other nodes, all its NICs together."""
    gpus_per_node: Any
    usd_per_gpu_hour: Any
    watts: Any
    low_precision_factor: Any = 1.0
    """fp8 matmuls: the share of ``peak`` they reach relative to a 16-bit matmul's share of its own."""
    host_link_bytes_per_s: Any = 31.5e9
    """Host link (PCIe) bandwidth per direction, which offloaded tensors cross."""


# --- memory ------------------------------------------------------------------------------------

def training_phases(mem: TrainingMemory, *, dp: Any, zero: Any, micro_batch: Any, grad_accum: Any, tp: Any = 1,
                    pp: Any = 1, cp: Any = 1) -> dict[Phase, dict[Mem, Any]]:
    """Live bytes per GPU at each candidate peak of a training step, by term.

    ``mem`` holds one replica's terms for ONE sequence (micro-batch 1, no parallelism). Tensor
    parallelism (Megatron-style with sequence parallelism) splits every term ``tp`` ways; pipeline
    stages split the model ``pp`` ways, and 1F1B keeps up to ``pp`` micro-batches in flight on the
    first stage (``min(pp, grad_accum)`` micro-batches of ``1/pp`` of the layers); context
    parallelism splits each sequence ``cp`` ways. ZeRO stage 1
    shards master weights, optimizer states and step temporaries over the ``dp`` replicas, stage 2
    also gradients, stage 3 (FSDP) also weights, gathering two layers at a time. Under FSDP, a stack
    that accumulates without sync keeps unsharded gradients between micro-batches
    (``mem.unsharded_gradients``), and FSDP1 units mixing frozen and trainable parameters have
    gradients for their whole flat parameters (``mem.flat_gradients``).
    """
    model_split = tp * pp
    mb = micro_batch / (tp * cp)  # context parallelism splits each sequence's activations too
    dp = dp * cp  # optimizer states shard over every data-parallel and context-parallel rank
    in_flight = xp.minimum(pp, grad_accum) / pp
    by_states = xp.where(zero >= 1, dp, 1) * model_split
    held = {Mem.WEIGHTS: mem.weights / (xp.where(zero >= 3, dp, 1) * model_split),
            Mem.MASTER: mem.master_weights / by_states,
            Mem.OPTIMIZER: mem.optimizer_states / by_states}
    by_grads = xp.where(zero >= 2, dp, 1) * model_split
    buffer = mem.gradient_buffer / by_grads  # a persistent buffer (Megatron's main gradients) in every phase
    grads = mem.gradients / by_grads + buffer
    fsdp = (zero >= 3) & (dp > 1)
    if mem.flat_gradients:  # FSDP1 units mixing frozen and trainable parameters: whole flat gradients
        grads = xp.where(fsdp, mem.flat_gradients / by_grads + buffer, grads)
    gather = xp.where(fsdp, 2 * mem.layer_weights / model_split, 0.0)
    # FSDP's root unit (embeddings and LM head): gathered for the loss's backward, the last layer
    # prefetched beside it (the head's gradient is the loss's, in ``logits``), and unsharded until
    # backward ends, the trained head's gradient with it.
    rooted = fsdp & (mem.root_unit > 0)
    loss_gather = xp.where(rooted, (mem.root_unit + mem.layer_weights) / model_split, gather)
    late_gather = gather + xp.where(fsdp, (mem.root_unit + mem.root_gradients) / model_split, 0.0)
    accumulated = xp.where(grad_accum > 1, grads, buffer)
    late = grads  # late in backward
    if mem.unsharded_gradients:  # accumulating without sync: unsharded until the last micro-batch
        accumulating = fsdp & (grad_accum > 1)
        accumulated = xp.where(accumulating, mem.unsharded_gradients / model_split + buffer, accumulated)
        late = xp.where(accumulating, accumulated, grads)
    per_batch = mem.batch_activations / tp * in_flight
    activations = mem.activations * mb * in_flight + per_batch
    logits = mem.logits_peak * mb
    transient = mem.layer_transient * mb
    # Top of backward: every saved tensor with the loss's gradients on top (and a quantized head
    # dequantized for its backward) or, when larger (tiny vocabularies, QLoRA's dequantized
    # matrices), the last layer's backward gradients.
    loss_side = logits + mem.head_workspace >= transient + mem.workspace
    # autocast's 16-bit casts of fp32 weights (and fp8 copies), saved for backward; under ZeRO-3 /
    # FSDP the gathered 16-bit layers are the copies (``gather``).
    copies = xp.where(zero >= 3, 0.0, mem.weight_copies / model_split)
    held_logits = mem.held_logits * mb  # the loop's outputs, held from one forward to the next
    phases: dict[Phase, dict[Mem, Any]] = {Phase.BACKWARD_START: {
        **held, Mem.GRADIENTS: accumulated, Mem.ACTIVATIONS: activations, Mem.GATHER: loss_gather,
        Mem.WEIGHT_COPIES: copies,
        Mem.LOGITS: xp.where(loss_side, logits, 0.0) + held_logits,
        Mem.LAYER_BACKWARD: xp.where(loss_side, 0.0, transient),
        Mem.DEQUANT: xp.where(loss_side, mem.head_workspace, mem.workspace)}}
    if mem.attention_backward > 0:
        # Eager attention's softmax backward in the last layer (re-run when checkpointing).
        kept = (mem.checkpoints * in_flight + mem.recompute) if mem.recompute else mem.activations * in_flight
        phases[Phase.ATTENTION_BACKWARD] = {
            **held, Mem.GRADIENTS: accumulated, Mem.GATHER: gather, Mem.LOGITS: held_logits,
            Mem.ACTIVATIONS: (kept + mem.attention_backward) * mb + per_batch}
    if mem.recompute:
        # Checkpointing: the last layer re-run on top of every checkpoint, with its gradients.
        phases[Phase.LAYER_RECOMPUTE] = {
            **held, Mem.GRADIENTS: accumulated,
            Mem.ACTIVATIONS: (mem.checkpoints * in_flight + mem.recompute) * mb + per_batch,
            Mem.LAYER_BACKWARD: transient, Mem.DEQUANT: mem.workspace, Mem.GATHER: late_gather, Mem.LOGITS: held_logits}
    # Late in backward nearly all gradients exist; a checkpointed layer is being re-run.
    phases[Phase.BACKWARD_END] = {
        **held, Mem.GRADIENTS: late, Mem.ACTIVATIONS: mem.recompute * mb,
        Mem.LAYER_BACKWARD: transient if mem.recompute else 0.0, Mem.DEQUANT: mem.workspace, Mem.GATHER: late_gather,
        Mem.LOGITS: held_logits}
    phases[Phase.OPTIMIZER_STEP] = {
        **held, Mem.GRADIENTS: grads, Mem.GRAD_COPIES: mem.gradient_copies / by_states,
        Mem.STEP_TEMPS: mem.step_temporaries / by_states, Mem.LOGITS: held_logits}
    if mem.load_gather or mem.load_quantize:
        # Loading the checkpoint by gathering the whole (sharded) model onto every GPU at once, or
        # quantizing each matrix on the GPU as it loads (the model's other weights already there).
        phases[Phase.CHECKPOINT_LOAD] = {
            Mem.WEIGHTS: held[Mem.WEIGHTS],
            Mem.GATHER: xp.where((zero >= 3) & (dp > 1), mem.load_gather / model_split, 0.0),
            Mem.QUANTIZE: mem.load_quantize / model_split}
    return phases


def inference_phases(mem: InferenceMemory, *, tp: Any) -> dict[Phase, dict[Mem, Any]]:
    """Weights, KV cache and the prefill's transient activations, split over ``tp`` GPUs."""
    return {Phase.GENERATION: {Mem.WEIGHTS: mem.weights / tp, Mem.KV_CACHE: mem.kv_cache / tp,
                               Mem.ACTIVATIONS: mem.workspace / tp}}


def phase_totals(phases: dict[Phase, dict[Mem, Any]]) -> dict[Phase, Any]:
    return {phase: sum(terms.values()) for phase, terms in phases.items()}


def peak_bytes(phases: dict[Phase, dict[Mem, Any]]) -> Any:
    return xp.maximum(*phase_totals(phases).values())


def device_bytes(peak: Any, allocator_slack: float, context_bytes: float) -> Any:
    """What the GPU must hold: live tensors, the caching allocator's slack and the CUDA context."""
    return peak * (1 + allocator_slack) + context_bytes


def breakdown(phases: dict[Phase, dict[Mem, Any]], allocator_slack: float, context_bytes: float,
              managed_bytes: float = 0.0, host_bytes: float = 0.0) -> MemoryBreakdown:
    """The peak phase and its terms, for one configuration."""
    totals = {phase: float(total) for phase, total in phase_totals(phases).items()}
    peak_phase = max(totals, key=totals.__getitem__)
    terms = {term: float(v) for term, v in phases[peak_phase].items() if float(v)}
    reserved = totals[peak_phase] * (1 + allocator_slack)
    return MemoryBreakdown(terms, totals, peak_phase, reserved, reserved + context_bytes, float(managed_bytes),
                           float(host_bytes))


def off_device_bytes(mem: TrainingMemory, *, dp: Any, zero: Any, micro_batch: Any, tp: Any = 1, pp: Any = 1,
                     cp: Any = 1) -> tuple[Any, Any]:
    """Per GPU: paged optimizer states (managed memory) and host memory for what is offloaded,
    sharded as the terms they come from."""
    model_split = tp * pp
    dp = dp * cp
    by_states = xp.where(zero >= 1, dp, 1) * model_split
    managed = mem.paged_states / by_states
    host = (mem.host_states / by_states + mem.host_weights / (xp.where(zero >= 3, dp, 1) * model_split)
            + mem.host_activations * micro_batch / (tp * cp))
    return managed, host


# --- communication ----------------------------------------------------------------------------

def _hierarchical(size: Any, members: Any, per_node: Any, groups_per_node: Any, hw: Hardware,
                  factor: float) -> Any:
    """Seconds of a ring collective over ``members`` GPUs, ``per_node`` of them in each node:
    ``factor`` 2 for an all-reduce, 1 for an all-gather or reduce-scatter of ``size`` bytes (the
    whole tensor). Inside a node it runs over NVLink/PCIe at each GPU's bandwidth; between nodes
    each node sends its share over its NICs, which ``groups_per_node`` such collectives share."""
    g = xp.maximum(xp.minimum(members, per_node), 1)
    nodes = xp.ceil(members / g)
    intra = factor * (g - 1) / g * size / hw.intra_bytes_per_s
    inter = factor * (nodes - 1) / nodes * size * groups_per_node / hw.node_bytes_per_s
    latency = xp.where(members > 1, NCCL_LATENCY_SECONDS, 0.0) + xp.where(nodes > 1, INTER_NODE_LATENCY_SECONDS, 0.0)
    return intra + inter + latency


def data_parallel_seconds(gradient_bytes: Any, weight_bytes: Any, *, dp: Any, tp: Any, pp: Any, zero: Any,
                          hw: Hardware, no_sync: bool = False, flat_gradient_bytes: float = 0.0) -> tuple[Any, Any]:
    """(once per optimizer step, per micro-batch) seconds of data-parallel communication on one GPU.

    DDP and ZeRO-1/2 all-reduce (or reduce-scatter then all-gather: the same volume) the trained
    parameters' gradients once per optimizer step, after the last micro-batch's backward; ZeRO-3 /
    FSDP all-gathers every layer's weights in forward and again in backward and reduce-scatters
    the gradients in every micro-batch (Rajbhandari et al. 2020, section 7), or only in the last one
    when the stack accumulates without sync (``no_sync``). A frozen base sends no gradients, except
    where FSDP1 units mix it with adapters (``flat_gradient_bytes``: the units' whole gradients).
    ``gradient_bytes`` and ``weight_bytes`` are one replica's, unsplit.
    """
    # Members of one data-parallel group inside a node (tensor-parallel ranks fill the rest); the
    # node's other groups (one per tensor-parallel rank) share its NICs.
    per_node = xp.minimum(xp.maximum(hw.gpus_per_node // tp, 1), dp)
    groups = hw.gpus_per_node / per_node
    share = tp * pp
    grads = gradient_bytes / share
    buckets = xp.ceil(grads / DDP_BUCKET_BYTES)
    reduce = _hierarchical(grads, dp, per_node, groups, hw, 2.0) + (buckets - 1) * xp.where(
        dp > 1, NCCL_LATENCY_SECONDS, 0.0)
    gather = 2 * _hierarchical(weight_bytes / share, dp, per_node, groups, hw, 1.0)
    scatter = _hierarchical((flat_gradient_bytes or gradient_bytes) / share, dp, per_node, groups, hw, 1.0)
    stage3 = zero >= 3
    if no_sync:
        return xp.where(stage3, scatter, reduce), xp.where(stage3, gather, 0.0)
    return xp.where(stage3, 0.0, reduce), xp.where(stage3, gather + scatter, 0.0)


def tensor_parallel_seconds(message_bytes: Any, *, layers: int, tp: Any, pp: Any, collectives_per_layer: float,
                            hw: Hardware) -> Any:
    """Megatron tensor parallelism with sequence parallelism: each layer all-gathers and
    reduce-scatters its activations before and after attention and the MLP (two of each in the
    forward, as many in the backward and in a recompute), over NVLink inside the node; not
    overlapped with compute (Megatron's default)."""
    one = (tp - 1) / tp * message_bytes / hw.intra_bytes_per_s + NCCL_LATENCY_SECONDS
    return xp.where(tp > 1, layers / pp * collectives_per_layer * one, 0.0)


# --- training time --------------------------------------------------------------------------

@record
class StepTime:
    """One optimizer step on one GPU, in seconds; fields are numbers or arrays."""

    micro_batch: Any
    """Compute of one micro-batch (this GPU's share)."""
    compute: Any
    """All micro-batches of the step."""
    tensor_parallel: Any
    pipeline_bubble: Any
    data_parallel: Any
    """Communication not hidden behind backward."""
    data_parallel_total: Any
    optimizer: Any
    total: Any
    tokens: Any
    """Data tokens the whole job processes per optimizer step."""

    @property
    def scaling_efficiency(self) -> Any:
        """Compute over the whole step."""
        return self.compute / self.total


HOST_LINK_EFFICIENCY = 0.8
"""Share of the PCIe x16 peak that pinned host-device copies reach (CUDA's bandwidthTest / nvbandwidth
measure about 25 of 31.5 GB/s on gen4 and 50-55 of 63 GB/s on gen5)."""
CPU_ADAM_SECONDS_PER_PARAM = 2e-10
"""DeepSpeed's CPU Adam: it streams about 28 bytes per parameter (fp32 weight, gradient and two
states read; weight and states written), bound by host DRAM bandwidth, about 140 GB/s on a
two-socket server: 0.2 s per billion parameters (ZeRO-Offload, Ren et al. 2021, report CPU-Adam
6x faster than PyTorch's CPU Adam and of this order)."""


def virtual_stages(layers: int, pp: Any, given: int | None = None) -> Any:
    """Pipeline stages each GPU holds: as given (1: plain 1F1B), else about two layers each (NeMo's
    interleaved 1F1B); never more than the layers a GPU holds."""
    most = xp.maximum(layers // pp, 1)
    return xp.minimum(given, most) if given is not None else xp.maximum(layers // (2 * pp), 1)


def training_step(shape: StepShape, mem: TrainingMemory, *, hw: Hardware, constants: Constants, dp: Any, tp: Any,
                  pp: Any, zero: Any, micro_batch: Any, grad_accum: Any, hidden_size: int,
                  correction: float = 1.0, cp: Any = 1) -> StepTime:
    """The time of one optimizer step for the layout; ``correction`` scales the compute by a
    calibration (measured over predicted step time; 1 without one)."""
    # Context parallelism: each GPU runs 1/cp of every sequence's tokens and of its attention
    # queries (against all keys, exchanged around a ring and hidden behind the attention kernel).
    mb_seconds = correction * micro_batch_seconds(
        shape, sequences=micro_batch / cp, tp=tp, pp=pp, peak=hw.peak * hw.low_precision_factor,
        peak_16bit=hw.peak_16bit,
        bandwidth=hw.bandwidth, gemm_efficiency=hw.gemm_efficiency,
        attention_efficiency=hw.attention_efficiency, constants=constants)
    message = micro_batch / cp * shape.tokens * hidden_size * shape.bytes_per_element
    passes = 8.0 + (4.0 if mem.recompute else 0.0)
    tp_seconds = tensor_parallel_seconds(message, layers=shape.layers, tp=tp, pp=pp,
                                         collectives_per_layer=passes, hw=hw)
    per_micro = mb_seconds + tp_seconds
    compute = grad_accum * per_micro
    # Interleaved 1F1B (Megatron's virtual pipeline, as NeMo's recipes run large models: about two
    # layers per virtual stage): (pp - 1) / v micro-batch slots idle while the pipeline fills and
    # drains; stages pass activations to their neighbour over the node network, v times as often.
    # Plain 1F1B (DeepSpeed's pipeline engine) has one stage per GPU: v = 1 (Narayanan et al. 2021).
    virtual = virtual_stages(shape.layers, pp, shape.virtual_stages)
    p2p = xp.where(pp > 1, 2 * virtual * message / tp / (hw.node_bytes_per_s / hw.gpus_per_node), 0.0)
    bubble = (pp - 1) / virtual * per_micro + grad_accum * p2p
    once, per_batch = data_parallel_seconds(mem.reduced_gradients or mem.gradients, mem.weights, dp=dp * cp, tp=tp,
                                            pp=pp, zero=zero, hw=hw, no_sync=bool(mem.unsharded_gradients),
                                            flat_gradient_bytes=mem.flat_gradients)
    backward = mb_seconds * 2.0 / 3.0
    exposed = (xp.maximum(once - BACKWARD_OVERLAP * backward, 0.0)
               + grad_accum * xp.maximum(per_batch - BACKWARD_OVERLAP * mb_seconds, 0.0))
    shards = tp * pp * xp.where(zero >= 1, dp * cp, 1)
    optimizer = optimizer_seconds(shape, shards=shards, bandwidth=hw.bandwidth, constants=constants)
    if mem.offload_bytes_per_step or mem.offload_bytes_per_micro or mem.offload_param_bytes_per_micro:
        link = hw.host_link_bytes_per_s * HOST_LINK_EFFICIENCY
        # ZeRO-Offload: gradients down and updated weights up over PCIe, and the step on the host
        # CPU, none of it hidden behind this step's compute; parameter and checkpoint traffic runs
        # beside the compute of each micro-batch.
        offloaded = (mem.offload_bytes_per_step / shards / link
                     + mem.offloaded_params / shards * CPU_ADAM_SECONDS_PER_PARAM)
        optimizer = xp.where(mem.offloaded_params > 0, offloaded, optimizer + offloaded)
        # Checkpoints cross per sequence; each GPU fetches its own shard of the offloaded parameters once
        # per micro-batch, whatever its size (the all-gather between GPUs is ZeRO-3's own traffic).
        per_micro_link = (mem.offload_bytes_per_micro * micro_batch / (tp * pp * cp)
                          + mem.offload_param_bytes_per_micro / (tp * pp * xp.where(zero >= 3, dp * cp, 1))) / link
        exposed = exposed + grad_accum * xp.maximum(per_micro_link - BACKWARD_OVERLAP * mb_seconds, 0.0)
    total = compute + bubble + exposed + optimizer
    tokens = dp * micro_batch * grad_accum * shape.tokens
    return StepTime(mb_seconds, compute, grad_accum * tp_seconds, bubble, exposed, once + grad_accum * per_batch,
                    optimizer, total, tokens)


@record
class Throughput:
    """A job's speed and cost over its layout; fields are numbers or arrays."""

    tokens_per_second: Any
    """Whole job."""
    wall_seconds: Any
    gpu_hours: Any
    cost_usd: Any
    energy_kwh: Any
    mfu: Any
    """Model FLOPs (no recompute) per second over the GPUs' dense peak (PaLM's definition)."""
    hfu: Any
    """Executed FLOPs (recompute included) per second over the dense peak."""


def throughput(step: StepTime, shape: StepShape, *, gpus: Any, hw: Hardware, tokens: float,
               startup_seconds: float, pue: float, goodput: float = 1.0) -> Throughput:
    """Speed (steady state), wall time, GPU-hours, dollars and kWh of ``tokens`` data tokens. The
    wall time divides the steady-state time by ``goodput``, the share of a run spent in training
    steps (the rest: evaluation, checkpoint saves, data stalls, restarts after failures), and adds
    ``startup_seconds`` per run."""
    tokens_per_second = step.tokens / step.total
    seconds = tokens / tokens_per_second / goodput + startup_seconds
    gpu_hours = gpus * seconds / 3600
    per_token_model = shape.model_flops / shape.tokens
    per_token_hardware = shape.hardware_flops / shape.tokens
    return Throughput(tokens_per_second, seconds, gpu_hours, gpu_hours * hw.usd_per_gpu_hour,
                      gpu_hours * hw.watts / 1000 * pue,
                      tokens_per_second * per_token_model / (gpus * hw.peak),
                      tokens_per_second * per_token_hardware / (gpus * hw.peak))


# --- inference --------------------------------------------------------------------------------

def experts_hit(experts: int, per_token: int, tokens: Any) -> Any:
    """Expected distinct experts a layer reads for ``tokens`` independently routed tokens."""
    if experts <= 1:
        return 1.0
    return experts * (1.0 - (1.0 - per_token / experts) ** tokens)


def decode_step_seconds(shape: DecodeShape, *, batch: Any, tp: Any, hw: Hardware, constants: Constants,
                        dispatch_seconds: float, format_efficiency: float = 1.0, dequant_ops: float = 0.0,
                        vector_peak: float = 0.0, collective_latency: float = NCCL_LATENCY_SECONDS) -> Any:
    """One decode step for ``batch`` requests: weights (the experts the batch hits) and KV cache read
    at the achieved bandwidth (quantized weights at ``format_efficiency`` of it), the FLOPs, or the
    dequantization of every quantized weight read (``dequant_ops`` operations each on the CUDA cores,
    ``vector_peak`` FLOP/s: what bounds weight-only kernels on GPUs with little non-tensor throughput
    per byte of bandwidth), whichever is largest; the host's dispatch overlaps; tensor parallelism adds
    two all-reduces per layer."""
    hit = experts_hit(shape.experts, shape.experts_per_token, batch)
    read = shape.weight_bytes + hit * shape.expert_bytes
    stream = hw.bandwidth * constants.bandwidth_efficiency
    memory = (read / format_efficiency + batch * shape.kv_bytes_per_sequence) / tp / stream
    compute = batch * shape.flops_per_token / tp / (hw.peak * hw.gemm_efficiency)
    device = xp.maximum(memory, compute)
    if dequant_ops and vector_peak:
        elements = (shape.matrix_elements + hit * shape.expert_elements) / tp
        device = xp.maximum(device, elements * dequant_ops / vector_peak)
    step = xp.soft_max(device, shape.operators * dispatch_seconds, HOST_SHARPNESS)
    message = batch * shape.hidden_size * shape.bytes_per_element
    all_reduce = 2 * (tp - 1) / tp * message / hw.intra_bytes_per_s + collective_latency
    return step + xp.where(tp > 1, 2 * shape.layers * all_reduce, 0.0)
