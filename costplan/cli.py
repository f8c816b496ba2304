"""The ``costplan`` command line: a thin click layer over the library.

Only this module reads arguments and prints. Mistakes become one line on stderr and exit code 2.
Layout options left out are "auto": chosen as a practitioner would (see ``costplan.layout``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from costplan.errors import CostplanError
from costplan.units import parse_count

if TYPE_CHECKING:
    from rich.console import Console


class _OneLineErrors(click.Group):
    """Every user error, click's own included, as one ``Error:`` line and exit code 2."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            click.echo(f"Error: {error_message(exc)}", err=True)
            sys.exit(2)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def error_message(exc: click.ClickException) -> str:
    """The message of the CLI's ``Error:`` line, on one line (the web API answers the same text)."""
    return " ".join(exc.format_message().split())


class _Count(click.ParamType):
    """A count with an optional suffix (100M, 2.5B, 1e9), finite, within bounds."""

    name = "count"

    def __init__(self, low: float = 1.0, high: float = 1e16, integer: bool = False) -> None:
        self.low, self.high, self.integer = low, high, integer

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = parse_count(str(value))
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        if not math.isfinite(number) or number <= 0:
            self.fail(f"{value!r} must be positive", param, ctx)
        if not self.low <= number <= self.high:
            self.fail(f"{value!r} is outside {self.low:g} to {self.high:g}", param, ctx)
        return float(round(number)) if self.integer else number


class _Number(click.ParamType):
    """A finite real number in [low, high] (``low_open``: strictly above low)."""

    name = "number"

    def __init__(self, low: float, high: float, low_open: bool = False) -> None:
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        below = number <= self.low if self.low_open else number < self.low
        if below or number > self.high:
            bound = "above" if self.low_open else "from"
            self.fail(f"{value!r} must be {bound} {self.low:g} up to {self.high:g}", param, ctx)
        return number + 0.0  # -0.0 becomes 0.0


def _ints(high: int) -> click.IntRange:
    return click.IntRange(1, high)


from costplan.arguments import MAX_BATCH, MAX_GPUS, MAX_SEQ  # noqa: E402  (one set of bounds with the API)


def _console(stderr: bool = False) -> Console:
    """rich's console for costplan's tables. No ``:emoji:`` codes appear in them, so none are looked
    up (that table alone is about 3 ms of a cold start)."""
    from rich.console import Console

    return Console(stderr=stderr, emoji=False)


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except (CostplanError, ValueError) as exc:
        text = str(exc).rstrip()
        raise click.ClickException(text if text.endswith((".", "?", "!")) else text + ".") from None
    except RecursionError:
        raise click.ClickException("The input is nested too deeply to read.") from None
    except OverflowError as exc:
        raise click.ClickException(f"A number is too large to compute with ({exc}).") from None


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]},
             invoke_without_command=True)
@click.version_option(package_name="costplan")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Compute cost and feasibility planner for adapting large language models."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


METHOD_CHOICE = click.Choice(["inference", "prompt", "prefix", "lora", "qlora", "lora-int8", "full", "cpt", "pretrain"],
                             case_sensitive=False)
FRAMEWORK_CHOICE = click.Choice(["hf-trainer", "fsdp", "deepspeed", "torchtune", "litgpt", "unsloth", "axolotl",
                                 "megatron", "torchtitan"])
"""tables/frameworks.csv's keys (a test keeps them equal), spelled out so --help needs no table."""
PRECISION_CHOICE = click.Choice(["fp32", "bf16", "fp16", "bf16-mixed", "fp16-mixed", "bf16-true", "bf16-master",
                                 "fp16-master", "fp8"])
TRACEABLE_PRECISION_CHOICE = click.Choice([name for name in PRECISION_CHOICE.choices if name != "fp8"])
"""What ``verify`` traces: fp8 runs on CUDA only (Transformer Engine)."""
PRECISION_HELP = ("bf16: the stack's bf16 mode (Trainer/FSDP bf16-mixed, torchtune/LitGPT/Unsloth/Axolotl bf16-true, "
                  "DeepSpeed/Megatron bf16-master); fp16: its fp16 counterpart (fp16-mixed, or fp16-master on "
                  "DeepSpeed/Megatron); bf16-mixed/fp16-mixed: autocast over fp32 weights; bf16-true: pure bf16, no "
                  "master copy; bf16-master/fp16-master: 16-bit weights + fp32 master; fp8: Transformer Engine.")


def _options(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def apply(fn: Any) -> Any:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn
    return apply


OUTPUT = _options(
    click.option("--json", "as_json", is_flag=True, help="Print JSON in base units (bytes, FLOPs, seconds, dollars)."),
    click.option("--csv", "as_csv", is_flag=True, help="Print the main table as CSV in base units."),
)


def _output(as_json: bool, as_csv: bool) -> str:
    """``json``, ``csv`` or ``table``; both flags at once is a usage error."""
    if as_json and as_csv:
        raise click.UsageError("give --json or --csv, not both.")
    return "json" if as_json else "csv" if as_csv else "table"


def _echo_csv(rows: list[dict[str, Any]]) -> None:
    from costplan.frames import csv_text

    click.echo(csv_text(rows), nl=False)


PADDING_CHOICE = click.Choice(["longest", "grouped", "max", "packed"])
"""dataset.PADDINGS, spelled out so --help imports no dataset module (a test keeps them equal)."""
WEIGHTS_CHOICE = click.Choice(["bf16", "fp16", "fp8", "int8", "int4", "nf4", "mxfp4"])
"""memory.WEIGHT_FORMATS, spelled out so --help imports no memory model (a test keeps them equal)."""
DATASET = _options(
    click.option("--dataset", type=click.Path(),
                 help="Count the training tokens in this JSONL/Parquet/text file or folder (see `costplan tokens`)."),
    click.option("--tokenizer", help="With --dataset: tokenizer.json, a folder holding one, or a Hub id in the local "
                                     "cache [default: the model's, else a bytes-per-token estimate]."),
    click.option("--padding", type=PADDING_CHOICE, show_default="auto",
                 help="With --dataset: how sequences fill the rows: each micro-batch padded to its longest (the "
                      "stacks' collators; auto for fine-tuning), the same over micro-batches grouped by length "
                      "(the Trainer's group_by_length), all padded to --seq-len, or packed (auto for "
                      "pretraining and CPT). Padding costs steps; memory is sized on the longest row."),
)


def _count_dataset(path: str, tokenizer: str | None, model: str | None, seq_len: int = 2048) -> Any:
    """Count a dataset's tokens, with a progress bar on stderr for long counts."""
    from costplan.dataset import count_tokens, total_bytes

    size = _run(total_bytes, path)
    if size < 8 << 20:  # under 8 MB: quick, no bar
        return _run(count_tokens, path, seq_len, tokenizer=tokenizer, model=model)
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("counting tokens"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=_console(stderr=True), transient=True) as bar:
        task = bar.add_task("count", total=size)
        return _run(count_tokens, path, seq_len, tokenizer=tokenizer, model=model,
                    progress=lambda done: bar.advance(task, done))


MODEL = click.option("--model", "-m", default="7b", show_default=True,
                     help="Preset name or alias (see `costplan models`), or a Hugging Face config.json / folder.")
PRICES = _options(
    click.option("--provider", help="Price from this provider [default: the cheapest offer that rents the GPUs]."),
    click.option("--spot", is_flag=True, help="Use spot/preemptible prices."),
    click.option("--price", type=_Number(0, 10_000), help="Override the price in $/GPU-hour (0 for owned GPUs)."),
    click.option("--electricity", type=_Number(0, 100),
                 help="Owned GPUs: electricity in $/kWh, at board power x PUE (replaces the rental price)."),
    click.option("--hardware-price", type=_Number(0, 10_000),
                 help="Owned GPUs: amortised hardware $/GPU-hour (replaces the rental price)."),
)
WIDE = click.option("--wide", is_flag=True,
                    help="More columns (wider than 80 characters); the default table fits 80.")
LAYOUT = _options(
    click.option("--gpus", type=_ints(MAX_GPUS), show_default="auto",
                 help="GPU count [auto: the fewest that fit; for pretraining the fewest nodes that finish in a "
                      "month]."),
    click.option("--micro-batch", type=_ints(MAX_BATCH), show_default="auto",
                 help="Sequences per GPU per forward/backward [auto: the fastest that fits]; for inference the "
                      "concurrent requests [1]."),
    click.option("--global-batch", type=_ints(100_000_000), show_default="auto",
                 help="Sequences per optimizer step [auto: published practice for the method and size]."),
    click.option("--global-batch-tokens", type=_Count(1, 1e12), show_default="auto",
                 help="The global batch in tokens instead (4M, 2^21 = 2.1M)."),
    click.option("--grad-ckpt/--no-grad-ckpt", default=None, show_default="auto",
                 help="Activation checkpointing [auto: only where it fits or runs faster]."),
    click.option("--zero", type=click.IntRange(0, 3), show_default="auto",
                 help="ZeRO stage 0-3 (3 = FSDP full shard) [auto: the fastest that fits]."),
    click.option("--tp", type=_ints(64), show_default="auto",
                 help="Tensor-parallel degree inside a node (Megatron) [auto]."),
    click.option("--pp", type=_ints(1024), show_default="auto", help="Pipeline stages across nodes (Megatron) [auto]."),
    click.option("--cp", type=_ints(64), default=1, show_default=True,
                 help="Context parallelism: each sequence split over this many GPUs (Megatron, torchtitan)."),
    click.option("--framework", type=FRAMEWORK_CHOICE, show_default="auto",
                 help="Training stack [auto: Megatron for multi-GPU pretraining and continual pretraining, the "
                      "Hugging Face Trainer otherwise]."),
)


@cli.command()
@click.option("--model", "-m", show_default="7b",
              help="Preset name or alias (see `costplan models`), a Hugging Face config.json / folder, or a Hub "
                   "id (org/name) from the local Hugging Face cache [default: the --adapter's base model, or 7b].")
@click.option("--method", show_default="lora", type=METHOD_CHOICE,
              help="Approach to plan [default: the --adapter's, or lora].")
@click.option("--adapter", type=click.Path(),
              help="peft adapter_config.json (or its folder): sets the method, LoRA rank/targets/DoRA/"
                   "modules_to_save or the virtual tokens, and the model if --model is not given.")
@click.option("--from", "from_file", type=click.Path(dir_okay=False),
              help="Training config to read the settings from: Axolotl, torchtune or LLaMA-Factory YAML, or a "
                   "TrainingArguments JSON. Flags given here override the file.")
@click.option("--gpu", "-g", default="h100", show_default=True, help="GPU type (see `costplan gpus`).")
@click.option("--tokens", "-t", type=_Count(), help="Training tokens per epoch (100M, 2.5B, 1e9); "
              "for inference, generated tokens to price. Default depends on the method.")
@click.option("--epochs", type=_Number(0.001, 10_000), default=1.0, show_default=True)
@click.option("--seq-len", type=_ints(MAX_SEQ), help="Training sequence length [default: 2048 or the model's context].")
@LAYOUT
@click.option("--precision", type=PRECISION_CHOICE, default="bf16", show_default=True, help=PRECISION_HELP)
@click.option("--optimizer", show_default="auto",
              help="adamw (foreach), adamw-fused, adamw-8bit, paged-adamw, paged-adamw-8bit, sgd, sgd-momentum, "
                   "adafactor [auto: the stack's default].")
@click.option("--sync-each-batch/--no-sync-each-batch", default=None, show_default="auto",
              help="Under FSDP with gradient accumulation, reduce-scatter the gradients after every micro-batch "
                   "(accelerate's sync_each_batch; Composer) instead of keeping them unsharded until the last one "
                   "(FSDP's no_sync: the Trainer's and LitGPT's default) [auto: the stack's].")
@click.option("--expandable-segments/--no-expandable-segments", default=None, show_default="auto",
              help="PyTorch's caching allocator runs with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True, which "
                   "keeps its reserve close to the allocated peak (less fragmentation; Axolotl and torchtitan set it) "
                   "[auto: the stack's].")
@click.option("--optimizer-in-backward/--no-optimizer-in-backward", default=None, show_default="auto",
              help="Step each parameter inside backward and free its gradient (torchtune's optimizer_in_bwd; no "
                   "gradient accumulation).")
@click.option("--loss", type=click.Choice(["full", "chunked", "fused"]), show_default="auto",
              help="Cross-entropy: full logits (transformers), chunked (torchtune, LitGPT) or a fused linear + "
                   "cross-entropy that keeps no logits (Liger, Unsloth, Cut Cross-Entropy) [auto: the stack's].")
@click.option("--offload", type=click.Choice(["optimizer", "params", "activations"]), multiple=True,
              help="Keep in host memory: optimizer states and master weights (ZeRO-Offload, FSDP CPU offload; the step "
                   "runs on the CPU), parameters (ZeRO-3), activations/checkpoints. Repeat for several.")
@click.option("--attention", type=click.Choice(["flash", "eager"]), default="flash", show_default=True)
@click.option("--virtual-stages", type=_ints(1024), show_default="auto",
              help="With --pp > 1: pipeline stages per GPU, interleaved 1F1B (Megatron's virtual pipeline); 1 is "
              "plain 1F1B (DeepSpeed's pipeline engine: GPT-NeoX, Megatron-DeepSpeed) [auto: about two layers "
              "each, as NeMo runs large models].")
@click.option("--runtime", type=click.Choice(["eager", "compiled", "native"]), show_default="auto",
              help="Kernel dispatch: eager PyTorch (transformers generate), compiled (CUDA graphs / torch.compile, as "
                   "vLLM, TensorRT-LLM and gpt-fast run) or native (C++ engines: llama.cpp, exllamav2) [auto: compiled "
                   "for inference, the stack's own for training].")
@click.option("--weights", type=WEIGHTS_CHOICE,
              help="Inference: weight-only quantization of the layers' matrices (int4: AWQ/GPTQ groups of 128; "
                   "mxfp4: 4.25 bits, the routed experts only on a mixture of experts, as gpt-oss ships) "
                   "[default: the precision].")
@click.option("--lora-rank", type=_ints(65_536), default=8, show_default=True)
@click.option("--lora-targets", default="q,v", show_default=True,
              help="Comma list of q,k,v,o,gate,up,down, or attn, mlp, all-linear; experts: gpt-oss's expert tensors "
                   "(peft's target_parameters), experts.N: layer N's.")
@click.option("--lora-dropout", type=_Number(0, 0.99), show_default="auto",
              help="[auto: the stack's default: 0, or 0.05 on LitGPT]")
@click.option("--double-quant/--no-double-quant", default=True, show_default=True,
              help="QLoRA: quantize the 4-bit base's absmax constants again (bitsandbytes double quantization).")
@click.option("--virtual-tokens", type=_ints(100_000), default=20, show_default=True,
              help="Prompt/prefix tuning: trainable virtual tokens.")
@click.option("--prompt-len", type=_ints(MAX_SEQ), default=512, show_default=True, help="Inference: prompt tokens.")
@click.option("--gen-len", type=_ints(MAX_SEQ), default=256, show_default=True, help="Inference: generated tokens.")
@click.option("--source-len", type=_ints(MAX_SEQ), help="Encoder-decoder models (t5): source tokens per example, "
              "read by the encoder [default: 512].")
@click.option("--target-len", type=_ints(MAX_SEQ), help="Encoder-decoder models (t5): target tokens per example, "
              "the decoder's (trained on, or generated) [default: 128].")
@PRICES
@DATASET
@click.option("--pue", type=_Number(1.0, 3.0), help="Data-centre PUE [default: industry average, tables/energy.csv].")
@click.option("--grid", help="Grid carbon intensity: world, us, eu, france, or kg CO2 per kWh [default: world].")
@click.option("--goodput", type=_Number(0.05, 1.0), show_default="auto",
              help="Share of the run's wall time spent in training steps, if your cluster's is known [pretraining "
              "and CPT: fitted on published runs (tables/efficiency.csv run_goodput); fine-tuning: 1].")
@click.option("--serve-tokens", type=_Count(), help="Also price serving this many generated tokens on the result.")
@click.option("--serve-batch", type=_ints(MAX_BATCH), default=32, show_default=True,
              help="Concurrent requests when serving.")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False),
              help="Calibration profile [default: the saved one for this GPU, if any].")
@click.option("--max", "maximize", type=click.Choice(["seq-len", "micro-batch"]),
              help="Also find the largest sequence length or micro-batch (inference: concurrent requests) that fits "
                   "the GPUs with the other settings.")
@OUTPUT
@click.option("--brief", is_flag=True, help="Only the summary and assumptions.")
def estimate(as_json: bool, as_csv: bool, brief: bool, profile_path: str | None, from_file: str | None,
             **options: Any) -> None:
    """Estimate FLOPs, memory, GPUs, hours and dollars for one approach.

    \b
    Examples:
      costplan estimate --model 7b --method lora --tokens 100M
      costplan estimate -m 70b --method qlora --gpu a100 --lora-targets all-linear --lora-rank 16
      costplan estimate -m 8b --method full --gpu h100 --tokens 1B --json
      costplan estimate -m 8b --method cpt --tokens 20B --gpu h100 --gpus 64
      costplan estimate -m mistral-7b --method inference --prompt-len 1024 --gen-len 512 --micro-batch 16
      costplan estimate -m t5-base --method full --source-len 512 --target-len 128
      costplan estimate -m ./my-model/config.json --method prompt --virtual-tokens 50
      costplan estimate -m 8b --method lora --tokens 50M --serve-tokens 1B --grid eu
      costplan estimate -m meta-llama/Llama-3.1-8B --method qlora      # from the local HF cache
      costplan estimate --adapter ./my-lora/ --tokens 50M              # a peft adapter_config.json
      costplan estimate --from axolotl.yml -m 8b --gpu a100            # a training config; flags override it
      costplan estimate -m ./my-model --dataset data/train.jsonl       # tokens counted in the dataset
      costplan estimate -m 8b --hardware-price 0.25 --electricity 0.3 --gpu rtx-4090   # owned GPUs
    """
    from costplan.api import estimate as run_estimate

    output = _output(as_json, as_csv)
    if from_file:
        _apply_training_config(from_file, options, click.get_current_context())
    if options.get("adapter"):
        _adapter_fixes(click.get_current_context())
    if options.get("dataset"):
        if options.get("tokens") is not None:
            raise click.UsageError("give --tokens or --dataset, not both.")
        model = options.get("model")
        options["dataset"] = _count_dataset(options["dataset"], options.get("tokenizer"),
                                            model if isinstance(model, str) else None)
    if profile_path:
        from costplan.profile import load_profile

        options["profile"] = _run(load_profile, profile_path)
    if options.get("global_batch_tokens") is not None and options.get("global_batch") is not None:
        raise click.UsageError("give --global-batch or --global-batch-tokens, not both.")
    result = _run(run_estimate, **options)
    alternative = None
    if not result.placement.fits:  # say what would fit, where cheap
        from costplan.alternatives import cheapest_fit

        alternative = _run(cheapest_fit, **options)
    if output == "json":  # without rich: scripts only pay for the estimate
        from costplan.compare import would_fit
        from costplan.serialize import dumps

        data = result.to_dict()
        if not result.placement.fits:
            data["would_fit"] = would_fit(alternative)
        click.echo(dumps(data))
        return
    if output == "csv":
        from costplan.frames import estimate_row

        _echo_csv([estimate_row(result)])
        return

    from costplan.render import estimate_view

    _console().print(estimate_view(result, detail=not brief, alternative=alternative))


@cli.command()
@OUTPUT
def models(as_json: bool, as_csv: bool) -> None:
    """List the model presets with their architecture numbers."""
    from costplan.model import count_params, preset, preset_names
    from costplan.tables import read_table

    output = _output(as_json, as_csv)
    aliases = {row["key"]: row["aliases"].replace(";", ", ") for row in read_table("models")}
    rows = []
    for key in preset_names():
        spec = _run(preset, key)
        rows.append({"key": key, "aliases": aliases[key], "name": spec.name, "family": spec.family,
                     "params": count_params(spec).total, "layers": spec.num_layers,
                     "hidden": spec.hidden_size, "heads": f"{spec.num_heads}/{spec.num_kv_heads}",
                     "vocab": spec.vocab_size, "context": spec.max_positions})
    _emit(rows, output, "models_table")


@cli.command()
@OUTPUT
def gpus(as_json: bool, as_csv: bool) -> None:
    """List the GPU table: memory, bandwidth, dense peaks, power and the cheapest listed price."""
    from costplan.hardware import gpu, gpu_names, price
    from costplan.units import GIB

    output = _output(as_json, as_csv)
    rows = []
    for key in gpu_names():
        spec = _run(gpu, key)
        cheapest = price(key)
        peaks = {dtype: spec.peak_flops.get(dtype) for dtype in ("bf16", "fp16", "fp8", "fp32")}
        rows.append({"key": key, "name": spec.name, "memory_gib": round(spec.memory_bytes / GIB),
                     "bandwidth_gbps": round(spec.bandwidth_bytes_per_s / 1e9),
                     **{f"{d}_tflops": (v / 1e12 if v else None) for d, v in peaks.items()},
                     "tdp_watts": spec.tdp_watts,
                     "usd_per_gpu_hour": cheapest.usd_per_gpu_hour if cheapest else None})
    _emit(rows, output, "gpus_table")


@cli.command()
@click.argument("path", type=click.Path())
@click.option("--model", "-m", help="Count with this model's tokenizer: a folder holding tokenizer.json, or a Hub id "
                                    "whose tokenizer.json is in the local Hugging Face cache.")
@click.option("--tokenizer", help="tokenizer.json, a folder holding one, or a cached Hub id (instead of --model's).")
@click.option("--seq-len", type=_ints(MAX_SEQ), default=2048, show_default=True,
              help="Sequence length for the padding and packing figures.")
@click.option("--grad-accum", type=click.IntRange(1, 1_000_000), default=1, show_default=True,
              help="Accumulation steps for the length-grouped padding (the Trainer's sampler batch is micro-batch x "
                   "accumulation).")
@OUTPUT
def tokens(path: str, model: str | None, tokenizer: str | None, seq_len: int, grad_accum: int, as_json: bool,
           as_csv: bool) -> None:
    """Count a dataset's tokens (JSONL, Parquet, plain text; a folder of them) and the waste of padding
    each sequence to --seq-len, or each micro-batch to its longest sequence, against packing them.

    \b
    Examples:
      costplan tokens data/train.jsonl --tokenizer ./my-model
      costplan tokens data/ -m meta-llama/Llama-3.1-8B --seq-len 4096
      costplan estimate -m ./my-model --method lora --dataset data/train.jsonl
    """
    output = _output(as_json, as_csv)
    count = _count_dataset(path, tokenizer, model, seq_len)
    if output == "json":
        from costplan.serialize import dumps

        click.echo(dumps(count.to_dict(grad_accum)))
        return
    if output == "csv":
        _echo_csv(count.rows())
        return

    from costplan.render import tokens_view

    _console().print(tokens_view(count, grad_accum))


@cli.command()
@click.option("--gpu", "-g", help="Only this GPU type (key or alias, see `costplan gpus`).")
@click.option("--provider", help="Only this provider.")
@OUTPUT
def prices(gpu: str | None, provider: str | None, as_json: bool, as_csv: bool) -> None:
    """List the rental offers by provider: instance, GPUs per instance, on-demand and spot $/GPU-hour,
    whether the provider sells multi-node clusters of it, and the date of the price.

    \b
    Examples:
      costplan prices --gpu h100
      costplan prices --provider lambda --csv
    """
    from dataclasses import asdict

    from costplan.hardware import gpu as find_gpu
    from costplan.hardware import listings, providers

    output = _output(as_json, as_csv)
    key = _run(find_gpu, gpu).key if gpu else None
    if provider is not None and provider.lower() not in providers():
        from costplan.errors import unknown_name

        _run(_raise, unknown_name("provider", provider, providers()))
    rows = [asdict(o) for o in listings(key) if provider is None or o.provider == provider.lower()]
    _emit(rows, output, "prices_table")


def _raise(exc: Exception) -> None:
    raise exc


@cli.command()
@click.option("--model", "-m", default="7b", show_default=True, help="Preset or config.json to trace.")
@click.option("--method", default="lora", show_default=True, type=METHOD_CHOICE)
@click.option("--precision", type=TRACEABLE_PRECISION_CHOICE, default="bf16", show_default=True, help=PRECISION_HELP)
@click.option("--framework", type=FRAMEWORK_CHOICE, help="Follow this stack's conventions where they can be traced.")
@click.option("--optimizer", type=click.Choice(["adamw", "adamw-fused", "sgd", "sgd-momentum"]),
              help="[default: foreach AdamW, or the stack's]")
@click.option("--grad-ckpt/--no-grad-ckpt", default=False, show_default=True)
@click.option("--attention", type=click.Choice(["flash", "eager"]), default="flash", show_default=True)
@click.option("--seq-len", type=_ints(1_048_576),
              help="Sequence (or prompt) length [default: 2048, or 512 for inference; t5: the target, 128].")
@click.option("--source-len", type=_ints(1_048_576), help="Encoder-decoder training: the source length [512].")
@click.option("--micro-batch", type=_ints(4096), default=1, show_default=True)
@click.option("--all", "run_all", is_flag=True, help="Run the verification matrix instead of one case.")
@click.option("--full", is_flag=True, help="With --all: every combination (slow), not the representative subset.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=str),
              help="Write every check as CSV [default with --all: tables/verification.csv].")
def verify(model: str, method: str, precision: str, framework: str | None, optimizer: str | None, grad_ckpt: bool,
           attention: str, seq_len: int | None, source_len: int | None, micro_batch: int, run_all: bool, full: bool,
           out: str | None) -> None:
    """Trace the real model code (transformers + peft, meta device: no weights, no GPU) and put
    the analytic estimate beside it: parameters, FLOPs and peak memory by term.

    \b
    Examples:
      costplan verify --model 7b --method lora --seq-len 2048 --micro-batch 1
      costplan verify --model mixtral --method full --grad-ckpt
      costplan verify --model 8b --method full --framework torchtune   # pure bf16, optimizer in backward
      costplan verify --all              # the representative matrix -> tables/verification.csv
      costplan verify --all --full       # every model x method x precision x ckpt x attention
    """
    from pathlib import Path

    _require_extras("verify")

    from costplan import verify as v
    from costplan.render import verify_case_table, verify_matrix_table

    if full and not run_all:
        raise click.UsageError("--full goes with --all.")
    if out is not None:
        from costplan.files import check_file

        if not out.strip():
            raise click.UsageError("--out is empty: give a file name for the CSV.")
        _run(check_file, Path(out), "--out file")
    stderr = _console(stderr=True)
    if run_all:
        cases = v.matrix(full=full)
        failed: list[str] = []
        with stderr.status("tracing") as status:
            results = _run(v.run_matrix, cases, lambda c: status.update(f"tracing {c.label}"), failed)
        summary = v.summarize(results)
        _console().print(verify_matrix_table(results, summary))
        for line in failed:
            stderr.print(line, style="red")
        target = Path(out or Path("tables") / "verification.csv")
    else:
        case = v.Case(model=model, method=method.lower(), precision=precision, grad_ckpt=grad_ckpt,
                      attention=attention, seq_len=seq_len, source_len=source_len, micro_batch=micro_batch,
                      framework=framework, optimizer=optimizer)
        with stderr.status(f"tracing {case.label}"):
            try:
                results = [_run(v.run_case, case)]
            except v.TraceFailed as exc:
                raise click.ClickException(str(exc)) from None
        summary = v.summarize(results)
        _console().print(verify_case_table(results[0]))
        target = Path(out) if out else None
    if target is not None:
        _run(v.write_csv, results, target)
        stderr.print(f"wrote {target}")
    if not summary.passed or (run_all and failed):
        raise click.exceptions.Exit(1)


def _apply_training_config(path: str, options: dict[str, Any], ctx: click.Context) -> None:
    """Settings from a training config, where the command line left them (``--from``)."""
    from click.core import ParameterSource

    from costplan import arguments
    from costplan.trainconfig import read_training_config

    config = _run(read_training_config, path)
    overridden = []
    for key, value in config.options.items():
        if key in options and ctx.get_parameter_source(key) is ParameterSource.COMMANDLINE:
            if options[key] != value:
                overridden.append(f"--{key.replace('_', '-')} {options[key]} (file: {value})")
            continue
        if key == "global_batch" and options.get("global_batch_tokens") is not None:
            continue
        if key == "padding" and not options.get("dataset"):
            continue  # how rows are filled matters only for the sequences of a --dataset
        bound = arguments.ESTIMATE.get(key)
        if bound is not None and value is not None:
            try:
                bound(key, value)
            except CostplanError as exc:  # say it came from the file, not from a flag the user did not type
                raise click.ClickException(f"{path}: {str(exc).rstrip('.')} (read from the file; --"
                                           f"{key.replace('_', '-')} overrides it).") from None
        options[key] = value
    notes = list(config.notes)
    if overridden:
        notes.append("the command line overrides the file: " + "; ".join(overridden))
    options["notes"] = tuple(notes)
    model = options.get("model")
    if isinstance(model, str) and "model" in config.options and model == config.options["model"]:
        from costplan.model import resolve_model

        try:
            resolve_model(model)
        except CostplanError as exc:
            raise click.ClickException(f"{str(exc).rstrip('.')} (the model {path} names; pass --model).") from None


def _adapter_fixes(ctx: click.Context) -> None:
    """Flags that the adapter file decides may not be given beside it."""
    from click.core import ParameterSource

    fixed = [f"--{name.replace('_', '-')}" for name in ("lora_rank", "lora_targets", "lora_dropout", "virtual_tokens")
             if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE]
    if fixed:
        verb = "comes" if len(fixed) == 1 else "come"
        pronoun = "it" if len(fixed) == 1 else "them"
        raise click.UsageError(f"{', '.join(fixed)} {verb} from the --adapter file; leave {pronoun} out.")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _require_extras(command: str) -> None:
    """One line naming every missing package of the ``verify`` extra."""
    missing = [name for name in ("torch", "transformers", "peft") if not _importable(name)]
    if missing:
        raise click.ClickException(
            f"costplan {command} needs torch, transformers and peft ({', '.join(missing)} missing): "
            "pip install 'costplan[verify]'.")


@cli.command()
@MODEL
@click.option("--gpu", "-g", default="h100", show_default=True)
@click.option("--tokens", "-t", type=_Count(), default="100M", show_default=True,
              help="Fine-tuning tokens (prompt, prefix, LoRA, QLoRA, full).")
@click.option("--cpt-tokens", type=_Count(), default="10B", show_default=True, help="Continual-pretraining tokens.")
@click.option("--eval-tokens", type=_Count(), default="100k", show_default=True,
              help="Tokens generated by the inference-only (prompting) row.")
@click.option("--seq-len", type=_ints(MAX_SEQ))
@click.option("--grad-ckpt/--no-grad-ckpt", default=None, show_default="auto")
@click.option("--precision", type=PRECISION_CHOICE, default="bf16", show_default=True)
@click.option("--serve-tokens", type=_Count(), help="Add the cost of serving this many generated tokens.")
@click.option("--serve-batch", type=_ints(MAX_BATCH), default=32, show_default=True,
              help="Concurrent requests when serving (and for the prompting row).")
@PRICES
@DATASET
@OUTPUT
@WIDE
def compare(model: str, gpu: str, tokens: float, cpt_tokens: float, eval_tokens: float, seq_len: int | None,
            grad_ckpt: bool | None, precision: str, serve_tokens: float | None, serve_batch: int,
            provider: str | None, spot: bool, price: float | None, electricity: float | None,
            hardware_price: float | None, dataset: str | None, tokenizer: str | None, padding: str | None,
            as_json: bool, as_csv: bool, wide: bool) -> None:
    """Every approach side by side: trainable parameters, memory, GPUs, hours, dollars, energy.

    \b
    Examples:
      costplan compare --model 7b --tokens 100M
      costplan compare -m 70b --gpu a100 --serve-tokens 1B
    """
    from costplan.compare import compare as run_compare

    output = _output(as_json, as_csv)
    counted = None
    if dataset:
        if click.get_current_context().get_parameter_source("tokens") is click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError("give --tokens or --dataset, not both.")
        counted = _count_dataset(dataset, tokenizer, model)
    result = _run(run_compare, model, dataset=counted, padding=padding, tokens=tokens, cpt_tokens=cpt_tokens,
                  eval_tokens=eval_tokens, gpu=gpu,
                  seq_len=seq_len, grad_ckpt=grad_ckpt, precision=precision, serve_tokens=serve_tokens,
                  serve_batch=serve_batch, provider=provider, spot=spot, price=price, electricity=electricity,
                  hardware_price=hardware_price)
    if output == "json":
        from costplan.serialize import compare_dict, dumps

        click.echo(dumps(compare_dict(result)))
        return
    if output == "csv":
        _echo_csv(result.rows())
        return

    from costplan.render import compare_table

    _console().print(compare_table(result, wide=wide))


@cli.command()
@MODEL
@click.option("--method", "methods", default="lora", show_default=True,
              help="One method or a comma list of variants to search (e.g. lora,qlora).")
@click.option("--tokens", "-t", type=_Count(), help="Training tokens per epoch (or --dataset).")
@click.option("--epochs", type=_Number(0.001, 10_000), default=1.0, show_default=True)
@click.option("--deadline", help="Longest acceptable wall time (48h, 90m, 2d).")
@click.option("--budget", type=_Number(0, 1e12, low_open=True), help="Most dollars to spend.")
@click.option("--gpu", "-g", "gpu_types", help="GPU type or comma list of types [default: every priced GPU].")
@click.option("--max-gpus", type=click.IntRange(1, 16_384), default=1024, show_default=True)
@click.option("--precision", "precisions", default="bf16", show_default=True,
              help="Precision or comma list to search (fp8 only when asked; never for 4-bit bases).")
@click.option("--seq-len", type=_ints(MAX_SEQ))
@click.option("--global-batch", type=_ints(100_000_000), show_default="auto",
              help="Sequences per optimizer step [auto: published practice for the method and size].")
@click.option("--framework", type=FRAMEWORK_CHOICE, show_default="auto")
@PRICES
@click.option("--lora-rank", type=_ints(65_536), default=8, show_default=True)
@click.option("--lora-targets", default="q,v", show_default=True)
@DATASET
@OUTPUT
@WIDE
def plan(model: str, methods: str, tokens: float | None, epochs: float, deadline: str | None, budget: float | None,
         gpu_types: str | None, max_gpus: int, precisions: str, seq_len: int | None, global_batch: int | None,
         framework: str | None, provider: str | None, spot: bool, price: float | None, electricity: float | None,
         hardware_price: float | None, lora_rank: int, lora_targets: str, dataset: str | None, tokenizer: str | None,
         padding: str | None, as_json: bool, as_csv: bool, wide: bool) -> None:
    """Search GPU type x count x layout (micro-batch, checkpointing, ZeRO, TP/PP) x precision for what fits,
    meets the deadline and budget, and show the Pareto front of cost against wall time.

    \b
    Examples:
      costplan plan --model 70b --method lora --tokens 1B --deadline 48h --budget 5000
      costplan plan -m 8b --method lora,qlora --tokens 500M --gpu a100,l40s,rtx-4090
    """
    from costplan.plan import search
    from costplan.units import parse_duration_seconds

    output = _output(as_json, as_csv)
    if (tokens is None) == (dataset is None):
        raise click.UsageError("give --tokens or --dataset (one of them).")
    counted = _count_dataset(dataset, tokenizer, model) if dataset else None
    deadline_seconds = _run(parse_duration_seconds, deadline) if deadline else None
    method_list = tuple(m.strip().lower() for m in methods.split(",") if m.strip())
    if not method_list:
        raise click.UsageError("--method is empty.")
    precision_list = tuple(p.strip().lower() for p in precisions.split(",") if p.strip())
    from costplan.precision import NAMES

    for p in precision_list:
        if p not in NAMES:
            raise click.UsageError(f"--precision {p!r} is not one of {', '.join(NAMES)}.")
    result = _run(search, model, method_list, tokens=tokens, dataset=counted, padding=padding, epochs=epochs,
                  deadline_seconds=deadline_seconds,
                  budget_usd=budget,
                  gpus=tuple(_run(_gpu_key, g) for g in gpu_types.split(",") if g.strip()) if gpu_types else None,
                  max_gpus=max_gpus, precisions=precision_list, seq_len=seq_len, global_batch=global_batch,
                  framework=framework, provider=provider, spot=spot, price=price, electricity=electricity,
                  hardware_price=hardware_price, lora_rank=lora_rank,
                  lora_targets=lora_targets)
    from costplan.serialize import plan_dict, plan_why

    if output == "json":
        from costplan.serialize import dumps

        click.echo(dumps(plan_dict(result, deadline, budget)))
        return
    if output == "csv":
        if not result.pareto:
            click.echo(plan_why(result, deadline, budget), err=True)
        _echo_csv(result.rows())
        return
    if not result.pareto:
        click.echo(plan_why(result, deadline, budget))
        return

    from costplan.render import plan_table

    _console().print(plan_table(result, wide=wide))


def _gpu_key(name: str) -> str:
    from costplan.hardware import gpu

    return gpu(name.strip()).key


@cli.command()
@click.option("--gpu", "-g", default="h100", show_default=True)
@click.option("--hours", type=_Number(0.1, 24 * 365), default=24.0, show_default=True)
@click.option("--model", "-m", help="Also check which approaches fit this model on the one GPU.")
@click.option("--dataset-tokens", type=_Count(), default="50M", show_default=True,
              help="Size of the fine-tuning set, to count epochs.")
@click.option("--seq-len", type=_ints(MAX_SEQ), show_default="auto",
              help="Sequence length [auto: 2048 from scratch; for --model 2048 or its context, 128 for an encoder "
                   "as in Cramming].")
@click.option("--precision", type=PRECISION_CHOICE, default="bf16", show_default=True)
@OUTPUT
@WIDE
def cram(gpu: str, hours: float, model: str | None, dataset_tokens: float, seq_len: int | None, precision: str,
         as_json: bool, as_csv: bool, wide: bool) -> None:
    """How far one GPU goes in a day: compute-optimal model size and tokens, the largest model
    that fits for training, and (with --model) what each approach gets through.

    \b
    Examples:
      costplan cram --gpu h100 --hours 24
      costplan cram --gpu a100 --model 7b --dataset-tokens 50M
    """
    from costplan.cram import cram as run_cram

    output = _output(as_json, as_csv)
    result = _run(run_cram, gpu, hours, model=model, dataset_tokens=dataset_tokens, seq_len=seq_len,
                  precision=precision)
    if output in ("json", "csv"):
        from costplan.serialize import cram_dict, dumps

        data = cram_dict(result)
        if output == "json":
            click.echo(dumps(data))
        else:  # the approaches on --model, else the from-scratch ladder
            _echo_csv(data["approaches"] or data["options"])
        return

    from costplan.render import cram_view

    _console().print(cram_view(result, wide=wide))


@cli.command()
@click.option("--model", "-m", default="7b", show_default=True,
              help="Architecture whose shapes to measure (a scaled-down copy is trained).")
@click.option("--quick", is_flag=True, help="Fewer sizes and repeats (under 20 s on a GPU).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]),
              help="[default: bf16 on a GPU, fp32 on a CPU]")
@click.option("--seq-len", type=_ints(65_536))
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the profile here.")
@click.option("--collectives", is_flag=True,
              help="Under torchrun: measure all-reduce/all-gather bandwidth and add it to the profile.")
@click.option("--from-log", "from_log", type=click.Path(dir_okay=False),
              help="Learn from a finished run instead: a Hugging Face trainer_state.json or a torchtune metric log.")
@click.option("--method", default="lora", show_default=True, type=METHOD_CHOICE, help="With --from-log: the method.")
@click.option("--gpu", "-g", default="h100", show_default=True, help="With --from-log: the GPU type it ran on.")
@click.option("--gpus", type=_ints(MAX_GPUS), default=1, show_default=True, help="With --from-log: GPUs it ran on.")
@click.option("--micro-batch", type=_ints(MAX_BATCH), help="With --from-log: the run's micro-batch.")
@click.option("--global-batch", type=_ints(100_000_000), help="With --from-log: sequences per optimizer step.")
@click.option("--grad-ckpt/--no-grad-ckpt", default=None, help="With --from-log: whether it checkpointed.")
@click.option("--lora-rank", type=_ints(65_536), default=8, show_default=True)
@click.option("--lora-targets", default="q,v", show_default=True)
@click.option("--framework", type=FRAMEWORK_CHOICE, help="With --from-log: the stack it ran on [auto].")
def calibrate(model: str, quick: bool, precision: str | None, seq_len: int | None, out: str | None,
              collectives: bool, from_log: str | None, method: str, gpu: str, gpus: int, micro_batch: int | None,
              global_batch: int | None, grad_ckpt: bool | None, lora_rank: int, lora_targets: str,
              framework: str | None) -> None:
    """Measure this machine (matmul curves, bandwidth, attention, a training step per method,
    power) and save a profile that `estimate` then uses instead of the table's constants.

    \b
    Examples:
      costplan calibrate                       # ~1 minute on a GPU
      costplan calibrate --quick --out profile.json
      costplan estimate -m 7b --method lora --profile profile.json
      torchrun --nproc_per_node=2 -m costplan calibrate --collectives --out profile.json
      costplan calibrate --from-log out/checkpoint-500/trainer_state.json -m 8b --method lora --gpu a100 \\
          --seq-len 2048 --micro-batch 4 --global-batch 16
    """
    if from_log:
        from costplan.runlogs import learn

        options = {"micro_batch": micro_batch, "global_batch": global_batch, "grad_ckpt": grad_ckpt,
                   "lora_rank": lora_rank, "lora_targets": lora_targets, "framework": framework,
                   "precision": precision or "bf16"}
        correction, measured, predicted, saved = _run(learn, from_log, model, method, gpu=gpu, gpus=gpus,
                                                      seq_len=seq_len, **options)
        click.echo(f"{correction.model} {correction.method} on {correction.gpu}: measured "
                   f"{measured.tokens_per_second_per_gpu:,.0f} tokens/s per GPU ({measured.detail}), predicted "
                   f"{predicted:,.0f}; estimates of this model and method on {correction.gpu} now scale the step "
                   f"time by {correction.factor:.3f} (saved in {saved})")
        return
    from pathlib import Path

    from costplan import calibrate as cal
    from costplan.files import check_file, check_folder
    from costplan.model import resolve_model
    from costplan.profile import cache_dir

    _require_extras("calibrate")
    spec = _run(resolve_model, model)
    _run(check_folder, cache_dir() / "profiles", "calibration cache (COSTPLAN_CACHE)")
    if out is not None:
        if not out.strip():
            raise click.UsageError("--out is empty: give a file name for the profile.")
        _run(check_file, Path(out), "--out file")
    stderr = _console(stderr=True)
    if collectives:
        points = _run(cal.collectives, quick)
        if points:  # rank 0
            target = Path(out) if out else None
            data = _run(_collectives_profile, target, points)
            target = target or cal.default_profile_path(data["device"]["name"])
            _run(cal.write_json_atomically, data, target)
            stderr.print(f"wrote collectives ({len(points)} sizes, {points[0]['world_size']} processes) to {target}")
        return
    from rich.progress import Progress

    with Progress(console=stderr, transient=True) as bar:
        task = bar.add_task("calibrating", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        profile = _run(cal.calibrate, spec, quick=quick, precision=precision, seq_len=seq_len, progress=progress)
    saved = cal.default_profile_path(profile["device"]["name"])
    _run(cal.write_json_atomically, profile, saved)
    if out:
        _run(cal.write_json_atomically, profile, Path(out))
    from costplan.render import calibration_table

    _console().print(calibration_table(profile))
    for line in profile.get("warnings", []):
        click.echo(f"Warning: {line}", err=True)
    if profile["device"]["kind"] != "cuda":
        stderr.print("No GPU here: measured on the CPU (useful for tiny models and tests); GPU projections keep "
                     "the table's constants.")
    stderr.print(f"saved {saved}" + (f" and {out}" if out else ""))


def _collectives_profile(target: Any, points: list[dict[str, Any]]) -> dict[str, Any]:
    from costplan import calibrate as cal
    from costplan.tables import read_json

    data: dict[str, Any] | None = None
    if target is not None and target.exists():
        data = read_json(target, "calibration profile")
    if data is None:
        import datetime

        data = {"version": cal.PROFILE_VERSION, "created": datetime.date.today().isoformat(),
                "device": cal.describe_device(), "gpu_key": None, "precision": "fp32", "gemm": [], "methods": {}}
        data["gpu_key"] = cal.match_gpu_row(data["device"])
    data["collectives"] = points
    return data


@cli.command()
@OUTPUT
@click.option("--show-skipped", is_flag=True, help="List the rows that could not be predicted, and why.")
@click.option("--rows", "show_rows", is_flag=True, help="Show every row's prediction, not only the summary.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(["pretrain", "throughput", "finetune_throughput",
                                                                  "decode", "memory", "fit", "max_context"]),
              help="Only these kinds (repeatable).")
def validate(as_json: bool, as_csv: bool, show_skipped: bool, show_rows: bool, kinds: tuple[str, ...]) -> None:
    """Predict the published runs in tables/published_runs.csv with default settings and compare,
    beside the naive rules a user would otherwise apply.

    \b
    Example:
      costplan validate --show-skipped
    """
    from costplan import validate as val

    output = _output(as_json, as_csv)
    run = _run(val.validate, kinds or val.KINDS)
    if output == "csv":
        _echo_csv(run.rows())
        return
    results, skipped = run
    summary = val.summarize(results)
    stacks = val.by_stack(results)
    if output == "json":
        from costplan.serialize import dumps, validate_dict

        click.echo(dumps(validate_dict(results, summary, skipped, stacks)))
        return

    from costplan.render import validation_view

    _console().print(validation_view(results, summary, skipped if show_skipped else [], rows=show_rows,
                                    stacks=stacks))


@cli.command()
@MODEL
@click.option("--tokens", "-t", type=_Count(), default="100M", show_default=True)
@click.option("--gpu", "-g", default="h100", show_default=True)
@click.option("--method", "--plan-methods", "methods", default="lora,qlora", show_default=True,
              help="Method or comma list the plan section searches; the first one's assumptions are listed.")
@click.option("--seq-len", type=_ints(MAX_SEQ), help="Training sequence length [default: 2048 or the model's context].")
@click.option("--grad-ckpt/--no-grad-ckpt", default=None, show_default="auto",
              help="Activation checkpointing for the comparison and the plan [auto: chosen per configuration].")
@click.option("--deadline", help="Deadline for the plan section (48h, 2d).")
@click.option("--budget", type=_Number(0, 1e12, low_open=True), help="Budget for the plan section.")
@click.option("--out", type=click.Path(file_okay=False), default="report", show_default=True,
              help="Folder for report.md, report.html, report.json, memory.png and plan.png (nothing else in it is "
                   "touched).")
def report(model: str, tokens: float, gpu: str, methods: str, seq_len: int | None, grad_ckpt: bool | None,
           deadline: str | None, budget: float | None, out: str) -> None:
    """Write report.md and a self-contained report.html (plots embedded) to justify a budget.

    \b
    Example:
      costplan report --model 7b --tokens 100M --out report/
    """

    from costplan.report import build
    from costplan.units import parse_duration_seconds

    if not out.strip():
        raise click.UsageError("--out is empty: give the folder to write the report into, such as report/.")
    deadline_seconds = _run(parse_duration_seconds, deadline) if deadline else None
    method_list = tuple(m.strip().lower() for m in methods.split(",") if m.strip())
    if not method_list:
        raise click.UsageError("--method is empty.")
    files = _run(build, model, tokens=tokens, gpu=gpu, out=out, methods=method_list, seq_len=seq_len,
                 grad_ckpt=grad_ckpt, deadline_seconds=deadline_seconds, budget_usd=budget)
    click.echo(f"wrote {files.markdown}, {files.html} and {files.data}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (the default answers this machine only).")
@click.option("--port", type=click.IntRange(0, 65_535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Worker processes, i.e. requests answered at once.")
@click.option("--timeout", type=_Number(0, 3600, low_open=True), default=30.0, show_default=True,
              help="Seconds a request (a plan search, a report) may run before it is stopped.")
def serve(host: str, port: int, workers: int, timeout: float) -> None:
    """A local web page for budgeting together, and a JSON API under /api/ (estimate, compare, plan,
    cram, report) taking the CLI's option names as query parameters. Needs `pip install 'costplan[serve]'`.

    \b
    Examples:
      costplan serve                          # then open http://127.0.0.1:8000
      curl 'http://127.0.0.1:8000/api/estimate?model=7b&method=lora&tokens=100M'
    """
    needed = {"starlette": ("starlette",), "uvicorn": ("uvicorn",),
              "python-multipart": ("python_multipart", "multipart")}
    missing = [package for package, modules in needed.items() if not any(_importable(m) for m in modules)]
    if missing:
        raise click.ClickException(f"costplan serve needs {', '.join(missing)}: pip install 'costplan[serve]'.")
    from costplan.web.app import Settings
    from costplan.web.app import serve as run_server

    click.echo(f"costplan: serving on http://{host}:{port} (Ctrl+C stops)", err=True)
    run_server(host, port, Settings(workers=workers, timeout_s=timeout))


def _emit(rows: list[dict[str, Any]], output: str, table: str) -> None:
    if output == "json":
        from costplan.serialize import dumps

        click.echo(dumps(rows))
        return
    if output == "csv":
        _echo_csv(rows)
        return

    from costplan import render

    _console().print(getattr(render, table)(rows))


def main() -> None:
    """The console script. After the command (and every ``atexit`` handler: multiprocessing,
    logging, temporary files) it ends the process without tearing the interpreter down: freeing
    every module and object one by one takes longer than a whole estimate (about 20 ms of a 0.15 s
    cold start, ``benchmarks/cold_start.py``)."""
    import gc

    gc.set_threshold(20_000, 20, 20)  # fewer collections while ~70 modules import; still bounded later
    try:
        cli()
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    _exit(code or 0)


def _exit(code: int) -> None:
    import atexit
    import os

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (costplan ... | head): nothing left to say
            pass
    os._exit(code)
