"""What is run: sequence shape, batch, precision, optimizer and memory-saving switches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Precision = Literal["fp32", "bf16", "fp16", "fp8"]
Attention = Literal["flash", "eager"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp16", "fp8")

COMPUTE_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 2}
"""Bytes per element of weights and activations held in memory. Under fp8 (Transformer Engine)
weights and most saved activations stay in bf16; only the matmul inputs are cast, so memory is
planned as bf16 (conservative)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Workload:
    seq_len: int = 2048
    """Tokens per training sequence (data tokens, before any virtual tokens)."""
    micro_batch: int = 1
    """Sequences per GPU per forward/backward (for inference: concurrent requests per replica)."""
    global_batch: int | None = None
    """Sequences per optimizer step over all GPUs; gradient accumulation makes up the rest."""
    precision: Precision = "bf16"
    optimizer: str = "adamw"
    grad_ckpt: bool = False
    """Activation checkpointing of every transformer layer (one extra forward in backward)."""
    attention: Attention = "flash"
    """``flash`` (SDPA / FlashAttention: no s² scores kept) or ``eager`` (scores materialised)."""
    prompt_len: int = 512
    """Inference: prompt tokens per request."""
    gen_len: int = 256
    """Inference: generated tokens per request."""
    source_len: int | None = None
    """Encoder-decoder models (T5) in training: source tokens per example, which the encoder reads;
    ``seq_len`` is then the target, the decoder's tokens and the loss's. In generation the source is
    ``prompt_len`` and the target ``gen_len``. None for decoder-only models."""

    def __post_init__(self) -> None:
        for name in ("seq_len", "micro_batch", "prompt_len", "gen_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.source_len is not None and (not isinstance(self.source_len, int) or self.source_len <= 0):
            raise ValueError(f"--source-len must be a positive integer, got {self.source_len!r}")
        if self.global_batch is not None and self.global_batch <= 0:
            raise ValueError("--global-batch must be a positive integer")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}")
        if self.attention not in ("flash", "eager"):
            raise ValueError("--attention must be flash or eager")

    @property
    def compute_bytes(self) -> int:
        return COMPUTE_BYTES[self.precision]

    @property
    def mixed_precision(self) -> bool:
        """16-bit (or fp8) compute with fp32 master weights in the optimizer."""
        return self.precision != "fp32"
