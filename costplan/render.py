"""Renderables for estimates: built here, printed only by the CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from costplan.api import Estimate

if TYPE_CHECKING:
    from costplan.compare import Comparison
    from costplan.cram import CramResult
    from costplan.plan import PlanResult
    from costplan.validate import ErrorSummary, Skipped, Validation
    from costplan.verify import CaseResult, Summary
from costplan.units import fmt_bytes, fmt_count, fmt_duration, fmt_flops, fmt_number, fmt_usd

NO_FIT = "no price for what cannot run"


def compact_table(title: str, caption: str | None = None) -> Table:
    """A table that fits 80 columns (pipes, CI logs): no vertical rules, one space of padding."""
    return Table(title=title, title_justify="left", caption=caption, caption_justify="left", box=box.SIMPLE_HEAD,
                 collapse_padding=True, pad_edge=False)


def add_columns(table: Table, names: list[str], left: tuple[str, ...] = ()) -> None:
    """Columns that wrap (fold) rather than cut a cell to "…" when the terminal is narrow; the left
    ones (names) keep their full width."""
    for name in names:
        table.add_column(name, justify="left" if name in left else "right", overflow="fold",
                         no_wrap=name in left, min_width=len(name) if name in left else None)


def _short(text: str) -> str:
    """``100 M`` as ``100M``: a count or size without its inner space, for narrow columns."""
    return text.replace(" ", "")


def summary_table(est: Estimate, alternative: Estimate | None = None) -> Table:
    title = f"{est.model.name} · {est.method.label} · {est.gpu.name}"
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    mem = est.memory
    fit = _fit_text(est)
    rows: list[tuple[str, Any]] = [
        ("parameters", f"{fmt_count(est.params_total)} total"
         + (f" ({fmt_count(est.params_active)} active)" if est.params_active != est.params_total else "")
         + (f", {fmt_count(est.params_trainable)} trainable "
            f"({100 * est.params_trainable / est.params_total:.3g}%)" if est.method.training else "")),
        ("FLOPs per token", fmt_flops(est.flops.per_token)
         + ("" if est.method.training else " (generated token, prefill included)")),
        ("FLOPs total", fmt_flops(est.flops_total)),
        ("peak memory / GPU", f"{fmt_bytes(mem.peak_bytes)} tensors, {fmt_bytes(mem.reserved_bytes)} "
         f"reserved, {fmt_bytes(mem.device_bytes)} with context"),
        ("fits?", fit),
        ("GPUs", f"{est.gpus} x {est.gpu.key}" + (f" ({_layout(est)})" if est.method.training else "")
         + ("" if est.placement.fits else " tried: it does not fit")),
        ("tokens / s", "-" if not est.placement.fits else f"{est.tokens_per_second:,.0f}"
         + (f" (MFU {est.mfu:.0%}" + (f", HFU {est.hfu:.0%}" if est.hfu != est.mfu else "") + ")"
            if est.method.training else "")),
    ]
    if est.latency_seconds is not None:
        rows.append(("latency / request", f"{fmt_duration(est.latency_seconds)} "
                     f"(first token {fmt_duration(est.time_to_first_token_seconds or 0.0)})"))
    low, high = est.wall_seconds_range
    fits_now = est.placement.fits
    rows += [
        ("wall time", f"{fmt_duration(est.wall_seconds)} (range {fmt_duration(low)} to {fmt_duration(high)})"
         if fits_now else "- (it does not fit)"),
        ("GPU-hours", fmt_number(est.gpu_hours) if fits_now else "-"),
        ("cost", f"none: it does not fit ({NO_FIT})" if not fits_now else "no price" if est.cost_usd is None else
         f"{fmt_usd(est.cost_usd)} (range {fmt_usd(est.cost_usd_range[0])} to {fmt_usd(est.cost_usd_range[1])})"
         if est.cost_usd_range else fmt_usd(est.cost_usd)),
    ]
    if not fits_now:
        from costplan.alternatives import describe

        rows.append(("would fit", f"{describe(alternative)} (the cheapest GPU type that holds it)"
                     if alternative is not None else "on none of the GPU types: a frugal method (qlora), a shorter "
                     "--seq-len or a smaller --micro-batch"))
    if est.method.training and est.gpus > 1:
        rows.append(("scaling efficiency", f"{est.scaling_efficiency:.1%}"))
    if est.cost_usd_per_million_tokens is not None:
        rows.append(("$ / 1M tokens", fmt_usd(est.cost_usd_per_million_tokens)))
    if fits_now:
        rows.append(("energy", "unknown (no board power listed for the GPU)" if est.energy_kwh is None or
                     est.co2_kg is None else f"{fmt_number(est.energy_kwh)} kWh, {fmt_number(est.co2_kg)} kg CO2"))
    if est.serve is not None and est.serve.cost_usd is not None:
        rows.append(("serving", f"{fmt_usd(est.serve.cost_usd)} for {fmt_count(est.serve.tokens)} tokens "
                     f"({fmt_usd(est.serve.cost_usd_per_million_tokens or 0.0)} / 1M)"))
        rows.append(("training + serving", fmt_usd(est.total_cost_usd or 0.0)))
    for name, value in rows:
        table.add_row(name, value)
    if est.maximum:
        for key, value in est.maximum.items():
            table.add_row(f"largest {key.replace('_', ' ')}",
                          f"{value:,} (fits the GPU with what is pinned; the rest chosen for it)")
    if not est.placement.fits:
        table.add_row("problem", Text(est.placement.reason, style="red"))
    if est.fit is not None and est.fit.suggestion:
        table.add_row("suggestion", Text(est.fit.suggestion, style="yellow"))
    return table


def _fit_text(est: Estimate) -> Text:
    fit = est.fit
    if fit is None:
        return Text("yes", style="green") if est.placement.fits else Text("NO", style="bold red")
    spare = fmt_bytes(abs(fit.headroom_bytes))
    if fit.verdict == "fits":
        return Text(f"yes, {spare} to spare", style="green")
    if fit.verdict == "tight":
        return Text(f"TIGHT: {spare} to spare", style="bold yellow")
    return Text(f"NO: {spare} short", style="bold red")


def savings_table(est: Estimate) -> Table | None:
    """What each switch that is off would save per GPU."""
    if est.fit is None or not est.fit.savings:
        return None
    table = Table(title="what each switch would save per GPU (same layout)", title_justify="left")
    table.add_column("switch")
    table.add_column("saves", justify="right")
    for name, saved in sorted(est.fit.savings.items(), key=lambda kv: -kv[1]):
        table.add_row(name, fmt_bytes(saved) if saved > 0 else Text("nothing", style="dim"))
    return table


def _layout(est: Estimate) -> str:
    layout = est.placement.layout
    parts = []
    if layout.tp > 1 or layout.pp > 1:
        parts.append(f"TP {layout.tp} x PP {layout.pp} x DP {layout.dp}")
    if layout.dp > 1:
        parts.append(f"ZeRO-{layout.zero}")
    parts.append(f"micro-batch {layout.micro_batch}")
    if layout.grad_accum > 1:
        parts.append(f"x{layout.grad_accum} accumulation")
    if layout.grad_ckpt:
        parts.append("checkpointing")
    return ", ".join(parts)


def memory_table(est: Estimate) -> Table:
    mem = est.memory
    table = Table(title=f"memory per GPU at the {mem.peak_phase.label}", title_justify="left")
    table.add_column("term")
    table.add_column("bytes", justify="right")
    table.add_column("share", justify="right")
    for term, value in sorted(mem.terms.items(), key=lambda kv: -kv[1]):
        table.add_row(term.label, fmt_bytes(value), f"{100 * value / mem.peak_bytes:.1f}%")
    table.add_row("allocator slack", fmt_bytes(mem.reserved_bytes - mem.peak_bytes), "", style="dim")
    table.add_row("CUDA context", fmt_bytes(mem.device_bytes - mem.reserved_bytes), "", style="dim")
    table.add_row("total on device", fmt_bytes(mem.device_bytes), "", style="bold")
    if mem.managed_bytes:
        table.add_row("paged optimizer states (managed)", fmt_bytes(mem.managed_bytes), "", style="dim")
    if mem.host_bytes:
        table.add_row("host memory (offloaded)", fmt_bytes(mem.host_bytes), "", style="dim")
    return table


def flops_table(est: Estimate) -> Table:
    if est.inference is not None:
        return _inference_flops_table(est)
    table = Table(title="FLOPs per data token", title_justify="left")
    table.add_column("part", min_width=11)  # "projections", the longest word of a part's label
    for column in ("forward", "backward dX", "backward dW", "recompute", "total"):
        table.add_column(column, justify="right", max_width=10)  # "99.9 GFLOP"; the headers wrap
    for t in est.flops.terms:
        table.add_row(t.part.label, *(fmt_flops(v) if v else "-" for v in
                                      (t.forward, t.backward_input, t.backward_weight, t.recompute, t.total)))
    table.add_row("total", fmt_flops(est.flops.forward), fmt_flops(est.flops.column("backward_input")),
                  fmt_flops(est.flops.column("backward_weight")), fmt_flops(est.flops.recompute),
                  fmt_flops(est.flops.per_token), style="bold")
    return table


def _inference_flops_table(est: Estimate) -> Table:
    fl = est.inference
    assert fl is not None
    work = est.workload
    table = Table(title=f"FLOPs per request: prefill of {work.prompt_len} prompt tokens, then "
                        f"{work.gen_len - 1} decode steps", title_justify="left")
    for column in ("stage", "part", "per token", "per request"):
        table.add_column(column, justify="left" if column in ("stage", "part") else "right")
    for stage, part, tokens in (("prefill", fl.prefill, work.prompt_len), ("decode", fl.decode, work.gen_len - 1)):
        for t in part.terms:
            table.add_row(stage, t.part.label, fmt_flops(t.total), fmt_flops(t.total * tokens))
    table.add_row("total", "", fmt_flops(est.flops.per_token) + " per generated token",
                  fmt_flops(fl.prefill.per_token * work.prompt_len + fl.decode.per_token * (work.gen_len - 1)),
                  style="bold")
    return table


def assumptions_text(est: Estimate) -> Text:
    text = Text("assumptions\n", style="bold")
    for line in est.assumptions:
        text.append(f"  - {line}\n")
    return text


def estimate_view(est: Estimate, detail: bool = True, alternative: Estimate | None = None) -> Group:
    parts: list[Any] = [summary_table(est, alternative)]
    if detail:
        parts += [memory_table(est), flops_table(est)]
        savings = savings_table(est)
        if savings is not None:
            parts.append(savings)
    parts.append(assumptions_text(est))
    return Group(*parts)


def models_table(rows: list[dict[str, Any]]) -> Table:
    aliases = "; ".join(f"{row['key']}: {row['aliases']}" for row in rows if row["aliases"])
    table = Table(title="model presets (tables/models.csv)", title_justify="left",
                  caption=f"aliases - {aliases}", caption_justify="left")
    # At 80 columns the key and family fold rather than truncate the numbers; the context is in
    # thousands of tokens where it is a whole number of them (131072 -> 128k; exact in --json/--csv).
    table.add_column("key", overflow="fold", min_width=14)
    table.add_column("family", overflow="fold", max_width=9)
    for column in ("params", "L", "hidden", "heads", "vocab", "ctx"):
        table.add_column(column, justify="left" if column == "heads" else "right", no_wrap=True)
    for row in rows:
        context = row["context"]
        ctx = f"{context // 1024}k" if context >= 1024 and context % 1024 == 0 else str(context)
        table.add_row(row["key"], row["family"], fmt_count(row["params"]).replace(" ", ""), str(row["layers"]),
                      str(row["hidden"]), row["heads"], str(row["vocab"]), ctx)
    return table


def gpus_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="GPUs (tables/gpus.csv; dense peak TFLOPS)", title_justify="left")
    columns = {"key": "key", "memory_gib": "GiB", "bandwidth_gbps": "GB/s", "bf16_tflops": "bf16",
               "fp8_tflops": "fp8", "fp32_tflops": "fp32", "tdp_watts": "W", "usd_per_gpu_hour": "$/GPU-h"}
    for name in columns.values():
        table.add_column(name, justify="left" if name == "key" else "right", no_wrap=True)
    for row in rows:
        table.add_row(*("-" if row[c] is None else row[c] if c == "key" else fmt_number(row[c], 4) for c in columns))
    return table


def prices_table(rows: list[dict[str, Any]]) -> Table:
    # At 80 columns the names fold and the dates show their month, so no price is ever cut.
    table = Table(title="rental offers (tables/prices.csv; $ per GPU-hour)", title_justify="left",
                  caption="GPUs: per instance; * the provider sells multi-node clusters of it (a fast network "
                          "between nodes). As of: the month the price was read; days and sources in --json/--csv",
                  caption_justify="left")
    table.add_column("gpu", overflow="fold", min_width=9)
    table.add_column("provider", overflow="fold", max_width=12)
    table.add_column("instance", overflow="fold", min_width=8)
    for column in ("GPUs", "on-demand", "spot", "as of"):
        table.add_column(column, justify="left" if column == "as of" else "right", no_wrap=True)

    def usd(value: float | None) -> str:
        return "-" if value is None else f"{value:,.3f}"

    for row in rows:
        table.add_row(row["gpu"], row["provider"], row["instance"],
                      f"{row['gpus_per_instance']}{'*' if row['cluster'] else ''}",
                      usd(row["usd_per_gpu_hour"]), usd(row["usd_per_gpu_hour_spot"]), str(row["as_of"])[:7])
    if not rows:
        table.add_row("(none listed)", *[""] * 7)
    return table


def tokens_view(count: Any, grad_accum: int = 1) -> Group:
    """``costplan tokens``: the files, the totals with padding against packing, then the padding of
    micro-batches padded to their longest, at random and grouped by length."""
    files = Table(title="dataset files", title_justify="left")
    for column in ("file", "format", "sequences", "tokens", "text"):
        files.add_column(column, justify="left" if column in ("file", "format") else "right")
    for f in count.files:
        files.add_row(f.path, f.format, f"{f.sequences:,}", f"{f.tokens:,}", fmt_bytes(f.bytes))
    total = Table(title=f"tokens ({'counted' if count.exact else 'estimated'}) and rows at sequence length "
                        f"{count.seq_len}", title_justify="left", show_header=False)
    total.add_column("what", style="bold")
    total.add_column("value")
    error = "" if count.exact else f" (±{count.error:.0%}: estimate)"
    total.add_row("tokens", f"{count.tokens:,}{error}")
    total.add_row("sequences", f"{count.sequences:,} (longest {count.longest:,} tokens, mean "
                               f"{count.tokens / count.sequences:,.0f})")
    total.add_row("padded", f"{count.sequences:,} rows x {count.seq_len} = {count.padded_positions:,} positions; "
                            f"{count.padding_waste:.1%} padding"
                            + (f"; {count.truncated:,} sequence(s) truncated, "
                               f"{count.tokens - count.kept_when_padded:,} tokens lost" if count.truncated else ""))
    total.add_row("packed", f"{count.packed_rows:,} rows; {count.packing_waste:.1%} padding (the last row)")
    total.add_row("counted with", count.counted_with)
    padding = Table(title=f"each micro-batch padded to its longest sequence (--padding longest / grouped, "
                          f"{grad_accum} accumulation step(s))", title_justify="left",
                    caption="longest: micro-batches drawn at random (the stacks' collators); grouped: cut from "
                            "length-sorted megabatches (the Trainer's group_by_length)", caption_justify="left")
    for column in ("micro-batch", "longest: positions", "padding", "grouped: positions", "padding "):
        padding.add_column(column, justify="right")
    for at in count.micro_batch_padding(grad_accum):
        padding.add_row(str(at["micro_batch"]), f"{at['longest_positions']:,.0f}", f"{at['longest_padding']:.1%}",
                        f"{at['grouped_positions']:,.0f}", f"{at['grouped_padding']:.1%}")
    return Group(files, total, padding)


def _error_text(error: float, tolerance: float) -> Text:
    return Text(f"{error:+.2%}", style="green" if abs(error) <= tolerance else "bold red")


def verify_case_table(result: CaseResult) -> Table:
    from costplan.verify import FLOPS_TOLERANCE, PEAK_MEDIAN_TOLERANCE

    table = Table(title=f"verify {result.case.label}, length {result.length}: analytic vs traced",
                  title_justify="left", caption=f"traced peak at {result.peak_at}; analytic peak at the "
                  f"{result.analytic_phase}" + "".join(f"; {n}" for n in result.notes), caption_justify="left")
    for column in ("quantity", "analytic", "traced", "error"):
        table.add_column(column, justify="left" if column == "quantity" else "right")
    for check in result.checks:
        unit = fmt_count if check.quantity.startswith("params") else (
            fmt_flops if check.quantity.startswith("flops") else fmt_bytes)
        tolerance = 0.0 if check.quantity.startswith("params") else (
            FLOPS_TOLERANCE if check.quantity.startswith("flops") else PEAK_MEDIAN_TOLERANCE)
        error = _error_text(check.error, tolerance) if check.traced or check.analytic else Text("-")
        table.add_row(check.quantity, unit(check.analytic), unit(check.traced), error)
    return table


def verify_matrix_table(results: list[CaseResult], summary: Summary) -> Table:
    from costplan.verify import FLOPS_TOLERANCE, PEAK_WORST_TOLERANCE

    verdict = "PASS" if summary.passed else "FAIL"
    table = Table(title="verification: analytic vs traced (meta device, GPU kernels)", title_justify="left",
                  caption=f"{verdict}: {summary.cases} cases; parameters exact in {summary.params_exact}; "
                  f"FLOPs worst {summary.flops_worst:.2%}; peak memory median {summary.peak_median:.2%}, "
                  f"worst {summary.peak_worst:.2%} ({summary.worst_case})", caption_justify="left")
    for column in ("case", "len", "params", "FLOPs", "peak traced", "peak", "largest term"):
        table.add_column(column, justify="left" if column in ("case", "largest term") else "right",
                         no_wrap=column == "case")
    for r in results:
        table.add_row(r.case.label, str(r.length), "exact" if r.params_exact else Text("MISMATCH", style="red"),
                      _error_text(r.flops_error, FLOPS_TOLERANCE), fmt_bytes(r.get("memory peak").traced),
                      _error_text(r.peak_error, PEAK_WORST_TOLERANCE), r.largest_term)
    return table


def compare_table(result: Comparison, wide: bool = False) -> Group:
    """Every approach in 80 columns (``wide``: energy and the cost range too). A row that does not fit
    gets no GPU count, time or price, and a note naming the cheapest GPU type that holds it."""
    from costplan.alternatives import describe

    first = result.estimates[0]
    table = compact_table(f"{first.model.name} on {first.gpu.name}: every approach",
                          "trains: trainable parameters; x min: cost over the cheapest row that fits"
                          + (" (training + serving)" if result.serving else ""))
    serving = result.serving
    columns = ["approach ", "trains"] + (["tokens"] if wide else []) + ["mem/GPU", "GPUs", "time", "GPU-h", "cost"]
    columns += ["+serving"] if serving else []
    columns += ["x min"]
    columns += ["kWh", "cost range"] if wide else []
    add_columns(table, columns, left=("approach ",))
    notes = list(result.notes)
    for e, row in zip(result.estimates, result.rows(), strict=True):
        fits = e.placement.fits
        cells = [e.method.key, _short(fmt_count(e.params_trainable)) if e.method.training else "-",
                 *([_short(fmt_count(row["tokens"]))] if wide else []), fmt_bytes(e.memory.device_bytes)]
        if fits:
            cells += [str(e.gpus), fmt_duration(e.wall_seconds), fmt_number(e.gpu_hours),
                      "no price" if e.cost_usd is None else fmt_usd(e.cost_usd)]
        else:
            cells += ["no fit", "-", "-", "-"]
        if serving:
            cells.append("-" if e.total_cost_usd is None else fmt_usd(e.total_cost_usd))
        cells.append("-" if row["relative_cost"] is None else f"{fmt_number(row['relative_cost'])}x")
        if wide:
            low_high = e.cost_usd_range
            cells += [fmt_number(e.energy_kwh) if fits and e.energy_kwh is not None else "-",
                      f"{fmt_usd(low_high[0])} to {fmt_usd(low_high[1])}" if low_high else "-"]
        table.add_row(*cells, style=None if fits else "red")
        if not fits:
            alt = result.alternative(e)
            notes.append(f"{e.method.key} does not fit on {e.gpu.key} ({NO_FIT}): {e.placement.reason}; "
                         + (f"cheapest that fits: {describe(alt)}" if alt else "it fits on none of the GPU types"))
    common = Text("assumptions shared by every row (each row's own: --json)\n", style="bold")
    for line in result.common_assumptions:
        common.append(f"  - {line}\n")
    return Group(table, Text("\n".join(f"  - {n}" for n in notes)), common)


def plan_table(result: PlanResult, rows: int = 15, wide: bool = False) -> Group:
    """The Pareto front thinned to ``rows`` evenly spread points (cheapest first, fastest last), in
    80 columns (``wide``: precision, ZeRO, scaling and the offer as separate columns)."""
    front = result.shown(rows)
    shown = "" if len(front) == len(result.pareto) else f", {len(front)} shown"
    table = compact_table(f"Pareto front: {len(result.pareto)} of {result.feasible:,} feasible configurations "
                          f"({result.fitting:,} fit, {result.evaluated:,} evaluated{shown})",
                          "first row: the cheapest; last row: the fastest; mb: micro-batch, Z: ZeRO stage, "
                          "ckpt: activation checkpointing")
    columns = ["method", "GPUs", "layout", "mem/GPU", "time", "cost"]
    if wide:
        columns += ["precision", "scaling", "offer"]
    add_columns(table, columns, left=("method", "GPUs", "layout"))
    for c in front:
        layout = [f"mb {c.micro_batch}"]
        if c.gpus // (c.tp * c.pp) > 1:
            layout.append(f"Z{c.zero}")
        if c.tp > 1 or c.pp > 1:
            layout.append(f"TP{c.tp} PP{c.pp}")
        if c.grad_ckpt:
            layout.append("ckpt")
        if c.precision != "bf16" and not wide:
            layout.append(c.precision)
        cells = [c.method, f"{c.gpus:,} x {c.gpu}", " ".join(layout), fmt_bytes(c.device_bytes),
                 fmt_duration(c.wall_seconds), fmt_usd(c.cost_usd)]
        if wide:
            cells += [c.precision, f"{c.scaling_efficiency:.0%}",
                      f"{c.provider} {c.instance} ${c.usd_per_gpu_hour:.2f}/GPU-h" if c.provider else "-"]
        table.add_row(*cells)
    return Group(table, Text("\n".join(f"  - {n}" for n in result.notes)))


def cram_view(result: CramResult, wide: bool = False) -> Group:
    """From scratch, Cramming's encoder question, and (``--model``) each approach, in 80 columns."""
    from costplan.cram import CRAMMING

    seconds = result.hours * 3600
    hours = f"{result.hours:g} h"
    head = Text(f"{hours} on one {result.gpu}: {fmt_flops(result.compute_flops)} of compute; "
                f"compute-optimal: {fmt_count(result.optimal_params)} parameters on "
                f"{fmt_count(result.optimal_tokens)} tokens", style="bold")
    table = compact_table("from scratch (Llama-shaped)", "h to 20/param: hours to train on 20 tokens per parameter "
                          "(ok: within the budget)")
    add_columns(table, ["model", "params", "fits", "mem/GPU", "tokens/s", f"in {hours}", "h to 20/param"],
                left=("model",))
    for o in result.options:
        style = "bold green" if o is result.largest_fitting else (None if o.fits else "dim")
        fits = ("yes" + (" ckpt" if o.grad_ckpt else "")) if o.fits else "no"
        table.add_row(o.model.name, _short(fmt_count(o.params)), fits, fmt_bytes(o.device_bytes),
                      f"{o.tokens_per_second:,.0f}" if o.fits else "-",
                      _short(fmt_count(o.tokens_in_budget)) if o.fits else "-",
                      (fmt_number(o.hours_for_optimal) + (" ok" if o.finishes else "")) if o.fits else "-",
                      style=style)
    parts: list[Any] = [head, table]
    if result.encoder:
        encoder = compact_table(
            f"encoder from scratch (Cramming's question): bert-base, masked LM, {CRAMMING.masking:.0%} masked, "
            f"sequence {CRAMMING.seq_len}, one {result.gpu} for {hours}",
            f"steps: optimizer steps of the paper's batch ({CRAMMING.batch_sequences:,} sequences, "
            f"{fmt_count(CRAMMING.batch_tokens)} tokens). Published (Geiping & Goldstein 2022, arXiv:2212.14034): "
            f"{CRAMMING.model}; 1 x {CRAMMING.gpu}, {CRAMMING.hours:g} h, {CRAMMING.precision}; {CRAMMING.outcome}; "
            "tokens processed not stated.")
        add_columns(encoder, ["MLM head on", "fits", "mem/GPU", "tokens/s", "MFU", f"in {hours}", "steps"],
                    left=("MLM head on",))
        for run in result.encoder:
            e = run.estimate
            label = "masked only" if e.method.predicted_fraction < 1 else "every position"
            encoder.add_row(label, "yes" if run.fits else "no", fmt_bytes(e.memory.device_bytes),
                            f"{e.tokens_per_second:,.0f}" if run.fits else "-", f"{e.mfu:.0%}" if run.fits else "-",
                            _short(fmt_count(run.tokens_in_budget)) if run.fits else "-",
                            fmt_number(run.cramming_steps) if run.fits else "-")
        parts.append(encoder)
    if result.approaches:
        model = result.approaches[0].model.name
        adapt = compact_table(f"{model}: each approach on one {result.gpu} for {hours}, sequence "
                              f"{result.model_seq_len}")
        epochs = f"epochs of {_short(fmt_count(result.dataset_tokens))}"
        add_columns(adapt, ["approach", "fits", "mem/GPU", "tokens/s", "tokens", epochs], left=("approach",))
        for e in result.approaches:
            fits = e.placement.fits
            tokens = e.tokens_per_second * seconds if fits else 0.0
            adapt.add_row(e.method.key, ("yes" + (" ckpt" if e.workload.grad_ckpt else "")) if fits else "no",
                          fmt_bytes(e.memory.device_bytes), f"{e.tokens_per_second:,.0f}" if fits else "-",
                          _short(fmt_count(tokens)) if fits else "-",
                          fmt_number(tokens / result.dataset_tokens) if fits else "-", style=None if fits else "dim")
        parts.append(adapt)
    parts.append(Text("\n".join(f"  - {n}" for n in result.notes)))
    return Group(*parts)


def calibration_table(profile: dict[str, Any]) -> Table:
    from costplan.profile import measured_matmul_peaks

    device = profile["device"]
    table = Table(title=f"calibration on {device['name']} ({profile['created']}, {profile['precision']})",
                  title_justify="left")
    for column in ("measurement", "value"):
        table.add_column(column, justify="left" if column == "measurement" else "right")
    best = measured_matmul_peaks(profile)
    for dtype, flops in best.items():
        table.add_row(f"best matmul, {dtype}", f"{fmt_flops(flops)}/s")
    if profile.get("copy_bandwidth_bytes_per_second"):
        table.add_row("copy bandwidth", f"{profile['copy_bandwidth_bytes_per_second'] / 1e9:,.3g} GB/s")
    attention = profile.get("attention")
    if attention and attention.get("flops_per_second"):
        table.add_row(f"attention fwd+bwd, seq {attention.get('seq_len', '?')}",
                      f"{fmt_flops(attention['flops_per_second'])}/s")
    for method, entry in profile["methods"].items():
        if not entry.get("achieved_flops_per_second"):
            continue
        extra = ""
        if entry.get("max_allocated"):
            extra = (f", allocated {fmt_bytes(entry['max_allocated'])} vs analytic {fmt_bytes(entry['analytic_peak'])}"
                     f", reserved {fmt_bytes(entry['max_reserved'])}")
        spread = entry.get("spread")
        if spread:
            extra += f", runs {fmt_duration(spread['min'])} to {fmt_duration(spread['max'])}"
        table.add_row(f"training step, {method}",
                      f"{fmt_flops(entry['achieved_flops_per_second'])}/s{extra}")
    for method, reason in profile.get("skipped_methods", {}).items():
        table.add_row(f"training step, {method}", f"skipped: {reason}")
    return table


def validation_view(results: list[Validation], summary: list[ErrorSummary], skipped: list[Skipped],
                    rows: bool = False, stacks: list[ErrorSummary] | tuple = ()) -> Group:
    units = {"gpu_hours": lambda v: f"{fmt_number(v, 4)} GPU-h",
             "tokens_per_second_per_gpu": lambda v: f"{fmt_number(v, 4)} tok/s/GPU",
             "tokens_per_second": lambda v: f"{fmt_number(v, 4)} tok/s",
             "memory_gib": lambda v: f"{fmt_number(v)} GiB", "ran": lambda v: "OOM" if v else "ran",
             "max_seq_len": lambda v: f"{fmt_number(v, 4)} tokens"}
    parts: list[Any] = []
    if rows:
        table = Table(title="published measurements: predicted (defaults + the source's settings) vs reported",
                      title_justify="left")
        for column in ("kind", "split", "run", "predicted", "reported", "error", "naive"):
            table.add_column(column, justify="right" if column in ("predicted", "reported", "error", "naive")
                             else "left")
        for r in results:
            unit = units[r.quantity]
            naive = "-" if r.naive_error is None else f"{r.naive_error:+.0%}"
            table.add_row(r.kind, r.split, r.name, unit(r.predicted), unit(r.reported),
                          _error_text(r.error, 0.15), naive)
        parts.append(table)
    totals = Table(title="error by kind: costplan's defaults against the naive rule on the same rows "
                         "(fit: rows the constants were fitted on; holdout: the rest)", title_justify="left")
    for column in ("kind", "split", "rows", "median |error|", "worst", "naive median", "naive worst"):
        # the kind's words wrap at 80 columns ("finetune throughput"), none of them cut
        totals.add_column(column, justify="left" if column in ("kind", "split") else "right",
                          min_width=10 if column == "kind" else None)
    for s in summary:
        label = "share wrong" if s.kind == "fit" else ""
        naive = "-" if s.naive_median_abs is None else f"{s.naive_median_abs:.1%}"
        naive_worst = "-" if s.naive_worst is None else f"{s.naive_worst:+.1%}"
        style = None if s.beats_naive in (None, True) else "red"
        totals.add_row(s.kind.replace("_", " ") + (f" ({label})" if label else ""), s.split, str(s.rows),
                       f"{s.median_abs:.1%}",
                       f"{s.worst:+.1%}", naive, naive_worst, style=style)
    parts.append(totals)
    if stacks:
        by = Table(title="fine-tuning memory, fit verdicts and longest contexts by the stack each source ran",
                   title_justify="left")
        for column in ("kind", "stack", "rows", "median |error|", "naive median"):
            by.add_column(column, justify="left" if column in ("kind", "stack") else "right")
        for s in stacks:
            naive = "-" if s.naive_median_abs is None else f"{s.naive_median_abs:.1%}"
            by.add_row(s.kind.replace("_", " ") + (" (share wrong)" if s.kind == "fit" else ""), s.split, str(s.rows),
                       f"{s.median_abs:.1%}", naive, style=None if s.beats_naive in (None, True) else "red")
        parts.append(by)
    parts.append(Text("naive rules: GPU-hours and tokens/s from 6 N D / (0.4 x dense peak); decode from the bandwidth "
                      "roofline (bandwidth over the weights' bytes); memory 16 B/param for full fine-tuning, the "
                      "weights + 20% for adapters; fit verdicts from that memory; the longest context from what that "
                      "memory leaves at 34 bytes per token, hidden unit and layer"))
    if skipped:
        parts.append(Text(f"skipped ({len(skipped)}):\n" + "\n".join(f"  - {s.kind}: {s.name}: {s.reason}"
                                                                       for s in skipped)))
    return Group(*parts)
