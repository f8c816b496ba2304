"""Bytes each training step keeps alive for backward, itemised tensor by tensor.

Rules follow what PyTorch autograd saves for the Hugging Face implementations (and peft's
adapters): a matmul keeps its input only when its weight trains; an elementwise product keeps
each factor only when the other needs a gradient; RMSNorm keeps an fp32 copy of its input;
SDPA keeps q, k, v, its output and the fp32 log-sum-exp, but never the ``heads · s²`` scores
that eager attention keeps (softmax output in fp32 and its cast copy). peft casts an adapter's
input to the adapter's fp32 dtype, and lora_A keeps that copy. Dropout keeps a one-byte mask.

Everything here is per sequence (micro-batch 1); callers multiply by the micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from costplan.gradflow import LayerFlow, LinearUse, input_requires_grad, model_flow
from costplan.methods import Method
from costplan.model import ModelSpec
from costplan.workload import Workload

FP32 = 4
MASK = 1
ADAPTER_BYTES = 4  # peft keeps adapters in fp32 and casts their input to it


@dataclass(frozen=True, slots=True)
class SavedItem:
    """Bytes one layer keeps for one tensor (or group of tensors) of one sequence."""

    name: str
    """For display."""
    bytes: float
    in_mlp: bool
    """Kept by the MLP block (router and experts included), whose backward runs before attention's."""


@dataclass(frozen=True, slots=True)
class SavedTensors:
    """Saved-for-backward bytes of one sequence."""

    first_layer: float
    later_layer: float
    """Each layer after the first (all are alike)."""
    layer_input: float
    """One layer's input, which is all a checkpointed layer keeps..."""
    escaping_checkpoint: float
    """...except what bitsandbytes' 4-bit matmuls keep: they hold their input on the autograd
    context object rather than through ``save_for_backward``, so non-reentrant checkpointing
    cannot drop it."""
    head_side: float
    """The final norm's and the LM head's saved inputs: freed first in backward."""
    shared: float
    """Kept through the whole backward: embedding dropout masks, RoPE tables, expanded prefixes."""
    items: tuple[SavedItem, ...]
    """A later layer's terms."""

    @property
    def later_layer_mlp(self) -> float:
        """The part of a later layer that its MLP keeps (freed before attention's backward)."""
        return sum(item.bytes for item in self.items if item.in_mlp)

    def total(self, num_layers: int, grad_ckpt: bool) -> float:
        """Bytes kept at the end of the forward. Checkpointed layers keep only their input;
        backward then re-runs one layer at a time (see ``later_layer``)."""
        return self.layers(num_layers, grad_ckpt) + self.head_side + self.shared

    def layers(self, num_layers: int, grad_ckpt: bool) -> float:
        if grad_ckpt:
            return num_layers * (self.layer_input + self.escaping_checkpoint)
        return self.first_layer + (num_layers - 1) * self.later_layer


def _norm(model: ModelSpec, p: int, input_rg: bool, weight_trains: bool) -> float:
    """Saved bytes per position of one RMSNorm or LayerNorm."""
    h = model.hidden_size
    if not (input_rg or weight_trains):
        return 0.0
    if model.norm == "rmsnorm":
        # x.float() (kept by pow and mul), rsqrt of the variance, and the normalised x that
        # the weight multiply keeps when the weight trains.
        return FP32 * h + FP32 + (p * h if weight_trains else 0.0)
    return p * h + 2 * FP32  # native_layer_norm keeps its input, mean and rstd


def _reader_inputs(uses: list[LinearUse], p: int, lora_dropout: float) -> tuple[float, float]:
    """Bytes kept for the matrices that read one input tensor (q/k/v, gate/up, o, down).

    The input is kept once when any base matmul keeps it (its weight trains, or it is a
    bitsandbytes 4-bit matmul, which keeps its input whenever it needs dX). Each adapter keeps the fp32 copy of it
    that peft makes (the input itself when it is already fp32, or its dropout output and mask
    when LoRA dropout is on) and the rank-wide output of its A matrix.
    Returns (bytes of the shared input, bytes only the adapters keep).
    """
    width = uses[0].linear.in_features
    adapters = [u for u in uses if u.adapter is not None]
    shares_input = p == ADAPTER_BYTES and lora_dropout == 0
    kept_input = any(u.keeps_input for u in uses) or (shares_input and bool(adapters))
    shared = p * width * uses[0].linear.active if kept_input else 0.0
    total = 0.0
    for u in adapters:
        active = u.linear.active
        if not shares_input:
            total += ADAPTER_BYTES * width * active
        if lora_dropout > 0:
            total += MASK * width * active
        total += ADAPTER_BYTES * u.adapter.rank * active
        if u.adapter.magnitude:  # DoRA keeps the base output (p bytes) and the adapter output (fp32)
            total += (p + ADAPTER_BYTES) * u.linear.out_features * active
    return shared, total


def _activation(model: ModelSpec, p: int, f: int, x_rg: bool) -> float:
    """Bytes the activation function keeps for width ``f`` when its input requires a gradient."""
    if not x_rg:
        return 0.0
    # gelu_new is written in Python ops: it keeps x, tanh(...), 0.5·x and 1 + tanh(...).
    return (4 if model.activation == "gelu_new" else 1) * p * f


def _quantized_inputs(model: ModelSpec, flow: LayerFlow, p: int) -> float:
    """Bytes per position the layer's 4-bit matmuls keep on their autograd context."""
    lin = flow.linears
    groups = [[lin["qkv"]] if "qkv" in lin else [lin["q"], lin["k"], lin["v"]], [lin["o"]],
              [lin[r] for r in ("router", "gate", "up") if r in lin], [lin["down"]]]
    return sum(p * g[-1].linear.in_features * g[-1].linear.active
               for g in groups if any(u.quantized and u.input_rg for u in g))


def _attention_inputs(model: ModelSpec, method: Method, work: Workload, flow: LayerFlow, p: int,
                      key_ratio: float) -> float:
    """Bytes of q, k and v that attention keeps, per position (``key_ratio`` = keys / queries)."""
    if not flow.attention_rg:
        return 0.0
    q, kv = model.q_size, model.kv_size
    if model.fused_qkv and model.learned_positions:
        # GPT-2: q, k, v are views of the fused projection's output, which stays alive whole;
        # the KV cache that training builds (use_cache, off under checkpointing) re-allocates
        # k and v by concatenation, and attention keeps those copies.
        return p * (q + 2 * kv) + (0.0 if work.grad_ckpt else p * 2 * kv)
    # With an attention mask (prefix tuning) or eager attention, k and v are repeated to every
    # query head (GQA); unmasked SDPA takes them as they are.
    repeated = q if (work.attention == "eager" or method.prefix_tokens) else kv
    if work.attention == "flash":
        return p * (q + 2 * repeated * key_ratio)
    # Eager: QKᵀ keeps q when k needs a gradient and k when q does; AV keeps v when the scores do.
    scores_rg = flow.q_rg or flow.k_rg
    return p * (q * flow.k_rg + repeated * key_ratio * (flow.q_rg + scores_rg))


def _eager_scores(model: ModelSpec, p: int, scores_rg: bool, v_rg: bool) -> float:
    """Bytes eager attention keeps per score (per head, query and key).

    Softmax keeps its output (fp32 when the implementation upcasts, as Llama's does); AV keeps
    its input probabilities, the same tensor unless cast or dropped out; attention dropout keeps
    a one-byte mask.
    """
    softmax = FP32 if model.softmax_fp32 else p
    kept = softmax if scores_rg else 0.0
    if model.attention_dropout > 0:
        kept += (MASK if scores_rg else 0.0) + (p if v_rg else 0.0)
    elif v_rg and (softmax != p or not scores_rg):
        kept += p
    return kept


def layer_saved(model: ModelSpec, method: Method, work: Workload, flow: LayerFlow,
                positions: int, keys: int) -> list[SavedItem]:
    """Saved bytes of one layer for one sequence, by term."""
    p, h, f = work.compute_bytes, model.hidden_size, model.ffn_size
    trains = method.trains_base
    lora_dropout = getattr(method, "dropout", 0.0)
    lin = flow.linears
    items: list[SavedItem] = []
    in_mlp = False

    def add(name: str, per_position: float) -> None:
        if per_position:
            items.append(SavedItem(name, per_position * positions, in_mlp))

    attn_in_rg = flow.stream_in_rg or trains
    add("attention norm", _norm(model, p, attn_in_rg, trains))
    readers = [lin["qkv"]] if "qkv" in lin else [lin["q"], lin["k"], lin["v"]]
    add("qkv inputs", sum(_reader_inputs(readers, p, lora_dropout)))
    # Attention core.
    q = model.q_size
    o_shared, o_adapters = _reader_inputs([lin["o"]], p, lora_dropout)
    add("attention q/k/v", _attention_inputs(model, method, work, flow, p, keys / positions))
    scores_rg = flow.q_rg or flow.k_rg
    if work.attention == "flash":
        # SDPA keeps q, k, v, the fp32 log-sum-exp and its output; the output is laid out
        # (batch, seq, heads, dim), so the o projection reads (and keeps) that same tensor.
        if flow.attention_rg:
            add("attention lse", FP32 * model.num_heads)
            if method.prefix_tokens:
                # The padding mask over prefix + sequence, made additive (p bytes) for the
                # memory-efficient kernel in each layer, which keeps it for backward.
                add("attention mask", p * keys)
        if flow.attention_rg or o_shared:
            add("attention output", p * q)
    else:
        add("attention scores (s²)", model.num_heads * keys * _eager_scores(model, p, scores_rg, flow.v_rg))
        add("attention output", o_shared)  # the output, transposed into a new tensor for o
    add("o adapter input", o_adapters)
    if model.dropout > 0:  # residual dropouts keep a one-byte mask where their input needs dX
        add("dropout masks", MASK * h * (lin["o"].output_rg + lin["down"].output_rg))
    mlp_in_rg = flow.stream_in_rg or trains or (model.family != "gpt_neox" and lin["o"].output_rg)
    in_mlp = True
    add("mlp norm", _norm(model, p, mlp_in_rg, trains))
    if model.is_moe:
        add("router", sum(_reader_inputs([lin["router"]], p, lora_dropout)) + FP32 * model.num_experts)
    mlp_readers = [lin[r] for r in ("gate", "up") if r in lin]
    if not model.is_moe:  # experts read gathered copies of their tokens (see "expert routing")
        add("mlp inputs", sum(_reader_inputs(mlp_readers, p, lora_dropout)))
    k = model.experts_per_token
    if "gate" in lin:
        g, u = lin["gate"], lin["up"]
        act = _activation(model, p, f, g.output_rg)
        product = (p * f if u.output_rg else 0.0) + (p * f if g.output_rg else 0.0)
        add("mlp activations", k * (act + product))
    else:
        add("mlp activations", k * _activation(model, p, f, lin["up"].output_rg))
    add("mlp down input", sum(_reader_inputs([lin["down"]], p, lora_dropout)))
    if model.is_moe:
        # Grouped-matmul experts (tokens sorted by expert): the gathered copy of each routed
        # token's hidden state when the experts train, each expert output (kept by the product
        # with its routing weight), and the routing bookkeeping: top-k indices, the sort
        # permutation and its token index (int64), the selected and normalised weights (fp32).
        gathered = p * h if any(lin[r].trainable for r in ("gate", "up")) else 0.0
        add("expert routing", k * (gathered + p * h) + 32 * k + FP32)
    if model.mlm_head:
        add("post-norms", 0.0)  # BERT's post-norm LayerNorms are counted as the layer's norms
    return items


def saved_tensors(model: ModelSpec, method: Method, work: Workload) -> SavedTensors:
    first, later = model_flow(model, method, work.grad_ckpt)
    positions = work.seq_len + method.virtual_tokens
    keys = positions + method.prefix_tokens
    p, h = work.compute_bytes, model.hidden_size
    first_items = layer_saved(model, method, work, first, positions, keys)
    later_items = layer_saved(model, method, work, later, positions, keys)
    trains = method.trains_base
    # The head: the final norm and the LM head's input (kept for its dW); BERT's MLM head is a
    # dense layer, GELU and LayerNorm before the decoder.
    head_side = _norm(model, p, True, trains) + (p * h if method.trains_head else 0.0)
    if model.mlm_head:
        head_side += (p * h if trains else 0.0) + p * h
    head_side *= positions * method.predicted_fraction  # sparse MLM prediction gathers the masked positions
    embeddings_rg = input_requires_grad(method, work.grad_ckpt)
    shared = 0.0
    if method.trains_embeddings:  # embedding backward keeps the indices it gathered (int64)
        shared += 8 * positions * (1 + ((model.learned_positions + (model.token_types > 0)) if trains else 0))
    if model.mlm_head:  # BERT normalises its embeddings (post-norm)
        shared += _norm(model, p, embeddings_rg, trains) * positions
    if model.dropout > 0 and embeddings_rg:
        shared += MASK * h * positions  # embedding dropout
    if not model.learned_positions:
        shared += 2 * p * model.head_dim * positions  # RoPE cos/sin, shared by all layers
    if method.prefix_tokens:
        shared += FP32 * method.prefix_tokens * model.num_layers * 2 * model.kv_size  # prefix expanded
    return SavedTensors(
        first_layer=sum(item.bytes for item in first_items),
        later_layer=sum(item.bytes for item in later_items),
        layer_input=p * h * positions,
        escaping_checkpoint=_quantized_inputs(model, later, p) * positions,
        head_side=head_side,
        shared=shared,
        items=tuple(later_items),
    )


@dataclass(frozen=True, slots=True)
class LogitsBytes:
    """Logits memory of one sequence in a training step (HF causal-LM loss in fp32)."""

    kept: float
    """After the forward: the fp32 log-softmax the loss keeps for backward."""
    backward_peak: float
    """The largest of three moments at the top of backward (see ``logits_bytes``)."""


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
    positions = (work.seq_len + method.virtual_tokens) * method.predicted_fraction * model.vocab_size
    p = work.compute_bytes
    loss = FP32 if model.causal else p  # BERT's masked-LM loss runs in the compute dtype
    moment_a = 3 * loss * positions
    moment_b = (loss + p) * positions if p != loss else 0.0
    head_grad = p * model.vocab_size * model.hidden_size if method.trains_head else 0.0
    moment_c = p * positions + head_grad
    return LogitsBytes(kept=loss * positions, backward_peak=max(moment_a, moment_b, moment_c))


def eager_attention_backward(model: ModelSpec, method: Method, work: Workload) -> float:
    """Extra bytes at eager attention's softmax backward, for one sequence: the probabilities'
    gradient (upcast to fp32 where the softmax was) and the scores' gradient, less the cast
    probabilities AV kept, which its backward has freed. 0 for fused attention."""
    if work.attention != "eager":
        return 0.0
    p = work.compute_bytes
    positions = work.seq_len + method.virtual_tokens
    scores = model.num_heads * positions * (positions + method.prefix_tokens)
    if model.softmax_fp32 and p != FP32:
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
    width = (3 if model.gated_mlp else 2) * model.ffn_size * model.experts_per_token
    return work.compute_bytes * positions * (model.hidden_size + width)
