"""The approaches costplan plans, as a closed set of small types.

Each method says which parameters it trains (base weights, LoRA adapters, virtual tokens or
prefixes), how the frozen base is stored, how long its sequences become, what token volume it
is planned over by default, and which assumptions it brings. The FLOPs and memory rules read
these properties; they never branch on the method's name.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import ClassVar, Literal

from costplan.errors import CostplanError
from costplan.model import Linear, ModelSpec, count_params, layer_kinds, layer_linears, layer_sequence
from costplan.record import record

BaseStorage = Literal["compute", "nf4", "int8"]

LORA_ROLES = ("q", "k", "v", "o", "qkv", "q_a", "q_b", "kv_a", "kv_b", "router", "gate", "up", "gate_up", "down",
              "experts")
"""Target names ``--lora-targets`` accepts; each matrix of the inventory says which of them adapt it
(``Linear.targets``): a fused ``qkv`` answers to q, k and v, MLA's ``kv_b`` to k and v, T5's
cross-attention to q, k, v, o, shared and routed experts to gate, up and down; ``experts`` names routed
experts held as 3-D tensors (gpt-oss), which peft adapts through ``target_parameters`` only."""
_TARGET_GROUPS = {
    "all-linear": LORA_ROLES[:-1],
    "attn": ("q", "k", "v", "o", "qkv", "q_a", "q_b", "kv_a", "kv_b"),
    "mlp": ("gate", "up", "gate_up", "down"),
}
OUTER_TARGETS = ("head", "embeddings")
"""LoRA outside the layers: the LM head (a Linear) and the token embedding (peft's Embedding LoRA)."""
# peft module names that are not ``<role>_proj``.
_MODULE_ALIASES = {
    "lm_head": "head", "embed_tokens": "embeddings", "wte": "embeddings", "embed_in": "embeddings",
    "word_embeddings": "embeddings", "embed_out": "head", "kv_a_proj_with_mqa": "kv_a", "wi": "up", "wi_0": "gate",
    "wi_1": "up", "wo": "down", "c_attn": "qkv", "query_key_value": "qkv", "fc1": "up", "fc2": "down"
}


@record
class Adapter:
    """A LoRA pair A (in × r) and B (r × out) on one base matrix (``copies`` for experts)."""

    linear: Linear
    rank: int
    magnitude: bool = False
    """DoRA: a trainable magnitude per output feature, and the base and adapter outputs kept for it."""

    @property
    def merged(self) -> bool:
        """On a tensor of a custom module (gpt-oss's experts), through peft's ``target_parameters``: each
        forward merges ``W + s·BA`` into a full-size weight, which the matmul then uses (and trains)."""
        return not self.linear.module

    @property
    def params(self) -> int:
        extra = self.linear.out_features if self.magnitude else 0
        return self.linear.copies * (self.rank * (self.linear.in_features + self.linear.out_features) + extra)


@record
class Tensor2D:
    """A trainable tensor's shape, for optimizers whose state depends on it (Adafactor, 8-bit Adam)."""

    rows: int
    cols: int
    count: int = 1

    @property
    def elements(self) -> int:
        return self.rows * self.cols * self.count


@record(kw_only=True)
class Method:
    """Common behaviour: nothing trained, base stored in the compute dtype."""

    key: ClassVar[str]
    label: ClassVar[str]
    training: ClassVar[bool] = True
    trains_base: ClassVar[bool] = False
    base_storage: ClassVar[BaseStorage] = "compute"

    def adapter(self, linear: Linear) -> Adapter | None:
        """The adapter this method puts on one weight matrix, if any."""
        return None

    def adapters(self, model: ModelSpec) -> tuple[Adapter, ...]:
        """Every distinct adapter of the layers (one per adapted matrix shape and role)."""
        return tuple(a for a in map(self.adapter, layer_linears(model)) if a is not None)

    @property
    def virtual_tokens(self) -> int:
        """Trainable tokens prepended to every sequence (prompt tuning)."""
        return 0

    @property
    def prefix_tokens(self) -> int:
        """Trainable key/value positions prepended in every layer (prefix tuning)."""
        return 0

    @property
    def trains_embeddings(self) -> bool:
        """The token embedding trains (so the first layer's input requires a gradient)."""
        return self.trains_base

    @property
    def trains_head(self) -> bool:
        """The LM head's weight trains (so backward computes its dW and keeps its input)."""
        return self.trains_base

    def saved_modules(self, model: ModelSpec) -> tuple[Tensor2D, ...]:
        """Trainable copies of whole modules (peft ``modules_to_save``), held in the compute dtype."""
        return ()

    @property
    def predicted_fraction(self) -> float:
        """Share of positions the output head and its loss run on (1 but for sparse masked-LM prediction)."""
        return 1.0

    def trainable_tensors(self, model: ModelSpec) -> tuple[Tensor2D, ...]:
        return ()

    def idle_tensors(self, model: ModelSpec) -> tuple[Tensor2D, ...]:
        """Trainable parameters that text never reaches, so they get no gradient and no optimizer state
        (LoRA adapters peft puts on a vision tower): held in memory, counted as peft counts them."""
        return ()

    def trainable_params(self, model: ModelSpec) -> int:
        return sum(t.elements for t in (*self.trainable_tensors(model), *self.idle_tensors(model)))

    def default_tokens(self, model: ModelSpec) -> tuple[float, str]:
        """The token volume planned when ``--tokens`` is not given, and why."""
        return 100e6, "100M training tokens (a typical fine-tuning set; pass --tokens)"

    def notes(self, model: ModelSpec) -> list[str]:
        return []

    def validate(self, model: ModelSpec) -> None:
        if self.training is False and not model.causal:
            raise CostplanError(f"{model.name} is an encoder: text generation does not apply to it.")


@record(kw_only=True)
class Inference(Method):
    key: ClassVar[str] = "inference"
    label: ClassVar[str] = "inference (prompting only)"
    training: ClassVar[bool] = False
    weights: str = ""
    """Weight-only quantization of the layers' matrices (int8, int4, nf4, fp8, mxfp4); empty: the compute dtype."""

    def notes(self, model: ModelSpec) -> list[str]:
        if not self.weights or self.weights in ("bf16", "fp16"):
            return []
        if self.weights == "mxfp4" and model.is_moe:
            return ["weights: the routed experts stored in MXFP4 (4.25 bits, as gpt-oss ships them); attention, "
                    "router, embeddings and the LM head in 16 bits"]
        return [f"weights: the layers' matrices stored in {self.weights} (weight-only quantization; embeddings "
                "and the LM head in 16 bits), dequantized on the fly as each decode step reads them"]

    def default_tokens(self, model: ModelSpec) -> tuple[float, str]:
        return 1e6, "1M generated tokens priced (pass --tokens)"


@record(kw_only=True)
class _VirtualTokens(Method):
    """Shared by prompt and prefix tuning: a count of trainable virtual positions."""

    num_virtual_tokens: int = 20

    def __post_init__(self) -> None:
        if self.num_virtual_tokens <= 0:
            raise ValueError("--virtual-tokens must be a positive integer")


@record(kw_only=True)
class PromptTuning(_VirtualTokens):
    key: ClassVar[str] = "prompt"
    label: ClassVar[str] = "prompt tuning (soft prompt)"

    @property
    def virtual_tokens(self) -> int:
        return self.num_virtual_tokens

    def trainable_tensors(self, model: ModelSpec) -> tuple[Tensor2D, ...]:
        return (Tensor2D(self.num_virtual_tokens, model.hidden_size),)

    def validate(self, model: ModelSpec) -> None:
        if model.is_encoder_decoder:
            raise CostplanError("prompt tuning of encoder-decoder models (virtual tokens on the source) is not "
                                "modelled yet; use lora or full.")

    def notes(self, model: ModelSpec) -> list[str]:
        return [f"prompt tuning: {self.num_virtual_tokens} virtual tokens lengthen every sequence; "
                "the frozen base still back-propagates to the input (peft PromptEmbedding in fp32)"]


@record(kw_only=True)
class PrefixTuning(_VirtualTokens):
    key: ClassVar[str] = "prefix"
    label: ClassVar[str] = "prefix tuning"

    @property
    def prefix_tokens(self) -> int:
        return self.num_virtual_tokens

    def trainable_tensors(self, model: ModelSpec) -> tuple[Tensor2D, ...]:
        # peft's PrefixEncoder without projection: one embedding of
        # num_virtual_tokens x (layers * 2 * key/value width).
        return (Tensor2D(self.num_virtual_tokens, model.num_layers * model.kv_cache_width),)

    def notes(self, model: ModelSpec) -> list[str]:
        return [f"prefix tuning: {self.num_virtual_tokens} trainable key/value positions in each of "
                f"{model.num_layers} layers (no reparameterisation MLP)"]

    def validate(self, model: ModelSpec) -> None:
        if not model.causal or model.is_encoder_decoder:
            raise CostplanError("prefix tuning is planned for decoder-only models.")
        if model.mla is not None:
            raise CostplanError(f"{model.name} caches a compressed key/value latent (MLA): peft's prefix tuning "
                                "does not apply to it.")


def parse_targets(text: str) -> tuple[str, ...]:
    """``q,v`` / ``all-linear`` / ``attn`` / ``mlp`` into LoRA target roles."""
    roles: list[str] = []
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        part = _MODULE_ALIASES.get(part, part)
        if part in OUTER_TARGETS:
            roles.append(part)
        elif part in _TARGET_GROUPS:
            roles.extend(_TARGET_GROUPS[part])
            if part == "all-linear":  # peft's shorthand also takes every other nn.Linear (a vision tower's)
                roles.append(part)
        elif part.removesuffix("_proj") in LORA_ROLES:
            roles.append(part.removesuffix("_proj"))
        elif re.fullmatch(r"experts\.\d{1,5}", part):  # one layer's expert tensors (peft's "7.mlp.experts...")
            roles.append(f"experts.{int(part.split('.')[1])}")
        else:
            raise CostplanError(
                f"Unknown LoRA target {part!r}: use q,k,v,o,gate,up,down (qkv, gate_up; q_a, q_b, kv_a, kv_b "
                "for MLA; experts, or experts.N for layer N's, for gpt-oss's expert tensors), attn, mlp or all-linear."
            )
    if not roles:
        raise CostplanError("--lora-targets is empty.")
    return tuple(dict.fromkeys(roles))


SAVED_MODULES = ("embeddings", "head")
"""What ``modules_to_save`` can name here: the token embedding and the LM head."""


@record(kw_only=True)
class Lora(Method):
    key: ClassVar[str] = "lora"
    label: ClassVar[str] = "LoRA"
    rank: int = 8
    targets: tuple[str, ...] = ("q", "v")
    """peft's default for Llama-style models is q and v."""
    dropout: float = 0.0
    alpha: float | None = None
    """lora_alpha (scaling alpha/r, or alpha/sqrt(r) under rsLoRA): changes no cost, only reported."""
    rslora: bool = False
    dora: bool = False
    """DoRA (Liu et al. 2024, peft ``use_dora``): weight-decomposed LoRA with a trained magnitude vector."""
    modules_to_save: tuple[str, ...] = ()
    """Whole modules trained beside the adapters: ``embeddings`` and/or ``head``."""
    expert_stack_dequant: bool = False
    """A quantized base's routed experts are quantized as a parametrization of their 3-D tensors
    (Axolotl's ``quantize_moe_experts``, src/axolotl/monkeypatch/moe_quant.py): a layer's whole expert
    stack is dequantized in the compute dtype when its experts run, and the grouped matmuls keep it
    for their input's gradient until that layer's backward."""

    def __post_init__(self) -> None:
        if self.rank <= 0:
            raise ValueError("--lora-rank must be a positive integer")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("--lora-dropout must be in [0, 1)")
        unknown = set(self.modules_to_save) - set(SAVED_MODULES)
        if unknown:
            raise ValueError(f"modules_to_save can be {' and '.join(SAVED_MODULES)}, not {', '.join(sorted(unknown))}")

    @property
    def trains_embeddings(self) -> bool:
        """A trained copy of the embedding, or LoRA on it: its lookup's backward keeps the token
        indices and the first layer's input requires a gradient."""
        return "embeddings" in self.modules_to_save or "embeddings" in self.targets

    @property
    def trains_head(self) -> bool:
        return "head" in self.modules_to_save

    @property
    def head_rank(self) -> int:
        """LoRA rank on the LM head (0: none): A (hidden x r) and B (r x vocab)."""
        return self.rank if "head" in self.targets else 0

    @property
    def embedding_rank(self) -> int:
        """LoRA rank on the token embedding (0: none): peft's A (r x vocab) looked up, then B (hidden x r)."""
        return self.rank if "embeddings" in self.targets else 0

    def outer_tensors(self, model: ModelSpec) -> tuple[Tensor2D, ...]:
        h, v, tensors = model.hidden_size, model.vocab_size, []
        if self.head_rank:
            tensors += [Tensor2D(h, self.rank), Tensor2D(self.rank, v)]
        if self.embedding_rank:
            tensors += [Tensor2D(self.rank, v), Tensor2D(h, self.rank)]
        return tuple(tensors)

    def saved_modules(self, model: ModelSpec) -> tuple[Tensor2D, ...]:
        # peft's ModulesToSaveWrapper deep-copies the module (in the model's dtype) and trains the copy;
        # the original stays frozen beside it. A tied head gets its own untied copy.
        h, v = model.hidden_size, model.vocab_size
        return tuple(Tensor2D(v, h) for part in SAVED_MODULES if part in self.modules_to_save)

    @property
    def expert_layers(self) -> frozenset[int] | None:
        """The layers whose expert tensors carry LoRA: all (None) for ``experts``, else those named ``experts.N``."""
        if "experts" in self.targets:
            return None
        return frozenset(int(t.split(".")[1]) for t in self.targets if t.startswith("experts."))

    def without_experts(self) -> Lora:
        """The same adapters but none on the expert tensors (the layers ``experts.N`` leaves out)."""
        return replace(self, targets=tuple(t for t in self.targets if not t.startswith("experts")))

    def adapter(self, linear: Linear) -> Adapter | None:
        targets = (*self.targets, "experts") if self.expert_layers else self.targets
        if (linear.module or "experts" in linear.target_names) and any(n in targets for n in linear.target_names):
            return Adapter(linear, self.rank, self.dora)
        return None

    def trainable_tensors(self, model: ModelSpec) -> tuple[Tensor2D, ...]:
        tensors = []
        layers, sequence = self.expert_layers, layer_sequence(model)
        for kind in layer_kinds(model):
            for adapter in filter(None, map(self.adapter, kind.linears)):
                adapted = kind.count if not adapter.merged or layers is None else \
                    sum(1 for i, k in enumerate(sequence) if k is kind and i in layers)
                lin, count = adapter.linear, adapter.linear.copies * adapted
                tensors.append(Tensor2D(lin.in_features, self.rank, count))
                tensors.append(Tensor2D(self.rank, lin.out_features, count))
                if adapter.magnitude:
                    tensors.append(Tensor2D(1, lin.out_features, count))
        return (*tensors, *self.outer_tensors(model), *self.saved_modules(model))

    def idle_tensors(self, model: ModelSpec) -> tuple[Tensor2D, ...]:
        """Adapters on a vision tower's Linear layers: peft matches target names by their last part
        (``q_proj`` adapts the tower's ``q_proj`` too) and ``all-linear`` takes every Linear but the LM
        head. Text-only data never runs them."""
        if model.vision is None:
            return ()
        names = {f"{role}_proj" for role in self.targets}
        tensors: list[Tensor2D] = []
        for name, features_in, features_out, count in model.vision.linears:
            if "all-linear" in self.targets or name in names:
                tensors += [Tensor2D(features_in, self.rank, count), Tensor2D(self.rank, features_out, count)]
                if self.dora:
                    tensors.append(Tensor2D(1, features_out, count))
        return tuple(tensors)

    def validate(self, model: ModelSpec) -> None:
        adapters = self.adapters(model)
        if not adapters and not (self.head_rank or self.embedding_rank):
            names = sorted({name for lin in layer_linears(model) if lin.module or "experts" in lin.target_names
                            for name in lin.target_names} & set(LORA_ROLES))
            raise CostplanError(f"None of the LoRA targets {','.join(self.targets)} exist in {model.name} "
                                f"(its matrices answer to {','.join(names)}).")
        beyond = sorted(i for i in (self.expert_layers or ()) if i >= model.num_layers)
        if beyond:
            raise CostplanError(f"--lora-targets experts.{beyond[0]}: {model.name} has layers 0 to "
                                f"{model.num_layers - 1}.")
        if any(a.merged for a in adapters) and (self.dora or self.dropout):
            raise CostplanError("LoRA on expert tensors (peft's target_parameters) runs without DoRA and with "
                                "--lora-dropout 0, as peft requires.")
        smallest = min((min(a.linear.in_features, a.linear.out_features) for a in adapters),
                       default=model.hidden_size)
        if self.rank > smallest:
            raise CostplanError(
                f"--lora-rank {self.rank} exceeds the smallest targeted matrix dimension ({smallest})."
            )

    def notes(self, model: ModelSpec) -> list[str]:
        roles = [a.linear.role for a in self.adapters(model)]
        outer = [name for name in ("head", "embeddings") if name in self.targets]
        scaling = ""
        if self.alpha is not None:
            scaling = (f", alpha {self.alpha:g} (scale {self.alpha / self.rank ** (0.5 if self.rslora else 1):.3g}"
                       + (", rsLoRA alpha/sqrt(r)" if self.rslora else "") + "; no effect on cost)")
        layers = self.expert_layers
        plain = [r for r in roles if not r.startswith("expert_") or layers is None]
        where = f"{','.join(plain)} in every layer" if plain else ""
        if layers:
            where += ("; " if where else "") + "the expert tensors of layer" + ("s " if len(layers) > 1 else " ") + \
                ", ".join(map(str, sorted(layers)))
        if outer:
            where += (" and " if where else "") + " and ".join({"head": "the LM head", "embeddings": "the token "
                                                                 "embedding"}[o] for o in outer)
        notes = [f"LoRA rank {self.rank} on {where}{scaling}"]
        if any(a.merged for a in self.adapters(model)):
            notes.append("LoRA on the expert tensors through peft's target_parameters: each forward merges W + s·BA "
                         "into a full expert stack (twice, torch's parametrization evaluating it once more), which "
                         "the grouped matmuls run on and train; its gradient gives the factors'. Held and streamed "
                         "per micro-batch")
        if self.expert_stack_dequant and model.is_moe:
            notes.append("routed experts quantized as a parametrization of their 3-D tensors (Axolotl's "
                         "quantize_moe_experts): each MoE layer's whole expert stack dequantized in the compute "
                         "dtype where its experts run, and kept by the grouped matmuls until that layer's backward")
        if self.dora:
            notes.append("DoRA: a trained fp32 magnitude per output feature (exact in the parameter count); each "
                         "adapted matrix also keeps its base output and fp32 adapter output for backward and builds "
                         "its full weight (plus an identity product) once per forward: approximated as those "
                         "tensors; the weight-norm FLOPs (2·in·r·(in+out) per matrix per micro-batch) and the extra "
                         "elementwise time are not counted, so DoRA runs slower than planned")
        if self.modules_to_save:
            names = " and ".join({"embeddings": "the token embedding", "head": "the LM head"}[m]
                                 for m in self.modules_to_save)
            notes.append(f"modules_to_save: {names} trained as full copies (vocab x hidden each) in the model's "
                         "dtype, as peft makes them, with gradients and optimizer states in that dtype and no fp32 "
                         "master copy (transformers' Trainer on a model loaded in bf16/fp16)")
        idle = sum(t.elements for t in self.idle_tensors(model))
        if idle:
            notes.append(f"peft's target names also match the vision tower's Linear layers: {idle:,} adapter "
                         "parameters there, counted as trainable as peft counts them and held in memory, but text "
                         "never reaches them (no gradient, no optimizer state); a regex target on the language "
                         "model's layers leaves them out")
        return notes


@record(kw_only=True)
class QLora(Lora):
    key: ClassVar[str] = "qlora"
    label: ClassVar[str] = "QLoRA (4-bit NF4 base)"
    base_storage: ClassVar[BaseStorage] = "nf4"
    double_quant: bool = True
    quantize_experts: bool = False
    """Routed experts held as 3-D tensors (gpt-oss) stored in 4 bits too, which bitsandbytes' loading
    does not do: Unsloth's pre-quantized gpt-oss checkpoints (its ``unsloth/gpt-oss-*`` 4-bit loads)."""
    quantize_head: bool = False
    """The LM head stored in NF4 as well, and dequantized whole each time the loss reads it (LitGPT:
    Lightning's ``BitsandbytesPrecision`` replaces every ``nn.Linear``, ``lm_head`` included, where
    transformers' loading keeps the head in the compute dtype)."""
    bnb_keeps_input: bool = False
    """Runs on bitsandbytes before 0.43.2 (July 2024), whose 4-bit matmul also kept its input for
    backward; 0.43.2 to 0.50 keep only the packed weight."""
    unchunked_quantize: bool = False
    """Quantizes on the GPU with torchao 0.1's NF4 (torchtune pinned it until 2024-06-26), which finds
    every element's nearest NF4 value over one (elements x 16) tensor: a spike at load of
    ``UNCHUNKED_NF4_BYTES_PER_ELEMENT`` bytes per element of the largest matrix, whose blocks the caching
    allocator keeps reserved. torchao 0.2 (pytorch/ao#196, 2024-05-01) quantizes in chunks of 2^20."""

    def validate(self, model: ModelSpec) -> None:
        if model.is_encoder_decoder:
            raise CostplanError("QLoRA of T5 is not modelled: transformers keeps its wo projections unquantized in "
                                "fp32 when loading in 4 bits (_keep_in_fp32_modules); use lora.")
        Lora.validate(self, model)

    def notes(self, model: ModelSpec) -> list[str]:
        quant = "with double quantization" if self.double_quant else "without double quantization"
        return [*Lora.notes(self, model),
                f"base linear layers stored in NF4 (block 64, {quant}); "
                + ("the LM head in NF4 too (every nn.Linear quantized); embeddings and norms in the compute dtype; "
                   "one matrix dequantized at a time, the whole head for each chunk of the loss" if self.quantize_head
                   else "embeddings, norms and LM head in the compute dtype; one layer matrix dequantized at a time"),
                *([("routed experts stored in NF4 as well (Unsloth's 4-bit checkpoint)" if self.quantize_experts else
                    "routed experts and router left unquantized: they are tensors of custom modules, which "
                    "bitsandbytes' 4-bit loading leaves as they are (in the compute dtype, or in fp32 where peft's "
                    "k-bit preparation upcasts the unquantized parameters)")] if model.expert_tensors else []),
                *(["quantized on the GPU at load by torchao 0.1, a whole matrix at once: 68 bytes per element of "
                   "the largest matrix at the load's peak, kept reserved by the caching allocator"]
                  if self.unchunked_quantize else [])]


@record(kw_only=True)
class FullFineTune(Method):
    key: ClassVar[str] = "full"
    label: ClassVar[str] = "full fine-tuning"
    trains_base: ClassVar[bool] = True

    def trainable_tensors(self, model: ModelSpec) -> tuple[Tensor2D, ...]:
        return full_model_tensors(model)


@record(kw_only=True)
class ContinualPretraining(FullFineTune):
    key: ClassVar[str] = "cpt"
    label: ClassVar[str] = "continual pretraining"

    def default_tokens(self, model: ModelSpec) -> tuple[float, str]:
        return 10e9, "10B unlabelled tokens (continual pretraining budgets run to billions; pass --tokens)"


@record(kw_only=True)
class Pretraining(FullFineTune):
    key: ClassVar[str] = "pretrain"
    label: ClassVar[str] = "pretraining from scratch"
    masking: float = 0.15
    """Encoders (masked language modelling): the share of positions masked, 15% as in BERT and Cramming."""
    sparse_prediction: bool = False
    """Encoders: run the MLM head and loss on the masked positions only, as Cramming's code does
    (Geiping & Goldstein 2022); Hugging Face's BertForMaskedLM runs them on every position (the default)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.masking < 1.0:
            raise ValueError("the masking rate must be between 0 and 1")

    @property
    def predicted_fraction(self) -> float:
        return self.masking if self.sparse_prediction else 1.0

    def validate(self, model: ModelSpec) -> None:
        if self.sparse_prediction and model.causal:
            raise CostplanError("sparse prediction applies to masked-LM encoders; a causal LM predicts every token.")

    def notes(self, model: ModelSpec) -> list[str]:
        if model.causal:
            return []
        where = ("the masked positions only (sparse prediction, as Cramming's code does)" if self.sparse_prediction
                 else "every position (as Hugging Face's BertForMaskedLM does; Cramming's sparse prediction runs "
                      "them on the masked positions only)")
        return [f"masked language modelling: {self.masking:.0%} of positions masked; the MLM head and loss run on "
                f"{where}"]

    def default_tokens(self, model: ModelSpec) -> tuple[float, str]:
        tokens = 20.0 * count_params(model).total
        return tokens, "20 tokens per parameter (Chinchilla compute-optimal, Hoffmann et al. 2022)"


@record(kw_only=True)
class Lora8bit(Lora):
    """LoRA on a base loaded in 8 bits (bitsandbytes LLM.int8, ``load_in_8bit``): int8 matrices with
    an fp32 scale per row; each matmul quantizes its input to int8, keeps that input (in the compute
    dtype) for dX, and dequantizes the weight for the backward."""

    key: ClassVar[str] = "lora-int8"
    label: ClassVar[str] = "LoRA on an 8-bit base (LLM.int8)"
    base_storage: ClassVar[BaseStorage] = "int8"

    def notes(self, model: ModelSpec) -> list[str]:
        return [*Lora.notes(self, model),
                "8-bit base (bitsandbytes LLM.int8, 0.50): int8 matrices with an fp32 scale per output row; "
                "each 8-bit matmul keeps its input for dX (MatMul8bitLt), so more activations than a 16-bit "
                "base; embeddings, norms and the LM head stay 16-bit"]


METHODS: dict[str, type[Method]] = {
    cls.key: cls
    for cls in (Inference, PromptTuning, PrefixTuning, Lora, QLora, Lora8bit, FullFineTune,
                ContinualPretraining, Pretraining)
}


def full_model_tensors(model: ModelSpec) -> tuple[Tensor2D, ...]:
    """Every parameter tensor of the model as (rows, cols, count); vectors have rows=1."""
    h = model.hidden_size
    tensors = [Tensor2D(model.vocab_size, h)]
    if model.learned_positions:
        tensors.append(Tensor2D(model.max_positions, h))
    if model.token_types:
        tensors.append(Tensor2D(model.token_types, h))
    if model.relative_attention_buckets:
        stacks = 2 if model.is_encoder_decoder else 1
        tensors.append(Tensor2D(model.relative_attention_buckets, model.num_heads, stacks))
    norm_vectors = 2 if model.norm == "layernorm" else 1
    for kind in layer_kinds(model):
        for lin in kind.linears:
            tensors.append(Tensor2D(lin.out_features, lin.in_features, lin.copies * kind.count))
            if lin.bias:
                tensors.append(Tensor2D(1, lin.out_features, lin.copies * kind.count))
        tensors += [Tensor2D(1, width, kind.count) for width in kind.norms]
    stacks = 2 if model.is_encoder_decoder else 1
    tensors.append(Tensor2D(1, h, norm_vectors * stacks))  # final norm(s), or BERT's embedding LayerNorm
    if not model.tied_embeddings:
        tensors.append(Tensor2D(model.vocab_size, h))
    if model.head_bias:
        tensors.append(Tensor2D(1, model.vocab_size))
    if model.mlm_head:
        tensors += [Tensor2D(h, h), Tensor2D(1, h, 1 + norm_vectors), Tensor2D(1, model.vocab_size)]
    counts = count_params(model)  # a vision tower gets no gradient from text: it is loaded, not trained
    assert sum(t.elements for t in tensors) == counts.total - counts.vision
    return tuple(tensors)
