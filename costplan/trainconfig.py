"""Training configs a team already wrote, as estimate settings (``estimate --from FILE``).

Four formats, told apart by their keys:

- **Axolotl** YAML (``base_model``, ``micro_batch_size``, ``sequence_len``, ``adapter``, ``lora_*``,
  ``load_in_4bit``, ``deepspeed``/``fsdp``);
- **torchtune** recipe config YAML (``model: {_component_: torchtune.models...}``, ``batch_size``,
  ``dtype``, ``enable_activation_checkpointing``);
- **LLaMA-Factory** YAML (``model_name_or_path``, ``finetuning_type``, ``cutoff_len``, ``lora_target``,
  ``quantization_bit``);
- a **TRL / transformers TrainingArguments** JSON (``per_device_train_batch_size``, ``optim``,
  ``gradient_checkpointing``, ``deepspeed``, ``fsdp``), as ``TrainingArguments.to_json_string()``
  writes it.

What the file says becomes keyword arguments of ``costplan.estimate`` (``options``); the command line
overrides them. Every key is accounted for in ``notes``: used, known to have no effect on compute
(counted), or unknown (listed by name). The global batch is micro-batch x accumulation on one GPU, as
the file states it; on more GPUs the accumulation shrinks to keep it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Any

from costplan.errors import CostplanError
from costplan.record import record

KINDS = ("axolotl", "torchtune", "llama-factory", "training-arguments")

OPTIMIZERS = {
    "adamw_torch": "adamw", "adamw_hf": "adamw", "adamw": "adamw", "adamw_torch_fused": "adamw-fused",
    "adamw_apex_fused": "adamw-fused", "adamw_bnb_8bit": "adamw-8bit", "adamw_8bit": "adamw-8bit",
    "adamw_torch_8bit": "adamw-8bit",  # torchao's AdamW8bit: blockwise 8-bit states, as bitsandbytes keeps them
    "paged_adamw_8bit": "paged-adamw-8bit", "paged_adamw_32bit": "paged-adamw", "paged_adamw": "paged-adamw",
    "adafactor": "adafactor", "sgd": "sgd",
    # torchtune components
    "torch.optim.adamw": "adamw", "bitsandbytes.optim.pagedadamw8bit": "paged-adamw-8bit",
    "bitsandbytes.optim.pagedadamw": "paged-adamw", "bitsandbytes.optim.adamw8bit": "adamw-8bit",
    "torch.optim.sgd": "sgd",
}

# Keys known to change nothing costplan computes (logging, schedules, data paths, evaluation...).
_NO_EFFECT = re.compile(
    r"^(output_dir|overwrite_output_dir|logging.*|log_.*|.*_log.*|report_to|run_name|wandb_.*|mlflow_.*|comet_.*|"
    r"save_.*|saves_per_epoch|.*hub.*|push_to_hub.*|resume_from_checkpoint|seed|data_seed|shuffle|"
    r"learning_rate|lr|lr_.*|warmup.*|weight_decay|adam_.*|max_grad_norm|clip_grad_norm|label_.*|"
    r"eval.*|.*_eval_.*|do_eval|do_predict|do_train|val_set_size|val_size|evals_per_epoch|per_device_eval_.*|"
    r"per_gpu_eval_.*|prediction_loss_only|metric_.*|greater_is_better|load_best_model_at_end|"
    r"dataset.*|datasets|template|chat_template|max_samples|preprocessing_.*|dataloader_.*|overwrite_cache|"
    r"special_tokens|tokenizer.*|trust_remote_code|model_type|strict|special_tokens|plot_loss|"
    r"ddp_.*|disable_tqdm|tf32|jit_mode_eval|use_ipex|use_cpu|no_cuda|use_mps_device|local_rank|device|"
    r"past_index|remove_unused_columns|include_.*|skip_memory_metrics|full_determinism|ray_.*|debug|"
    r"profiler|loss|checkpointer|resume_.*|batch_size_val|run_val_every_n_steps|max_steps_per_epoch|"
    r"group_by_length|length_column_name|neftune_noise_alpha|auto_find_batch_size|torchdynamo|mp_parameters|"
    r"optim_args|adafactor|fp16_opt_level|half_precision_backend|fp16_backend|bf16_full_eval|fp16_full_eval|"
    r"lora_model_dir|gradient_checkpointing_kwargs|ignore_data_skip|restore_callback_states_from_checkpoint|"
    r"torch_empty_cache_steps|average_tokens_across_devices|accelerator_config|split_batches|dispatch_batches|"
    r"tpu_.*|xla.*|hqq_.*|quantization_method|stage|finetuning_type|lora_alpha|train_on_inputs|"
    r"per_gpu_.*|fsdp_.*|project|train_sampling_strategy|use_legacy_prediction_loop|torch_compile_.*|model_init_kwargs|"
    r"group_by_length|flash_attention|sdp_attention|attn_implementation|flash_attn|pad_to_sequence_len|"
    r"sample_packing|eval_sample_packing|packing|neat_packing|enable_activation_offloading|compile|"
    r"custom_sharded_layers|optimizer_in_bwd|tokenizer_type|is_llama_derived_model|dtype|bf16|fp16|"
    r"gradient_checkpointing|enable_activation_checkpointing|max_steps|num_train_epochs|num_epochs|epochs)$")


@record
class TrainingConfig:
    """A training config as costplan reads it."""

    path: Path
    kind: str
    """One of ``KINDS``."""
    options: dict[str, Any]
    """Keyword arguments of ``costplan.estimate`` the file sets."""
    notes: tuple[str, ...]
    """Lines for the estimate's assumptions: what was read, what was approximated, what was not used."""
    unknown: tuple[str, ...] = field(default=())
    """Keys costplan does not know (also named in ``notes``)."""


class _Reader:
    """Reads keys off one mapping and remembers which were used."""

    def __init__(self, data: dict[str, Any], path: Path) -> None:
        self.data, self.path = data, path
        self.used: set[str] = set()
        self.options: dict[str, Any] = {}
        self.said: list[str] = []
        self.notes: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.data:
            self.used.add(key)
            value = self.data[key]
            return default if value is None else value
        return default

    def number(self, key: str, kind: Callable[[Any], Any] = int, low: float = 1) -> Any:
        value = self.get(key)
        if value is None or value == "auto":
            return None
        try:
            if isinstance(value, bool):
                raise ValueError
            number = kind(float(value)) if kind is int and float(value) == int(float(value)) else kind(value)
        except (TypeError, ValueError):
            raise CostplanError(f"{self.path}: {key} must be a number, got {value!r}.") from None
        if number < low:
            raise CostplanError(f"{self.path}: {key} must be at least {low:g}, got {value!r}.")
        return number

    def set(self, option: str, value: Any, said: str | None = None) -> None:
        if value is None:
            return
        self.options[option] = value
        if said:
            self.said.append(said)

    def finish(self, kind: str, label: str) -> TrainingConfig:
        # Unread keys: known to change no cost, or left unset (null, false, 0, empty) count as quiet;
        # the rest are unknown and named.
        quiet = [k for k, v in self.data.items() if k not in self.used
                 and (_NO_EFFECT.match(str(k)) or v is None or v is False or v in (0, "", [], {}))]
        unknown = [k for k in self.data if k not in self.used and k not in quiet]
        notes = [f"from {self.path} ({label}): {', '.join(self.said) if self.said else 'no compute settings'}",
                 *self.notes]
        if quiet:
            notes.append(f"{len(quiet)} key(s) of the file unset or changing nothing costplan computes, not used "
                         f"({', '.join(map(str, quiet[:6]))}{', ...' if len(quiet) > 6 else ''})")
        if unknown:
            notes.append(f"unknown key(s) in the file, not used: {', '.join(map(str, unknown))}")
        return TrainingConfig(self.path, kind, self.options, tuple(notes), tuple(map(str, unknown)))


def read_training_config(path: str | Path) -> TrainingConfig:
    """Read an Axolotl, torchtune or LLaMA-Factory YAML, or a TrainingArguments JSON."""
    from costplan.tables import read_small_file

    path = Path(path).expanduser()
    try:
        text = read_small_file(path, "training config").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CostplanError(f"{path} is not a readable training config: {exc}.") from None
    data = _parse(path, text)
    if not isinstance(data, dict) or not data:
        raise CostplanError(f"{path} does not hold a mapping of settings (an Axolotl, torchtune or LLaMA-Factory "
                            "YAML, or a TrainingArguments JSON).")
    try:
        return _read_settings(data, path, text)
    except (TypeError, AttributeError) as exc:  # a setting of the wrong kind (a list where a number goes)
        raise CostplanError(f"{path}: a setting has the wrong type ({' '.join(str(exc).split())[:160]}).") from None


def _read_settings(data: dict[str, Any], path: Path, text: str) -> TrainingConfig:
    reader = _Reader(data, path)
    if isinstance(data.get("model"), dict) and "_component_" in data["model"]:
        return _torchtune(reader, text)
    if "model_name_or_path" in data or "finetuning_type" in data or "cutoff_len" in data:
        return _llama_factory(reader)
    if "base_model" in data or "micro_batch_size" in data or "sequence_len" in data:
        return _axolotl(reader)
    if "per_device_train_batch_size" in data or "gradient_accumulation_steps" in data or "optim" in data:
        return _training_arguments(reader)
    raise CostplanError(f"{path} is not a config costplan recognises (Axolotl: base_model/micro_batch_size; "
                        "torchtune: model._component_; LLaMA-Factory: model_name_or_path/finetuning_type; "
                        "TrainingArguments JSON: per_device_train_batch_size).")


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise CostplanError(f"{path} is not valid JSON: {exc}.") from None
    try:
        import yaml
    except ImportError:
        raise CostplanError("reading a YAML training config needs PyYAML: pip install pyyaml.") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CostplanError(f"{path} is not valid YAML: {' '.join(str(exc).split())}.") from None


# --- shared pieces -----------------------------------------------------------------------------

def _batch(r: _Reader, micro_key: str, accum_key: str) -> None:
    micro = r.number(micro_key)
    accum = r.number(accum_key) or 1
    if micro:
        r.set("micro_batch", micro)
        r.set("global_batch", micro * accum,
              f"micro-batch {micro} x {accum} accumulation = global batch {micro * accum} sequences (as on one GPU)")


def _steps(r: _Reader, key: str) -> None:
    steps = r.number(key, low=-1)
    if steps and steps > 0 and not (r.options.get("seq_len") and r.options.get("global_batch")):
        r.notes.append(f"{key} {steps}: the file gives no sequence length or batch to turn steps into tokens; "
                       "pass --tokens")
    elif steps and steps > 0:
        tokens = steps * r.options["global_batch"] * r.options["seq_len"]
        r.set("tokens", float(tokens), f"{key} {steps} -> {tokens:.3g} tokens at most (full sequences)")
        r.set("epochs", 1.0)


def _optimizer(r: _Reader, key: str) -> None:
    name = r.get(key)
    if isinstance(name, dict):
        component = str(name.get("_component_", ""))
        fused = bool(name.get("fused"))
        name = component
    else:
        fused = False
    if not name:
        return
    mapped = OPTIMIZERS.get(str(name).lower())
    if mapped == "adamw" and fused:
        mapped = "adamw-fused"
    if mapped is None:
        r.notes.append(f"optimizer {name!r} is not modelled: AdamW planned instead")
        return
    r.set("optimizer", mapped, f"optimizer {mapped}")


def _precision(r: _Reader) -> None:
    bf16, fp16 = r.get("bf16"), r.get("fp16")
    if bf16 in (True, "auto", "true"):
        r.set("precision", "bf16", "bf16" + (" (auto)" if bf16 == "auto" else ""))
    elif fp16 in (True, "true"):
        r.set("precision", "fp16", "fp16")
    elif bf16 is False and fp16 in (False, None) and ("bf16" in r.data or "fp16" in r.data):
        r.set("precision", "fp32", "fp32 (neither bf16 nor fp16)")


def _zero_from_deepspeed(r: _Reader, value: Any) -> None:
    config: Any = value
    if isinstance(value, str):
        candidates = [Path(value), r.path.parent / value]
        found = next((c for c in candidates if c.is_file()), None)
        if found is not None:
            try:
                config = json.loads(found.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise CostplanError(f"{r.path}: deepspeed config {value} is not readable JSON: {exc}.") from None
        else:
            match = re.search(r"(?:zero|_z)(\d)", Path(value).name.lower())
            if not match:
                r.notes.append(f"deepspeed config {value} not found here and its stage not in its name: ZeRO auto")
                return
            r.set("zero", int(match.group(1)), f"DeepSpeed ZeRO-{match.group(1)} (from the name {Path(value).name}; "
                                               "file not found here)")
            r.set("framework", "deepspeed")
            if "offload" in Path(value).name.lower():
                r.set("offload", ("optimizer",), "DeepSpeed optimizer offload (from the file's name)")
            return
    stage = (config or {}).get("zero_optimization", {}).get("stage") if isinstance(config, dict) else None
    if stage is None:
        r.notes.append("deepspeed config without zero_optimization.stage: ZeRO auto")
        return
    r.set("zero", int(stage), f"DeepSpeed ZeRO-{stage}")
    r.set("framework", "deepspeed")
    zero = config["zero_optimization"]
    offloaded = tuple(what for key, what in (("offload_optimizer", "optimizer"), ("offload_param", "params"))
                      if isinstance(zero.get(key), dict) and zero[key].get("device") not in (None, "none"))
    if offloaded:
        r.set("offload", offloaded, f"DeepSpeed offload of {' and '.join(offloaded)} to the host")


def _zero_from_fsdp(r: _Reader, fsdp: Any, fsdp_config: Any) -> None:
    words = " ".join(map(str, fsdp)) if isinstance(fsdp, list) else "" if fsdp in (None, False, True) else str(fsdp)
    config = fsdp_config if isinstance(fsdp_config, dict) else {}
    strategy = str(config.get("fsdp_sharding_strategy", config.get("sharding_strategy", ""))).lower()
    text = f"{words} {strategy}".lower()
    if fsdp is True and not text.strip():  # transformers 5: fsdp=True, FSDP2's reshard_after_forward decides
        reshard = config.get("reshard_after_forward", True)
        r.set("zero", 3 if reshard else 2, "FSDP " + ("full shard (reshard_after_forward, ZeRO-3)" if reshard
                                                      else "without resharding after forward (ZeRO-2)"))
    elif "full_shard" in text or "hybrid_shard" in text:
        r.set("zero", 3, "FSDP full shard (ZeRO-3)")
    elif "shard_grad_op" in text:
        r.set("zero", 2, "FSDP shard_grad_op (ZeRO-2)")
    elif text.strip():
        r.notes.append(f"fsdp {words or strategy!r}: sharding not recognised, ZeRO auto")
    r.set("framework", "fsdp")
    if config.get("fsdp_offload_params") or config.get("offload_params") or "offload" in words:
        r.set("offload", ("optimizer", "params"), "FSDP CPU offload of parameters, gradients and optimizer states")


def _epochs(epochs: float | None) -> str | None:
    return f"{epochs:g} epoch{'' if epochs == 1 else 's'}" if epochs else None


def _targets(names: list[str]) -> str:
    """Module names (q_proj, ...) as costplan's LoRA targets."""
    return ",".join(str(n).removesuffix("_proj") for n in names)


_ROLE_MODULES = {
    "q": ("self_attn.q_proj",), "k": ("self_attn.k_proj",), "v": ("self_attn.v_proj",), "o": ("self_attn.o_proj",),
    "gate": ("mlp.gate_proj", "mlp.shared_experts.gate_proj"), "up": ("mlp.up_proj", "mlp.shared_experts.up_proj"),
    "down": ("mlp.down_proj", "mlp.shared_experts.down_proj"),
    "q_a": ("self_attn.q_a_proj",), "q_b": ("self_attn.q_b_proj",), "kv_a": ("self_attn.kv_a_proj_with_mqa",),
    "kv_b": ("self_attn.kv_b_proj",),
}
"""The module names peft sees in a Llama-style layer (MLA's and DeepSeek's shared experts included), by LoRA role."""
_LAYER_PREFIXES = ("model.layers.{i}.", "model.language_model.layers.{i}.", "language_model.model.layers.{i}.",
                   "model.language_model.model.layers.{i}.", "model.text_model.layers.{i}.")
"""Where the decoder's layers sit: a causal LM, and the language model inside an image-text container."""
_OUTER_MODULES = {"head": ("lm_head", "language_model.lm_head"),
                  "embeddings": ("model.embed_tokens", "model.language_model.embed_tokens",
                                 "language_model.model.embed_tokens")}
_PROBED_LAYERS = 128
_REGEX = re.compile(r"[\\\[\](){}|*+?^$]")


def _lora_targets(r: _Reader, value: Any) -> None:
    """peft's ``target_modules`` as costplan's LoRA targets: a string is a regular expression that must
    match a module's whole name (peft's ``re.fullmatch``), a list names modules by their last parts;
    names a layer does not have are left out, as peft leaves them."""
    if isinstance(value, str) and _REGEX.search(value):
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise CostplanError(f"{r.path}: lora_target_modules {value!r} is not a regular expression "
                                f"({exc}).") from None
        layers: dict[str, list[int]] = {}
        for role, modules in _ROLE_MODULES.items():
            hits = [i for i in range(_PROBED_LAYERS) if any(pattern.fullmatch(prefix.format(i=i) + module)
                                                            for prefix in _LAYER_PREFIXES for module in modules)]
            if hits:
                layers[role] = hits
        outer = [part for part, names in _OUTER_MODULES.items() if any(pattern.fullmatch(n) for n in names)]
        if not layers and not outer:
            raise CostplanError(f"{r.path}: lora_target_modules {value!r} (a regular expression, as peft reads a "
                                "string) matches no projection of a Llama-style layer "
                                "(model.layers.N.self_attn.q_proj, mlp.gate_proj, ...).")
        some = sorted({i for hits in layers.values() for i in hits if len(hits) < _PROBED_LAYERS})
        if some:
            from costplan.adapter_config import subset_note

            r.notes.append(subset_note(some, "lora_target_modules"))
        roles = [*layers, *outer]
        r.set("lora_targets", ",".join(roles), f"targets {','.join(roles)} (the regular expression {value})")
        return
    names = value if isinstance(value, list) else str(value).split(",")
    from costplan.methods import parse_targets

    roles, unknown = [], []
    for name in (str(n).strip() for n in names):
        last = name.rsplit(".", 1)[-1]
        try:
            roles.extend(parse_targets(last))
        except CostplanError:
            unknown.append(name)
    if unknown and roles:
        r.notes.append(f"lora_target_modules {', '.join(unknown)} name no matrix costplan models in a decoder "
                       "layer (peft leaves out the names a model lacks)")
    r.set("lora_targets", ",".join(dict.fromkeys(roles)) if roles else _targets(unknown), f"targets {value}")


def _lora_extras(r: _Reader, alpha_key: str, dora_key: str, rslora_key: str, saved_key: str) -> None:
    from costplan.adapter_config import saved_modules

    alpha = r.get(alpha_key)
    if alpha is not None:
        r.set("lora_alpha", float(alpha))
    if r.get(dora_key):
        r.set("use_dora", True, "DoRA")
    if r.get(rslora_key):
        r.set("use_rslora", True, "rsLoRA")
    saved = r.get(saved_key)
    if isinstance(saved, str):
        saved = [s.strip() for s in saved.split(",") if s.strip()]
    if saved:
        r.set("modules_to_save", saved_modules(saved, r.path), f"modules_to_save {', '.join(saved)}")


# --- the four formats ---------------------------------------------------------------------------

def _padding(r: _Reader, packed: Any, to_max: Any = None, grouped: Any = None) -> None:
    """How the stack fills rows from a --dataset (``dataset.PADDINGS``): packed when the config packs;
    padded to ``seq_len`` when it says so; else each micro-batch to its longest, the collators' way,
    over length-grouped micro-batches when the Trainer groups by length."""
    if packed:
        r.set("padding", "packed", "sequences packed")
    elif to_max:
        r.set("padding", "max", "every sequence padded to the sequence length")
    elif grouped:
        r.set("padding", "grouped", "micro-batches grouped by length, each padded to its longest sequence")
    else:
        r.set("padding", "longest", "each micro-batch padded to its longest sequence")


def _grouped(r: _Reader) -> bool:
    """The Hugging Face Trainer samples length-grouped micro-batches: ``group_by_length`` (transformers
    4), ``train_sampling_strategy: group_by_length`` (transformers 5)."""
    return bool(r.get("group_by_length")) or str(r.get("train_sampling_strategy") or "") == "group_by_length"


def _axolotl(r: _Reader) -> TrainingConfig:
    r.set("model", r.get("base_model"), f"model {r.data.get('base_model')}")
    adapter = str(r.get("adapter") or "").lower()
    four_bit, eight_bit = bool(r.get("load_in_4bit")), bool(r.get("load_in_8bit"))
    if adapter in ("lora", "qlora"):
        method = "qlora" if adapter == "qlora" or four_bit else "lora-int8" if eight_bit else "lora"
    elif not adapter:
        method = "full"
    else:
        raise CostplanError(f"{r.path}: adapter {adapter!r} is not modelled (lora, qlora or none for full).")
    r.set("method", method, method + (" (load_in_4bit)" if four_bit and adapter == "lora" else
                                      " (load_in_8bit)" if method == "lora-int8" else ""))
    r.set("seq_len", r.number("sequence_len"), f"sequence {r.data.get('sequence_len')}")
    _batch(r, "micro_batch_size", "gradient_accumulation_steps")
    epochs = r.number("num_epochs", float, low=0)
    r.set("epochs", epochs, _epochs(epochs))
    _steps(r, "max_steps")
    if method != "full":
        rank = r.number("lora_r")
        r.set("lora_rank", rank, f"LoRA r={rank}" if rank else None)
        dropout = r.get("lora_dropout")
        r.set("lora_dropout", None if dropout is None else float(dropout))
        if r.get("lora_target_linear"):
            r.set("lora_targets", "all-linear", "all linear layers")
        targets = r.get("lora_target_modules")
        if targets:
            _lora_targets(r, targets)
        _lora_extras(r, "lora_alpha", "peft_use_dora", "peft_use_rslora", "lora_modules_to_save")
    if r.get("quantize_moe_experts") and method in ("qlora", "lora-int8"):
        # Axolotl's own convention for a quantized MoE base, which --framework axolotl plans: each layer's
        # expert stack dequantized where its experts run (api.stack_model).
        r.said.append("MoE experts quantized on load (quantize_moe_experts)")
    _optimizer(r, "optimizer")
    _precision(r)
    ckpt = r.get("gradient_checkpointing")
    if ckpt is not None:
        r.set("grad_ckpt", bool(ckpt), "checkpointing " + ("on" if ckpt else "off"))
    offloads = ["activations"] if r.get("activation_offloading") or str(ckpt).lower() == "offload" else []
    plugins = " ".join(map(str, r.get("plugins") or [])).lower()
    if "cut_cross_entropy" in plugins or ("liger" in plugins and r.get("liger_fused_linear_cross_entropy")):
        r.set("loss", "fused", "fused cross-entropy (" + ("Cut Cross-Entropy" if "cut_cross_entropy" in plugins
                                                          else "Liger") + " plugin: no logits held)")
    elif r.get("chunked_cross_entropy"):
        r.set("loss", "chunked", "chunked cross-entropy")
    attention = r.get("attn_implementation") or ("flash" if r.get("flash_attention") or r.get("sdp_attention")
                                                 else None)
    if attention:
        r.set("attention", "eager" if str(attention) == "eager" else "flash")
    if r.get("deepspeed"):
        _zero_from_deepspeed(r, r.data["deepspeed"])
    fsdp, fsdp_config = r.get("fsdp"), r.get("fsdp_config")
    if fsdp or fsdp_config or r.get("fsdp_version"):
        _zero_from_fsdp(r, fsdp or True, fsdp_config)
        # No fp32 upcast under FSDP2: accelerate's ``fsdp2_prepare_model`` casts the model to fp32 under bf16
        # mixed precision, but Axolotl puts its own in its place (``patch_accelerate_fsdp2``, since d6e4a611e,
        # 2025-07-12), which keeps the bf16-loaded weights: its bf16 stays bf16-true.
    if offloads:
        r.set("offload", tuple(sorted({*r.options.get("offload", ()), *offloads})),
              "checkpointed activations offloaded to the host")
    _padding(r, r.get("sample_packing"), r.get("pad_to_sequence_len"), _grouped(r))
    r.get("datasets")
    # Axolotl's own conventions (the model loaded in bf16, its trainer) hold under FSDP as well: the
    # sharding read above is its layout.
    r.set("framework", "axolotl")
    return r.finish("axolotl", "Axolotl")


_TORCHTUNE_MODELS = {"llama3_1": "llama-3.1", "llama3_2": "llama-3.2", "llama3_3": "llama-3.3", "llama3": "llama-3",
                     "llama2": "llama-2", "mistral": "mistral", "qwen2_5": "qwen2.5", "qwen2": "qwen2",
                     "qwen3": "qwen3", "gemma2": "gemma-2", "gemma": "gemma", "phi3": "phi-3", "phi4": "phi-4"}
"""torchtune's model builders (``torchtune.models.<family>.<family>_<size>``) by costplan's preset prefix,
the longer prefix first (llama3_2 before llama3)."""


def _torchtune_model(r: _Reader, component: str) -> str | None:
    """A costplan model for a torchtune builder: the checkpoint folder's config.json when it exists,
    else the preset of the same family and size."""
    checkpointer = r.data.get("checkpointer")
    folder = checkpointer.get("checkpoint_dir") if isinstance(checkpointer, dict) else None
    if folder and (Path(folder) / "config.json").is_file():
        return str(folder)
    builder = component.rsplit(".", 1)[-1]
    builder = re.sub(r"^(q?lora_)", "", builder)
    for prefix, family in _TORCHTUNE_MODELS.items():
        if builder.startswith(prefix + "_"):
            # qwen2_5_1_5b_instruct -> 1.5b: the base and instruct builders share their shapes
            size = re.sub(r"_(base|instruct)$", "", builder[len(prefix) + 1:])
            return f"{family}-{re.sub(r'(?<=[0-9])_(?=[0-9])', '.', size)}"
    return None


def _torchtune(r: _Reader, text: str) -> TrainingConfig:
    from costplan.errors import CostplanError as Error

    model = r.get("model")
    component = str(model.get("_component_", ""))
    builder = component.rsplit(".", 1)[-1]
    method = "qlora" if builder.startswith("qlora_") else "lora" if builder.startswith("lora_") else "full"
    name = _torchtune_model(r, component)
    if name is None:
        raise Error(f"{r.path}: torchtune model {component} has no costplan preset; pass --model.")
    r.set("model", name, f"model {name} (torchtune {builder})")
    r.set("method", method, method)
    if method != "full":
        attn = [str(m) for m in model.get("lora_attn_modules", [])]
        roles = [{"output_proj": "o"}.get(m, m.removesuffix("_proj")) for m in attn]
        if model.get("apply_lora_to_mlp"):
            roles += ["gate", "up", "down"]
        if model.get("apply_lora_to_output"):
            roles.append("head")
        if roles:
            r.set("lora_targets", ",".join(roles), f"LoRA on {','.join(roles)}")
        rank = model.get("lora_rank")
        r.set("lora_rank", int(rank) if rank else None, f"r={rank}" if rank else None)
        if model.get("lora_alpha") is not None:
            r.set("lora_alpha", float(model["lora_alpha"]))
        r.set("lora_dropout", float(model["lora_dropout"]) if model.get("lora_dropout") is not None else None)
        if model.get("use_dora"):
            r.set("use_dora", True, "DoRA")
    tokenizer = r.data.get("tokenizer")
    if isinstance(tokenizer, dict) and tokenizer.get("max_seq_len"):
        r.set("seq_len", int(tokenizer["max_seq_len"]), f"sequence {tokenizer['max_seq_len']}")
    _batch(r, "batch_size", "gradient_accumulation_steps")
    epochs = r.number("epochs", float, low=0)
    r.set("epochs", epochs, _epochs(epochs))
    _optimizer(r, "optimizer")
    dtype = str(r.get("dtype") or "")
    if dtype in ("bf16", "fp16", "fp32"):
        r.set("precision", dtype, dtype)
    ckpt = r.get("enable_activation_checkpointing")
    if ckpt is not None:
        r.set("grad_ckpt", bool(ckpt), "checkpointing " + ("on" if ckpt else "off"))
    if r.get("optimizer_in_bwd"):
        r.set("optimizer_in_backward", True, "optimizer stepped in backward (optimizer_in_bwd)")
    offloads = []
    if r.get("enable_activation_offloading"):
        offloads.append("activations")
    loss = r.data.get("loss")
    if isinstance(loss, dict):
        component = str(r.get("loss").get("_component_", ""))
        if "Chunked" in component or "LinearCrossEntropy" in component:
            r.set("loss", "chunked", "chunked cross-entropy")
    if r.get("compile"):
        r.set("runtime", "compiled", "torch.compile")
    recipe = re.search(r"tune run (?:--nproc_per_node[ =](\d+) )?([\w]+)", text)
    if recipe and recipe.group(2).endswith("_distributed"):
        r.set("zero", 3, f"{recipe.group(2)} (FSDP full shard, ZeRO-3; from the config's comments)")
    elif recipe:
        r.notes.append(f"recipe {recipe.group(2)} (from the config's comments)")
    if r.get("fsdp_cpu_offload"):
        offloads += ["optimizer", "params"]
    if offloads:
        r.set("offload", tuple(offloads), "offloaded to the host: " + ", ".join(offloads))
    dataset = r.data.get("dataset")
    packs = [d.get("packed") for d in (dataset if isinstance(dataset, list) else [dataset]) if isinstance(d, dict)]
    _padding(r, any(packs))  # torchtune's padded_collate pads each batch to its longest unless packed
    r.get("tokenizer")
    r.set("framework", "torchtune")
    return r.finish("torchtune", "torchtune recipe config")


def _llama_factory(r: _Reader) -> TrainingConfig:
    r.set("model", r.get("model_name_or_path"), f"model {r.data.get('model_name_or_path')}")
    stage = str(r.get("stage") or "sft")
    kind = str(r.get("finetuning_type") or "lora")
    bits = r.number("quantization_bit")
    if kind == "lora":
        method = "qlora" if bits == 4 else "lora"
    elif kind == "full":
        method = "cpt" if stage == "pt" else "full"
    else:
        raise CostplanError(f"{r.path}: finetuning_type {kind!r} is not modelled (lora or full).")
    r.set("method", method, f"{method} ({stage})")
    if kind == "lora" and bits == 8:
        method = "lora-int8"
        r.set("method", method, f"{method} (quantization_bit 8)")
    elif bits and bits != 4:
        r.notes.append(f"quantization_bit {bits} is not modelled: the base is planned in 16 bits")
    if stage in ("dpo", "kto", "ppo", "rm"):
        r.notes.append(f"stage {stage}: planned as supervised fine-tuning; the reference or reward model's "
                       "forwards (and PPO's generation) are not counted")
    r.set("seq_len", r.number("cutoff_len"), f"sequence {r.data.get('cutoff_len')}")
    _batch(r, "per_device_train_batch_size", "gradient_accumulation_steps")
    epochs = r.number("num_train_epochs", float, low=0)
    r.set("epochs", epochs, _epochs(epochs))
    _steps(r, "max_steps")
    if method in ("lora", "qlora"):
        rank = r.number("lora_rank")
        r.set("lora_rank", rank, f"LoRA r={rank}" if rank else None)
        target = str(r.get("lora_target") or "all")
        r.set("lora_targets", "all-linear" if target == "all" else _targets(target.split(",")),
              "all linear layers" if target == "all" else f"targets {target}")
        dropout = r.get("lora_dropout")
        r.set("lora_dropout", None if dropout is None else float(dropout))
        _lora_extras(r, "lora_alpha", "use_dora", "use_rslora", "additional_target")
    _optimizer(r, "optim")
    _precision(r)
    if r.get("pure_bf16"):
        r.set("precision", "bf16-true", "pure bf16 (no fp32 master weights)")
    _padding(r, r.get("packing") or r.get("neat_packing"), grouped=_grouped(r))
    disabled = r.get("disable_gradient_checkpointing")
    r.set("grad_ckpt", not disabled, "checkpointing " + ("off" if disabled else "on (LLaMA-Factory's default)"))
    attention = r.get("flash_attn")
    if attention:
        r.set("attention", "eager" if attention == "disabled" else "flash")
    if r.get("deepspeed"):
        _zero_from_deepspeed(r, r.data["deepspeed"])
    if "framework" not in r.options:
        r.set("framework", "hf-trainer")
    return r.finish("llama-factory", "LLaMA-Factory")


def _training_arguments(r: _Reader) -> TrainingConfig:
    for key in ("model_name_or_path", "model_id", "base_model"):
        if r.data.get(key):
            r.set("model", r.get(key), f"model {r.data[key]}")
    seq = None
    for key in ("max_length", "max_seq_length", "max_seq_len", "cutoff_len"):
        seq = seq or r.number(key)
    r.set("seq_len", seq, f"sequence {seq}" if seq else None)
    _batch(r, "per_device_train_batch_size", "gradient_accumulation_steps")
    epochs = r.number("num_train_epochs", float, low=0)
    r.set("epochs", epochs, _epochs(epochs))
    _steps(r, "max_steps")
    _optimizer(r, "optim")
    _precision(r)
    ckpt, fsdp_ckpt = r.get("gradient_checkpointing"), r.get("activation_checkpointing")
    if ckpt is not None or fsdp_ckpt is not None:
        on = bool(ckpt or fsdp_ckpt)
        r.set("grad_ckpt", on, "checkpointing " + ("on" if on else "off"))
    if r.get("deepspeed"):
        _zero_from_deepspeed(r, r.data["deepspeed"])
    fsdp = r.get("fsdp")
    if fsdp:
        _zero_from_fsdp(r, fsdp, r.get("fsdp_config"))
    else:
        r.get("fsdp_config")
    if r.get("torch_compile"):
        r.set("runtime", "compiled", "torch.compile")
    grouped = _grouped(r)
    if r.get("packing") or grouped:  # TRL's SFTConfig packs; without either the collator pads as estimate assumes
        _padding(r, r.get("packing"), grouped=grouped)
    accelerator = r.get("accelerator_config")
    accumulation = accelerator.get("gradient_accumulation_kwargs") if isinstance(accelerator, dict) else None
    if isinstance(accumulation, dict) and "sync_each_batch" in accumulation:
        sync = bool(accumulation["sync_each_batch"])
        r.set("sync_each_batch", sync, "gradients " + ("reduced every micro-batch (sync_each_batch)" if sync
                                                       else "accumulated without sync"))
    if "framework" not in r.options:
        r.set("framework", "hf-trainer")
    r.notes.append("TrainingArguments name no method: LoRA (or --method) as for estimate; the model comes from "
                   "--model")
    return r.finish("training-arguments", "TrainingArguments JSON")
