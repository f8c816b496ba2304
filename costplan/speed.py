"""How long one micro-batch takes on one GPU: the FLOPs and bytes of a step, priced kernel by kind.

MFU is not one constant: it follows from what a step runs. Per micro-batch, on one GPU:

1. Every matrix multiply (base matrices, LoRA adapters, the LM head; forward, dX, dW and the
   checkpointing recompute) is a roofline: ``2·m·k·n`` FLOPs at the GPU's dense peak times its
   achievable GEMM fraction, against ``bytes(m·k + k·n + m·n)`` at its memory bandwidth; the two
   overlap, so the kernel takes a smooth maximum of both. Wide matmuls run near the GEMM fraction;
   rank-16 adapters and small models are memory-bound.
2. Fused attention runs at its own fraction of the 16-bit peak (FlashAttention-2 reaches less of
   the peak than a GEMM, and on Hopper much less); a causal mask skips half of the score FLOPs
   that the FLOPs convention counts. Eager attention streams its ``heads·s²`` scores.
3. Elementwise kernels (norms, activation functions, residual adds, rotary embeddings, dropout,
   casts) move a number of bytes per token and layer proportional to the hidden and MLP widths.
4. QLoRA dequantizes each 4-bit matrix into the compute dtype before every use.
5. The optimizer step streams every trainable parameter's weight, gradient and states once.
6. The host issues one kernel at a time: in eager PyTorch each operator costs a few microseconds
   of dispatch, so a step takes at least ``operators x dispatch`` (this is what makes small models
   and batch-1 decoding slow); GPU time and host time overlap (smooth maximum).

The constants (GEMM and attention fractions per GPU, bandwidth fraction, elementwise bytes,
dispatch time) are in ``tables/efficiency.csv`` with their sources or the fit that set them; a
calibration profile replaces them with measured values. Every function takes numbers or numpy
arrays (see ``xp``).
"""

from __future__ import annotations

from typing import Any

from costplan import xp
from costplan.flops import FlopsBreakdown
from costplan.gradflow import merged_elements, model_flows
from costplan.methods import Method
from costplan.model import ModelSpec, layer_kinds
from costplan.record import record
from costplan.terms import Part
from costplan.workload import Workload

GEMM_SHARPNESS = 3.0
"""Overlap of a kernel's compute and memory traffic (smooth maximum exponent)."""
HOST_SHARPNESS = 4.0
"""Overlap of GPU time and host dispatch time."""
OPS_PER_LAYER = 42
"""Operators one transformer layer's forward dispatches in eager PyTorch (Hugging Face Llama
decoder layer: two RMSNorms of six ops, four projections, rotary embedding, SDPA, views and
transposes, the gated MLP, two residual adds); a backward dispatches about as many again."""
FUSED_OPS_PER_LAYER = 12
"""Kernels one layer's forward launches when compiled (torch.compile/Inductor fuses the elementwise
operators between the matmuls; CUDA graphs replay them) or in a C++ engine with fused kernels."""
OPS_PER_ADAPTER = 6
"""peft LoRA forward: dropout (or identity), cast, A, B, scaling, add."""
OPS_HEAD = 12
"""Final norm, LM head, loss (upcast, log-softmax, NLL) and their backward."""
LOSS_BYTES_PER_LOGIT = 40
FUSED_LOSS_BYTES_PER_LOGIT = 10
"""A fused (or chunked) cross-entropy reads the logits once and writes their gradient once."""
"""Bytes moved per position and vocabulary entry by the causal-LM loss and its backward in eager
PyTorch (transformers' ``ForCausalLMLoss``): the 16-bit logits upcast to fp32 (2 + 4), log-softmax
(4 + 4), NLL, log-softmax backward (about 16), the cast of the gradient back (4 + 2) and its read by
the LM head's backward (2). For a 32K vocabulary that is 1.3 MB per token: it caps small models."""


@record
class Gemm:
    """Matrix multiplies of one shape in one micro-batch of one sequence."""

    rows_per_token: float
    """Input rows per data token (1; ``top-k / experts`` for each expert's matrix)."""
    k: int
    n: int
    calls: float
    """How many such matmuls a sequence runs: layers x copies x passes (forward, dX, dW, recompute)."""
    column: bool
    """Tensor parallelism splits its output (column-parallel) rather than its input (row-parallel)."""
    low_precision: bool
    """Runs at the workload's matmul precision (fp8 under fp8); adapters and the head stay 16-bit."""


@record
class StepShape:
    """What one sequence's training step (or forward pass) runs, independent of the GPU."""

    gemms: tuple[Gemm, ...]
    attention_flops: float
    """Score FLOPs per sequence as counted (causal mask not discounted)."""
    attention_fraction: float
    """Share of the counted score FLOPs a fused kernel executes: about half under a causal mask,
    less within a sliding window, all of an encoder's or a cross-attention's."""
    eager_scores_bytes: float
    """Eager attention: bytes of ``heads·s²`` scores moved per sequence (0 for fused attention)."""
    elementwise_hidden: float
    """Token-layers x hidden width x passes: times ``Constants.elementwise_hidden`` gives bytes."""
    elementwise_ffn: float
    """Token-layers x MLP width x passes: times ``Constants.elementwise_ffn`` gives bytes."""
    loss_bytes: float
    """Bytes the loss over the vocabulary moves per sequence."""
    dequant_bytes: float
    """QLoRA: bytes the dequantization of every 4-bit matrix moves per micro-batch (any batch size)."""
    operators: float
    """Operators dispatched per micro-batch."""
    optimizer_bytes: float
    """Bytes the optimizer step moves per replica, before ZeRO sharding (0 for inference)."""
    bytes_per_element: int
    """Activation and weight bytes of the 16-bit (or fp32) compute."""
    model_flops: float
    """FLOPs per sequence without recompute (what MFU counts)."""
    hardware_flops: float
    """FLOPs per sequence with recompute (what the GPU executes; HFU)."""
    tokens: int
    """Data tokens per sequence."""
    layers: int
    virtual_stages: int | None = None
    """Virtual pipeline stages per GPU (``Workload.virtual_stages``; None: about two layers each)."""


@record
class Constants:
    """The speed model's constants: defaults from ``tables/efficiency.csv`` or a calibration."""

    bandwidth_efficiency: float
    """Achieved fraction of the datasheet memory bandwidth by streaming kernels."""
    elementwise_hidden: float
    """Elementwise bytes per token and layer per hidden unit in a training step (forward and
    backward) at 2-byte activations."""
    elementwise_ffn: float
    """The same per MLP unit (per routed expert)."""
    dispatch_seconds: float
    """Host time per dispatched operator."""


_COLUMN = frozenset({"q", "k", "v", "qkv", "gate", "up", "gate_up", "router", "q_a", "q_b", "kv_a", "kv_b",
                     "cross_q", "cross_k", "cross_v", "expert_gate", "expert_up", "expert_gate_up", "shared_gate",
                     "shared_up", "shared_gate_up"})


def executed_fraction(queries: float, keys: float, causal: bool, window: int | None) -> float:
    """Share of ``queries x keys`` scores a fused kernel computes: the causal half (as 0.5, the
    convention of the efficiency tables), the band of a sliding window, or all of them."""
    if not causal:
        return 1.0
    if window is None or window >= keys:
        return 0.5
    if queries <= window:
        return 0.5
    band = window * (window + 1) / 2.0 + (queries - window) * window
    return min(0.5, band / (queries * keys))


def step_shape(model: ModelSpec, method: Method, work: Workload, flops: FlopsBreakdown, *,
               training: bool = True, positions: int | None = None, optimizer_bytes: float = 0.0,
               fused_loss: bool = False, fused_ops: bool = False) -> StepShape:
    """The shape of one sequence's training step, or (``training=False``) of one forward pass over
    ``positions`` tokens (prefill; decode is priced apart). An encoder-decoder's encoder runs over
    the source (``source_len``, or the prompt in a prefill), its decoder over the target (one
    token in a prefill)."""
    ckpt = work.grad_ckpt and training
    positions = positions or (work.seq_len + method.virtual_tokens)
    tokens = work.seq_len if training else positions
    source = (work.source_len or 0) if training else positions
    decoder_positions = positions if training or not model.is_encoder_decoder else 1
    recompute = 1.0 if ckpt else 0.0
    low = work.precision == "fp8"
    gemms: list[Gemm] = []
    adapters = 0.0
    scores = executed = 0.0
    for flow, layers in model_flows(model, method, ckpt):
        kind = flow.kind
        encoder = model.is_encoder_decoder and not kind.cross_attention
        own = source if encoder else decoder_positions
        size = layers * own * own
        scores += size
        executed += size * executed_fraction(own, own, kind.causal, kind.window)
        if kind.cross_attention:
            scores += layers * own * source
            executed += layers * own * source
        for role, u in flow.linears.items():
            lin = u.linear
            read = source if role in ("cross_k", "cross_v") else own
            rows = read / tokens * (lin.active / lin.copies if lin.copies > 1 else 1.0)
            column = role in _COLUMN
            if training:
                passes = 1.0 + u.input_rg + u.trainable + recompute
            else:
                passes = 1.0
            gemms.append(Gemm(rows, lin.in_features, lin.out_features, layers * lin.copies * passes, column, low))
            if u.adapter is not None:
                adapters += layers * lin.copies
                r = u.adapter.rank
                # A: forward, dW, dX when the input needs it; B: forward, dW and dX (A's output needs it).
                a_passes = 1.0 + (1.0 + u.input_rg + recompute if training else 0.0)
                b_passes = 1.0 + (2.0 + recompute if training else 0.0)
                gemms.append(Gemm(rows, lin.in_features, r, layers * lin.copies * a_passes, column, False))
                gemms.append(Gemm(rows, r, lin.out_features, layers * lin.copies * b_passes, column, False))
    if training:
        head_rows, head_passes = positions / tokens * method.predicted_fraction, 2.0 + method.trains_head
    else:
        head_rows, head_passes = 1.0 / positions, 1.0  # generate keeps the last position's logits only
    gemms.append(Gemm(head_rows, model.hidden_size, model.vocab_size, head_passes, True, False))
    attention = flops.by_part().get(Part.SCORES, 0.0) * tokens
    p = work.compute_bytes
    passes = (1.0 + recompute / 3.0) if training else 1.0 / 3.0  # forward is a third of a step's traffic
    eager = 0.0
    if work.attention == "eager":
        key_scores = scores if not method.prefix_tokens else scores * (positions + method.prefix_tokens) / positions
        # Scores written and read by softmax, probabilities written and read by AV: forward and backward.
        eager = model.num_heads * key_scores * (p + 4) * 2 * passes * 3
    # Elementwise traffic per token-layer: every layer's positions (an encoder's over the source).
    token_layers = sum(layers * (source if model.is_encoder_decoder and not flow.kind.cross_attention
                                 else decoder_positions)
                       for flow, layers in model_flows(model, method, ckpt)) * passes * p / 2.0
    mlp_width = max(_mlp_width(kind.linears) for kind in layer_kinds(model))
    per_logit = FUSED_LOSS_BYTES_PER_LOGIT if fused_loss else LOSS_BYTES_PER_LOGIT
    loss = positions * method.predicted_fraction * model.vocab_size * per_logit if training else 0.0
    dequant = 0.0
    if method.base_storage in ("nf4", "int8"):
        from costplan.memory import bnb_layer_matrices

        uses = (2.0 + recompute) if training else 1.0  # forward and dX (and the recompute)
        stored = 0.5 if method.base_storage == "nf4" else 1.0
        dequant = bnb_layer_matrices(model, method) * (stored + p) * uses
    merged = merged_elements(model, method)
    if training and merged:
        # peft's target_parameters: each forward (and recompute) reads W and writes the merged W + s·BA twice;
        # backward writes the merged weight's gradient and reads it for both factors' gradients.
        dequant += merged * p * (4.0 * (1.0 + recompute) + 3.0)
    op_passes = (2.0 + recompute) if training else 1.0
    operators = (sum(kind.count * _ops_per_layer(kind, fused_ops) for kind in layer_kinds(model)) + OPS_HEAD) \
        * op_passes
    operators += adapters * OPS_PER_ADAPTER * op_passes
    hardware = flops.per_token * tokens
    return StepShape(
        gemms=_merged(gemms), attention_flops=attention, attention_fraction=executed / scores if scores else 0.5,
        eager_scores_bytes=eager, elementwise_hidden=token_layers * model.hidden_size,
        elementwise_ffn=token_layers * mlp_width,
        loss_bytes=loss, dequant_bytes=dequant, operators=operators, optimizer_bytes=optimizer_bytes,
        bytes_per_element=p,
        model_flops=hardware - flops.recompute * tokens, hardware_flops=hardware, tokens=tokens,
        layers=model.num_layers, virtual_stages=work.virtual_stages)


def _merged(gemms: list[Gemm]) -> tuple[Gemm, ...]:
    """Matmuls of the same geometry as one with their calls summed (a Llama layer's q and o, gate and
    up, and every layer's adapters share shapes): the same seconds in fewer terms."""
    calls: dict[tuple, float] = {}
    for g in gemms:
        key = (g.rows_per_token, g.k, g.n, g.column, g.low_precision)
        calls[key] = calls.get(key, 0.0) + g.calls
    return tuple(Gemm(rows, k, n, c, column, low) for (rows, k, n, column, low), c in calls.items())


def _mlp_width(linears: tuple) -> float:
    """MLP units a token passes through in one layer: the dense width, or top-k experts plus the
    shared ones."""
    return sum(lin.in_features * lin.active for lin in linears if lin.role.endswith("down"))


def _ops_per_layer(kind: object, fused: bool = False) -> int:
    """Operators one layer dispatches: a Llama-style layer (fewer under fused kernels), MoE routing
    and a shared MLP on top, a cross-attention block for T5's decoder."""
    linears = kind.linears  # type: ignore[attr-defined]
    ops = FUSED_OPS_PER_LAYER if fused else OPS_PER_LAYER
    roles = {lin.role for lin in linears}
    if "router" in roles:
        ops += 12 + (8 if "shared_down" in roles else 0)
    if "cross_q" in roles:
        ops += 16
    if "kv_a" in roles:
        ops += 10
    return ops


def micro_batch_seconds(shape: StepShape, *, sequences: Any, tp: Any, peak: Any, peak_16bit: Any, bandwidth: Any,
                        gemm_efficiency: Any, attention_efficiency: Any, constants: Constants,
                        pp: Any = 1) -> Any:
    """Seconds of one micro-batch of ``sequences`` on one GPU of a ``tp``-way tensor-parallel group
    (and one of ``pp`` pipeline stages). Every argument but ``shape`` and ``constants`` may be an array."""
    p = shape.bytes_per_element
    stream = bandwidth * constants.bandwidth_efficiency
    tokens = sequences * shape.tokens
    gemm = 0.0
    for g in shape.gemms:
        rows = tokens * g.rows_per_token
        flops = 2.0 * rows * g.k * g.n / tp
        rate = (peak if g.low_precision else peak_16bit) * gemm_efficiency
        inputs = rows * g.k * (1.0 if g.column else 1.0 / tp)
        outputs = rows * g.n * (1.0 / tp if g.column else 1.0)
        moved = p * (inputs + g.k * g.n / tp + outputs)
        gemm = gemm + g.calls * xp.soft_max(flops / rate, moved / stream, GEMM_SHARPNESS)
    executed = shape.attention_flops * shape.attention_fraction
    attention = sequences * executed / tp / (peak_16bit * attention_efficiency)
    attention = xp.maximum(attention, sequences * shape.eager_scores_bytes / tp / stream)
    elementwise = sequences * (constants.elementwise_hidden * shape.elementwise_hidden
                               + constants.elementwise_ffn * shape.elementwise_ffn + shape.loss_bytes) / tp / stream
    dequant = shape.dequant_bytes / tp / stream
    device = (gemm + attention + elementwise + dequant) / pp
    host = shape.operators / pp * constants.dispatch_seconds
    return xp.soft_max(device, host, HOST_SHARPNESS)


def optimizer_seconds(shape: StepShape, *, shards: Any, bandwidth: Any, constants: Constants) -> Any:
    """The optimizer step: every local trainable parameter's weight, gradient and states streamed once."""
    return shape.optimizer_bytes / shards / (bandwidth * constants.bandwidth_efficiency)


@record
class DecodeShape:
    """What one decode step reads and runs, independent of the GPU and the batch."""

    weight_bytes: float
    """Weights every step reads whatever the batch (attention, norms, LM head, router; for a dense
    model every matrix)."""
    expert_bytes: float
    """One expert's matrices in every layer (MoE; 0 for dense)."""
    experts: int
    experts_per_token: int
    kv_bytes_per_sequence: float
    """Mean KV cache read per decode step per sequence (prompt + half the generation)."""
    flops_per_token: float
    operators: float
    """Operators dispatched per decode step."""
    layers: int
    hidden_size: int
    bytes_per_element: int
    matrix_elements: float = 0.0
    """Weights of the layers' matrices every step reads, routed experts apart: those a weight-only
    format stores quantized."""
    expert_elements: float = 0.0
    """Weights of one routed expert's matrices over the layers (``expert_bytes`` as stored)."""


def decode_shape(model: ModelSpec, method: Method, work: Workload, flops_per_token: float,
                 fused: bool = False) -> DecodeShape:
    """One decode step: every weight but the untied input embedding, a vision tower and the routed
    experts, the experts the batch's tokens hit, and the KV cache (which a sliding window caps, and MLA
    keeps compressed; transformers re-expands MLA's latent through ``kv_b`` at every step, which the
    FLOPs count). ``fused``: kernels as a compiled or C++ engine launches them (fewer per layer)."""
    from costplan.memory import base_weight_bytes, experts_only, kv_cache_bytes, matrix_bytes_per_param, matrix_params

    p = work.compute_bytes
    total = base_weight_bytes(model, method, p)
    per = matrix_bytes_per_param(method, p)  # the matrices as stored (a weight-only format quantizes them)
    unread = model.vocab_size * model.hidden_size * p if not model.tied_embeddings else 0.0  # the input embedding
    unread += model.vision.params * p if model.vision else 0.0  # a vision tower is not read on text
    # One routed expert's matrices in every MoE layer; a dense layer (DeepSeek's first ones) has
    # none, and shared experts are read like any dense weight.
    expert_elements = sum(kind.count * sum(lin.weight_elements for lin in kind.linears if lin.copies > 1)
                          for kind in layer_kinds(model))
    encoders = [kind for kind in layer_kinds(model) if not kind.causal]
    encoder_matrices = matrix_params(model, encoders)
    encoder = sum(kind.count * kind.params for kind in encoders) * p - encoder_matrices * (p - per)
    if model.is_encoder_decoder:  # the cache holds the target so far and the source's cross keys and values
        kv = kv_cache_bytes(model, 1 + work.gen_len // 2, 1, p, memory_tokens=work.prompt_len)
    else:  # prompt and half the generation on average (at most a sliding window)
        kv = kv_cache_bytes(model, work.prompt_len + work.gen_len // 2, 1, p)
    return DecodeShape(
        weight_bytes=total - unread - expert_elements * per * model.num_experts - encoder,
        expert_bytes=expert_elements * per, expert_elements=expert_elements,
        experts=model.num_experts, experts_per_token=model.experts_per_token,
        kv_bytes_per_sequence=kv, flops_per_token=flops_per_token,
        operators=sum(kind.count * _ops_per_layer(kind, fused) for kind in layer_kinds(model) if kind.causal)
        + OPS_HEAD,
        layers=model.decoder_layers, hidden_size=model.hidden_size, bytes_per_element=p,
        matrix_elements=0.0 if experts_only(model, method) else
        matrix_params(model) - expert_elements * model.num_experts - encoder_matrices)
