"""Model architectures: the spec, its exact parameter inventory, presets and HF config.json files.

The inventory (``layer_kinds`` and friends) lists every weight matrix with its shape, layer by
kind of layer, so the parameter count, LoRA adapter sizes, quantized storage and Adafactor state
all come from one itemisation. It is checked against the real modules built on PyTorch's meta
device in the tests.

Layers are not all alike: DeepSeek-V3's first layers have a dense MLP and the rest routed
experts, Gemma 2 and 3 alternate sliding-window and global attention, and T5's decoder blocks add
cross-attention to what its encoder blocks hold. ``layer_sequence`` gives each layer's kind in
the order the layers run; ``layer_kinds`` the distinct kinds with their counts.
"""

from __future__ import annotations

import math
import re
from dataclasses import field, replace
from functools import cache
from pathlib import Path
from typing import Literal

from costplan.errors import CostplanError, shown, unknown_name
from costplan.record import record
from costplan.tables import keys, read_json, row_by_name

Norm = Literal["rmsnorm", "layernorm"]
Activation = Literal["silu", "gelu", "gelu_tanh", "gelu_new", "relu", "relu2", "swiglu_clamped"]
"""``swiglu_clamped``: gpt-oss's gate, on interleaved gate/up columns: ``(clamp(up, ±7) + 1) · g ·
sigmoid(1.702 g)`` with ``g = clamp(gate, max=7)``."""
NormPlacement = Literal["pre", "post", "sandwich", "reordered", "shared"]
QkNorm = Literal["none", "head", "full"]


@record
class VisionTower:
    """A multimodal checkpoint's image encoder and projector: loaded and held with the language model,
    never run by text-only training or generation (no FLOPs, activations, gradients or optimizer
    states; the Trainer's optimizer skips parameters without a gradient)."""

    kind: str
    params: int
    linears: tuple[tuple[str, int, int, int], ...]
    """Its ``nn.Linear`` layers as (module name, in features, out features, count): peft matches LoRA
    targets against these names as against the language model's."""

    @property
    def linear_weights(self) -> int:
        """Weights of its ``nn.Linear`` layers: bitsandbytes' 4- and 8-bit loading quantizes them as it
        does the language model's (transformers converts every ``nn.Linear`` but the LM head)."""
        return sum(i * o * count for _, i, o, count in self.linears)

    def describe(self) -> str:
        return (f"vision tower: {self.params / 1e6:,.0f} M parameters ({self.kind}, with its projector) loaded "
                "with the model and held in memory; text-only data never runs it")


def siglip_tower(config: dict, text_hidden: int) -> VisionTower:
    """Gemma 3's SigLIP encoder and projector (transformers' ``SiglipVisionTransformer``: a biased patch
    convolution, learned positions, pre-norm layers of biased q/k/v/o and fc1/fc2 with LayerNorms, a
    post-LayerNorm, the attention-pooling head when ``vision_use_head``; ``Gemma3MultiModalProjector``:
    an RMSNorm and a vision x text projection matrix held as a parameter)."""
    h, i, layers = _int(config, "hidden_size"), _int(config, "intermediate_size"), _int(config, "num_hidden_layers")
    patch, image, channels = _int(config, "patch_size"), _int(config, "image_size"), _int(config, "num_channels", 3)
    linears = [("q_proj", h, h, layers), ("k_proj", h, h, layers), ("v_proj", h, h, layers),
               ("out_proj", h, h, layers), ("fc1", h, i, layers), ("fc2", i, h, layers)]
    params = channels * patch * patch * h + h + (image // patch) ** 2 * h
    params += layers * (4 * (h * h + h) + 4 * h + h * i + i + i * h + h) + 2 * h
    if config.get("vision_use_head", True):  # probe, nn.MultiheadAttention (in_proj is a bare parameter), LN, MLP
        params += h + 3 * h * h + 3 * h + h * h + h + 2 * h + h * i + i + i * h + h
        linears += [("out_proj", h, h, 1), ("fc1", h, i, 1), ("fc2", i, h, 1)]
    params += h + h * text_hidden
    return VisionTower("SigLIP", params, tuple(linears))


def pixtral_tower(config: dict, text_hidden: int, merge: int, feature_layers: int, bias: bool) -> VisionTower:
    """Mistral 3's Pixtral encoder and projector (transformers' ``PixtralVisionModel``: an unbiased
    patch convolution, RMSNorms, unbiased q/k/v/o and gated gate/up/down per layer, rotary positions
    without parameters; ``Mistral3MultiModalProjector``: an RMSNorm, the patch merger's
    ``merge² x hidden -> hidden`` matrix, then two text-width linears)."""
    h, i, layers = _int(config, "hidden_size"), _int(config, "intermediate_size"), _int(config, "num_hidden_layers")
    patch, channels = _int(config, "patch_size"), _int(config, "num_channels", 3)
    linears = (*((name, h, h, layers) for name in ("q_proj", "k_proj", "v_proj", "o_proj")),
               ("gate_proj", h, i, layers), ("up_proj", h, i, layers), ("down_proj", i, h, layers),
               ("merging_layer", merge * merge * h, h, 1), ("linear_1", feature_layers * h, text_hidden, 1),
               ("linear_2", text_hidden, text_hidden, 1))
    params = channels * patch * patch * h + h + layers * 2 * h + h + (2 * text_hidden if bias else 0)
    params += sum(i_ * o * count for _, i_, o, count in linears)
    return VisionTower("Pixtral", params, linears)


def qwen_vl_tower(config: dict, text_hidden: int) -> VisionTower:
    """Qwen2.5-VL's vision transformer and patch merger (transformers' ``Qwen2_5_VisionTransformerPretrainedModel``:
    an unbiased 3-D patch convolution over ``temporal_patch_size`` frames, RMSNorms, a biased fused qkv and
    proj, a biased gated gate/up/down per block, rotary positions without parameters; the merger: an
    RMSNorm, then ``merge² x hidden`` wide biased linears to ``out_hidden_size``)."""
    h, i, depth = _int(config, "hidden_size"), _int(config, "intermediate_size"), _int(config, "depth")
    patch, frames = _int(config, "patch_size"), _int(config, "temporal_patch_size", 2)
    channels = _int(config, "in_channels", 3)  # older files' in_chans is not a field transformers reads
    merged = h * _int(config, "spatial_merge_size", 2) ** 2
    out = _int(config, "out_hidden_size", text_hidden)
    linears = (("qkv", h, 3 * h, depth), ("proj", h, h, depth), ("gate_proj", h, i, depth), ("up_proj", h, i, depth),
               ("down_proj", i, h, depth), ("mlp.0", merged, merged, 1), ("mlp.2", merged, out, 1))
    params = channels * frames * patch * patch * h + depth * (2 * h + 3 * h + h + 2 * i + h) + h + merged + out
    params += sum(i_ * o * count for _, i_, o, count in linears)
    return VisionTower("Qwen2.5-VL ViT", params, linears)


@record(kw_only=True)
class MLA:
    """DeepSeek's multi-head latent attention: low-rank queries and a compressed key/value latent.

    Queries are ``q_b(norm(q_a(x)))`` (or one ``q_proj`` without ``q_lora_rank``); keys and values
    come from one latent: ``kv_a`` projects to ``kv_lora_rank + qk_rope_head_dim``, the first part
    is normalised and expanded by ``kv_b`` into every head's ``qk_nope_head_dim`` key part and
    ``v_head_dim`` value, the second part is one rotary key shared by all heads.
    """

    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    def __post_init__(self) -> None:
        for name in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"MLA {name} must be a positive integer, got {value!r}")
        if self.q_lora_rank is not None and (not isinstance(self.q_lora_rank, int) or self.q_lora_rank <= 0):
            raise ValueError(f"MLA q_lora_rank must be a positive integer or absent, got {self.q_lora_rank!r}")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def latent(self) -> int:
        """Elements per token and layer that the KV cache holds: the latent and the rotary key."""
        return self.kv_lora_rank + self.qk_rope_head_dim

SIZE_LIMITS: dict[str, tuple[int, str]] = {
    "hidden_size": (1_000_000, "the widest published models are under 30,000 wide"),
    "num_layers": (10_000, "the deepest published language models have under 200 layers"),
    "num_heads": (100_000, "published models have at most a few hundred query heads"),
    "num_kv_heads": (100_000, "published models have at most a few hundred key/value heads"),
    "head_dim": (65_536, "published heads are 64 to 256 wide"),
    "ffn_size": (10_000_000, "published MLPs are under 100,000 wide"),
    "vocab_size": (10_000_000, "the largest published vocabularies hold about 256,000 tokens"),
    "max_positions": (100_000_000, "the longest published context windows are about 10M tokens"),
    "num_experts": (10_000, "published mixtures have at most a few hundred experts"),
    "experts_per_token": (10_000, "published mixtures route each token to at most a few dozen experts"),
}
"""Sane ranges for architecture numbers, with the reason, so a typo such as 1e200 is refused with
its field's name instead of overflowing a formula later. Wide enough for any real model."""
MAX_PARAMS = 10**15
"""The largest model, in parameters, that costplan plans (its practice tables stop there)."""


@record(kw_only=True)
class ModelSpec:
    """A transformer's architecture numbers; every field as in the Hugging Face config."""

    name: str
    """Display name, e.g. ``llama-2-7b``."""
    family: str
    """Architecture family (``llama``, ``qwen3``, ``deepseek_v3``, ``t5`` ...); it fixes the traits
    below when read from a config. Rules read the traits, never the family."""
    hidden_size: int
    num_layers: int
    """Transformer blocks, all stacks together (T5: encoder + decoder blocks)."""
    num_heads: int
    """Query heads."""
    num_kv_heads: int
    """Key/value heads (GQA when fewer than ``num_heads``; MHA when equal)."""
    head_dim: int
    """Width of a head (MLA: of the rotary part, as transformers sets it)."""
    ffn_size: int
    """Intermediate size of the MLP (of each routed expert for MoE)."""
    vocab_size: int
    max_positions: int
    num_experts: int = 1
    """Routed experts per MoE layer; 1 for a dense MLP."""
    experts_per_token: int = 1
    """Top-k routed experts each token is sent to."""
    shared_experts: int = 0
    """DeepSeek's always-on experts: one gated MLP of ``shared_experts x ffn_size`` beside the routed ones."""
    dense_layers: int = 0
    """MoE models whose first layers keep a dense MLP (DeepSeek's ``first_k_dense_replace``)."""
    dense_ffn_size: int = 0
    """Width of those dense MLPs (``intermediate_size``); 0 when there are none."""
    router_bias: bool = False
    """The router's linear layer has a bias (gpt-oss)."""
    expert_tensors: bool = False
    """Routed experts are held as 3-D tensors, not ``nn.Linear`` layers (gpt-oss since its release):
    bitsandbytes' 4- and 8-bit loading leaves them in the compute dtype (peft's k-bit preparation
    then upcasts them to fp32 with the other unquantized parameters)."""
    router_topk_first: bool = False
    """The router takes the top-k raw logits, then a softmax over those k in the compute dtype
    (gpt-oss); otherwise an fp32 softmax over all experts comes first (Mixtral, Qwen3-MoE)."""
    grouped_router: bool = False
    """DeepSeek-V3's router: a float32 weight reading an fp32 copy of its input, sigmoid scores,
    and top-k chosen among the best ``expert_groups_used`` of ``expert_groups`` expert groups."""
    expert_groups: int = 1
    expert_groups_used: int = 1
    tied_embeddings: bool = False
    gated_mlp: bool = True
    """SwiGLU/GeGLU-style gate and up projections (3 matrices) versus a plain 2-matrix MLP."""
    fused_gate_up: bool = False
    """Gate and up projections stored as one ``gate_up_proj`` matrix (Phi-3)."""
    activation: Activation = "silu"
    norm: Norm = "rmsnorm"
    norm_placement: NormPlacement = "pre"
    """``pre``: a norm before each block (Llama); ``post``: after each residual add (BERT; its
    embeddings are normalised and there is no final norm); ``sandwich``: before and after each
    block (Gemma 2/3: four norms per layer); ``reordered``: after each block, before its residual
    add, none before (OLMo 2); ``shared``: one norm whose output both blocks read, in parallel (Phi-1/1.5/2)."""
    norm_scales_fp32: bool = False
    """RMSNorm multiplies by its weight in fp32 and casts afterwards (Gemma's ``1 + w``, OLMo 2), so
    it keeps the fp32 normalised input for the weight's gradient."""
    norm_unit_offset: bool = False
    """Gemma's RMSNorm scales by ``1 + w`` (its weight starts at zero), an fp32 vector it keeps."""
    norm_rescales_input: bool = False
    """T5's RMSNorm multiplies its 16-bit input (not an fp32 copy) by the fp32 rsqrt, so it keeps
    that input as well."""
    qk_norm: QkNorm = "none"
    """RMSNorm on queries and keys after their projections: ``head`` over each head's width
    (Qwen3, Gemma 3), ``full`` over all heads at once (OLMo 2)."""
    parallel_residual: bool = False
    """Attention and MLP both read the layer input and add to it (GPT-NeoX)."""
    attention_sinks: bool = False
    """gpt-oss: one learned logit per query head joins each softmax (a per-layer vector of
    ``num_heads`` parameters) and takes a share of the probability mass."""
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    fused_qkv: bool = False
    """One ``qkv`` matrix (GPT-2 ``c_attn``, GPT-NeoX ``query_key_value``, Phi-3 ``qkv_proj``) instead of three."""
    learned_positions: bool = False
    cache_in_training: bool = False
    """transformers' GPT-2 builds its KV cache in training too (unless checkpointing turns
    ``use_cache`` off), re-allocating keys and values by concatenation."""
    rotary_by_concat: bool = False
    """The rotary embedding turns a slice of each head and concatenates the rest back (Phi-3,
    GPT-NeoX's partial rotary): the queries come out head-major, and so does FlashAttention's
    output, which is then copied into the token-major layout the o projection reads."""
    rotary_fp32: bool = False
    """The rotary embedding's cos/sin tables stay in fp32 (OLMo 2)."""
    rotary_local_base: bool = False
    rotary_per_layer_fp32: bool = False
    """ERNIE 4.5: each layer interleaves its own fp32 copies of the cos/sin tables and rotates q and k
    in fp32; the rotation's multiplies keep those per-layer tables (not the shared ones)."""
    rotary_fraction: float = 1.0
    """The share of each head's width the rotary embedding turns (GPT-NeoX's ``rotary_pct``, Phi's
    ``partial_rotary_factor``): it sets the width of the cos/sin tables; it holds no weight."""
    embedding_dropout: bool = True
    """With ``dropout``, the embeddings' output is dropped out too (GPT-2, BERT); Phi's ``embd_pdrop``
    is its own rate, 0 in the released models."""
    """Sliding-window layers rotate with their own RoPE base: two cos/sin tables (Gemma 3)."""
    token_types: int = 0
    """BERT's segment embeddings."""
    embedding_scale: bool = False
    """Embeddings multiplied by sqrt(hidden) (Gemma); with tied embeddings the LM head is unscaled."""
    causal: bool = True
    """Decoder (text generation) versus encoder (BERT)."""
    mlm_head: bool = False
    head_bias: bool = False
    """The LM head adds a bias (Phi-1/1.5/2)."""
    """BERT's masked-LM head: dense + LayerNorm transform and a decoder bias."""
    attn_softcap: float | None = None
    """Gemma 2: scores become ``cap · tanh(scores / cap)`` before the softmax."""
    final_softcap: float | None = None
    """Gemma 2: the logits become ``cap · tanh(logits / cap)``."""
    sliding_window: int | None = None
    """Keys a query of a sliding-window layer sees (itself included); None: every layer is global."""
    sliding_window_pattern: int = 0
    """With a window: every this-many-th layer attends globally and the others within the window
    (Gemma 2: 2, Gemma 3: 6); 0: every layer uses the window (Phi-3)."""
    mla: MLA | None = None
    """DeepSeek's multi-head latent attention, in place of q/k/v projections."""
    encoder_layers: int = 0
    """Encoder-decoder models (T5): the first this-many blocks are the encoder's (bidirectional
    self-attention), the other ``num_layers - encoder_layers`` the decoder's (causal self-attention,
    then cross-attention over the encoder's output)."""
    relative_attention_buckets: int = 0
    """T5's relative position bias: a ``buckets x heads`` table in the first block of each stack."""
    dropout: float = 0.0
    """Hidden/residual dropout probability used in training."""
    inner_dropout: bool = False
    """T5 also drops out the MLP's activation and each stack's normalised output."""
    loss_upcast: bool = True
    """The loss upcasts the logits to fp32 (transformers' causal-LM loss); BERT's masked-LM loss and
    T5's cross-entropy run in the compute dtype."""
    attention_dropout: float = 0.0
    softmax_fp32: bool = True
    """Eager attention upcasts its softmax to fp32 (Llama-style implementations do; GPT-2's and
    BERT's do not)."""
    shipped_weights: str = ""
    """The weight-only format the published checkpoint ships in (gpt-oss: ``mxfp4``, its experts),
    which inference assumes unless ``--weights`` says otherwise; empty: 16-bit."""
    vision: VisionTower | None = None
    """A multimodal checkpoint's image encoder, loaded with the model but not run on text."""
    params_published: int | None = field(default=None, compare=False)
    """The parameter count published for the real model, when known (for checking)."""

    def __post_init__(self) -> None:
        for name, (high, why) in SIZE_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"model {self.name}: {name} must be a positive integer, got {shown(value)}")
            if value > high:
                raise ValueError(f"model {self.name}: {name} {_big(value)} is above {high:,}, the most costplan plans "
                                 f"({why})")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model {self.name}: num_heads ({self.num_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if self.experts_per_token > self.num_experts:
            raise ValueError(f"model {self.name}: experts_per_token exceeds num_experts")
        if self.is_moe and not self.gated_mlp:
            raise ValueError(f"model {self.name}: mixture-of-experts layers are modelled with gated MLPs only")
        if isinstance(self.rotary_fraction, bool) or not isinstance(self.rotary_fraction, (int, float)) \
                or not 0 < self.rotary_fraction <= 1:
            raise ValueError(f"model {self.name}: the rotary fraction must be in (0, 1], "
                             f"got {shown(self.rotary_fraction)}")
        if isinstance(self.token_types, bool) or not isinstance(self.token_types, int) \
                or not 0 <= self.token_types <= 1024:
            raise ValueError(f"model {self.name}: token_types must be an integer from 0 to 1024, "
                             f"got {shown(self.token_types)}")
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"model {self.name}: {name} must be a probability in [0, 1), got {shown(value)}")
        if self.expert_groups <= 0 or self.num_experts % self.expert_groups or not (
                0 < self.expert_groups_used <= self.expert_groups):
            raise ValueError(f"model {self.name}: expert_groups must divide num_experts and expert_groups_used "
                             "be between 1 and expert_groups")
        for name in ("shared_experts", "dense_layers", "dense_ffn_size", "encoder_layers",
                     "relative_attention_buckets", "sliding_window_pattern", "token_types"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"model {self.name}: {name} must be a non-negative integer, got {value!r}")
        if (self.shared_experts or self.dense_layers) and not self.is_moe:
            raise ValueError(f"model {self.name}: shared experts and dense layers need routed experts")
        if self.dense_layers >= self.num_layers:
            raise ValueError(f"model {self.name}: dense_layers ({self.dense_layers}) must leave some MoE layers")
        if self.dense_layers and not self.dense_ffn_size:
            raise ValueError(f"model {self.name}: dense_layers need dense_ffn_size")
        if self.encoder_layers >= self.num_layers:
            raise ValueError(f"model {self.name}: encoder_layers must leave some decoder layers")
        window = self.sliding_window
        if window is not None and (not isinstance(window, int) or window <= 0):
            raise ValueError(f"model {self.name}: sliding_window must be a positive integer, got {window!r}")

        params = count_params(self).total
        if params > MAX_PARAMS:
            raise ValueError(f"model {self.name}: {params:.3g} parameters are above {MAX_PARAMS:.0e}, the most "
                             "costplan plans (the largest published models have about 2 trillion)")

    @property
    def qk_head_dim(self) -> int:
        """Width of a query (and key) head: MLA's no-rope and rope parts together."""
        return self.mla.qk_head_dim if self.mla else self.head_dim

    @property
    def v_head_dim(self) -> int:
        return self.mla.v_head_dim if self.mla else self.head_dim

    @property
    def q_size(self) -> int:
        return self.num_heads * self.qk_head_dim

    @property
    def kv_size(self) -> int:
        """Width of the keys (and of the values) the attention's heads read, before any GQA repeat."""
        return self.num_kv_heads * self.head_dim if self.mla is None else self.num_heads * self.qk_head_dim

    @property
    def attention_out_size(self) -> int:
        """Width of the attention output that the ``o`` projection reads."""
        return self.num_heads * self.v_head_dim

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def is_encoder_decoder(self) -> bool:
        return self.encoder_layers > 0

    @property
    def decoder_layers(self) -> int:
        """Blocks that run at generation time and hold a KV cache."""
        return self.num_layers - self.encoder_layers

    def check_positions(self, positions: int) -> None:
        """Refuse a sequence longer than the model's context; an encoder-decoder (T5: relative
        positions) has no hard limit on it."""
        if positions > self.max_positions and not self.is_encoder_decoder:
            raise CostplanError(f"{positions} positions exceed {self.name}'s context of {self.max_positions} tokens.")

    @property
    def kv_cache_width(self) -> int:
        """Elements per token and layer the KV cache holds (keys and values; MLA's latent)."""
        return self.mla.latent if self.mla else 2 * self.num_kv_heads * self.head_dim

    @property
    def rotary(self) -> bool:
        """Positions enter through rotary embeddings (not learned positions or T5's relative bias)."""
        return not self.learned_positions and not self.relative_attention_buckets

    @property
    def post_norm(self) -> bool:
        return self.norm_placement == "post"

    @property
    def norms_per_layer(self) -> int:
        """Hidden-width norms of one decoder-only layer (T5's blocks are counted by ``layer_kinds``)."""
        return {"sandwich": 4, "shared": 1}.get(self.norm_placement, 2)


@record
class Linear:
    """One weight matrix of a layer (``copies`` of it for routed experts)."""

    role: str
    """Unique within a layer: ``q``, ``k``, ``v``, ``qkv`` (fused), ``o``; MLA's ``q_a``, ``q_b``,
    ``kv_a``, ``kv_b``; T5's ``cross_q`` ... ``cross_o``; ``gate``, ``up``, ``gate_up`` (fused),
    ``down``; ``router``; routed experts ``expert_gate``, ``expert_up``, ``expert_down``; shared
    experts ``shared_gate``, ``shared_up``, ``shared_down``."""
    in_features: int
    out_features: int
    bias: bool
    copies: int = 1
    """How many such matrices the layer holds (routed experts)."""
    active: int = 1
    """How many of the copies each token passes through (top-k)."""
    targets: tuple[str, ...] = ()
    """LoRA target names that put an adapter on it (``--lora-targets``); its role when empty. A
    fused ``qkv`` takes one when any of q, k, v is asked, as peft adapts the fused module."""
    fp32: bool = False
    """Stored in float32 whatever the compute dtype (DeepSeek-V3's router)."""
    module: bool = True
    """An ``nn.Linear`` layer, which LoRA can adapt; False for a tensor inside a custom module
    (gpt-oss's router and its experts, held as 3-D tensors)."""

    @property
    def params(self) -> int:
        return self.copies * (self.in_features * self.out_features + (self.out_features if self.bias else 0))

    @property
    def weight_elements(self) -> int:
        return self.in_features * self.out_features

    @property
    def target_names(self) -> tuple[str, ...]:
        return self.targets or (self.role,)


@record
class LayerKind:
    """Layers that are alike: the same matrices and the same attention span."""

    name: str
    """For display: ``layer``, ``dense``, ``moe``, ``sliding``, ``global``, ``encoder``, ``decoder``."""
    count: int
    linears: tuple[Linear, ...]
    """In forward order."""
    norms: tuple[int, ...]
    """Lengths of the layer's norm vectors (weights, and biases for LayerNorm): hidden-width norms,
    q/k norms, MLA's latent norms; and gpt-oss's attention sinks, a per-head vector held and
    trained as a norm's weight is."""
    window: int | None = None
    """Keys a query sees in its self-attention (sliding window); None: all earlier positions."""
    causal: bool = True
    cross_attention: bool = False
    """A decoder block of an encoder-decoder model: attends over the encoder's output too."""

    @property
    def moe(self) -> bool:
        return any(lin.copies > 1 for lin in self.linears)

    @property
    def norm_params(self) -> int:
        return sum(self.norms)

    @property
    def linear_params(self) -> int:
        return sum(lin.params for lin in self.linears)

    @property
    def params(self) -> int:
        return self.linear_params + self.norm_params

    def linear(self, role: str) -> Linear | None:
        return next((lin for lin in self.linears if lin.role == role), None)


def norm_params(model: ModelSpec) -> int:
    """Parameters of one hidden-width normalisation layer (weight, plus bias for LayerNorm)."""
    return model.hidden_size * (2 if model.norm == "layernorm" else 1)


def _attention(model: ModelSpec) -> list[Linear]:
    h = model.hidden_size
    mla = model.mla
    if mla is not None:
        q = ([Linear("q", h, model.q_size, False)] if mla.q_lora_rank is None else
             [Linear("q_a", h, mla.q_lora_rank, model.qkv_bias),
              Linear("q_b", mla.q_lora_rank, model.q_size, False, targets=("q_b", "q"))])
        return [*q,
                Linear("kv_a", h, mla.latent, model.qkv_bias),
                Linear("kv_b", mla.kv_lora_rank, model.num_heads * (mla.qk_nope_head_dim + mla.v_head_dim), False,
                       targets=("kv_b", "k", "v")),
                Linear("o", model.attention_out_size, h, model.out_bias)]
    if model.fused_qkv:
        qkv = [Linear("qkv", h, model.q_size + 2 * model.kv_size, model.qkv_bias, targets=("qkv", "q", "k", "v"))]
    else:
        qkv = [Linear("q", h, model.q_size, model.qkv_bias), Linear("k", h, model.kv_size, model.qkv_bias),
               Linear("v", h, model.kv_size, model.qkv_bias)]
    return [*qkv, Linear("o", model.q_size, h, model.out_bias)]


def _cross_attention(model: ModelSpec) -> list[Linear]:
    h = model.hidden_size
    return [Linear(f"cross_{role}", i, o, False, targets=(role,))
            for role, i, o in (("q", h, model.q_size), ("k", h, model.kv_size), ("v", h, model.kv_size),
                               ("o", model.q_size, h))]


def _mlp(model: ModelSpec, width: int, prefix: str = "", copies: int = 1, active: int = 1) -> list[Linear]:
    """A gated (gate, up, down), fused (gate_up, down) or plain (up, down) MLP; ``prefix`` names
    routed (``expert_``) or shared (``shared_``) experts, which LoRA targets as gate/up/down (routed
    experts held as 3-D tensors as ``experts``)."""
    h, bias = model.hidden_size, model.mlp_bias
    # Experts held as 3-D tensors answer to ``experts`` alone: peft's target_modules (all-linear too)
    # adapts nn.Linear layers only; its target_parameters reaches the tensors.
    tensors = prefix == "expert_" and model.expert_tensors

    def lin(role: str, i: int, o: int) -> Linear:
        return Linear(prefix + role, i, o, bias, copies, active,
                      targets=("experts",) if tensors else (role,) if prefix else (), module=not tensors)

    if model.fused_gate_up:
        first = [Linear(prefix + "gate_up", h, 2 * width, bias, copies, active,
                        targets=("experts",) if tensors else ("gate_up", "gate", "up"), module=not tensors)]
    elif model.gated_mlp:
        first = [lin("gate", h, width), lin("up", h, width)]
    else:
        first = [lin("up", h, width)]
    return [*first, lin("down", width, h)]


def _hidden_norms(model: ModelSpec, count: int) -> tuple[int, ...]:
    return (model.hidden_size,) * count * (2 if model.norm == "layernorm" else 1)


def _layer_norms(model: ModelSpec) -> tuple[int, ...]:
    """Norm vectors of one decoder-only layer: hidden-width norms, q/k norms, MLA's latent norms,
    attention sinks."""
    norms = _hidden_norms(model, model.norms_per_layer)
    if model.qk_norm == "head":
        norms += (model.head_dim, model.head_dim)
    elif model.qk_norm == "full":
        norms += (model.q_size, model.kv_size)
    if model.mla is not None:
        norms += (model.mla.q_lora_rank,) if model.mla.q_lora_rank else ()
        norms += (model.mla.kv_lora_rank,)
    if model.attention_sinks:
        norms += (model.num_heads,)
    return norms


@cache
def layer_kinds(model: ModelSpec) -> tuple[LayerKind, ...]:
    """The distinct kinds of layer with their counts; the first is the kind of layer 0."""
    return tuple(dict.fromkeys(layer_sequence(model)))


@cache
def layer_sequence(model: ModelSpec) -> tuple[LayerKind, ...]:
    """Every layer's kind, in the order the layers run (T5: encoder blocks, then decoder blocks)."""
    attention = _attention(model)
    norms = _layer_norms(model)
    if model.is_encoder_decoder:
        n_enc, n_dec = model.encoder_layers, model.decoder_layers
        mlp = _mlp(model, model.ffn_size)
        encoder = LayerKind("encoder", n_enc, tuple(attention + mlp), _hidden_norms(model, 2), causal=False)
        decoder = LayerKind("decoder", n_dec, tuple(attention + _cross_attention(model) + mlp),
                            _hidden_norms(model, 3), cross_attention=True)
        return (encoder,) * n_enc + (decoder,) * n_dec
    causal = model.causal
    every = model.sliding_window_pattern
    windowed = [model.sliding_window is not None and not (every and (i + 1) % every == 0)
                for i in range(model.num_layers)]  # False: global attention
    n_sliding = sum(windowed)
    if model.is_moe:
        e, k, h = model.num_experts, model.experts_per_token, model.hidden_size
        routed = [Linear("router", h, e, model.router_bias, fp32=model.grouped_router, module=not model.expert_tensors),
                  *_mlp(model, model.ffn_size, "expert_", e, k)]
        if model.shared_experts:
            routed += _mlp(model, model.shared_experts * model.ffn_size, "shared_")
        linears = tuple(attention + routed)
        if model.dense_layers:
            if n_sliding:
                raise ValueError(f"model {model.name}: dense layers with sliding-window attention are not modelled")
            moe = LayerKind("moe", model.num_layers - model.dense_layers, linears, norms)
            dense = LayerKind("dense", model.dense_layers, tuple(attention + _mlp(model, model.dense_ffn_size)), norms)
            return (dense,) * model.dense_layers + (moe,) * moe.count
    else:
        linears = tuple(attention + _mlp(model, model.ffn_size))
    if not n_sliding:
        return (LayerKind("layer", model.num_layers, linears, norms, causal=causal),) * model.num_layers
    sliding = LayerKind("sliding", n_sliding, linears, norms, window=model.sliding_window, causal=causal)
    if n_sliding == model.num_layers:
        return (sliding,) * model.num_layers
    full = LayerKind("global", model.num_layers - n_sliding, linears, norms, causal=causal)
    return tuple(sliding if is_sliding else full for is_sliding in windowed)


def layer_linears(model: ModelSpec) -> tuple[Linear, ...]:
    """Every distinct weight matrix of the layers (each kind's, in forward order; a role shared by
    two kinds with the same shape is listed once)."""
    return tuple(dict.fromkeys(lin for kind in layer_kinds(model) for lin in kind.linears))


@record
class ParamCounts:
    """The parameter inventory by part; ``total`` equals the real module's count."""

    embeddings: int
    """Token (and position, segment) embeddings, with BERT's embedding LayerNorm and T5's
    relative position tables."""
    layer_linear: int
    """All layers' weight matrices and their biases."""
    layer_norms: int
    final_norm: int
    head: int
    """Untied LM head, or BERT's MLM transform and decoder bias; 0 when tied."""
    inactive_experts: int = 0
    """Routed experts' parameters a token does not pass through (``experts - top-k`` per layer)."""
    vision: int = 0
    """A multimodal checkpoint's vision tower and projector (``VisionTower``), which text skips."""

    @property
    def total(self) -> int:
        return self.embeddings + self.layer_linear + self.layer_norms + self.final_norm + self.head + self.vision

    @property
    def active(self) -> int:
        """Parameters each text token passes through (embeddings and head included, as Mixtral's
        12.9B and DeepSeek-V3's 37B count them); equal to ``total`` for dense text models."""
        return self.total - self.inactive_experts - self.vision


def count_params(model: ModelSpec) -> ParamCounts:
    h, v = model.hidden_size, model.vocab_size
    embeddings = v * h
    if model.learned_positions:
        embeddings += model.max_positions * h
    embeddings += model.token_types * h
    if model.post_norm:  # BERT's LayerNorm sits on the embeddings
        embeddings += norm_params(model)
    stacks = 2 if model.is_encoder_decoder else 1
    embeddings += stacks * model.relative_attention_buckets * model.num_heads
    head = 0 if model.tied_embeddings else v * h
    head += v if model.head_bias else 0
    if model.mlm_head:
        head += h * h + h + norm_params(model) + v
    kinds = layer_kinds(model)
    inactive = sum(kind.count * sum((lin.copies - lin.active) * lin.params // lin.copies for lin in kind.linears)
                   for kind in kinds)
    return ParamCounts(
        embeddings=embeddings,
        layer_linear=sum(kind.count * kind.linear_params for kind in kinds),
        layer_norms=sum(kind.count * kind.norm_params for kind in kinds),
        final_norm=0 if model.post_norm else stacks * norm_params(model),
        head=head,
        inactive_experts=inactive,
        vision=model.vision.params if model.vision else 0,
    )


# --- presets -------------------------------------------------------------------------------

_LLAMA_LIKE: dict[str, object] = {}
_GEMMA2: dict[str, object] = {
    "activation": "gelu_tanh", "tied_embeddings": True, "embedding_scale": True, "norm_placement": "sandwich",
    "norm_scales_fp32": True, "norm_unit_offset": True, "attn_softcap": 50.0, "final_softcap": 30.0,
    "sliding_window": 4096, "sliding_window_pattern": 2,
}
_FAMILY_TRAITS: dict[str, dict[str, object]] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "mixtral": _LLAMA_LIKE,
    "qwen2": {"qkv_bias": True},
    "qwen3": {"qk_norm": "head"},
    "qwen3_moe": {"qk_norm": "head"},
    "phi3": {"fused_qkv": True, "fused_gate_up": True, "rotary_by_concat": True},
    "olmo2": {"norm_placement": "reordered", "norm_scales_fp32": True, "qk_norm": "full", "rotary_fp32": True},
    "gemma": {"activation": "gelu_tanh", "tied_embeddings": True, "embedding_scale": True, "norm_scales_fp32": True,
              "norm_unit_offset": True},
    "gemma2": _GEMMA2,
    "gemma3": {**_GEMMA2, "attn_softcap": None, "final_softcap": None, "qk_norm": "head", "sliding_window": 4096,
               "sliding_window_pattern": 6, "rotary_local_base": True},
    "deepseek_v3": {"grouped_router": True},
    # GLM-4.5/4.6 (glm4_moe): DeepSeek-V3's MoE (sigmoid router over groups, shared expert, first layers
    # dense) under grouped-query attention with biased q/k/v and RoPE on half of each head.
    "glm4_moe": {"grouped_router": True, "qkv_bias": True, "rotary_by_concat": True, "rotary_fraction": 0.5},
    # Llama's layers with their own config fields (transformers 5.24's modules): SmolLM3 leaves out
    # the rotary embedding in every fourth layer (no weight, no matmul); Granite scales the embeddings,
    # residual branches, scores and logits by constants; Seed-OSS biases q, k and v (not o) and drops
    # out both branches' outputs; ERNIE 4.5 biases every matrix or none (use_bias); Arcee's AFM has a
    # plain two-matrix MLP with ReLU squared; HunYuan normalises each query and key head after RoPE.
    "smollm3": {"tied_embeddings": True},
    "granite": _LLAMA_LIKE,
    "seed_oss": {"qkv_bias": True, "dropout": 0.1, "attention_dropout": 0.1, "embedding_dropout": False},
    "ernie4_5": {"tied_embeddings": True, "rotary_per_layer_fp32": True},
    "arcee": {"gated_mlp": False, "activation": "relu2"},
    "hunyuan_v1_dense": {"qk_norm": "head"},
    # StarCoder2: biased LayerNorms and matrices everywhere (use_bias), a plain c_fc/c_proj MLP with tanh
    # GELU, dropout on the embeddings and on both branches' outputs, a sliding window in every layer.
    "starcoder2": {"gated_mlp": False, "activation": "gelu_tanh", "norm": "layernorm", "qkv_bias": True,
                   "out_bias": True, "mlp_bias": True, "tied_embeddings": True},
    "gpt_oss": {"qkv_bias": True, "out_bias": True, "mlp_bias": True, "router_bias": True, "router_topk_first": True,
                "expert_tensors": True, "shipped_weights": "mxfp4",
                "attention_sinks": True, "rotary_by_concat": True,
                "fused_gate_up": True, "activation": "swiglu_clamped", "norm_scales_fp32": True, "softmax_fp32": False,
                "sliding_window": 128, "sliding_window_pattern": 2},
    "gpt2": {
        "gated_mlp": False, "activation": "gelu_new", "norm": "layernorm", "qkv_bias": True,
        "out_bias": True, "mlp_bias": True, "fused_qkv": True, "learned_positions": True, "cache_in_training": True,
        "tied_embeddings": True, "dropout": 0.1, "attention_dropout": 0.1, "softmax_fp32": False,
    },
    "phi": {
        "gated_mlp": False, "activation": "gelu_new", "norm": "layernorm", "qkv_bias": True, "out_bias": True,
        "mlp_bias": True, "parallel_residual": True, "norm_placement": "shared", "head_bias": True,
        "rotary_by_concat": True, "rotary_fraction": 0.5, "dropout": 0.1, "embedding_dropout": False,
    },
    "gpt_neox": {
        "gated_mlp": False, "activation": "gelu", "norm": "layernorm", "qkv_bias": True,
        "out_bias": True, "mlp_bias": True, "fused_qkv": True, "parallel_residual": True, "rotary_by_concat": True,
        "rotary_fraction": 0.25,
    },
    "bert": {
        "gated_mlp": False, "activation": "gelu", "norm": "layernorm", "qkv_bias": True,
        "out_bias": True, "mlp_bias": True, "learned_positions": True, "token_types": 2,
        "causal": False, "mlm_head": True, "tied_embeddings": True, "dropout": 0.1,
        "attention_dropout": 0.1, "softmax_fp32": False, "norm_placement": "post", "loss_upcast": False,
    },
    "t5": {
        "gated_mlp": False, "activation": "relu", "tied_embeddings": True, "relative_attention_buckets": 32,
        "norm_rescales_input": True, "inner_dropout": True, "loss_upcast": False,
        "dropout": 0.1, "attention_dropout": 0.1, "softmax_fp32": False,
    },
}

FAMILIES = tuple(_FAMILY_TRAITS)

_INT_COLUMNS = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "ffn_size",
                "vocab_size", "max_positions", "num_experts", "experts_per_token")


def model_spec(name: str, family: str, numbers: dict[str, int], **overrides: object) -> ModelSpec:
    """A model of ``family`` with its traits, the given shape (``ModelSpec`` field names) and overrides."""
    if family not in _FAMILY_TRAITS:
        raise unknown_name("architecture family", family, FAMILIES)
    traits = {**_FAMILY_TRAITS[family], **overrides}
    return ModelSpec(name=name, family=family, **numbers, **traits)  # type: ignore[arg-type]


def preset_names() -> list[str]:
    return keys("models")


_MLA_FIELDS = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")


def _extra(text: str, model: str) -> dict[str, object]:
    """The ``extra`` column of ``tables/models.csv``: ``field=value`` pairs, ``;``-separated, for
    the traits only some models have (sliding windows, shared experts, MLA ranks, T5's encoder)."""
    values: dict[str, object] = {}
    mla: dict[str, int | None] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        key, _, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if key in _MLA_FIELDS:
            mla[key] = None if raw == "none" else int(raw)
        elif key == "vision":
            values[key] = raw  # built in preset() once the text model's width is known
        elif key in ("attn_softcap", "final_softcap", "dropout", "attention_dropout", "rotary_fraction"):
            values[key] = None if raw == "none" else float(raw)
        elif key in ModelSpec.__dataclass_fields__:
            values[key] = int(raw) if raw.lstrip("-").isdigit() else {"true": True, "false": False}.get(raw, raw)
        else:
            raise CostplanError(f"tables/models.csv: {model} has an unknown extra field {key!r}.")
    if mla:
        values["mla"] = MLA(**mla)  # type: ignore[arg-type]
    return values


def _preset_tower(text: str, text_hidden: int, model: str) -> VisionTower:
    """The ``vision`` extra of ``tables/models.csv``: ``pixtral:hidden:intermediate:layers:patch:merge``
    (Mistral 3's tower and projector), ``siglip:hidden:intermediate:layers:patch:image`` (Gemma 3's,
    without the pooling head) or ``qwenvl:hidden:intermediate:depth:patch:merge`` (Qwen2.5-VL's, two
    frames per patch, its merger to the text width)."""
    kind, *numbers = text.split(":")
    try:
        h, i, layers, patch, last = (int(n) for n in numbers)
    except ValueError:
        raise CostplanError(f"tables/models.csv: {model}'s vision extra {text!r} is not kind:hidden:intermediate:"
                            "layers:patch:merge-or-image.") from None
    config = {"hidden_size": h, "intermediate_size": i, "num_hidden_layers": layers, "patch_size": patch}
    if kind == "pixtral":
        return pixtral_tower(config, text_hidden, last, 1, False)
    if kind == "siglip":
        return siglip_tower({**config, "image_size": last, "vision_use_head": False}, text_hidden)
    if kind == "qwenvl":
        return qwen_vl_tower({"hidden_size": h, "intermediate_size": i, "depth": layers, "patch_size": patch,
                              "spatial_merge_size": last}, text_hidden)
    raise CostplanError(f"tables/models.csv: {model}'s vision tower kind {kind!r} is not pixtral, siglip or qwenvl.")


def preset(name: str) -> ModelSpec:
    """A model from ``tables/models.csv`` by key or alias (``7b`` is Llama-2-7B)."""
    row = row_by_name("models", name, "model")
    numbers = {column: int(row[column]) for column in _INT_COLUMNS}
    overrides: dict[str, object] = {}
    if row.get("tied_embeddings"):
        overrides["tied_embeddings"] = row["tied_embeddings"].lower() == "true"
    overrides.update(_extra(row.get("extra", ""), row["key"]))
    if "vision" in overrides:
        overrides["vision"] = _preset_tower(str(overrides["vision"]), numbers["hidden_size"], row["key"])
    published = int(row["params_published"]) if row.get("params_published") else None
    return model_spec(row["key"], row["family"], numbers, params_published=published, **overrides)


# --- Hugging Face config.json ----------------------------------------------------------------

_MODEL_TYPE_FAMILY = {
    "llama": "llama", "mistral": "mistral", "mixtral": "mixtral", "qwen2": "qwen2", "qwen3": "qwen3",
    "qwen3_moe": "qwen3_moe", "phi3": "phi3", "olmo2": "olmo2", "olmo3": "olmo2", "gemma": "gemma", "gemma2": "gemma2",
    "gemma3_text": "gemma3", "gemma3": "gemma3", "mistral3": "mistral", "ministral3": "mistral", "qwen2_5_vl": "qwen2",
    "deepseek_v3": "deepseek_v3", "gpt_oss": "gpt_oss", "gpt2": "gpt2",
    "gpt_neox": "gpt_neox", "bert": "bert", "t5": "t5", "phi": "phi",
    "smollm3": "smollm3", "granite": "granite", "seed_oss": "seed_oss", "ernie4_5": "ernie4_5", "arcee": "arcee",
    "hunyuan_v1_dense": "hunyuan_v1_dense", "starcoder2": "starcoder2", "glm4_moe": "glm4_moe",
}

_BUILT_AS = {"roberta": "bert", "xlm-roberta": "bert", "camembert": "bert", "kimi_k2": "deepseek_v3",
             "glm4_moe_lite": "deepseek_v3"}
"""Model types built as another is, read with its fields: RoBERTa, XLM-R and CamemBERT are BERT with
their own vocabulary, positions and token types (``RobertaForMaskedLM`` holds exactly the parameters
of ``BertForMaskedLM`` of the same numbers; its position offset changes no shape); Kimi K2 ships
``DeepseekV3ForCausalLM`` with DeepSeek-V3's config fields (moonshotai/Kimi-K2-Instruct config.json);
GLM-4.7-Flash's ``Glm4MoeLiteForCausalLM`` is DeepSeek-V3's module (MLA, grouped sigmoid router, shared
expert) with its dense layers listed in ``mlp_layer_types`` (traced against it: the same parameters,
FLOPs, saved tensors and peak)."""
_GLM4_MOE_LITE_DEFAULTS: dict[str, object] = {
    "n_shared_experts": 1, "n_routed_experts": 64, "num_experts_per_tok": 4, "moe_intermediate_size": 1536,
    "q_lora_rank": 768, "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 192, "v_head_dim": 256,
    "n_group": 1, "topk_group": 1}
"""``Glm4MoeLiteConfig``'s defaults (transformers 5.24) for the fields a GLM-4.7-Flash config.json leaves out."""

_MULTIMODAL: dict[str, tuple[str, dict[str, object]]] = {
    "gemma3": ("gemma3_text", {}),
    "qwen2_5_vl": ("qwen2", {}),
    "mistral3": ("mistral", {"hidden_size": 5120, "num_hidden_layers": 40, "num_attention_heads": 32,
                             "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 32768,
                             "vocab_size": 131072, "max_position_embeddings": 131072, "tie_word_embeddings": False}),
}
"""Image-text checkpoints read as their text model plus a ``VisionTower``: the text model's type and
the text_config transformers 5.24 builds when the file has none (``Mistral3Config``'s sub-config)."""
_VISION_DEFAULTS: dict[str, dict[str, object]] = {
    "gemma3": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "patch_size": 16,
               "image_size": 224, "num_channels": 3, "vision_use_head": True},
    "mistral3": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "patch_size": 16,
                 "num_channels": 3},
    "qwen2_5_vl": {"depth": 32, "hidden_size": 3584, "intermediate_size": 3420, "patch_size": 14,
                   "temporal_patch_size": 2, "spatial_merge_size": 2, "in_channels": 3},
}
"""``SiglipVisionConfig``'s and ``PixtralVisionConfig``'s defaults (transformers 5.24) for the fields a
vision_config leaves out; with no vision_config at all, ``Mistral3Config`` uses Pixtral's 14-pixel patches."""


def _vision_tower(container: dict, text_hidden: int) -> VisionTower:
    """The vision tower of a ``gemma3`` or ``mistral3`` config.json."""
    model_type = container["model_type"]
    given = container.get("vision_config")
    if given is not None and not isinstance(given, dict):
        raise ValueError("vision_config must be an object")
    vision = {**_VISION_DEFAULTS[model_type], **({"patch_size": 14} if given is None else given)}
    layer = container.get("vision_feature_layer", -1)
    feature_layers = len(layer) if isinstance(layer, list) else 1
    if not feature_layers:
        raise ValueError("vision_feature_layer must name at least one layer")
    merge = _int(container, "spatial_merge_size", 2)
    try:
        if model_type == "gemma3":
            return siglip_tower(vision, text_hidden)
        if model_type == "qwen2_5_vl":
            return qwen_vl_tower(vision, text_hidden)
        return pixtral_tower(vision, text_hidden, merge, feature_layers,
                             bool(container.get("multimodal_projector_bias", False)))
    except KeyError as exc:
        raise ValueError(f"vision_config: required field {exc.args[0]!r} is missing") from exc
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"vision_config: {exc}") from exc


# Defaults of the transformers 5.24 configuration classes for fields the Hub's config.json files
# often leave out (Gemma 3's nested text_config lists only what differs from them).
_CONFIG_DEFAULTS: dict[str, dict[str, object]] = {
    "gemma2": {"head_dim": 256, "vocab_size": 256000, "max_position_embeddings": 8192, "sliding_window": 4096,
               "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "tie_word_embeddings": True},
    "gemma3_text": {"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
                    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                    "max_position_embeddings": 131072, "sliding_window": 4096, "tie_word_embeddings": True,
                    "attn_logit_softcapping": None, "final_logit_softcapping": None},
    "qwen3": {"head_dim": 128},
    "glm4_moe": {"n_shared_experts": 1, "first_k_dense_replace": 1, "moe_intermediate_size": 1408,
                 "num_experts_per_tok": 8, "n_routed_experts": 128, "n_group": 1, "topk_group": 1},
    "seed_oss": {"head_dim": 128},  # SeedOssConfig's and Ernie4_5Config's head_dim when the file has none
    "ernie4_5": {"head_dim": 128},
    "phi3": {"sliding_window": None},
    "deepseek_v3": {"n_shared_experts": 1, "first_k_dense_replace": 3, "q_lora_rank": 1536, "kv_lora_rank": 512,
                    "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
                    "moe_intermediate_size": 2048, "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4},
    "qwen3_moe": {"decoder_sparse_step": 1, "moe_intermediate_size": 768, "num_experts_per_tok": 8,
                  "num_experts": 128},
    "gpt_oss": {"num_hidden_layers": 36, "num_local_experts": 128, "vocab_size": 201088, "hidden_size": 2880,
                "intermediate_size": 2880, "head_dim": 64, "num_attention_heads": 64, "num_key_value_heads": 8,
                "sliding_window": 128, "max_position_embeddings": 131072, "num_experts_per_tok": 4,
                "tie_word_embeddings": False, "attention_bias": True},
}


def from_hf_config(path: str | Path, name: str | None = None) -> ModelSpec:
    """Read a Hugging Face ``config.json`` (or a folder holding one) without transformers; ``name``
    defaults to the folder's name."""
    path = Path(path)
    try:
        if path.is_dir():
            path = path / "config.json"
    except OSError:
        pass  # a name too long, say: read_json says why in one line
    config = read_json(path, "config.json")
    where = shown(path)
    if not isinstance(config, dict):
        raise CostplanError(f"{where} does not hold a JSON object.")
    model_type = config.get("model_type", "")
    if model_type == "glm4_moe_lite":
        config = _glm4_moe_lite(config, shown(path))
    if isinstance(model_type, str) and model_type in _BUILT_AS:
        model_type = _BUILT_AS[model_type]
    if not isinstance(model_type, str) or model_type not in _MODEL_TYPE_FAMILY:
        raise CostplanError(
            f"{where}: model_type {shown(model_type)} is not supported "
            f"(supported: {', '.join(sorted(_MODEL_TYPE_FAMILY))})."
        )
    name = name or path.parent.name or model_type
    try:
        container = config
        if model_type in _MULTIMODAL:  # the text model, with the vision tower it loads beside it
            text = config.get("text_config")
            if text is None:  # Qwen2.5-VL's Hub files keep the text model's fields at the top level
                text = config if model_type == "qwen2_5_vl" else _MULTIMODAL[model_type][1]
            if not isinstance(text, dict):
                raise ValueError("text_config must be an object")
            if model_type == "mistral3":
                model_type = text.get("model_type", "mistral")
                if model_type not in ("mistral", "ministral3"):
                    raise ValueError(f"a mistral3 text model of type {shown(model_type)} is not supported "
                                     "(mistral and ministral3 are)")
            else:
                model_type = _MULTIMODAL[model_type][0]
            if "tie_word_embeddings" not in text and "tie_word_embeddings" in container:
                text = {**text, "tie_word_embeddings": container["tie_word_embeddings"]}
            config = {**text, "model_type": model_type}
        config = {**_CONFIG_DEFAULTS.get(model_type, {}), **config}
        numbers, overrides = _read_config(model_type, config)
        if container.get("model_type") in _MULTIMODAL:
            overrides["vision"] = _vision_tower(container, numbers["hidden_size"])
        if not config.get("head_dim") and numbers["hidden_size"] % numbers["num_heads"]:
            raise ValueError(f"the hidden size ({numbers['hidden_size']}) must be a multiple of the "
                             f"{numbers['num_heads']} attention heads when head_dim is not given")
        return model_spec(name[:100], _MODEL_TYPE_FAMILY[model_type], numbers, **overrides)
    except KeyError as exc:
        raise CostplanError(f"{where}: required field {exc.args[0]!r} is missing.") from exc
    except (TypeError, ValueError, OverflowError) as exc:
        raise CostplanError(f"{where}: {str(exc).rstrip('.')}.") from exc


_CONFIG_FIELDS = {
    "hidden_size": "hidden_size", "n_embd": "hidden_size", "d_model": "hidden_size",
    "num_hidden_layers": "num_layers", "n_layer": "num_layers",
    "num_attention_heads": "num_heads", "n_head": "num_heads",
    "num_key_value_heads": "num_kv_heads", "head_dim": "head_dim",
    "intermediate_size": "ffn_size", "n_inner": "ffn_size",
    "vocab_size": "vocab_size", "max_position_embeddings": "max_positions", "n_positions": "max_positions",
    "num_local_experts": "num_experts", "num_experts": "num_experts",
    "num_experts_per_tok": "experts_per_token",
}
"""config.json keys whose ``ModelSpec`` field has a range in ``SIZE_LIMITS``."""
_ANY_FIELD_LIMIT = 1_000_000_000


def _glm4_moe_lite(config: dict, where: str) -> dict:
    """A GLM-4.7-Flash config as DeepSeek-V3's: its ``mlp_layer_types`` (dense layers first, then sparse)
    as ``first_k_dense_replace``, and Glm4MoeLiteConfig's defaults where the file has none."""
    types = config.get("mlp_layer_types")
    if types is None:
        return {**_GLM4_MOE_LITE_DEFAULTS, "first_k_dense_replace": 1, **config}
    if not isinstance(types, list) or not types or any(t not in ("dense", "sparse") for t in types):
        raise CostplanError(f"{where}: mlp_layer_types must list 'dense' or 'sparse' for each layer.")
    dense = types.index("sparse") if "sparse" in types else len(types)
    if not 0 < dense < len(types) or any(t != "sparse" for t in types[dense:]):
        raise CostplanError(f"{where}: mlp_layer_types: only dense layers followed by sparse ones are modelled.")
    return {**_GLM4_MOE_LITE_DEFAULTS, **config, "first_k_dense_replace": dense}


def _int(config: dict, key: str, default: int | None = None) -> int:
    """A positive integer field of a config.json, finite and within its ``SIZE_LIMITS`` range."""
    value = config.get(key, default)
    if value is None:
        raise KeyError(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be an integer, got {shown(value)}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    high, why = SIZE_LIMITS.get(_CONFIG_FIELDS.get(key, ""), (_ANY_FIELD_LIMIT, "no architecture number is larger"))
    if value <= 0:
        raise ValueError(f"{key} must be a positive integer, got {int(value)}")
    if value > high:
        raise ValueError(f"{key} {_big(value)} is above {high:,}, the most costplan plans ({why})")
    return int(value)


def _float(config: dict, key: str, default: float | None = None) -> float | None:
    """A finite real field of a config.json (dropout probabilities, softcaps); None when absent
    without a default."""
    value = config.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key} must be a number, got {shown(value)}")
    return float(value)


def _big(value: float) -> str:
    return f"{int(value):,}" if value < 1e15 else f"{float(value):.3g}"


def _sliding_pattern(config: dict, layers: int, model_type: str) -> tuple[int | None, int]:
    """(window, pattern) from ``sliding_window`` with ``layer_types`` or the family's rule."""
    window = config.get("sliding_window")
    if model_type in ("qwen2", "qwen3", "mistral", "ministral3", "mixtral") or window is None:
        if model_type in ("qwen2", "qwen3") and config.get("use_sliding_window"):
            raise ValueError("use_sliding_window (sliding attention above max_window_layers) is not modelled")
        return None, 0
    window = _int(config, "sliding_window")
    types = config.get("layer_types")
    if types is None:
        pattern = {"gemma2": 2, "gemma3_text": _int(config, "sliding_window_pattern", 6)}.get(model_type, 0)
        return window, pattern
    if not isinstance(types, list) or len(types) != layers:
        raise ValueError(f"layer_types must list one type per layer ({layers})")
    sliding = [kind == "sliding_attention" for kind in types]
    if all(sliding):
        return window, 0
    if not any(sliding):
        return None, 0
    pattern = sliding.index(False) + 1
    if sliding != [(i + 1) % pattern != 0 for i in range(layers)]:
        raise ValueError("layer_types: only a repeating pattern of sliding layers then one global layer is modelled")
    return window, pattern


def _read_config(model_type: str, config: dict) -> tuple[dict[str, int], dict[str, object]]:
    overrides: dict[str, object] = {}
    if model_type == "gpt2":
        hidden, layers, heads = _int(config, "n_embd"), _int(config, "n_layer"), _int(config, "n_head")
        ffn = config.get("n_inner") or 4 * hidden
        positions = _int(config, "n_positions")
        kv_heads, head_dim = heads, hidden // heads
        overrides["dropout"] = _float(config, "resid_pdrop", 0.1)
        overrides["attention_dropout"] = _float(config, "attn_pdrop", 0.1)
    elif model_type == "t5":
        return _read_t5(config)
    else:
        hidden = _int(config, "hidden_size")
        layers = _int(config, "num_hidden_layers")
        heads = _int(config, "num_attention_heads")
        ffn = _int(config, "intermediate_size")
        positions = _int(config, "max_position_embeddings", 2048)
        kv_heads = _int(config, "num_key_value_heads", heads)
        head_dim = _int(config, "head_dim", None) if config.get("head_dim") else hidden // heads
    if model_type == "bert":
        overrides["token_types"] = _int(config, "type_vocab_size", 2)
        overrides["dropout"] = _float(config, "hidden_dropout_prob", 0.1)
        overrides["attention_dropout"] = _float(config, "attention_probs_dropout_prob", 0.1)
    if "tie_word_embeddings" in config and model_type != "bert":
        overrides["tied_embeddings"] = bool(config["tie_word_embeddings"])
    llama_like = ("llama", "mistral", "ministral3", "mixtral", "qwen2", "qwen3", "qwen3_moe", "olmo2", "olmo3", "gemma",
                  "gemma2", "gemma3_text", "deepseek_v3", "smollm3", "granite", "seed_oss", "ernie4_5", "arcee",
                  "hunyuan_v1_dense", "glm4_moe")
    if model_type in llama_like:
        overrides["qkv_bias"] = bool(config.get("attention_bias", model_type in ("qwen2", "seed_oss")))
        overrides["out_bias"] = bool(config.get("attention_bias", False)) and model_type not in (
            "qwen2", "seed_oss", "glm4_moe")
        overrides["mlp_bias"] = bool(config.get("mlp_bias", False))
        act = config.get("hidden_act") or config.get("hidden_activation") or "silu"
        if model_type == "arcee" or act == "relu2":
            if act != "relu2":
                raise ValueError(f"an Arcee MLP with hidden_act {shown(act)} is not modelled (relu2 is)")
            overrides["activation"] = "relu2"
        else:
            overrides["activation"] = {"silu": "silu", "swish": "silu", "gelu": "gelu"}.get(act, "gelu_tanh")
    if model_type == "seed_oss":
        overrides["out_bias"] = bool(config.get("attention_out_bias", False))
        overrides["dropout"] = _float(config, "residual_dropout", 0.1)
        overrides["attention_dropout"] = _float(config, "attention_dropout", 0.1)
    if model_type == "ernie4_5":
        overrides["qkv_bias"] = overrides["out_bias"] = overrides["mlp_bias"] = bool(config.get("use_bias", False))
    if model_type == "hunyuan_v1_dense" and config.get("use_cla"):
        raise ValueError("use_cla (HunYuan's cross-layer attention, sharing keys and values between layers) is not "
                         "modelled")
    if model_type == "smollm3" and config.get("use_sliding_window"):
        raise ValueError("use_sliding_window (SmolLM3's sliding attention) is not modelled")
    if model_type in ("gemma", "gemma2", "gemma3_text"):
        act = config.get("hidden_activation") or config.get("hidden_act") or "gelu_pytorch_tanh"
        overrides["activation"] = "gelu" if act == "gelu" else "gelu_tanh"
    if model_type in ("gemma2", "gemma3_text"):
        overrides["attn_softcap"] = _float(config, "attn_logit_softcapping")
        overrides["final_softcap"] = _float(config, "final_logit_softcapping")
    if model_type == "gpt_oss":
        if not config.get("attention_bias", True):
            raise ValueError("gpt-oss without attention biases (attention_bias false) is not modelled")
        if config.get("layer_types") is None:  # GptOssConfig: sliding, then full, alternating
            config = {**config, "layer_types": ["sliding_attention" if (i + 1) % 2 else "full_attention"
                                                for i in range(layers)]}
    if model_type == "starcoder2":
        overrides["qkv_bias"] = overrides["out_bias"] = overrides["mlp_bias"] = bool(config.get("use_bias", True))
        act = config.get("hidden_act", "gelu_pytorch_tanh")
        overrides["activation"] = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh"}.get(act, "gelu_tanh")
        overrides["dropout"] = _float(config, "residual_dropout", 0.0)
        overrides["attention_dropout"] = _float(config, "attention_dropout", 0.0)
        embedding = _float(config, "embedding_dropout", 0.0) or 0.0
        if embedding and embedding != overrides["dropout"]:
            raise ValueError("an embedding_dropout other than residual_dropout is not modelled")
        overrides["embedding_dropout"] = embedding > 0
    # OLMo 3: OLMo 2's layers, 3 in 4 sliding; StarCoder2: every layer within its window.
    if model_type in ("gemma2", "gemma3_text", "phi3", "olmo3", "gpt_oss", "starcoder2"):
        window, pattern = _sliding_pattern(config, layers, model_type)
        overrides["sliding_window"], overrides["sliding_window_pattern"] = window, pattern
    else:
        _sliding_pattern(config, layers, model_type)
    if model_type == "phi3":
        overrides["dropout"] = _float(config, "resid_pdrop", 0.0)
        overrides["attention_dropout"] = _float(config, "attention_dropout", 0.0)
        # partial_rotary_factor (Phi-4-mini: 0.75) rotates part of each head: no weight, no matmul; its
        # narrower cos/sin tables are the only bytes it changes.
        overrides["rotary_fraction"] = _float(config, "partial_rotary_factor", 1.0)
    if model_type == "gpt_neox":
        overrides["tied_embeddings"] = bool(config.get("tie_word_embeddings", False))
        overrides["rotary_fraction"] = _float(config, "rotary_pct", 0.25)
    if model_type == "phi":
        overrides["dropout"] = _float(config, "resid_pdrop", 0.0)
        overrides["attention_dropout"] = _float(config, "attention_dropout", 0.0)
        overrides["embedding_dropout"] = (_float(config, "embd_pdrop", 0.0) or 0.0) > 0
        overrides["rotary_fraction"] = _float(config, "partial_rotary_factor", 0.5)
        if config.get("qk_layernorm"):
            raise ValueError("qk_layernorm (norms on Phi's queries and keys) is not modelled")
    # num_local_experts is read for Mixtral only, as transformers does (other families ignore it).
    experts, top_k = (_int(config, "num_local_experts", 1) if model_type == "mixtral" else 1), 1
    if model_type == "mixtral":
        top_k = _int(config, "num_experts_per_tok", 1)
    elif model_type == "qwen3_moe":
        # The Hub's files say num_experts; transformers 5 writes its alias num_local_experts.
        experts = _int(config, "num_local_experts" if "num_local_experts" in config else "num_experts")
        top_k = _int(config, "num_experts_per_tok")
        if _int(config, "decoder_sparse_step", 1) != 1 or config.get("mlp_only_layers"):
            raise ValueError("decoder_sparse_step and mlp_only_layers (dense layers among MoE ones) are not modelled")
        ffn = _int(config, "moe_intermediate_size")
    elif model_type == "gpt_oss":  # every layer routes; each expert is intermediate_size wide
        experts, top_k = _int(config, "num_local_experts"), _int(config, "num_experts_per_tok")
    elif model_type in ("deepseek_v3", "glm4_moe"):  # DeepSeek-V3's MoE fields (GLM-4.5: under GQA attention)
        experts = _int(config, "num_local_experts" if "num_local_experts" in config else "n_routed_experts")
        top_k = _int(config, "num_experts_per_tok")
        overrides["shared_experts"] = _int(config, "n_shared_experts")
        overrides["expert_groups"] = _int(config, "n_group", 1)
        overrides["expert_groups_used"] = _int(config, "topk_group", 1)
        overrides["dense_layers"] = _int(config, "first_k_dense_replace")
        overrides["dense_ffn_size"] = ffn if overrides["dense_layers"] else 0
        ffn = _int(config, "moe_intermediate_size")
    if model_type == "glm4_moe":  # RoPE on part of each head, optional per-head q/k norms
        rope = config.get("rope_parameters") if isinstance(config.get("rope_parameters"), dict) else {}
        overrides["rotary_fraction"] = _float({**config, **rope}, "partial_rotary_factor", 0.5)
        overrides["qk_norm"] = "head" if config.get("use_qk_norm") else "none"
    elif model_type == "deepseek_v3":
        q_rank = config.get("q_lora_rank")
        overrides["mla"] = MLA(q_lora_rank=None if q_rank is None else _int(config, "q_lora_rank"),
                               kv_lora_rank=_int(config, "kv_lora_rank"),
                               qk_nope_head_dim=_int(config, "qk_nope_head_dim"),
                               qk_rope_head_dim=_int(config, "qk_rope_head_dim"),
                               v_head_dim=_int(config, "v_head_dim"))
        head_dim, kv_heads = _int(config, "qk_rope_head_dim"), heads  # transformers' head_dim: the rotary part
    numbers = {
        "hidden_size": hidden, "num_layers": layers, "num_heads": heads, "num_kv_heads": kv_heads,
        "head_dim": head_dim, "ffn_size": int(ffn), "vocab_size": _int(config, "vocab_size"),
        "max_positions": positions, "num_experts": experts, "experts_per_token": top_k,
    }
    return numbers, overrides


def _read_t5(config: dict) -> tuple[dict[str, int], dict[str, object]]:
    """T5ForConditionalGeneration: ``num_layers`` encoder and ``num_decoder_layers`` decoder blocks."""
    hidden, heads = _int(config, "d_model"), _int(config, "num_heads")
    encoder = _int(config, "num_layers")
    decoder = _int(config, "num_decoder_layers", encoder)
    projection = str(config.get("feed_forward_proj", "relu"))
    gated = projection.startswith("gated-")
    activation = projection.removeprefix("gated-")
    acts = {"relu": "relu", "gelu": "gelu_new", "gelu_new": "gelu_new", "silu": "silu"}
    if activation not in acts:
        raise ValueError(f"feed_forward_proj {projection!r} is not modelled")
    dropout = _float(config, "dropout_rate", 0.1)
    numbers = {
        "hidden_size": hidden, "num_layers": encoder + decoder, "num_heads": heads, "num_kv_heads": heads,
        "head_dim": _int(config, "d_kv"), "ffn_size": _int(config, "d_ff"), "vocab_size": _int(config, "vocab_size"),
        "max_positions": _int(config, "n_positions", 512), "num_experts": 1, "experts_per_token": 1,
    }
    overrides: dict[str, object] = {
        "encoder_layers": encoder, "gated_mlp": gated, "activation": acts[activation],
        "relative_attention_buckets": _int(config, "relative_attention_num_buckets", 32),
        # transformers (5.x) ties T5's LM head to the shared embeddings whatever the config says;
        # tie_word_embeddings=false (T5 v1.1) only turns off the decoder output's d_model**-0.5 scale.
        "tied_embeddings": True,
        "dropout": dropout, "attention_dropout": dropout,
    }
    return numbers, overrides


def resolve_model(name_or_path: str | Path) -> ModelSpec:
    """A preset name/alias, a path to a config.json or a folder holding one, or a Hugging Face Hub id
    (``org/name``) read from the local cache (``costplan.hub``)."""
    if isinstance(name_or_path, Path):
        return from_hf_config(name_or_path)
    if not isinstance(name_or_path, str):
        raise CostplanError(f"model must be a preset name or a path to a config.json, not {shown(name_or_path)}.")
    if not name_or_path.strip():
        raise CostplanError("The model name is empty: give a preset (see `costplan models`) or a config.json.")
    if "/" in name_or_path:  # a Hub id has one; costplan.hub is imported only then
        from costplan import hub

        if hub.is_repo_id(name_or_path):
            known = hub.stand_in(name_or_path) if hub.cached_file(name_or_path, "config.json") is None else None
            if known is not None:
                return with_overrides(preset(known), name=name_or_path)
            try:
                located = hub.locate(name_or_path)
            except CostplanError:
                key = _preset_of_repo(name_or_path)
                if key is None:
                    raise
                four_bit = "bnb-4bit" in name_or_path.lower()
                hub.record_stand_in(name_or_path, key,
                                    f"model {name_or_path}: its config.json is neither in the local Hugging Face "
                                    f"cache nor fetched (offline, or refused); the {key} preset of that name stands "
                                    "in (tables/models.csv): pass the repository's config.json for its own numbers"
                                    + ("; the name says a bitsandbytes 4-bit checkpoint: LoRA on it is QLoRA "
                                       "(--method qlora)" if four_bit else ""))
                return with_overrides(preset(key), name=name_or_path)
            return from_hf_config(located.path, name=name_or_path)
    looks_like_path = any(sep in name_or_path for sep in ("/", "\\")) or name_or_path.endswith(".json")
    try:
        candidate = Path(name_or_path).expanduser()
        exists = candidate.exists()
    except (OSError, RuntimeError, ValueError):  # a name too long for a path, an unknown ~user
        candidate, exists = Path(name_or_path), False
    if exists or looks_like_path:
        return from_hf_config(candidate)
    return preset(name_or_path)


_RELEASE_SUFFIX = re.compile(r"-(instruct|it|chat|hf|base|pt|unsloth|bnb-4bit|\d{4})$")
"""Suffixes of a repository's name that change no shape: tuned releases (Instruct, it, chat), format
(hf; Unsloth's re-uploads and their bitsandbytes 4-bit copies), and date codes (Qwen's -2507,
Mistral's -2410)."""


def _preset_of_repo(repo_id: str) -> str | None:
    """The preset whose key or alias is the repository's name, after dropping release suffixes one by one
    (``meta-llama/Meta-Llama-3-8B-Instruct`` -> ``meta-llama-3-8b``, an alias of llama-3-8b)."""
    name = repo_id.rsplit("/", 1)[-1].lower()
    for _ in range(4):
        try:
            return preset(name).name
        except CostplanError:
            stripped = _RELEASE_SUFFIX.sub("", name)
            if stripped == name:
                return None
            name = stripped
    return None


def preset_named_in_path(text: str) -> str | None:
    """The preset a path names on the machine that wrote it (an adapter's base_model_name_or_path):
    its Hugging Face cache folder ``models--org--name``, else its last part (``/data/Llama-2-7b-hf/``)."""
    parts = [p for p in re.split(r"[\\/]", text) if p and p not in (".", "..")]
    cached = next((p for p in parts if p.startswith("models--") and p.count("--") >= 2), None)
    if cached is not None:
        return _preset_of_repo(cached.split("--", 2)[2])
    return _preset_of_repo(parts[-1]) if parts else None


def with_overrides(model: ModelSpec, **changes: object) -> ModelSpec:
    """A copy of ``model`` with some fields changed (validated again)."""
    return replace(model, **changes)
