"""``costplan cram``: how far one GPU gets in a fixed number of hours.

From scratch, the compute budget is ``C = peak x MFU x seconds``. The compute-optimal split
follows Hoffmann et al. 2022 (Chinchilla): about 20 training tokens per parameter with
``C ~= 6 N D``, so ``N_opt = sqrt(C / 120)`` and ``D_opt = 20 N_opt``. Candidate models are
Llama-shaped (SwiGLU, RMSNorm, RoPE, 32K vocabulary) on a ladder of widths and depths close to
published model families; each is checked for memory (full training, bf16 mixed precision,
AdamW, with and without activation checkpointing) and timed with the analytic FLOPs, which count
attention and the LM head, unlike ``6 N D``.

For a given model, each adaptation approach is checked on that one GPU: whether it fits (trying
activation checkpointing when needed) and how many tokens, and epochs of a dataset, it gets
through in the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from costplan.api import Estimate, estimate
from costplan.errors import CostplanError
from costplan.hardware import gpu as find_gpu
from costplan.model import ModelSpec, count_params
from costplan.profile import Profile, default_profile

TOKENS_PER_PARAM = 20.0
"""Chinchilla's compute-optimal ratio (Hoffmann et al. 2022, Table 3: ~20 tokens per parameter)."""

# (hidden, layers): widths and depths near GPT-2/Pythia/Llama family members.
LADDER = ((256, 4), (512, 8), (768, 12), (1024, 16), (1024, 24), (1536, 24), (2048, 24), (2560, 32),
          (3072, 32), (4096, 32), (5120, 40), (6144, 48), (8192, 80))

CRAMMING_REFERENCE = (
    "sanity: Geiping & Goldstein 2022 (arXiv:2212.14034), 'Cramming': a BERT-base-sized model "
    "(about 110M parameters) pretrained for 24 h on one consumer GPU reaches close to BERT's GLUE score"
)


def llama_shaped(hidden: int, layers: int, seq_len: int = 2048) -> ModelSpec:
    heads = max(1, hidden // 128) if hidden >= 1024 else max(1, hidden // 64)
    ffn = int(math.ceil(hidden * 8 / 3 / 256) * 256)
    return ModelSpec(name=f"llama-{hidden}x{layers}", family="llama", hidden_size=hidden, num_layers=layers,
                     num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads, ffn_size=ffn,
                     vocab_size=32000, max_positions=max(seq_len, 2048))


@dataclass(frozen=True, slots=True)
class ScratchOption:
    model: ModelSpec
    params: int
    fits: bool
    grad_ckpt: bool
    device_bytes: float
    tokens_per_second: float
    tokens_in_budget: float
    hours_for_optimal: float
    """Hours to train on 20 tokens per parameter."""

    @property
    def finishes(self) -> bool:
        return self.fits and self.tokens_in_budget >= TOKENS_PER_PARAM * self.params


@dataclass(frozen=True, slots=True)
class CramResult:
    gpu: str
    hours: float
    compute_flops: float
    optimal_params: float
    optimal_tokens: float
    options: tuple[ScratchOption, ...]
    largest_fitting: ScratchOption | None
    approaches: tuple[Estimate, ...]
    """For ``--model``: each approach on the one GPU (fits, tokens in budget)."""
    dataset_tokens: float
    notes: tuple[str, ...]


def cram(gpu: str = "h100", hours: float = 24.0, *, model: str | None = None, dataset_tokens: float = 50e6,
         seq_len: int = 2048, precision: str = "bf16", profile: Profile | None = None) -> CramResult:
    if hours <= 0 or hours > 24 * 365:
        raise ValueError("--hours must be positive and at most a year")
    if dataset_tokens <= 0:
        raise ValueError("--dataset-tokens must be positive")
    profile = profile or default_profile()
    device = find_gpu(gpu)
    mfu = profile.mfu("pretrain", precision).value
    seconds = hours * 3600
    compute = device.peak(precision) * mfu * seconds
    n_opt = math.sqrt(compute / (6 * TOKENS_PER_PARAM))
    options = []
    for hidden, layers in LADDER:
        spec = llama_shaped(hidden, layers, seq_len)
        option = None
        for ckpt in (False, True):
            est = estimate(spec, "pretrain", gpu=device.key, gpus=1, tokens=1e9, seq_len=seq_len,
                           precision=precision, grad_ckpt=ckpt, profile=profile, price=0.0)
            option = ScratchOption(spec, count_params(spec).total, est.placement.fits, ckpt, est.memory.device_bytes,
                                   est.tokens_per_second, est.tokens_per_second * seconds,
                                   TOKENS_PER_PARAM * count_params(spec).total / est.tokens_per_second / 3600)
            if option.fits:
                break
        assert option is not None
        options.append(option)
    fitting = [o for o in options if o.fits]
    approaches: list[Estimate] = []
    if model is not None:
        for method in ("prompt", "prefix", "lora", "qlora", "full"):
            try:
                est = _fit_one_gpu(model, method, device.key, None, precision, profile)
            except CostplanError:
                continue  # e.g. prefix tuning of an encoder
            approaches.append(est)
    notes = (
        f"compute budget: {device.name}, {precision} dense peak x MFU {mfu:.2f} (not calibrated) x {hours:g} h",
        f"compute-optimal rule: D = {TOKENS_PER_PARAM:g} N tokens and C = 6 N D (Hoffmann et al. 2022), "
        f"so N = sqrt(C / {6 * TOKENS_PER_PARAM:g})",
        "from-scratch candidates: Llama-shaped, 32K vocabulary, full bf16 mixed-precision training with AdamW, "
        f"sequence {seq_len}, micro-batch 1, checkpointing only when needed to fit",
        CRAMMING_REFERENCE,
    )
    return CramResult(device.key, hours, compute, n_opt, TOKENS_PER_PARAM * n_opt, tuple(options),
                      max(fitting, key=lambda o: o.params) if fitting else None, tuple(approaches),
                      dataset_tokens, notes)


def _fit_one_gpu(model: str, method: str, gpu: str, seq_len: int | None, precision: str,
                 profile: Profile) -> Estimate:
    est = None
    for ckpt in (False, True):
        est = estimate(model, method, gpu=gpu, gpus=1, tokens=1e9, precision=precision, grad_ckpt=ckpt,
                       profile=profile, price=0.0,
                       seq_len=None if seq_len is None else seq_len)
        if est.placement.fits:
            return est
    assert est is not None
    return est
