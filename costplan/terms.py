"""Keys of the itemised results: memory terms, memory phases and FLOP parts.

Sums, categories and checks use these keys; the labels are for display only (``label(key)``).
The values are the JSON keys of ``--json`` (schema 2): lowercase, underscore-separated.
"""

from __future__ import annotations

from enum import Enum


class Mem(str, Enum):
    """A term of per-GPU memory."""

    WEIGHTS = "weights"
    GRADIENTS = "gradients"
    MASTER = "master_weights"
    OPTIMIZER = "optimizer_states"
    GRAD_COPIES = "fp32_gradient_copies"
    STEP_TEMPS = "optimizer_step_temporaries"
    ACTIVATIONS = "activations"
    LOGITS = "logits"
    LAYER_BACKWARD = "layer_backward"
    DEQUANT = "dequant_workspace"
    GATHER = "zero3_gather"
    KV_CACHE = "kv_cache"
    WEIGHT_COPIES = "weight_copies"
    QUANTIZE = "load_quantization"

    @property
    def label(self) -> str:
        return _MEM_LABELS[self]


_MEM_LABELS = {
    Mem.WEIGHTS: "weights", Mem.GRADIENTS: "gradients", Mem.MASTER: "master weights",
    Mem.OPTIMIZER: "optimizer states", Mem.GRAD_COPIES: "fp32 gradient copies",
    Mem.STEP_TEMPS: "optimizer step temporaries", Mem.ACTIVATIONS: "activations", Mem.LOGITS: "logits",
    Mem.LAYER_BACKWARD: "layer backward", Mem.DEQUANT: "dequant workspace", Mem.GATHER: "zero-3 gather",
    Mem.KV_CACHE: "kv cache", Mem.WEIGHT_COPIES: "16-bit/fp8 weight copies",
    Mem.QUANTIZE: "quantization at load",
}


class Phase(str, Enum):
    """A moment of a step at which the live memory may peak."""

    BACKWARD_START = "backward_start"
    ATTENTION_BACKWARD = "attention_backward"
    LAYER_RECOMPUTE = "layer_recompute"
    BACKWARD_END = "backward_end"
    OPTIMIZER_STEP = "optimizer_step"
    CHECKPOINT_LOAD = "checkpoint_load"
    GENERATION = "generation"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


class Part(str, Enum):
    """A part of the model whose FLOPs are counted apart."""

    ATTENTION_PROJECTIONS = "attention_projections"
    ROUTER = "router"
    MLP = "mlp"
    ADAPTERS = "lora_adapters"
    SCORES = "attention_scores"
    HEAD = "lm_head"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").replace("lora", "LoRA")
