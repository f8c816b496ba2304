"""Which tensors need gradients in one training step: shared by the FLOPs and memory rules.

Autograd computes an activation gradient only for inputs that require one, and saves a tensor
for backward only when a gradient that needs it will be computed. With a frozen base (LoRA,
prompt or prefix tuning) the embedding output needs no gradient, so the first layer skips the
activation gradients of the matrices that read it; from the first trainable piece on, the
residual stream requires gradients in every later layer. This module follows that flow through
one layer, in forward order.
"""

from __future__ import annotations

from dataclasses import dataclass

from costplan.methods import Adapter, Method
from costplan.model import Linear, ModelSpec, layer_linears


@dataclass(frozen=True, slots=True)
class LinearUse:
    """One weight matrix as used in a training step."""

    linear: Linear
    input_rg: bool
    """Its input requires a gradient, so backward computes dX."""
    trainable: bool
    """Its base weight is trained, so backward computes dW and the input is saved."""
    adapter: Adapter | None
    quantized: bool = False
    """Stored in 4 bits (bitsandbytes), whose matmul keeps its input whenever it needs dX."""

    @property
    def keeps_input(self) -> bool:
        """Whether the base matmul saves its input for backward."""
        return self.trainable or (self.quantized and self.input_rg)

    @property
    def output_rg(self) -> bool:
        return self.input_rg or self.trainable or self.adapter is not None


@dataclass(frozen=True, slots=True)
class LayerFlow:
    """Gradient requirements inside one transformer layer."""

    stream_in_rg: bool
    linears: dict[str, LinearUse]
    q_rg: bool
    k_rg: bool
    v_rg: bool
    stream_out_rg: bool

    @property
    def attention_rg(self) -> bool:
        return self.q_rg or self.k_rg or self.v_rg


def layer_flow(model: ModelSpec, method: Method, stream_rg: bool) -> LayerFlow:
    adapters = {a.linear.role: a for a in method.adapters(model)}
    norms_trained = method.trains_base
    uses: dict[str, LinearUse] = {}

    def use(linear: Linear, input_rg: bool) -> LinearUse:
        u = LinearUse(linear, input_rg, method.trains_base, adapters.get(linear.role),
                      quantized=method.base_storage == "nf4")
        uses[linear.role] = u
        return u

    lins = {lin.role: lin for lin in layer_linears(model)}
    attn_in_rg = stream_rg or norms_trained
    prefix = method.prefix_tokens > 0
    if "qkv" in lins:
        fused = use(lins["qkv"], attn_in_rg).output_rg
        q_rg, k_rg, v_rg = fused, fused or prefix, fused or prefix
    else:
        q_rg = use(lins["q"], attn_in_rg).output_rg
        k_rg = use(lins["k"], attn_in_rg).output_rg or prefix
        v_rg = use(lins["v"], attn_in_rg).output_rg or prefix
    attn_out_rg = use(lins["o"], q_rg or k_rg or v_rg).output_rg
    # GPT-NeoX's parallel residual feeds the layer input, not the attention sum, to its MLP.
    parallel = model.family == "gpt_neox"
    after_attn = stream_rg or attn_out_rg
    mlp_in_rg = (stream_rg if parallel else after_attn) or norms_trained
    if "router" in lins:
        use(lins["router"], mlp_in_rg)
    if "gate" in lins:
        act_rg = use(lins["gate"], mlp_in_rg).output_rg | use(lins["up"], mlp_in_rg).output_rg
    else:
        act_rg = use(lins["up"], mlp_in_rg).output_rg
    mlp_out_rg = use(lins["down"], act_rg).output_rg
    return LayerFlow(stream_rg, uses, q_rg, k_rg, v_rg, after_attn or mlp_out_rg)


def input_requires_grad(method: Method, grad_ckpt: bool) -> bool:
    """Whether the embedding output requires a gradient.

    True when embeddings train, when virtual tokens are trainable inputs, and under activation
    checkpointing, where transformers/peft call ``enable_input_require_grads`` so that
    re-entrant checkpoints back-propagate.
    """
    return method.trains_embeddings or method.virtual_tokens > 0 or grad_ckpt


def model_flow(model: ModelSpec, method: Method, grad_ckpt: bool) -> tuple[LayerFlow, LayerFlow]:
    """The first layer's flow and the flow of every later layer (which is the same for all)."""
    first = layer_flow(model, method, input_requires_grad(method, grad_ckpt))
    later = layer_flow(model, method, first.stream_out_rg)
    assert layer_flow(model, method, later.stream_out_rg) == later
    return first, later
