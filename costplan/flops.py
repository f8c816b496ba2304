"""FLOPs of one training step or one generated token, itemised per part of the model.

Convention (that of ``torch.utils.flop_counter.FlopCounterMode``, against which this module is
verified):

1. Only matrix multiplies count, at 2·m·n·k; biases, norms, activations, softmax, RoPE and the
   optimizer update are not counted (they are memory-bound and well under 1% of the total).
2. Attention scores ``QKᵀ`` and ``AV`` are counted over the full key length for every query:
   the causal mask is *not* discounted (FlashAttention skips masked blocks; the measured
   efficiency absorbs that).
3. Backward = activation gradients (dX, same FLOPs as the forward matmul) where the input
   requires a gradient, plus weight gradients (dW) where the weight trains. A frozen base in
   LoRA thus costs ≈4N per token instead of 6N, and the first layer of a frozen model skips dX
   of the matrices that read the embeddings (see ``gradflow``). SDPA's backward counts four
   score-sized matmuls (2× forward) whenever any of q, k, v needs a gradient; eager attention
   counts only the gradients it needs.
4. Activation checkpointing recomputes each layer's forward once (not the embeddings or the
   LM head): the ``recompute`` column. Non-reentrant checkpointing (transformers' default)
   stops recomputing once every tensor saved for backward is back, so a pre-norm dense layer
   without dropout skips its final down projection (or, when it carries an adapter, the
   adapter's B matmul): nothing saves their outputs.
5. Embedding lookups cost nothing; the LM head (or BERT's MLM head) runs on every position.
6. MoE layers run the router on every token and ``experts_per_token`` experts per token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from costplan.gradflow import LayerFlow, model_flow
from costplan.methods import Method
from costplan.model import ModelSpec
from costplan.terms import Part
from costplan.workload import Workload


@dataclass(frozen=True, slots=True)
class FlopTerm:
    """FLOPs of one part, per step; columns add up to the step's total."""

    part: Part
    forward: float
    backward_input: float = 0.0
    backward_weight: float = 0.0
    recompute: float = 0.0

    @property
    def total(self) -> float:
        return self.forward + self.backward_input + self.backward_weight + self.recompute

    def __add__(self, other: FlopTerm) -> FlopTerm:
        return FlopTerm(self.part, self.forward + other.forward,
                        self.backward_input + other.backward_input,
                        self.backward_weight + other.backward_weight,
                        self.recompute + other.recompute)

    def scaled(self, factor: float) -> FlopTerm:
        return FlopTerm(self.part, self.forward * factor, self.backward_input * factor,
                        self.backward_weight * factor, self.recompute * factor)


@dataclass(frozen=True, slots=True)
class FlopsBreakdown:
    """FLOPs per data token, by part. ``terms`` keep forward/backward/recompute apart."""

    terms: tuple[FlopTerm, ...]
    tokens_per_step: float
    """Data tokens the per-step FLOPs were divided by."""
    notes: tuple[str, ...] = field(default=())

    def column(self, name: str) -> float:
        return sum(getattr(t, name) for t in self.terms)

    @property
    def forward(self) -> float:
        return self.column("forward")

    @property
    def backward(self) -> float:
        return self.column("backward_input") + self.column("backward_weight")

    @property
    def recompute(self) -> float:
        return self.column("recompute")

    @property
    def per_token(self) -> float:
        return sum(t.total for t in self.terms)

    def by_part(self) -> dict[Part, float]:
        return {t.part: t.total for t in self.terms}


def _matmul(part: Part, flops: float, input_rg: bool, weight_rg: bool) -> FlopTerm:
    return FlopTerm(part, flops, flops if input_rg else 0.0, flops if weight_rg else 0.0)


_PART = {"q": Part.ATTENTION_PROJECTIONS, "k": Part.ATTENTION_PROJECTIONS, "v": Part.ATTENTION_PROJECTIONS,
         "qkv": Part.ATTENTION_PROJECTIONS, "o": Part.ATTENTION_PROJECTIONS, "router": Part.ROUTER,
         "gate": Part.MLP, "up": Part.MLP, "down": Part.MLP}


def _layer_terms(model: ModelSpec, flow: LayerFlow, queries: int, keys: int,
                 eager: bool, training: bool) -> dict[Part, FlopTerm]:
    """One layer's FLOPs for ``queries`` query positions attending over ``keys`` positions."""
    terms: dict[Part, FlopTerm] = {}

    def add(term: FlopTerm) -> None:
        terms[term.part] = terms[term.part] + term if term.part in terms else term

    for role, u in flow.linears.items():
        lin = u.linear
        per_token = 2.0 * lin.in_features * lin.out_features * lin.active
        add(_matmul(_PART[role], queries * per_token, training and u.input_rg, training and u.trainable))
        if u.adapter is not None:
            r = u.adapter.rank
            a = 2.0 * queries * lin.in_features * r * lin.active
            b = 2.0 * queries * r * lin.out_features * lin.active
            add(FlopTerm(Part.ADAPTERS, a + b, (a if u.input_rg else 0.0) + b, a + b))
    scores = 2.0 * queries * keys * model.q_size  # QKᵀ, and the same again for AV
    if not training or not flow.attention_rg:
        backward = 0.0
    elif not eager:
        backward = 5 * scores
    else:
        p_rg = flow.q_rg or flow.k_rg
        backward = scores * (flow.q_rg + flow.k_rg + p_rg + flow.v_rg)
    add(FlopTerm(Part.SCORES, 2 * scores, backward))
    return terms


def _not_recomputed(model: ModelSpec, flow: LayerFlow, positions: int) -> dict[Part, float]:
    """Forward FLOPs at the end of a layer that non-reentrant checkpointing does not redo."""
    if model.is_moe or model.dropout > 0 or model.mlm_head:
        return {}  # a later op saves a tensor (routing product, dropout mask, post-norm input)
    down = flow.linears["down"]
    if down.adapter is None:
        return {Part.MLP: 2.0 * positions * down.linear.in_features * down.linear.out_features}
    return {Part.ADAPTERS: 2.0 * positions * down.adapter.rank * down.linear.out_features}


def _head_flops(model: ModelSpec, positions: float) -> float:
    per_position = 2.0 * model.hidden_size * model.vocab_size
    if model.mlm_head:
        per_position += 2.0 * model.hidden_size**2
    return positions * per_position


def training_flops(model: ModelSpec, method: Method, work: Workload) -> FlopsBreakdown:
    """FLOPs of one sequence's forward + backward (+ recompute), per data token."""
    first, later = model_flow(model, method, work.grad_ckpt)
    positions = work.seq_len + method.virtual_tokens
    keys = positions + method.prefix_tokens
    eager = work.attention == "eager"
    layer: dict[Part, FlopTerm] = {}
    for flow, count in ((first, 1), (later, model.num_layers - 1)):
        if count == 0:
            continue
        for part, term in _layer_terms(model, flow, positions, keys, eager, True).items():
            term = term.scaled(count)
            layer[part] = layer[part] + term if part in layer else term
    if work.grad_ckpt:
        layer = {n: FlopTerm(n, t.forward, t.backward_input, t.backward_weight, t.forward)
                 for n, t in layer.items()}
        for part, skipped in _not_recomputed(model, later, positions).items():
            t = layer[part]
            layer[part] = FlopTerm(part, t.forward, t.backward_input, t.backward_weight,
                                   t.recompute - skipped * model.num_layers)
    head = _head_flops(model, positions * method.predicted_fraction)
    # The LM head's input is the last layer's output, which requires a gradient here always.
    head_term = FlopTerm(Part.HEAD, head, head, head if method.trains_head else 0.0)
    terms = tuple(t.scaled(1.0 / work.seq_len) for t in (*layer.values(), head_term))
    return FlopsBreakdown(terms, work.seq_len)


@dataclass(frozen=True, slots=True)
class InferenceFlops:
    """Forward FLOPs of one request: the prompt's prefill and each decode step."""

    prefill: FlopsBreakdown
    """Per prompt token."""
    decode: FlopsBreakdown
    """Per generated token, averaged over the generation (context grows each step)."""


def inference_flops(model: ModelSpec, method: Method, work: Workload) -> InferenceFlops:
    """Prefill over the prompt (logits for the last position only, as ``generate`` asks) and the
    average decode step: the prompt's prefill yields the first token, and decode step i (1 to
    gen_len - 1) attends over prompt_len + i keys, prompt_len + gen_len / 2 on average."""
    flow = model_flow(model, method, False)[1]
    prefill_layer = _layer_terms(model, flow, work.prompt_len, work.prompt_len, False, False)
    prefill_terms = [t.scaled(model.num_layers / work.prompt_len) for t in prefill_layer.values()]
    prefill_terms.append(FlopTerm(Part.HEAD, _head_flops(model, 1) / work.prompt_len))
    mean_context = work.prompt_len + work.gen_len / 2.0
    decode_layer = _layer_terms(model, flow, 1, 1, False, False)
    decode_terms = []
    for part, term in decode_layer.items():
        scale = mean_context if part is Part.SCORES else 1.0
        decode_terms.append(term.scaled(model.num_layers * scale))
    decode_terms.append(FlopTerm(Part.HEAD, _head_flops(model, 1)))
    return InferenceFlops(FlopsBreakdown(tuple(prefill_terms), work.prompt_len),
                          FlopsBreakdown(tuple(decode_terms), 1))
