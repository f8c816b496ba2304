"""One estimate: specs in, FLOPs and memory from the pure rules, a layout chosen as a practitioner
would, projected by the engine onto GPUs, hours and dollars, with every assumption written down."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from costplan import engine
from costplan.energy import energy_model
from costplan.errors import CostplanError, unknown_name
from costplan.flops import FlopsBreakdown, InferenceFlops, inference_flops
from costplan.frameworks import Framework, default_framework
from costplan.frameworks import framework as find_framework
from costplan.hardware import GpuSpec, Price
from costplan.hardware import gpu as find_gpu
from costplan.hardware import price as find_price
from costplan.layout import Job, Pins, Placement, check_pins, choose, default_global_batch, practice
from costplan.memory import inference_memory
from costplan.methods import METHODS, Lora, Method, PrefixTuning, PromptTuning, parse_targets
from costplan.model import ModelSpec, count_params, resolve_model
from costplan.optimizers import optimizer as find_optimizer
from costplan.profile import Profile, default_profile, saved_profile_for
from costplan.scaling import Link, link
from costplan.speed import decode_shape, micro_batch_seconds, step_shape
from costplan.units import fmt_bytes, fmt_count
from costplan.workload import Workload

SCHEMA_VERSION = 2
"""Of the ``--json`` object; 2: enum keys in ``memory_breakdown``/``flops_breakdown``, ``mfu`` on
model FLOPs with ``hfu`` beside it, ``layout``."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Estimate:
    """The answer: what runs where, for how long, at what cost, and why."""

    model: ModelSpec
    method: Method
    gpu: GpuSpec
    workload: Workload
    """The workload as run: the chosen micro-batch and checkpointing included."""
    framework: Framework
    params_total: int
    params_active: int
    """Parameters each token passes through (MoE: top-k routed experts of each layer); ``params_total``
    for dense models."""
    params_trainable: int
    flops: FlopsBreakdown
    """Training: per data token. Inference: per generated token, prefill included."""
    tokens: float
    """Training: data tokens per epoch. Inference: generated tokens priced."""
    epochs: float
    flops_total: float
    placement: Placement
    tokens_per_second: float
    wall_seconds: float
    mfu: float
    """Model FLOPs (no recompute) per second over the GPUs' dense peak."""
    hfu: float
    """Executed FLOPs (recompute included) per second over the dense peak."""
    price: Price | None
    energy_kwh: float
    co2_kg: float
    assumptions: tuple[str, ...]
    wall_seconds_range: tuple[float, float] = (0.0, 0.0)
    """Wall time at the fast and slow ends of the model's spread on published runs."""
    scaling_efficiency: float = 1.0
    """Compute over the whole step (communication, pipeline bubble and optimizer step are the rest)."""
    step: engine.StepTime | None = None
    global_batch: int | None = None
    """Training: sequences per optimizer step."""
    serve: Estimate | None = None
    """The cost of serving the adapted model (``serve_tokens``), when asked."""
    inference: InferenceFlops | None = None
    latency_seconds: float | None = None
    """Inference: one batch of requests, prompt to last token."""
    time_to_first_token_seconds: float | None = None

    @property
    def memory(self) -> Any:
        return self.placement.memory

    @property
    def gpus(self) -> int:
        return self.placement.gpus

    @property
    def billed_gpus(self) -> int:
        return self.gpus if self.price is None else self.price.billed_gpus(self.gpus)

    @property
    def wall_hours(self) -> float:
        return self.wall_seconds / 3600

    @property
    def gpu_hours(self) -> float:
        return self.wall_hours * self.gpus

    @property
    def cost_usd(self) -> float | None:
        if self.price is None or not self.placement.fits:
            return None
        return self.wall_hours * self.billed_gpus * self.price.usd_per_gpu_hour

    @property
    def cost_usd_range(self) -> tuple[float, float] | None:
        """(low, high) dollars from the wall-time range."""
        if self.cost_usd is None:
            return None
        rate = self.cost_usd / self.wall_seconds if self.wall_seconds else 0.0
        return self.wall_seconds_range[0] * rate, self.wall_seconds_range[1] * rate

    @property
    def total_cost_usd(self) -> float | None:
        """Training plus serving, when serving was asked for."""
        if self.cost_usd is None:
            return None
        return self.cost_usd + ((self.serve.cost_usd or 0.0) if self.serve else 0.0)

    @property
    def cost_usd_per_million_tokens(self) -> float | None:
        if self.cost_usd is None or self.method.training:
            return None
        return self.billed_gpus * self.price.usd_per_gpu_hour / 3600 / self.tokens_per_second * 1e6  # type: ignore

    def to_dict(self) -> dict[str, Any]:
        """One JSON-ready object in base units (bytes, FLOPs, seconds, dollars)."""
        from costplan.serialize import estimate_dict

        return estimate_dict(self)


def make_method(name: str | Method, *, lora_rank: int = 8, lora_targets: str = "q,v", lora_dropout: float = 0.0,
                virtual_tokens: int = 20) -> Method:
    if isinstance(name, Method):
        return name
    if not isinstance(name, str):
        raise CostplanError(f"method must be a method name such as 'lora', not {name!r}.")
    cls = METHODS.get(name.lower())
    if cls is None:
        raise unknown_name("method", name, METHODS)
    if issubclass(cls, Lora):
        return cls(rank=lora_rank, targets=parse_targets(lora_targets), dropout=lora_dropout)
    if issubclass(cls, (PromptTuning, PrefixTuning)):
        return cls(num_virtual_tokens=virtual_tokens)
    return cls()


def hardware(device: GpuSpec, net: Link, precision: str, profile: Profile, *, usd_per_gpu_hour: float = 0.0,
             watts: float | None = None) -> engine.Hardware:
    """The engine's GPU inputs for one GPU type, with the profile's measured constants where it has them."""
    sixteen = "fp16" if precision in ("fp16", "fp8") and "bf16" not in device.peak_flops else (
        "fp32" if precision == "fp32" else "bf16")
    if sixteen not in device.peak_flops:
        sixteen = "fp16"
    peak = device.peak(precision)
    measured_link = profile.collective_bytes_per_s(device.key)
    return engine.Hardware(
        memory_bytes=device.memory_bytes, peak=peak, peak_16bit=device.peak(sixteen) if precision != "fp32" else peak,
        bandwidth=device.bandwidth_bytes_per_s,
        gemm_efficiency=profile.factor("gemm_efficiency", device.key, device.arch).value,
        attention_efficiency=profile.factor("attention_efficiency", device.key, device.arch).value,
        intra_bytes_per_s=min(net.intra_bytes_per_s, measured_link) if measured_link else net.intra_bytes_per_s,
        node_bytes_per_s=net.node_bytes_per_s, gpus_per_node=net.gpus_per_node, usd_per_gpu_hour=usd_per_gpu_hour,
        watts=watts if watts is not None else (profile.power_watts(device.key) or device.tdp_watts))


def _positive_int(name: str, value: Any, *, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"--{name} must be a positive integer, got {value!r}")
    return value


def estimate(
    model: str | ModelSpec = "7b",
    method: str | Method = "lora",
    *,
    gpu: str = "h100",
    gpus: int | None = None,
    tokens: float | None = None,
    epochs: float = 1.0,
    seq_len: int | None = None,
    micro_batch: int | None = None,
    global_batch: int | None = None,
    global_batch_tokens: float | None = None,
    precision: str = "bf16",
    optimizer: str | None = None,
    grad_ckpt: bool | None = None,
    attention: str = "flash",
    zero: int | None = None,
    tp: int | None = None,
    pp: int | None = None,
    framework: str | None = None,
    runtime: str | None = None,
    provider: str | None = None,
    spot: bool = False,
    price: float | None = None,
    lora_rank: int = 8,
    lora_targets: str = "q,v",
    lora_dropout: float = 0.0,
    virtual_tokens: int = 20,
    prompt_len: int = 512,
    gen_len: int = 256,
    source_len: int | None = None,
    target_len: int | None = None,
    pue: float | None = None,
    grid: str | float | None = None,
    serve_tokens: float | None = None,
    serve_batch: int = 32,
    startup_seconds: float = 0.0,
    profile: Profile | None = None,
) -> Estimate:
    """Estimate one way of adapting (or running) a model on a GPU type. See ``costplan estimate --help``.

    Layout values left at None (GPU count, micro-batch, global batch, checkpointing, ZeRO stage,
    tensor and pipeline parallelism) are chosen as a practitioner would (``costplan.layout``).
    """
    spec = model if isinstance(model, ModelSpec) else resolve_model(model)
    how = make_method(method, lora_rank=lora_rank, lora_targets=lora_targets, lora_dropout=lora_dropout,
                      virtual_tokens=virtual_tokens)
    how.validate(spec)
    device = find_gpu(gpu)
    profile = profile or saved_profile_for(device.key) or default_profile()
    for name, value in (("gpus", gpus), ("micro-batch", micro_batch), ("global-batch", global_batch),
                        ("tp", tp), ("pp", pp), ("seq-len", seq_len)):
        _positive_int(name, value)
    if zero is not None and zero not in (0, 1, 2, 3):
        raise ValueError("--zero must be 0, 1, 2 or 3")
    if not epochs > 0:
        raise ValueError("--epochs must be positive")
    if tokens is not None and not tokens > 0:
        raise ValueError("--tokens must be positive")
    if serve_tokens is not None and not serve_tokens > 0:
        raise ValueError("--serve-tokens must be positive")
    if global_batch is not None and global_batch_tokens is not None:
        raise CostplanError("give --global-batch (sequences) or --global-batch-tokens, not both.")
    power = energy_model(pue, grid)
    _positive_int("source-len", source_len)
    _positive_int("target-len", target_len)
    seq2seq_note = None
    if spec.is_encoder_decoder:
        # The target is what the decoder reads and the loss counts: tokens, FLOPs and cost are per
        # target token; generation reads the source as its prompt and generates the target.
        source = source_len or 512
        target = target_len or seq_len or 128
        seq_len, prompt_len, gen_len = target, source, target
        seq2seq_note = (f"encoder-decoder: {source} source tokens through the encoder, {target} target tokens "
                        "through the decoder (with cross-attention over the source); "
                        + ("tokens are target tokens: FLOPs and throughput are per target token" if how.training
                           else "the encoder runs once per request, then one decoder step per generated token"))
        if max(source, target) > spec.max_positions:
            raise CostplanError(f"{max(source, target)} positions exceed {spec.name}'s trained length of "
                                f"{spec.max_positions} tokens.")
    elif source_len is not None or target_len is not None:
        raise CostplanError(f"--source-len and --target-len apply to encoder-decoder models (t5); {spec.name} is a "
                            "decoder: use --seq-len, or --prompt-len and --gen-len for inference.")
    if seq_len is None:
        seq_len = min(2048, spec.max_positions - how.virtual_tokens)
    opt_name = optimizer or "adamw"
    find_optimizer(opt_name)
    work = Workload(seq_len=seq_len, micro_batch=micro_batch or 1, precision=precision,  # type: ignore[arg-type]
                    optimizer=opt_name, grad_ckpt=bool(grad_ckpt), attention=attention,  # type: ignore[arg-type]
                    prompt_len=prompt_len, gen_len=gen_len,
                    source_len=prompt_len if spec.is_encoder_decoder else None)
    context = (work.prompt_len + work.gen_len) if not how.training else seq_len + how.virtual_tokens
    if context > spec.max_positions and not spec.is_encoder_decoder:
        raise CostplanError(f"{context} positions exceed {spec.name}'s context of {spec.max_positions} tokens.")
    peak = device.peak(work.precision)
    counts = count_params(spec)
    params = counts.total
    if tokens is None:
        tokens, tokens_note = how.default_tokens(spec)
    else:
        tokens_note = f"{fmt_count(tokens)} tokens" + ("" if how.training else " generated")
    notes = [
        f"model {spec.name}: {fmt_count(params)} parameters"
        + (f", {fmt_count(counts.active)} active per token (embeddings included)" if spec.is_moe else "")
        + f" ({spec.family}, {spec.num_layers} layers, hidden {spec.hidden_size}, {spec.num_heads} heads / "
        + ("MLA latent attention" if spec.mla else f"{spec.num_kv_heads} kv heads")
        + (f", {spec.num_experts} experts top-{spec.experts_per_token}" if spec.is_moe else "")
        + (f" + {spec.shared_experts} shared" if spec.shared_experts else "")
        + (f", first {spec.dense_layers} layers dense" if spec.dense_layers else "")
        + (f", sliding window {spec.sliding_window}" if spec.sliding_window else "") + ")",
        *([seq2seq_note] if seq2seq_note else []),
        *how.notes(spec),
        f"volume: {tokens_note}" + (f" x {epochs:g} epoch{'s' if epochs != 1 else ''}" if how.training else ""),
        _precision_note(work, how),
        f"{device.name}: {work.precision} dense peak {peak / 1e12:.1f} TFLOPS, "
        f"{fmt_bytes(device.memory_bytes)}, {device.bandwidth_bytes_per_s / 1e9:.0f} GB/s "
        f"(datasheet, as of {device.as_of})",
        "FLOPs count matmuls only (2mnk), causal mask not discounted; MFU is model FLOPs (no recompute) over "
        "the dense peak, HFU counts the recompute",
    ]
    net = link(device.key)
    if how.training:
        stack = find_framework(framework) if framework else default_framework(
            True, how.trains_base, how.key in ("pretrain", "cpt") and (gpus is None or gpus > 1))
        pins = Pins(gpus=gpus, tp=tp, pp=pp, zero=zero, micro_batch=micro_batch, grad_ckpt=grad_ckpt)
        check_pins(spec, pins, stack, net)
        _check_layout_for_stack(pins, stack)
        result = _training(spec, how, device, net, stack, work, profile, pins, tokens, epochs, global_batch,
                           global_batch_tokens, runtime, startup_seconds, power.pue, provider, spot, price)
    else:
        stack = find_framework(framework) if framework else default_framework(False, False, False)
        result = _inference(spec, how, device, net, work, profile, tokens, gpus, runtime or "compiled",
                            startup_seconds, power.pue, provider, spot, price)
    notes += result.notes
    chosen_price = result.price
    if chosen_price is None:
        notes.append(f"no listed offer of {device.key}{' at ' + provider if provider else ''} for "
                     f"{result.placement.gpus} GPU(s): pass --price to get dollars")
    else:
        notes.append(chosen_price.describe(result.placement.gpus))
    spread = profile.time_spread()
    seconds = result.wall_seconds
    seconds_range = (seconds * spread.low, seconds * spread.high)
    energy = result.energy_kwh
    notes.append(f"{power.described}; board power {result.watts:.0f} W"
                 + (" as measured by calibration" if profile.power_watts(device.key) else
                    f" (TDP {device.tdp_watts:.0f} W)"))
    notes.append(f"ranges: wall time x{spread.low:g} to x{spread.high:g} ({spread.source})")
    serve = None
    if serve_tokens is not None and how.training:
        serve = estimate(spec, "inference", gpu=device.key, tokens=serve_tokens, micro_batch=serve_batch,
                         precision=precision if precision != "fp8" else "bf16",
                         prompt_len=prompt_len + how.virtual_tokens + how.prefix_tokens, gen_len=gen_len,
                         source_len=source_len, target_len=target_len,
                         provider=provider, spot=spot, price=price, pue=pue, grid=grid, profile=profile,
                         runtime=runtime)
        served = ("LoRA adapters merged into the weights, so served at the base model's cost"
                  if isinstance(how, Lora) else
                  f"{how.virtual_tokens + how.prefix_tokens} virtual tokens added to every prompt"
                  if how.virtual_tokens or how.prefix_tokens else "the trained weights served as they are")
        notes.append(f"serving: {fmt_count(serve_tokens)} generated tokens on the adapted model, "
                     f"{serve_batch} concurrent requests ({serve.gpus} x {device.key}; {served})")
    return Estimate(
        model=spec, method=how, gpu=device, workload=result.workload, framework=stack, params_total=params,
        params_active=counts.active,
        params_trainable=how.trainable_params(spec) if how.training else 0, flops=result.flops,
        tokens=tokens, epochs=epochs if how.training else 1.0, flops_total=result.flops_total,
        placement=result.placement, tokens_per_second=result.tokens_per_second, wall_seconds=seconds,
        mfu=result.mfu, hfu=result.hfu, price=chosen_price, energy_kwh=energy, co2_kg=power.co2_kg(energy),
        assumptions=tuple(notes), wall_seconds_range=seconds_range, scaling_efficiency=result.scaling_efficiency,
        step=result.step, global_batch=result.global_batch, serve=serve, inference=result.inference,
        latency_seconds=result.latency, time_to_first_token_seconds=result.ttft,
    )


def _kv_formula(spec: ModelSpec) -> str:
    if spec.mla is not None:
        text = "MLA's compressed latent: layers x (kv_lora_rank + qk_rope_head_dim) x tokens x bytes"
    elif spec.is_encoder_decoder:
        text = "decoder layers x 2 x heads x head_dim x (target tokens + source tokens of cross-attention) x bytes"
    else:
        text = "2 x layers x kv_heads x head_dim x tokens x bytes"
    if spec.sliding_window:
        text += f"; sliding-window layers keep {spec.sliding_window} tokens once the prompt is replaced"
    return text


def _check_layout_for_stack(pins: Pins, stack: Framework) -> None:
    if pins.tp not in (None, 1) and not stack.tensor_parallel:
        raise CostplanError(f"{stack.key} has no tensor parallelism; use --framework megatron for --tp.")
    if pins.pp not in (None, 1) and not stack.pipeline_parallel:
        raise CostplanError(f"{stack.key} has no pipeline parallelism; use --framework megatron for --pp.")
    if pins.zero is not None and pins.zero not in stack.zero_stages:
        raise CostplanError(f"{stack.key} offers ZeRO stages {', '.join(map(str, stack.zero_stages))}, "
                            f"not {pins.zero}.")


def _precision_note(work: Workload, how: Method) -> str:
    if work.precision == "fp32":
        return "fp32 weights, activations, gradients and optimizer states"
    text = f"{work.precision} weights and activations"
    if how.training and how.trains_base:
        text += ", fp32 master weights and optimizer states (mixed precision)"
    if work.precision == "fp8":
        text += "; fp8 matmuls (Transformer Engine), memory planned as bf16"
    return text


@dataclass(frozen=True, slots=True)
class _Result:
    workload: Workload
    flops: FlopsBreakdown
    flops_total: float
    placement: Placement
    tokens_per_second: float
    wall_seconds: float
    mfu: float
    hfu: float
    price: Price | None
    energy_kwh: float
    watts: float
    notes: list[str]
    scaling_efficiency: float = 1.0
    step: engine.StepTime | None = None
    global_batch: int | None = None
    inference: InferenceFlops | None = None
    latency: float | None = None
    ttft: float | None = None


def training_job(spec: ModelSpec, how: Method, device: GpuSpec, net: Link, stack: Framework, work: Workload,
                 profile: Profile, global_batch: int, precision_price: float = 0.0) -> Job:
    """The layout-independent part of a training job (``plan`` builds the same for its grids)."""
    hw = hardware(device, net, work.precision, profile, usd_per_gpu_hour=precision_price)
    correction = profile.correction(spec.name, how.key, device.key)
    return Job(model=spec, method=how, work=work, gpu=device, link=net, framework=stack, profile=profile, hw=hw,
               constants=profile.constants(device.key, stack.runtime),
               correction=correction.factor if correction else 1.0, global_batch=global_batch)


def _training(spec, how, device, net, stack, work, profile, pins, tokens, epochs, global_batch, global_batch_tokens,
              runtime, startup_seconds, pue, provider, spot, price_override) -> _Result:
    if global_batch_tokens is not None:
        if not global_batch_tokens > 0:
            raise ValueError("--global-batch-tokens must be positive")
        global_batch = max(1, round(global_batch_tokens / work.seq_len))
        batch_note = f"global batch {global_batch} sequences ({fmt_count(global_batch_tokens).strip()} tokens, given)"
    elif global_batch is not None:
        batch_note = f"global batch {global_batch} sequences (given)"
    else:
        global_batch, batch_note = default_global_batch(spec, how, work.seq_len)
    if runtime is not None:
        stack = replace(stack, runtime=runtime)
    job = training_job(spec, how, device, net, stack, work, profile, global_batch)
    total_tokens = tokens * epochs
    target = None
    if pins.gpus is None and how.key in ("pretrain", "cpt"):
        days, _ = practice("target_wall_days", how.key, count_params(spec).total)
        target = days * 86400
    placement = choose(job, pins, tokens=total_tokens, target_seconds=target)
    layout = placement.layout
    parts = job.parts(layout.grad_ckpt)
    offer = find_price(device.key, provider, spot, price_override, gpus=layout.gpus)
    hw = replace(job.hw, usd_per_gpu_hour=offer.usd_per_gpu_hour if offer else 0.0)
    step = job.step(layout)
    result = engine.throughput(step, parts.shape, gpus=layout.gpus, hw=hw, tokens=total_tokens,
                               startup_seconds=startup_seconds, pue=pue)
    run = replace(work, micro_batch=layout.micro_batch, grad_ckpt=layout.grad_ckpt)
    opt = find_optimizer(work.optimizer)
    correction = profile.correction(spec.name, how.key, device.key)
    notes = [
        f"stack: {stack.label}",
        batch_note,
        f"sequence {work.seq_len} tokens; layout: {_layout_text(layout)}",
        *(f"  {line}" for line in placement.why),
        f"optimizer: {opt.note}",
        f"attention {'SDPA/flash: no s² scores kept' if work.attention == 'flash' else 'eager: s² scores kept'}",
        f"{profile.describe(device.key)}: GEMMs at {job.hw.gemm_efficiency:.0%} and attention at "
        f"{job.hw.attention_efficiency:.0%} of peak, memory traffic at {job.constants.bandwidth_efficiency:.0%} of "
        f"bandwidth, {stack.runtime} dispatch"
        + (f"; measured correction x{correction.factor:.2f} ({correction.source})" if correction else ""),
        f"step: {_step_text(step)}; MFU {float(result.mfu):.1%}, HFU {float(result.hfu):.1%}",
        f"communication: {net.described}",
        f"peak memory at the {placement.memory.peak_phase.label}",
    ]
    if startup_seconds:
        notes.append(f"start-up {startup_seconds / 60:g} min added to the wall time")
    if not placement.fits:
        notes.append(f"does not fit: {placement.reason}")
    return _Result(run, parts.flops, parts.flops.per_token * total_tokens, placement,
                   float(result.tokens_per_second), float(result.wall_seconds), float(result.mfu), float(result.hfu),
                   offer, float(result.energy_kwh), float(hw.watts), notes, float(step.scaling_efficiency), step,
                   global_batch)


def _layout_text(layout: engine.Layout) -> str:
    parts = [f"{layout.gpus} GPU(s)"]
    if layout.tp > 1 or layout.pp > 1:
        parts.append(f"TP {layout.tp} x PP {layout.pp} x DP {layout.dp}")
    elif layout.dp > 1:
        parts.append(f"DP {layout.dp}")
    if layout.dp > 1:
        parts.append(f"ZeRO-{layout.zero}")
    parts.append(f"micro-batch {layout.micro_batch}")
    if layout.grad_accum > 1:
        parts.append(f"{layout.grad_accum} accumulation steps")
    parts.append("checkpointing " + ("on" if layout.grad_ckpt else "off"))
    return ", ".join(parts)


def _step_text(step: engine.StepTime) -> str:
    def ms(v: Any) -> str:
        return f"{float(v) * 1e3:.3g} ms"

    text = f"{ms(step.total)} per optimizer step ({ms(step.compute)} compute"
    for label, value in (("tensor-parallel", step.tensor_parallel), ("pipeline bubble", step.pipeline_bubble),
                         ("exposed data-parallel", step.data_parallel), ("optimizer", step.optimizer)):
        if float(value) > 0:
            text += f", {ms(value)} {label}"
    return text + f"), scaling efficiency {float(step.scaling_efficiency):.1%}"


def _inference(spec, how, device, net, work, profile, tokens, gpus, runtime, startup_seconds, pue, provider, spot,
               price_override) -> _Result:
    fl = inference_flops(spec, how, work)
    mem = inference_memory(spec, how, work)
    slack, context = profile.allocator_slack(), profile.cuda_context_bytes()
    counts = [gpus] if gpus is not None else [n for n in (1, 2, 4, 8) if n <= net.gpus_per_node] or [1]
    for n in counts:
        phases = engine.inference_phases(mem, tp=n)
        memory = engine.breakdown(phases, slack, context)
        if memory.device_bytes <= device.memory_bytes:
            break
    fits = memory.device_bytes <= device.memory_bytes
    reason = "" if fits else (f"needs {fmt_bytes(memory.device_bytes)} per GPU on {n} GPU(s) (GPU holds "
                              f"{fmt_bytes(device.memory_bytes)}); reduce --micro-batch or the context")
    placement = Placement(engine.Layout(gpus=n, tp=n, micro_batch=work.micro_batch), memory, fits, reason)
    offer = find_price(device.key, provider, spot, price_override, gpus=n)
    hw = hardware(device, net, work.precision, profile, usd_per_gpu_hour=offer.usd_per_gpu_hour if offer else 0.0)
    constants = profile.constants(device.key, runtime)
    b = work.micro_batch
    prefill_shape = step_shape(spec, how, work, fl.prefill, training=False, positions=work.prompt_len)
    prefill = micro_batch_seconds(prefill_shape, sequences=b, tp=n, peak=hw.peak, peak_16bit=hw.peak_16bit,
                                  bandwidth=hw.bandwidth, gemm_efficiency=hw.gemm_efficiency,
                                  attention_efficiency=hw.attention_efficiency, constants=constants)
    prefill += engine.tensor_parallel_seconds(b * work.prompt_len * spec.hidden_size * work.compute_bytes,
                                              layers=spec.num_layers, tp=n, pp=1, collectives_per_layer=2.0, hw=hw)
    shape = decode_shape(spec, how, work, fl.decode.per_token)
    decode = engine.decode_step_seconds(shape, batch=b, tp=n, hw=hw, constants=constants,
                                        dispatch_seconds=constants.dispatch_seconds)
    latency = prefill + (work.gen_len - 1) * decode
    tps = b * work.gen_len / latency
    seconds = tokens / tps + startup_seconds
    per_generated = (fl.prefill.per_token * work.prompt_len + fl.decode.per_token * (work.gen_len - 1)) / work.gen_len
    flops = FlopsBreakdown(tuple(
        t.scaled(work.prompt_len / work.gen_len) for t in fl.prefill.terms
    ) + tuple(t.scaled((work.gen_len - 1) / work.gen_len) for t in fl.decode.terms), 1)
    mfu = tps * per_generated / (n * hw.peak)
    read = shape.weight_bytes + engine.experts_hit(shape.experts, shape.experts_per_token, b) * shape.expert_bytes
    notes = [
        f"{b} concurrent request(s) of {work.prompt_len} prompt + {work.gen_len} generated tokens; "
        f"KV cache {fmt_bytes(mem.kv_cache)} ({_kv_formula(spec)})",
        f"decode step {decode * 1e3:.3g} ms: reads {fmt_bytes(read)} of weights"
        + (f" ({float(engine.experts_hit(shape.experts, shape.experts_per_token, b)):.3g} of {shape.experts} "
           "experts per layer for this batch)" if spec.is_moe else "")
        + f" and {fmt_bytes(b * shape.kv_bytes_per_sequence)} of KV cache at {constants.bandwidth_efficiency:.0%} "
        f"of bandwidth; {runtime} runtime ({constants.dispatch_seconds * 1e6:.3g} µs per operator dispatched)",
        f"prefill {prefill * 1e3:.3g} ms; tensor parallel over {n} GPU(s)"
        + (f" ({net.described}): two all-reduces per layer and step" if n > 1 else ""),
    ]
    if not fits:
        notes.append(f"does not fit: {reason}")
    energy = n * hw.watts * seconds / 3600 / 1000 * pue
    return _Result(work, flops, per_generated * tokens, placement, tps, seconds, mfu, mfu, offer, energy,
                   float(hw.watts), notes, inference=fl, latency=latency, ttft=prefill)

