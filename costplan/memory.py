"""Peak memory per GPU, itemised, for a training step or for generation.

Training (steady state, ``zero_grad(set_to_none=True)``) has up to four candidate peaks; the largest wins:

- **backward start**: weights + fp32 master weights + optimizer states (+ gradients kept across
  micro-batches under gradient accumulation) + every saved activation + the logits at their
  backward peak + workspaces. Weight gradients grow while activations are freed, so the
  memory in between stays below the larger of this and the next point.
- **layer recompute** (activation checkpointing only): every checkpoint plus the last layer
  re-run and the gradients inside its backward;
- **backward end**: weights + master weights + states + all gradients (+ the one layer that
  activation checkpointing is re-running);
- **optimizer step**: weights + master weights + states + all gradients + the step's
  temporaries (see ``optimizers``).

Mixed precision (bf16/fp16/fp8) keeps trained base weights and gradients in 16-bit with an fp32
master copy; peft adapters, virtual tokens and prefixes are fp32 themselves. ZeRO stage 1
shards master weights, states and step temporaries over the data-parallel GPUs; stage 2 also
gradients; stage 3 (FSDP) also weights, gathering two layers at a time.

Everything here is one replica's memory for the given workload, before any parallelism; the
engine (``costplan.engine``) splits it over a layout and finds the peak phase.

The reserved total adds the caching allocator's slack; the device total adds the CUDA context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from costplan import precision as modes
from costplan.activations import (
    LogitsBytes,
    eager_attention_backward,
    layer_backward_transient,
    logit_count,
    logits_bytes,
    saved_tensors,
)
from costplan.gradflow import merged_linears, model_flows
from costplan.methods import Method, Tensor2D
from costplan.model import LayerKind, Linear, ModelSpec, count_params, layer_kinds, layer_linears
from costplan.optimizers import optimizer
from costplan.record import record
from costplan.terms import Mem, Phase
from costplan.workload import Workload

FP32 = 4
NF4_BLOCK = 64
DOUBLE_QUANT_BLOCK = 256


def nf4_bytes_per_param(double_quant: bool) -> float:
    """4-bit values plus one absmax per 64 weights: fp32, or 8-bit with an fp32 constant per
    256 blocks under double quantization (Dettmers et al. 2023, section 3)."""
    if double_quant:
        return 0.5 + 1 / NF4_BLOCK + FP32 / (NF4_BLOCK * DOUBLE_QUANT_BLOCK)
    return 0.5 + FP32 / NF4_BLOCK


INT8_BYTES_PER_PARAM = 1.0 + 4 / 4096
"""LLM.int8 (bitsandbytes ``Int8Params``): one byte per weight and an fp32 scale per output row
(``SCB``; about 4/4096 bytes per weight for 4096-wide rows)."""
WEIGHT_FORMATS = ("bf16", "fp16", "fp8", "int8", "int4", "nf4", "mxfp4")
MXFP4_BYTES_PER_PARAM = 0.5 + 1 / 32
"""OCP microscaling FP4 (E2M1) with one 8-bit (E8M0) scale per block of 32 weights: 4.25 bits."""
INT4_GROUP = 128
"""AWQ and GPTQ quantize in groups of 128 weights with a 16-bit scale and a zero point each."""


def weight_bytes_per_param(weights: str, compute_bytes: int) -> float:
    """Stored bytes per element of a quantized matrix (weight-only quantization for inference):
    int8 with a per-row scale (about 1 byte), int4 AWQ/GPTQ with a 16-bit scale and zero per group
    of 128, NF4 with double quantization (bitsandbytes), fp8 (1 byte), MXFP4 (4.25 bits)."""
    return {"bf16": 2.0, "fp16": 2.0, "fp32": 4.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5 + 4 / INT4_GROUP,
            "nf4": nf4_bytes_per_param(True), "mxfp4": MXFP4_BYTES_PER_PARAM}.get(weights, float(compute_bytes))


def fp32_params(model: ModelSpec) -> int:
    """Parameters kept in float32 whatever the compute dtype (DeepSeek-V3's routers)."""
    return sum(kind.count * lin.params for kind in layer_kinds(model) for lin in kind.linears if lin.fp32)


def base_weight_bytes(model: ModelSpec, method: Method, compute_bytes: int) -> float:
    """Bytes of the base model's weights as stored: the layers' matrices in NF4 for QLoRA (or in a
    weight-only format for inference), embeddings, norms and the LM head in the compute dtype."""
    total = count_params(model).total
    fp32 = fp32_params(model) * (FP32 - compute_bytes)
    per = matrix_bytes_per_param(method, compute_bytes)
    if per == compute_bytes:
        return total * compute_bytes + fp32
    matrices = quantized_params(model, method)
    return matrices * per + (total - matrices) * compute_bytes + fp32


def quantized_params(model: ModelSpec, method: Method) -> int:
    """Weights a quantized base stores at ``matrix_bytes_per_param``: the layers' matrices, and a vision
    tower's ``nn.Linear`` weights when bitsandbytes loads the model in 4 or 8 bits (weight-only
    inference formats quantize the language model only). bitsandbytes replaces ``nn.Linear`` layers
    only: gpt-oss's router and experts, tensors of custom modules, stay 16-bit."""
    if experts_only(model, method):
        return _layer_weights(model, lambda lin: lin.copies > 1)
    if method.base_storage not in ("nf4", "int8"):
        return matrix_params(model)
    return (model.vision.linear_weights if model.vision else 0) + bnb_layer_matrices(model, method) \
        + quantized_head(model, method)


def quantized_head(model: ModelSpec, method: Method) -> int:
    """Weights of an LM head that the 4-bit loading quantizes too (``QLora.quantize_head``), untied."""
    if getattr(method, "quantize_head", False) and model.causal and not model.tied_embeddings:
        return model.vocab_size * model.hidden_size
    return 0


def bnb_layer_matrices(model: ModelSpec, method: Method) -> int:
    """The layers' weights bitsandbytes' 4- or 8-bit loading converts: its ``nn.Linear`` layers (not fp32
    ones, nor gpt-oss's expert tensors unless Unsloth's checkpoint stores them in 4 bits)."""
    experts = getattr(method, "quantize_experts", False)
    return _layer_weights(model, lambda lin: (lin.module or experts and lin.copies > 1) and not lin.fp32)


def experts_only(model: ModelSpec, method: Method) -> bool:
    """MXFP4 on a mixture of experts quantizes the routed experts only, as gpt-oss ships and vLLM and
    transformers load it (attention, router, embeddings and LM head stay 16-bit)."""
    return getattr(method, "weights", "") == "mxfp4" and model.is_moe


def matrix_bytes_per_param(method: Method, compute_bytes: int) -> float:
    """Bytes per weight of the layers' matrices as the method stores them (the compute dtype unless
    QLoRA's NF4, 8-bit LoRA's int8 or an inference weight-only format quantizes them)."""
    weights = getattr(method, "weights", "")
    if method.base_storage == "compute" and weights in ("", "bf16", "fp16"):
        return compute_bytes
    if method.base_storage == "nf4":
        return nf4_bytes_per_param(getattr(method, "double_quant", True))
    if method.base_storage == "int8":
        return INT8_BYTES_PER_PARAM
    return weight_bytes_per_param(weights, compute_bytes)


def matrix_params(model: ModelSpec, kinds: Iterable[LayerKind] | None = None) -> int:
    """Weights of the layers' matrices in the compute dtype: what 4-bit and weight-only formats
    quantize (fp32 ones, DeepSeek's routers, stay as they are); of ``kinds`` of layer only when given."""
    return _layer_weights(model, _in_compute_dtype, kinds)


def _in_compute_dtype(lin: Linear) -> bool:
    """A matrix stored in the compute dtype (fp32 ones, DeepSeek's routers, are not)."""
    return not lin.fp32


def _kind_matrix_params(kind: LayerKind) -> int:
    """One layer's matrix weights in the compute dtype."""
    return sum(lin.copies * lin.weight_elements for lin in kind.linears if _in_compute_dtype(lin))


def _layer_weights(model: ModelSpec, keep: Callable[[Linear], bool], kinds: Iterable[LayerKind] | None = None) -> int:
    """Weights of the layers' matrices that ``keep`` picks (every copy of a routed expert), over
    ``kinds`` of layer when given."""
    chosen = layer_kinds(model) if kinds is None else kinds
    return sum(kind.count * lin.copies * lin.weight_elements for kind in chosen for lin in kind.linears if keep(lin))


def _layer_bytes(kind: LayerKind, matrix_bytes: float, compute_bytes: int) -> float:
    """One layer's weights: its matrices at ``matrix_bytes`` each, the rest in the compute dtype."""
    matrices = _kind_matrix_params(kind)
    return matrices * matrix_bytes + (kind.params - matrices) * compute_bytes


def merged_gradient(model: ModelSpec, method: Method, compute_bytes: int) -> float:
    """LoRA through peft's ``target_parameters``: inside a layer's backward, the gradient of the merged
    expert stack whose backward runs first (the last merged in the forward: gpt-oss's down projection),
    formed while both merged stacks are still held; the factors' gradients are then taken from it."""
    merged = merged_linears(model, method)
    return compute_bytes * merged[-1][0].copies * merged[-1][0].weight_elements if merged else 0.0


def expert_stack_elements(model: ModelSpec) -> int:
    """Elements of one MoE layer's routed-expert matrices, every expert's (gate, up and down)."""
    return sum(lin.copies * lin.weight_elements for lin in layer_linears(model) if lin.role.startswith("expert_"))


def dora_workspace(model: ModelSpec, method: Method) -> float:
    """DoRA's transient per adapted matrix in forward, for the largest one: peft builds the adapter's
    full update through an identity matrix (in x in, fp32), the update itself (in x out, fp32) and
    the summed weight whose row norms it takes (out x in, fp32)."""
    magnitudes = [a.linear for a in method.adapters(model) if a.magnitude]
    if not magnitudes:
        return 0.0
    return max(FP32 * lin.in_features * (lin.in_features + 2 * lin.out_features) for lin in magnitudes)


@record
class TrainingMemory:
    """One replica's memory before sharding (activations for one micro-batch)."""

    weights: float
    gradients: float
    """Gradients of the trainable parameters as accumulated (under optimizer-in-backward: the
    largest one tensor's, freed once it is stepped)."""
    master_weights: float
    optimizer_states: float
    gradient_copies: float
    """fp32 copies of 16-bit gradients handed to the fp32 master weights before the step."""
    step_temporaries: float
    activations: float
    """Saved for backward at the end of the forward (only layer inputs when checkpointing)."""
    batch_activations: float
    """Saved once per micro-batch whatever its size: RoPE tables, T5's position-bias masks."""
    checkpoints: float
    """What stays saved once backward has passed the head: layer inputs and shared tables."""
    recompute: float
    """One checkpointed layer re-run in backward (0 without checkpointing)."""
    layer_transient: float
    """Gradients alive inside one layer's backward."""
    attention_backward: float
    """Eager attention's softmax backward: its extra bytes less the layer's freed MLP tensors."""
    logits_peak: float
    workspace: float
    """Dequantized matrices (QLoRA): one weight matrix in the compute dtype."""
    layer_weights: float
    """One layer's weights in the compute dtype (what ZeRO-3 gathers)."""
    head_workspace: float = 0.0
    """A quantized LM head dequantized whole while the loss's gradients are alive (``QLora.quantize_head``)."""
    reduced_gradients: float = 0.0
    """All gradient bytes a step reduces over data-parallel replicas (whatever is live at once)."""
    gradient_buffer: float = 0.0
    """A persistent gradient buffer allocated once and kept (Megatron's fp32 main gradients)."""
    weight_copies: float = 0.0
    """16-bit casts of fp32 weights that autocast keeps and the matmuls save for backward (mixed
    precision), and Transformer Engine's fp8 weight copies: alive from forward into backward."""
    paged_states: float = 0.0
    """Optimizer states in CUDA managed memory (bitsandbytes' paged optimizers): not counted by
    ``max_memory_allocated``, paged out to host memory when the GPU is full."""
    host_states: float = 0.0
    """Offloaded to host memory: optimizer states, master weights and fp32 gradients (sharded like states)."""
    host_weights: float = 0.0
    """Offloaded parameters (ZeRO-3 / FSDP parameter offload; sharded like weights)."""
    host_activations: float = 0.0
    """Offloaded checkpoints or saved activations, for the micro-batch."""
    offload_bytes_per_step: float = 0.0
    """Bytes that cross the host link once per optimizer step (gradients down, updated weights up)."""
    offload_bytes_per_micro: float = 0.0
    """Bytes that cross it per sequence of a micro-batch (checkpoints out and back)."""
    offload_param_bytes_per_micro: float = 0.0
    """Offloaded parameters fetched per micro-batch whatever its size (forward and backward), before sharding."""
    offloaded_params: float = 0.0
    """Parameters whose optimizer step runs on the host CPU (ZeRO-Offload's CPU Adam)."""
    root_unit: float = 0.0
    """Under FSDP, the root unit's embeddings and LM head in the compute dtype, unsharded from the loss's
    backward to the end of backward (``Workload.fsdp_root_unit``; 0 otherwise)."""
    root_gradients: float = 0.0
    """The root unit's trained head gradient, unsharded until the end of backward."""
    load_gather: float = 0.0
    """The whole model gathered onto each GPU while the checkpoint loads (``Workload.gathered_load``)."""
    load_quantize: float = 0.0
    """Intermediates of quantizing the largest matrix on the GPU at load (``QLora.unchunked_quantize``)."""
    held_logits: float = 0.0
    """The model's logits that the training loop keeps from the forward to the next one (``Workload.held_logits``)."""
    flat_gradients: float = 0.0
    """Under FSDP1 units that mix frozen and trainable parameters, the gradients of their whole flat
    parameters, before sharding (``Workload.flat_unit_gradients``; 0 otherwise)."""
    unsharded_gradients: float = 0.0
    """Gradients each GPU keeps unsharded between the micro-batches of an accumulation without sync
    (``Workload.unsharded_accumulation``; 0 otherwise)."""


UNCHUNKED_NF4_BYTES_PER_ELEMENT = 68
"""torchao 0.1's ``NF4Tensor.from_tensor`` on a 16-bit matrix of n elements: the matrix (2n), its
block-scaled copy (2n), then ``(value - nf4).abs()`` over the 16 NF4 values, the difference and its
absolute value alive at once (32n each) before ``min(dim=-1)``: 68 bytes an element at the peak."""


def _largest(tensors: tuple[Tensor2D, ...]) -> int:
    """Elements of the largest single tensor (one of ``count``)."""
    return max((t.rows * t.cols for t in tensors), default=0)


def _one_largest(tensors: tuple[Tensor2D, ...]) -> tuple[Tensor2D, ...]:
    """The largest single tensor, alone: what a step inside backward updates at a time."""
    if not tensors:
        return ()
    t = max(tensors, key=lambda t: t.rows * t.cols)
    return (Tensor2D(t.rows, t.cols),)


def _root_unit(model: ModelSpec, p: int) -> float:
    """The embeddings and the LM head (one matrix when tied), in the compute dtype."""
    return p * model.vocab_size * model.hidden_size * (1 if model.tied_embeddings else 2)


def unquantized_params(model: ModelSpec, method: Method) -> float:
    """Parameters a 4- or 8-bit base leaves in 16 bits: embeddings, the LM head, norms and biases (a
    vision tower's convolution, positions and norms too)."""
    return count_params(model).total - quantized_params(model, method)


def training_memory(model: ModelSpec, method: Method, work: Workload) -> TrainingMemory:
    """One replica's terms in the precision mode and with the techniques of ``work``."""
    p, mb = work.compute_bytes, work.micro_batch
    tensors = method.trainable_tensors(model)
    trainable = sum(t.elements for t in tensors)
    opt = optimizer(work.optimizer)
    in_backward = work.optimizer_in_backward
    if method.trains_base:
        b = work.trained
        weights = base_weight_bytes(model, method, b.weights)
        # Under optimizer-in-backward each parameter is stepped and its gradient freed as soon as
        # its gradient is complete: at most one tensor's gradient (and its copy) at a time.
        live = _largest(tensors) if in_backward else trainable
        fp32_grads = fp32_params(model) * (FP32 - b.gradients)  # DeepSeek's routers
        gradients = b.gradients * live + fp32_grads
        reduced = b.gradients * trainable + fp32_grads
        buffer = 0.0
        if work.fp32_main_grads and b.master:
            # Megatron: each bf16 gradient is added into the persistent fp32 main-gradient buffer
            # as soon as it is complete and freed.
            gradients, buffer = b.weights * _largest(tensors), b.gradients * trainable
        master = b.master * trainable
        copies = b.gradient_copies * live
        # torch.optim states take the dtype of the parameters they update (the master copy's).
        state_dtype = b.states
        states = opt.state_bytes_in(tensors, state_dtype)
        temps = opt.step_temp_bytes_in(tensors if not in_backward else _one_largest(tensors), state_dtype)
        # autocast casts the weights of its matmuls (the layers' matrices and the LM head), not
        # the embedding's or the norms'.
        weight_copies = b.autocast_copies * (matrix_params(model) + model.vocab_size * model.hidden_size)
        if b.fp8_copies:
            weight_copies += b.fp8_copies * matrix_params(model)
    else:
        # peft parameters are fp32 (in the model's dtype on stacks that build them with it);
        # modules_to_save copies keep the model's dtype, and so do their gradients and (unless
        # 8-bit) optimizer states: no fp32 master copy.
        a = work.adapter_bytes
        idle = sum(t.elements for t in method.idle_tensors(model))  # adapters text never reaches: held only
        saved_copies = method.saved_modules(model)
        own_tensors = tensors[:len(tensors) - len(saved_copies)]
        copied = sum(t.elements for t in saved_copies)
        own = trainable - copied
        reduced = a * own + p * copied
        gradients = max(a * _largest(own_tensors), p * _largest(saved_copies)) if in_backward else reduced
        master = copies = buffer = 0.0
        # DeepSpeed's and Megatron's 16-bit modes keep an fp32 master copy of every trainable parameter,
        # 16-bit adapters included, and step their fp32 optimizer states from it.
        step_dtype = FP32 if work.precision in modes.MASTER_MODES else a
        if step_dtype != a:
            master = FP32 * own
        weights = base_weight_bytes(model, method, p) + a * (own + idle) + p * copied
        if method.base_storage in ("nf4", "int8") and work.kbit_fp32_upcast:
            weights += unquantized_params(model, method) * (FP32 - p)
        states = opt.state_bytes_in(own_tensors, step_dtype) + opt.state_bytes_in(saved_copies, p)
        temps = opt.step_temp_bytes_in(own_tensors, step_dtype) + opt.step_temp_bytes_in(saved_copies, p)
        if in_backward:
            temps = opt.step_temp_bytes_in(_one_largest(own_tensors), step_dtype)
        weight_copies = _adapter_casts(model, method, work) if work.autocast and a == FP32 else 0.0
    flat = 0.0
    if work.flat_unit_gradients and not method.trains_base:
        # Every layer holds an adapter (the base's parameters in the model's dtype): the layers' flat
        # parameters all get gradients, the root's too when the embeddings or the head train.
        counts = count_params(model)
        root = counts.embeddings + counts.final_norm + counts.head
        flat = reduced + p * (counts.layer_linear + counts.layer_norms
                              + (root if method.trains_embeddings or method.trains_head else 0))
    saved = saved_tensors(model, method, work)
    largest = max(lin.weight_elements for lin in layer_linears(model))
    # The layer FSDP / ZeRO-3 gathers: as stored (torchao's NF4) or at the compute dtype's size.
    gathered = matrix_bytes_per_param(method, p) if work.quantized_gather else p
    layer = max(_layer_bytes(kind, gathered, p) for kind in layer_kinds(model))
    activations = mb * saved.total(work.grad_ckpt)
    # Parametrized quantized experts: one MoE layer's whole stack in the compute dtype, from its forward
    # (its recompute under checkpointing) to its backward; without checkpointing every MoE layer's.
    stack = p * expert_stack_elements(model) if getattr(method, "expert_stack_dequant", False) else 0.0
    moe_layers = model.num_layers - model.dense_layers if model.is_moe else 0
    checkpoints = mb * (saved.layers(work.grad_ckpt) + saved.shared)
    whole_model = weights
    host_states = host_weights = host_activations = crossing = per_micro = per_micro_params = cpu_params = 0.0
    paged = states if opt.paged else 0.0
    if paged:
        states = 0.0
    if "optimizer" in work.offload:
        # ZeRO-Offload / FSDP CPU offload: states, master weights and the fp32 gradients the CPU
        # optimizer reads live on the host; gradients leave the GPU bucket by bucket.
        host_states = states + paged + master + (copies or FP32 * trainable) + temps
        crossing += gradients + (b.weights if method.trains_base else work.adapter_bytes) * trainable
        cpu_params = trainable
        states = paged = master = copies = temps = 0.0
        gradients = min(gradients, _layer_share(model, gradients))
    if "params" in work.offload:
        # ZeRO-3 parameter offload: the weights stay on the host, two layers gathered at a time.
        host_weights = weights
        per_micro_params = 2 * weights  # fetched in forward and again in backward
        weights = 2 * layer
    if "activations" in work.offload:
        # Checkpoints (or, without checkpointing, every saved tensor) copied to pinned host memory
        # and brought back in backward through a couple of layers' worth of GPU buffers.
        offloaded = checkpoints if work.grad_ckpt else activations
        kept = 2 * offloaded / max(model.num_layers, 1)
        host_activations = offloaded - kept
        per_micro += 2 * (offloaded - kept)
        activations -= offloaded - kept
        checkpoints = min(checkpoints, kept + mb * saved.shared)
    return TrainingMemory(
        weights=weights,
        gradients=gradients,
        master_weights=master,
        optimizer_states=states,
        gradient_copies=copies,
        step_temporaries=temps,
        activations=activations,
        batch_activations=saved.batch(work.grad_ckpt) + (0.0 if work.grad_ckpt else stack * moe_layers),
        checkpoints=checkpoints,
        recompute=mb * saved.later_layer + saved.later_layer_batch if work.grad_ckpt else 0.0,
        layer_transient=mb * layer_backward_transient(model, method, work) + merged_gradient(model, method, p),
        attention_backward=mb * (eager_attention_backward(model, method, work) - saved.later_layer_mlp)
        if work.attention == "eager" else 0.0,
        logits_peak=mb * loss_logits(model, method, work).backward_peak,
        workspace=max(largest * p if method.base_storage in ("nf4", "int8") else 0.0,
                      stack if work.grad_ckpt else 0.0) + dora_workspace(model, method),
        head_workspace=quantized_head(model, method) * p,
        layer_weights=layer,
        reduced_gradients=reduced,
        gradient_buffer=buffer,
        weight_copies=weight_copies,
        paged_states=paged,
        host_states=host_states,
        host_weights=host_weights,
        host_activations=host_activations,
        offload_bytes_per_step=crossing,
        offload_bytes_per_micro=per_micro,
        offload_param_bytes_per_micro=per_micro_params,
        offloaded_params=cpu_params,
        root_unit=_root_unit(model, p) if work.fsdp_root_unit else 0.0,
        root_gradients=(work.adapter_bytes if not method.trains_base else p) * model.vocab_size * model.hidden_size
        if work.fsdp_root_unit and method.trains_head else 0.0,
        load_gather=whole_model if work.gathered_load else 0.0,
        load_quantize=largest * UNCHUNKED_NF4_BYTES_PER_ELEMENT if getattr(method, "unchunked_quantize", False)
        else 0.0,
        held_logits=mb * _held_logits(model, method, work),
        flat_gradients=flat,
        unsharded_gradients=(flat or reduced) if work.unsharded_accumulation else 0.0,
    )


def _held_logits(model: ModelSpec, method: Method, work: Workload) -> float:
    """Logits of one sequence that the training loop holds through backward and the step."""
    if work.held_logits is None or not method.training:
        return 0.0
    per_logit = FP32 if work.held_logits == "fp32" else work.compute_bytes
    return per_logit * logit_count(model, method, work)


def _adapter_casts(model: ModelSpec, method: Method, work: Workload) -> float:
    """16-bit casts of fp32 adapters that autocast's matmuls save: every B (its input, A's output,
    needs a gradient) and each A whose input needs one (not a frozen model's first layer)."""
    total = 0.0
    for flow, count in model_flows(model, method, work.grad_ckpt):
        for u in flow.linears.values():
            if u.adapter is not None:
                lin, r = u.linear, u.adapter.rank
                total += count * lin.copies * r * (lin.out_features + (lin.in_features if u.input_rg else 0))
    return 2.0 * total


def _layer_share(model: ModelSpec, total: float) -> float:
    """One layer's share of a model-wide total (a gradient bucket)."""
    return total / max(model.num_layers, 1)


LOSS_CHUNKS = 8
"""Chunks of positions a chunked or fused loss works through (torchtune's ``num_output_chunks``)."""


def loss_logits(model: ModelSpec, method: Method, work: Workload) -> LogitsBytes:
    """Logits memory for one sequence under the workload's loss.

    ``full``: transformers' ``ForCausalLMLoss`` (``activations.logits_bytes``). ``chunked``: the LM
    head and the loss run chunk by chunk; each chunk's log-softmax (fp32, or the compute dtype where
    the stack does not upcast: LitGPT) is saved for backward, so the kept bytes are the same but
    the transient of the backward is one chunk's; compiled (Inductor), the cross-entropy keeps the
    16-bit logits instead of an fp32 log-softmax, and its backward writes the chunk's 16-bit
    gradient in one kernel; where the model's forward upcasts (torchtune's full logits,
    ``Workload.output_upcast``) it keeps the fp32 input, and its backward adds an fp32 gradient
    before the cast. ``fused``: a fused linear + cross-entropy
    (Liger, Unsloth, Cut Cross-Entropy) computes the head's input gradient chunk by chunk in
    forward and keeps it (hidden-wide, compute dtype); no logits are kept."""
    if work.loss == "full" and work.loss_fp32 and not work.compiled:
        return logits_bytes(model, method, work)
    positions = (work.seq_len + method.virtual_tokens) * method.predicted_fraction
    p = work.compute_bytes
    loss = FP32 if work.loss_fp32 and model.causal and not work.compiled else p
    logits = logit_count(model, method, work)
    head_grad = p * model.vocab_size * model.hidden_size if method.trains_head else 0.0
    if work.loss == "fused":
        chunk = logits / LOSS_CHUNKS
        kept = p * positions * model.hidden_size
        return LogitsBytes(kept=kept, backward_peak=kept + (p + FP32) * chunk + head_grad)
    if work.loss == "full" and work.compiled and work.output_upcast and work.loss_fp32 and model.causal:
        # the kept fp32 input with the fp32 gradient; then that gradient and its 16-bit cast
        return LogitsBytes(kept=FP32 * logits, backward_peak=max(2 * FP32, FP32 + p) * logits + head_grad)
    if work.loss == "full":  # full logits in the compute dtype (no upcast)
        return LogitsBytes(kept=loss * logits, backward_peak=3 * loss * logits + head_grad)
    chunk = logits / LOSS_CHUNKS
    gradient = p * chunk if work.compiled else 2 * loss * chunk + p * chunk
    return LogitsBytes(kept=loss * logits, backward_peak=loss * logits + gradient + head_grad)


@record
class MemoryBreakdown:
    """Per-GPU bytes at the peak, by term, with the overheads on top."""

    terms: dict[Mem, float]
    """Live tensors at the peak phase, by term."""
    phases: dict[Phase, float]
    """Live tensor bytes at each candidate peak."""
    peak_phase: Phase
    reserved_bytes: float
    """Caching-allocator reserve: the peak plus slack (compare ``max_memory_reserved``)."""
    device_bytes: float
    """Reserved plus the CUDA context: what the GPU must hold (compare nvidia-smi)."""
    managed_bytes: float = 0.0
    """Paged optimizer states in CUDA managed memory, beside the peak: ``max_memory_allocated``
    does not count them and they page out to host memory when the GPU is full."""
    host_bytes: float = 0.0
    """Host memory per GPU for what is offloaded (pinned)."""

    @property
    def peak_bytes(self) -> float:
        return self.phases[self.peak_phase]


@record
class InferenceMemory:
    weights: float
    kv_cache: float
    workspace: float
    """Prefill's transient activations and the last position's fp32 logits."""


def kv_cache_bytes(model: ModelSpec, tokens: float, batch: int, compute_bytes: int, memory_tokens: int = 0) -> float:
    """What transformers' ``DynamicCache`` holds: per decoder layer and token, keys and values
    (``2 · kv_heads · head_dim``; MLA caches its compressed latent and rotary key,
    ``kv_lora_rank + qk_rope_head_dim``), at most a sliding window's tokens in a sliding-window
    layer; T5's decoder also caches the cross-attention's keys and values of the
    ``memory_tokens`` source positions. Times the bytes and the batch."""
    elements = 0.0
    for kind in layer_kinds(model):
        if not kind.causal:
            continue  # an encoder caches nothing
        kept = min(tokens, kind.window) if kind.window else tokens
        elements += kind.count * kept * model.kv_cache_width
        if kind.cross_attention:
            elements += kind.count * memory_tokens * 2 * model.kv_size
    return elements * batch * compute_bytes


def inference_memory(model: ModelSpec, method: Method, work: Workload) -> InferenceMemory:
    """Weights, the KV cache at its largest, and the widest transient of the prefill.

    A sliding-window layer's cache keeps the last window of the prompt as a view of the prompt's
    keys and values, so the whole prompt stays resident until the first decode step replaces it:
    the cache is the larger of the full prompt in every layer and the end of the generation.
    T5 works out its relative-position buckets as about six int64 ``source x source`` arrays
    before its first layer, and its encoder's transient passes before the decoder caches anything."""
    p, b, s = work.compute_bytes, work.micro_batch, work.prompt_len
    if model.is_encoder_decoder:  # the prompt is the source; the decoder caches the generated tokens
        kv = kv_cache_bytes(model, work.gen_len, b, p, memory_tokens=s)
    else:
        kv = kv_cache_bytes(model, work.prompt_len + work.gen_len, b, p)
        if model.sliding_window is not None:
            kv = max(kv, s * model.decoder_layers * model.kv_cache_width * b * p)
    workspace = b * max(s * prefill_layer_bytes(model, work), model.vocab_size * (p + FP32))
    if model.is_encoder_decoder:
        # The encoder's transient comes before the decoder has cached anything; the decoder steps
        # hold little beyond the cache.
        encoder = max(workspace, 6 * 8 * s * s + b * s * model.hidden_size * p)
        workspace = max(encoder - kv, b * model.vocab_size * (p + FP32))
    return InferenceMemory(weights=base_weight_bytes(model, method, p), kv_cache=kv, workspace=workspace)


# transformers' GPT-2 and BERT blocks hold the attention module's returned probabilities in a
# local variable until the block returns, so they are alive during the MLP.
_BLOCKS_KEEPING_ATTENTION_WEIGHTS = frozenset({"gpt2", "bert"})


def prefill_layer_bytes(model: ModelSpec, work: Workload) -> float:
    """Transient bytes per prompt token at the widest moment of one layer's prefill.

    A gated MLP holds the residual stream, gate and up outputs, the activation and their
    product (4 · ffn); MoE adds each routed token's gathered copy (gpt-oss's clamped gate and
    biased experts more: fitted to traced prefills at two widths); a plain MLP holds its
    intermediate and activation output (GPT-2's Python-written GELU and ReLU squared a few more
    temporaries).
    Eager attention holds the scores, softmax output and its cast copy at their own moment.
    """
    p, h, f, k = work.compute_bytes, model.hidden_size, model.ffn_size, model.experts_per_token
    if model.is_moe:
        # Grouped experts: the routed copies with their gate/up outputs, then about six
        # hidden-wide copies per routed token around the down projection and the weighted sum.
        mlp = h + k * max(4 * f + h, 6 * h)
        if model.activation == "swiglu_clamped":
            # gpt-oss: the gathered gate/up biases (2f) stay referenced through the gate, whose clamps,
            # sigmoid and products hold about five more f-wide temporaries beside the 2f output.
            mlp = h + k * max(9 * f + 3 * h, 7 * h)
        if model.dense_layers:
            mlp = max(mlp, h + 4 * model.dense_ffn_size)
    elif model.gated_mlp:
        mlp = h + 4 * f
    else:
        # ReLU squared (Arcee) holds its input, the ReLU and its square at once.
        mlp = h + {"gelu_new": 5, "relu2": 3}.get(model.activation, 2) * f
    widest = p * mlp
    if work.attention == "eager" and model.family in _BLOCKS_KEEPING_ATTENTION_WEIGHTS:
        widest += p * model.num_heads * work.prompt_len  # the probabilities, alive to the block's end
    if work.attention == "eager":
        scores = p + (FP32 + p if model.softmax_fp32 else p)
        widest = max(widest, p * (h + model.q_size + 2 * model.kv_size) + model.num_heads * work.prompt_len * scores)
    return widest
