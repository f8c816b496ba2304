"""``costplan cram``: how far one GPU gets in a fixed number of hours.

From scratch, the compute budget is ``C = peak x MFU x seconds``, with the MFU the engine predicts
for a model of that size on that GPU (small models run far below a large model's MFU). The compute-optimal split
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

from costplan import arguments
from costplan import precision as modes
from costplan.api import PRECISIONS, Estimate, estimate, make_method
from costplan.errors import CostplanError
from costplan.hardware import gpu as find_gpu
from costplan.methods import Pretraining
from costplan.model import ModelSpec, count_params, preset, resolve_model
from costplan.profile import Profile, default_profile
from costplan.record import record

TOKENS_PER_PARAM = 20.0
"""Chinchilla's compute-optimal ratio (Hoffmann et al. 2022, Table 3: ~20 tokens per parameter)."""

# (hidden, layers): widths and depths near GPT-2/Pythia/Llama family members.
LADDER = ((256, 4), (512, 8), (768, 12), (1024, 16), (1024, 24), (1536, 24), (2048, 24), (2560, 32),
          (3072, 32), (4096, 32), (5120, 40), (6144, 48), (8192, 80))


@record
class Published:
    """The Cramming paper's published setting (Geiping & Goldstein 2022, arXiv:2212.14034)."""

    gpu: str = "rtx-a6000"
    hours: float = 24.0
    seq_len: int = 128
    masking: float = 0.15
    batch_sequences: int = 8192
    """bert-o4's target batch, reached by a ramp at 60% of the budget."""
    micro_batch: int = 128
    precision: str = "fp16 mixed precision (AMP)"
    model: str = ("crammed BERT: 16 layers, hidden 768, 12 heads, gated GELU MLP 1536 wide, no biases, "
                  "scaled-sinusoidal positions, 32,768-token vocabulary, tied embeddings")
    outcome: str = "GLUE close to the original BERT-base's"
    source: str = ("https://huggingface.co/JonasGeiping/crammed-bert (card: 'trained for 24 hours on a single "
                   "A6000 GPU') + https://github.com/JonasGeiping/cramming (README final recipe: arch=crammed-bert "
                   "train=bert-o4; config files), as collected in /work/research/pretrain/pretrain_runs.csv")

    @property
    def batch_tokens(self) -> int:
        return self.batch_sequences * self.seq_len


CRAMMING = Published()


@record
class EncoderRun:
    """Pretraining a BERT-base-sized encoder from scratch with masked language modelling on one GPU."""

    label: str
    estimate: Estimate
    tokens_in_budget: float

    @property
    def fits(self) -> bool:
        return self.estimate.placement.fits

    @property
    def cramming_steps(self) -> float:
        """Optimizer steps of the paper's batch (8192 sequences of 128 tokens) in the budget."""
        return self.tokens_in_budget / CRAMMING.batch_tokens


def llama_shaped(hidden: int, layers: int, seq_len: int = 2048) -> ModelSpec:
    heads = max(1, hidden // 128) if hidden >= 1024 else max(1, hidden // 64)
    ffn = int(math.ceil(hidden * 8 / 3 / 256) * 256)
    return ModelSpec(name=f"llama-{hidden}x{layers}", family="llama", hidden_size=hidden, num_layers=layers,
                     num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads, ffn_size=ffn,
                     vocab_size=32000, max_positions=max(seq_len, 2048))


@record
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
    mfu: float = 0.0

    @property
    def finishes(self) -> bool:
        return self.fits and self.tokens_in_budget >= TOKENS_PER_PARAM * self.params


@record
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
    encoder: tuple[EncoderRun, ...] = ()
    """Cramming's question: BERT-base pretrained from scratch with MLM (sequence 128) on this GPU."""
    model_seq_len: int | None = None
    """The sequence length the approaches for ``--model`` are planned at."""


APPROACHES = ("prompt", "prefix", "lora", "qlora", "full", "cpt", "pretrain")


def cram(gpu: str = "h100", hours: float = 24.0, *, model: str | ModelSpec | None = None,
         dataset_tokens: float = 50e6, seq_len: int | None = None, precision: str = "bf16",
         profile: Profile | None = None) -> CramResult:
    """``seq_len`` applies to the from-scratch ladder (default 2048) and to ``model``'s approaches
    (default: 2048 or its context if shorter; 128 for an encoder, as Cramming and BERT pretrain)."""
    v = arguments.checked(arguments.CRAM, dict(hours=hours, dataset_tokens=dataset_tokens, seq_len=seq_len),
                          auto={"seq_len"})
    hours, dataset_tokens, seq_len = v["hours"], v["dataset_tokens"], v["seq_len"]
    gpu = arguments.text("gpu", gpu)
    precision = arguments.text("precision", precision, PRECISIONS)
    if profile is not None and not isinstance(profile, Profile):
        raise CostplanError(f"profile must be a costplan.profile.Profile, not {profile!r}.")
    profile = profile or default_profile()
    device = find_gpu(gpu)
    seconds = hours * 3600
    options = []
    ladder_seq = seq_len or 2048
    for hidden, layers in LADDER:
        spec = llama_shaped(hidden, layers, ladder_seq)
        est = estimate(spec, "pretrain", gpu=device.key, gpus=1, tokens=1e9, seq_len=ladder_seq, precision=precision,
                       profile=profile, price=0.0)
        params = count_params(spec).total
        options.append(ScratchOption(spec, params, est.placement.fits, est.workload.grad_ckpt, est.memory.device_bytes,
                                     est.tokens_per_second, est.tokens_per_second * seconds,
                                     TOKENS_PER_PARAM * params / est.tokens_per_second / 3600, est.mfu))
    compute, n_opt = _compute_optimal(options, device.peak(precision), seconds)
    fitting = [o for o in options if o.fits]
    approaches: list[Estimate] = []
    skipped: list[str] = []
    model_seq = None
    if model is not None:
        spec = model if isinstance(model, ModelSpec) else resolve_model(model)
        model_seq = seq_len or (min(128, spec.max_positions) if not spec.causal else min(2048, spec.max_positions))
        for key in APPROACHES:
            how = make_method(key)
            try:
                how.validate(spec)
            except CostplanError as exc:  # prefix tuning of an encoder
                skipped.append(f"{key} skipped: {str(exc).rstrip('.')}")
                continue
            if model_seq + how.virtual_tokens > spec.max_positions:
                skipped.append(f"{key} skipped: {model_seq} tokens" + (f" and {how.virtual_tokens} virtual tokens"
                                                                       if how.virtual_tokens else "")
                               + f" exceed {spec.name}'s context of {spec.max_positions}")
                continue
            approaches.append(estimate(spec, how, gpu=device.key, gpus=1, tokens=1e9, precision=precision,
                                       seq_len=model_seq, profile=profile, price=0.0))
    encoder = _encoder_runs(device.key, seconds, precision, profile)
    notes = (
        f"compute budget: {device.name}, {modes.peak_dtype(precision)} dense peak x the MFU the engine predicts for "
        "a model of the "
        f"compute-optimal size ({compute / (device.peak(precision) * seconds):.0%}) x {hours:g} h",
        f"compute-optimal rule: D = {TOKENS_PER_PARAM:g} N tokens and C = 6 N D (Hoffmann et al. 2022), "
        f"so N = sqrt(C / {6 * TOKENS_PER_PARAM:g})",
        "from-scratch candidates: Llama-shaped, 32K vocabulary, full bf16 mixed-precision training with AdamW, "
        f"sequence {ladder_seq}, on one GPU; micro-batch and checkpointing chosen as for `estimate`",
        *([f"{spec.name}: every approach at sequence {model_seq} on one GPU"
           + ("; pretraining and continual pretraining of an encoder are masked language modelling "
              "(15% masked, head on every position as in Hugging Face)" if not spec.causal else "")]
          if model is not None else []),
        *skipped,
        f"encoder from scratch (Cramming's question): bert-base shape, masked language modelling with "
        f"{CRAMMING.masking:.0%} masking at sequence {CRAMMING.seq_len}, {precision}, one GPU, the paper's batch of "
        f"{CRAMMING.batch_sequences:,} sequences; the MLM head on the masked positions only (as Cramming's code) and "
        "on every position (as Hugging Face's BertForMaskedLM)",
    )
    return CramResult(device.key, hours, compute, n_opt, TOKENS_PER_PARAM * n_opt, tuple(options),
                      max(fitting, key=lambda o: o.params) if fitting else None, tuple(approaches),
                      dataset_tokens, notes, encoder, model_seq)


def _encoder_runs(gpu_key: str, seconds: float, precision: str, profile: Profile) -> tuple[EncoderRun, ...]:
    """BERT-base pretrained with MLM at Cramming's sequence, the head run both ways."""
    runs = []
    bert = preset("bert-base")
    for label, sparse in (("head on the masked 15% (Cramming's code)", True),
                          ("head on every position (HF BertForMaskedLM)", False)):
        method = Pretraining(masking=CRAMMING.masking, sparse_prediction=sparse)
        est = estimate(bert, method, gpu=gpu_key, gpus=1, tokens=1e9, seq_len=CRAMMING.seq_len, precision=precision,
                       global_batch=CRAMMING.batch_sequences, profile=profile, price=0.0)
        tokens = est.tokens_per_second * seconds if est.placement.fits else 0.0
        runs.append(EncoderRun(label, est, tokens))
    return tuple(runs)


def _compute_optimal(options: list[ScratchOption], peak: float, seconds: float) -> tuple[float, float]:
    """The compute budget C and Chinchilla-optimal size N = sqrt(C / 120), where C is what a model of
    that very size achieves in the time: the crossing of N and sqrt(C(N) / 120) along the ladder,
    interpolated in log space."""
    points = [(math.log(o.params), math.log(math.sqrt(o.mfu * peak * seconds / (6 * TOKENS_PER_PARAM))), o)
              for o in options if o.mfu > 0]
    for (x0, y0, a), (x1, y1, b) in zip(points, points[1:], strict=False):
        d0, d1 = y0 - x0, y1 - x1
        if d0 >= 0 >= d1:
            t = d0 / (d0 - d1) if d0 != d1 else 0.0
            n = math.exp(x0 + t * (x1 - x0))
            mfu = math.exp(math.log(a.mfu) + t * (math.log(b.mfu) - math.log(a.mfu)))
            return mfu * peak * seconds, n
    last = points[-1][2] if points[-1][1] > points[-1][0] else points[0][2]
    compute = last.mfu * peak * seconds
    return compute, math.sqrt(compute / (6 * TOKENS_PER_PARAM))
