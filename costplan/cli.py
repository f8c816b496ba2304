"""The ``costplan`` command line: a thin click layer over the library.

Only this module reads arguments and prints. Mistakes become one line on stderr and exit code 2.
Layout options left out are "auto": chosen as a practitioner would (see ``costplan.layout``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import click

from costplan.errors import CostplanError
from costplan.units import parse_count


class _OneLineErrors(click.Group):
    """Every user error, click's own included, as one ``Error:`` line and exit code 2."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            click.echo(f"Error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(2)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


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


MAX_SEQ = 10_000_000
MAX_BATCH = 1_000_000
MAX_GPUS = 1_000_000


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except (CostplanError, ValueError) as exc:
        raise click.ClickException(str(exc).rstrip(".") + ".") from None
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


METHOD_CHOICE = click.Choice(["inference", "prompt", "prefix", "lora", "qlora", "full", "cpt", "pretrain"],
                             case_sensitive=False)
PRECISION_CHOICE = click.Choice(["fp32", "bf16", "fp16", "fp8"])


def _options(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def apply(fn: Any) -> Any:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn
    return apply


MODEL = click.option("--model", "-m", default="7b", show_default=True,
                     help="Preset name or alias (see `costplan models`), or a Hugging Face config.json / folder.")
PRICES = _options(
    click.option("--provider", help="Price from this provider [default: the cheapest offer that rents the GPUs]."),
    click.option("--spot", is_flag=True, help="Use spot/preemptible prices."),
    click.option("--price", type=_Number(0, 10_000), help="Override the price in $/GPU-hour (0 for owned GPUs)."),
)
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
    click.option("--framework", type=click.Choice(["hf-trainer", "megatron"]), show_default="auto",
                 help="Training stack [auto: Megatron for multi-GPU pretraining and continual pretraining, the "
                      "Hugging Face Trainer otherwise]."),
)


@cli.command()
@MODEL
@click.option("--method", default="lora", show_default=True, type=METHOD_CHOICE, help="Approach to plan.")
@click.option("--gpu", "-g", default="h100", show_default=True, help="GPU type (see `costplan gpus`).")
@click.option("--tokens", "-t", type=_Count(), help="Training tokens per epoch (100M, 2.5B, 1e9); "
              "for inference, generated tokens to price. Default depends on the method.")
@click.option("--epochs", type=_Number(0, 10_000, low_open=True), default=1.0, show_default=True)
@click.option("--seq-len", type=_ints(MAX_SEQ), help="Training sequence length [default: 2048 or the model's context].")
@LAYOUT
@click.option("--precision", type=PRECISION_CHOICE, default="bf16", show_default=True)
@click.option("--optimizer", default="adamw", show_default=True,
              help="adamw, adamw-fused, adamw-8bit, paged-adamw, paged-adamw-8bit, sgd, sgd-momentum, adafactor.")
@click.option("--attention", type=click.Choice(["flash", "eager"]), default="flash", show_default=True)
@click.option("--runtime", type=click.Choice(["eager", "compiled"]), show_default="auto",
              help="Kernel dispatch: eager PyTorch, or compiled (CUDA graphs / torch.compile, as vLLM, TensorRT-LLM "
                   "and gpt-fast run) [auto: compiled for inference, the stack's own for training].")
@click.option("--lora-rank", type=_ints(65_536), default=8, show_default=True)
@click.option("--lora-targets", default="q,v", show_default=True,
              help="Comma list of q,k,v,o,gate,up,down, or attn, mlp, all-linear.")
@click.option("--lora-dropout", type=_Number(0, 0.99), default=0.0, show_default=True)
@click.option("--virtual-tokens", type=_ints(100_000), default=20, show_default=True,
              help="Prompt/prefix tuning: trainable virtual tokens.")
@click.option("--prompt-len", type=_ints(MAX_SEQ), default=512, show_default=True, help="Inference: prompt tokens.")
@click.option("--gen-len", type=_ints(MAX_SEQ), default=256, show_default=True, help="Inference: generated tokens.")
@click.option("--source-len", type=_ints(MAX_SEQ), help="Encoder-decoder models (t5): source tokens per example, "
              "read by the encoder [default: 512].")
@click.option("--target-len", type=_ints(MAX_SEQ), help="Encoder-decoder models (t5): target tokens per example, "
              "the decoder's (trained on, or generated) [default: 128].")
@PRICES
@click.option("--pue", type=_Number(1.0, 3.0), help="Data-centre PUE [default: industry average, tables/energy.csv].")
@click.option("--grid", help="Grid carbon intensity: world, us, eu, france, or kg CO2 per kWh [default: world].")
@click.option("--serve-tokens", type=_Count(), help="Also price serving this many generated tokens on the result.")
@click.option("--serve-batch", type=_ints(MAX_BATCH), default=32, show_default=True,
              help="Concurrent requests when serving.")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False),
              help="Calibration profile [default: the saved one for this GPU, if any].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object in base units.")
@click.option("--brief", is_flag=True, help="Only the summary and assumptions.")
def estimate(as_json: bool, brief: bool, profile_path: str | None, **options: Any) -> None:
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
    """
    from costplan.api import estimate as run_estimate

    if profile_path:
        from costplan.profile import load_profile

        options["profile"] = _run(load_profile, profile_path)
    if options.get("global_batch_tokens") is not None and options.get("global_batch") is not None:
        raise click.UsageError("give --global-batch or --global-batch-tokens, not both.")
    result = _run(run_estimate, **options)
    if as_json:  # without rich: scripts only pay for the estimate
        from costplan.serialize import dumps

        click.echo(dumps(result.to_dict()))
        return
    from rich.console import Console

    from costplan.render import estimate_view

    Console().print(estimate_view(result, detail=not brief))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models(as_json: bool) -> None:
    """List the model presets with their architecture numbers."""
    from costplan.model import count_params, preset, preset_names
    from costplan.tables import read_table

    aliases = {row["key"]: row["aliases"].replace(";", ", ") for row in read_table("models")}
    rows = []
    for key in preset_names():
        spec = _run(preset, key)
        rows.append({"key": key, "aliases": aliases[key], "name": spec.name, "family": spec.family,
                     "params": count_params(spec).total, "layers": spec.num_layers,
                     "hidden": spec.hidden_size, "heads": f"{spec.num_heads}/{spec.num_kv_heads}",
                     "vocab": spec.vocab_size, "context": spec.max_positions})
    _emit(rows, as_json, "models_table")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def gpus(as_json: bool) -> None:
    """List the GPU table: memory, bandwidth, dense peaks, power and the cheapest listed price."""
    from costplan.hardware import gpu, gpu_names, price
    from costplan.units import GIB

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
    _emit(rows, as_json, "gpus_table")


@cli.command()
@click.option("--model", "-m", default="7b", show_default=True, help="Preset or config.json to trace.")
@click.option("--method", default="lora", show_default=True, type=METHOD_CHOICE)
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="bf16", show_default=True)
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
def verify(model: str, method: str, precision: str, grad_ckpt: bool, attention: str, seq_len: int | None,
           source_len: int | None, micro_batch: int, run_all: bool, full: bool, out: str | None) -> None:
    """Trace the real model code (transformers + peft, meta device: no weights, no GPU) and put
    the analytic estimate beside it: parameters, FLOPs and peak memory by term.

    \b
    Examples:
      costplan verify --model 7b --method lora --seq-len 2048 --micro-batch 1
      costplan verify --model mixtral --method full --grad-ckpt
      costplan verify --all              # the representative matrix -> tables/verification.csv
      costplan verify --all --full       # every model x method x precision x ckpt x attention
    """
    from pathlib import Path

    missing = [name for name in ("torch", "transformers", "peft") if not _importable(name)]
    if missing:
        raise click.ClickException(
            f"costplan verify needs torch, transformers and peft ({', '.join(missing)} missing): "
            "pip install 'costplan[verify]'.")
    from rich.console import Console

    from costplan import verify as v
    from costplan.render import verify_case_table, verify_matrix_table

    if full and not run_all:
        raise click.UsageError("--full goes with --all.")
    stderr = Console(stderr=True)
    if run_all:
        cases = v.matrix(full=full)
        failed: list[str] = []
        with stderr.status("tracing") as status:
            results = _run(v.run_matrix, cases, lambda c: status.update(f"tracing {c.label}"), failed)
        summary = v.summarize(results)
        Console().print(verify_matrix_table(results, summary))
        for line in failed:
            stderr.print(line, style="red")
        target = Path(out or Path("tables") / "verification.csv")
    else:
        case = v.Case(model=model, method=method.lower(), precision=precision, grad_ckpt=grad_ckpt,
                      attention=attention, seq_len=seq_len, source_len=source_len, micro_batch=micro_batch)
        with stderr.status(f"tracing {case.label}"):
            try:
                results = [_run(v.run_case, case)]
            except v.TraceFailed as exc:
                raise click.ClickException(str(exc)) from None
        summary = v.summarize(results)
        Console().print(verify_case_table(results[0]))
        target = Path(out) if out else None
    if target is not None:
        _run(v.write_csv, results, target)
        stderr.print(f"wrote {target}")
    if not summary.passed or (run_all and failed):
        raise click.exceptions.Exit(1)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


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
@click.option("--json", "as_json", is_flag=True)
def compare(model: str, gpu: str, tokens: float, cpt_tokens: float, eval_tokens: float, seq_len: int | None,
            grad_ckpt: bool | None, precision: str, serve_tokens: float | None, serve_batch: int,
            provider: str | None, spot: bool, price: float | None, as_json: bool) -> None:
    """Every approach side by side: trainable parameters, memory, GPUs, hours, dollars, energy.

    \b
    Examples:
      costplan compare --model 7b --tokens 100M
      costplan compare -m 70b --gpu a100 --serve-tokens 1B
    """
    from costplan.compare import compare as run_compare

    result = _run(run_compare, model, tokens=tokens, cpt_tokens=cpt_tokens, eval_tokens=eval_tokens, gpu=gpu,
                  seq_len=seq_len, grad_ckpt=grad_ckpt, precision=precision, serve_tokens=serve_tokens,
                  serve_batch=serve_batch, provider=provider, spot=spot, price=price)
    if as_json:
        from costplan.serialize import compare_dict, dumps

        click.echo(dumps(compare_dict(result)))
        return
    from rich.console import Console

    from costplan.render import compare_table

    Console().print(compare_table(result))


@cli.command()
@MODEL
@click.option("--method", "methods", default="lora", show_default=True,
              help="One method or a comma list of variants to search (e.g. lora,qlora).")
@click.option("--tokens", "-t", type=_Count(), required=True)
@click.option("--epochs", type=_Number(0, 10_000, low_open=True), default=1.0, show_default=True)
@click.option("--deadline", help="Longest acceptable wall time (48h, 90m, 2d).")
@click.option("--budget", type=_Number(0, 1e12, low_open=True), help="Most dollars to spend.")
@click.option("--gpu", "-g", "gpu_types", help="GPU type or comma list of types [default: every priced GPU].")
@click.option("--max-gpus", type=click.IntRange(1, 16_384), default=1024, show_default=True)
@click.option("--precision", "precisions", default="bf16", show_default=True,
              help="Precision or comma list to search (fp8 only when asked; never for 4-bit bases).")
@click.option("--seq-len", type=_ints(MAX_SEQ))
@click.option("--global-batch", type=_ints(100_000_000), show_default="auto",
              help="Sequences per optimizer step [auto: published practice for the method and size].")
@click.option("--framework", type=click.Choice(["hf-trainer", "megatron"]), show_default="auto")
@PRICES
@click.option("--lora-rank", type=_ints(65_536), default=8, show_default=True)
@click.option("--lora-targets", default="q,v", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def plan(model: str, methods: str, tokens: float, epochs: float, deadline: str | None, budget: float | None,
         gpu_types: str | None, max_gpus: int, precisions: str, seq_len: int | None, global_batch: int | None,
         framework: str | None, provider: str | None, spot: bool, price: float | None, lora_rank: int,
         lora_targets: str, as_json: bool) -> None:
    """Search GPU type x count x layout (micro-batch, checkpointing, ZeRO, TP/PP) x precision for what fits,
    meets the deadline and budget, and show the Pareto front of cost against wall time.

    \b
    Examples:
      costplan plan --model 70b --method lora --tokens 1B --deadline 48h --budget 5000
      costplan plan -m 8b --method lora,qlora --tokens 500M --gpu a100,l40s,rtx-4090
    """
    from costplan.plan import search
    from costplan.units import parse_duration_seconds

    deadline_seconds = _run(parse_duration_seconds, deadline) if deadline else None
    method_list = tuple(m.strip().lower() for m in methods.split(",") if m.strip())
    if not method_list:
        raise click.UsageError("--method is empty.")
    precision_list = tuple(p.strip().lower() for p in precisions.split(",") if p.strip())
    for p in precision_list:
        if p not in ("fp32", "bf16", "fp16", "fp8"):
            raise click.UsageError(f"--precision {p!r} is not one of fp32, bf16, fp16, fp8.")
    result = _run(search, model, method_list, tokens=tokens, epochs=epochs, deadline_seconds=deadline_seconds,
                  budget_usd=budget,
                  gpus=tuple(_run(_gpu_key, g) for g in gpu_types.split(",") if g.strip()) if gpu_types else None,
                  max_gpus=max_gpus, precisions=precision_list, seq_len=seq_len, global_batch=global_batch,
                  framework=framework, provider=provider, spot=spot, price=price, lora_rank=lora_rank,
                  lora_targets=lora_targets)
    from costplan.serialize import plan_dict, plan_why

    if as_json:
        from costplan.serialize import dumps

        click.echo(dumps(plan_dict(result, deadline, budget)))
        return
    if not result.pareto:
        click.echo(plan_why(result, deadline, budget))
        return
    from rich.console import Console

    from costplan.render import plan_table

    Console().print(plan_table(result))


def _gpu_key(name: str) -> str:
    from costplan.hardware import gpu

    return gpu(name.strip()).key


@cli.command()
@click.option("--gpu", "-g", default="h100", show_default=True)
@click.option("--hours", type=_Number(0, 24 * 365, low_open=True), default=24.0, show_default=True)
@click.option("--model", "-m", help="Also check which approaches fit this model on the one GPU.")
@click.option("--dataset-tokens", type=_Count(), default="50M", show_default=True,
              help="Size of the fine-tuning set, to count epochs.")
@click.option("--seq-len", type=_ints(MAX_SEQ), default=2048, show_default=True)
@click.option("--precision", type=PRECISION_CHOICE, default="bf16", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def cram(gpu: str, hours: float, model: str | None, dataset_tokens: float, seq_len: int, precision: str,
         as_json: bool) -> None:
    """How far one GPU goes in a day: compute-optimal model size and tokens, the largest model
    that fits for training, and (with --model) what each approach gets through.

    \b
    Examples:
      costplan cram --gpu h100 --hours 24
      costplan cram --gpu a100 --model 7b --dataset-tokens 50M
    """
    from costplan.cram import cram as run_cram

    result = _run(run_cram, gpu, hours, model=model, dataset_tokens=dataset_tokens, seq_len=seq_len,
                  precision=precision)
    if as_json:
        from costplan.serialize import cram_dict, dumps

        click.echo(dumps(cram_dict(result)))
        return
    from rich.console import Console

    from costplan.render import cram_view

    Console().print(cram_view(result))


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
def calibrate(model: str, quick: bool, precision: str | None, seq_len: int | None, out: str | None,
              collectives: bool) -> None:
    """Measure this machine (matmul curves, bandwidth, attention, a training step per method,
    power) and save a profile that `estimate` then uses instead of the table's constants.

    \b
    Examples:
      costplan calibrate                       # ~1 minute on a GPU
      costplan calibrate --quick --out profile.json
      costplan estimate -m 7b --method lora --profile profile.json
      torchrun --nproc_per_node=2 -m costplan calibrate --collectives --out profile.json
    """
    from pathlib import Path

    from rich.console import Console

    from costplan import calibrate as cal
    from costplan.model import resolve_model

    spec = _run(resolve_model, model)
    stderr = Console(stderr=True)
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

    Console().print(calibration_table(profile))
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
@click.option("--json", "as_json", is_flag=True)
@click.option("--show-skipped", is_flag=True, help="List the rows that could not be predicted, and why.")
def validate(as_json: bool, show_skipped: bool) -> None:
    """Predict the published runs in tables/published_runs.csv with default settings and compare,
    beside the naive rules a user would otherwise apply.

    \b
    Example:
      costplan validate --show-skipped
    """
    from costplan import validate as val

    results, skipped = _run(val.validate)
    summary = val.summarize(results)
    if as_json:
        from costplan.serialize import dumps, validate_dict

        click.echo(dumps(validate_dict(results, summary, skipped)))
        return
    from rich.console import Console

    from costplan.render import validation_view

    Console().print(validation_view(results, summary, skipped if show_skipped else []))


@cli.command()
@MODEL
@click.option("--tokens", "-t", type=_Count(), default="100M", show_default=True)
@click.option("--gpu", "-g", default="h100", show_default=True)
@click.option("--plan-methods", default="lora,qlora", show_default=True, help="Method variants for the plan section.")
@click.option("--deadline", help="Deadline for the plan section (48h, 2d).")
@click.option("--budget", type=_Number(0, 1e12, low_open=True), help="Budget for the plan section.")
@click.option("--out", type=click.Path(file_okay=False), default="report", show_default=True)
def report(model: str, tokens: float, gpu: str, plan_methods: str, deadline: str | None, budget: float | None,
           out: str) -> None:
    """Write report.md and a self-contained report.html (plots embedded) to justify a budget.

    \b
    Example:
      costplan report --model 7b --tokens 100M --out report/
    """
    from pathlib import Path

    from costplan.report import build
    from costplan.units import parse_duration_seconds

    deadline_seconds = _run(parse_duration_seconds, deadline) if deadline else None
    files = _run(build, model, tokens=tokens, gpu=gpu, out=Path(out),
                 plan_methods=tuple(m.strip() for m in plan_methods.split(",") if m.strip()),
                 deadline_seconds=deadline_seconds, budget_usd=budget)
    click.echo(f"wrote {files.markdown}, {files.html} and {files.data}")


def _emit(rows: list[dict[str, Any]], as_json: bool, table: str) -> None:
    if as_json:
        from costplan.serialize import dumps

        click.echo(dumps(rows))
        return
    from rich.console import Console

    from costplan import render

    Console().print(getattr(render, table)(rows))


def main() -> None:
    cli()
