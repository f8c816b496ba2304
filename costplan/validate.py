"""``costplan validate``: predict the published measurements in ``tables/published_runs.csv`` with
the settings each source states and costplan's defaults for the rest, beside the naive rule a user
would otherwise apply, per kind and per split.

Every prediction goes through ``costplan.api.estimate``, the function ``costplan estimate`` runs: no
private formula. The kinds:

- ``pretrain``: GPU-hours of whole pretraining (and continual pretraining) runs; naive rule
  ``6 N D / (0.4 x dense peak)``;
- ``throughput``: tokens/s per GPU of published training-throughput tables; naive rule
  ``0.4 x peak / 6 N``;
- ``finetune_throughput``: tokens/s per GPU of fine-tuning runs; the same naive rule;
- ``decode``: tokens/s of one sequence while generating; naive rule: the bandwidth roofline
  (datasheet bandwidth over the bytes of the weights);
- ``memory``: peak memory of fine-tuning runs as the source measured it (allocated, reserved, or
  the device total for nvidia-smi and unknown); naive rule: 16 bytes per parameter for full
  fine-tuning (mixed-precision Adam), the weights' bytes plus 20% for adapters;
- ``fit``: whether a setup ran or went out of memory: the verdict is right or wrong;
- ``max_context``: the longest sequence a setup trained at on a card of stated memory (``estimate
  --max seq-len``); naive rule: the naive memory's headroom spent at 2 bytes x hidden x layers x 16
  per token (a rule of thumb for bf16 activations with checkpointing off).

Memory, fit and max-context rows run on the stack the source names (``framework``) with the
settings it states: precision mode, optimizer (``+in-backward``: stepped inside backward), 4-bit
base with or without double quantization, checkpointing (``offloaded``: its checkpoints in host
memory), LoRA rank, targets and dropout (a ``lora-dropout=`` switch, else the training script's default,
``SCRIPT_LORA_DROPOUT``, and torchtune's builders' 0.05 until 2024-09-11); the rest are the stack's defaults.

Rows whose figures contradict their own settings are skipped as mislabelled, with the reason:
throughput beyond ``PLAUSIBLE_MFU`` of the dense peak, and a memory row (or the card of a fit row
that ran) holding under ``STEP_FLOOR_SHARE`` of the weights, gradients and optimizer states its
stated settings keep at the optimizer step.

``split`` says which rows the speed model's constants were fitted on (``fit``) and which were
kept apart (``holdout``); splits go by source, never by row.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any, NamedTuple

from costplan.errors import CostplanError
from costplan.model import ModelSpec, count_params, model_spec, preset
from costplan.record import record
from costplan.tables import number, read_table
from costplan.terms import Phase
from costplan.units import GIB

KINDS = ("pretrain", "throughput", "finetune_throughput", "decode", "memory", "fit", "max_context")
NAIVE_MFU = 0.4
"""The one-line rule's utilisation: 6 N D / (0.4 x peak)."""


@record
class Validation:
    kind: str
    name: str
    quantity: str
    predicted: float
    reported: float
    naive: float | None
    split: str
    group: str
    source: str
    detail: str

    @property
    def error(self) -> float:
        """Relative error (for ``fit``: 0 when the verdict is right, 1 when wrong)."""
        if self.kind == "fit":
            return float(self.predicted != self.reported)
        return self.predicted / self.reported - 1

    @property
    def naive_error(self) -> float | None:
        if self.naive is None:
            return None
        if self.kind == "fit":
            return float(self.naive != self.reported)
        return self.naive / self.reported - 1


@record
class Skipped:
    kind: str
    name: str
    reason: str


class ValidationRun(NamedTuple):
    """What ``validate`` returns: the predicted rows and the skipped ones (unpacks as a pair)."""

    results: list[Validation]
    skipped: list[Skipped]

    def rows(self) -> list[dict[str, Any]]:
        return [dict(asdict(r), error=r.error, naive_error=r.naive_error) for r in self.results]

    def to_frame(self) -> Any:
        """The predicted rows as a pandas DataFrame (``pip install 'costplan[data]'``)."""
        from costplan.frames import to_frame

        return to_frame(self.rows())


_ARCH_KEYS = ("hidden", "layers", "heads", "kv_heads", "ffn", "vocab")


def architecture(text: str, name: str = "", positions: int | None = None) -> ModelSpec:
    """A preset, or an ``hidden=...;layers=...;...`` string as the published table writes shapes
    (learned position embeddings sized for ``positions``, the row's sequence length)."""
    text = text.strip()
    if "=" not in text:
        return preset(text)
    fields = dict(part.split("=", 1) for part in text.split(";") if "=" in part)
    if any(fields.get(k, "unknown") == "unknown" for k in _ARCH_KEYS):
        raise CostplanError("the source does not state every shape")
    hidden, heads = int(fields["hidden"]), int(fields["heads"])
    gated = fields.get("mlp", "gated") == "gated"
    learned = fields.get("pos", "rope") == "learned"
    # family=...: the layer traits of an architecture family (OLMo 2's reordered norms and q/k norms).
    return model_spec(name or "published", fields.get("family", "llama"), dict(
        hidden_size=hidden, num_layers=int(fields["layers"]), num_heads=heads, num_kv_heads=int(fields["kv_heads"]),
        head_dim=int(fields.get("head_dim", hidden // heads)), ffn_size=int(fields["ffn"]),
        vocab_size=int(fields["vocab"]), max_positions=(positions or 2048) if learned else 1 << 21),
        tied_embeddings=fields.get("tied", "false") == "true", gated_mlp=gated,
        activation="silu" if gated else "gelu", norm="rmsnorm" if gated else "layernorm", learned_positions=learned)


def _int(row: dict[str, str], column: str) -> int | None:
    value = number(row, column)
    return int(value) if value else None


def _bool(row: dict[str, str], column: str) -> bool | None:
    text = row.get(column, "").lower()
    if text in ("true", "offloaded"):
        return True
    if text == "false":
        return False
    return None


def _precision(text: str, gpu_key: str) -> str:
    """The precision a row states, as ``--precision`` takes it (a mode where the row names one)."""
    from costplan import precision as modes
    from costplan.hardware import gpu

    text = text.lower().strip()
    has_bf16 = "bf16" in gpu(gpu_key).peak_flops
    if "fp8" in text:
        return "fp8" if "fp8" in gpu(gpu_key).peak_flops else "bf16"
    if text in modes.MODES and (has_bf16 or modes.peak_key(text) != "bf16"):
        return text
    if "fp32" in text and "bf16" not in text:
        return "fp32"
    if "fp16" in text or not has_bf16:
        return "fp16"
    return "bf16"


_TARGET_NAMES = {"c_attn": "q,k,v", "c_proj": "o,down", "w1": "gate,up", "w2": "gate,up"}
"""Module names of the sources that are not costplan's roles (Qwen-1: c_attn, c_proj, w1, w2)."""


def _targets(text: str) -> str:
    """The row's LoRA targets as ``--lora-targets`` takes them (peft's q,v when not stated)."""
    from costplan.methods import parse_targets

    parts = [_TARGET_NAMES.get(p.strip(), p.strip()) for p in re.split(r"[;,]", text) if p.strip()]
    try:
        return ",".join(parse_targets(",".join(parts))) if parts else "q,v"
    except CostplanError:
        return "q,v"


def _switches(row: dict[str, str]) -> set[str]:
    """The row's switches (``;``-separated), lower-case."""
    return {w.strip().lower() for w in row.get("switches", "").split(";") if w.strip()}


def _stated(row: dict[str, str], name: str) -> float | None:
    """The number a ``name=value`` switch states (``goodput=0.9``, ``vp=5``), or None."""
    values = [float(s.split("=", 1)[1]) for s in _switches(row) if s.startswith(f"{name}=")]
    return values[0] if values else None


def _common(row: dict[str, str], spec: ModelSpec) -> dict[str, Any]:
    """The estimate options the row states."""
    from costplan.hardware import gpu

    device = gpu(row["gpu"])
    options: dict[str, Any] = {"gpu": device.key, "price": 0.0,
                               "precision": _precision(row.get("precision", ""), device.key)}
    for column, option in (("gpus", "gpus"), ("seq_len", "seq_len"), ("micro_batch", "micro_batch"),
                           ("tp", "tp"), ("pp", "pp"), ("cp", "cp"), ("global_batch", "global_batch")):
        value = _int(row, column)
        if value:
            options[option] = value
    if row.get("zero"):
        options["zero"] = int(row["zero"])
    ckpt = _bool(row, "grad_ckpt")
    if ckpt is not None:
        options["grad_ckpt"] = ckpt
    if row.get("runtime") in ("eager", "compiled", "native"):
        options["runtime"] = row["runtime"]
    from costplan.frameworks import frameworks

    framework = row.get("framework", "")
    if framework in frameworks():
        options["framework"] = framework
    if (options.get("tp", 1) > 1 or options.get("pp", 1) > 1 or options.get("cp", 1) > 1) and not (
            framework in frameworks() and frameworks()[framework].tensor_parallel):
        options["framework"] = "megatron"
    stack = frameworks().get(options.get("framework", ""))
    if options.get("framework") == "fsdp" and row.get("stack", "") not in NO_SYNC_FSDP_STACKS:
        options["sync_each_batch"] = True  # FSDP driven by another loop: it reduce-scatters every micro-batch
    stages = _stated(row, "vp")
    if stages is not None:  # stated virtual stages (vp=1: plain 1F1B, DeepSpeed's engine, Megatron's default)
        options["virtual_stages"] = int(stages)
    fused_attention = any(kernel in switch for switch in _switches(row) for kernel in FUSED_ATTENTION_SWITCHES)
    if row.get("kind") in MEMORY_KINDS and row.get("as_of", "9999") < SDPA_DEFAULT_SINCE \
            and options.get("framework") in TRANSFORMERS_STACKS and not fused_attention:
        options["attention"] = "eager"  # transformers' own attention before SDPA became its default
    if stack is not None and "zero" in options and options["zero"] not in stack.zero_stages:
        options["zero"] = max(z for z in stack.zero_stages if z <= options["zero"])
    if "seq_len" in options and options["seq_len"] > spec.max_positions:
        raise CostplanError("sequence longer than the model's context")
    return options


def _naive_time(spec: ModelSpec, peak: float) -> float:
    """Seconds per token of the one-line rule, per GPU."""
    return 6 * count_params(spec).total / (NAIVE_MFU * peak)


def predict(row: dict[str, str], profile: Any = None) -> tuple[float, float | None, str]:
    """(predicted, naive, detail) for one published row (``profile``: other constants than the table's)."""
    from costplan.api import estimate
    from costplan.hardware import gpu

    kind = row["kind"]
    if not row.get("gpu"):
        card = _card_gib(row)
        if kind == "max_context" and card is not None and _card_for(card):
            row = {**row, "gpu": _card_for(card)}  # only the card's memory matters
        elif kind == "memory":
            row = {**row, "gpu": "h100-sxm"}  # a measured peak does not depend on the card (the layout is stated)
        else:
            raise CostplanError("GPU not in costplan's table")
    spec = architecture(row["model"], row["name"], _int(row, "seq_len"))
    device = gpu(row["gpu"])
    options = _common(row, spec)
    if profile is not None:
        options["profile"] = profile
    peak = device.peak(options["precision"])
    if kind == "pretrain":
        tokens = number(row, "tokens")
        if not tokens:
            raise CostplanError("tokens not stated")
        est = estimate(spec, row.get("method") or "pretrain", tokens=tokens,
                       steady_state="step-time" in _switches(row), goodput=_stated(row, "goodput"), **options)
        naive = _naive_time(spec, device.peak(options["precision"])) * tokens / 3600
        return est.gpu_hours, naive, f"{est.gpus} GPUs, {_layout(est)}, MFU {est.mfu:.2f}"
    if kind == "throughput":
        est = estimate(spec, "pretrain", tokens=1e9, **options)
        return est.tokens_per_second / est.gpus, 1 / _naive_time(spec, peak), f"{_layout(est)}, MFU {est.mfu:.2f}"
    if kind == "finetune_throughput":
        method, extra = _stack_options(row, options)  # the same stated settings as the run's memory row
        if options.get("micro_batch") and _int(row, "grad_accum"):
            options["global_batch"] = options["micro_batch"] * _int(row, "grad_accum") * options.get("gpus", 1)
        est = estimate(spec, method, tokens=1e8, lora_rank=_int(row, "lora_rank") or 8,
                       lora_targets=_targets(row.get("lora_targets", "")), **{**options, **extra})
        return est.tokens_per_second / est.gpus, 1 / _naive_time(spec, peak), f"{est.method.key}, {_layout(est)}"
    if kind == "decode":
        batch = _int(row, "batch") or 1
        weights = row.get("quant") or "bf16"
        prompt = _int(row, "prompt_len") or 128
        gen = _int(row, "gen_len") or 256
        tp = _int(row, "tp") or 1
        runtime = options.get("runtime", "eager")
        est = estimate(spec, "inference", gpu=device.key, gpus=tp, micro_batch=batch, prompt_len=max(prompt, 1),
                       gen_len=max(gen, 2), precision=options["precision"] if options["precision"] != "fp8" else "bf16",
                       weights=weights, runtime=runtime, price=0.0, profile=profile)
        from costplan.memory import weight_bytes_per_param

        roofline = device.bandwidth_bytes_per_s * tp / (count_params(spec).total
                                                        * weight_bytes_per_param(weights, 2))
        return est.tokens_per_second / batch, roofline, f"{weights}, TP {tp}, {runtime}"
    if kind in ("memory", "fit", "max_context"):
        return _predict_memory(row, spec, device, options, profile)
    raise CostplanError(f"kind {kind} is not predicted")


SDPA_DEFAULT_SINCE = "2023-12-11"
"""transformers 4.36: ``attn_implementation`` defaults to SDPA; before, models ran their eager attention
(the s² scores kept) unless the script asked for FlashAttention-2."""
FUSED_ATTENTION_SWITCHES = ("flash", "sdpa", "xformers")
"""Switches naming an attention kernel that keeps no s² scores (FlashAttention, SDPA, xformers'
memory-efficient attention, which Axolotl patched into Llama with ``xformers_attention``)."""
NO_SYNC_FSDP_STACKS = ("accelerate-fsdp",)
"""Loops over FSDP that accumulate without sync: transformers' Trainer through accelerate (``--framework
fsdp``). The others the published rows ran reduce-scatter every micro-batch: Composer and llm-foundry
(composer/trainer/dist_strategy.py applies no_sync to DDP models only), Answer.AI's fsdp_qlora (its
``--no_sync`` is off by default), and open_lm's and OLMo-core's loops, taken as the same."""
TRANSFORMERS_STACKS = ("hf-trainer", "deepspeed", "fsdp", "axolotl")
"""Stacks that run transformers' modules (torchtune, LitGPT, Unsloth and Megatron bring their own)."""
MEMORY_KINDS = ("memory", "fit", "max_context")
"""Rows whose stack is the one the source ran; the speed tables' stack column names how they shard
(llm-foundry's and others' models bring their own fused attention), so their attention is left as stated."""
SHARDING_STACKS = ("fsdp", "torchtune", "deepspeed")
"""Stacks whose multi-GPU runs shard parameters (FSDP full shard, torchtune's distributed recipes, ZeRO-3)."""
LEGACY_FABRIC_LOAD_BEFORE = "2023-07-30"
"""LitGPT's runs before then loaded checkpoints into FSDP through Lightning Fabric's ``load_raw``, which
gathered every parameter onto every GPU (Lightning-AI/pytorch-lightning#18190, merged 2023-07-30; LitGPT
installed Lightning's master until it pinned 71aed751 on 2023-10-05): a load-time peak of the whole model
plus its shard."""
LITGPT_FSDP2_LORA_SINCE = "2025-08-13"
"""LitGPT's multi-GPU LoRA wrapped each Block with FSDP1 (Fabric's FSDPStrategy), whose flat parameters
mix the frozen base and the adapters, until finetune/lora.py moved to FSDP2 (ModelParallelStrategy,
Lightning-AI/litgpt 5ac69b06)."""
TORCHTUNE_TORCHAO_03_SINCE = "2024-06-26"
"""torchtune pinned torchao 0.1, whose NF4 quantizes a whole matrix at once, until pyproject.toml moved to
torchao 0.3 (pytorch/torchtune c1c9f308a, 2024-06-26)."""
TORCHTUNE_DEL_LOGITS_SINCE = "2024-07-28"
"""torchtune's recipes held the model's fp32 logits (its ``TransformerDecoder`` returns
``self.output(h).float()``) through backward until "delete logits before bwd" (pytorch/torchtune#1235,
8a98fbaa3, 2024-07-28)."""
AXOLOTL_CAST_BACK_SINCE = "2024-01-10"
"""peft's prepare_model_for_kbit_training upcasts a k-bit model's embeddings, head and norms to fp32. Axolotl
cast them back to the training dtype only under flash attention (src/axolotl/utils/models.py at dc71d8872,
f319b0bc6) until axolotl-ai-cloud/axolotl#1083 (78c5b1979, 2024-01-10) cast them back for every adapter
(``needs_fa2_dtype or flash_attention``; loaders/model.py keeps it). QLoRA + FSDP skips the preparation."""
TORCHTUNE_FUSED_ADAMW_SINCE = "2024-09-14"
"""torchtune's configs ran torch.optim.AdamW with its default foreach step until they set ``fused: True``
(pytorch/torchtune#1575, cca50f02e, 2024-09-14)."""
SCRIPT_LORA_DROPOUT = {"fsdp-qlora": 0.1}
"""The LoRA dropout of training scripts whose published runs leave it at the script's default: Answer.AI's
fsdp_qlora ``train.py`` (``lora_dropout: float = 0.1``; its benchmark commands do not set it, AnswerDotAI/fsdp_qlora
4cd6923)."""
TORCHTUNE_NO_LORA_DROPOUT_SINCE = "2024-09-11"
"""pytorch/torchtune#1492 (d7fae9677): the LoRA model builders' ``lora_dropout`` default went from 0.05 to
0.0 and the configs set it; before, every torchtune LoRA and QLoRA run had dropout 0.05."""
TORCHTUNE_CHUNKED_CE_SINCE = "2024-08-28"
"""torchtune's configs computed ``torch.nn.CrossEntropyLoss`` over the full fp32 logits until
``CEWithChunkedOutputLoss`` (pytorch/torchtune#1390, 4fba6cd44, 2024-08-28) became their loss."""
DOUBLE_QUANT_STACKS = ("torchtune", "unsloth")
"""Stacks whose 4-bit base always stores 8-bit block scalers, whatever a row calls its format: torchao's
``NF4Tensor`` (int8 scalers with a factor per 256 blocks) under torchtune, and Unsloth's loader, whose
``BitsAndBytesConfig`` sets ``bnb_4bit_use_double_quant=True`` (unslothai/unsloth e3162dc5bf, 2025-01-14,
models/llama.py and models/loader.py; so today)."""
LEGACY_BNB_BEFORE = "2024-07-16"
"""bitsandbytes 0.43.2 (bitsandbytes-foundation/bitsandbytes#1270): its 4-bit matmul stopped keeping
its input for backward."""
LITGPT_BNB_044_SINCE = "2024-12-28"
"""LitGPT pinned ``bitsandbytes==0.42.0`` (pyproject.toml, Lightning-AI/litgpt 2bcb2c3e, 2024-03-11) until
d2ed13c3 (2024-12-28) moved to 0.44: its runs before then kept each 4-bit matmul's input, whatever the date."""
LOSS_FUNCTION_SINCE = "2024-10-24"
"""transformers 4.46: causal LMs compute their loss in ``loss_function`` (which upcasts a copy of the
logits to fp32) and return the logits in the compute dtype; before, ``logits = logits.float()`` in the
forward made the returned logits fp32."""
EXPANDABLE_SEGMENTS_SINCE = {"axolotl": "2024-12-17", "torchtitan": "2024-10-22"}
"""Since when the stacks whose estimates take the expandable-segments reserve (``tables/frameworks.csv``
allocator) have set ``expandable_segments:True`` before CUDA starts: Axolotl's CLI since
axolotl-ai-cloud/axolotl#2183 (its train module had set it after CUDA started, without effect),
torchtitan's ``run_train.sh`` since a5e57e4a9. Rows measured before ran the default allocator."""
ALLOCATOR_LOGGING_SINCE = {"torchtune": "", "axolotl": "2025-07-31"}
"""Stacks whose published peaks come from their own logging of the caching allocator's statistics, and
since when: torchtune's recipes log ``training.get_memory_stats`` (peak active, allocated and reserved
bytes from ``torch.cuda.memory_stats``); Axolotl's trainer logs ``memory/max_active``, ``max_allocated``
and ``device_reserved`` since axolotl-ai-cloud/axolotl#2977 (294c7fe7a, 2025-07-31; before, the current
usage). They count neither the CUDA context nor managed (paged) pages: a peak whose statistic the source
does not name is read as the largest of them, the reserved bytes."""


def _stack_options(row: dict[str, str], options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The method and the estimate options of a memory row: its stack's conventions, what it states."""
    from costplan.frameworks import frameworks

    method = row["method"]
    quant = row.get("quant", "")
    if quant.startswith("nf4") and method == "lora":
        method = "qlora"
    extra: dict[str, Any] = {}
    as_of, stack = row.get("as_of", ""), row.get("framework")
    dropout = _stated(row, "lora-dropout")  # as the source's config sets it; else the stack's default
    if dropout is None and stack == "torchtune" and as_of < TORCHTUNE_NO_LORA_DROPOUT_SINCE:
        dropout = 0.05  # its LoRA builders' default then, which the configs did not expose
    if dropout is None:
        dropout = SCRIPT_LORA_DROPOUT.get(row.get("stack", ""))
    if dropout is not None:
        extra["lora_dropout"] = dropout
    if method == "qlora":
        from costplan.methods import QLora, parse_targets

        # bitsandbytes before 0.43.2 (2024-07-16) also kept each 4-bit matmul's input (LitGPT ran 0.42.0
        # until 2024-12-28); torchtune (torchao's NF4) and Unsloth (its own kernels) do not use its matmul.
        legacy = (as_of < LEGACY_BNB_BEFORE or (stack == "litgpt" and as_of < LITGPT_BNB_044_SINCE)) \
            and stack not in ("torchtune", "unsloth")
        method = QLora(rank=_int(row, "lora_rank") or 8, targets=parse_targets(_targets(row.get("lora_targets", ""))),
                       dropout=dropout or 0.0,
                       double_quant=quant != "nf4" or stack in DOUBLE_QUANT_STACKS, bnb_keeps_input=legacy,
                       unchunked_quantize=stack == "torchtune" and as_of < TORCHTUNE_TORCHAO_03_SINCE)  # type: ignore[assignment]
    if quant == "int8" and method == "lora":
        method = "lora-int8"
    optimizer = row.get("optimizer", "")
    if optimizer:
        name, in_backward = optimizer.lower().removesuffix("+in-backward"), optimizer.endswith("+in-backward")
        if name != "adamw":  # plain "adamw": the stack's own AdamW (foreach or fused)
            extra["optimizer"] = name
        elif stack == "torchtune" and as_of < TORCHTUNE_FUSED_ADAMW_SINCE:
            extra["optimizer"] = "adamw"  # torch.optim.AdamW's default, foreach
        else:
            conventions = frameworks().get(row.get("framework", ""))
            default = conventions.optimizer if conventions is not None else "adamw"
            extra["optimizer"] = default if default in ("adamw", "adamw-fused") else "adamw"
        if in_backward:
            extra["optimizer_in_backward"] = True
    switches = _switches(row)
    offload = set()
    if row.get("grad_ckpt", "").lower() == "offloaded" or "activation-offload" in switches:
        offload.add("activations")
    if switches & {"cpu-offload-params", "fsdp-cpu-offload"}:  # FSDP's CPU offload: parameters, gradients, states
        offload |= {"params", "optimizer"}
    if "cpu-offload-optimizer" in switches:
        offload.add("optimizer")
    if offload:
        extra["offload"] = tuple(sorted(offload))
    if "compile" in switches:
        extra["runtime"] = "compiled"
    if switches & {"liger", "cut-cross-entropy"}:
        extra["loss"] = "fused"
    elif "chunked-ce" in switches:
        extra["loss"] = "chunked"
    elif "full-ce" in switches or (stack == "torchtune" and as_of < TORCHTUNE_CHUNKED_CE_SINCE):
        extra["loss"] = "full"
    if stack == "litgpt" and (_int(row, "gpus") or 1) > 1:
        if as_of < LEGACY_FABRIC_LOAD_BEFORE:
            extra["gathered_load"] = True
        if as_of < LITGPT_FSDP2_LORA_SINCE and method == "lora":  # LitGPT quantizes on one GPU only
            extra["flat_unit_gradients"] = True
    if stack == "axolotl" and (quant.startswith("nf4") or quant == "int8") and as_of < AXOLOTL_CAST_BACK_SINCE \
            and not switches & {"fsdp-full-shard", "fsdp2-full-shard"} \
            and not any(s.startswith("flash-attn") for s in switches):
        extra["kbit_upcast"] = True
    if "keeps-outputs" in switches:
        extra["held_logits"] = "fp32" if row.get("as_of", "") < LOSS_FUNCTION_SINCE else "compute"
    elif stack == "torchtune" and as_of < TORCHTUNE_DEL_LOGITS_SINCE:
        extra["held_logits"] = "fp32"
    expandable_since = EXPANDABLE_SEGMENTS_SINCE.get(stack or "")
    if expandable_since is not None and as_of < expandable_since:
        extra["expandable_segments"] = False
    if "zero2" in switches:
        extra["zero"] = 2
    elif switches & {"zero3", "fsdp-full-shard", "fsdp2-full-shard"}:
        extra["zero"] = 3
    elif "fsdp-ddp-mode" in switches:
        extra["zero"] = 0
    return method, extra


def _predict_memory(row: dict[str, str], spec: ModelSpec, device: Any, options: dict[str, Any],
                    profile: Any) -> tuple[float, float | None, str]:
    from costplan.api import estimate
    from costplan.frameworks import frameworks

    kind = row["kind"]
    method, extra = _stack_options(row, options)
    if kind == "max_context":
        options.pop("seq_len", None)
        memory = _card_gib(row)
        if memory is not None and memory * GIB < device.memory_bytes:
            device_key = _card_for(memory)
            if device_key is None:
                raise CostplanError(f"no GPU of {memory:g} GiB in the GPU table")
            options["gpu"] = device_key
            options["precision"] = _precision(row.get("precision", ""), device_key)
        options.setdefault("micro_batch", 1)
        options.setdefault("gpus", 1)
        options.setdefault("grad_ckpt", True)
        spec = _with_long_context(spec)
        est = estimate(spec, method, tokens=1e8, lora_rank=_int(row, "lora_rank") or 8,
                       lora_targets=_targets(row.get("lora_targets", "")), global_batch=options["micro_batch"]
                       * options["gpus"], maximize="seq-len", profile=profile,
                       **{k: v for k, v in {**options, **extra}.items() if k != "profile"})
        longest = float(est.maximum["seq_len"]) if est.maximum else 0.0
        return longest, _naive_context(spec, method, options), f"{est.framework.key}, {est.workload.precision}"
    if not options.get("micro_batch") or not options.get("seq_len"):
        raise CostplanError("sequence length or micro-batch not stated")
    options.setdefault("gpus", 1)
    stack = frameworks().get(row.get("framework", ""))
    # Not stated: the stack's default; LLaMA-Factory checkpoints unless disable_gradient_checkpointing
    # (its model_utils/checkpointing.py; `--from` a LLaMA-Factory YAML does the same).
    checkpointing = stack.grad_ckpt if stack is not None else False
    options.setdefault("grad_ckpt", checkpointing or row.get("stack", "") == "llama-factory")
    if options["gpus"] > 1 and row.get("framework") in SHARDING_STACKS:
        options.setdefault("zero", 3)  # they run FSDP full shard or ZeRO-3; the others as a practitioner would
    options = {**options, **extra}
    if options["gpus"] == 1:
        options.pop("zero", None)
    # The stated accumulation: gradients of the earlier micro-batches are held through the later ones.
    accumulation = _int(row, "grad_accum") or 1
    stated = options.pop("global_batch", None)  # a stated global batch, else micro-batch x GPUs x accumulation
    est = estimate(spec, method, tokens=1e8, lora_rank=_int(row, "lora_rank") or 8,
                   lora_targets=_targets(row.get("lora_targets", "")),
                   global_batch=stated or options["micro_batch"] * options["gpus"] * accumulation, **options)
    detail = f"{est.framework.key}, {est.workload.precision}, {est.workload.optimizer}; {_layout(est)}"
    step = est.memory.phases.get(Phase.OPTIMIZER_STEP, 0.0)  # weights, gradients and states, stepped together
    if kind == "fit":  # a setup that ran held its step on the card; one that went out of memory proves nothing
        held = device.memory_bytes if row.get("reported") == "yes" else math.inf
    else:
        peak = number(row, "reported")
        held = GIB * peak if peak else math.inf
    if held < STEP_FLOOR_SHARE * step:
        raise CostplanError(f"{'the card that ran it' if kind == 'fit' else 'the reported peak'} holds under "
                            f"{STEP_FLOOR_SHARE:.0%} of the weights, gradients and optimizer states the stated "
                            f"settings keep at the step ({step / GIB:.1f} GiB): the figure or its settings are not "
                            "as labelled")
    if kind == "fit":
        naive_fits = _naive_memory(spec, method) <= device.memory_bytes
        return (float(not est.placement.fits), float(not naive_fits),
                f"{'fits' if est.placement.fits else 'does not fit'}: {est.memory.device_bytes / GIB:.1f} GiB; "
                + detail)
    measured_as = row.get("metric") or "unknown"
    logging_since = ALLOCATOR_LOGGING_SINCE.get(row.get("framework", ""))
    if measured_as == "unknown" and logging_since is not None and row.get("as_of", "") >= logging_since:
        measured_as = "reserved"
    memory = est.memory
    if measured_as == "allocated":  # max_memory_allocated: the live tensors, not paged (managed) states
        predicted = memory.peak_bytes
    elif measured_as == "reserved":
        predicted = memory.reserved_bytes
    else:  # nvidia-smi or not said: the device's use, paged states as far as the card holds them
        predicted = min(memory.device_bytes + memory.managed_bytes, max(device.memory_bytes, memory.device_bytes))
    return predicted / GIB, _naive_memory(spec, method) / GIB, f"{measured_as}; {detail}"


def _card_gib(row: dict[str, str]) -> float | None:
    match = re.match(r"card (\d+(?:\.\d+)?) GiB", row.get("metric", ""))
    return float(match.group(1)) if match else None


def _card_for(gib: float) -> str | None:
    """The GPU type of the table whose memory is ``gib`` (the cheapest-sounding one: fewest FLOPs)."""
    from costplan.hardware import gpu, gpu_names

    cards = [gpu(k) for k in gpu_names()]
    matching = [c for c in cards if abs(c.memory_bytes / GIB - gib) < 0.5]
    if not matching:
        return None
    return min(matching, key=lambda c: c.peak_flops.get("bf16", c.peak_flops.get("fp16", 0.0))).key


def _with_long_context(spec: ModelSpec) -> ModelSpec:
    """Published long-context fine-tuning extends RoPE models past their trained length (Llama 3.1:
    128K); the search is for memory, not the model's context."""
    from dataclasses import replace

    return replace(spec, max_positions=max(spec.max_positions, 1 << 20))


def _naive_context(spec: ModelSpec, method: str, options: dict[str, Any]) -> float:
    """The naive rule's longest sequence: what the naive memory leaves of the card, at 34 bytes
    per token and hidden unit in every layer (the Megatron paper's bf16 activations per layer,
    without checkpointing, for one sequence)."""
    from costplan.hardware import gpu

    left = gpu(options["gpu"]).memory_bytes - _naive_memory(spec, method)
    return max(left, 0.0) / (34.0 * spec.hidden_size * spec.num_layers)


STEP_FLOOR_SHARE = 0.8
"""No measured peak falls this far below the tensors the optimizer step holds at once (weights,
gradients, optimizer states on the GPU): a row that would is mislabelled (its settings or its figure)."""

PLAUSIBLE_MFU = 0.85
"""No published training step exceeds this share of the dense peak on 6N (4N for a frozen base) FLOPs
per token; a row that would is mislabelled (a total over GPUs, another GPU)."""


def _beyond_peak(row: dict[str, str], reported: float) -> bool:
    """Whether ``reported`` tokens/s per GPU needs more than a plausible share of the dense peak."""
    from costplan.hardware import gpu

    spec = architecture(row["model"], row["name"], _int(row, "seq_len"))
    per_token = (6 if row.get("method") in ("full", "pretrain", "cpt") else 4) * count_params(spec).total
    precision = _precision(row.get("precision", ""), row["gpu"])
    return reported * per_token > PLAUSIBLE_MFU * gpu(row["gpu"]).peak(precision)


def _naive_memory(spec: ModelSpec, method: Any) -> float:
    method = getattr(method, "key", method)
    params = count_params(spec).total
    if method in ("full", "cpt", "pretrain"):
        return 16.0 * params
    return (0.55 if method == "qlora" else 2.0) * params * 1.2


def _layout(est: Any) -> str:
    layout = est.placement.layout
    text = f"mb {layout.micro_batch} x{layout.grad_accum}"
    if layout.tp > 1 or layout.pp > 1:
        text += f", TP {layout.tp} PP {layout.pp}"
    if layout.dp > 1:
        text += f", DP {layout.dp} ZeRO-{layout.zero}"
    return text + (", ckpt" if layout.grad_ckpt else "")


def validate(kinds: Iterable[str] = KINDS, *, split: str | None = None, profile: Any = None) -> ValidationRun:
    """Predict every row of the wanted kinds (and split); ``profile`` replaces the default constants."""
    wanted = set(kinds)
    results: list[Validation] = []
    skipped: list[Skipped] = []
    for row in read_table("published_runs"):
        kind, name = row["kind"], row["name"]
        if kind not in wanted or (split is not None and row.get("split") != split):
            continue
        try:
            predicted, naive, detail = predict(row, profile)
            reported = 1.0 if row["reported"] == "oom" else 0.0 if row["reported"] == "yes" else float(row["reported"])
        except (CostplanError, ValueError, LookupError) as exc:
            skipped.append(Skipped(kind, name, str(exc).rstrip(".")))
            continue
        if not (math.isfinite(predicted) and predicted >= 0):
            skipped.append(Skipped(kind, name, "no finite prediction"))
            continue
        if kind in ("throughput", "finetune_throughput") and _beyond_peak(row, reported):
            skipped.append(Skipped(kind, name, f"the reported tokens/s per GPU would need more than "
                                               f"{PLAUSIBLE_MFU:.0%} of the GPU's dense peak (6N or 4N FLOPs per "
                                               "token alone): the figure or its GPU is not as labelled"))
            continue
        results.append(Validation(kind, name, row["quantity"], predicted, reported, naive, row.get("split", ""),
                                  row.get("group", ""), row["source"], detail))
    return ValidationRun(results, skipped)


@record
class ErrorSummary:
    kind: str
    quantity: str
    split: str
    rows: int
    median_abs: float
    worst: float
    naive_median_abs: float | None
    naive_worst: float | None

    @property
    def beats_naive(self) -> bool | None:
        if self.naive_median_abs is None:
            return None
        return self.median_abs < self.naive_median_abs


def _summary(kind: str, quantity: str, split: str, rows: list[Validation]) -> ErrorSummary:
    naive = [r.naive_error for r in rows if r.naive_error is not None]
    if kind == "fit":  # share of wrong verdicts
        wrong = statistics.mean(r.error for r in rows)
        naive_wrong = statistics.mean(naive) if naive else None
        return ErrorSummary(kind, quantity, split, len(rows), wrong, wrong, naive_wrong, naive_wrong)
    return ErrorSummary(kind, quantity, split, len(rows), statistics.median(abs(r.error) for r in rows),
                        max((r.error for r in rows), key=abs),
                        statistics.median(abs(e) for e in naive) if naive else None,
                        max(naive, key=abs) if naive else None)


def by_stack(results: list[Validation]) -> list[ErrorSummary]:
    """Fine-tuning memory, fit verdicts and longest contexts per training stack (the ``split`` field
    names the stack): what a user of that stack gets."""
    summaries = []
    for kind in ("memory", "fit", "max_context"):
        rows = [r for r in results if r.kind == kind]
        for stack in sorted({r.group for r in rows}):
            chosen = [r for r in rows if r.group == stack]
            summaries.append(_summary(kind, chosen[0].quantity, stack, chosen))
    return summaries


def summarize(results: list[Validation]) -> list[ErrorSummary]:
    """Per kind: the fit rows, the held-out rows and all of them."""
    summaries = []
    for kind in KINDS:
        rows = [r for r in results if r.kind == kind]
        if not rows:
            continue
        for split in ("fit", "holdout", "all"):
            chosen = rows if split == "all" else [r for r in rows if r.split == split]
            if chosen:
                summaries.append(_summary(kind, chosen[0].quantity, split, chosen))
    return summaries
