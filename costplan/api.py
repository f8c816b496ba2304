"""One estimate: specs in, FLOPs and memory from the pure rules, projected onto GPUs, hours and
dollars, with every assumption written down."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from costplan import scaling
from costplan.energy import energy_model
from costplan.errors import CostplanError, unknown_name
from costplan.flops import FlopsBreakdown, InferenceFlops, inference_flops, training_flops
from costplan.hardware import GpuSpec, Price
from costplan.hardware import gpu as find_gpu
from costplan.hardware import price as find_price
from costplan.memory import MemoryBreakdown, inference_memory, tensor_parallel, training_memory
from costplan.methods import METHODS, Lora, Method, PrefixTuning, PromptTuning, parse_targets
from costplan.model import ModelSpec, count_params, resolve_model
from costplan.optimizers import optimizer as find_optimizer
from costplan.parallel import Placement, place_inference, place_training
from costplan.profile import Profile, default_profile, saved_profile_for
from costplan.units import fmt_bytes, fmt_count
from costplan.workload import Workload


@dataclass(frozen=True, kw_only=True, slots=True)
class Estimate:
    """The answer: what runs where, for how long, at what cost, and why."""

    model: ModelSpec
    method: Method
    gpu: GpuSpec
    workload: Workload
    params_total: int
    params_trainable: int
    flops: FlopsBreakdown
    """Training: per data token. Inference: per generated token, prefill included."""
    tokens: float
    """Training: data tokens per epoch. Inference: generated tokens priced."""
    epochs: float
    flops_total: float
    placement: Placement
    mfu: float
    tokens_per_second: float
    wall_seconds: float
    price: Price | None
    energy_kwh: float
    co2_kg: float
    assumptions: tuple[str, ...]
    wall_seconds_range: tuple[float, float] = (0.0, 0.0)
    """Wall time at the high and low ends of the efficiency range (fast, slow)."""
    scaling_efficiency: float = 1.0
    """Compute time over compute plus exposed communication."""
    serve: Estimate | None = None
    """The cost of serving the adapted model (``serve_tokens``), when asked."""
    inference: InferenceFlops | None = None
    latency_seconds: float | None = None
    """Inference: one batch of requests, prompt to last token."""
    time_to_first_token_seconds: float | None = None

    @property
    def memory(self) -> MemoryBreakdown:
        return self.placement.memory

    @property
    def gpus(self) -> int:
        return self.placement.gpus

    @property
    def wall_hours(self) -> float:
        return self.wall_seconds / 3600

    @property
    def gpu_hours(self) -> float:
        return self.wall_hours * self.gpus

    @property
    def cost_usd(self) -> float | None:
        return None if self.price is None else self.gpu_hours * self.price.usd_per_gpu_hour

    @property
    def cost_usd_range(self) -> tuple[float, float] | None:
        """(low, high) dollars from the efficiency range."""
        if self.price is None:
            return None
        rate = self.gpus * self.price.usd_per_gpu_hour / 3600
        return self.wall_seconds_range[0] * rate, self.wall_seconds_range[1] * rate

    @property
    def total_cost_usd(self) -> float | None:
        """Training plus serving, when serving was asked for."""
        if self.cost_usd is None:
            return None
        return self.cost_usd + (self.serve.cost_usd or 0.0 if self.serve else 0.0)

    @property
    def cost_usd_per_million_tokens(self) -> float | None:
        if self.price is None or self.method.training:
            return None
        return self.gpus * self.price.usd_per_gpu_hour / 3600 / self.tokens_per_second * 1e6

    def to_dict(self) -> dict[str, Any]:
        """One JSON-ready object in base units (bytes, FLOPs, seconds, dollars)."""
        mem = self.memory
        result: dict[str, Any] = {
            "model": self.model.name,
            "method": self.method.key,
            "gpu": self.gpu.key,
            "precision": self.workload.precision,
            "params_total": self.params_total,
            "params_trainable": self.params_trainable,
            "tokens": self.tokens,
            "epochs": self.epochs,
            "flops_per_token": self.flops.per_token,
            "flops_breakdown": {t.name: {"forward": t.forward, "backward_input": t.backward_input,
                                         "backward_weight": t.backward_weight,
                                         "recompute": t.recompute} for t in self.flops.terms},
            "flops_total": self.flops_total,
            "memory_peak_bytes": mem.peak_bytes,
            "memory_reserved_bytes": mem.reserved_bytes,
            "memory_device_bytes": mem.device_bytes,
            "memory_breakdown": dict(mem.terms),
            "memory_peak_phase": mem.peak_phase,
            "memory_phases": dict(mem.phases),
            "gpu_memory_bytes": self.gpu.memory_bytes,
            "fits": self.placement.fits,
            "fit_problem": self.placement.reason or None,
            "gpus": self.gpus,
            "zero_stage": self.placement.zero,
            "grad_accumulation": self.placement.grad_accum,
            "mfu": self.mfu,
            "tokens_per_second": self.tokens_per_second,
            "wall_seconds": self.wall_seconds,
            "wall_hours": self.wall_hours,
            "gpu_hours": self.gpu_hours,
            "usd_per_gpu_hour": None if self.price is None else self.price.usd_per_gpu_hour,
            "cost_usd": self.cost_usd,
            "energy_kwh": self.energy_kwh,
            "co2_kg": self.co2_kg,
            "scaling_efficiency": self.scaling_efficiency,
            "wall_hours_range": [t / 3600 for t in self.wall_seconds_range],
            "cost_usd_range": None if self.cost_usd_range is None else list(self.cost_usd_range),
            "assumptions": list(self.assumptions),
        }
        if self.serve is not None:
            result["serve"] = self.serve.to_dict()
            result["total_cost_usd"] = self.total_cost_usd
        if not self.method.training:
            result["cost_usd_per_million_tokens"] = self.cost_usd_per_million_tokens
            result["latency_seconds"] = self.latency_seconds
            result["time_to_first_token_seconds"] = self.time_to_first_token_seconds
        return result


def make_method(name: str | Method, *, lora_rank: int, lora_targets: str, lora_dropout: float,
            virtual_tokens: int) -> Method:
    if isinstance(name, Method):
        return name
    cls = METHODS.get(name.lower())
    if cls is None:
        raise unknown_name("method", name, METHODS)
    if issubclass(cls, Lora):
        return cls(rank=lora_rank, targets=parse_targets(lora_targets), dropout=lora_dropout)
    if issubclass(cls, (PromptTuning, PrefixTuning)):
        return cls(num_virtual_tokens=virtual_tokens)
    return cls()


def estimate(
    model: str | ModelSpec = "7b",
    method: str | Method = "lora",
    *,
    gpu: str = "h100",
    gpus: int | None = None,
    tokens: float | None = None,
    epochs: float = 1.0,
    seq_len: int | None = None,
    micro_batch: int = 1,
    global_batch: int | None = None,
    precision: str = "bf16",
    optimizer: str | None = None,
    grad_ckpt: bool = False,
    attention: str = "flash",
    zero: int | None = None,
    tp: int = 1,
    provider: str | None = None,
    spot: bool = False,
    price: float | None = None,
    lora_rank: int = 8,
    lora_targets: str = "q,v",
    lora_dropout: float = 0.0,
    virtual_tokens: int = 20,
    prompt_len: int = 512,
    gen_len: int = 256,
    pue: float | None = None,
    grid: str | float | None = None,
    serve_tokens: float | None = None,
    serve_batch: int = 32,
    profile: Profile | None = None,
) -> Estimate:
    """Estimate one way of adapting (or running) a model on a GPU type. See ``costplan estimate --help``."""
    spec = model if isinstance(model, ModelSpec) else resolve_model(model)
    how = make_method(method, lora_rank=lora_rank, lora_targets=lora_targets, lora_dropout=lora_dropout,
                      virtual_tokens=virtual_tokens)
    how.validate(spec)
    device = find_gpu(gpu)
    profile = profile or saved_profile_for(device.key) or default_profile()
    if gpus is not None and gpus <= 0:
        raise ValueError("--gpus must be a positive integer")
    if zero is not None and zero not in (0, 1, 2, 3):
        raise ValueError("--zero must be 0, 1, 2 or 3")
    if tp < 1:
        raise ValueError("--tp must be a positive integer")
    if epochs <= 0:
        raise ValueError("--epochs must be positive")
    if tokens is not None and tokens <= 0:
        raise ValueError("--tokens must be positive")
    if serve_tokens is not None and serve_tokens <= 0:
        raise ValueError("--serve-tokens must be positive")
    power = energy_model(pue, grid)
    if seq_len is None:
        seq_len = min(2048, spec.max_positions)
    opt_name = optimizer or "adamw"
    find_optimizer(opt_name)
    work = Workload(seq_len=seq_len, micro_batch=micro_batch, global_batch=global_batch,
                    precision=precision, optimizer=opt_name, grad_ckpt=grad_ckpt,
                    attention=attention, prompt_len=prompt_len, gen_len=gen_len)  # type: ignore[arg-type]
    context = (work.prompt_len + work.gen_len) if not how.training else seq_len + how.virtual_tokens
    if context > spec.max_positions:
        raise CostplanError(
            f"{context} positions exceed {spec.name}'s context of {spec.max_positions} tokens."
        )
    peak = device.peak(work.precision)
    chosen_price = find_price(device.key, provider, spot, price)
    if tokens is None:
        tokens, tokens_note = how.default_tokens(spec)
    else:
        tokens_note = f"{fmt_count(tokens)} tokens" + ("" if how.training else " generated")
    params = count_params(spec).total
    mfu = profile.mfu(how.key, work.precision)
    notes = [
        f"model {spec.name}: {fmt_count(params)} parameters ({spec.family}, {spec.num_layers} layers, "
        f"hidden {spec.hidden_size}, {spec.num_heads} heads / {spec.num_kv_heads} kv heads"
        + (f", {spec.num_experts} experts top-{spec.experts_per_token}" if spec.is_moe else "") + ")",
        *how.notes(spec),
        f"volume: {tokens_note}" + (f" x {epochs:g} epoch{'s' if epochs != 1 else ''}" if how.training else ""),
        _precision_note(work, how),
        f"{device.name}: {work.precision} dense peak {peak / 1e12:.1f} TFLOPS, "
        f"{fmt_bytes(device.memory_bytes)}, {device.bandwidth_bytes_per_s / 1e9:.0f} GB/s "
        f"(datasheet, as of {device.as_of})",
        f"{profile.describe(device.key)}: MFU {mfu.value:.2f} (range {mfu.low:.2f}-{mfu.high:.2f}) for "
        f"{how.key}/{work.precision}",
        "FLOPs count matmuls only (2mnk), causal mask not discounted",
        f"memory overhead: allocator slack {profile.allocator_slack():.0%} and CUDA context "
        f"{fmt_bytes(profile.cuda_context_bytes())}"
        + ("" if profile.calibrated else " (defaults, not calibrated)"),
    ]
    if how.training:
        result = _training(spec, how, device, work, profile, tokens, epochs, gpus, zero, peak, mfu.value, tp)
    else:
        result = _inference(spec, how, device, work, profile, tokens, gpus, peak, mfu.value)
    flops, total, placement, tps, seconds, extra, more_notes = result
    # Time scales inversely with efficiency: the range of MFU gives the range of hours.
    seconds_range = (seconds * mfu.value / mfu.high, seconds * mfu.value / mfu.low)
    notes += more_notes
    if chosen_price is None:
        notes.append(f"no listed price for {device.key}{' at ' + provider if provider else ''}: "
                     "pass --price to get dollars")
    else:
        notes.append(chosen_price.describe())
    watts = device.tdp_watts
    if profile.measured_power_watts and profile.device_key == device.key:
        watts = profile.measured_power_watts
        notes.append(f"board power {watts:.0f} W as measured by calibration (TDP {device.tdp_watts:.0f} W)")
    energy = power.kwh(placement.gpus, watts, seconds)
    notes.append(f"{power.described}; board TDP {device.tdp_watts:.0f} W")
    notes.append(f"ranges: wall time and cost at MFU {mfu.high:.2f} (low) to {mfu.low:.2f} (high)")
    serve = None
    if serve_tokens is not None and how.training:
        serve = estimate(spec, "inference", gpu=device.key, tokens=serve_tokens, micro_batch=serve_batch,
                         precision=precision if precision != "fp8" else "bf16", prompt_len=prompt_len,
                         gen_len=gen_len, provider=provider, spot=spot, price=price, pue=pue, grid=grid,
                         profile=profile)
        notes.append(f"serving: {fmt_count(serve_tokens)} generated tokens on the adapted model, "
                     f"{serve_batch} concurrent requests ({serve.gpus} x {device.key}; adapters merged "
                     "into the weights, so served at the base model's cost)")
    return Estimate(
        model=spec, method=how, gpu=device, workload=work, params_total=params,
        params_trainable=how.trainable_params(spec) if how.training else 0, flops=flops,
        tokens=tokens, epochs=epochs if how.training else 1.0, flops_total=total,
        placement=placement, mfu=mfu.value, tokens_per_second=tps, wall_seconds=seconds,
        price=chosen_price, energy_kwh=energy, co2_kg=power.co2_kg(energy), assumptions=tuple(notes),
        wall_seconds_range=seconds_range, serve=serve, **extra,
    )


def _precision_note(work: Workload, how: Method) -> str:
    if work.precision == "fp32":
        return "fp32 weights, activations, gradients and optimizer states"
    text = f"{work.precision} weights and activations"
    if how.training and how.trains_base:
        text += ", fp32 master weights and optimizer states (mixed precision)"
    if work.precision == "fp8":
        text += "; fp8 matmuls (Transformer Engine), memory planned as bf16"
    return text


def _training(spec, how, device, work, profile, tokens, epochs, gpus, zero, peak, mfu, tp):
    flops = training_flops(spec, how, work)
    link = scaling.link(device.key)
    if tp > link.gpus_per_node:
        raise CostplanError(f"--tp {tp} exceeds the {link.gpus_per_node} GPUs of a {device.key} node; tensor "
                            "parallelism is planned inside a node.")
    if spec.num_heads % tp or spec.num_kv_heads % tp and tp % spec.num_kv_heads:
        raise CostplanError(f"--tp {tp} does not divide {spec.name}'s {spec.num_heads} attention heads.")
    mem = tensor_parallel(training_memory(spec, how, work), tp)
    placement = place_training(mem, device.memory_bytes, profile, micro_batch=work.micro_batch,
                               global_batch=work.global_batch, gpus=gpus, zero=zero, tp=tp)
    total = flops.per_token * tokens * epochs
    n = placement.gpus
    timing = _step_timing(spec, device, work, flops, mem, placement, peak * mfu, profile)
    tps = n * peak * mfu / flops.per_token * timing.efficiency
    seconds = total / (n * peak * mfu) / timing.efficiency
    opt = find_optimizer(work.optimizer)
    notes = [
        f"sequence {work.seq_len} tokens, micro-batch {work.micro_batch} per GPU"
        + (f", global batch {work.global_batch} ({placement.grad_accum} accumulation steps)"
           if work.global_batch else ""),
        f"optimizer: {opt.note}",
        f"activation checkpointing {'on (non-reentrant, every layer)' if work.grad_ckpt else 'off'}; "
        f"attention {'SDPA/flash: no s² scores kept' if work.attention == 'flash' else 'eager: s² scores kept'}",
        (f"tensor parallel {tp} within a node (Megatron-style with sequence parallelism: weights, states, "
         f"activations and logits split {tp} ways; {timing.tp_seconds * 1e3:.3g} ms of collectives per step, "
         "not overlapped); " if tp > 1 else "")
        + f"data parallel over {placement.dp} replica(s) with ZeRO-{placement.zero}"
        + (f": {fmt_bytes(timing.comm_bytes)} per GPU per step over {scaling.link(device.key).described}; "
           f"{timing.timing.exposed_seconds * 1e3:.3g} ms of {timing.timing.comm_seconds * 1e3:.3g} ms not hidden "
           f"behind backward, scaling efficiency {timing.efficiency:.1%}" if n > 1 else ""),
        f"peak memory at the {placement.memory.peak_phase}",
    ]
    if not placement.fits:
        notes.append(f"does not fit: {placement.reason}")
    return flops, total, placement, tps, seconds, {"scaling_efficiency": timing.efficiency}, notes


@dataclass(frozen=True, slots=True)
class _DataParallelTiming:
    timing: scaling.StepTiming
    comm_bytes: float
    tp_seconds: float = 0.0

    @property
    def efficiency(self) -> float:
        return self.timing.efficiency


def _step_timing(spec, device, work, flops, mem, placement, flops_per_second, profile) -> _DataParallelTiming:
    """One optimizer step: compute over every micro-batch (split over the tensor-parallel group),
    tensor-parallel collectives inside each layer, gradient sync across replicas after the last."""
    n, zero, tp = placement.dp, placement.zero, placement.tp
    per_micro_batch = work.seq_len * work.micro_batch / flops_per_second / tp
    compute = flops.per_token * per_micro_batch * placement.grad_accum
    overlap = flops.backward * per_micro_batch  # the last micro-batch's backward
    if zero >= 3:
        overlap += flops.forward * per_micro_batch  # gathers run ahead of forward too
    comm_bytes = scaling.data_parallel_bytes(mem.gradients, mem.weights, n, zero)  # trained parameters' grads
    link = scaling.link(device.key)
    bandwidth = link.bandwidth(n * tp)
    # Forward and backward each run two all-gather/reduce-scatter pairs of the layer's activations.
    message = work.micro_batch * work.seq_len * spec.hidden_size * work.compute_bytes
    tp_seconds = 2 * scaling.tensor_parallel_seconds(spec.num_layers, message, tp, link.intra_bytes_per_s)
    compute += tp_seconds * placement.grad_accum
    measured = profile.measured_collective_bandwidth
    if measured and profile.device_key == device.key and n <= link.gpus_per_node:
        bandwidth = min(bandwidth, measured)  # calibrated all-reduce inside a node
    timing = scaling.step_timing(compute_seconds=compute, overlap_seconds=overlap, comm_bytes=comm_bytes,
                                 bandwidth=bandwidth)
    return _DataParallelTiming(timing, comm_bytes, tp_seconds * placement.grad_accum)


def _inference(spec, how, device, work, profile, tokens, gpus, peak, mfu):
    fl = inference_flops(spec, how, work)
    mem = inference_memory(spec, how, work)
    placement = place_inference(mem, device.memory_bytes, profile, gpus=gpus)
    n, b = placement.gpus, work.micro_batch
    bandwidth = profile.bandwidth().value * device.bandwidth_bytes_per_s * n
    link = scaling.link(device.key)
    p = work.compute_bytes
    prefill_seconds = fl.prefill.per_token * work.prompt_len * b / (n * peak * mfu)
    prefill_seconds += scaling.tensor_parallel_seconds(spec.num_layers, b * work.prompt_len * spec.hidden_size * p,
                                                       n, link.bandwidth(n))
    tp_step = scaling.tensor_parallel_seconds(spec.num_layers, b * spec.hidden_size * p, n, link.bandwidth(n))
    # Decode step i reads the KV cache of prompt_len + i tokens: prompt_len + gen_len / 2 on average.
    mean_kv = mem.kv_cache * (work.prompt_len + work.gen_len / 2) / (work.prompt_len + work.gen_len)
    step_bytes = mem.weights + mean_kv
    step_seconds = max(step_bytes / bandwidth, fl.decode.per_token * b / (n * peak * mfu)) + tp_step
    latency = prefill_seconds + (work.gen_len - 1) * step_seconds
    tps = b * work.gen_len / latency
    seconds = tokens / tps
    per_generated = (fl.prefill.per_token * work.prompt_len + fl.decode.per_token * (work.gen_len - 1)) / work.gen_len
    flops = FlopsBreakdown(tuple(
        t.scaled(work.prompt_len / work.gen_len) for t in fl.prefill.terms
    ) + tuple(t.scaled((work.gen_len - 1) / work.gen_len) for t in fl.decode.terms), 1)
    assert abs(flops.per_token - per_generated) <= 1e-6 * per_generated
    bound = "memory-bandwidth" if step_bytes / bandwidth >= fl.decode.per_token * b / (n * peak * mfu) else "compute"
    notes = [
        f"{b} concurrent request(s) of {work.prompt_len} prompt + {work.gen_len} generated tokens; "
        f"KV cache {fmt_bytes(mem.kv_cache)} (2 x layers x kv_heads x head_dim x tokens x bytes)",
        f"decode is {bound}-bound: each step reads weights and KV cache at "
        f"{profile.bandwidth().value:.0%} of peak bandwidth",
        f"tensor parallel over {n} GPU(s)" + (f" ({link.described}): two all-reduces per layer, "
                                               f"{tp_step * 1e3:.3g} ms per decode step" if n > 1 else ""),
    ]
    if not placement.fits:
        notes.append(f"does not fit: {placement.reason}")
    extra = {"inference": fl, "latency_seconds": latency, "time_to_first_token_seconds": prefill_seconds}
    return flops, per_generated * tokens, placement, tps, seconds, extra, notes
