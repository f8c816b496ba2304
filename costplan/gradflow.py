"""Which tensors need gradients in one training step: shared by the FLOPs and memory rules.

Autograd computes an activation gradient only for inputs that require one, and saves a tensor
for backward only when a gradient that needs it will be computed. With a frozen base (LoRA,
prompt or prefix tuning) the embedding output needs no gradient, so the first layer skips the
activation gradients of the matrices that read it; from the first trainable piece on, the
residual stream requires gradients in every later layer. This module follows that flow through
one layer, in forward order.
"""

from __future__ import annotations

import functools

from costplan.methods import Adapter, Method
from costplan.model import LayerKind, Linear, ModelSpec, layer_sequence
from costplan.record import record


@record
class LinearUse:
    """One weight matrix as used in a training step."""

    linear: Linear
    input_rg: bool
    """Its input requires a gradient, so backward computes dX."""
    trainable: bool
    """Its base weight is trained, so backward computes dW and the input is saved."""
    adapter: Adapter | None
    quantized: bool = False
    """Stored in 4 bits (bitsandbytes): dequantized for each matmul. Its ``MatMul4Bit`` keeps only
    the packed weight for backward (``ctx.tensors = (None, B)``, since bitsandbytes 0.43.2 and in
    0.50), never its input."""

    merged: bool = False
    """LoRA through peft's ``target_parameters`` (gpt-oss's expert tensors): the matmul runs on, and
    trains, the weight merged with its adapter at each forward (``Adapter.merged``)."""
    legacy_quantized: bool = False
    """The quantized matmul keeps its input when it needs dX: bitsandbytes' 8-bit ``MatMul8bitLt``,
    and its 4-bit one before 0.43.2 (July 2024; ``ctx.tensors = (A, B)``)."""

    @property
    def keeps_input(self) -> bool:
        """Whether the base matmul saves its input for backward (for its weight's gradient, or an
        older bitsandbytes' 4-bit matmul that needs dX)."""
        return self.trainable or (self.legacy_quantized and self.input_rg)

    @property
    def output_rg(self) -> bool:
        return self.input_rg or self.trainable or self.adapter is not None


@record
class LayerFlow:
    """Gradient requirements inside one transformer layer."""

    kind: LayerKind
    stream_in_rg: bool
    linears: dict[str, LinearUse]
    q_rg: bool
    k_rg: bool
    v_rg: bool
    stream_out_rg: bool
    cross_q_rg: bool = False
    """T5 decoder blocks: the cross-attention's queries, keys and values."""
    cross_k_rg: bool = False
    cross_v_rg: bool = False
    memory_rg: bool = False
    """T5 decoder blocks: the encoder output that cross-attention reads requires a gradient."""

    @property
    def attention_rg(self) -> bool:
        return self.q_rg or self.k_rg or self.v_rg

    @property
    def cross_rg(self) -> bool:
        return self.cross_q_rg or self.cross_k_rg or self.cross_v_rg


def layer_flow(model: ModelSpec, kind: LayerKind, method: Method, stream_rg: bool,
               memory_rg: bool = False) -> LayerFlow:
    norms_trained = method.trains_base
    uses: dict[str, LinearUse] = {}
    lins = {lin.role: lin for lin in kind.linears}

    def use(role: str, input_rg: bool) -> bool:
        """Record the matrix's use; whether its output requires a gradient."""
        linear = lins[role]
        adapter = method.adapter(linear)
        merged = adapter is not None and adapter.merged  # the matmul uses, and trains, the merged weight
        u = LinearUse(linear, input_rg, method.trains_base or merged, None if merged else adapter, merged=merged,
                      quantized=method.base_storage in ("nf4", "int8"),
                      legacy_quantized=method.base_storage == "int8" or bool(getattr(method, "bnb_keeps_input", False)))
        uses[role] = u
        return u.output_rg

    # OLMo 2 normalises the blocks' outputs only: its attention and MLP read the stream itself.
    input_norms = model.norm_placement != "reordered"
    attn_in_rg = stream_rg or (norms_trained and input_norms)
    prefix = method.prefix_tokens > 0
    if "qkv" in lins:
        fused = use("qkv", attn_in_rg)
        q_rg, k_rg, v_rg = fused, fused or prefix, fused or prefix
    elif "kv_a" in lins:  # MLA: queries through q_a, its norm and q_b; keys and values from one latent
        if "q" in lins:
            q_rg = use("q", attn_in_rg)
        else:
            q_rg = use("q_b", use("q_a", attn_in_rg) or norms_trained)
        latent_rg = use("kv_a", attn_in_rg)
        expanded_rg = use("kv_b", latent_rg or norms_trained)
        k_rg, v_rg = expanded_rg or latent_rg, expanded_rg  # the rotary key comes from kv_a directly
    else:
        q_rg = use("q", attn_in_rg)
        k_rg = use("k", attn_in_rg) or prefix
        v_rg = use("v", attn_in_rg) or prefix
    attn_out_rg = use("o", q_rg or k_rg or v_rg)
    # GPT-NeoX's parallel residual feeds the layer input, not the attention sum, to its MLP.
    after_attn = stream_rg or attn_out_rg
    cross = {}
    if kind.cross_attention:
        cq = use("cross_q", after_attn or norms_trained)
        ck, cv = use("cross_k", memory_rg), use("cross_v", memory_rg)
        cross_out_rg = use("cross_o", cq or ck or cv)
        after_attn = after_attn or cross_out_rg
        cross = {"cross_q_rg": cq, "cross_k_rg": ck, "cross_v_rg": cv, "memory_rg": memory_rg}
    mlp_in_rg = (stream_rg if model.parallel_residual else after_attn) or (norms_trained and input_norms)
    mlp_out_rg = False
    if "router" in lins:
        use("router", mlp_in_rg)
    for prefix_ in ("", "expert_", "shared_"):
        if prefix_ + "down" not in lins:
            continue
        if prefix_ + "gate_up" in lins:
            act_rg = use(prefix_ + "gate_up", mlp_in_rg)
        elif prefix_ + "gate" in lins:
            act_rg = use(prefix_ + "gate", mlp_in_rg) | use(prefix_ + "up", mlp_in_rg)
        else:
            act_rg = use(prefix_ + "up", mlp_in_rg)
        mlp_out_rg = use(prefix_ + "down", act_rg) or mlp_out_rg
    ordered = {lin.role: uses[lin.role] for lin in kind.linears}
    return LayerFlow(kind, stream_rg, ordered, q_rg, k_rg, v_rg, after_attn or mlp_out_rg, **cross)


def input_requires_grad(method: Method, grad_ckpt: bool) -> bool:
    """Whether the embedding output requires a gradient.

    True when embeddings train, when virtual tokens are trainable inputs, and under activation
    checkpointing, where transformers/peft call ``enable_input_require_grads`` so that
    re-entrant checkpoints back-propagate.
    """
    return method.trains_embeddings or method.virtual_tokens > 0 or grad_ckpt


@functools.lru_cache(maxsize=512)
def model_flows(model: ModelSpec, method: Method, grad_ckpt: bool) -> tuple[tuple[LayerFlow, int], ...]:
    """Each distinct layer flow with how many layers follow it, in the order they first occur.

    The flows are followed layer by layer: the first layer of a frozen model reads embeddings that
    need no gradient, and the stream requires one from the first trainable piece on. T5's decoder
    starts again from its (shared, frozen or not) embeddings, and its cross-attention reads the
    encoder's output, which requires a gradient when anything in the encoder trains.
    """
    embeddings_rg = input_requires_grad(method, grad_ckpt)
    stream, memory = embeddings_rg, False
    counts: list[int] = []
    flows: list[LayerFlow] = []
    followed: dict[tuple[int, bool, bool, bool], int] = {}  # (kind, stream, memory, experts adapted) -> flow index
    previous = None
    # LoRA on some layers' expert tensors only (experts.N); none at all (an empty set) leaves every layer alike.
    experts = getattr(method, "expert_layers", None) or None
    for i, kind in enumerate(layer_sequence(model)):
        if kind.cross_attention and (previous is None or not previous.cross_attention):
            memory, stream = stream or method.trains_base, embeddings_rg  # the encoder's final norm, then the decoder
        adapted = experts is None or i in experts
        key = (id(kind), stream, memory, adapted)  # a layer's flow depends on these alone: follow each once
        index = followed.get(key)
        if index is None:
            flow = layer_flow(model, kind, method if adapted else method.without_experts(), stream, memory)
            index = next((i for i, known in enumerate(flows) if known == flow), len(flows))
            if index == len(flows):
                flows.append(flow)
                counts.append(0)
            followed[key] = index
        counts[index] += 1
        stream = flows[index].stream_out_rg
        previous = kind
    return tuple(zip(flows, counts, strict=True))


def merged_linears(model: ModelSpec, method: Method) -> list[tuple[Linear, int]]:
    """The expert stacks LoRA merges at each forward (peft's ``target_parameters``), in forward order
    within a layer, each with the number of layers that carry it."""
    return [(u.linear, count) for flow, count in model_flows(model, method, False) for u in flow.linears.values()
            if u.merged]


def merged_elements(model: ModelSpec, method: Method) -> int:
    """Weights of those stacks over the layers that carry them: what the merges read and write."""
    return sum(count * lin.copies * lin.weight_elements for lin, count in merged_linears(model, method))
