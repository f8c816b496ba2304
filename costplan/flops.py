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
6. MoE layers run the router on every token and ``experts_per_token`` routed experts per token,
   and their shared experts (DeepSeek) on every token.
7. Attention scores cost ``2·q·k·heads·qk_head_dim`` for ``QKᵀ`` and ``2·q·k·heads·v_head_dim``
   for ``AV`` (MLA's query/key heads are wider than its value heads); SDPA's backward is three
   ``QKᵀ``-sized and two ``AV``-sized matmuls (``torch.utils.flop_counter.sdpa_backward_flop_count``).
8. Sliding-window layers: ``FlopCounterMode`` sizes SDPA from its q, k, v shapes, and a window
   is only a mask, so training and prefill are counted over every key, like the causal mask
   (the speed model executes the window only). On a decode step the cache holds just the window,
   so a query there reads ``min(context, window)`` keys.
9. Q/K norms, softcaps and embedding scales are elementwise: no FLOPs. MLA as transformers runs
   it re-expands the cached latent through ``kv_b`` for every key on every decode step.
10. Encoder-decoder (T5): the encoder runs over the source, the decoder over the target with
   cross-attention over the source; FLOPs are per target token. Generation runs the encoder
   once, computes the cross-attention keys and values at the first decoder step and reuses them.
"""

from __future__ import annotations

from dataclasses import field

from costplan.gradflow import LayerFlow, merged_elements, model_flows
from costplan.methods import Method
from costplan.model import ModelSpec
from costplan.record import record
from costplan.terms import Part
from costplan.workload import Workload


@record
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


@record
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


_PART = {"router": Part.ROUTER, "gate": Part.MLP, "up": Part.MLP, "gate_up": Part.MLP, "down": Part.MLP}


def _part(role: str) -> Part:
    return _PART.get(role.removeprefix("expert_").removeprefix("shared_"), Part.ATTENTION_PROJECTIONS)


@record
class Span:
    """What one layer runs over, for one sequence."""

    queries: float
    """Positions the layer's matrices run on."""
    keys: float
    """Keys each query of the self-attention reads."""
    memory: float = 0.0
    """T5 decoder blocks: encoder positions the cross-attention reads."""
    memory_projected: bool = True
    """The cross-attention's keys and values are projected (False on cached decode steps)."""
    latent_rows: float | None = None
    """MLA: positions whose latent ``kv_b`` expands (every cached key on a decode step)."""

    def rows(self, role: str) -> float:
        if role in ("cross_k", "cross_v"):
            return self.memory if self.memory_projected else 0.0
        if role == "kv_b" and self.latent_rows is not None:
            return self.latent_rows
        return self.queries


def _scores(model: ModelSpec, queries: float, keys: float, rg: tuple[bool, bool, bool], eager: bool,
            training: bool) -> FlopTerm:
    """``QKᵀ`` and ``AV`` of one attention, forward and backward (see 3 and 7 above)."""
    qk = 2.0 * queries * keys * model.num_heads * model.qk_head_dim
    av = 2.0 * queries * keys * model.num_heads * model.v_head_dim
    q_rg, k_rg, v_rg = rg
    if not training or not any(rg):
        backward = 0.0
    elif not eager:
        backward = 3 * qk + 2 * av
    else:
        p_rg = q_rg or k_rg
        backward = qk * (q_rg + k_rg) + av * (p_rg + v_rg)
    return FlopTerm(Part.SCORES, qk + av, backward)


def _layer_terms(model: ModelSpec, flow: LayerFlow, span: Span, eager: bool, training: bool) -> dict[Part, FlopTerm]:
    """One layer's FLOPs over ``span``."""
    terms: dict[Part, FlopTerm] = {}

    def add(term: FlopTerm) -> None:
        terms[term.part] = terms[term.part] + term if term.part in terms else term

    for role, u in flow.linears.items():
        lin, rows = u.linear, span.rows(role)
        if rows == 0:
            continue
        per_token = 2.0 * lin.in_features * lin.out_features * lin.active
        add(_matmul(_part(role), rows * per_token, training and u.input_rg, training and u.trainable))
        if u.adapter is not None:
            r = u.adapter.rank
            a = 2.0 * rows * lin.in_features * r * lin.active
            b = 2.0 * rows * r * lin.out_features * lin.active
            add(FlopTerm(Part.ADAPTERS, a + b, (a if u.input_rg else 0.0) + b, a + b))
    add(_scores(model, span.queries, span.keys, (flow.q_rg, flow.k_rg, flow.v_rg), eager, training))
    if flow.kind.cross_attention:
        add(_scores(model, span.queries, span.memory, (flow.cross_q_rg, flow.cross_k_rg, flow.cross_v_rg), eager,
                    training))
    return terms


def _not_recomputed(model: ModelSpec, flow: LayerFlow, positions: float) -> dict[Part, float]:
    """Forward FLOPs at the end of a layer that non-reentrant checkpointing does not redo: the last
    matmul, when nothing saves its output for backward (a pre-norm layer without dropout)."""
    routed_last = "router" in flow.linears and "shared_down" not in flow.linears
    if model.dropout > 0 or model.norm_placement not in ("pre", "shared") or routed_last:
        return {}  # a later op saves a tensor (routing product, dropout mask, post-norm input)
    down = flow.linears["shared_down" if "shared_down" in flow.linears else "down"]
    if down.adapter is None:
        return {Part.MLP: 2.0 * positions * down.linear.in_features * down.linear.out_features}
    return {Part.ADAPTERS: 2.0 * positions * down.adapter.rank * down.linear.out_features}


def _head_flops(model: ModelSpec, positions: float) -> float:
    per_position = 2.0 * model.hidden_size * model.vocab_size
    if model.mlm_head:
        per_position += 2.0 * model.hidden_size**2
    return positions * per_position


def training_flops(model: ModelSpec, method: Method, work: Workload) -> FlopsBreakdown:
    """FLOPs of one sequence's forward + backward (+ recompute), per data token (per target token
    for an encoder-decoder)."""
    positions = work.seq_len + method.virtual_tokens
    keys = positions + method.prefix_tokens
    source = work.source_len or 0
    eager = work.attention == "eager"
    layer: dict[Part, FlopTerm] = {}
    skipped: dict[Part, float] = {}
    for flow, count in model_flows(model, method, work.grad_ckpt):
        if model.is_encoder_decoder and not flow.kind.cross_attention:  # T5's encoder, over the source
            span = Span(source, source)
        else:
            span = Span(positions, keys, memory=source)
        for part, term in _layer_terms(model, flow, span, eager, True).items():
            term = term.scaled(count)
            layer[part] = layer[part] + term if part in layer else term
        if work.grad_ckpt and method.base_storage == "compute":
            # Non-reentrant checkpointing skips a layer's last matmul when nothing saves its output; a
            # quantized base is checkpointed re-entrantly (peft's k-bit preparation), which re-runs it.
            for part, flops in _not_recomputed(model, flow, span.queries).items():
                skipped[part] = skipped.get(part, 0.0) + count * flops
    if work.grad_ckpt:
        layer = {n: FlopTerm(n, t.forward, t.backward_input, t.backward_weight, t.forward - skipped.get(n, 0.0))
                 for n, t in layer.items()}
    head = _head_flops(model, positions * method.predicted_fraction)
    # The LM head's input is the last layer's output, which requires a gradient here always.
    head_term = FlopTerm(Part.HEAD, head, head, head if method.trains_head else 0.0)
    outer = _outer_adapter_flops(model, method, positions * method.predicted_fraction, positions)
    merged = _merged_adapter_flops(model, method, work)
    for extra in (outer, merged):
        if extra is not None:
            layer[Part.ADAPTERS] = layer[Part.ADAPTERS] + extra if Part.ADAPTERS in layer else extra
    terms = tuple(t.scaled(1.0 / work.seq_len) for t in (*layer.values(), head_term))
    return FlopsBreakdown(terms, work.seq_len)


def _merged_adapter_flops(model: ModelSpec, method: Method, work: Workload) -> FlopTerm | None:
    """LoRA through peft's ``target_parameters`` (gpt-oss's expert tensors), per sequence of a micro-batch:
    each forward merges ``W + s·BA`` into the full expert stack with one batched matmul, twice (torch's
    parametrization evaluates it once more on registering it, peft registers it at every forward), and
    backward takes both factors' gradients from the merged weight's with two more. The matmuls then run
    on the merged weight, whose gradient they compute as a trained weight's (``LayerFlow``)."""
    merge = 2.0 * getattr(method, "rank", 0) * merged_elements(model, method)
    if not merge:
        return None
    per_sequence = merge / work.micro_batch
    return FlopTerm(Part.ADAPTERS, 2 * per_sequence, 0.0, 2 * per_sequence, 2 * per_sequence if work.grad_ckpt else 0.0)


def _outer_adapter_flops(model: ModelSpec, method: Method, head_rows: float, rows: float) -> FlopTerm | None:
    """LoRA on the LM head (A: hidden x r, B: r x vocab; its input needs dX anyway) and on the token
    embedding (A looked up, no FLOPs; B: r x hidden, whose dX A's gradient needs)."""
    head_rank, embed_rank = getattr(method, "head_rank", 0), getattr(method, "embedding_rank", 0)
    if not (head_rank or embed_rank):
        return None
    h, v = model.hidden_size, model.vocab_size
    a, b = 2.0 * head_rows * h * head_rank, 2.0 * head_rows * head_rank * v
    e = 2.0 * rows * embed_rank * h
    # Forward; dX of A and B and of the embedding's B; dW of every A and B.
    return FlopTerm(Part.ADAPTERS, a + b + e, a + b + e, a + b + e)


@record
class InferenceFlops:
    """Forward FLOPs of one request: the prompt's prefill and each decode step."""

    prefill: FlopsBreakdown
    """Per prompt token (encoder-decoder: per source token, the encoder and the first decoder step)."""
    decode: FlopsBreakdown
    """Per generated token, averaged over the generation (context grows each step)."""


def mean_keys(start: int, steps: int, window: int | None) -> float:
    """Mean over decode steps i = 1 .. ``steps`` of the keys a query reads: ``start + i``, at most
    ``window``."""
    if steps <= 0:
        return float(start)
    if window is None or start + steps <= window:
        return start + (steps + 1) / 2.0
    full = max(0, window - start)  # steps before the window is full
    grown = full * start + full * (full + 1) / 2.0
    return (grown + (steps - full) * window) / steps


def inference_flops(model: ModelSpec, method: Method, work: Workload) -> InferenceFlops:
    """Prefill over the prompt (logits for the last position only, as ``generate`` asks) and the
    average decode step: the prompt's prefill yields the first token, and decode step i (1 to
    gen_len - 1) attends over prompt_len + i keys, prompt_len + gen_len / 2 on average (at most a
    sliding window). An encoder-decoder's prefill is its encoder over the prompt (the source) and
    the first decoder step; its decode step i attends over 1 + i keys and the whole source."""
    flows = model_flows(model, method, False)
    p, steps = work.prompt_len, work.gen_len - 1
    prefill: dict[Part, FlopTerm] = {}
    decode: dict[Part, FlopTerm] = {}

    def gather(into: dict[Part, FlopTerm], terms: dict[Part, FlopTerm], count: int) -> None:
        for part, term in terms.items():
            term = term.scaled(count)
            into[part] = into[part] + term if part in into else term

    for flow, count in flows:
        kind = flow.kind
        if model.is_encoder_decoder:
            if not kind.cross_attention:
                gather(prefill, _layer_terms(model, flow, Span(p, p), False, False), count)
                continue
            gather(prefill, _layer_terms(model, flow, Span(1, 1, memory=p), False, False), count)
            keys = mean_keys(1, steps, None)
            step = Span(1, keys, memory=p, memory_projected=False)
        else:
            gather(prefill, _layer_terms(model, flow, Span(p, p), False, False), count)
            keys = mean_keys(p, steps, kind.window)
            step = Span(1, keys, latent_rows=keys if model.mla else None)
        gather(decode, _layer_terms(model, flow, step, False, False), count)
    prefill_terms = [t.scaled(1.0 / p) for t in prefill.values()]
    prefill_terms.append(FlopTerm(Part.HEAD, _head_flops(model, 1) / p))
    decode_terms = [*decode.values(), FlopTerm(Part.HEAD, _head_flops(model, 1))]
    return InferenceFlops(FlopsBreakdown(tuple(prefill_terms), p), FlopsBreakdown(tuple(decode_terms), 1))
