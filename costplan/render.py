"""Renderables for estimates: built here, printed only by the CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
from costplan.units import fmt_bytes, fmt_count, fmt_duration, fmt_flops, fmt_usd


def summary_table(est: Estimate) -> Table:
    title = f"{est.model.name} · {est.method.label} · {est.gpu.name}"
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    mem = est.memory
    fit = Text("yes", style="green") if est.placement.fits else Text("NO", style="bold red")
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
        ("GPUs", f"{est.gpus} x {est.gpu.key}" + (f" ({_layout(est)})" if est.method.training else "")),
        ("tokens / s", f"{est.tokens_per_second:,.0f}"
         + (f" (MFU {est.mfu:.0%}" + (f", HFU {est.hfu:.0%}" if est.hfu != est.mfu else "") + ")"
            if est.method.training else "")),
    ]
    if est.latency_seconds is not None:
        rows.append(("latency / request", f"{fmt_duration(est.latency_seconds)} "
                     f"(first token {fmt_duration(est.time_to_first_token_seconds or 0.0)})"))
    low, high = est.wall_seconds_range
    rows += [
        ("wall time", f"{fmt_duration(est.wall_seconds)} (range {fmt_duration(low)} to {fmt_duration(high)})"),
        ("GPU-hours", f"{est.gpu_hours:,.3g}"),
        ("cost", "no price" if est.cost_usd is None else
         f"{fmt_usd(est.cost_usd)} (range {fmt_usd(est.cost_usd_range[0])} to {fmt_usd(est.cost_usd_range[1])})"
         if est.cost_usd_range else fmt_usd(est.cost_usd)),
    ]
    if est.method.training and est.gpus > 1:
        rows.append(("scaling efficiency", f"{est.scaling_efficiency:.1%}"))
    if est.cost_usd_per_million_tokens is not None:
        rows.append(("$ / 1M tokens", fmt_usd(est.cost_usd_per_million_tokens)))
    rows.append(("energy", f"{est.energy_kwh:,.3g} kWh, {est.co2_kg:,.3g} kg CO2"))
    if est.serve is not None and est.serve.cost_usd is not None:
        rows.append(("serving", f"{fmt_usd(est.serve.cost_usd)} for {fmt_count(est.serve.tokens)} tokens "
                     f"({fmt_usd(est.serve.cost_usd_per_million_tokens or 0.0)} / 1M)"))
        rows.append(("training + serving", fmt_usd(est.total_cost_usd or 0.0)))
    for name, value in rows:
        table.add_row(name, value)
    if not est.placement.fits:
        table.add_row("problem", Text(est.placement.reason, style="red"))
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
    return table


def flops_table(est: Estimate) -> Table:
    if est.inference is not None:
        return _inference_flops_table(est)
    table = Table(title="FLOPs per data token", title_justify="left")
    for column in ("part", "forward", "backward dX", "backward dW", "recompute", "total"):
        table.add_column(column, justify="left" if column == "part" else "right")
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


def estimate_view(est: Estimate, detail: bool = True) -> Group:
    parts: list[Any] = [summary_table(est)]
    if detail:
        parts += [memory_table(est), flops_table(est)]
    parts.append(assumptions_text(est))
    return Group(*parts)


def models_table(rows: list[dict[str, Any]]) -> Table:
    aliases = "; ".join(f"{row['key']}: {row['aliases']}" for row in rows if row["aliases"])
    table = Table(title="model presets (tables/models.csv)", title_justify="left",
                  caption=f"aliases - {aliases}", caption_justify="left")
    numeric = ("params", "layers", "hidden", "vocab", "context")
    for column in ("key", "family", "params", "layers", "hidden", "heads/kv", "vocab", "context"):
        column = {"layers": "L", "hidden": "hidden", "context": "ctx", "heads/kv": "heads/kv"}.get(column, column)
        table.add_column(column, justify="right" if column in (*numeric, "L", "ctx") else "left", no_wrap=True)
    for row in rows:
        table.add_row(row["key"], row["family"], fmt_count(row["params"]).replace(" ", ""), str(row["layers"]),
                      str(row["hidden"]), row["heads"], str(row["vocab"]), str(row["context"]))
    return table


def gpus_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="GPUs (tables/gpus.csv; dense peak TFLOPS)", title_justify="left")
    columns = {"key": "key", "memory_gib": "GiB", "bandwidth_gbps": "GB/s", "bf16_tflops": "bf16",
               "fp8_tflops": "fp8", "fp32_tflops": "fp32", "tdp_watts": "W", "usd_per_gpu_hour": "$/GPU-h"}
    for name in columns.values():
        table.add_column(name, justify="left" if name == "key" else "right", no_wrap=True)
    for row in rows:
        table.add_row(*("-" if row[c] is None else row[c] if c == "key" else f"{row[c]:,.4g}" for c in columns))
    return table


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


def compare_table(result: Comparison) -> Group:
    first = result.estimates[0]
    table = Table(title=f"{first.model.name} on {first.gpu.name}: every approach", title_justify="left")
    columns = ("approach", "trainable", "tokens", "memory/GPU", "GPUs", "wall time", "GPU-h", "cost", "x cheapest",
               "kWh")
    for column in columns:
        table.add_column(column, justify="left" if column == "approach" else "right", no_wrap=column == "approach")
    serving = any(e.serve for e in result.estimates)
    if serving:
        table.add_column("+ serving", justify="right")
    for e, row in zip(result.estimates, result.rows(), strict=True):
        fits = e.placement.fits
        cells = [e.method.key, fmt_count(e.params_trainable) if e.method.training else "-",
                 fmt_count(row["tokens"]), fmt_bytes(e.memory.device_bytes) + ("" if fits else " (no fit)"),
                 str(e.gpus), fmt_duration(e.wall_seconds), f"{e.gpu_hours:,.3g}",
                 "-" if e.cost_usd is None else fmt_usd(e.cost_usd),
                 "-" if row["relative_cost"] is None else f"{row['relative_cost']:,.3g}x", f"{e.energy_kwh:,.3g}"]
        if serving:
            cells.append("-" if e.total_cost_usd is None or e.serve is None else fmt_usd(e.total_cost_usd))
        table.add_row(*cells, style=None if fits else "red")
    notes = Text("\n".join(f"  - {n}" for n in result.notes))
    return Group(table, notes, assumptions_text(result.estimates[-1]))


def plan_table(result: PlanResult, rows: int = 15) -> Group:
    """The Pareto front, thinned to ``rows`` evenly spread points (cheapest and fastest kept)."""
    front = result.pareto
    if len(front) > rows:
        picks = sorted({round(i * (len(front) - 1) / (rows - 1)) for i in range(rows)})
        front = tuple(front[i] for i in picks)
    shown = "" if len(front) == len(result.pareto) else f", {len(front)} shown"
    table = Table(title=f"Pareto front: {len(result.pareto)} of {result.feasible:,} feasible configurations "
                        f"({result.fitting:,} fit, {result.evaluated:,} evaluated{shown})", title_justify="left")
    for column in ("", "method", "GPUs", "precision", "micro-batch", "ckpt", "ZeRO", "memory/GPU", "scaling",
                   "wall time", "cost"):
        table.add_column(column, justify="left" if column in ("", "method") else "right", no_wrap=True)
    for i, c in enumerate(front):
        tag = "cheapest" if i == 0 else ("fastest" if i == len(front) - 1 else "")
        table.add_row(tag, c.method, f"{c.gpus} x {c.gpu}", c.precision, str(c.micro_batch),
                      "on" if c.grad_ckpt else "off", str(c.zero), fmt_bytes(c.device_bytes),
                      f"{c.scaling_efficiency:.0%}", fmt_duration(c.wall_seconds), fmt_usd(c.cost_usd))
    return Group(table, Text("\n".join(f"  - {n}" for n in result.notes)))


def cram_view(result: CramResult) -> Group:
    seconds = result.hours * 3600
    head = Text(f"{result.hours:g} h on one {result.gpu}: {fmt_flops(result.compute_flops)} of compute; "
                f"compute-optimal: {fmt_count(result.optimal_params)} parameters on "
                f"{fmt_count(result.optimal_tokens)} tokens", style="bold")
    table = Table(title="from scratch (Llama-shaped)", title_justify="left")
    for column in ("model", "params", "fits", "memory/GPU", "tokens/s", f"tokens in {result.hours:g} h",
                   "h for 20 tok/param"):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for o in result.options:
        style = "bold green" if o is result.largest_fitting else (None if o.fits else "dim")
        fits = ("yes" + (" (ckpt)" if o.grad_ckpt else "")) if o.fits else "no"
        table.add_row(o.model.name, fmt_count(o.params), fits,
                      fmt_bytes(o.device_bytes), f"{o.tokens_per_second:,.0f}", fmt_count(o.tokens_in_budget),
                      f"{o.hours_for_optimal:,.3g}" + (" ok" if o.finishes else ""), style=style)
    parts: list[Any] = [head, table]
    if result.approaches:
        model = result.approaches[0].model.name
        adapt = Table(title=f"{model}: each approach on one {result.gpu} for {result.hours:g} h", title_justify="left")
        epochs = f"epochs of {fmt_count(result.dataset_tokens)}"
        for column in ("approach", "fits", "memory/GPU", "tokens/s", "tokens", epochs):
            adapt.add_column(column, justify="left" if column == "approach" else "right", no_wrap=True)
        for e in result.approaches:
            fits = e.placement.fits
            tokens = e.tokens_per_second * seconds if fits else 0.0
            adapt.add_row(e.method.key, ("yes" + (" (ckpt)" if e.workload.grad_ckpt else "")) if fits else "no",
                          fmt_bytes(e.memory.device_bytes), f"{e.tokens_per_second:,.0f}" if fits else "-",
                          fmt_count(tokens) if fits else "-",
                          f"{tokens / result.dataset_tokens:,.3g}" if fits else "-", style=None if fits else "dim")
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
        table.add_row(f"best matmul, {dtype}", f"{flops / 1e12:,.3g} TFLOP/s")
    table.add_row("copy bandwidth", f"{profile['copy_bandwidth_bytes_per_second'] / 1e9:,.3g} GB/s")
    attention = profile["attention"]
    table.add_row(f"attention fwd+bwd, seq {attention['seq_len']}",
                  f"{attention['flops_per_second'] / 1e12:,.3g} TFLOP/s")
    for method, entry in profile["methods"].items():
        extra = ""
        if entry.get("max_allocated"):
            extra = (f", allocated {fmt_bytes(entry['max_allocated'])} vs analytic {fmt_bytes(entry['analytic_peak'])}"
                     f", reserved {fmt_bytes(entry['max_reserved'])}")
        table.add_row(f"training step, {method}",
                      f"{entry['achieved_flops_per_second'] / 1e12:,.3g} TFLOP/s{extra}")
    return table


def validation_view(results: list[Validation], summary: list[ErrorSummary], skipped: list[Skipped]) -> Group:
    table = Table(title="published runs: predicted (default settings) vs reported", title_justify="left")
    for column in ("kind", "run", "quantity", "predicted", "reported", "error"):
        table.add_column(column, justify="right" if column in ("predicted", "reported", "error") else "left")
    for r in results:
        unit = {"memory": lambda v: f"{v:,.3g} GiB", "gpu_hours": lambda v: f"{v:,.4g} GPU-h",
                "mfu": lambda v: f"{v:.1%}"}[r.quantity]
        table.add_row(r.kind, r.name, r.quantity, unit(r.predicted), unit(r.reported),
                      _error_text(r.error, 0.15 if r.quantity == "gpu_hours" else 0.03))
    totals = Table(title="error by kind", title_justify="left")
    for column in ("kind", "quantity", "rows", "median |error|", "worst"):
        totals.add_column(column, justify="left" if column in ("kind", "quantity") else "right")
    for s in summary:
        totals.add_row(s.kind, s.quantity, str(s.rows), f"{s.median_abs:.1%}", f"{s.worst:+.1%}")
    parts: list[Any] = [table, totals]
    if skipped:
        parts.append(Text("skipped:\n" + "\n".join(f"  - {s.kind}: {s.name}: {s.reason}" for s in skipped)))
    return Group(*parts)
