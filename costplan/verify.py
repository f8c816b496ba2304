"""``costplan verify``: the analytical model beside a traced step of the real model code.

Each case builds the Hugging Face model from its architecture numbers on PyTorch's meta device
(no weights, no memory, any size on a laptop), applies the real peft adapter, runs one training
step (forward, backward, optimizer step) or one inference step (prefill + a decode step) with
attention and dropout on the kernels a GPU runs (see ``tracing``), and compares:

- parameters, total and trainable, counted from the module;
- FLOPs of forward and backward, counted by ``FlopCounterMode``;
- peak live tensor bytes over the step, and its make-up at the traced peak (weights, gradients,
  optimizer states, logits, KV cache, activations) against the analytic terms.

QLoRA needs bitsandbytes' CUDA kernels, which a CPU trace cannot run; its 4-bit layer is
replaced by a stand-in reproduced from bitsandbytes' source (packed storage and block constants,
dequantize-then-matmul, the tensors its autograd function keeps), see
``tracing._quantize_base``; the peft adapters on top are the real ones.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import field, replace
from pathlib import Path

from costplan import engine, files
from costplan.errors import CostplanError
from costplan.flops import inference_flops, training_flops
from costplan.memory import MemoryBreakdown, inference_memory, training_memory
from costplan.methods import Inference, Method
from costplan.model import ModelSpec, count_params, resolve_model
from costplan.profile import default_profile
from costplan.record import record
from costplan.terms import Mem
from costplan.workload import Workload

FLOPS_TOLERANCE = 0.01
PEAK_MEDIAN_TOLERANCE = 0.03
PEAK_WORST_TOLERANCE = 0.08

# Analytic memory terms grouped into the categories a trace can tell apart.
_TRACE_CATEGORY = {
    Mem.WEIGHTS: "weights", Mem.GRADIENTS: "gradients", Mem.GRAD_COPIES: "gradients",
    Mem.MASTER: "optimizer states", Mem.OPTIMIZER: "optimizer states",
    Mem.LOGITS: "logits", Mem.KV_CACHE: "kv cache",
}


@record(kw_only=True)
class Case:
    """One configuration to verify."""

    model: str
    method: str
    precision: str = "bf16"
    grad_ckpt: bool = False
    attention: str = "flash"
    seq_len: int | None = None
    """Training sequence length, or the prompt length for inference [default: 2048 or the context].
    Encoder-decoder models: the target length in training, the source length in inference."""
    source_len: int | None = None
    """Encoder-decoder models in training: the source length [default: 512]."""
    micro_batch: int = 1
    framework: str | None = None
    """A training stack whose conventions the step follows (``tables/frameworks.csv``): its bf16
    mode, adapter dtype, gradient buffers and optimizer, where they can be traced."""
    optimizer: str | None = None
    """[default: foreach AdamW, or the stack's]"""

    @property
    def label(self) -> str:
        parts = [self.model, self.method, self.precision, self.attention]
        if self.framework:
            parts.append(f"on {self.framework}")
        if self.optimizer:
            parts.append(self.optimizer)
        if self.grad_ckpt:
            parts.append("ckpt")
        return " ".join(parts)


@record
class Check:
    """One quantity, analytic beside traced."""

    quantity: str
    analytic: float
    traced: float

    @property
    def error(self) -> float:
        """Relative error of the analytic value (0 when both are 0)."""
        if self.traced == 0:
            return 0.0 if self.analytic == 0 else math.inf
        return self.analytic / self.traced - 1


@record
class CaseResult:
    case: Case
    checks: tuple[Check, ...]
    seconds: float
    peak_at: str
    """Where the traced peak happened (operator, op count)."""
    analytic_phase: str
    length: int
    """Sequence (training) or prompt (inference) length traced."""
    notes: tuple[str, ...] = field(default=())

    def get(self, quantity: str) -> Check:
        return next(c for c in self.checks if c.quantity == quantity)

    @property
    def params_exact(self) -> bool:
        return all(c.analytic == c.traced for c in self.checks if c.quantity.startswith("params"))

    @property
    def flops_error(self) -> float:
        return self.get("flops total").error

    @property
    def peak_error(self) -> float:
        return self.get("memory peak").error

    @property
    def largest_term(self) -> str:
        """The memory category whose analytic bytes miss the traced ones by the most."""
        terms = [c for c in self.checks if c.quantity.startswith("memory: ")]
        worst = max(terms, key=lambda c: abs(c.analytic - c.traced))
        return worst.quantity.removeprefix("memory: ")


TRACEABLE_OPTIMIZERS = ("adamw", "adamw-fused", "sgd", "sgd-momentum")


def _workload(case: Case, model: ModelSpec, method: Method) -> tuple[Workload, list[str]]:
    """The case's workload, with notes on what of its stack was left out of the trace. An
    encoder-decoder (T5) trains on 512 source and 128 target tokens and generates from a
    512-token source by default."""
    from costplan.api import stack_workload
    from costplan.frameworks import default_framework
    from costplan.frameworks import framework as find_framework

    length = case.seq_len or min(2048, model.max_positions - method.virtual_tokens)
    source = None
    if model.is_encoder_decoder:
        length, source = case.seq_len or 128, case.source_len or 512
    if not method.training:
        length = case.seq_len or (512 if model.is_encoder_decoder else min(512, model.max_positions - 1))
        return Workload(prompt_len=length, gen_len=1, micro_batch=case.micro_batch,
                        precision=case.precision, attention=case.attention), []  # type: ignore[arg-type]
    stack = find_framework(case.framework) if case.framework else default_framework(True, method.trains_base, False)
    optimizer = case.optimizer or (None if case.framework else "adamw")
    work, _ = stack_workload(stack, method, precision=case.precision, optimizer=optimizer, grad_ckpt=case.grad_ckpt,
                             gpus=1, seq_len=length, micro_batch=case.micro_batch, attention=case.attention,
                             source_len=source)
    notes = []
    if case.framework is None and work.precision == "bf16-true":
        # Without a stack, bf16-true is what it says: a bf16 model, no autocast (the Trainer's
        # autocast over a bf16 model is traced as its own case, with framework="hf-trainer").
        work = replace(work, autocast_forward=False)
    if work.optimizer not in TRACEABLE_OPTIMIZERS:
        notes.append(f"{work.optimizer} needs CUDA (bitsandbytes or a factored step): traced and modelled with "
                     "a fused AdamW step instead")
        work = replace(work, optimizer="adamw-fused")
    if work.loss != "full" or not work.loss_fp32:
        notes.append(f"{stack.key}'s {work.loss} loss is modelled; the trace runs transformers' loss, as the model")
        work = replace(work, loss="full", loss_fp32=True)
    if work.offload:
        notes.append("offloading to the host is modelled, not traced")
        work = replace(work, offload=())
    if work.held_logits:
        notes.append(f"{stack.key}'s loop holding the logits is modelled; the trace keeps only the loss")
        work = replace(work, held_logits=None)
    if work.compiled:
        notes.append("torch.compile is modelled (its partitioner's saved tensors are traced on the CPU by the "
                     "tests; dynamo does not run on the meta device); the trace runs eager")
        work = replace(work, compiled=False)
    if work.modeling != "transformers":
        notes.append(f"{stack.key}'s own layer code ({work.modeling}) is modelled from its source; the trace runs "
                     "transformers' modules, as the model")
        work = replace(work, modeling="transformers")
    if work.kbit_fp32_upcast:
        notes.append("peft's prepare_model_for_kbit_training (fp32 embeddings, head and norms) is modelled, not "
                     "traced")
        work = replace(work, kbit_fp32_upcast=False)
    return work, notes


def analytic_breakdown(model: ModelSpec, method: Method, work: Workload) -> MemoryBreakdown:
    """The engine's memory for one GPU, no sharding, the workload's micro-batch, one step."""
    profile = default_profile()
    one = training_memory(model, method, replace(work, micro_batch=1))
    phases = engine.training_phases(one, dp=1, zero=0, micro_batch=work.micro_batch, grad_accum=1)
    return engine.breakdown(phases, profile.allocator_slack(), profile.cuda_context_bytes())


def _memory_checks(analytic: MemoryBreakdown, traced: dict[str, int]) -> list[Check]:
    grouped = dict.fromkeys(traced, 0.0)
    for term, value in analytic.terms.items():
        grouped[_TRACE_CATEGORY.get(term, "activations")] += value
    return [Check(f"memory: {name}", grouped[name], traced[name]) for name in traced]


class TraceFailed(Exception):
    """The real model code could not be traced for a case (a library limitation, not bad input)."""


MAX_LAYERS = 256
"""The deepest model ``verify`` traces: a trace runs every operator of every layer in Python, about
0.2 s per layer on one laptop core, so 256 layers answer within about a minute (the deepest
published language models have under 200 layers)."""


def prepare(case: Case, model: ModelSpec | None = None) -> tuple[ModelSpec, Method, Workload, tuple[str, ...]]:
    """costplan's own checks of a case, before any tracing: bad input is a ``CostplanError``. Returns the
    model traced, the method, the workload and the notes on what of the case the trace leaves out.
    ``model`` traces that spec (a preset cut to fewer layers, say) in place of ``case.model``.

    Of an image-text checkpoint, the text model is traced, as a causal LM: the vision tower it holds is
    counted against the real module by the tests (test_params), and memory only holds it."""
    from costplan.api import make_method

    model = model if model is not None else resolve_model(case.model)
    notes: list[str] = []
    if model.vision is not None:
        model = replace(model, vision=None, name=f"{model.name} (text model)")
        notes.append("the text model is traced: the checkpoint's vision tower (held, never run on text) is left out "
                     "of both columns")
    method = make_method(case.method, lora_rank=8, lora_targets="q,v", lora_dropout=0.0, virtual_tokens=20)
    method.validate(model)
    if model.num_layers > MAX_LAYERS:
        raise CostplanError(f"verify traces models of up to {MAX_LAYERS} layers (about 0.2 s per layer, so a "
                            f"minute at most); {model.name} has {model.num_layers:,}. Use estimate for it.")
    work, stack_notes = _workload(case, model, method)
    positions = work.prompt_len + 1 if not method.training else work.seq_len + method.virtual_tokens
    model.check_positions(positions)
    return model, method, work, (*notes, *stack_notes)


def run_case(case: Case) -> CaseResult:
    """Trace one case on the meta device and compare it with the analytic model."""
    model, method, work, notes = prepare(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers and peft warn about training-time options
        try:
            return _run_case(case, model, method, work, notes)
        except Exception as exc:  # an exception inside transformers, peft or torch
            detail = " ".join(str(exc).split())
            detail = detail[:300] + ("..." if len(detail) > 300 else "")
            raise TraceFailed(f"tracing {case.label} failed: {type(exc).__name__}: {detail}") from exc


def _run_case(case: Case, model: ModelSpec, method: Method, work: Workload, prepared: tuple[str, ...]) -> CaseResult:
    from costplan.tracing import trace_inference_step, trace_training_step

    started = time.perf_counter()
    profile = default_profile()
    notes = list(prepared)
    if not method.training:
        traced = trace_inference_step(model, work, device="meta")
        fl = inference_flops(model, Inference(), Workload(prompt_len=work.prompt_len, gen_len=2,
                                                           micro_batch=work.micro_batch, attention=work.attention))
        memory = engine.breakdown(engine.inference_phases(inference_memory(model, method, work), tp=1),
                                  profile.allocator_slack(), profile.cuda_context_bytes())
        b = work.micro_batch
        checks = [
            Check("params total", count_params(model).total, traced.params_total),
            Check("flops forward", fl.prefill.per_token * work.prompt_len * b, traced.flops_prefill),
            Check("flops backward", fl.decode.per_token * b, traced.flops_decode),
            Check("flops total", fl.prefill.per_token * work.prompt_len * b + fl.decode.per_token * b,
                  traced.flops_prefill + traced.flops_decode),
            Check("memory peak", memory.peak_bytes, traced.peak_bytes),
            *_memory_checks(memory, traced.peak_breakdown),
        ]
        notes.append("inference: 'flops forward' is the prefill, 'flops backward' the first decode step")
        return CaseResult(case, tuple(checks), time.perf_counter() - started, traced.peak_op, "generation",
                          work.prompt_len, tuple(notes))
    traced_step = trace_training_step(model, method, work, device="meta")
    flops = training_flops(model, method, work)
    tokens = work.seq_len * work.micro_batch
    memory = analytic_breakdown(model, method, work)
    checks = [
        Check("params total", count_params(model).total, traced_step.params_total),
        Check("params trainable", method.trainable_params(model), traced_step.params_trainable),
        Check("flops forward", flops.forward * tokens, traced_step.flops_forward),
        Check("flops backward", (flops.backward + flops.recompute) * tokens, traced_step.flops_backward),
        Check("flops total", flops.per_token * tokens, traced_step.flops),
        Check("memory peak", memory.peak_bytes, traced_step.peak_bytes),
        *_memory_checks(memory, traced_step.peak_breakdown),
    ]
    if method.base_storage == "nf4":
        notes.append("qlora: bitsandbytes' 4-bit layer emulated from its source (CUDA-only library)")
    if work.autocast:
        notes.append("autocast emulated above autograd (costplan.autocast): meta tensors have no autocast key")
    return CaseResult(case, tuple(checks), time.perf_counter() - started, traced_step.peak_op,
                      memory.peak_phase.label, work.seq_len, tuple(notes))


MODELS = ("gpt2", "bert-base", "llama-2-7b", "llama-3-8b", "mistral-7b", "mixtral-8x7b")
METHODS = ("inference", "prompt", "prefix", "lora", "qlora", "full")

FAMILY_CASES = (
    # Phi-2: one LayerNorm read by attention and MLP in parallel, biased projections and LM head, RoPE
    # on 0.4 of each head; pure bf16, and LoRA under autocast (fp32 LayerNorms and GELU, as for GPT-2).
    Case(model="phi-2", method="lora", precision="bf16-true"),
    Case(model="phi-2", method="lora", precision="bf16-mixed"),
    Case(model="phi-2", method="full", grad_ckpt=True, precision="bf16-true"),
    Case(model="phi-2", method="inference", precision="bf16-true"),
    # Llama's layers under their own model types: AFM's plain MLP with ReLU squared, ERNIE 4.5's
    # per-layer fp32 RoPE, Granite's constant multipliers (QLoRA), SmolLM3's layers without RoPE.
    Case(model="afm-4.5b", method="lora"),
    Case(model="afm-4.5b", method="inference"),
    Case(model="ernie-4.5-0.3b", method="full", grad_ckpt=True, precision="bf16-true"),
    Case(model="granite-3.3-8b", method="qlora"),
    Case(model="smollm3-3b", method="lora", attention="eager"),
    # GLM-4.5-Air: DeepSeek-V3's MoE under GQA with partial RoPE; GLM-4.7-Flash: DeepSeek-V3's module.
    Case(model="glm-4.5-air", method="lora"),
    Case(model="glm-4.7-flash", method="full", grad_ckpt=True, precision="bf16-true"),
    # Phi-3: fused qkv and gate_up, a sliding window (2047) just under the 2048-token sequence.
    Case(model="phi-3-mini", method="lora"),
    Case(model="phi-3-mini", method="full", grad_ckpt=True, precision="bf16-true"),
    Case(model="phi-3-mini", method="inference"),
    # Gemma 2: sandwich norms, attention softcap (eager), final softcap, alternating windows.
    Case(model="gemma-2-9b", method="lora", attention="eager"),
    Case(model="gemma-2-9b", method="full", precision="bf16-true"),
    Case(model="gemma-2-9b", method="inference"),
    # Gemma 3: q/k norms, five sliding layers (window 512) to a global one.
    Case(model="gemma-3-1b", method="lora"),
    Case(model="gemma-3-1b", method="inference"),
    Case(model="gemma-3-4b", method="qlora", grad_ckpt=True),
    Case(model="qwen2.5-7b", method="lora"),
    Case(model="qwen2.5-7b", method="inference"),
    Case(model="qwen3-8b", method="full", grad_ckpt=True, precision="bf16-true"),
    Case(model="qwen3-8b", method="inference", attention="eager"),
    # Qwen3 MoE: 128 experts, top-8, grouped matmuls.
    Case(model="qwen3-30b-a3b", method="lora"),
    Case(model="qwen3-30b-a3b", method="full", precision="bf16-true"),
    Case(model="qwen3-30b-a3b", method="inference"),
    # DeepSeek-V3: MLA (compressed KV cache), shared experts, three dense layers, fp32 router.
    Case(model="deepseek-v3", method="lora"),
    Case(model="deepseek-v3", method="full", grad_ckpt=True, precision="bf16-true"),
    Case(model="deepseek-v3", method="inference"),
    # OLMo 2: norms after each block, q/k norms over all heads, fp32 rotary tables.
    Case(model="olmo-2-7b", method="full", precision="bf16-true"),
    Case(model="olmo-2-7b", method="lora", grad_ckpt=True),
    Case(model="olmo-2-7b", method="inference"),
    # T5: encoder-decoder (512 source, 128 target tokens), cross-attention, relative position bias.
    Case(model="t5-base", method="full", precision="bf16-true"),
    Case(model="t5-base", method="lora"),
    Case(model="t5-base", method="lora", attention="eager", grad_ckpt=True),
    Case(model="t5-base", method="inference"),
    # gpt-oss: attention sinks, biased experts with the clamped SwiGLU, 128-token windows on alternate layers.
    Case(model="gpt-oss-20b", method="lora"),
    Case(model="gpt-oss-20b", method="full", grad_ckpt=True, precision="bf16-true"),
    Case(model="gpt-oss-20b", method="inference"),
)
"""The families added after the first matrix, each with its own mechanisms, in the representative
subset (the full matrix stays the six models above). Their full fine-tuning is traced in pure bf16;
autocast over fp32 weights is traced on the Llama family (``MODE_CASES``)."""

MODE_CASES = (
    # Llama-2-7B full fine-tuning, micro-batch 1, 2048 tokens, SDPA, foreach AdamW: the Trainer's
    # bf16=True (autocast over fp32 weights) at 20 B/param, pure bf16 at 10 B/param.
    Case(model="llama-2-7b", method="full", precision="bf16-mixed"),
    Case(model="llama-2-7b", method="full", precision="bf16-true"),
    Case(model="llama-2-7b", method="full", precision="bf16-master", framework="deepspeed"),
    Case(model="llama-2-7b", method="full", precision="bf16-master", framework="megatron", grad_ckpt=True),
    Case(model="llama-2-7b", method="full", precision="fp16-master", framework="deepspeed"),
    Case(model="llama-3-8b", method="full", framework="torchtune", grad_ckpt=True),
    Case(model="llama-3-8b", method="full", precision="fp16-mixed", grad_ckpt=True),
    Case(model="llama-3-8b", method="lora", framework="torchtune"),
    Case(model="llama-3-8b", method="qlora", framework="litgpt", grad_ckpt=True),
    Case(model="mistral-7b", method="lora", framework="axolotl"),
    Case(model="llama-2-7b", method="lora-int8", grad_ckpt=True),
    Case(model="llama-2-7b", method="lora", precision="bf16-true", framework="hf-trainer"),
)
"""Precision modes and stacks: each mode once, and what can be traced of each stack's conventions
(fp8 needs CUDA and Transformer Engine: modelled only)."""


def matrix(full: bool = False) -> list[Case]:
    """The verification matrix: every model x method x precision x checkpointing x attention
    (``full``), or a representative subset that covers each value at least once (default)."""
    if full:
        cases = []
        for model in MODELS:
            for method in METHODS:
                if model == "mixtral-8x7b" and method == "qlora":
                    # transformers 5 keeps the experts as fused 3-D tensors, which bitsandbytes'
                    # Linear4bit replacement does not quantize; the estimate assumes 4-bit experts.
                    continue
                if model == "bert-base" and method in ("inference", "prefix", "prompt"):
                    # An encoder: no generation or key/value prefix, and peft's prompt tuning
                    # wraps generative or classification heads, not a masked-LM head.
                    continue
                for precision in ("bf16-mixed", "bf16-true", "fp32"):
                    if model == "mixtral-8x7b" and precision == "fp32":
                        # transformers' grouped-matmul experts run in bf16 only; in fp32 it loops
                        # over experts with data-dependent shapes, which no meta trace can follow.
                        continue
                    for attention in ("flash", "eager"):
                        # peft's prefix tuning refuses activation checkpointing; inference has none.
                        ckpts = (False,) if method in ("inference", "prefix") else (False, True)
                        cases += [Case(model=model, method=method, precision=precision, grad_ckpt=ckpt,
                                       attention=attention) for ckpt in ckpts]
        return cases
    return [
        # LayerNorm models: under autocast GPT-2's LayerNorms and its Python GELU's pow run in fp32, and
        # BERT's post-norm LayerNorms make its whole residual stream fp32.
        Case(model="gpt2", method="lora", precision="bf16-mixed"),
        Case(model="bert-base", method="lora", precision="bf16-mixed"),
        Case(model="gpt2", method="full", precision="bf16-true"),
        Case(model="gpt2", method="lora", attention="eager", precision="bf16-true"),
        Case(model="gpt2", method="inference"),
        Case(model="bert-base", method="full", precision="fp32"),
        Case(model="bert-base", method="lora", grad_ckpt=True, precision="bf16-true"),
        Case(model="llama-2-7b", method="lora"),
        Case(model="llama-2-7b", method="qlora", grad_ckpt=True),
        Case(model="llama-2-7b", method="full", grad_ckpt=True),
        Case(model="llama-2-7b", method="prompt", precision="fp32"),
        Case(model="llama-2-7b", method="inference", attention="eager"),
        Case(model="llama-3-8b", method="lora", grad_ckpt=True),
        Case(model="llama-3-8b", method="full"),
        Case(model="llama-3-8b", method="prefix"),
        Case(model="llama-3-8b", method="inference"),
        Case(model="mistral-7b", method="lora", attention="eager"),
        Case(model="mistral-7b", method="prompt", grad_ckpt=True),
        Case(model="mixtral-8x7b", method="lora"),
        Case(model="mixtral-8x7b", method="full"),
        Case(model="mixtral-8x7b", method="inference"),
        *FAMILY_CASES,
        *MODE_CASES,
    ]


def run_matrix(cases: Iterable[Case], progress: Callable[[Case], None] | None = None,
               failed: list[str] | None = None) -> list[CaseResult]:
    """Run every case; a case whose trace fails is reported in ``failed`` and the rest go on."""
    results = []
    for case in cases:
        if progress:
            progress(case)
        try:
            results.append(run_case(case))
        except TraceFailed as exc:
            if failed is None:
                raise
            failed.append(str(exc))
        except CostplanError as exc:  # a case costplan itself refuses: reported, the rest go on
            if failed is None:
                raise
            failed.append(f"{case.label}: {exc}")
    return results


@record
class Summary:
    cases: int
    params_exact: int
    flops_worst: float
    peak_median: float
    peak_worst: float
    worst_case: str

    @property
    def passed(self) -> bool:
        return (self.params_exact == self.cases and self.flops_worst <= FLOPS_TOLERANCE
                and self.peak_median <= PEAK_MEDIAN_TOLERANCE and self.peak_worst <= PEAK_WORST_TOLERANCE)


def summarize(results: list[CaseResult]) -> Summary:
    peaks = [abs(r.peak_error) for r in results]
    worst = max(results, key=lambda r: abs(r.peak_error))
    return Summary(cases=len(results), params_exact=sum(r.params_exact for r in results),
                   flops_worst=max(abs(r.flops_error) for r in results),
                   peak_median=statistics.median(peaks), peak_worst=max(peaks), worst_case=worst.case.label)


CSV_COLUMNS = ("model", "method", "precision", "attention", "grad_ckpt", "seq_len", "quantity", "analytic",
               "traced", "rel_error", "peak_at", "analytic_phase", "seconds", "framework", "optimizer")


def write_csv(results: list[CaseResult], path: Path) -> None:
    """Every check of every case, written atomically."""
    rows = []
    for result in results:
        c = result.case
        for check in result.checks:
            values = [c.model, c.method, c.precision, c.attention, c.grad_ckpt, result.length, check.quantity,
                      f"{check.analytic:.0f}", f"{check.traced:.0f}", f"{check.error:.6f}", result.peak_at,
                      result.analytic_phase, f"{result.seconds:.2f}", c.framework or "", c.optimizer or ""]
            rows.append(dict(zip(CSV_COLUMNS, values, strict=True)))
    files.write_csv(path, rows)
