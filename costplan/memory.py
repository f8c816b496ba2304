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

from dataclasses import dataclass

from costplan.activations import eager_attention_backward, layer_backward_transient, logits_bytes, saved_tensors
from costplan.methods import Method
from costplan.model import ModelSpec, count_params, layer_linears
from costplan.optimizers import optimizer
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


WEIGHT_FORMATS = ("bf16", "fp16", "fp8", "int8", "int4", "nf4")
INT4_GROUP = 128
"""AWQ and GPTQ quantize in groups of 128 weights with a 16-bit scale and a zero point each."""


def weight_bytes_per_param(weights: str, compute_bytes: int) -> float:
    """Stored bytes per element of a quantized matrix (weight-only quantization for inference):
    int8 with a per-row scale (about 1 byte), int4 AWQ/GPTQ with a 16-bit scale and zero per group
    of 128, NF4 with double quantization (bitsandbytes), fp8 (1 byte)."""
    return {"bf16": 2.0, "fp16": 2.0, "fp32": 4.0, "fp8": 1.0, "int8": 1.0,
            "int4": 0.5 + 4 / INT4_GROUP, "nf4": nf4_bytes_per_param(True)}.get(weights, float(compute_bytes))


def base_weight_bytes(model: ModelSpec, method: Method, compute_bytes: int) -> float:
    """Bytes of the base model's weights as stored: the layers' matrices in NF4 for QLoRA (or in a
    weight-only format for inference), embeddings, norms and the LM head in the compute dtype."""
    total = count_params(model).total
    weights = getattr(method, "weights", "")
    if method.base_storage != "nf4" and weights in ("", "bf16", "fp16"):
        return total * compute_bytes
    matrices = model.num_layers * sum(lin.copies * lin.weight_elements for lin in layer_linears(model))
    if method.base_storage == "nf4":
        per = nf4_bytes_per_param(getattr(method, "double_quant", True))
    else:
        per = weight_bytes_per_param(weights, compute_bytes)
    return matrices * per + (total - matrices) * compute_bytes


def dora_workspace(model: ModelSpec, method: Method) -> float:
    """DoRA's transient per adapted matrix in forward, for the largest one: peft builds the adapter's
    full update through an identity matrix (in x in, fp32), the update itself (in x out, fp32) and
    the summed weight whose row norms it takes (out x in, fp32)."""
    magnitudes = [a.linear for a in method.adapters(model) if a.magnitude]
    if not magnitudes:
        return 0.0
    return max(FP32 * lin.in_features * (lin.in_features + 2 * lin.out_features) for lin in magnitudes)


@dataclass(frozen=True, slots=True)
class TrainingMemory:
    """One replica's memory before sharding (activations for one micro-batch)."""

    weights: float
    gradients: float
    master_weights: float
    optimizer_states: float
    gradient_copies: float
    """fp32 copies of 16-bit gradients handed to the fp32 master weights before the step."""
    step_temporaries: float
    activations: float
    """Saved for backward at the end of the forward (only layer inputs when checkpointing)."""
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


def training_memory(model: ModelSpec, method: Method, work: Workload) -> TrainingMemory:
    p, mb = work.compute_bytes, work.micro_batch
    tensors = method.trainable_tensors(model)
    trainable = sum(t.elements for t in tensors)
    opt = optimizer(work.optimizer)
    if method.trains_base:
        gradients = p * trainable  # trained base weights in the compute dtype
        master = FP32 * trainable if work.mixed_precision else 0.0
        copies = FP32 * trainable if work.mixed_precision else 0.0
        weights = base_weight_bytes(model, method, p)
    else:
        # peft parameters are fp32; modules_to_save copies keep the model's dtype, and so do their
        # gradients and (unless 8-bit) optimizer states: no fp32 master copy.
        copied = sum(t.elements for t in method.saved_modules(model))
        own = trainable - copied
        gradients = FP32 * own + p * copied
        master = copies = 0.0
        weights = base_weight_bytes(model, method, p) + FP32 * own + p * copied
    saved_copies = () if method.trains_base else method.saved_modules(model)
    own_tensors = tensors[:len(tensors) - len(saved_copies)]
    saved = saved_tensors(model, method, work)
    largest = max(lin.weight_elements for lin in layer_linears(model))
    layer = sum(lin.params for lin in layer_linears(model)) * p
    return TrainingMemory(
        weights=weights,
        gradients=gradients,
        master_weights=master,
        optimizer_states=opt.state_bytes(own_tensors) + opt.state_bytes_in(saved_copies, p),
        gradient_copies=copies,
        step_temporaries=opt.step_temp_bytes(own_tensors) + opt.step_temp_bytes_in(saved_copies, p),
        activations=mb * saved.total(model.num_layers, work.grad_ckpt),
        checkpoints=mb * (saved.layers(model.num_layers, work.grad_ckpt) + saved.shared),
        recompute=mb * saved.later_layer if work.grad_ckpt else 0.0,
        layer_transient=mb * layer_backward_transient(model, method, work),
        attention_backward=mb * (eager_attention_backward(model, method, work) - saved.later_layer_mlp)
        if work.attention == "eager" else 0.0,
        logits_peak=mb * logits_bytes(model, method, work).backward_peak,
        workspace=(largest * p if method.base_storage == "nf4" else 0.0) + dora_workspace(model, method),
        layer_weights=layer,
    )


@dataclass(frozen=True, slots=True)
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

    @property
    def peak_bytes(self) -> float:
        return self.phases[self.peak_phase]


@dataclass(frozen=True, slots=True)
class InferenceMemory:
    weights: float
    kv_cache: float
    workspace: float
    """Prefill's transient activations and the last position's fp32 logits."""


def kv_cache_bytes(model: ModelSpec, tokens: int, batch: int, compute_bytes: int) -> float:
    """``2 · layers · kv_heads · head_dim · tokens · bytes`` per sequence, times the batch."""
    return 2.0 * model.num_layers * model.kv_size * tokens * batch * compute_bytes


def inference_memory(model: ModelSpec, method: Method, work: Workload) -> InferenceMemory:
    p, b, s = work.compute_bytes, work.micro_batch, work.prompt_len
    return InferenceMemory(
        weights=base_weight_bytes(model, method, p),
        kv_cache=kv_cache_bytes(model, work.prompt_len + work.gen_len, b, p),
        workspace=b * max(s * prefill_layer_bytes(model, work), model.vocab_size * (p + FP32)),
    )


# transformers' GPT-2 and BERT blocks hold the attention module's returned probabilities in a
# local variable until the block returns, so they are alive during the MLP.
_BLOCKS_KEEPING_ATTENTION_WEIGHTS = frozenset({"gpt2", "bert"})


def prefill_layer_bytes(model: ModelSpec, work: Workload) -> float:
    """Transient bytes per prompt token at the widest moment of one layer's prefill.

    A gated MLP holds the residual stream, gate and up outputs, the activation and their
    product (4 · ffn); MoE adds each routed token's gathered copy; a plain MLP holds its
    intermediate and activation output (GPT-2's Python-written GELU a few more temporaries).
    Eager attention holds the scores, softmax output and its cast copy at their own moment.
    """
    p, h, f, k = work.compute_bytes, model.hidden_size, model.ffn_size, model.experts_per_token
    if model.gated_mlp:
        mlp = h + k * (4 * f + (h if model.is_moe else 0))
    else:
        mlp = h + (5 if model.activation == "gelu_new" else 2) * f
    widest = p * mlp
    if work.attention == "eager" and model.family in _BLOCKS_KEEPING_ATTENTION_WEIGHTS:
        widest += p * model.num_heads * work.prompt_len  # the probabilities, alive to the block's end
    if work.attention == "eager":
        scores = p + (FP32 + p if model.softmax_fp32 else p)
        widest = max(widest, p * (h + model.q_size + 2 * model.kv_size) + model.num_heads * work.prompt_len * scores)
    return widest
