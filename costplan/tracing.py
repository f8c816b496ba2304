"""Ground truth from the real model code: build the Hugging Face module for a ModelSpec, apply the
real peft adapter, run one training step, and measure it.

Three measurements, each independent of the analytical model:

- FLOPs with ``torch.utils.flop_counter.FlopCounterMode``;
- bytes autograd saves for backward, through ``saved_tensors_hooks``;
- the peak of live tensor bytes over a whole step (forward, backward, optimizer), with a
  dispatch mode that follows every storage's allocation and release (``LiveBytes``).

The step follows the conventions the analytical model states: bf16/fp16 training of a trained
base keeps fp32 master weights in the optimizer (gradients copied to fp32 before the step),
peft parameters are fp32, ``zero_grad(set_to_none=True)``, foreach AdamW, and, as transformers'
Trainer does, only the loss is kept from the model's outputs.

torch, transformers and peft are imported inside the functions: never on the estimate path.
"""

from __future__ import annotations

import contextlib
import gc
import weakref
from collections.abc import Iterator
from typing import Any
from unittest import mock

from costplan import precision as modes
from costplan.methods import Lora, Method, PrefixTuning, PromptTuning
from costplan.model import ModelSpec, layer_kinds
from costplan.record import record
from costplan.workload import Workload

# Module names (regular expressions on the end of the qualified name) of each role, by family.
_LLAMA_NAMES = {"q": r"q_proj", "k": r"k_proj", "v": r"v_proj", "o": r"o_proj", "gate": r"gate_proj",
                "up": r"up_proj", "down": r"down_proj"}
_DEEPSEEK_MLP_NAMES = {"gate": r"mlp\.gate_proj", "up": r"mlp\.up_proj", "down": r"mlp\.down_proj",
                       "shared_gate": r"shared_experts\.gate_proj", "shared_up": r"shared_experts\.up_proj",
                       "shared_down": r"shared_experts\.down_proj"}
"""DeepSeek-V3's dense MLPs and shared experts, which GLM-4.5 shares."""
_MODULE_NAMES = {
    "gpt2": {"qkv": r"attn\.c_attn", "o": r"attn\.c_proj", "up": r"mlp\.c_fc", "down": r"mlp\.c_proj"},
    "gpt_neox": {"qkv": r"query_key_value", "o": r"attention\.dense", "up": r"dense_h_to_4h",
                 "down": r"dense_4h_to_h"},
    "bert": {"q": r"attention\.self\.query", "k": r"attention\.self\.key", "v": r"attention\.self\.value",
             "o": r"attention\.output\.dense", "up": r"intermediate\.dense", "down": r"layer\.\d+\.output\.dense"},
    "phi": {"q": r"self_attn\.q_proj", "k": r"self_attn\.k_proj", "v": r"self_attn\.v_proj", "o": r"self_attn\.dense",
            "up": r"mlp\.fc1", "down": r"mlp\.fc2"},
    "starcoder2": {**{r: _LLAMA_NAMES[r] for r in ("q", "k", "v", "o")}, "up": r"mlp\.c_fc", "down": r"mlp\.c_proj"},
    "phi3": {"qkv": r"self_attn\.qkv_proj", "o": r"self_attn\.o_proj", "gate_up": r"mlp\.gate_up_proj",
             "down": r"mlp\.down_proj"},
    "deepseek_v3": {"q": r"self_attn\.q_proj", "q_a": r"q_a_proj", "q_b": r"q_b_proj", "kv_a": r"kv_a_proj_with_mqa",
                    "kv_b": r"kv_b_proj", "o": r"self_attn\.o_proj", **_DEEPSEEK_MLP_NAMES},
    "glm4_moe": {**{r: rf"self_attn\.{r}_proj" for r in ("q", "k", "v", "o")}, **_DEEPSEEK_MLP_NAMES},
    "t5": {"q": r"SelfAttention\.q", "k": r"SelfAttention\.k", "v": r"SelfAttention\.v", "o": r"SelfAttention\.o",
           "cross_q": r"EncDecAttention\.q", "cross_k": r"EncDecAttention\.k", "cross_v": r"EncDecAttention\.v",
           "cross_o": r"EncDecAttention\.o", "gate": r"DenseReluDense\.wi_0", "up": r"DenseReluDense\.wi(?:_1)?",
           "down": r"DenseReluDense\.wo"},
}
"""Routers and routed experts have no entry: in transformers 5 they are custom modules holding
3-D parameters, which peft's ``target_modules`` cannot adapt."""
_TENSOR_NAMES = {"expert_gate_up": "mlp.experts.gate_up_proj", "expert_down": "mlp.experts.down_proj"}
"""gpt-oss's expert tensors as peft's ``target_parameters`` names them."""


def _layer_types(model: ModelSpec) -> list[str]:
    from costplan.model import layer_sequence

    return ["sliding_attention" if kind.window else "full_attention" for kind in layer_sequence(model)]


def hf_config(model: ModelSpec, attention: str = "sdpa") -> Any:
    """A transformers config with the spec's architecture numbers (no download)."""
    import transformers as T

    common: dict[str, Any] = {"vocab_size": model.vocab_size}
    decoder: dict[str, Any] = {
        "hidden_size": model.hidden_size, "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads, "num_key_value_heads": model.num_kv_heads,
        "intermediate_size": model.ffn_size, "max_position_embeddings": model.max_positions,
        "tie_word_embeddings": model.tied_embeddings, **common}
    grouped = {"experts_implementation": "grouped_mm"}
    """Sorted tokens and one grouped matmul per projection: static shapes (traceable without
    data), the implementation GPU training uses."""
    if model.family == "gpt2":
        cfg = T.GPT2Config(n_embd=model.hidden_size, n_layer=model.num_layers, n_head=model.num_heads,
                           n_positions=model.max_positions, n_inner=model.ffn_size,
                           resid_pdrop=model.dropout, embd_pdrop=model.dropout,
                           attn_pdrop=model.attention_dropout, **common)
    elif model.family == "bert":
        cfg = T.BertConfig(hidden_size=model.hidden_size, num_hidden_layers=model.num_layers,
                           num_attention_heads=model.num_heads, intermediate_size=model.ffn_size,
                           max_position_embeddings=model.max_positions, type_vocab_size=model.token_types,
                           hidden_dropout_prob=model.dropout,
                           attention_probs_dropout_prob=model.attention_dropout, **common)
    elif model.family == "gpt_neox":
        cfg = T.GPTNeoXConfig(hidden_size=model.hidden_size, num_hidden_layers=model.num_layers,
                              num_attention_heads=model.num_heads, intermediate_size=model.ffn_size,
                              max_position_embeddings=model.max_positions, rotary_pct=model.rotary_fraction,
                              tie_word_embeddings=model.tied_embeddings, **common)
    elif model.family == "t5":
        act = {"relu": "relu", "gelu_new": "gelu", "silu": "silu"}[model.activation]
        cfg = T.T5Config(d_model=model.hidden_size, d_kv=model.head_dim, d_ff=model.ffn_size,
                         num_layers=model.encoder_layers, num_decoder_layers=model.decoder_layers,
                         num_heads=model.num_heads, relative_attention_num_buckets=model.relative_attention_buckets,
                         dropout_rate=model.dropout, n_positions=model.max_positions,
                         feed_forward_proj=("gated-" if model.gated_mlp else "") + act, decoder_start_token_id=0,
                         pad_token_id=0, eos_token_id=1, **common)
    elif model.family == "starcoder2":
        cfg = T.Starcoder2Config(**decoder, use_bias=model.qkv_bias, residual_dropout=model.dropout,
                                 embedding_dropout=model.dropout if model.embedding_dropout else 0.0,
                                 attention_dropout=model.attention_dropout, sliding_window=model.sliding_window,
                                 hidden_act="gelu_pytorch_tanh" if model.activation == "gelu_tanh" else "gelu")
    elif model.family == "phi":
        cfg = T.PhiConfig(**decoder, resid_pdrop=model.dropout,
                          embd_pdrop=model.dropout if model.embedding_dropout else 0.0,
                          attention_dropout=model.attention_dropout, hidden_act="gelu_new",
                          partial_rotary_factor=model.rotary_fraction)
    elif model.family == "phi3":
        if model.head_dim * model.num_heads != model.hidden_size:
            raise ValueError("Phi-3's heads are hidden_size / num_attention_heads wide")
        cfg = T.Phi3Config(**decoder, original_max_position_embeddings=model.max_positions,
                           sliding_window=model.sliding_window, resid_pdrop=model.dropout,
                           attention_dropout=model.attention_dropout, pad_token_id=None,
                           partial_rotary_factor=model.rotary_fraction)
    elif model.family in ("gemma2", "gemma3"):
        cls = T.Gemma2Config if model.family == "gemma2" else T.Gemma3TextConfig
        cfg = cls(**decoder, head_dim=model.head_dim, query_pre_attn_scalar=model.head_dim,
                  sliding_window=model.sliding_window or model.max_positions, layer_types=_layer_types(model),
                  attn_logit_softcapping=model.attn_softcap, final_logit_softcapping=model.final_softcap,
                  hidden_activation="gelu_pytorch_tanh")
    elif model.family == "qwen3_moe":
        cfg = T.Qwen3MoeConfig(**{**decoder, "intermediate_size": model.ffn_size}, head_dim=model.head_dim,
                               moe_intermediate_size=model.ffn_size, num_experts=model.num_experts,
                               num_experts_per_tok=model.experts_per_token, norm_topk_prob=True, **grouped)
    elif model.family == "gpt_oss":
        cfg = T.GptOssConfig(**decoder, head_dim=model.head_dim, num_local_experts=model.num_experts,
                             num_experts_per_tok=model.experts_per_token, sliding_window=model.sliding_window,
                             layer_types=_layer_types(model), **grouped)
    elif model.family == "glm4_moe":
        cfg = T.Glm4MoeConfig(**{**decoder, "intermediate_size": model.dense_ffn_size or model.ffn_size},
                              head_dim=model.head_dim, attention_bias=model.qkv_bias,
                              moe_intermediate_size=model.ffn_size, n_routed_experts=model.num_experts,
                              num_experts_per_tok=model.experts_per_token, n_shared_experts=model.shared_experts,
                              first_k_dense_replace=model.dense_layers, n_group=model.expert_groups,
                              topk_group=model.expert_groups_used, use_qk_norm=model.qk_norm == "head",
                              rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                               "partial_rotary_factor": model.rotary_fraction}, **grouped)
    elif model.family == "deepseek_v3":
        mla = model.mla
        assert mla is not None
        cfg = T.DeepseekV3Config(**{**decoder, "intermediate_size": model.dense_ffn_size or model.ffn_size,
                                    "num_key_value_heads": model.num_heads},
                                 moe_intermediate_size=model.ffn_size, n_routed_experts=model.num_experts,
                                 num_experts_per_tok=model.experts_per_token, n_shared_experts=model.shared_experts,
                                 first_k_dense_replace=model.dense_layers, q_lora_rank=mla.q_lora_rank,
                                 kv_lora_rank=mla.kv_lora_rank, qk_rope_head_dim=mla.qk_rope_head_dim,
                                 qk_nope_head_dim=mla.qk_nope_head_dim, v_head_dim=mla.v_head_dim,
                                 n_group=model.expert_groups, topk_group=model.expert_groups_used, **grouped)
    else:
        cls = {"llama": T.LlamaConfig, "mistral": T.MistralConfig, "mixtral": T.MixtralConfig,
               "qwen2": T.Qwen2Config, "gemma": T.GemmaConfig, "qwen3": T.Qwen3Config,
               "olmo2": T.Olmo2Config, "smollm3": T.SmolLM3Config, "granite": T.GraniteConfig,
               "seed_oss": T.SeedOssConfig, "ernie4_5": T.Ernie4_5Config, "arcee": T.ArceeConfig,
               "hunyuan_v1_dense": T.HunYuanDenseV1Config}[model.family]
        extra: dict[str, Any] = {}
        if model.family in ("smollm3", "granite", "arcee", "hunyuan_v1_dense"):
            extra = {"attention_bias": model.qkv_bias, "pad_token_id": None}
            if model.family != "hunyuan_v1_dense":
                extra["mlp_bias"] = model.mlp_bias
            if model.family == "smollm3":  # RoPE in three layers of four, as the released model
                extra["no_rope_layers"] = [int((i + 1) % 4 != 0) for i in range(model.num_layers)]
        elif model.family == "seed_oss":
            extra = {"attention_bias": model.qkv_bias, "attention_out_bias": model.out_bias, "mlp_bias": model.mlp_bias,
                     "residual_dropout": model.dropout, "attention_dropout": model.attention_dropout,
                     "pad_token_id": None}
        elif model.family == "ernie4_5":
            extra = {"use_bias": model.qkv_bias, "pad_token_id": None}
        if model.family == "mixtral":
            extra = {"num_local_experts": model.num_experts, "num_experts_per_tok": model.experts_per_token,
                     **grouped}
        if model.family != "olmo2":
            extra["head_dim"] = model.head_dim
        elif model.head_dim * model.num_heads != model.hidden_size:
            raise ValueError("OLMo 2's heads are hidden_size / num_attention_heads wide")
        cfg = cls(**decoder, **extra)
    cfg._attn_implementation = attention
    return cfg


_FUSED_SOFTCAP = "costplan_sdpa_softcap"


def _register_fused_softcap() -> None:
    """SDPA standing in for the fused attention kernels of models with an attention logit softcap
    (Gemma 2: FlashAttention-2) or attention sinks (gpt-oss: the FlashAttention-3 build transformers
    loads from the kernels hub, or FlashAttention-4).

    The kernel applies the softcap, or joins the sink logits to the softmax, inside: no matmul, no
    saved tensor beyond what FlashAttention keeps, nothing the FLOPs or memory rules would count.
    SDPA takes neither and transformers refuses SDPA for both models, so the trace drops them and
    calls SDPA under a registered name.
    """
    import transformers as T
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import sdpa_mask

    def attention(module: Any, query: Any, key: Any, value: Any, mask: Any, **kwargs: Any) -> Any:
        kwargs.pop("softcap", None)
        kwargs.pop("s_aux", None)
        return sdpa_attention_forward(module, query, key, value, mask, **kwargs)

    T.AttentionInterface.register(_FUSED_SOFTCAP, attention)
    T.AttentionMaskInterface.register(_FUSED_SOFTCAP, sdpa_mask)


def build_model(model: ModelSpec, attention: str = "sdpa", device: str = "cpu", dtype: Any = None) -> Any:
    """The transformers module, randomly initialised in ``dtype`` (default fp32); on ``meta``, or
    under a FakeTensorMode, it takes no memory."""
    import torch
    import transformers as T

    T.logging.set_verbosity_error()
    cfg = hf_config(model, attention)
    fused_softcap = attention == "sdpa" and (model.attn_softcap is not None or model.attention_sinks)
    if fused_softcap:
        _register_fused_softcap()
        cfg._attn_implementation = "eager"  # swapped below: transformers refuses SDPA for these models
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype or torch.float32)
    try:
        with torch.device(device):
            if model.family == "bert":
                module = T.BertForMaskedLM(cfg)
            elif model.family == "t5":
                module = T.T5ForConditionalGeneration(cfg)
            else:
                module = T.AutoModelForCausalLM.from_config(cfg)
        if fused_softcap:
            module.config._attn_implementation = _FUSED_SOFTCAP
        module._costplan_spec = model
        return module
    finally:
        torch.set_default_dtype(previous)


_EMBEDDING_NAMES = {"gpt2": "wte", "gpt_neox": "embed_in", "bert": "word_embeddings"}


def _spec_of(module: Any) -> ModelSpec:
    spec = getattr(module, "_costplan_spec", None)
    if spec is None:
        raise ValueError("apply_method needs a module made by build_model")
    return spec


def apply_method(module: Any, method: Method) -> Any:
    """Wrap a model with the real peft adapter for a costplan method."""
    import peft

    if isinstance(method, Lora):
        spec = _spec_of(module)
        names = _MODULE_NAMES.get(spec.family, _LLAMA_NAMES)
        adapters = method.adapters(spec)
        roles = sorted({a.linear.role for a in adapters if not a.merged})
        tensors = sorted({_TENSOR_NAMES[a.linear.role] for a in adapters if a.merged})
        layers = getattr(method, "expert_layers", None)
        if layers is not None:  # some layers' only, as the OpenAI cookbook names them ("7.mlp.experts.gate_up_proj")
            tensors = [f"layers.{i}.{name}" for i in sorted(layers) for name in tensors]
        untraceable = [role for role in roles if role not in names]
        if untraceable:
            raise ValueError(f"LoRA on {', '.join(untraceable)} of {spec.name} cannot be traced: transformers 5 "
                             "keeps routers and routed experts as custom modules with 3-D parameters, which "
                             "peft's target_modules cannot adapt")
        saved = {"embeddings": _EMBEDDING_NAMES.get(spec.family, "embed_tokens"), "head": "lm_head"}
        names = {**names, **saved}
        roles += [outer for outer in ("head", "embeddings") if outer in method.targets]
        pattern = rf"(.*\.)?({'|'.join(names[role] for role in roles)})$" if roles else []
        config = peft.LoraConfig(r=method.rank, lora_alpha=2 * method.rank, lora_dropout=method.dropout,
                                 target_modules=pattern, target_parameters=tensors or None, use_dora=method.dora,
                                 modules_to_save=[saved[m] for m in method.modules_to_save] or None)
        return peft.get_peft_model(module, config)
    if isinstance(method, PromptTuning):
        return peft.get_peft_model(module, peft.PromptTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=method.num_virtual_tokens))
    if isinstance(method, PrefixTuning):
        return peft.get_peft_model(module, peft.PrefixTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=method.num_virtual_tokens))
    return module


def _quantize_base(module: Any, model: ModelSpec, double_quant: bool) -> None:
    """Replace every layer's linear with a stand-in for bitsandbytes' ``Linear4bit``.

    bitsandbytes runs only on CUDA, so its 4-bit layer is reproduced from its source, op for
    op where memory is concerned: the weight packed two values per byte with its blockwise
    absmax (8-bit with an fp32 constant per 256 blocks under double quantization, else fp32);
    a forward that dequantizes the whole matrix into the compute dtype, multiplies, and keeps
    only the packed weight (``ctx.tensors = (None, B)``: bitsandbytes 0.43.2 to 0.50, whose
    weight never needs a gradient, so its input is never needed); a backward that dequantizes
    again for dX. The dequantized values are not computed (the
    trace runs on the meta device); their allocation is what matters.
    """
    import torch
    from torch import nn

    class MatMul4Bit(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, A: Any, B: Any, bias: Any, shape: tuple[int, int]) -> Any:
            weight = torch.empty(shape, dtype=A.dtype, device=A.device)  # dequantize_4bit(B)
            ctx.shape = shape
            ctx.tensors = (None, B) if any(ctx.needs_input_grad[:2]) else (None, None)
            return nn.functional.linear(A, weight, bias)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            weight = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device)
            grad_a = torch.matmul(grad, weight) if ctx.needs_input_grad[0] else None
            return grad_a, None, None, None

    from transformers.pytorch_utils import Conv1D

    class Linear4bit(nn.Linear):
        def __init__(self, linear: Any) -> None:
            nn.Module.__init__(self)
            if isinstance(linear, Conv1D):  # GPT-2's transposed linear, which bitsandbytes also replaces
                self.in_features, self.out_features = linear.weight.shape
            else:
                self.in_features, self.out_features = linear.in_features, linear.out_features
            device = linear.weight.device
            n = self.in_features * self.out_features
            blocks = -(-n // 64)
            self.weight = nn.Parameter(torch.empty((n + 1) // 2, 1, dtype=torch.uint8, device=device),
                                       requires_grad=False)
            self.bias = linear.bias
            if double_quant:
                self.register_buffer("absmax", torch.empty(blocks, dtype=torch.uint8, device=device))
                self.register_buffer("nested_absmax", torch.empty(-(-blocks // 256), dtype=torch.float32,
                                                                  device=device))
            else:
                self.register_buffer("absmax", torch.empty(blocks, dtype=torch.float32, device=device))

        def forward(self, x: Any) -> Any:
            return MatMul4Bit.apply(x, self.weight, self.bias, (self.out_features, self.in_features))

    for layer in _layers(module, model):
        for name, child in list(layer.named_modules()):
            if isinstance(child, (nn.Linear, Conv1D)) and name:
                parent_name, _, attr = name.rpartition(".")
                parent = layer.get_submodule(parent_name) if parent_name else layer
                setattr(parent, attr, Linear4bit(child))


def quantize_with_bitsandbytes(module: Any, model: ModelSpec, method: Method) -> None:
    """On a GPU: replace each layer's linear layers by bitsandbytes' own (NF4 ``Linear4bit`` with or
    without double quantization, or LLM.int8 ``Linear8bitLt``), quantizing the weights for real, as
    transformers does for ``load_in_4bit`` / ``load_in_8bit`` (calibration and GPU checks)."""
    import bitsandbytes as bnb
    import torch

    for layer in _layers(module, model):
        for name, child in list(layer.named_modules()):
            if not isinstance(child, torch.nn.Linear) or not name:
                continue
            parent_name, _, attr = name.rpartition(".")
            parent = layer.get_submodule(parent_name) if parent_name else layer
            # Params4bit quantizes on whatever device it is moved to; Int8Params only on the way from the CPU.
            weight = child.weight.data if method.base_storage == "nf4" else child.weight.data.to("cpu")
            if method.base_storage == "nf4":
                double = getattr(method, "double_quant", True)
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=torch.bfloat16, compress_statistics=double, quant_type="nf4")
                q.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4", compress_statistics=double)
            else:
                q = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                        has_fp16_weights=False)
                q.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
            if child.bias is not None:
                q.bias = child.bias
            setattr(parent, attr, q.to("cuda"))


def _quantize_base_int8(module: Any, model: ModelSpec) -> None:
    """Replace every layer's linear with a stand-in for bitsandbytes' ``Linear8bitLt`` (LLM.int8,
    frozen weights, 0.50): the weight as int8 with an fp32 scale per output row (``CB``, ``SCB``); a
    forward that quantizes its input to int8, multiplies, and keeps the input for dX
    (``MatMul8bitLt`` keeps ``A`` when it needs a gradient); a backward that dequantizes the weight
    into the input's dtype for dX. Outlier columns (under 1% of a matrix) are not reproduced."""
    import torch
    from torch import nn

    class MatMul8bit(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, A: Any, B: Any, bias: Any, shape: tuple[int, int]) -> Any:
            quantized = torch.empty(A.shape, dtype=torch.int8, device=A.device)  # int8_vectorwise_quant(A)
            weight = torch.empty(shape, dtype=A.dtype, device=A.device)  # the int8 product, rescaled
            del quantized
            ctx.shape = shape
            ctx.tensors = (None, None, A) if ctx.needs_input_grad[0] else (None, None, None)
            return nn.functional.linear(A, weight, bias)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            weight = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device)  # CB dequantized
            grad_a = torch.matmul(grad, weight) if ctx.needs_input_grad[0] else None
            return grad_a, None, None, None

    class Linear8bit(nn.Linear):
        def __init__(self, linear: Any) -> None:
            nn.Module.__init__(self)
            self.in_features, self.out_features = linear.in_features, linear.out_features
            device = linear.weight.device
            self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features, dtype=torch.int8,
                                                   device=device), requires_grad=False)
            self.register_buffer("SCB", torch.empty(self.out_features, dtype=torch.float32, device=device))
            self.bias = linear.bias

        def forward(self, x: Any) -> Any:
            return MatMul8bit.apply(x, self.weight, self.bias, (self.out_features, self.in_features))

    for layer in _layers(module, model):
        for name, child in list(layer.named_modules()):
            if isinstance(child, nn.Linear) and name:
                parent_name, _, attr = name.rpartition(".")
                parent = layer.get_submodule(parent_name) if parent_name else layer
                setattr(parent, attr, Linear8bit(child))


def _layers(module: Any, model: ModelSpec) -> list[Any]:
    """The transformer layers of a transformers model (T5: the encoder's, then the decoder's)."""
    found = []
    for name in ("model.layers", "transformer.h", "gpt_neox.layers", "bert.encoder.layer", "encoder.block",
                 "decoder.block"):
        try:
            found.extend(module.get_submodule(name))
        except AttributeError:
            continue
    if not found:
        raise ValueError(f"cannot find the layers of {model.name}")
    return found


def _live_bytes_mode() -> Any:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveBytes(TorchDispatchMode):
        """Live tensor bytes: each storage counts from the op that creates it until it is freed.

        ``snapshot_at`` (an op count from an earlier identical run) records which storages are
        alive right after that op, with the shape each was created with, to attribute the peak.
        """

        def __init__(self, existing: list[Any], snapshot_at: int | None = None,
                     on_snapshot: Any = None) -> None:
            super().__init__()
            self.on_snapshot = on_snapshot
            self._op = "start"
            self.live = 0
            self.peak = 0
            self.peak_op = "start"
            self.ops = 0
            self.peak_at = 0
            self.snapshot_at = snapshot_at
            self.snapshot: list[tuple[int, int, tuple[int, ...]]] = []
            self._refs: dict[int, tuple[Any, int, tuple[int, ...]]] = {}
            for tensor in existing:
                self.track(tensor)

        def track(self, tensor: Any) -> None:
            if not isinstance(tensor, torch.Tensor):
                return
            storage = tensor.untyped_storage()  # its Python object lives as long as the storage
            key = id(storage)
            if key in self._refs:
                return
            size = storage.nbytes()

            def free(_ref: Any, key: int = key, size: int = size) -> None:
                self.live -= size
                self._refs.pop(key, None)

            self._refs[key] = (weakref.ref(storage, free), size, tuple(tensor.shape))
            self.live += size
            if self.live > self.peak:
                self.peak, self.peak_op, self.peak_at = self.live, self._op, self.ops

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            self._op = str(func)
            self.ops += 1
            out = func(*args, **(kwargs or {}))
            for tensor in tree_flatten(out)[0]:
                self.track(tensor)
            if self.ops == self.snapshot_at:
                self.snapshot = [(key, size, shape) for key, (_, size, shape) in self._refs.items()]
                if self.on_snapshot is not None:
                    self.on_snapshot()
            return out

    return LiveBytes


@contextlib.contextmanager
def _gpu_kernels(device: str) -> Iterator[None]:
    """Trace as a CUDA run would execute.

    On the meta device, ``scaled_dot_product_attention`` would fall back to its math
    decomposition, which materialises the ``heads · s²`` scores; a GPU runs FlashAttention (or the
    memory-efficient kernel when a mask is given). Route SDPA to those aten ops: they have meta
    kernels, autograd formulas and FlopCounterMode formulas. Dropout likewise goes to the fused
    kernel with its one-byte mask. transformers' packed-sequence probe
    reads tensor values, which meta tensors do not have; sequences here are never packed.
    On a real CPU run, only teach FlopCounterMode the CPU flash kernel's cost.
    """
    import torch
    from torch.utils import flop_counter

    aten = torch.ops.aten
    if not any("grouped_mm" in str(op) for op in flop_counter.flop_registry):
        # Each token-expert row of a grouped matmul is one (1 x in) @ (in x out) product.
        # Its backward runs through the same op (dX = dY Wᵀ, dW = Xᵀ dY per group).
        flop_counter.register_flop_formula(aten._grouped_mm)(
            lambda a, b, *args, out_shape=None, **kw: 2 * a[0] * a[-1] * b[-1])
    if not any("flash_attention_for_cpu" in str(op) for op in flop_counter.flop_registry):
        flop_counter.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)(
            lambda q, k, v, *args, out_shape=None, **kw: flop_counter.sdpa_flop_count(q, k, v))
        flop_counter.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)(
            lambda g, q, k, v, *args, out_shape=None, **kw: flop_counter.sdpa_backward_flop_count(g, q, k, v))
    if device != "meta":
        yield
        return

    def sdpa(query: Any, key: Any, value: Any, attn_mask: Any = None, dropout_p: float = 0.0,
             is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> Any:
        # FlashAttention needs no mask and one head width for q, k and v; otherwise (masks,
        # MLA's wider query/key heads) CUDA runs the memory-efficient kernel.
        if attn_mask is None and query.shape[-1] == value.shape[-1]:
            return aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal, False,
                                                            scale=scale)[0]
        bias = None
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                attn_mask = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device)
            bias = attn_mask.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
        return aten._scaled_dot_product_efficient_attention(query, key, value, bias, True, dropout_p, is_causal,
                                                            scale=scale)[0]

    def dropout(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Any:
        # CUDA's fused dropout keeps a one-byte mask; the generic path would keep a full-width one.
        if not training or p == 0:
            return input
        return torch.native_dropout(input, p, True)[0]

    real_autocast = torch.autocast

    def autocast(device_type: str, *args: Any, **kwargs: Any) -> Any:
        # peft's merge of a parameter-wrapped LoRA (target_parameters) turns autocast off around it;
        # meta has no autocast state, and no autocast to turn off.
        return contextlib.nullcontext() if device_type == "meta" else real_autocast(device_type, *args, **kwargs)

    with mock.patch("torch.nn.functional.scaled_dot_product_attention", sdpa), \
            mock.patch("torch.nn.functional.dropout", dropout), mock.patch("torch.autocast", autocast), \
            mock.patch("transformers.masking_utils.find_packed_sequence_indices", lambda *a, **k: None):
        yield


def _categorize(snapshot: list[tuple[int, int, tuple[int, ...]]],
                rules: list[tuple[str, Any]]) -> dict[str, int]:
    """Bytes of the live storages by the first rule that claims each; the rest are activations."""
    breakdown = dict.fromkeys([name for name, _ in rules] + ["activations"], 0)
    for key, size, shape in snapshot:
        name = next((name for name, claims in rules if claims(key, shape)), "activations")
        breakdown[name] += size
    return breakdown


@record
class TracedStep:
    """What one real training step did."""

    params_total: int
    params_trainable: int
    flops_forward: int
    """Matmul FLOPs of the forward (loss included), as FlopCounterMode counts them."""
    flops_backward: int
    """Matmul FLOPs of the backward, checkpointed re-computation included."""
    saved_bytes: int
    """Distinct non-parameter storages the model saves for backward during a forward without
    labels (the loss's own saved log-softmax is not included)."""
    peak_bytes: int
    """Peak of live tensor bytes over a steady-state step (second step: optimizer states exist)."""
    peak_op: str
    """The operator whose output set the peak, and how far into the step it ran (op count)."""
    peak_breakdown: dict[str, int]
    """Live bytes at the peak by category: weights, gradients, optimizer states, logits, and
    activations (everything else: saved tensors, backward gradients, step temporaries)."""
    device_allocated_bytes: int | None = None
    """On a GPU, with ``measure_steps``: ``torch.cuda.max_memory_allocated`` over one plain steady-state
    step, before any tracing, after ``reset_peak_memory_stats``."""
    device_reserved_bytes: int | None = None
    """Likewise ``torch.cuda.max_memory_reserved``, the cache emptied first: what the step itself reserves."""
    step_seconds: float | None = None
    """With ``measure_steps``: the median wall time of that many plain steps (CUDA events on a GPU)."""

    @property
    def flops(self) -> int:
        return self.flops_forward + self.flops_backward


def _dtype(precision: str) -> Any:
    """The dtype activations (and a frozen base) are held in under a precision mode."""
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16}.get(modes.peak_key(precision), torch.bfloat16)


def _load_dtype(work: Workload, method: Method) -> Any:
    """The dtype the model is built in: fp32 weights under autocast when they train (the master
    copy), the compute dtype otherwise (a frozen base as peft users load it)."""
    import torch

    if work.precision in ("bf16-mixed", "fp16-mixed") and method.trains_base:
        return torch.float32
    return _dtype(work.precision)


class _InPlaceAdamW:
    """The memory of a fused AdamW step (``fused=True``; TE/Apex FusedAdam): states like
    ``torch.optim.AdamW`` (``zeros_like`` the parameter), an update that allocates nothing. The
    update's arithmetic is not Adam's: only its allocations matter to the trace."""

    def __init__(self, params: list[Any]) -> None:
        self.params = list(params)
        self.state: dict[Any, dict[str, Any]] = {}

    def step(self) -> None:
        import torch

        with torch.no_grad():
            for p in self.params:
                if p.grad is None:
                    continue
                if p not in self.state:
                    self.state[p] = {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                state = self.state[p]
                state["exp_avg"].mul_(0.9).add_(p.grad, alpha=0.1)
                state["exp_avg_sq"].mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
                p.add_(state["exp_avg"], alpha=-1e-6)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None


def _optimizer(name: str, params: list[Any]) -> Any:
    """The optimizer costplan's ``name`` stands for, on any device (8-bit and paged ones need CUDA)."""
    import torch

    if name == "adamw":
        return torch.optim.AdamW(params, foreach=True, fused=False)
    if name == "adamw-fused":
        return _InPlaceAdamW(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-3, foreach=True)
    if name == "sgd-momentum":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=True)
    raise ValueError(f"optimizer {name} is not traced (bitsandbytes and Adafactor steps are modelled only)")


def trace_training_step(model: ModelSpec, method: Method, work: Workload, *, device: str = "cpu",
                        seed: int = 0, measure_steps: int = 0, real_bitsandbytes: bool = False,
                        count_flops: bool = True) -> TracedStep:
    """Run real training steps and measure the second one, in the workload's precision mode.

    ``device="cpu"`` runs a small model for real; ``device="meta"`` runs any size without memory,
    with attention on the kernels a GPU would use (see ``_gpu_kernels``). Modes: fp32; bf16-mixed /
    fp16-mixed (fp32 weights when they train, a 16-bit frozen base otherwise, forward under
    autocast, ``costplan.autocast``); bf16-true (everything in bf16); bf16-master and fp16-master
    (16-bit weights, fp32 master copies the optimizer updates: DeepSpeed's 16-bit gradients cast at
    the step, or Megatron's fp32 main gradients accumulated by a hook). Adapters stay fp32 (peft) unless the
    workload keeps them in the model's dtype. Optimizer-in-backward steps each parameter from its
    gradient hook and frees the gradient.

    ``measure_steps`` (real devices): before anything is traced, one step to allocate the optimizer
    states, one plain step under the allocator's peak statistics and that many timed plain steps
    (``benchmarks/gpu_check.py``). ``real_bitsandbytes`` (CUDA): quantize a 4-bit or 8-bit base with
    bitsandbytes itself rather than the stand-in. ``count_flops=False`` leaves the FLOPs at 0 (torch's
    counter rejects CUDA's grouped-query attention shapes, which the meta trace routes itself).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from costplan.autocast import autocast_mode

    if work.precision == "fp8":
        raise ValueError("fp8 runs on CUDA only (Transformer Engine): modelled, not traced")
    torch.manual_seed(seed)
    attention = "sdpa" if work.attention == "flash" else "eager"
    module = build_model(model, attention=attention, device=device, dtype=_load_dtype(work, method))
    params_total = sum(p.numel() for p in module.parameters())
    if real_bitsandbytes and method.base_storage != "compute":
        quantize_with_bitsandbytes(module, model, method)
    elif method.base_storage == "nf4":
        _quantize_base(module, model, getattr(method, "double_quant", True))
    elif method.base_storage == "int8":
        _quantize_base_int8(module, model)
    # Autocast over the forward: the mixed modes, and a stack that autocasts a bf16 model too (the
    # HF Trainer with bf16=True runs accelerate's autocast whatever dtype the model was loaded in).
    autocast = (torch.float16 if work.precision == "fp16-mixed" else torch.bfloat16) if work.autocast else None
    if work.grad_ckpt:
        # Under autocast a checkpointed layer is re-run under autocast again (torch.utils.checkpoint
        # restores the autocast state); the emulation is re-entered the same way. A quantized base is
        # checkpointed re-entrantly, as peft's prepare_model_for_kbit_training sets it up (torch's
        # default), so bitsandbytes' context-held inputs live only while a layer is re-run.
        kwargs = {"use_reentrant": False, "context_fn": lambda: (contextlib.nullcontext(), autocast_mode(autocast))} \
            if autocast is not None else None
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        module.config.use_cache = False
        if method.base_storage != "compute":
            from torch.utils.checkpoint import checkpoint

            def reentrant(function: Any, *args: Any, **kw: Any) -> Any:
                def run(*a: Any, **k: Any) -> Any:
                    with autocast_mode(autocast) if autocast is not None else contextlib.nullcontext():
                        return function(*a, **k)
                return checkpoint(run, *args, use_reentrant=True, **kw)

            module._set_gradient_checkpointing(enable=True, gradient_checkpointing_func=reentrant)
    module = apply_method(module, method)
    module.train()
    trainable = [p for p in module.parameters() if p.requires_grad]
    if not method.trains_base and not work.fp32_adapters:
        with torch.no_grad():  # torchtune and LitGPT build the adapters with the model, in its dtype
            for p in trainable:
                p.data = p.data.to(_dtype(work.precision))
    master_copy = work.precision in modes.MASTER_MODES and method.trains_base
    master = [p.detach().float().clone().requires_grad_() for p in trainable] if master_copy else trainable
    main_grads: list[Any] = []
    if master_copy and work.fp32_main_grads:
        # Megatron: each bf16 gradient is added to a persistent fp32 main-gradient buffer and freed.
        main_grads = [torch.zeros_like(m) for m in master]

        def accumulate(main: Any) -> Any:
            def hook(p: Any) -> None:
                main.add_(p.grad)
                p.grad = None
            return hook

        for p, main in zip(trainable, main_grads, strict=True):
            p.register_post_accumulate_grad_hook(accumulate(main))
    if work.optimizer_in_backward:
        per_param = {p: _optimizer(work.optimizer, [p]) for p in master}

        def step_now(p: Any) -> None:
            per_param[p].step()
            per_param[p].zero_grad(set_to_none=True)

        for p in master:
            p.register_post_accumulate_grad_hook(step_now)

        class _Group:
            state = {k: v for o in per_param.values() for k, v in o.state.items()}

            def step(self) -> None:
                pass

            def zero_grad(self, set_to_none: bool = True) -> None:
                pass

        optimizer: Any = _Group()
    else:
        optimizer = _optimizer(work.optimizer, master)
    ids = torch.randint(0, model.vocab_size, (work.micro_batch, work.seq_len), device=device)
    inputs: dict[str, Any] = {"input_ids": ids}
    if model.is_encoder_decoder:  # the source for the encoder; the target ids are the labels
        if work.source_len is None:
            raise ValueError("an encoder-decoder step needs the workload's source_len")
        source = torch.randint(0, model.vocab_size, (work.micro_batch, work.source_len), device=device)
        inputs = {"input_ids": source, "decoder_input_ids": ids}

    def forward_context() -> Any:
        return autocast_mode(autocast) if autocast is not None else contextlib.nullcontext()

    def loss() -> Any:
        # Causal LMs shift the labels; BERT's masked-LM loss is taken over every position; T5
        # shifts the labels right into its decoder's input. The loss is computed inside the
        # model's forward, under autocast as accelerate wraps it.
        with forward_context():
            if model.is_encoder_decoder:
                return module(input_ids=inputs["input_ids"], labels=ids).loss
            return module(input_ids=ids, labels=ids).loss

    def step() -> None:
        # As transformers' Trainer does: keep the loss, drop the outputs (and their logits)
        # before backward.
        value = loss()
        value.backward()
        del value
        if master_copy:
            for i, (m, p) in enumerate(zip(master, trainable, strict=True)):
                m.grad = main_grads[i] if main_grads else p.grad.float()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if master_copy:
            with torch.no_grad():
                for m, p in zip(master, trainable, strict=True):
                    p.copy_(m)
        for p in trainable:
            p.grad = None

    counter = (lambda: FlopCounterMode(display=False)) if count_flops else contextlib.nullcontext
    with _gpu_kernels(device):
        measured: dict[str, Any] = {}
        if measure_steps:  # the allocator's own figures, before any tracing machinery has run
            step()
            measured = _measure_plain_steps(step, device, measure_steps)
        with counter() as forward_counter:
            value = loss()
        with counter() as backward_counter:
            value.backward()
        del value
        for p in trainable:
            p.grad = None
        if work.compiled:
            # torchtune compiles each layer (training.compile_model). AOT autograd's min-cut partitioner,
            # which Inductor uses, decides what a compiled layer keeps for backward. Compiled after the
            # FLOP count: dynamo does not compile under FlopCounterMode, and the FLOPs are the same.
            torch._dynamo.reset()  # a fresh model: its layers would otherwise hit the recompile limit
            for layer in _layers(module.get_base_model() if hasattr(module, "get_base_model") else module, model):
                layer.compile(backend="aot_eager_decomp_partition")
        step()  # the first step allocates the optimizer states
        gc.collect()
        saved: dict[int, tuple[Any, int]] = {}
        param_storages = {id(p.untyped_storage()) for p in module.parameters()}

        @torch._dynamo.disable  # called from compiled layers: run as it is, not traced by dynamo
        def pack(t: Any) -> Any:
            storage = t.untyped_storage()
            if id(storage) not in param_storages:
                saved[id(storage)] = (storage, storage.nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), forward_context():
            out = module(**inputs)
        saved_bytes = sum(size for _, size in saved.values())
        saved.clear()
        del out
        gc.collect()
        if work.optimizer_in_backward:
            optimizer.state = {k: v for o in per_param.values() for k, v in o.state.items()}
        states = [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
        existing = [*module.parameters(), *module.buffers(), *([] if master is trainable else master), *states,
                    *main_grads]
        live_bytes = _live_bytes_mode()
        with live_bytes(existing) as tracker:
            step()
        gc.collect()
        grads_at_peak: set[int] = set()

        def note_grads() -> None:
            grads_at_peak.update(id(t.grad.untyped_storage()) for t in (*trainable, *master) if t.grad is not None)

        with live_bytes(existing, snapshot_at=tracker.peak_at, on_snapshot=note_grads) as again:
            step()
    weights = {id(t.untyped_storage()) for t in (*module.parameters(), *module.buffers())}
    opt_states = {id(t.untyped_storage()) for t in states} | (
        set() if master is trainable else {id(m.untyped_storage()) for m in master})
    grads_at_peak |= {id(g.untyped_storage()) for g in main_grads}
    breakdown = _categorize(again.snapshot, [
        ("weights", lambda key, shape: key in weights),
        ("gradients", lambda key, shape: key in grads_at_peak),
        ("optimizer states", lambda key, shape: key in opt_states),
        ("logits", lambda key, shape: bool(shape) and shape[-1] == model.vocab_size),
    ])
    return TracedStep(params_total=params_total, params_trainable=sum(p.numel() for p in trainable),
                      flops_forward=forward_counter.get_total_flops() if count_flops else 0,
                      flops_backward=backward_counter.get_total_flops() if count_flops else 0, saved_bytes=saved_bytes,
                      peak_bytes=tracker.peak,
                      peak_op=f"{tracker.peak_op} (op {tracker.peak_at} of {tracker.ops})",
                      peak_breakdown=breakdown, **measured)


def _measure_plain_steps(step: Any, device: str, steps: int) -> dict[str, Any]:
    """The allocator's peaks over one plain step, then the median time of ``steps`` more."""
    import torch

    gc.collect()
    cuda = device.startswith("cuda")
    result: dict[str, Any] = {}
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # the reserve the first step left cached is not this step's own
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        result = {"device_allocated_bytes": torch.cuda.max_memory_allocated(),
                  "device_reserved_bytes": torch.cuda.max_memory_reserved()}
    from costplan.calibrate import Timer  # CUDA events on a GPU, the wall clock otherwise

    result["step_seconds"] = Timer("cuda" if cuda else "cpu", warmup=0, repeat=steps)(step)
    return result


@record
class TracedInference:
    """One prompt's prefill and one decode step, as ``generate`` runs them."""

    params_total: int
    flops_prefill: int
    flops_decode: int
    """The first decode step: one token attending over prompt_len + 1 keys."""
    peak_bytes: int
    peak_op: str
    peak_breakdown: dict[str, int]
    """Live bytes at the peak: weights, kv cache, logits, activations."""


def trace_inference_step(model: ModelSpec, work: Workload, *, device: str = "cpu", seed: int = 0) -> TracedInference:
    """Prefill ``prompt_len`` tokens then decode one, keeping logits of the last position only.

    An encoder-decoder's prefill is its encoder over the prompt (the source) with the first
    decoder step, which fills the cross-attention cache; its decode step is the second."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(seed)
    attention = "sdpa" if work.attention == "flash" else "eager"
    module = build_model(model, attention=attention, device=device, dtype=_dtype(work.precision))
    module.eval()
    prompt = torch.randint(0, model.vocab_size, (work.micro_batch, work.prompt_len), device=device)
    token = torch.randint(0, model.vocab_size, (work.micro_batch, 1), device=device)
    kv_shapes: set[tuple[int, ...]] = set()

    def generate(counters: tuple[Any, Any] | None = None) -> None:
        first = counters[0] if counters else contextlib.nullcontext()
        second = counters[1] if counters else contextlib.nullcontext()
        if model.is_encoder_decoder:
            start = torch.zeros((work.micro_batch, 1), dtype=torch.long, device=device)
            with first:
                out = module(input_ids=prompt, decoder_input_ids=start, use_cache=True)
            cache, encoded = out.past_key_values, out.encoder_last_hidden_state
            del out
            with second:
                out = module(encoder_outputs=(encoded,), decoder_input_ids=token, past_key_values=cache,
                             use_cache=True)
            del out, cache, encoded
            return
        with first:
            out = module(input_ids=prompt, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        del out
        with second:
            out = module(input_ids=token, past_key_values=cache, use_cache=True, logits_to_keep=1)
        del out, cache

    with torch.no_grad(), _gpu_kernels(device):
        counters = (FlopCounterMode(display=False), FlopCounterMode(display=False))
        generate(counters)
        existing = [*module.parameters(), *module.buffers()]
        live_bytes = _live_bytes_mode()
        with live_bytes(existing) as tracker:
            generate()
        with live_bytes(existing, snapshot_at=tracker.peak_at) as again:
            generate()
    batch, kv_heads, head_dim = work.micro_batch, model.num_kv_heads, model.head_dim
    if model.is_encoder_decoder:  # the decoder's own keys and values, and the source's
        kv_shapes |= {(batch, kv_heads, length, head_dim) for length in (1, 2, work.prompt_len)}
    for kind in layer_kinds(model):
        # A sliding layer's cache is the prompt's keys and values after the prefill, the window after.
        lengths = {work.prompt_len, work.prompt_len + 1}
        for length in lengths | {min(n, kind.window) for n in lengths if kind.window}:
            if model.mla is not None:  # the latent and the rotary key, one head each
                mla = model.mla
                kv_shapes |= {(batch, 1, length, mla.kv_lora_rank), (batch, 1, length, mla.qk_rope_head_dim)}
            elif not model.is_encoder_decoder:
                kv_shapes.add((batch, kv_heads, length, head_dim))
    weights = {id(t.untyped_storage()) for t in (*module.parameters(), *module.buffers())}
    breakdown = _categorize(again.snapshot, [
        ("weights", lambda key, shape: key in weights),
        ("kv cache", lambda key, shape: shape in kv_shapes),
        ("logits", lambda key, shape: bool(shape) and shape[-1] == model.vocab_size),
    ])
    return TracedInference(params_total=sum(p.numel() for p in module.parameters()),
                           flops_prefill=counters[0].get_total_flops(),
                           flops_decode=counters[1].get_total_flops(), peak_bytes=tracker.peak,
                           peak_op=f"{tracker.peak_op} (op {tracker.peak_at} of {tracker.ops})",
                           peak_breakdown=breakdown)
