"""``costplan calibrate``: short micro-benchmarks on the local device that replace the assumed
efficiencies with measured ones.

Measured, with warm-ups, device-side timing (CUDA events on a GPU) and medians:

- matrix-multiply throughput per dtype over a range of sizes, including the shapes the planned
  model uses (hidden x hidden, hidden x ffn at the tokens of one micro-batch): a curve over size;
- memory bandwidth: a large device copy, bytes read plus written;
- attention: SDPA forward + backward at the planned sequence length;
- a real short training step of a scaled-down model of the planned architecture family for each
  method (full, LoRA, prompt tuning; QLoRA when bitsandbytes is present): analytic FLOPs over
  measured time gives each method's efficiency; on a GPU, ``max_memory_allocated`` and
  ``max_memory_reserved`` against the analytic peak give the allocator slack and context overhead;
- on a GPU, average board power during the training steps (pynvml), for energy per token;
- under ``torchrun`` (see ``collectives``): all-reduce and all-gather bandwidth over message sizes.

On a CPU-only machine the same suite runs on the CPU, labelled as such: useful for tiny models and
for testing the flow; GPU projections keep their default efficiencies.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from costplan.errors import CostplanError
from costplan.files import write_atomically
from costplan.model import ModelSpec, with_overrides
from costplan.profile import PROFILE_VERSION, cache_dir
from costplan.record import record


def _slug(name: str) -> str:
    return "".join(c.lower() if c.isalnum() else "-" for c in name).strip("-")


def default_profile_path(device_name: str) -> Path:
    return cache_dir() / "profiles" / f"{_slug(device_name)}.json"


def write_json_atomically(data: dict[str, Any], path: Path) -> None:
    write_atomically(path, json.dumps(data, indent=2))


@record
class Spread:
    """Seconds of repeated runs of one measurement: the median is used, the range is kept."""

    min: float
    median: float
    max: float

    @property
    def ratio(self) -> float:
        """Slowest over fastest run: 1 for a quiet machine."""
        return self.max / self.min if self.min > 0 else math.inf

    def as_dict(self) -> dict[str, float]:
        return {"min": self.min, "median": self.median, "max": self.max}


@record
class Timer:
    """Median seconds of ``fn`` after warm-ups; CUDA events on a GPU, perf_counter on the CPU."""

    device: str
    warmup: int = 2
    repeat: int = 5

    def __call__(self, fn: Callable[[], Any]) -> float:
        return self.spread(fn).median

    def spread(self, fn: Callable[[], Any]) -> Spread:
        import torch

        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.repeat):
            if self.device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1000)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        times = [max(t, 1e-9) for t in times]  # a clock tick shorter than the call
        return Spread(min(times), statistics.median(times), max(times))


NOISY_SPREAD = 1.5
"""A measurement whose slowest run takes over 1.5x its fastest is noisy (other work on the machine):
the profile is saved with its spread and a warning."""
MAX_SEQ = {"cpu": 4096, "cuda": 65_536}
"""Longest calibration sequence per device: attention and the training steps grow with it (the
CPU's attention backward keeps s² scores: 4096 tokens already take seconds per step)."""
GPU_OPERAND_BYTES = 2 * 2**30
"""Largest matmul (operands and result, fp32) measured on a GPU; larger model shapes are skipped."""


def describe_device() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info: dict[str, Any] = {"kind": "cuda", "name": props.name, "memory_bytes": props.total_memory,
                                "sm_count": props.multi_processor_count,
                                "capability": f"{props.major}.{props.minor}"}
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            info["driver"] = pynvml.nvmlSystemGetDriverVersion()
            info["power_limit_watts"] = pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000
            info["max_sm_clock_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)
        except Exception as exc:  # pynvml missing or no permission: keep what torch told
            info["nvml"] = f"unavailable ({type(exc).__name__})"
        return info
    return {"kind": "cpu", "name": f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)",
            "memory_bytes": None, "cores": os.cpu_count(), "threads": torch.get_num_threads()}


def allocator_mode() -> str:
    """How PyTorch's caching allocator runs in this process: ``expandable`` where ``PYTORCH_CUDA_ALLOC_CONF``
    (or ``PYTORCH_ALLOC_CONF``, its newer name) turns on ``expandable_segments``, else ``default``: the
    reserve measured above the allocated peak is the slack of that mode."""
    conf = ",".join(os.environ.get(name, "") for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"))
    return "expandable" if "expandable_segments:true" in conf.replace(" ", "").lower() else "default"


def match_gpu_row(device: dict[str, Any]) -> str | None:
    """The GPU table key whose name or alias appears in the device name (None for a CPU or unknown)."""
    if device["kind"] != "cuda":
        return None
    from costplan.tables import read_table

    name = device["name"].lower().replace(" ", "-")
    best = None
    for row in read_table("gpus"):
        for alias in [row["key"], *filter(None, row["aliases"].split(";"))]:
            if alias and alias in name and (best is None or len(alias) > len(best[1])):
                best = (row["key"], alias)
    return best[0] if best else None


def gemm_curve(device: str, dtypes: list[str], sizes: list[tuple[int, int, int]], timer: Timer,
               progress: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    import torch

    points = []
    for dtype_name in dtypes:
        dtype = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16,
                 "fp16": torch.float16}[dtype_name]
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = dtype_name == "tf32"
        for m, n, k in sizes:
            a = torch.randn(m, k, device=device, dtype=dtype)
            b = torch.randn(k, n, device=device, dtype=dtype)
            spread = timer.spread(lambda a=a, b=b: a @ b)
            points.append({"dtype": dtype_name, "m": m, "n": n, "k": k, "seconds": spread.median,
                           "flops_per_second": 2 * m * n * k / spread.median, "spread": spread.as_dict()})
            if progress:
                progress()
    if device == "cuda" and torch.cuda.get_device_capability() >= (8, 9):
        points += _fp8_gemm(sizes, timer)
    return points


def _fp8_gemm(sizes: list[tuple[int, int, int]], timer: Timer) -> list[dict[str, Any]]:
    """FP8 (e4m3) matmuls through ``torch._scaled_mm`` on GPUs that have FP8 tensor cores."""
    import torch

    points = []
    one = torch.ones((), device="cuda")
    for m, n, k in sizes:
        try:
            a = torch.randn(m, k, device="cuda").to(torch.float8_e4m3fn)
            b = torch.randn(n, k, device="cuda").to(torch.float8_e4m3fn).t()
            seconds = timer(lambda a=a, b=b: torch._scaled_mm(a, b, scale_a=one, scale_b=one,
                                                              out_dtype=torch.bfloat16))
        except (RuntimeError, TypeError) as exc:  # shapes or builds without FP8 support
            return points + [{"dtype": "fp8", "unsupported": f"{type(exc).__name__}: {exc}"[:200]}]
        points.append({"dtype": "fp8", "m": m, "n": n, "k": k, "seconds": seconds,
                       "flops_per_second": 2 * m * n * k / seconds})
    return points


def copy_bandwidth(device: str, timer: Timer, megabytes: int) -> float:
    import torch

    src = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    seconds = timer(lambda: dst.copy_(src))
    return 2 * src.numel() / seconds  # read + write


def attention_throughput(device: str, dtype_name: str, model: ModelSpec, seq_len: int, timer: Timer) -> dict[str, Any]:
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    head_dim = min(model.head_dim, 256)  # the fused kernels' widest head
    # q, k, v, the output and their gradients in memory at once, within the GPU operand budget
    heads = max(1, min(model.num_heads, 4 * GPU_OPERAND_BYTES // (8 * seq_len * head_dim * 4)))
    shape = (1, heads, seq_len, head_dim)
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3))

    def step() -> None:
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        out.sum().backward()

    spread = timer.spread(step)
    flops = 2 * 2 * heads * seq_len * seq_len * head_dim * (1 + 2.5)  # fwd + fused bwd
    return {"seq_len": seq_len, "heads": heads, "head_dim": head_dim, "seconds": spread.median,
            "flops_per_second": flops / spread.median, "spread": spread.as_dict()}


def scaled_down(model: ModelSpec, device: str) -> ModelSpec:
    """The same family and layer structure, small enough to step quickly on this device."""
    if device == "cuda":
        hidden, layers, vocab = min(model.hidden_size, 2048), min(model.num_layers, 4), min(model.vocab_size, 262_144)
    else:
        hidden, layers, vocab = min(model.hidden_size, 256), 2, min(model.vocab_size, 4096)
    heads = max(1, min(model.num_heads, hidden // model.head_dim if model.head_dim <= hidden else 1))
    kv = max(1, min(model.num_kv_heads, heads))
    while heads % kv:
        kv -= 1
    ratio = min(model.ffn_size / model.hidden_size, 16.0)
    ffn = max(16, int(hidden * ratio) // 16 * 16)
    # Keep the kinds of layer: a dense first layer before MoE ones, an encoder and a decoder block.
    return with_overrides(model, name=f"{model.name}-calibration", hidden_size=hidden, num_layers=layers,
                          num_heads=heads, num_kv_heads=kv, ffn_size=ffn, vocab_size=vocab,
                          head_dim=model.mla.qk_rope_head_dim if model.mla else hidden // heads,
                          num_experts=model.num_experts, params_published=None,
                          dense_layers=min(model.dense_layers, layers - 1),
                          dense_ffn_size=max(16, int(hidden * model.dense_ffn_size / model.hidden_size) // 16 * 16)
                          if model.dense_layers else 0,
                          encoder_layers=layers // 2 if model.is_encoder_decoder else 0)


def method_steps(model: ModelSpec, device: str, precision: str, seq_len: int, timer: Timer,
                 methods: list[str], progress: Callable[[], None] | None = None) -> dict[str, dict[str, Any]]:
    """A short real training step per method: achieved FLOPs per second over the analytic FLOPs."""
    import torch

    from costplan.api import make_method

    results: dict[str, dict[str, Any]] = {}
    dtype = {"fp32": torch.float32, "fp16": torch.float16}.get(precision, torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers and peft warn about training-time options
        for key in methods:
            try:
                make_method(key).validate(model)
            except CostplanError:
                continue  # not planned for this architecture (prompt tuning of T5, QLoRA of MoE experts ...)
            results[key] = _method_step(model, key, device, precision, seq_len, timer, dtype)
            if progress:
                progress()
    return results


def _method_step(model: ModelSpec, key: str, device: str, precision: str, seq_len: int, timer: Timer,
                 dtype: Any) -> dict[str, Any]:
    """One method's step: median seconds over the timer's runs, their spread, and on a GPU its memory."""
    import torch

    from costplan.api import make_method
    from costplan.flops import training_flops
    from costplan.tracing import apply_method, build_model
    from costplan.verify import analytic_breakdown
    from costplan.workload import Workload

    method = make_method(key, lora_rank=8, lora_targets="q,v", lora_dropout=0.0, virtual_tokens=20)
    # The module runs in one dtype throughout with torch's AdamW: pure 16-bit (bf16-true) or fp32.
    work = Workload(seq_len=seq_len, precision="fp32" if precision == "fp32" else "bf16-true",
                    optimizer="adamw", source_len=seq_len if model.is_encoder_decoder else None)
    module = build_model(model, device=device, dtype=dtype)
    if method.base_storage != "compute":  # QLoRA / 8-bit base: quantized for real by bitsandbytes
        from costplan.tracing import quantize_with_bitsandbytes

        quantize_with_bitsandbytes(module, model, method)
    module = apply_method(module, method)
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params)
    ids = torch.randint(0, model.vocab_size, (1, seq_len), device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    power = _PowerSampler() if device == "cuda" else None
    spread = timer.spread(_training_step(module, optimizer, ids))
    seconds = spread.median
    flops = training_flops(model, method, work).per_token * seq_len
    entry: dict[str, Any] = {"seconds": seconds, "flops": flops, "achieved_flops_per_second": flops / seconds,
                             "spread": spread.as_dict()}
    if device == "cuda":
        analytic = analytic_breakdown(model, method, work).peak_bytes
        entry.update(max_allocated=torch.cuda.max_memory_allocated(), max_reserved=torch.cuda.max_memory_reserved(),
                     analytic_peak=analytic)
        entry["power_watts"] = power.average() if power else None
        if entry["power_watts"]:
            entry["joules_per_token"] = entry["power_watts"] * seconds / seq_len
        entry["context_bytes"] = _context_bytes()
    return entry


def _training_step(module: Any, optimizer: Any, ids: Any) -> Callable[[], None]:
    def step() -> None:
        loss = module(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _context_bytes() -> float | None:
    """Device memory in use beyond PyTorch's reservation: the CUDA context and library workspaces."""
    import torch

    try:
        import pynvml

        pynvml.nvmlInit()
        used = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used
    except Exception:
        return None
    return float(used - torch.cuda.memory_reserved())


class _PowerSampler:
    """Board power from NVML at the start and end of the timed steps (a coarse average)."""

    def __init__(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.samples = [pynvml.nvmlDeviceGetPowerUsage(self._handle) / 1000]
        except Exception:
            self._nvml = None
            self.samples = []

    def average(self) -> float | None:
        if self._nvml is None:
            return None
        self.samples.append(self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000)
        return statistics.mean(self.samples)


def calibrate(model: ModelSpec, *, quick: bool = False, precision: str | None = None, seq_len: int | None = None,
              progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Run the suite on the local device and return the profile (a JSON-ready dict).

    Each measurement is the median of several runs after warm-ups, with its spread (min, median,
    max) kept in the profile. A noisy machine (a spread over ``NOISY_SPREAD``) still gets its
    profile, with a line in ``warnings`` saying how noisy.
    """
    missing = [name for name in ("torch", "transformers", "peft") if importlib.util.find_spec(name) is None]
    if missing:
        raise CostplanError(f"costplan calibrate needs torch, transformers and peft ({', '.join(missing)} missing): "
                            "pip install 'costplan[verify]'.")
    import torch
    import transformers

    info = describe_device()
    device = "cuda" if info["kind"] == "cuda" else "cpu"
    precision = precision or ("bf16" if device == "cuda" else "fp32")
    if seq_len is not None and seq_len > MAX_SEQ[device]:
        raise CostplanError(f"--seq-len {seq_len} is above {MAX_SEQ[device]}, the longest calibration sequence on "
                            f"a {device.upper()} (attention and the training steps grow with it).")
    if device == "cuda":
        timer = Timer(device, warmup=1 if quick else 2, repeat=3 if quick else 5)
    else:  # a shared CPU is noisy: more warm-ups and repeats, and the median
        timer = Timer(device, warmup=2 if quick else 3, repeat=5 if quick else 9)
    small = scaled_down(model, device)
    seq = seq_len or (512 if device == "cuda" and quick else 2048 if device == "cuda" else 128)
    if seq > small.max_positions:
        small = with_overrides(small, max_positions=seq)  # the calibration copy measures speed, not the context
    tokens = seq
    if device == "cuda":
        square = [512, 1024, 2048, 4096] if quick else [256, 512, 1024, 2048, 4096, 8192]
        dtypes = ["bf16", "fp16", "tf32", "fp32"] if not quick else ["bf16", "fp32"]
    else:
        square = [64, 128, 256] if quick else [64, 128, 256, 512]
        dtypes = ["fp32"] if quick else ["fp32", "bf16"]
    sizes = [(s, s, s) for s in square]
    shaped = model if device == "cuda" else small  # the planned model's own matmul shapes, on a GPU
    for m, n, k in [(tokens, shaped.hidden_size, shaped.hidden_size), (tokens, shaped.ffn_size, shaped.hidden_size)]:
        if 4 * (m * k + k * n + m * n) <= GPU_OPERAND_BYTES:
            sizes.append((m, n, k))
    methods, skipped = ["full", "lora"], {}
    if model.causal:
        methods.append("prompt")
    else:
        skipped["prompt"] = "an encoder: peft's prompt tuning wraps generative or classification heads"
    if device == "cuda" and importlib.util.find_spec("bitsandbytes") is not None:
        methods.append("qlora")
    total = len(dtypes) * len(sizes) + 2 + len(methods)
    done = [0]
    stage = ["start"]

    def tick(name: str) -> Callable[[], None]:
        def advance() -> None:
            done[0] += 1
            if progress:
                progress(name, done[0], total)
        stage[0] = name
        return advance

    try:
        gemm = gemm_curve(device, dtypes, sizes, timer, tick("matmul"))
        bandwidth = copy_bandwidth(device, timer, 512 if device == "cuda" and not quick else 64)
        tick("bandwidth")()
        attention = attention_throughput(device, precision, small if device == "cpu" else model, seq, timer)
        tick("attention")()
        steps = method_steps(small, device, precision, seq, timer, methods, tick("training steps"))
    except (CostplanError, KeyboardInterrupt):
        raise
    except Exception as exc:  # out of memory, a kernel or library refusing the shapes
        detail = " ".join(str(exc).split())[:300]
        raise CostplanError(f"calibration failed at the {stage[0]} stage: {type(exc).__name__}: {detail}") from exc
    profile = {
        "version": PROFILE_VERSION,
        "created": date.today().isoformat(),
        "device": info,
        "gpu_key": match_gpu_row(info),
        "software": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "allocator": allocator_mode(),
        "model_family": model.family,
        "calibration_model": small.name,
        "precision": precision,
        "seq_len": seq,
        "quick": quick,
        "repeats": {"warmup": timer.warmup, "repeat": timer.repeat, "statistic": "median"},
        "gemm": gemm,
        "copy_bandwidth_bytes_per_second": bandwidth,
        "attention": attention,
        "methods": steps,
    }
    if skipped:
        profile["skipped_methods"] = skipped
    noisy = noise_warnings(profile)
    if noisy:
        profile["warnings"] = noisy
    return profile


def noise_warnings(profile: dict[str, Any]) -> list[str]:
    """One line per kind of measurement whose runs spread over ``NOISY_SPREAD``."""
    lines = []
    groups = {"matmul": profile.get("gemm") or [], "training step": list((profile.get("methods") or {}).values())}
    for kind, entries in groups.items():
        ratios = [e["spread"]["max"] / e["spread"]["min"] for e in entries if e.get("spread")]
        if ratios and max(ratios) > NOISY_SPREAD:
            lines.append(f"noisy {kind} timings: the slowest run took up to {max(ratios):.3g}x the fastest (median "
                         f"{statistics.median(ratios):.3g}x over {len(ratios)} measurements); the medians are used, "
                         "and the spread is in the profile. Calibrate on a quiet machine for firmer numbers.")
    return lines


def collectives(quick: bool = False) -> list[dict[str, Any]]:
    """All-reduce and all-gather bandwidth over message sizes, inside a ``torchrun`` launch
    (NCCL on GPUs, gloo on CPUs). Bus bandwidth as NCCL reports it: all-reduce moves
    2 (n-1)/n of the message per GPU, all-gather (n-1)/n."""
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ:
        raise CostplanError("--collectives runs under torchrun: torchrun --nproc_per_node=N -m costplan calibrate "
                            "--collectives")
    cuda = torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        device = f"cuda:{rank % torch.cuda.device_count()}" if cuda else "cpu"
        if cuda:
            torch.cuda.set_device(device)
        timer = Timer("cuda" if cuda else "cpu", warmup=1, repeat=3 if quick else 5)
        sizes = [2**k for k in (range(12, 25, 4) if quick else range(10, 29, 2))]
        points = []
        for size in sizes:
            tensor = torch.ones(size // 4, dtype=torch.float32, device=device)
            gathered = torch.empty(world * tensor.numel(), dtype=torch.float32, device=device)
            reduce_s = timer(lambda t=tensor: dist.all_reduce(t))
            gather_s = timer(lambda t=tensor, g=gathered: dist.all_gather_into_tensor(g, t))
            share = (world - 1) / world
            points.append({"bytes": size, "all_reduce_seconds": reduce_s, "all_gather_seconds": gather_s,
                           "all_reduce_bus_bytes_per_second": 2 * share * size / reduce_s,
                           "all_gather_bus_bytes_per_second": share * size * world / gather_s})
        return [dict(p, world_size=world, backend=dist.get_backend()) for p in points] if rank == 0 else []
    finally:
        dist.destroy_process_group()
