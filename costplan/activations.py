"""Bytes each training step keeps alive for backward, itemised tensor by tensor.

Rules follow what PyTorch autograd saves for the Hugging Face implementations (and peft's
adapters): a matmul keeps its input only when its weight trains; an elementwise product keeps
each factor only when the other needs a gradient; RMSNorm keeps an fp32 copy of its input;
SDPA keeps q, k, v, its output and the fp32 log-sum-exp, but never the ``heads · s²`` scores
that eager attention keeps (softmax output in fp32 and its cast copy). peft casts an adapter's
input to the adapter's fp32 dtype, and lora_A keeps that copy. Dropout keeps a one-byte mask.

Everything here is per sequence (micro-batch 1) and callers multiply by the micro-batch, except
what a micro-batch keeps once whatever its size (``SavedTensors.batch``: RoPE tables, Gemma's
norm scales, T5's position-bias masks).
"""

from __future__ import annotations

from collections.abc import Callable

from costplan.gradflow import LayerFlow, LinearUse, input_requires_grad, model_flows
from costplan.methods import Method
from costplan.model import LayerKind, ModelSpec, layer_kinds
from costplan.record import record
from costplan.workload import Workload

FP32 = 4
MASK = 1
INT64 = 8
ADAPTER_BYTES = 4  # peft keeps adapters in fp32 and casts their input to it


@record
class AdapterIO:
    """How LoRA adapters read their input: peft casts it to the adapters' dtype (fp32 unless the
    stack keeps them in the model's), and under autocast lora_A's matmul casts it back to the
    16-bit dtype, which is the copy it saves."""

    dropout: float = 0.0
    adapter_bytes: int = ADAPTER_BYTES
    autocast: bool = False
    compiled: bool = False
    """The layer runs through torch.compile: without dropout, the adapters reading one input share
    one cast copy of it (the partitioner's common subexpression)."""

    def saved_bytes(self, p: int) -> int:
        """Bytes per element of the input copy lora_A keeps (and of its own output, kept by lora_B)."""
        return p if self.autocast else self.adapter_bytes

    def shares_input(self, p: int) -> bool:
        """lora_A keeps the very input tensor (no cast, no dropout)."""
        return not self.autocast and self.adapter_bytes == p and self.dropout == 0


def adapter_io(method: Method, work: Workload) -> AdapterIO:
    return AdapterIO(getattr(method, "dropout", 0.0), work.adapter_bytes, work.autocast, work.compiled)


def model_bytes(method: Method, work: Workload, model: ModelSpec | None = None) -> int:
    """Bytes per element of the model's own tensors outside autocast's matmuls (norms' outputs,
    the residual stream, rotary tables): fp32 when the weights are (fp32, or autocast over the
    trained fp32 weights of mixed precision), else the compute dtype. Without ``model``: the dtype
    of the norms' weights. With it, a post-norm LayerNorm model under autocast (BERT) has an fp32
    stream over 16-bit weights: its LayerNorms return fp32, and the stream is their output."""
    if work.precision in ("bf16-mixed", "fp16-mixed") and method.trains_base:
        return FP32
    if work.kbit_fp32_upcast and method.base_storage in ("nf4", "int8"):
        return FP32  # peft's k-bit preparation upcasts the embeddings and norms: an fp32 residual stream
    if model is not None and model.post_norm and model.norm == "layernorm" and work.autocast:
        return FP32
    return work.compute_bytes


@record
class SavedItem:
    """Bytes one layer keeps for one tensor (or group of tensors) of one sequence."""

    name: str
    """For display."""
    bytes: float
    in_mlp: bool
    """Kept by the MLP block (router and experts included, and a norm on the attention's output),
    whose backward runs before the attention's."""
    per_batch: bool = False
    """Kept once per micro-batch, whatever its sequences (T5's position-bias masks)."""
    remade: bool = False
    """Per micro-batch and made again when a checkpointed layer re-runs: peft's merged expert weights."""


@record
class LayerSaved:
    """What the layers of one flow keep, for one sequence."""

    flow: LayerFlow
    count: int
    items: tuple[SavedItem, ...]
    layer_input: float
    """The layer's input: all a checkpointed layer keeps."""

    @property
    def bytes(self) -> float:
        """Per sequence."""
        return sum(item.bytes for item in self.items if not item.per_batch)

    @property
    def batch_bytes(self) -> float:
        """Per micro-batch."""
        return sum(item.bytes for item in self.items if item.per_batch)

    @property
    def mlp_bytes(self) -> float:
        return sum(item.bytes for item in self.items if item.in_mlp and not item.per_batch)

    @property
    def remade_bytes(self) -> float:
        """Per micro-batch, made again by the layer's recompute (``SavedItem.remade``)."""
        return sum(item.bytes for item in self.items if item.remade)


@record
class SavedTensors:
    """Saved-for-backward bytes of one sequence."""

    layers_saved: tuple[LayerSaved, ...]
    """Each distinct layer flow with its count."""
    head_side: float
    """The final norm's and the LM head's saved inputs: freed first in backward."""
    shared: float
    """Kept through the whole backward: embedding dropout masks, expanded prefixes, T5's encoder
    output that every cross-attention reads."""
    batch_shared: float = 0.0
    """Kept once per micro-batch however many sequences it holds, through the whole backward: the
    RoPE tables, T5's bucket indices and its cross-attention's zero bias."""
    checkpointed_batch: float = 0.0
    """Also kept per micro-batch when the layers are checkpointed: T5's position-bias tables, an
    input of every checkpointed block."""

    @property
    def recomputed(self) -> LayerSaved:
        """The largest layer that checkpointing re-runs in backward (a later layer of its kind)."""
        return max(self.layers_saved, key=lambda layer: (layer.bytes, layer.count))

    @property
    def later_layer(self) -> float:
        """Bytes of that layer: what one checkpointed layer holds again while its backward runs."""
        return self.recomputed.bytes

    @property
    def later_layer_batch(self) -> float:
        """Per micro-batch, what that layer's recompute makes again besides (peft's merged expert weights)."""
        return self.recomputed.remade_bytes

    @property
    def later_layer_mlp(self) -> float:
        """The part of that layer that its MLP keeps (freed before attention's backward)."""
        return self.recomputed.mlp_bytes

    def total(self, grad_ckpt: bool) -> float:
        """Bytes kept at the end of the forward. Checkpointed layers keep only their input;
        backward then re-runs one layer at a time (see ``later_layer``)."""
        return self.layers(grad_ckpt) + self.head_side + self.shared

    def batch(self, grad_ckpt: bool) -> float:
        """Per micro-batch: T5's position-bias masks, one per layer (re-made when checkpointed)."""
        if grad_ckpt:
            return self.batch_shared + self.checkpointed_batch
        return sum(layer.count * layer.batch_bytes for layer in self.layers_saved) + self.batch_shared

    def layers(self, grad_ckpt: bool) -> float:
        if grad_ckpt:
            return sum(layer.count * layer.layer_input for layer in self.layers_saved)
        return sum(layer.count * layer.bytes for layer in self.layers_saved)


def _norm(model: ModelSpec, p: int, input_rg: bool, weight_trains: bool, width: int | None = None,
          groups: int = 1, compiled: bool = False, autocast: bool = False) -> float:
    """Saved bytes per position of one RMSNorm or LayerNorm over ``width`` (``groups`` of it:
    Qwen3's per-head q/k norms normalise each head apart). ``compiled``: the layer runs through
    torch.compile, whose partitioner keeps an RMSNorm's input and its rsqrt and recomputes the rest.
    ``autocast``: a LayerNorm under autocast runs in fp32 (``layer_norm`` is on its fp32 list), so it
    keeps an fp32 copy of a 16-bit input."""
    w = width or model.hidden_size
    if not (input_rg or weight_trains):
        return 0.0
    if model.norm == "rmsnorm" and compiled:
        return p * w + FP32 * groups
    if model.norm == "rmsnorm":
        # x.float() (kept by pow and mul), rsqrt of the variance per group, and the normalised x
        # that the weight multiply keeps when the weight trains (in fp32 where the multiply is:
        # Gemma's 1 + w, OLMo 2).
        kept = (FP32 if model.norm_scales_fp32 else p) * w if weight_trains else 0.0
        if model.norm_rescales_input and input_rg and p != FP32:
            kept += p * w  # T5: the 16-bit input, kept for the rsqrt's gradient
        return FP32 * w + FP32 * groups + kept
    return (FP32 if autocast else p) * w + 2 * FP32  # native_layer_norm keeps its input, mean and rstd


def layernorm_in_fp32(model: ModelSpec, work: Workload) -> bool:
    """A LayerNorm model under autocast: each LayerNorm casts its input, weight and bias to fp32 and
    returns fp32, which every matmul reading it casts back to 16 bits (GPT-2, Phi, GPT-NeoX, StarCoder2,
    BERT under the Trainer's ``bf16=True``; BERT's post-norm stream is then fp32 throughout)."""
    return work.autocast and model.norm == "layernorm"


def _norm_weight_copies(model: ModelSpec, weight_bytes: int, input_rg: bool, weight_trains: bool,
                        fp32_norm: bool) -> float:
    """Per-call bytes a LayerNorm under autocast keeps of its 16-bit weight and bias cast to fp32 (for its
    input's gradient); trained or upcast fp32 weights need no copy."""
    if not fp32_norm or not input_rg or weight_bytes == FP32 or weight_trains:
        return 0.0
    return 2 * FP32 * model.hidden_size


def _norm_constant(model: ModelSpec, input_rg: bool, width: int | None = None) -> float:
    """Per-layer (not per-position) bytes of a Gemma norm: its fp32 ``1 + w``, kept for dX."""
    if not model.norm_unit_offset or not input_rg:
        return 0.0
    return FP32 * (width or model.hidden_size)


def _reader_inputs(uses: list[LinearUse], p: int, lora: AdapterIO, wide: bool = False) -> tuple[float, float]:
    """Bytes kept for the matrices that read one input tensor (q/k/v, gate/up, o, down).

    The input is kept once when any base matmul keeps it (its weight trains, or it is a
    bitsandbytes 4-bit matmul, which keeps its input whenever it needs dX). Each adapter keeps the fp32 copy of it
    that peft makes (the input itself when it is already fp32, or its dropout output and mask
    when LoRA dropout is on) and the rank-wide output of its A matrix.
    ``wide``: the input is wider than the matmuls' dtype (a norm's fp32 output under autocast
    over fp32 weights): each matmul that keeps it casts and keeps its own 16-bit copy.
    Returns (bytes of the shared input, bytes only the adapters keep).
    """
    width = uses[0].linear.in_features
    adapters = [u for u in uses if u.adapter is not None]
    shares_input = lora.shares_input(p)
    cast = lora.saved_bytes(p)
    kept_input = any(u.keeps_input for u in uses) or (shares_input and bool(adapters))
    shared = p * width * uses[0].linear.active if kept_input else 0.0
    if wide:
        shared = p * width * uses[0].linear.active * sum(u.keeps_input for u in uses)
    total = 0.0
    # Compiled without dropout, one cast copy serves every adapter (with dropout each keeps its own).
    one_copy = lora.compiled and not lora.autocast and lora.dropout == 0
    if one_copy and adapters and not shares_input:
        total += cast * width * uses[0].linear.active
    for u in adapters:
        active = u.linear.active
        if not shares_input and not one_copy:
            total += cast * width * active
        if lora.dropout > 0:
            total += MASK * width * active
        total += cast * u.adapter.rank * active
        if u.adapter.magnitude:  # DoRA keeps the base output (p bytes) and the adapter output (fp32)
            total += (p + ADAPTER_BYTES) * u.linear.out_features * active
    return shared, total


def _activation(model: ModelSpec, p: int, f: int, x_rg: bool, compiled: bool = False, autocast: bool = False) -> float:
    """Bytes the activation function keeps for width ``f`` when its input requires a gradient."""
    if not x_rg:
        return 0.0
    if model.activation == "gelu_new" and not compiled:
        # gelu_new is written in Python ops: it keeps x, tanh(...), 0.5·x and 1 + tanh(...). Under autocast
        # ``pow`` runs in fp32: it keeps an fp32 copy of x, and tanh and 1 + tanh follow in fp32.
        return (3 * FP32 + p) * f if autocast else 4 * p * f
    return p * f  # compiled, or a single kernel: its input


@record
class LayerSpan:
    """Positions one layer runs over, for one sequence."""

    queries: int
    keys: int
    memory: int = 0
    """T5 decoder blocks: the source positions cross-attention reads."""

    def rows(self, role: str) -> int:
        return self.memory if role in ("cross_k", "cross_v") else self.queries


def _masked(method: Method, kind: LayerKind, keys: int) -> bool:
    """Whether SDPA gets an attention mask: prefix tuning's padding mask, or a sliding window
    that hides keys (transformers skips the mask while every key is inside the window)."""
    return bool(method.prefix_tokens) or (kind.window is not None and keys >= kind.window)


def _attention_inputs(model: ModelSpec, method: Method, work: Workload, flow: LayerFlow, p: int,
                      key_ratio: float) -> float:
    """Bytes of q, k and v that attention keeps, per position (``key_ratio`` = keys / queries)."""
    if not flow.attention_rg:
        return 0.0
    q, kv = model.q_size, model.kv_size
    if model.mla is not None:
        # MLA: the query and key are new tensors of heads x (no-rope + rope) width; the value is
        # a view of kv_b's output, whose storage (no-rope keys and values) stays alive whole.
        values = model.num_heads * (model.mla.qk_nope_head_dim + model.mla.v_head_dim)
        if work.attention == "flash":
            return p * (q + (kv + values) * key_ratio)
        scores_rg = flow.q_rg or flow.k_rg
        return p * (q * flow.k_rg + key_ratio * (kv * flow.q_rg + values * scores_rg))
    if model.fused_qkv and not model.rotary:
        # GPT-2: without a rotary embedding to copy them, q, k, v are views of the fused
        # projection's output, which stays alive whole; the KV cache that training builds
        # (use_cache, off under checkpointing) re-allocates k and v by concatenation, and
        # attention keeps those copies.
        cache = model.cache_in_training and not work.grad_ckpt
        return p * (q + 2 * kv) + (p * 2 * kv if cache else 0.0)
    # With an attention mask (prefix tuning, a sliding window) or eager attention, k and v are
    # repeated to every query head (GQA); unmasked SDPA takes them as they are. Repeating a single
    # key/value head (MQA) is a broadcast view, no copy.
    masked = _masked(method, flow.kind, round(key_ratio * (work.seq_len + method.virtual_tokens)))
    repeats = (work.attention == "eager" or masked) and model.num_kv_heads > 1
    repeated = q if repeats else kv
    if work.attention == "flash":
        return p * (q + 2 * repeated * key_ratio)
    # Eager: QKᵀ keeps q when k needs a gradient and k when q does; AV keeps v when the scores do.
    scores_rg = flow.q_rg or flow.k_rg
    return p * (q * flow.k_rg + repeated * key_ratio * (flow.q_rg + scores_rg))


def _litgpt_qkv_inputs(readers: list[LinearUse], p: int, lora: AdapterIO) -> float:
    """LitGPT's fused qkv projection, read as one matrix: the input it keeps when its weight trains and,
    for LoRA, one adapter over the enabled q/k/v (``LoRAQKVLinear``: one dropout of the input, ``lora_A``
    of rank r per enabled part) and, unless all three are enabled, ``zero_pad``'s ``index_copy_``, which
    keeps ``lora_B``'s output (the enabled widths) for its backward."""
    from dataclasses import replace

    adapted = [u for u in readers if u.adapter is not None]
    fused = replace(readers[0], trainable=any(u.keeps_input for u in readers), legacy_quantized=False,
                    adapter=replace(adapted[0].adapter, rank=sum(u.adapter.rank for u in adapted)) if adapted else None)
    padded = 0 < len(adapted) < len(readers)
    zero_pad = lora.saved_bytes(p) * sum(u.linear.out_features for u in adapted) * fused.linear.active if padded else 0
    return sum(_reader_inputs([fused], p, lora)) + zero_pad


def _litgpt_attention_inputs(model: ModelSpec, flow: LayerFlow, p: int) -> float:
    """Bytes of q, k and v that LitGPT's attention keeps per position. q and k come out of the
    rotary embedding as new tensors; v is a view of the fused projection's output, which stays alive
    whole, unless grouped- or multi-query attention repeats k and v to every query head
    (``repeat_interleave``: new tensors of the queries' width)."""
    if not flow.attention_rg:
        return 0.0
    q, kv = model.q_size, model.kv_size
    if model.num_kv_heads == model.num_heads:
        return p * (q + kv + (q + 2 * kv))
    return p * 3 * q


def _eager_scores(model: ModelSpec, p: int, scores_rg: bool, v_rg: bool, autocast: bool = False) -> float:
    """Bytes eager attention keeps per score (per head, query and key).

    Softmax keeps its output (fp32 when the implementation upcasts, as Llama's does, or under
    autocast, whose fp32 list has softmax); AV keeps its input probabilities, the same tensor unless
    cast or dropped out; attention dropout keeps a one-byte mask; Gemma 2's softcap keeps its tanh.
    """
    softmax = FP32 if model.softmax_fp32 or autocast else p
    kept = softmax if scores_rg else 0.0
    if model.attn_softcap is not None and scores_rg:
        kept += p
    if model.attention_dropout > 0:
        kept += (MASK if scores_rg else 0.0) + (p if v_rg else 0.0)
    elif v_rg and (softmax != p or not scores_rg):
        kept += p
    return kept


def _lse_positions(queries: int, efficient: bool) -> int:
    """Rows of SDPA's fp32 log-sum-exp: the memory-efficient kernel pads them to a multiple of 32."""
    return -(-queries // 32) * 32 if efficient else queries


def _mlp_saved(model: ModelSpec, flow: LayerFlow, prefix: str, p: int, lora: AdapterIO,
               routed: bool, wide: bool = False, compiled: bool = False) -> list[tuple[str, float]]:
    """Per-position bytes of one MLP (dense, shared experts, or the routed experts per token).
    ``compiled``: a gated MLP keeps the gate's and the up projection's outputs and recomputes the
    activation from the gate's (torch.compile's partitioner)."""
    lin = flow.linears
    k = lin[prefix + "down"].linear.active
    f = lin[prefix + "down"].linear.in_features
    out: list[tuple[str, float]] = []
    if not routed:  # routed experts read gathered copies of their tokens (see "expert routing")
        readers = [lin[prefix + r] for r in ("gate", "up", "gate_up") if prefix + r in lin]
        router = lin.get("router")
        if prefix != "shared_" or router is None or router.linear.fp32 or not router.keeps_input:
            out.append((f"{prefix}mlp inputs", sum(_reader_inputs(readers, p, lora, wide))))
        else:  # the router already keeps the same input tensor (DeepSeek's keeps an fp32 copy)
            out.append((f"{prefix}mlp inputs", _reader_inputs(readers, p, lora)[1]))
    if prefix + "gate_up" in lin:
        # One 2f-wide output: the activation keeps its gate half, the product its up half, both
        # views of the same storage, and the activation's output.
        g = lin[prefix + "gate_up"]
        if model.activation == "swiglu_clamped":
            # gpt-oss: the two clamps keep their halves (views of the output); the clamped gate, the
            # sigmoid's output, up + 1 and their gated product are kept by the multiplications.
            act = 6 * p * f if g.output_rg else 0.0
        else:
            act = (2 * p * f if g.output_rg else 0.0) + (p * f if g.output_rg and not compiled else 0.0)
        out.append((f"{prefix}mlp activations", k * act))
    elif prefix + "gate" in lin:
        g, u = lin[prefix + "gate"], lin[prefix + "up"]
        if compiled:  # the gate's output (for both factors' gradients) and the up projection's
            act = p * f if g.output_rg or u.output_rg else 0.0
            product = p * f if g.output_rg else 0.0
        else:  # the activation keeps its input; the product keeps both factors
            act = _activation(model, p, f, g.output_rg, autocast=lora.autocast)
            product = (p * f if u.output_rg else 0.0) + (p * f if g.output_rg else 0.0)
        out.append((f"{prefix}mlp activations", k * (act + product)))
    else:
        out.append((f"{prefix}mlp activations",
                    k * _activation(model, p, f, lin[prefix + "up"].output_rg, compiled, lora.autocast)))
        if model.dropout > 0 and lin[prefix + "up"].output_rg and model.inner_dropout:
            out.append((f"{prefix}mlp dropout", k * MASK * f))  # T5 drops out the activation too
    out.append((f"{prefix}down input", sum(_reader_inputs([lin[prefix + "down"]], p, lora))))
    return out


def _router_saved(model: ModelSpec, flow: LayerFlow, p: int, lora: AdapterIO, mlp_in_rg: bool) -> float:
    """Per-position bytes of the router and the top-k selection."""
    lin = flow.linears
    router = lin["router"]
    e, k = model.num_experts, model.experts_per_token
    if router.linear.fp32:  # DeepSeek: the router reads an fp32 copy of its input
        kept = (FP32 * router.linear.in_features if router.keeps_input else 0.0) + _reader_inputs([router], p,
                                                                                                lora)[1]
    else:
        kept = sum(_reader_inputs([router], p, lora))
    if not (mlp_in_rg or router.trainable):
        return kept
    if model.router_topk_first:  # gpt-oss: top-k of the raw logits, then a softmax over those k (compute dtype)
        return kept + INT64 * k + p * k
    # fp32 scores (softmax, or DeepSeek's sigmoid), top-k indices (int64) and weights (fp32)
    # with their normaliser.
    kept += FP32 * e + INT64 * k + FP32 * k + FP32
    if model.grouped_router:
        # DeepSeek's group-limited choice: the best two scores' indices of each group, the chosen
        # groups' indices, and a one-byte mask over the experts.
        kept += INT64 * (2 * model.expert_groups + model.expert_groups_used) + MASK * e
    return kept


UNSLOTH_TARGETS = frozenset(("q", "k", "v", "o", "gate", "up", "down"))


def unsloth_kernels(model: ModelSpec, method: Method, work: Workload) -> bool:
    """Whether Unsloth's fused LoRA kernels run the layers: a Llama-style layer (RMSNorm before
    attention and a gated MLP, separate q/k/v, rotary, dense) with LoRA on all seven matrices, which
    is when Unsloth patches in ``LoRA_QKV``, ``LoRA_W`` and ``LoRA_MLP``; otherwise peft's modules run."""
    return (work.modeling == "unsloth" and work.attention == "flash" and UNSLOTH_TARGETS <= set(
        getattr(method, "targets", ())) and not method.trains_base and model.gated_mlp and not model.fused_qkv
            and not model.fused_gate_up and model.norm == "rmsnorm" and model.norm_placement == "pre"
            and model.rotary and model.mla is None and model.num_experts <= 1 and model.qk_norm == "none"
            and not model.is_encoder_decoder and not model.parallel_residual and not method.prefix_tokens)


AXOLOTL_MLP_TARGETS = frozenset(("gate", "up", "down"))


def axolotl_mlp_kernel(model: ModelSpec, method: Method, work: Workload) -> bool:
    """Whether Axolotl's fused ``LoRA_MLP`` kernel runs the MLP (axolotl-ai-cloud/axolotl
    src/axolotl/kernels/lora.py, auto-enabled since #2589, 2025-04-29): LoRA without dropout (the
    kernel took none until #3528, 2026-03-22) on the gate, up and down projections of a dense
    SwiGLU/GeGLU MLP, on a 16-bit or 4-bit base (Axolotl skips it for 8-bit LoRA). It keeps its
    input and the gate and up outputs and recomputes the activation and the product in backward,
    as Unsloth's kernel it was ported from does; the rest of the layer runs transformers' modules."""
    return (work.modeling == "axolotl" and method.base_storage != "int8" and not method.trains_base
            and AXOLOTL_MLP_TARGETS <= set(getattr(method, "targets", ())) and getattr(method, "dropout", 0.0) == 0
            and not getattr(method, "dora", False) and model.gated_mlp and not model.fused_gate_up
            and model.activation in ("silu", "gelu") and model.num_experts <= 1 and not model.is_encoder_decoder)


def _unsloth_layer(model: ModelSpec, work: Workload, positions: int) -> list[SavedItem]:
    """What one layer keeps under Unsloth's kernels (unslothai/unsloth, unsloth/kernels), per sequence:
    each ``fast_rms_layernorm`` its input and fp32 ``r`` per row; ``LoRA_QKV`` its input; the rotary
    embedding's clones of q and k, which FlashAttention keeps with v, its output (which ``LoRA_W``
    reads for o, a view) and the fp32 log-sum-exp; ``LoRA_MLP`` its input and the gate and up
    outputs ``e`` and ``g`` (the product is recomputed in backward)."""
    p, h, f = work.compute_bytes, model.hidden_size, model.ffn_size
    norm = p * h + FP32
    per_position = (
        ("attention norm", norm, False), ("qkv inputs", p * h, False),
        ("attention q/k/v", p * (model.q_size + 2 * model.kv_size), False),
        ("attention lse", FP32 * model.num_heads, False), ("attention output", p * model.attention_out_size, False),
        ("mlp norm", norm, True), ("mlp inputs", p * h, True), ("mlp activations", 2 * p * f, True))
    return [SavedItem(name, value * positions, in_mlp) for name, value, in_mlp in per_position]


def layer_saved(model: ModelSpec, method: Method, work: Workload, flow: LayerFlow,
                span: LayerSpan) -> list[SavedItem]:
    """Saved bytes of one layer for one sequence, by term."""
    if unsloth_kernels(model, method, work):
        return _unsloth_layer(model, work, span.queries)
    p, h = work.compute_bytes, model.hidden_size
    positions, keys = span.queries, span.keys
    trains = method.trains_base
    lora = adapter_io(method, work)
    pn, weight_bytes = model_bytes(method, work, model), model_bytes(method, work)
    lin = flow.linears
    items: list[SavedItem] = []
    in_mlp = False

    fp32_norm = layernorm_in_fp32(model, work)

    def norm(input_rg: bool, width: int | None = None, groups: int = 1) -> float:
        return _norm(model, pn, input_rg, trains, width, groups, compiled=work.compiled, autocast=fp32_norm)

    def add(name: str, per_position: float, rows: int = positions) -> None:
        if per_position:
            items.append(SavedItem(name, per_position * rows, in_mlp))

    def batch(name: str, value: float) -> None:  # per layer, whatever the micro-batch holds
        if value:
            items.append(SavedItem(name, value, in_mlp, per_batch=True))

    placement = model.norm_placement
    attn_in_rg = flow.stream_in_rg or trains
    if placement != "reordered":
        add("attention norm", norm(attn_in_rg))
        batch("attention norm scale", _norm_constant(model, attn_in_rg))
        batch("attention norm fp32 weights", _norm_weight_copies(model, weight_bytes, attn_in_rg, trains, fp32_norm))
    if "qkv" in lin:
        readers = [lin["qkv"]]
    elif "kv_a" in lin:
        readers = [lin["q" if "q" in lin else "q_a"], lin["kv_a"]]
    else:
        readers = [lin["q"], lin["k"], lin["v"]]
    shared_norm = placement == "shared"
    if shared_norm:  # Phi: the MLP's first matrices read the attention's normed input, kept once for all
        readers = readers + [lin[r] for r in ("gate", "up", "gate_up") if r in lin]
    wide = pn != p or fp32_norm  # norms' outputs in fp32 under autocast: each matmul casts its own copy
    litgpt = work.modeling == "litgpt" and model.mla is None and work.attention == "flash"
    if litgpt:
        add("qkv inputs", _litgpt_qkv_inputs(readers, p, lora))
    else:
        add("qkv inputs", sum(_reader_inputs(readers, p, lora, wide)))
    if model.mla is not None:  # the latents' norms and the matrices that read them
        mla = model.mla
        if "q_b" in lin:
            add("q latent norm", norm(lin["q_a"].output_rg, mla.q_lora_rank))
            add("q latent", sum(_reader_inputs([lin["q_b"]], p, lora, wide)))
        add("kv latent norm", norm(lin["kv_a"].output_rg, mla.kv_lora_rank))
        add("kv latent", sum(_reader_inputs([lin["kv_b"]], p, lora, wide)))
    if model.qk_norm != "none":
        q_groups, k_groups = (model.num_heads, model.num_kv_heads) if model.qk_norm == "head" else (1, 1)
        width = model.head_dim if model.qk_norm == "head" else None
        # They normalise the projections' outputs, before any prefix joins the keys.
        q_in, k_in = lin["q"].output_rg, lin["k"].output_rg
        add("q/k norms", norm(q_in, model.q_size, q_groups) + norm(k_in, model.kv_size, k_groups))
        batch("q/k norm scales", _norm_constant(model, q_in, width) + _norm_constant(model, k_in, width))
    if model.rotary_per_layer_fp32 and (lin["q"].output_rg or lin["k"].output_rg):
        add("rotary tables", FP32 * 2 * int(model.head_dim * model.rotary_fraction))
    # Attention core.
    o_shared, o_adapters = _reader_inputs([lin["o"]], p, lora)
    if litgpt:
        add("attention q/k/v", _litgpt_attention_inputs(model, flow, p))
    else:
        add("attention q/k/v", _attention_inputs(model, method, work, flow, p, keys / positions))
    scores_rg = flow.q_rg or flow.k_rg
    relative = model.relative_attention_buckets > 0
    masked = _masked(method, flow.kind, keys) or relative
    if work.attention == "flash":
        # SDPA keeps q, k, v, the fp32 log-sum-exp and its output; the output is laid out
        # (batch, seq, heads, dim), so the o projection reads (and keeps) that same tensor.
        efficient = masked or model.qk_head_dim != model.v_head_dim
        if flow.attention_rg:
            add("attention lse", FP32 * model.num_heads, _lse_positions(positions, efficient))
            if relative:
                # T5: the position bias made into an additive mask in each layer, (1, heads,
                # queries, keys) for the whole batch; the decoder's causal version keeps its
                # boolean condition too when the bias trains.
                batch("attention bias", p * model.num_heads * positions * keys)
                if flow.kind.causal and trains:
                    batch("attention causal mask", MASK * positions * keys)
            elif masked:
                # The mask over the keys (prefix tuning's padding, a sliding window), made additive
                # (p bytes) for the memory-efficient kernel in each layer, which keeps it for backward.
                add("attention mask", p * keys)
        if flow.attention_rg or o_shared:
            add("attention output", p * model.attention_out_size)
        if o_shared and (litgpt or model.rotary_by_concat and not efficient):
            # FlashAttention's output follows the head-major queries; it is copied token-major for o
            # (LitGPT transposes and reshapes its SDPA output the same way).
            add("attention output copy", o_shared)
    else:
        add("attention scores (s²)", model.num_heads * keys * _eager_scores(model, p, scores_rg, flow.v_rg,
                                                                            work.autocast))
        add("attention output", o_shared)  # the output, transposed into a new tensor for o
    add("o adapter input", o_adapters)
    after_attn = flow.stream_in_rg or lin["o"].output_rg
    if flow.kind.cross_attention:
        after_attn = _cross_attention_saved(model, work, flow, span, p, pn, lora, after_attn, add)
    if model.dropout > 0:  # residual dropouts keep a one-byte mask where their input needs dX
        add("dropout masks", MASK * h * (lin["o"].output_rg + lin["down"].output_rg
                                         + ("cross_o" in lin and lin["cross_o"].output_rg)))
    in_mlp = True
    if placement in ("sandwich", "reordered"):  # a norm on the attention's output
        add("attention output norm", norm(lin["o"].output_rg or trains))
        batch("attention output norm scale", _norm_constant(model, lin["o"].output_rg or trains))
    mlp_in_rg = (flow.stream_in_rg if model.parallel_residual else after_attn) or trains
    if placement not in ("reordered", "shared"):
        add("mlp norm", norm(mlp_in_rg))
        batch("mlp norm scale", _norm_constant(model, mlp_in_rg))
        batch("mlp norm fp32 weights", _norm_weight_copies(model, weight_bytes, mlp_in_rg, trains, fp32_norm))
    if "router" in lin:
        add("router", _router_saved(model, flow, p, lora, mlp_in_rg))
    for prefix in ("", "shared_", "expert_"):
        if prefix == "" and axolotl_mlp_kernel(model, method, work):
            # LoRA_MLP's save_for_backward: X, gate and up (the LoRA matrices are parameters)
            add("mlp inputs", p * h)
            add("mlp activations", 2 * p * model.ffn_size)
            continue
        if prefix + "down" in lin:
            for name, value in _mlp_saved(model, flow, prefix, p, lora, prefix == "expert_", wide, work.compiled):
                if not (shared_norm and name == "mlp inputs"):  # counted with the attention's inputs
                    add(name, value)
    if "router" in lin:
        # Grouped-matmul experts (tokens sorted by expert): the gathered copy of each routed
        # token's hidden state when the experts train, each expert output (kept by the product
        # with its routing weight) and that weight, and the sort's bookkeeping: the permutation,
        # its token index and the expert of each row (int64).
        k = model.experts_per_token
        trained = any(lin[r].trainable for r in ("expert_gate", "expert_up", "expert_gate_up") if r in lin)
        gathered = p * h if trained else 0.0
        weight = FP32 if lin["router"].linear.fp32 else p
        add("expert routing", k * (gathered + p * h + weight + 3 * INT64))
        batch("expert offsets", 4 * model.num_experts)
        # LoRA through peft's target_parameters merges W + s·BA into a full expert stack at each forward:
        # the grouped matmul keeps it for its input's gradient, the merge its two factors cast to 16 bits.
        for u in lin.values():
            if u.merged:
                rank = getattr(method, "rank", 0)
                stack, factors = u.linear.copies * u.linear.weight_elements, u.linear.copies * rank * (
                    u.linear.in_features + u.linear.out_features)
                items.append(SavedItem("merged expert weights", p * ((stack if u.input_rg else 0) + factors), True,
                                       per_batch=True, remade=True))
    if placement in ("sandwich", "reordered"):
        down_rg = any(lin[r].output_rg for r in ("down", "expert_down", "shared_down") if r in lin)
        add("mlp output norm", norm(down_rg or trains))
        batch("mlp output norm scale", _norm_constant(model, down_rg or trains))
    if model.post_norm:
        add("post-norms", 0.0)  # BERT's post-norm LayerNorms are counted as the layer's norms
    return items


def _cross_attention_saved(model: ModelSpec, work: Workload, flow: LayerFlow, span: LayerSpan, p: int, pn: int,
                           lora: AdapterIO, stream_rg: bool, add: Callable[..., None]) -> bool:
    """T5's cross-attention block: its norm, query input, the adapters' copies of the encoder
    output (the encoder output itself is kept once for all layers: ``saved_tensors``), the
    attention over the source and its output. Returns whether the stream after it requires a
    gradient."""
    lin = flow.linears
    trains = lin["cross_q"].trainable
    queries, memory = span.queries, span.memory
    add("cross-attention norm", _norm(model, pn, stream_rg or trains, trains))
    add("cross q input", sum(_reader_inputs([lin["cross_q"]], p, lora)))
    add("cross k/v adapter inputs", _reader_inputs([lin["cross_k"], lin["cross_v"]], p, lora)[1], memory)
    q_rg, k_rg, v_rg = flow.cross_q_rg, flow.cross_k_rg, flow.cross_v_rg
    o_shared, o_adapters = _reader_inputs([lin["cross_o"]], p, lora)
    if work.attention == "flash":
        if flow.cross_rg:
            add("cross-attention q", p * model.q_size)
            add("cross-attention k/v", p * 2 * model.kv_size, memory)
            add("cross-attention lse", FP32 * model.num_heads, _lse_positions(queries, True))
        if flow.cross_rg or o_shared:
            add("cross-attention output", p * model.q_size)
    else:
        scores_rg = q_rg or k_rg
        add("cross-attention q", p * model.q_size * k_rg)
        add("cross-attention k/v", p * model.kv_size * (q_rg + scores_rg), memory)
        add("cross-attention scores", model.num_heads * memory * _eager_scores(model, p, scores_rg, v_rg))
        add("cross-attention output", o_shared)
    add("cross o adapter input", o_adapters)
    return stream_rg or lin["cross_o"].output_rg


def _rope_tables(model: ModelSpec) -> int:
    """RoPE cos/sin tables the layers share: one pair, or (Gemma 3) one per attention span."""
    if not model.rotary:
        return 0
    return 2 if model.rotary_local_base and model.sliding_window else 1


def saved_tensors(model: ModelSpec, method: Method, work: Workload) -> SavedTensors:
    positions = work.seq_len + method.virtual_tokens
    keys = positions + method.prefix_tokens
    source = work.source_len or 0
    p, h = work.compute_bytes, model.hidden_size
    pn, weight_bytes = model_bytes(method, work, model), model_bytes(method, work)
    trains = method.trains_base
    layers = []
    memory_kept = memory_rg = False
    for flow, count in model_flows(model, method, work.grad_ckpt):
        if not flow.kind.causal and model.is_encoder_decoder:
            span = LayerSpan(source, source)
        else:
            span = LayerSpan(positions, keys, source)
        items = layer_saved(model, method, work, flow, span)
        rows = span.queries
        layers.append(LayerSaved(flow, count, tuple(items), pn * h * rows))
        if flow.kind.cross_attention:
            memory_rg = flow.memory_rg
            memory_kept = memory_kept or _reader_inputs([flow.linears["cross_k"], flow.linears["cross_v"]], p,
                                                        adapter_io(method, work))[0] > 0
    # The head: the final norm and the LM head's input (kept for its dW); BERT's MLM head is a
    # dense layer, GELU and LayerNorm before the decoder; T5's decoder drops out its output.
    fp32_norm = layernorm_in_fp32(model, work)
    head_side = _norm(model, pn, True, trains, autocast=fp32_norm) + (p * h if method.trains_head else 0.0)
    if model.mlm_head:
        head_side += (p * h if trains else 0.0) + p * h
    if model.inner_dropout and model.dropout > 0:
        head_side += MASK * h
    head_rank = getattr(method, "head_rank", 0)
    if head_rank:  # LoRA on the head: A's copy of the final norm's output (unless shared) and A's output
        io = adapter_io(method, work)
        head_side += (0.0 if io.shares_input(p) else io.saved_bytes(p) * h) + io.saved_bytes(p) * head_rank
    head_side *= positions * method.predicted_fraction  # sparse MLM prediction gathers the masked positions
    embeddings_rg = input_requires_grad(method, work.grad_ckpt)
    embedded = positions + source  # T5 embeds the source and the target
    shared = 0.0
    embed_rank = getattr(method, "embedding_rank", 0)
    if embed_rank:  # LoRA on the embedding: B keeps A's looked-up rows (the adapters' dtype)
        shared += work.adapter_bytes * embed_rank * embedded
    if method.trains_embeddings:  # embedding backward keeps the indices it gathered (int64)
        shared += INT64 * embedded * (1 + ((model.learned_positions + (model.token_types > 0)) if trains else 0))
    if model.post_norm:  # BERT normalises its embeddings (post-norm)
        shared += _norm(model, pn, embeddings_rg, trains) * positions
    if model.dropout > 0 and model.embedding_dropout and embeddings_rg:
        shared += MASK * h * embedded  # embedding dropout
    if method.prefix_tokens:
        shared += FP32 * method.prefix_tokens * model.num_layers * model.kv_cache_width  # prefix expanded
    # Once per micro-batch: the RoPE cos/sin tables every layer reads (positions are the batch's),
    # the final norm's Gemma 1 + w.
    rope = FP32 if model.rotary_fp32 else pn
    rotated = int(model.head_dim * model.rotary_fraction)  # the tables' width: the rotated share of a head
    tables = 0 if model.rotary_per_layer_fp32 else _rope_tables(model)
    batch_shared = tables * 2 * rope * rotated * positions + _norm_constant(model, True) \
        + _norm_weight_copies(model, weight_bytes, True, trains, fp32_norm)
    checkpointed_batch = 0.0
    if model.is_encoder_decoder:
        # The encoder's final norm and dropout, and its output, which every cross-attention reads
        # (kept once when the cross-attention weights train).
        dropped = model.inner_dropout and model.dropout > 0
        shared += source * (_norm(model, pn, memory_rg, trains) + (MASK * h if memory_rg and dropped else 0.0)
                            + (p * h if memory_kept else 0.0))
        if trains:  # the relative-position bucket of each (query, key), gathered by each stack's bias
            batch_shared += INT64 * (source * source + positions * positions)
        if work.attention == "flash" and any(layer.flow.cross_rg for layer in layers):
            batch_shared += p * model.num_heads * positions * source  # the cross-attention's zero bias
        checkpointed_batch = p * model.num_heads * (source * source + positions * positions)
    return SavedTensors(layers_saved=tuple(layers), head_side=head_side, shared=shared, batch_shared=batch_shared,
                        checkpointed_batch=checkpointed_batch)


@record
class LogitsBytes:
    """Logits memory of one sequence in a training step (HF causal-LM loss in fp32)."""

    kept: float
    """After the forward: the fp32 log-softmax the loss keeps for backward."""
    backward_peak: float
    """The largest of three moments at the top of backward (see ``logits_bytes``)."""


def logit_count(model: ModelSpec, method: Method, work: Workload) -> float:
    """Logits of one sequence: every predicted position (masked ones only for BERT's MLM) by the vocabulary."""
    return (work.seq_len + method.virtual_tokens) * method.predicted_fraction * model.vocab_size


def logits_bytes(model: ModelSpec, method: Method, work: Workload) -> LogitsBytes:
    """Logits memory, following transformers' ``ForCausalLMLoss`` (logits upcast to fp32;
    BERT's masked-LM loss stays in the compute dtype,
    ``cross_entropy`` = log_softmax + nll_loss), a training loop that keeps only the loss of the
    model's outputs (as transformers' Trainer does), and autograd's order of frees:

    A. log_softmax backward: the saved fp32 log-softmax, its fp32 gradient and the fp32 gradient
       of its input: 12 bytes per position and vocabulary entry;
    B. the upcast's backward (16-bit only): the fp32 gradient and its p-byte cast;
    C. the LM head's backward: the p-byte logits gradient and the head's weight gradient when it
       trains (``vocab · hidden · p``).
    """
    logits = logit_count(model, method, work)
    p = work.compute_bytes
    # BERT's masked-LM loss and T5's cross-entropy run in the compute dtype, unless autocast (whose
    # fp32 list has log_softmax and nll_loss) upcasts them.
    loss = FP32 if model.loss_upcast or work.autocast else p
    # Gemma 2's final softcap keeps its tanh until the softcap's backward, after the loss's.
    tanh = p if model.final_softcap is not None else 0
    moment_a = (3 * loss + tanh) * logits
    moment_b = (loss + p + tanh) * logits if p != loss else 0.0
    head_grad = p * model.vocab_size * model.hidden_size if method.trains_head else 0.0
    moment_c = p * logits + head_grad
    return LogitsBytes(kept=(loss + tanh) * logits, backward_peak=max(moment_a, moment_b, moment_c))


def eager_attention_backward(model: ModelSpec, method: Method, work: Workload) -> float:
    """Extra bytes at eager attention's softmax backward, for one sequence: the probabilities'
    gradient (upcast to fp32 where the softmax was) and the scores' gradient, less the cast
    probabilities AV kept, which its backward has freed. 0 for fused attention."""
    if work.attention != "eager":
        return 0.0
    p = work.compute_bytes
    positions = work.seq_len + method.virtual_tokens
    scores = model.num_heads * positions * (positions + method.prefix_tokens)
    if (model.softmax_fp32 or work.autocast) and p != FP32:
        per_score = 2 * FP32 - p  # fp32 dP and dS; the cast probabilities are freed
    elif model.attention_dropout > 0:
        per_score = p  # dP and dS; the dropped-out probabilities are freed
    else:
        per_score = 2 * p  # dP and dS; the probabilities are softmax's own output, still kept
    return scores * per_score


def layer_backward_transient(model: ModelSpec, method: Method, work: Workload) -> float:
    """Gradient tensors alive inside one layer's backward, on top of its saved tensors, for one
    sequence: the incoming residual gradient and, in the MLP, the gradients of the down
    projection's input and of both factors of the gated product (one fewer for a plain MLP)."""
    positions = work.seq_len + method.virtual_tokens
    if unsloth_kernels(model, method, work) or axolotl_mlp_kernel(model, method, work):
        # LoRA_MLP's backward (unsloth/kernels/fast_lora.py at c67183f, utils.py at 451ed29; Axolotl's
        # port keeps its structure): the incoming gradient and the down projection's input gradient
        # DW = matmul_lora(dY, down.T), which adds its LoRA term out of place (``out += (X @ A) @ (s * B)``:
        # a second tensor of DW's size while it is formed); the SwiGLU backward then writes into DW, e
        # and g in place and dX reuses the saved input's storage.
        return work.compute_bytes * positions * (model.hidden_size + 2 * model.ffn_size)
    # MLP units a token passes through in the widest kind of layer: the dense width, or the top-k
    # routed experts with the shared ones.
    units = max(sum(lin.in_features * lin.active for lin in kind.linears if lin.role.endswith("down"))
                for kind in layer_kinds(model))
    width = (3 if model.gated_mlp else 2) * units
    return work.compute_bytes * positions * (model.hidden_size + width)
