"""peft's ``adapter_config.json``: the method it describes, in costplan's terms (``--adapter``).

LoRA (rank, alpha, dropout, ``target_modules`` by the model's own module names or
``"all-linear"``, ``exclude_modules``, ``modules_to_save``, ``use_dora``, ``use_rslora``), prompt
tuning and prefix tuning (``num_virtual_tokens``). Target names are matched the way peft matches
them (``peft.tuners.tuners_utils.check_target_module_exists``): a list entry names a module whose
qualified name equals it or ends with ``.<entry>``; a string is a regular expression that must
match the whole qualified name. The names are tried against one layer's modules as transformers
names them for the model's family.

Settings costplan does not model are refused with one line rather than dropped: per-module ranks
(``rank_pattern``), a subset of layers, trained biases, other peft types. LoRA on the embeddings
or the LM head (``embed_tokens``, ``lm_head`` in ``target_modules``) is modelled.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from costplan.errors import CostplanError
from costplan.methods import Lora, Method, PrefixTuning, PromptTuning, QLora
from costplan.model import ModelSpec, layer_linears
from costplan.record import record
from costplan.tables import read_json

_LLAMA = {
    "q": ("model.layers.0.self_attn.q_proj",), "k": ("model.layers.0.self_attn.k_proj",),
    "v": ("model.layers.0.self_attn.v_proj",), "o": ("model.layers.0.self_attn.o_proj",),
    "gate": ("model.layers.0.mlp.gate_proj",), "up": ("model.layers.0.mlp.up_proj",),
    "down": ("model.layers.0.mlp.down_proj",), "router": ("model.layers.0.mlp.gate",),
}
MODULE_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "gemma": _LLAMA,
    # transformers 5 fuses Mixtral's experts into tensors (no modules to target); earlier versions
    # named them block_sparse_moe.experts.N.w1 (gate), w3 (up) and w2 (down), with the router as gate.
    "mixtral": {**{r: _LLAMA[r] for r in ("q", "k", "v", "o")},
                "router": ("model.layers.0.mlp.gate", "model.layers.0.block_sparse_moe.gate"),
                "gate": ("model.layers.0.block_sparse_moe.experts.0.w1",),
                "up": ("model.layers.0.block_sparse_moe.experts.0.w3",),
                "down": ("model.layers.0.block_sparse_moe.experts.0.w2",)},
    "gpt2": {"qkv": ("transformer.h.0.attn.c_attn",), "o": ("transformer.h.0.attn.c_proj",),
             "up": ("transformer.h.0.mlp.c_fc",), "down": ("transformer.h.0.mlp.c_proj",)},
    "gpt_neox": {"qkv": ("gpt_neox.layers.0.attention.query_key_value",),
                 "o": ("gpt_neox.layers.0.attention.dense",), "up": ("gpt_neox.layers.0.mlp.dense_h_to_4h",),
                 "down": ("gpt_neox.layers.0.mlp.dense_4h_to_h",)},
    "phi": {"q": ("model.layers.0.self_attn.q_proj",), "k": ("model.layers.0.self_attn.k_proj",),
            "v": ("model.layers.0.self_attn.v_proj",), "o": ("model.layers.0.self_attn.dense",),
            "up": ("model.layers.0.mlp.fc1",), "down": ("model.layers.0.mlp.fc2",)},
    "starcoder2": {**{r: _LLAMA[r] for r in ("q", "k", "v", "o")}, "up": ("model.layers.0.mlp.c_fc",),
                   "down": ("model.layers.0.mlp.c_proj",)},
    "bert": {"q": ("bert.encoder.layer.0.attention.self.query",), "k": ("bert.encoder.layer.0.attention.self.key",),
             "v": ("bert.encoder.layer.0.attention.self.value",),
             "o": ("bert.encoder.layer.0.attention.output.dense",),
             "up": ("bert.encoder.layer.0.intermediate.dense",), "down": ("bert.encoder.layer.0.output.dense",)},
}
"""One layer's qualified module names per role, by family (families not listed use Llama's)."""

EMBEDDING_NAMES = ("embed_tokens", "wte", "embed_in", "word_embeddings")
HEAD_NAMES = ("lm_head", "embed_out")
_OUTSIDE_LAYERS = {**{n: "embeddings" for n in EMBEDDING_NAMES}, **{n: "head" for n in HEAD_NAMES}}

DEFAULT_TARGETS = ("q", "v")
"""peft's default LoRA targets for these families (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING):
q_proj and v_proj, c_attn for GPT-2, query_key_value for GPT-NeoX, query and value for BERT."""

_METHOD_OF = {"LORA": "lora", "PROMPT_TUNING": "prompt", "PREFIX_TUNING": "prefix"}
_COMPATIBLE = {"lora": ("lora", "qlora"), "prompt": ("prompt",), "prefix": ("prefix",)}


@record
class AdapterConfig:
    """An ``adapter_config.json`` as read, before it meets a model."""

    path: Path
    peft_type: str
    data: dict[str, Any]

    @property
    def method_key(self) -> str:
        return _METHOD_OF[self.peft_type]

    @property
    def base_model(self) -> str | None:
        """``base_model_name_or_path``: a Hub id or a local folder."""
        value = self.data.get("base_model_name_or_path")
        return value if isinstance(value, str) and value.strip() else None

    def method(self, model: ModelSpec, asked: str | None = None) -> tuple[Method, list[str]]:
        """The method for ``model`` (``asked``: an explicit ``--method``, which must agree) and notes."""
        key = self.method_key
        if asked is not None and asked.lower() not in _COMPATIBLE[key]:
            raise CostplanError(f"--method {asked} contradicts {self.path}, a {self.peft_type} adapter "
                                f"(use --method {' or '.join(_COMPATIBLE[key])}, or leave --method out).")
        where = f"adapter {self.path} ({self.peft_type}, peft {self.data.get('peft_version') or 'version unstated'})"
        if key == "lora":
            lora, notes = self._lora(model, asked == "qlora")
            return lora, [where, *notes]
        tokens = _positive_int(self.data, "num_virtual_tokens", self.path)
        if key == "prefix":
            if self.data.get("prefix_projection"):
                raise CostplanError(f"{self.path}: prefix_projection (a reparameterisation MLP) is not modelled; "
                                    "costplan plans prefix tuning without it.")
            return PrefixTuning(num_virtual_tokens=tokens), [where]
        return PromptTuning(num_virtual_tokens=tokens), [where]

    def _lora(self, model: ModelSpec, quantized: bool) -> tuple[Lora, list[str]]:
        d, path = self.data, self.path
        _refuse_if_set(d, path, "rank_pattern", "per-module ranks (rank_pattern)")
        _refuse_if_set(d, path, "target_parameters", "LoRA on parameters (target_parameters, fused MoE experts)")
        _refuse_if_set(d, path, "trainable_token_indices", "trainable token rows (trainable_token_indices)")
        if d.get("bias", "none") not in ("none", None):
            raise CostplanError(f"{path}: bias={d['bias']!r} trains biases, which costplan does not model.")
        rank = _positive_int(d, "r", path)
        dropout = d.get("lora_dropout") or 0.0
        alpha = d.get("lora_alpha")
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
            raise CostplanError(f"{path}: lora_dropout must be a number in [0, 1), got {dropout!r}.")
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))):
            raise CostplanError(f"{path}: lora_alpha must be a number, got {alpha!r}.")
        notes: list[str] = []
        targets = target_roles(model, d.get("target_modules"), d.get("exclude_modules"), path, notes)
        subset = d.get("layers_to_transform")
        if subset not in (None, [], ""):
            chosen = [subset] if isinstance(subset, int) and not isinstance(subset, bool) else subset
            if not isinstance(chosen, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in chosen):
                raise CostplanError(f"{path}: layers_to_transform must be a layer index or a list of them, "
                                    f"got {subset!r}.")
            notes.append(subset_note(sorted(set(chosen)), "layers_to_transform"))
        saved = saved_modules(d.get("modules_to_save"), path)
        if d.get("alpha_pattern"):
            notes.append("alpha_pattern changes scaling only: no effect on cost")
        cls = QLora if quantized else Lora
        lora = cls(rank=rank, targets=targets, dropout=float(dropout), alpha=None if alpha is None else float(alpha),
                   rslora=bool(d.get("use_rslora")), dora=bool(d.get("use_dora")), modules_to_save=saved)
        return lora, notes


def read_adapter_config(path: str | Path) -> AdapterConfig:
    """Read ``adapter_config.json`` (or a folder holding one)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "adapter_config.json"
    data = read_json(path, "adapter_config.json")
    if not isinstance(data, dict):
        raise CostplanError(f"{path} does not hold a JSON object.")
    peft_type = str(data.get("peft_type") or "").upper()
    if not peft_type:
        raise CostplanError(f"{path} has no peft_type: is it a peft adapter_config.json?")
    if peft_type not in _METHOD_OF:
        raise CostplanError(f"{path}: peft_type {peft_type} is not modelled "
                            f"(costplan plans {', '.join(sorted(_METHOD_OF))}).")
    return AdapterConfig(path, peft_type, data)


def _positive_int(data: dict[str, Any], key: str, path: Path) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CostplanError(f"{path}: {key} must be a positive integer, got {value!r}.")
    return value


def _refuse_if_set(data: dict[str, Any], path: Path, key: str, what: str) -> None:
    if data.get(key) not in (None, {}, [], ""):
        raise CostplanError(f"{path}: {what} is not modelled.")


def _matches(target: str | list[str], name: str) -> bool:
    if isinstance(target, str):
        return re.fullmatch(target, name) is not None
    return any(name == t or name.endswith(f".{t}") for t in target)


def target_roles(model: ModelSpec, targets: Any, exclude: Any, path: Path, notes: list[str]) -> tuple[str, ...]:
    """LoRA roles (q, k, v, qkv, o, gate, up, down, router) that peft's target_modules select."""
    present = [lin.role for lin in layer_linears(model)]
    if targets is None:
        notes.append("target_modules not set: peft's default for the family (query and value projections)")
        return tuple(r for r in DEFAULT_TARGETS if r in present) or ("qkv",)
    if targets == "all-linear" or targets == ["all-linear"]:
        return tuple(present)
    if not (isinstance(targets, str) or (isinstance(targets, list) and all(isinstance(t, str) for t in targets))):
        raise CostplanError(f"{path}: target_modules must be a list of names or a regular expression.")
    names = MODULE_NAMES.get(model.family, _LLAMA)
    outer = list(dict.fromkeys(part for n, part in _OUTSIDE_LAYERS.items()
                               if _matches(targets, f"model.{n}") or _matches(targets, n)))

    def in_layer(name: str, i: int) -> str:  # the names are layer 0's: "model.layers.0.self_attn.q_proj"
        return name.replace(".0.", f".{i}.", 1)

    def layers(role: str, pattern: Any) -> list[int]:
        return [i for i in range(model.num_layers)
                if any(_matches(pattern, in_layer(name, i)) for name in names.get(role, ()))]

    hits = {role: layers(role, targets) for role in present}
    if exclude:
        for role, found in hits.items():
            excluded = set(layers(role, exclude))
            hits[role] = [i for i in found if i not in excluded]
    chosen = [role for role in present if hits[role]]
    partial = sorted({i for role in chosen for i in hits[role] if len(hits[role]) < model.num_layers})
    if partial:
        notes.append(subset_note(partial, "target_modules"))
    if isinstance(targets, list):
        unused = [t for t in targets if not any(layers(role, [t]) for role in present)]
        if unused:
            notes.append(f"target_modules {', '.join(unused)} name no layer matrix of {model.family} "
                         "(peft ignores them too)")
    if not chosen and not outer:
        known = sorted({n.rsplit(".", 1)[-1] for role in present for n in names.get(role, ())})
        raise CostplanError(f"{path}: target_modules {targets!r} match no layer matrix of {model.name} "
                            f"({model.family}: {', '.join(known)}).")
    return (*chosen, *outer)


def subset_note(layers: list[int], what: str) -> str:
    """The assumption line for adapters on some layers only (``what`` names the setting that says so)."""
    shown = ", ".join(map(str, layers[:12])) + (", ..." if len(layers) > 12 else "")
    return (f"{what} puts adapters on layers {shown} only; costplan puts them in every layer (adapters of a few MB "
            "more, their FLOPs a fraction of a percent)")


def saved_modules(value: Any, path: Path) -> tuple[str, ...]:
    """``modules_to_save`` as costplan's parts (embeddings, head); anything else is refused."""
    if value in (None, []):
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CostplanError(f"{path}: modules_to_save must be a list of module names.")
    parts, unknown = [], []
    for name in value:
        part = _OUTSIDE_LAYERS.get(name.rsplit(".", 1)[-1])
        (parts if part else unknown).append(part or name)
    if unknown:
        raise CostplanError(f"{path}: modules_to_save {', '.join(unknown)} is not modelled "
                            f"(costplan models {', '.join(_OUTSIDE_LAYERS)}).")
    return tuple(dict.fromkeys(parts))
