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
from costplan.model import ModelSpec, count_params, layer_kinds, layer_linears
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


def fp32_params(model: ModelSpec) -> int:
    """Parameters kept in float32 whatever the compute dtype (DeepSeek-V3's routers)."""
    return sum(kind.count * lin.params for kind in layer_kinds(model) for lin in kind.linears if lin.fp32)


def base_weight_bytes(model: ModelSpec, method: Method, compute_bytes: int) -> float:
    """Bytes of the base model's weights as stored."""
    total = count_params(model).total
    fp32 = fp32_params(model) * (FP32 - compute_bytes)
    if method.base_storage != "nf4":
        return total * compute_bytes + fp32
    matrices = sum(kind.count * sum(lin.copies * lin.weight_elements for lin in kind.linears if not lin.fp32)
                   for kind in layer_kinds(model))
    nf4 = nf4_bytes_per_param(getattr(method, "double_quant", True))
    return matrices * nf4 + (total - matrices) * compute_bytes + fp32


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


def training_memory(model: ModelSpec, method: Method, work: Workload) -> TrainingMemory:
    p, mb = work.compute_bytes, work.micro_batch
    tensors = method.trainable_tensors(model)
    trainable = sum(t.elements for t in tensors)
    opt = optimizer(work.optimizer)
    if method.trains_base:
        weight_bytes = p  # trained base weights in the compute dtype (fp32 ones stay fp32)
        master = FP32 * trainable if work.mixed_precision else 0.0
        copies = FP32 * trainable if work.mixed_precision else 0.0
        weights = base_weight_bytes(model, method, p)
    else:
        weight_bytes = FP32  # peft parameters are fp32
        master = 0.0
        copies = 0.0
        weights = base_weight_bytes(model, method, p) + FP32 * trainable
    saved = saved_tensors(model, method, work)
    largest = max(lin.weight_elements for lin in layer_linears(model))
    layer = max(kind.params for kind in layer_kinds(model)) * p
    fp32_grads = fp32_params(model) * (FP32 - p) if method.trains_base else 0.0
    return TrainingMemory(
        weights=weights,
        gradients=weight_bytes * trainable + fp32_grads,
        master_weights=master,
        optimizer_states=opt.state_bytes(tensors),
        gradient_copies=copies,
        step_temporaries=opt.step_temp_bytes(tensors),
        activations=mb * saved.total(work.grad_ckpt),
        batch_activations=saved.batch(work.grad_ckpt),
        checkpoints=mb * (saved.layers(work.grad_ckpt) + saved.shared),
        recompute=mb * saved.later_layer if work.grad_ckpt else 0.0,
        layer_transient=mb * layer_backward_transient(model, method, work),
        attention_backward=mb * (eager_attention_backward(model, method, work) - saved.later_layer_mlp)
        if work.attention == "eager" else 0.0,
        logits_peak=mb * logits_bytes(model, method, work).backward_peak,
        workspace=largest * p if method.base_storage == "nf4" else 0.0,
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
    product (4 · ffn); MoE adds each routed token's gathered copy; a plain MLP holds its
    intermediate and activation output (GPT-2's Python-written GELU a few more temporaries).
    Eager attention holds the scores, softmax output and its cast copy at their own moment.
    """
    p, h, f, k = work.compute_bytes, model.hidden_size, model.ffn_size, model.experts_per_token
    if model.is_moe:
        # Grouped experts: the routed copies with their gate/up outputs, then about six
        # hidden-wide copies per routed token around the down projection and the weighted sum.
        mlp = h + k * max(4 * f + h, 6 * h)
        if model.dense_layers:
            mlp = max(mlp, h + 4 * model.dense_ffn_size)
    elif model.gated_mlp:
        mlp = h + 4 * f
    else:
        mlp = h + (5 if model.activation == "gelu_new" else 2) * f
    widest = p * mlp
    if work.attention == "eager" and model.family in _BLOCKS_KEEPING_ATTENTION_WEIGHTS:
        widest += p * model.num_heads * work.prompt_len  # the probabilities, alive to the block's end
    if work.attention == "eager":
        scores = p + (FP32 + p if model.softmax_fp32 else p)
        widest = max(widest, p * (h + model.q_size + 2 * model.kv_size) + model.num_heads * work.prompt_len * scores)
    return widest
