"""Model architectures: the spec, its exact parameter inventory, presets and HF config.json files.

The inventory (``layer_linears`` and friends) lists every weight matrix with its shape, so the
parameter count, LoRA adapter sizes, quantized storage and Adafactor state all come from one
itemisation. It is checked against the real modules built on PyTorch's meta device in the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from costplan.errors import CostplanError, shown, unknown_name
from costplan.tables import keys, read_json, row_by_name

Norm = Literal["rmsnorm", "layernorm"]

Activation = Literal["silu", "gelu", "gelu_tanh", "gelu_new"]

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


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSpec:
    """A transformer's architecture numbers; every field as in the Hugging Face config."""

    name: str
    """Display name, e.g. ``llama-2-7b``."""
    family: str
    """Architecture family (``llama``, ``mistral``, ``mixtral``, ``qwen2``, ``gemma``, ``gpt2``,
    ``gpt_neox``, ``bert``); it fixes the traits below when read from a config."""
    hidden_size: int
    num_layers: int
    num_heads: int
    """Query heads."""
    num_kv_heads: int
    """Key/value heads (GQA when fewer than ``num_heads``; MHA when equal)."""
    head_dim: int
    ffn_size: int
    """Intermediate size of the MLP (of each expert for MoE)."""
    vocab_size: int
    max_positions: int
    num_experts: int = 1
    """Experts per MoE layer; 1 for a dense MLP."""
    experts_per_token: int = 1
    """Top-k experts each token is routed to."""
    tied_embeddings: bool = False
    gated_mlp: bool = True
    """SwiGLU/GeGLU-style gate and up projections (3 matrices) versus a plain 2-matrix MLP."""
    activation: Activation = "silu"
    norm: Norm = "rmsnorm"
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    fused_qkv: bool = False
    """One ``qkv`` matrix (GPT-2 ``c_attn``, GPT-NeoX ``query_key_value``) instead of three."""
    learned_positions: bool = False
    token_types: int = 0
    """BERT's segment embeddings."""
    causal: bool = True
    """Decoder (text generation) versus encoder (BERT)."""
    mlm_head: bool = False
    """BERT's masked-LM head: dense + LayerNorm transform and a decoder bias."""
    dropout: float = 0.0
    """Hidden/residual dropout probability used in training."""
    attention_dropout: float = 0.0
    softmax_fp32: bool = True
    """Eager attention upcasts its softmax to fp32 (Llama-style implementations do; GPT-2's and
    BERT's do not)."""
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
        if isinstance(self.token_types, bool) or not isinstance(self.token_types, int) \
                or not 0 <= self.token_types <= 1024:
            raise ValueError(f"model {self.name}: token_types must be an integer from 0 to 1024, "
                             f"got {shown(self.token_types)}")
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"model {self.name}: {name} must be a probability in [0, 1), got {shown(value)}")
        params = count_params(self).total
        if params > MAX_PARAMS:
            raise ValueError(f"model {self.name}: {params:.3g} parameters are above {MAX_PARAMS:.0e}, the most "
                             "costplan plans (the largest published models have about 2 trillion)")

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1


@dataclass(frozen=True, slots=True)
class Linear:
    """One weight matrix of a layer (``copies`` of it for MoE experts)."""

    role: str
    """``q``, ``k``, ``v``, ``qkv`` (fused), ``o``, ``gate``, ``up``, ``down``, ``router``."""
    in_features: int
    out_features: int
    bias: bool
    copies: int = 1
    """How many such matrices the layer holds (experts)."""
    active: int = 1
    """How many of the copies each token passes through (top-k)."""

    @property
    def params(self) -> int:
        return self.copies * (self.in_features * self.out_features + (self.out_features if self.bias else 0))

    @property
    def weight_elements(self) -> int:
        return self.in_features * self.out_features


def layer_linears(model: ModelSpec) -> tuple[Linear, ...]:
    """The weight matrices of one transformer layer, in forward order."""
    h = model.hidden_size
    if model.fused_qkv:
        attention = [Linear("qkv", h, model.q_size + 2 * model.kv_size, model.qkv_bias)]
    else:
        attention = [
            Linear("q", h, model.q_size, model.qkv_bias),
            Linear("k", h, model.kv_size, model.qkv_bias),
            Linear("v", h, model.kv_size, model.qkv_bias),
        ]
    attention.append(Linear("o", model.q_size, h, model.out_bias))
    e, k = model.num_experts, model.experts_per_token
    mlp = [Linear("router", h, e, False)] if model.is_moe else []
    if model.gated_mlp:
        mlp.append(Linear("gate", h, model.ffn_size, model.mlp_bias, e, k))
    mlp.append(Linear("up", h, model.ffn_size, model.mlp_bias, e, k))
    mlp.append(Linear("down", model.ffn_size, h, model.mlp_bias, e, k))
    return tuple(attention + mlp)


def norm_params(model: ModelSpec) -> int:
    """Parameters of one normalisation layer (weight, plus bias for LayerNorm)."""
    return model.hidden_size * (2 if model.norm == "layernorm" else 1)


@dataclass(frozen=True, slots=True)
class ParamCounts:
    """The parameter inventory by part; ``total`` equals the real module's count."""

    embeddings: int
    """Token (and position, segment) embeddings, with BERT's embedding LayerNorm."""
    layer_linear: int
    """All layers' weight matrices and their biases."""
    layer_norms: int
    final_norm: int
    head: int
    """Untied LM head, or BERT's MLM transform and decoder bias; 0 when tied."""

    @property
    def total(self) -> int:
        return self.embeddings + self.layer_linear + self.layer_norms + self.final_norm + self.head

    @property
    def token_embedding(self) -> int:
        return self.embeddings


def count_params(model: ModelSpec) -> ParamCounts:
    h, v = model.hidden_size, model.vocab_size
    embeddings = v * h
    if model.learned_positions:
        embeddings += model.max_positions * h
    embeddings += model.token_types * h
    if model.mlm_head:  # BERT is post-norm: its LayerNorm sits on the embeddings
        embeddings += norm_params(model)
    head = 0 if model.tied_embeddings else v * h
    if model.mlm_head:
        head += h * h + h + norm_params(model) + v
    return ParamCounts(
        embeddings=embeddings,
        layer_linear=model.num_layers * sum(lin.params for lin in layer_linears(model)),
        layer_norms=model.num_layers * 2 * norm_params(model),
        final_norm=0 if model.mlm_head else norm_params(model),
        head=head,
    )


# --- presets -------------------------------------------------------------------------------

_FAMILY_TRAITS: dict[str, dict[str, object]] = {
    "llama": {},
    "mistral": {},
    "mixtral": {},
    "qwen2": {"qkv_bias": True},
    "gemma": {"activation": "gelu_tanh", "tied_embeddings": True},
    "gpt2": {
        "gated_mlp": False, "activation": "gelu_new", "norm": "layernorm", "qkv_bias": True,
        "out_bias": True, "mlp_bias": True, "fused_qkv": True, "learned_positions": True,
        "tied_embeddings": True, "dropout": 0.1, "attention_dropout": 0.1, "softmax_fp32": False,
    },
    "gpt_neox": {
        "gated_mlp": False, "activation": "gelu", "norm": "layernorm", "qkv_bias": True,
        "out_bias": True, "mlp_bias": True, "fused_qkv": True,
    },
    "bert": {
        "gated_mlp": False, "activation": "gelu", "norm": "layernorm", "qkv_bias": True,
        "out_bias": True, "mlp_bias": True, "learned_positions": True, "token_types": 2,
        "causal": False, "mlm_head": True, "tied_embeddings": True, "dropout": 0.1,
        "attention_dropout": 0.1, "softmax_fp32": False,
    },
}

FAMILIES = tuple(_FAMILY_TRAITS)

_INT_COLUMNS = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "ffn_size",
                "vocab_size", "max_positions", "num_experts", "experts_per_token")


def _spec(name: str, family: str, numbers: dict[str, int], **overrides: object) -> ModelSpec:
    if family not in _FAMILY_TRAITS:
        raise unknown_name("architecture family", family, FAMILIES)
    traits = {**_FAMILY_TRAITS[family], **overrides}
    return ModelSpec(name=name, family=family, **numbers, **traits)  # type: ignore[arg-type]


def preset_names() -> list[str]:
    return keys("models")


def preset(name: str) -> ModelSpec:
    """A model from ``tables/models.csv`` by key or alias (``7b`` is Llama-2-7B)."""
    row = row_by_name("models", name, "model")
    numbers = {column: int(row[column]) for column in _INT_COLUMNS}
    overrides: dict[str, object] = {}
    if row.get("tied_embeddings"):
        overrides["tied_embeddings"] = row["tied_embeddings"].lower() == "true"
    published = int(row["params_published"]) if row.get("params_published") else None
    return _spec(row["key"], row["family"], numbers, params_published=published, **overrides)


# --- Hugging Face config.json ----------------------------------------------------------------

_MODEL_TYPE_FAMILY = {
    "llama": "llama", "mistral": "mistral", "mixtral": "mixtral", "qwen2": "qwen2",
    "gemma": "gemma", "gpt2": "gpt2", "gpt_neox": "gpt_neox", "bert": "bert",
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
    if not isinstance(model_type, str) or model_type not in _MODEL_TYPE_FAMILY:
        raise CostplanError(
            f"{where}: model_type {shown(model_type)} is not supported "
            f"(supported: {', '.join(sorted(_MODEL_TYPE_FAMILY))})."
        )
    name = name or path.parent.name or model_type
    try:
        numbers, overrides = _read_config(model_type, config)
        if not config.get("head_dim") and numbers["hidden_size"] % numbers["num_heads"]:
            raise ValueError(f"the hidden size ({numbers['hidden_size']}) must be a multiple of the "
                             f"{numbers['num_heads']} attention heads when head_dim is not given")
        return _spec(name[:100], _MODEL_TYPE_FAMILY[model_type], numbers, **overrides)
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


def _float(config: dict, key: str, default: float) -> float:
    """A finite real field of a config.json (dropout probabilities)."""
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key} must be a number, got {shown(value)}")
    return float(value)


def _big(value: float) -> str:
    return f"{int(value):,}" if value < 1e15 else f"{float(value):.3g}"


def _read_config(model_type: str, config: dict) -> tuple[dict[str, int], dict[str, object]]:
    overrides: dict[str, object] = {}
    if model_type == "gpt2":
        hidden, layers, heads = _int(config, "n_embd"), _int(config, "n_layer"), _int(config, "n_head")
        ffn = config.get("n_inner") or 4 * hidden
        positions = _int(config, "n_positions")
        kv_heads, head_dim = heads, hidden // heads
        overrides["dropout"] = _float(config, "resid_pdrop", 0.1)
        overrides["attention_dropout"] = _float(config, "attn_pdrop", 0.1)
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
    if model_type in ("llama", "mistral", "mixtral", "qwen2", "gemma"):
        overrides["qkv_bias"] = bool(config.get("attention_bias", model_type == "qwen2"))
        overrides["out_bias"] = bool(config.get("attention_bias", False)) and model_type != "qwen2"
        overrides["mlp_bias"] = bool(config.get("mlp_bias", False))
        act = config.get("hidden_act") or config.get("hidden_activation") or "silu"
        overrides["activation"] = {"silu": "silu", "swish": "silu", "gelu": "gelu"}.get(act, "gelu_tanh")
    if model_type == "gpt_neox":
        overrides["tied_embeddings"] = bool(config.get("tie_word_embeddings", False))
    numbers = {
        "hidden_size": hidden, "num_layers": layers, "num_heads": heads, "num_kv_heads": kv_heads,
        "head_dim": head_dim, "ffn_size": int(ffn), "vocab_size": _int(config, "vocab_size"),
        "max_positions": positions,
        "num_experts": _int(config, "num_local_experts", 1) if model_type == "mixtral" else 1,
        "experts_per_token": _int(config, "num_experts_per_tok", 1) if model_type == "mixtral" else 1,
    }
    return numbers, overrides


def resolve_model(name_or_path: str | Path) -> ModelSpec:
    """A preset name/alias, a path to a config.json or a folder holding one, or a Hugging Face Hub id
    (``org/name``) read from the local cache (``costplan.hub``)."""
    from costplan import hub

    if isinstance(name_or_path, Path):
        return from_hf_config(name_or_path)
    if not isinstance(name_or_path, str):
        raise CostplanError(f"model must be a preset name or a path to a config.json, not {shown(name_or_path)}.")
    if not name_or_path.strip():
        raise CostplanError("The model name is empty: give a preset (see `costplan models`) or a config.json.")
    if hub.is_repo_id(name_or_path):
        return from_hf_config(hub.locate(name_or_path).path, name=name_or_path)
    looks_like_path = any(sep in name_or_path for sep in ("/", "\\")) or name_or_path.endswith(".json")
    try:
        candidate = Path(name_or_path).expanduser()
        exists = candidate.exists()
    except (OSError, RuntimeError, ValueError):  # a name too long for a path, an unknown ~user
        candidate, exists = Path(name_or_path), False
    if exists or looks_like_path:
        return from_hf_config(candidate)
    return preset(name_or_path)


def with_overrides(model: ModelSpec, **changes: object) -> ModelSpec:
    """A copy of ``model`` with some fields changed (validated again)."""
    return replace(model, **changes)
