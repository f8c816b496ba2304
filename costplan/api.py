"""One estimate: specs in, FLOPs and memory from the pure rules, a layout chosen as a practitioner
would, projected by the engine onto GPUs, hours and dollars, with every assumption written down."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from costplan import arguments, engine
from costplan import precision as modes
from costplan.energy import energy_model
from costplan.errors import CostplanError, unknown_name
from costplan.fit import Fit, assess
from costplan.fit import verdict as fit_verdict
from costplan.flops import FlopsBreakdown, InferenceFlops, inference_flops
from costplan.frameworks import FRAMEWORK_KEYS, Framework, default_framework
from costplan.frameworks import framework as find_framework
from costplan.hardware import GpuSpec, Ownership, Price
from costplan.hardware import gpu as find_gpu
from costplan.hardware import price as find_price
from costplan.layout import Job, Pins, Placement, check_pins, choose, default_global_batch, practice
from costplan.memory import WEIGHT_FORMATS, inference_memory
from costplan.methods import METHODS, Inference, Lora, Method, PrefixTuning, PromptTuning, QLora, parse_targets
from costplan.model import ModelSpec, count_params, resolve_model
from costplan.optimizers import optimizer as find_optimizer
from costplan.optimizers import split_in_backward
from costplan.profile import Profile, default_profile, saved_profile_for
from costplan.record import record
from costplan.scaling import Link, link
from costplan.speed import decode_shape, micro_batch_seconds, step_shape
from costplan.units import fmt_bytes, fmt_count, fmt_duration
from costplan.workload import LOSSES, OFFLOADS, Workload

PRECISIONS = modes.NAMES
ESTIMATE_AUTO = frozenset({"gpus", "tokens", "seq_len", "micro_batch", "global_batch", "global_batch_tokens", "zero",
                           "tp", "pp", "price", "pue", "serve_tokens", "lora_alpha", "electricity",
                           "hardware_price", "source_len", "target_len", "lora_dropout", "goodput",
                           "virtual_stages"})
"""Arguments whose None means "chosen by costplan" (or "not asked")."""

SCHEMA_VERSION = 2
"""Of the ``--json`` object; 2: enum keys in ``memory_breakdown``/``flops_breakdown``, ``mfu`` on
model FLOPs with ``hfu`` beside it, ``layout``."""


@record(kw_only=True)
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
    energy_kwh: float | None
    """None where the GPU's board power is unknown (no TDP listed, not calibrated)."""
    co2_kg: float | None
    assumptions: tuple[str, ...]
    wall_seconds_range: tuple[float, float] = (0.0, 0.0)
    """Wall time at the fast and slow ends of the model's spread on published runs."""
    scaling_efficiency: float = 1.0
    """Compute over the whole step (communication, pipeline bubble and optimizer step are the rest)."""
    step: engine.StepTime | None = None
    global_batch: int | None = None
    correction_applied: float | None = None
    """The measured correction (calibration step or the user's run log) the step time carries."""
    fit: Any = None
    """The verdict with its margin, what each switch saves and a suggestion (``costplan.fit.Fit``)."""
    kv_budget: dict[str, Any] | None = None
    """Inference: the KV cache a serving engine can allocate and the concurrent requests it holds."""
    maximum: dict[str, int] | None = None
    """With ``maximize``: the largest sequence length or micro-batch that fits the GPU."""
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
                virtual_tokens: int = 20, lora_alpha: float | None = None, use_dora: bool = False,
                use_rslora: bool = False, modules_to_save: tuple[str, ...] = (), weights: str | None = None,
                double_quant: bool = True) -> Method:
    if isinstance(name, Method):
        return name
    if not isinstance(name, str):
        raise CostplanError(f"method must be a method name such as 'lora', not {name!r}.")
    cls = METHODS.get(name.lower())
    if cls is None:
        raise unknown_name("method", name, METHODS)
    if weights and cls is not Inference:
        raise CostplanError("--weights (weight-only quantization) applies to inference; use qlora to train on a "
                            "4-bit base.")
    if issubclass(cls, QLora):
        return cls(rank=lora_rank, targets=parse_targets(lora_targets), dropout=lora_dropout, alpha=lora_alpha,
                   dora=use_dora, rslora=use_rslora, modules_to_save=tuple(modules_to_save), double_quant=double_quant)
    if issubclass(cls, Lora):
        return cls(rank=lora_rank, targets=parse_targets(lora_targets), dropout=lora_dropout, alpha=lora_alpha,
                   dora=use_dora, rslora=use_rslora, modules_to_save=tuple(modules_to_save))
    if issubclass(cls, (PromptTuning, PrefixTuning)):
        return cls(num_virtual_tokens=virtual_tokens)
    if cls is Inference:
        if weights and weights not in WEIGHT_FORMATS:
            raise CostplanError(f"--weights must be one of {', '.join(WEIGHT_FORMATS)}, not {weights!r}.")
        return Inference(weights=weights or "")
    return cls()


def hardware(device: GpuSpec, net: Link, precision: str, profile: Profile, *, usd_per_gpu_hour: float = 0.0,
             watts: float | None = None, kernels: str = "eager") -> engine.Hardware:
    """The engine's GPU inputs for one GPU type, with the profile's measured constants where it has them.
    ``precision``: a precision mode or the tensor-core peak it runs at (fp32, bf16, fp16, fp8)."""
    precision = modes.peak_dtype(precision)
    sixteen = "fp16" if precision in ("fp16", "fp8") and "bf16" not in device.peak_flops else (
        "fp32" if precision == "fp32" else "bf16")
    if sixteen not in device.peak_flops:
        sixteen = "fp16"
    peak = device.peak(precision)
    # Transformer Engine's fp8 GEMMs reach a smaller share of their (twice as high) peak than 16-bit
    # GEMMs do, and every input is quantized first: fitted on published fp8 runs.
    low = profile.value("fp8_gemm_factor").value if precision == "fp8" else 1.0
    measured_link = profile.collective_bytes_per_s(device.key)
    return engine.Hardware(
        memory_bytes=device.memory_bytes, peak=peak, peak_16bit=device.peak(sixteen) if precision != "fp32" else peak,
        bandwidth=device.bandwidth_bytes_per_s,
        gemm_efficiency=profile.factor("gemm_efficiency", device.key, device.arch).value, low_precision_factor=low,
        attention_efficiency=profile.factor("attention_efficiency", device.key, device.arch, kernels).value,
        intra_bytes_per_s=min(net.intra_bytes_per_s, measured_link) if measured_link else net.intra_bytes_per_s,
        node_bytes_per_s=net.node_bytes_per_s, gpus_per_node=net.gpus_per_node, usd_per_gpu_hour=usd_per_gpu_hour,
        watts=watts if watts is not None else profile.board_watts(device),
        host_link_bytes_per_s=device.host_link_bytes_per_s)


def estimate(
    model: str | ModelSpec | None = None,
    method: str | Method | None = None,
    *,
    adapter: str | None = None,
    dataset: Any = None,
    tokenizer: str | None = None,
    padding: str | None = None,
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
    optimizer_in_backward: bool | None = None,
    sync_each_batch: bool | None = None,
    loss: str | None = None,
    offload: tuple[str, ...] | str | None = None,
    grad_ckpt: bool | None = None,
    attention: str = "flash",
    zero: int | None = None,
    tp: int | None = None,
    pp: int | None = None,
    cp: int = 1,
    framework: str | None = None,
    runtime: str | None = None,
    provider: str | None = None,
    spot: bool = False,
    price: float | None = None,
    electricity: float | None = None,
    hardware_price: float | None = None,
    lora_rank: int = 8,
    lora_targets: str = "q,v",
    lora_dropout: float | None = None,
    lora_alpha: float | None = None,
    use_dora: bool = False,
    use_rslora: bool = False,
    modules_to_save: tuple[str, ...] = (),
    virtual_tokens: int = 20,
    double_quant: bool = True,
    gathered_load: bool = False,
    flat_unit_gradients: bool = False,
    kbit_upcast: bool | None = None,
    held_logits: str | None = None,
    expandable_segments: bool | None = None,
    virtual_stages: int | None = None,
    steady_state: bool = False,
    goodput: float | None = None,
    weights: str | None = None,
    prompt_len: int = 512,
    gen_len: int = 256,
    source_len: int | None = None,
    target_len: int | None = None,
    pue: float | None = None,
    grid: str | float | None = None,
    serve_tokens: float | None = None,
    serve_batch: int = 32,
    startup_seconds: float = 0.0,
    maximize: str | None = None,
    profile: Profile | None = None,
    notes: tuple[str, ...] = (),
) -> Estimate:
    """Estimate one way of adapting (or running) a model on a GPU type. See ``costplan estimate --help``.

    Layout values left at None (GPU count, micro-batch, global batch, checkpointing, ZeRO stage,
    tensor and pipeline parallelism) are chosen as a practitioner would (``costplan.layout``).
    ``gathered_load``: the checkpoint loads by gathering the whole sharded model onto every GPU (a
    peak of its own; Lightning Fabric until mid-2023). ``flat_unit_gradients``: FSDP1 units mixing
    frozen and trainable parameters get gradients for their whole flat parameters (LitGPT's LoRA before
    it moved to FSDP2). ``kbit_upcast``: a k-bit base prepared by peft's ``prepare_model_for_kbit_training``
    keeps its embeddings, LM head and norms in fp32 (None: as the stack does). ``held_logits`` (``fp32`` or
    ``compute``): the
    training loop keeps the model's outputs, its logits, until the next forward (``Workload.held_logits``).
    ``expandable_segments``: PyTorch's caching allocator runs with ``expandable_segments:True`` (None: as the
    stack sets it), which keeps its reserve close to the allocated peak.
    ``virtual_stages``: pipeline stages per GPU under interleaved 1F1B (None: about two layers each; 1: plain
    1F1B).
    ``steady_state``: the wall time of the training steps only, without a pretraining run's allowance for
    evaluation, checkpoint saves, data stalls and restarts (what steps x measured step time gives).
    ``goodput``: the share of the run's wall time spent in training steps, when known (default: 1 for
    fine-tuning, ``run_goodput`` fitted on published pretraining runs for pretraining and CPT).
    ``electricity`` ($/kWh) and ``hardware_price`` (amortised $/GPU-hour) price GPUs you own instead of
    renting them. ``dataset`` (a path, or a ``costplan.dataset.TokenCount``) gives the training tokens:
    counted with ``tokenizer`` (a tokenizer.json, folder or Hub id) or the model's own, filled into rows
    as ``padding`` says (``dataset.PADDINGS``; default: ``longest``, each micro-batch padded to its longest
    sequence as the stacks' collators do, ``grouped`` for the Trainer's ``group_by_length``, and ``packed``
    for pretraining and CPT): training then computes
    the padded positions, and memory is sized on the longest row. ``adapter`` is a peft
    ``adapter_config.json`` (or its folder): it sets the method and
    its settings, and the model when ``model`` is None (its ``base_model_name_or_path``). ``model``
    defaults to ``7b`` and ``method`` to ``lora``.
    """
    v = arguments.checked(arguments.ESTIMATE, dict(
        gpus=gpus, tokens=tokens, epochs=epochs, seq_len=seq_len, micro_batch=micro_batch, global_batch=global_batch,
        global_batch_tokens=global_batch_tokens, zero=zero, tp=tp, pp=pp, cp=cp, price=price, lora_rank=lora_rank,
        lora_dropout=lora_dropout, lora_alpha=lora_alpha, virtual_tokens=virtual_tokens, prompt_len=prompt_len,
        gen_len=gen_len, pue=pue, serve_tokens=serve_tokens, serve_batch=serve_batch, startup_seconds=startup_seconds,
        electricity=electricity, hardware_price=hardware_price, source_len=source_len, target_len=target_len,
        goodput=goodput, virtual_stages=virtual_stages), auto=ESTIMATE_AUTO)
    gpus, tokens, epochs, seq_len, micro_batch = v["gpus"], v["tokens"], v["epochs"], v["seq_len"], v["micro_batch"]
    global_batch, global_batch_tokens, zero, tp, pp, cp = (v["global_batch"], v["global_batch_tokens"], v["zero"],
                                                           v["tp"], v["pp"], v["cp"])
    price, lora_rank, lora_dropout, virtual_tokens = v["price"], v["lora_rank"], v["lora_dropout"], v["virtual_tokens"]
    lora_alpha, electricity, hardware_price = v["lora_alpha"], v["electricity"], v["hardware_price"]
    source_len, target_len = v["source_len"], v["target_len"]
    prompt_len, gen_len, pue, serve_tokens = v["prompt_len"], v["gen_len"], v["pue"], v["serve_tokens"]
    serve_batch, startup_seconds, goodput = v["serve_batch"], v["startup_seconds"], v["goodput"]
    virtual_stages = v["virtual_stages"]
    gpu = arguments.text("gpu", gpu)
    precision = arguments.text("precision", precision, PRECISIONS)
    attention = arguments.text("attention", attention, ("flash", "eager"))
    optimizer = arguments.text("optimizer", optimizer, optional=True)
    loss = arguments.text("loss", loss, LOSSES, optional=True)
    if offload is not None and not isinstance(offload, (str, tuple, list)):
        raise CostplanError(f"--offload takes {', '.join(OFFLOADS)}, not {offload!r}.")
    offload = tuple(offload.split(",") if isinstance(offload, str) else offload or ()) or None
    optimizer_in_backward = arguments.flag("optimizer_in_backward", optimizer_in_backward, optional=True)
    sync_each_batch = arguments.flag("sync_each_batch", sync_each_batch, optional=True)
    framework = arguments.text("framework", framework, FRAMEWORK_KEYS, optional=True)
    runtime = arguments.text("runtime", runtime, ("eager", "compiled", "native"), optional=True)
    provider = arguments.text("provider", provider, optional=True)
    lora_targets = arguments.text("lora_targets", lora_targets)
    weights = arguments.text("weights", weights, WEIGHT_FORMATS, optional=True)
    maximize = arguments.text("max", maximize, ("seq-len", "micro-batch"), optional=True)
    spot = arguments.flag("spot", spot)
    use_dora = arguments.flag("use_dora", use_dora)
    use_rslora = arguments.flag("use_rslora", use_rslora)
    double_quant = arguments.flag("double_quant", double_quant)
    gathered_load = arguments.flag("gathered_load", gathered_load)
    flat_unit_gradients = arguments.flag("flat_unit_gradients", flat_unit_gradients)
    kbit_upcast = arguments.flag("kbit_upcast", kbit_upcast, optional=True)
    held_logits = arguments.text("held_logits", held_logits, ("fp32", "compute"), optional=True)
    expandable_segments = arguments.flag("expandable_segments", expandable_segments, optional=True)
    steady_state = arguments.flag("steady_state", steady_state)
    if steady_state and goodput is not None:
        raise CostplanError("give --steady-state (no whole-run allowance) or --goodput, not both.")
    grad_ckpt = arguments.flag("grad_ckpt", grad_ckpt, optional=True)
    if grid is not None and (isinstance(grid, bool) or not isinstance(grid, (str, int, float))):
        raise CostplanError(f"--grid must be a region name or kg CO2 per kWh, not {grid!r}.")
    if profile is not None and not isinstance(profile, Profile):
        raise CostplanError(f"profile must be a costplan.profile.Profile (see load_profile), not {profile!r}.")
    adapter_notes: list[str] = []
    if adapter is not None:
        spec, how, adapter_notes = _from_adapter(adapter, model, method)
    else:
        spec = model if isinstance(model, ModelSpec) else resolve_model("7b" if model is None else model)
        if weights is None and spec.shipped_weights and isinstance(method, str) and method.lower() == "inference":
            weights = spec.shipped_weights  # served as the checkpoint ships (gpt-oss: MXFP4 experts)
        how = make_method("lora" if method is None else method, lora_rank=lora_rank, lora_targets=lora_targets,
                          lora_dropout=lora_dropout or 0.0, virtual_tokens=virtual_tokens, lora_alpha=lora_alpha,
                          use_dora=use_dora, use_rslora=use_rslora, modules_to_save=modules_to_save,
                          weights=weights, double_quant=double_quant)
    how.validate(spec)
    device = find_gpu(gpu)
    profile = (profile or saved_profile_for(device.key) or default_profile()).with_run_logs(device.key)
    if global_batch is not None and global_batch_tokens is not None:
        raise CostplanError("give --global-batch (sequences) or --global-batch-tokens, not both.")
    power = energy_model(pue, grid)
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
    owned = None
    if electricity is not None or hardware_price is not None:
        owned = Ownership(hardware_usd_per_gpu_hour=hardware_price or 0.0, usd_per_kwh=electricity or 0.0)
    if seq_len is None:
        seq_len = min(2048, spec.max_positions - how.virtual_tokens)
    rows = None
    if dataset is not None:
        if tokens is not None:
            raise CostplanError("give --tokens or --dataset, not both.")
        if not how.training:
            raise CostplanError("--dataset counts training tokens; for inference give --tokens (generated tokens).")
        from costplan.dataset import PADDINGS, Rows

        padding = arguments.text("padding", padding, PADDINGS, optional=True)
        rows = Rows.of(_dataset_count(dataset, seq_len, tokenizer, model), padding, how.key)
        seq_len = rows.row_len
    elif padding is not None:
        from costplan.dataset import NO_DATASET

        raise CostplanError(NO_DATASET)
    if how.training:
        stack = find_framework(framework) if framework else default_framework(
            True, how.trains_base, how.key in ("pretrain", "cpt") and (gpus is None or gpus > 1))
    else:
        stack = find_framework(framework) if framework else default_framework(False, False, False)
    given = lora_dropout is not None or adapter is not None
    spec, how, built_notes = stack_model(stack, spec, how, dropout_given=given, from_adapter=adapter is not None)
    work, stack_notes = stack_workload(stack, how, precision=precision, optimizer=optimizer,
                                       optimizer_in_backward=optimizer_in_backward, loss=loss, offload=offload,
                                       sync_each_batch=sync_each_batch,
                                       grad_ckpt=grad_ckpt, gpus=gpus, runtime=runtime, seq_len=seq_len,
                                       micro_batch=micro_batch or 1,
                                       attention=attention, prompt_len=prompt_len, gen_len=gen_len,
                                       source_len=prompt_len if spec.is_encoder_decoder else None,
                                       gathered_load=gathered_load, held_logits=held_logits,
                                       virtual_stages=virtual_stages, flat_unit_gradients=flat_unit_gradients,
                                       kbit_upcast=kbit_upcast, expandable_segments=expandable_segments)
    stack_notes += built_notes
    if how.training and work.modeling == "litgpt":
        stack_notes.append("activations as LitGPT's own layers keep them (fused qkv, k and v repeated to every "
                           "query head, one zero-padded qkv adapter)")
    elif how.training and work.modeling == "axolotl":
        from costplan.activations import axolotl_mlp_kernel

        if axolotl_mlp_kernel(spec, how, work):
            stack_notes.append("the MLP as Axolotl's fused LoRA_MLP kernel runs it (auto-enabled for LoRA without "
                               "dropout on gate, up and down): it keeps its input and the gate and up outputs")
    elif how.training and work.modeling == "unsloth":
        from costplan.activations import unsloth_kernels

        stack_notes.append("activations as Unsloth's fused LoRA kernels keep them" if unsloth_kernels(spec, how, work)
                           else "activations as peft's modules keep them: Unsloth's fused kernels need LoRA on all "
                           "seven matrices (--lora-targets all-linear) of a Llama-style model")
    if not how.training:
        unused = [f"--{name.replace('_', '-')}" for name, value in (
            ("offload", offload), ("optimizer", optimizer), ("optimizer_in_backward", optimizer_in_backward),
            ("sync_each_batch", sync_each_batch),
            ("loss", loss), ("grad_ckpt", grad_ckpt), ("global_batch", global_batch),
            ("global_batch_tokens", global_batch_tokens), ("zero", zero), ("virtual_stages", virtual_stages),
            ("goodput", goodput)) if value is not None]
        if unused:
            stack_notes.append(f"{', '.join(unused)} appl{'ies' if len(unused) == 1 else 'y'} to training: "
                               "not used for inference")
    if held_logits:
        stack_notes.append(f"the training loop holds the model's {held_logits} logits from one forward to the next")
    if gathered_load:
        stack_notes.append("the checkpoint loads by gathering the whole model onto every GPU (Lightning Fabric "
                           "before Lightning-AI/pytorch-lightning#18190)")
    if flat_unit_gradients:
        stack_notes.append("FSDP1 units mixing frozen and trainable parameters: gradients for their whole flat "
                           "parameters")
    if how.training and grad_ckpt is None and stack.grad_ckpt:
        grad_ckpt = True  # the stack's recipes checkpoint every layer
    context = (work.prompt_len + work.gen_len) if not how.training else seq_len + how.virtual_tokens
    spec.check_positions(context)
    peak = device.peak(work.peak_key)
    counts = count_params(spec)
    params = counts.total
    if rows is not None:
        tokens = float(rows.count.tokens)
        tokens_note = f"{fmt_count(tokens)} tokens counted in the dataset"
        notes = (*notes, rows.count.describe())
    elif tokens is None:
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
        *([spec.vision.describe()] if spec.vision else []),
        *notes,
        *adapter_notes,
        *how.notes(spec),
        f"volume: {tokens_note}" + (f" x {epochs:g} epoch{'s' if epochs != 1 else ''}" if how.training else ""),
        _precision_note(work, how),
        *stack_notes,
        f"{device.name}: {work.peak_key} dense peak {peak / 1e12:.1f} TFLOPS, "
        f"{fmt_bytes(device.memory_bytes)}, {device.bandwidth_bytes_per_s / 1e9:.0f} GB/s "
        f"(datasheet, as of {device.as_of})",
        "FLOPs count matmuls only (2mnk), causal mask not discounted; MFU is model FLOPs (no recompute) over "
        "the dense peak, HFU counts the recompute",
    ]
    if isinstance(model, str) and "/" in model:  # a Hub id: say where its config.json came from
        from costplan.hub import origin

        if origin(model):
            notes.insert(1, origin(model))
    net = link(device.key)
    if how.training:
        pins = Pins(gpus=gpus, tp=tp, pp=pp, zero=zero, micro_batch=micro_batch, grad_ckpt=grad_ckpt, cp=cp)
        check_pins(spec, pins, stack, net)
        _check_layout_for_stack(pins, stack)
        def train(computed: float) -> _Result:
            return _training(spec, how, device, net, stack, work, profile, pins, computed, epochs, global_batch,
                             global_batch_tokens, runtime, startup_seconds, power.pue, provider, spot, price, owned,
                             1.0 if steady_state else goodput)

        if rows is None or rows.padding == "packed":
            result = train(tokens)
        else:  # the steps compute the padded positions; the longest row sizes memory (seq_len)
            used = (micro_batch or 1, 1)
            result = train(rows.positions(*used))
            for _ in range(2):  # a layout left on auto is chosen again until the padding agrees with it
                chosen = (result.workload.micro_batch, result.placement.layout.grad_accum)
                if chosen == used:
                    break
                used = chosen
                result = train(rows.positions(*used))
        if rows is not None:
            notes.append(rows.describe(result.workload.micro_batch, result.placement.layout.grad_accum))
    else:
        result = _inference(spec, how, device, net, work, profile, tokens, gpus, runtime or "compiled",
                            startup_seconds, power.pue, provider, spot, price, owned)
    notes += result.notes
    chosen_price = result.price
    if chosen_price is None:
        notes.append(f"no listed offer of {device.key}{' at ' + provider if provider else ''} for "
                     f"{result.placement.gpus} GPU(s): pass --price to get dollars")
    else:
        notes.append(chosen_price.describe(result.placement.gpus))
    if spot and price is None:
        notes += _on_demand_cheaper(device.key, provider, result.placement.gpus, chosen_price)
    spread = profile.time_spread()
    seconds = result.wall_seconds
    seconds_range = (seconds * spread.low, seconds * spread.high)
    energy = result.energy_kwh if result.watts > 0 else None
    if energy is None:
        notes.append(f"energy: not estimated, {device.key} has no board power (TDP) in tables/gpus.csv "
                     "(`costplan calibrate` on that GPU measures it)")
    else:
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
                         runtime=runtime, electricity=electricity, hardware_price=hardware_price)
        served = ("LoRA adapters merged into the weights, so served at the base model's cost"
                  if isinstance(how, Lora) else
                  f"{how.virtual_tokens + how.prefix_tokens} virtual tokens added to every prompt"
                  if how.virtual_tokens or how.prefix_tokens else "the trained weights served as they are")
        notes.append(f"serving: {fmt_count(serve_tokens)} generated tokens on the adapted model, "
                     f"{serve_batch} concurrent requests ({serve.gpus} x {device.key}; {served})")
    estimate_ = Estimate(
        model=spec, method=how, gpu=device, workload=result.workload, framework=stack, params_total=params,
        params_active=counts.active,
        params_trainable=how.trainable_params(spec) if how.training else 0, flops=result.flops,
        tokens=tokens, epochs=epochs if how.training else 1.0, flops_total=result.flops_total,
        placement=result.placement, tokens_per_second=result.tokens_per_second, wall_seconds=seconds,
        mfu=result.mfu, hfu=result.hfu, price=chosen_price, energy_kwh=energy,
        co2_kg=None if energy is None else power.co2_kg(energy),
        assumptions=tuple(notes), wall_seconds_range=seconds_range, scaling_efficiency=result.scaling_efficiency,
        step=result.step, global_batch=result.global_batch, correction_applied=result.correction, fit=result.fit,
        kv_budget=result.kv,
        serve=serve, inference=result.inference,
        latency_seconds=result.latency, time_to_first_token_seconds=result.ttft,
    )
    if maximize is None:
        return estimate_
    from dataclasses import replace as _replace

    settings = dict(model=spec, method=how, gpu=device.key, gpus=estimate_.gpus, tokens=tokens, epochs=epochs,
                    seq_len=seq_len, micro_batch=micro_batch, global_batch=global_batch,
                    global_batch_tokens=global_batch_tokens, precision=precision, optimizer=optimizer,
                    grad_ckpt=grad_ckpt, attention=attention, zero=zero, tp=tp, pp=pp, cp=cp, framework=framework,
                    runtime=runtime, price=0.0, prompt_len=prompt_len, gen_len=gen_len, profile=profile)
    return _replace(estimate_, maximum=largest_fitting(maximize, settings, spec, how))


def largest_fitting(what: str, settings: dict[str, Any], spec: ModelSpec, how: Method) -> dict[str, int]:
    """The largest sequence length (``seq-len``) or micro-batch (``micro-batch``; for inference the
    concurrent requests) that fits the estimate's GPUs with the settings as given (what was left on
    auto, such as checkpointing or the micro-batch, is chosen again for each length): a binary search
    over the estimate itself."""
    if what not in ("seq-len", "micro-batch"):
        raise CostplanError("--max takes seq-len or micro-batch.")
    if what == "seq-len":
        key = "prompt_len" if not how.training else "seq_len"
        extra = (settings["gen_len"] if not how.training else how.virtual_tokens)
        high = spec.max_positions - extra
    else:
        key, high = "micro_batch", 65_536
    def fits(value: int) -> bool:
        try:
            return estimate(**{**settings, key: value}).placement.fits
        except (CostplanError, ValueError):
            return False
    if high < 1 or not fits(1):
        return {key: 0}
    low = 1
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return {key: low}


KV_UTILIZATION = 0.9
"""vLLM's default gpu_memory_utilization: the share of each GPU's memory it claims for weights,
activations and the KV cache (vllm EngineArgs)."""


def kv_budget(spec: ModelSpec, how: Method, work: Workload, memory_bytes: float, mem: Any, profile: Profile,
              gpus: int) -> dict[str, Any]:
    """The KV cache a serving engine allocates after the weights and the prefill's activations out of
    ``KV_UTILIZATION`` of the GPUs' memory (less the CUDA context), and the concurrent requests of
    ``prompt_len + gen_len`` tokens it holds."""
    from costplan.memory import kv_cache_bytes

    context = work.prompt_len + work.gen_len
    per_request = kv_cache_bytes(spec, context, 1, work.compute_bytes)
    activations = mem.workspace / max(work.micro_batch, 1)
    available = KV_UTILIZATION * memory_bytes - mem.weights - activations - gpus * profile.cuda_context_bytes()
    return {"gpu_memory_utilization": KV_UTILIZATION, "context_tokens": context,
            "kv_cache_bytes_per_request": per_request, "kv_cache_bytes_available": max(available, 0.0),
            "max_concurrent_requests": max(int(available // per_request), 0) if per_request else 0}


def run_goodput(method: Method, profile: Profile) -> float:
    """The share of a pretraining or continual-pretraining run spent in steady-state steps, fitted on
    published whole runs (1 for fine-tuning, whose published figures are steady-state speeds)."""
    return profile.value("run_goodput").value if method.key in ("pretrain", "cpt") else 1.0


def _dataset_count(dataset: Any, seq_len: int, tokenizer: str | None, model: Any) -> Any:
    """The dataset's token count at the estimate's sequence length (``--dataset``)."""
    from costplan.dataset import TokenCount, count_tokens

    if isinstance(dataset, TokenCount):
        return dataset.at(seq_len)
    return count_tokens(dataset, seq_len, tokenizer=tokenizer, model=model if isinstance(model, str) else None)


def _from_adapter(adapter: str, model: str | ModelSpec | None,
                  method: str | Method | None) -> tuple[ModelSpec, Method, list[str]]:
    """The model and method a peft adapter_config.json describes (``--adapter``)."""
    from costplan.adapter_config import read_adapter_config

    config = read_adapter_config(adapter)
    if isinstance(method, Method):
        raise CostplanError("give the method as a name with an adapter (it builds the method itself).")
    stood_in = None
    if model is None:
        base = config.base_model
        if base is None:
            raise CostplanError(f"{config.path} names no base_model_name_or_path: pass --model.")
        try:
            spec = resolve_model(base)
        except CostplanError as exc:
            from costplan.model import preset, preset_named_in_path

            # A path on the machine that trained it: the preset it names stands in, and says so.
            stood_in = preset_named_in_path(base) if ("/" in base or "\\" in base) else None
            if stood_in is None:
                raise CostplanError(f"the adapter's base model {base!r}: {str(exc).rstrip('.')}; or pass --model") \
                    from None
            spec = preset(stood_in)
    else:
        spec = model if isinstance(model, ModelSpec) else resolve_model(model)
    how, notes = config.method(spec, method)
    if stood_in is not None:
        notes.insert(0, f"the adapter's base model {base!r} is not on this machine; the {stood_in} preset it names "
                        "stands in (tables/models.csv): pass --model for the base's own config.json")
    return spec, how, notes


def _on_demand_cheaper(gpu_key: str, provider: str | None, gpus: int, spot_offer: Price | None) -> list[str]:
    """With --spot: a note when an on-demand offer rents the GPUs for less than every spot offer."""
    on_demand = find_price(gpu_key, provider, False, None, gpus=gpus)
    if on_demand is None:
        return []
    on_demand_usd = on_demand.usd_per_gpu_hour * on_demand.billed_gpus(gpus)
    if spot_offer is None:
        return [f"no spot offer of {gpu_key} for {gpus} GPU(s); on-demand: {on_demand.describe(gpus)}"]
    if on_demand_usd < spot_offer.usd_per_gpu_hour * spot_offer.billed_gpus(gpus):
        return [f"on-demand is cheaper than every spot offer here: {on_demand.describe(gpus)}; the cheapest spot "
                f"offer is priced above as asked (drop --spot for the lower price)"]
    return []


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
    if not how.training:
        held = modes.peak_key(work.precision)
        return f"{'bf16' if held == 'fp8' else held} weights and activations"
    return "precision " + modes.describe(work.precision, how.trains_base, fp32_main_grads=work.fp32_main_grads,
                                         fp32_adapters=work.fp32_adapters, base_mode=work.fp8_base)


def stack_model(stack: Framework, spec: ModelSpec, how: Method, *, dropout_given: bool = False,
                from_adapter: bool = False) -> tuple[ModelSpec, Method, list[str]]:
    """The model and method as ``stack`` builds them: its default LoRA dropout (LitGPT's 0.05) unless
    one is given, Unsloth's 4-bit routed experts (its pre-quantized gpt-oss checkpoints) unless the
    method comes from the user's adapter config, and LitGPT's own LM head (``litgpt_model``).
    ``estimate`` and ``plan`` both go through it."""
    if not dropout_given and isinstance(how, Lora) and stack.lora_dropout:
        how = replace(how, dropout=stack.lora_dropout)
    if isinstance(how, QLora) and spec.expert_tensors and stack.modeling == "unsloth" and not from_adapter:
        how = replace(how, quantize_experts=True)  # Unsloth ships gpt-oss with its experts in 4 bits
    if isinstance(how, Lora) and how.base_storage in ("nf4", "int8") and spec.is_moe and stack.key == "axolotl" \
            and not spec.expert_tensors:
        # Under transformers 5 Axolotl quantizes MoE experts (3-D tensors) with quantize_moe_experts, a
        # parametrization that dequantizes a layer's whole stack where its experts run.
        how = replace(how, expert_stack_dequant=True)
    if how.training and stack.modeling == "litgpt":
        return litgpt_model(spec, how)
    return spec, how, []


def litgpt_model(spec: ModelSpec, how: Method) -> tuple[ModelSpec, Method, list[str]]:
    """The model as LitGPT trains it. Its ``GPT`` builds ``lm_head`` apart from the embeddings and only
    its pretraining script ties them (``train.tie_embeddings``, off by default; the finetune scripts
    reject it), so a tied checkpoint's embedding is copied into a head of its own
    (``convert_hf_checkpoint``: ``lm_head.weight`` from ``transformer.wte.weight``). Its 4-bit loading,
    Lightning's ``BitsandbytesPrecision`` without ``ignore_modules``, quantizes every ``nn.Linear``,
    the head included (Lightning-AI/litgpt 00af8b0d9 and 2685705)."""
    notes = []
    if spec.tied_embeddings and spec.causal:
        spec = replace(spec, tied_embeddings=False)
        notes.append("the LM head is a weight of its own, as LitGPT builds it (a tied checkpoint's embedding is "
                     "copied into it)")
    if isinstance(how, QLora) and not how.quantize_head:
        how = replace(how, quantize_head=True)
    return spec, how, notes


def stack_workload(stack: Framework, how: Method, *, precision: str = "bf16", optimizer: str | None = None,
                   optimizer_in_backward: bool | None = None, loss: str | None = None,
                   offload: tuple[str, ...] | str | None = None, grad_ckpt: bool | None = None,
                   gpus: int | None = None, runtime: str | None = None, sync_each_batch: bool | None = None,
                   kbit_upcast: bool | None = None, expandable_segments: bool | None = None,
                   **shape: Any) -> tuple[Workload, list[str]]:
    """The workload as ``stack`` runs it: its precision mode for ``bf16``, its optimizer, loss,
    adapter dtype and gradient buffers, unless given; with one line per convention taken."""
    mode = modes.resolve(precision, stack.bf16)
    notes = []
    if precision.lower() == "bf16" and how.training:
        notes.append(f"--precision bf16 on {stack.key} is {mode}")
    if optimizer is None:
        if how.trains_base and how.key == "full" and gpus == 1 and stack.full_single_gpu_optimizer:
            optimizer = stack.full_single_gpu_optimizer
            notes.append(f"optimizer: {optimizer}, as {stack.key}'s single-GPU full fine-tuning recipes run it")
        else:
            optimizer = stack.optimizer
    name, in_backward = split_in_backward(optimizer)
    find_optimizer(name)
    if optimizer_in_backward is not None:
        in_backward = optimizer_in_backward
    if isinstance(offload, str):
        offload = tuple(o.strip().lower() for o in offload.split(",") if o.strip())
    offloads = tuple(offload or ())
    if stack.offload_checkpoints and (grad_ckpt or (grad_ckpt is None and stack.grad_ckpt)) \
            and "activations" not in offloads and offload is None:
        offloads += ("activations",)
        notes.append(f"{stack.key} keeps the checkpointed layer inputs in host memory")
    if how.training and shape.get("held_logits") is None and stack.held_logits:
        shape["held_logits"] = stack.held_logits
        notes.append(f"{stack.key}'s training loop holds the model's {stack.held_logits}-dtype logits from one "
                     "forward to the next")
    loss_kind = loss or stack.loss
    if how.training and loss is None and loss_kind != "full":
        notes.append(f"loss: {loss_kind} cross-entropy ({stack.key}'s)" +
                     ("" if stack.loss_fp32 else ", logits not upcast to fp32"))
    work = Workload(precision=mode, optimizer=name, optimizer_in_backward=in_backward, loss=loss_kind,
                    loss_fp32=stack.loss_fp32, output_upcast=stack.output_upcast, offload=offloads,
                    grad_ckpt=bool(grad_ckpt),
                    fp32_adapters=stack.fp32_adapters, fp32_main_grads=stack.fp32_main_grads, fp8_base=stack.bf16
                    if stack.bf16 != "fp8" else "bf16-master",
                    kbit_fp32_upcast=(stack.kbit_upcast if kbit_upcast is None else kbit_upcast)
                    and how.base_storage in ("nf4", "int8"),
                    autocast_forward=True if stack.autocast and mode != "fp32" else None,
                    compiled=(runtime or stack.runtime) == "compiled" and how.training, modeling=stack.modeling,
                    quantized_gather=stack.quantized_gather, fsdp_root_unit=stack.root_unit,
                    expandable_segments=stack.expandable_segments if expandable_segments is None
                    else expandable_segments,
                    unsharded_accumulation=how.training and (stack.accumulation == "no-sync" if sync_each_batch is None
                                                             else not sync_each_batch),
                    **shape)
    if work.unsharded_accumulation:
        why = f"{stack.key} accumulates without sync" if sync_each_batch is None else "--no-sync-each-batch"
        notes.append(f"gradient accumulation under FSDP keeps unsharded gradients until the last micro-batch ({why})")
    if work.compiled:
        notes.append("torch.compile: layers keep what its partitioner keeps (norm inputs, gate and up outputs; "
                     "casts and activations recomputed)")
        if work.loss == "full" and work.output_upcast:
            notes.append(f"{stack.key}'s decoder upcasts the full logits before the compiled loss, which keeps "
                         "them in fp32")
    if work.kbit_fp32_upcast:
        notes.append("QLoRA prepared by peft (prepare_model_for_kbit_training): the parameters left unquantized "
                     "(embeddings, LM head, norms) upcast to fp32")
    if in_backward:
        notes.append("optimizer stepped inside backward, each gradient freed once used (no gradient accumulation)")
    if work.expandable_segments:
        why = f"{stack.key} sets it" if expandable_segments is None else "--expandable-segments"
        notes.append(f"caching allocator with expandable_segments ({why}): reserve close to the allocated peak")
    return work, notes


@record
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
    correction: float | None = None
    fit: Any = None
    kv: dict[str, Any] | None = None


def training_job(spec: ModelSpec, how: Method, device: GpuSpec, net: Link, stack: Framework, work: Workload,
                 profile: Profile, global_batch: int, precision_price: float = 0.0) -> Job:
    """The layout-independent part of a training job (``plan`` builds the same for its grids)."""
    kernels = "fused" if stack.kernels == "fused" or stack.runtime == "compiled" else "eager"
    hw = hardware(device, net, work.precision, profile, usd_per_gpu_hour=precision_price, kernels=kernels)
    return Job(model=spec, method=how, work=work, gpu=device, link=net, framework=stack, profile=profile, hw=hw,
               constants=profile.constants(device.key, stack.runtime, kernels),
               correction=profile.correction_factor(spec.name, how.key, device.key), global_batch=global_batch)


def _training(spec, how, device, net, stack, work, profile, pins, tokens, epochs, global_batch, global_batch_tokens,
              runtime, startup_seconds, pue, provider, spot, price_override, owned=None,
              goodput=None) -> _Result:
    if global_batch_tokens is not None:
        if not global_batch_tokens > 0:
            raise ValueError("--global-batch-tokens must be positive")
        global_batch = max(1, round(global_batch_tokens / work.seq_len))
        batch_note = f"global batch {global_batch} sequences ({fmt_count(global_batch_tokens).strip()} tokens, given)"
    elif global_batch is not None:
        batch_note = f"global batch {global_batch} sequences (given)"
    else:
        global_batch, batch_note = default_global_batch(spec, how, work.seq_len)
        if pins.micro_batch is not None and pins.micro_batch > global_batch:
            global_batch = pins.micro_batch
            batch_note = (f"global batch {global_batch} sequences: the --micro-batch given, larger than the default "
                          f"{batch_note.removeprefix('global batch ')}")
    if pins.micro_batch is not None and pins.micro_batch > global_batch:
        raise CostplanError(f"--micro-batch {pins.micro_batch} is larger than the global batch of {global_batch} "
                            "sequences per optimizer step; give a smaller micro-batch or a larger global batch.")
    if runtime is not None:
        stack = replace(stack, runtime=runtime)
    job = training_job(spec, how, device, net, stack, work, profile, global_batch)
    total_tokens = tokens * epochs
    given = goodput is not None
    goodput = run_goodput(how, profile) if goodput is None else goodput
    target = days = None
    if pins.gpus is None and how.key in ("pretrain", "cpt"):
        days, _ = practice("target_wall_days", how.key, count_params(spec).total)
        target = days * 86400 * goodput  # steady-state steps that leave the run allowance inside the days
    placement = choose(job, pins, tokens=total_tokens, target_seconds=target, target_days=days)
    layout = placement.layout
    parts = job.parts(layout.grad_ckpt)
    offer = find_price(device.key, provider, spot, price_override, gpus=layout.gpus, owned=owned,
                       watts=job.hw.watts, pue=pue)
    hw = replace(job.hw, usd_per_gpu_hour=offer.usd_per_gpu_hour if offer else 0.0)
    step = job.step(layout)
    result = engine.throughput(step, parts.shape, gpus=layout.gpus, hw=hw, tokens=total_tokens,
                               startup_seconds=startup_seconds, pue=pue, goodput=goodput)
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
        (f"wall time: steady-state steps over a whole-run efficiency of {goodput:.0%} (given)" if given and goodput < 1
         else f"wall time: steady-state steps over a whole-run efficiency of {goodput:.0%} (published pretraining "
         f"runs took 1/{goodput:.2f} of the steady-state time: evaluation, checkpoint saves, data stalls, restarts, "
         "older stacks)" if goodput < 1 else
         "wall time: steady-state steps (no whole-run allowance)" if given else
         "wall time: steady-state steps (fine-tuning jobs are short; no whole-run allowance)"),
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
                   global_batch, correction=correction.factor if correction else None, fit=assess(job, layout))


def _layout_text(layout: engine.Layout) -> str:
    parts = [f"{layout.gpus} GPU(s)"]
    if layout.tp > 1 or layout.pp > 1 or layout.cp > 1:
        parts.append(f"TP {layout.tp} x PP {layout.pp}" + (f" x CP {layout.cp}" if layout.cp > 1 else "")
                     + f" x DP {layout.dp}")
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
        return fmt_duration(float(v))

    text = f"{ms(step.total)} per optimizer step ({ms(step.compute)} compute"
    for label, value in (("tensor-parallel", step.tensor_parallel), ("pipeline bubble", step.pipeline_bubble),
                         ("exposed data-parallel", step.data_parallel), ("optimizer", step.optimizer)):
        if float(value) > 0:
            text += f", {ms(value)} {label}"
    return text + f"), scaling efficiency {float(step.scaling_efficiency):.1%}"


def _inference(spec, how, device, net, work, profile, tokens, gpus, runtime, startup_seconds, pue, provider, spot,
               price_override, owned=None) -> _Result:
    fl = inference_flops(spec, how, work)
    mem = inference_memory(spec, how, work)
    slack, context = profile.allocator_slack(work.expandable_segments), profile.cuda_context_bytes()
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
    watts = hardware(device, net, work.precision, profile).watts
    offer = find_price(device.key, provider, spot, price_override, gpus=n, owned=owned, watts=watts, pue=pue)
    hw = hardware(device, net, work.precision, profile, usd_per_gpu_hour=offer.usd_per_gpu_hour if offer else 0.0)
    constants = profile.constants(device.key, runtime)
    b = work.micro_batch
    fused = runtime != "eager"
    prefill_shape = step_shape(spec, how, work, fl.prefill, training=False, positions=work.prompt_len,
                               fused_ops=fused)
    prefill = micro_batch_seconds(prefill_shape, sequences=b, tp=n, peak=hw.peak, peak_16bit=hw.peak_16bit,
                                  bandwidth=hw.bandwidth, gemm_efficiency=hw.gemm_efficiency,
                                  attention_efficiency=hw.attention_efficiency, constants=constants)
    prefill += engine.tensor_parallel_seconds(b * work.prompt_len * spec.hidden_size * work.compute_bytes,
                                              layers=spec.num_layers, tp=n, pp=1, collectives_per_layer=2.0, hw=hw)
    shape = decode_shape(spec, how, work, fl.decode.per_token, fused=fused)
    fmt = getattr(how, "weights", "") or "16bit"
    quantized = fmt not in ("16bit", "bf16", "fp16")
    format_efficiency = profile.value("dequant_bandwidth", fmt).value if quantized else 1.0
    dequant_ops = profile.value("dequant_ops", fmt).value if quantized and fmt != "fp8" else 0.0
    decode = engine.decode_step_seconds(shape, batch=b, tp=n, hw=hw, constants=constants,
                                        dispatch_seconds=constants.dispatch_seconds,
                                        format_efficiency=format_efficiency, dequant_ops=dequant_ops,
                                        vector_peak=device.peak_flops.get("fp32", 0.0),
                                        collective_latency=profile.value("collective_latency").value)
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
        f"decode step {fmt_duration(decode)}: reads {fmt_bytes(read)} of weights"
        + (f" ({float(engine.experts_hit(shape.experts, shape.experts_per_token, b)):.3g} of {shape.experts} "
           "experts per layer for this batch)" if spec.is_moe else "")
        + f" and {fmt_bytes(b * shape.kv_bytes_per_sequence)} of KV cache at {constants.bandwidth_efficiency:.0%} "
        f"of bandwidth; {runtime} runtime ({constants.dispatch_seconds * 1e6:.3g} µs per operator dispatched)",
        f"prefill {fmt_duration(prefill)}; tensor parallel over {n} GPU(s)"
        + (f" ({net.described}): two all-reduces per layer and step" if n > 1 else ""),
    ]
    if not fits:
        notes.append(f"does not fit: {reason}")
    energy = n * hw.watts * seconds / 3600 / 1000 * pue
    state = fit_verdict(device.memory_bytes, memory.device_bytes)
    headroom = device.memory_bytes - memory.device_bytes
    hint = None
    if state == "no":
        hint = (f"needs {fmt_bytes(-headroom)} more per GPU: tensor parallelism over more GPUs (--gpus), "
                "int4 weights (--weights int4), fewer concurrent requests or a shorter context")
    elif state == "tight":
        hint = f"only {fmt_bytes(headroom)} to spare: fewer concurrent requests or int8/int4 weights add margin"
    budget = kv_budget(spec, how, work, device.memory_bytes * n, mem, profile, n)
    notes.append(f"KV-cache budget (as vLLM sizes it, {KV_UTILIZATION:.0%} of the memory): "
                 f"{fmt_bytes(budget['kv_cache_bytes_available'])} over {n} GPU(s) holds "
                 f"{budget['max_concurrent_requests']:,} requests of {budget['context_tokens']:,} tokens")
    return _Result(work, flops, per_generated * tokens, placement, tps, seconds, mfu, mfu, offer, energy,
                   float(hw.watts), notes, inference=fl, latency=latency, ttft=prefill,
                   fit=Fit(state, headroom, hint, {}), kv=budget)

