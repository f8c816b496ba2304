"""``costplan report``: a Markdown and a self-contained HTML report to justify a budget.

Sections: the method comparison with a stacked bar chart of memory per GPU by term; cost against
wall time for the plan's candidates with the Pareto front highlighted; the calibration profile in
use, if any; the accuracy record (published runs, and the verification matrix in
``tables/verification.csv``); every assumption, the versions and the date. Plots are drawn with
matplotlib's Agg backend; the HTML embeds them as base64 PNGs, so it opens with no network. A
``report.json`` beside them holds the numbers the text shows.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import platform
import statistics
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

from costplan.compare import Comparison, compare
from costplan.errors import CostplanError
from costplan.files import check_folder, write_file_set
from costplan.plan import STARTUP_SECONDS, PlanResult, search
from costplan.record import record
from costplan.tables import tables_dir
from costplan.units import fmt_bytes, fmt_count, fmt_duration, fmt_number, fmt_usd


@record
class ReportFiles:
    markdown: Path
    html: Path
    data: Path


def _memory_chart(result: Comparison) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    terms = sorted({t for e in result.estimates for t in e.memory.terms}, key=lambda t: t.value)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    bottoms = [0.0] * len(result.estimates)
    labels = [e.method.key for e in result.estimates]
    for term in terms:
        values = [e.memory.terms.get(term, 0.0) / 2**30 for e in result.estimates]
        ax.bar(labels, values, bottom=bottoms, label=term.label)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    ax.axhline(result.estimates[0].gpu.memory_bytes / 2**30, color="black", linestyle="--", linewidth=1,
               label=f"{result.estimates[0].gpu.key} memory")
    ax.set_ylabel("GiB per GPU (live tensors at the peak)")
    ax.set_title(f"{result.estimates[0].model.name}: memory per GPU by term")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _png(fig)


def _plan_chart(plan: PlanResult, rows: int = 15) -> bytes:
    """Cost against wall time: a grey sample of the feasible configurations, the thinned Pareto front
    the report's table lists, the cheapest and fastest labelled, and the start-up floor (every run pays
    its provisioning and loading time, so no point lies left of it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.6))
    if plan.samples:
        hours, dollars = zip(*((s / 3600, c) for s, c in plan.samples), strict=True)
        ax.scatter(hours, dollars, s=4, alpha=0.25, color="grey", label="feasible configurations (a sample)")
    front = plan.shown(rows)
    if front:
        ax.plot([c.wall_hours for c in front], [c.cost_usd for c in front], "o-", color="crimson",
                label=f"Pareto front ({len(front)} of {len(plan.pareto)} points shown)")
        for c, tag in ((front[0], "cheapest"), (front[-1], "fastest")):
            if tag == "fastest" and len(front) == 1:
                break
            ax.annotate(f"{tag}: {c.gpus} x {c.gpu}\n{fmt_duration(c.wall_seconds)}, {fmt_usd(c.cost_usd)}",
                        (c.wall_hours, c.cost_usd), textcoords="offset points", xytext=(8, 8), fontsize=8,
                        ha="left", arrowprops={"arrowstyle": "-", "color": "crimson", "lw": 0.6})
    floor_hours = STARTUP_SECONDS / 3600
    ax.axvline(floor_hours, color="black", linestyle=":", linewidth=1,
               label=f"start-up floor ({STARTUP_SECONDS / 60:g} min per run)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("wall time (hours, log scale)")
    ax.set_ylabel("cost (USD, log scale)")
    ax.set_title("plan: cost against wall time")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return _png(fig)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def verification_summary(path: Path | None = None) -> dict[str, Any] | None:
    """Cases, exact parameter counts, worst FLOPs error and peak-memory errors from the matrix CSV."""
    path = path or tables_dir() / "verification.csv"
    if not path.is_file():
        return None
    peaks, flops, params_ok, cases = [], [], {}, set()
    with path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            case = (row["model"], row["method"], row["precision"], row["attention"], row["grad_ckpt"],
                    row.get("framework", ""), row.get("optimizer", ""))
            cases.add(case)
            error = abs(float(row["rel_error"]))
            if row["quantity"] == "memory peak":
                peaks.append(error)
            elif row["quantity"] == "flops total":
                flops.append(error)
            elif row["quantity"].startswith("params"):
                params_ok[case] = params_ok.get(case, True) and error == 0
    if not peaks:
        return None
    return {"cases": len(cases), "params_exact": sum(params_ok.values()), "flops_worst": max(flops),
            "peak_median": statistics.median(peaks), "peak_worst": max(peaks)}


def build(model: str, *, tokens: float, gpu: str = "h100", out: Path | str,
          methods: tuple[str, ...] = ("lora", "qlora"), seq_len: int | None = None, grad_ckpt: bool | None = None,
          deadline_seconds: float | None = None, budget_usd: float | None = None,
          plan_methods: tuple[str, ...] | None = None) -> ReportFiles:
    """Write the report set into ``out``. ``methods`` are searched by the plan section, and the first
    one's assumptions are listed (every approach's are in report.json); ``seq_len`` and ``grad_ckpt``
    apply to the comparison and the plan alike (``plan_methods``: the former name of ``methods``)."""
    from costplan import validate as val
    from costplan.profile import load_profile, saved_profile_path

    if not str(out).strip():
        raise CostplanError("--out is empty: give the folder to write the report into, such as report/.")
    out = Path(out)
    check_folder(out, "--out folder")
    methods = plan_methods or methods
    if isinstance(methods, str):
        methods = tuple(m.strip() for m in methods.split(",") if m.strip())
    comparison = compare(model, tokens=tokens, gpu=gpu, seq_len=seq_len, grad_ckpt=grad_ckpt)
    plan = search(model, methods, tokens=tokens, deadline_seconds=deadline_seconds, budget_usd=budget_usd,
                  seq_len=seq_len, grad_ckpt=grad_ckpt)
    validation, skipped = val.validate()
    validation_summary = val.summarize(validation)
    verification = verification_summary()
    first = comparison.estimates[0]
    profile_path = saved_profile_path(first.gpu.key)
    profile = load_profile(profile_path) if profile_path else None
    versions = {"costplan": _version(), "python": platform.python_version(), "numpy": _module_version("numpy"),
                "matplotlib": _module_version("matplotlib")}
    data = {
        "model": first.model.name, "gpu": first.gpu.key, "tokens": tokens, "date": date.today().isoformat(),
        "versions": versions, "comparison": comparison.rows(),
        "plan": {"pareto": [asdict(c) for c in plan.pareto], "evaluated": plan.evaluated, "fitting": plan.fitting,
                 "feasible": plan.feasible, "shown": len(plan.shown())},
        "validation": {"rows": [dict(asdict(r), error=r.error) for r in validation],
                       "summary": [asdict(s) for s in validation_summary], "skipped": len(skipped)},
        "verification": verification,
        "calibration": profile.describe(first.gpu.key) if profile else "none: default efficiencies (not calibrated)",
        "calibration_ceilings": _ceilings(profile_path) if profile_path else [],
        "assumptions": {e.method.key: list(e.assumptions) for e in comparison.estimates},
        "assumptions_shown": next((m.lower() for m in methods if m.lower() in
                                   {e.method.key for e in comparison.estimates}), comparison.estimates[0].method.key),
        "settings": {"methods": list(methods), "seq_len": seq_len, "grad_ckpt": grad_ckpt,
                     "deadline_seconds": deadline_seconds, "budget_usd": budget_usd},
        "notes": {"comparison": _comparison_notes(comparison), "plan": list(plan.notes)},
    }
    memory_png, plan_png = _memory_chart(comparison), _plan_chart(plan)
    sections = _sections(data, comparison, plan, validation, validation_summary)
    write_file_set(out, {"memory.png": memory_png, "plan.png": plan_png,
                         "report.json": json.dumps(data, indent=2, default=str, allow_nan=False),
                         "report.md": _markdown(data, sections),
                         "report.html": _html(data, sections, memory_png, plan_png)})
    return ReportFiles(out / "report.md", out / "report.html", out / "report.json")


def _ceilings(path: Path) -> list[list[str]]:
    """Measured ceilings of a calibration profile beside the datasheet row."""
    from costplan.hardware import gpu
    from costplan.profile import check_profile, measured_matmul_peaks
    from costplan.tables import read_json

    data = read_json(path, "calibration profile")
    check_profile(data)
    sheet = gpu(data["gpu_key"]) if data.get("gpu_key") else None
    rows = [["ceiling", "measured", "datasheet"]]
    best = measured_matmul_peaks(data)
    for dtype, flops in best.items():
        peak = sheet.peak_flops.get(dtype) if sheet else None
        rows.append([f"matmul {dtype}", f"{flops / 1e12:,.4g} TFLOP/s", f"{peak / 1e12:,.4g} TFLOP/s" if peak else "-"])
    if data.get("copy_bandwidth_bytes_per_second"):
        rows.append(["copy bandwidth", f"{data['copy_bandwidth_bytes_per_second'] / 1e9:,.4g} GB/s",
                     f"{sheet.bandwidth_bytes_per_s / 1e9:,.4g} GB/s" if sheet else "-"])
    return rows


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("costplan")
    except PackageNotFoundError:
        return "checkout"


def _module_version(name: str) -> str:
    import importlib

    return getattr(importlib.import_module(name), "__version__", "?")


def _comparison_notes(comparison: Comparison) -> list[str]:
    """The comparison's notes, and for each row that does not fit why and where it would."""
    from costplan.alternatives import describe

    notes = list(comparison.notes)
    for e in comparison.estimates:
        if not e.placement.fits:
            alt = comparison.alternative(e)
            notes.append(f"{e.method.key} does not fit on {e.gpu.key}, so it has no price: {e.placement.reason}; "
                         + (f"cheapest that fits: {describe(alt)}" if alt else "it fits on none of the GPU types"))
    return notes


_UNITS = {"memory_gib": ("GiB", fmt_number), "gpu_hours": ("GPU-hours", lambda v: fmt_number(v, 4)),
          "tokens_per_second_per_gpu": ("tokens/s per GPU", lambda v: fmt_number(v, 4)),
          "tokens_per_second": ("tokens/s", lambda v: fmt_number(v, 4)),
          "ran": ("1 = out of memory", lambda v: "OOM" if v else "ran"),
          "max_seq_len": ("tokens", lambda v: fmt_number(v, 4))}
"""The accuracy table's quantities with their units."""


def _sections(data: dict[str, Any], comparison: Comparison, plan: PlanResult, validation: list[Any],
              summary: list[Any]) -> dict[str, list[list[str]]]:
    compare_rows = [["approach", "trainable", "tokens", "memory/GPU", "GPUs", "wall time", "GPU-hours", "cost",
                     "x cheapest", "kWh"]]
    for e, row in zip(comparison.estimates, comparison.rows(), strict=True):
        fits = e.placement.fits
        compare_rows.append([e.method.key, fmt_count(e.params_trainable) if e.method.training else "-",
                             fmt_count(row["tokens"]), fmt_bytes(e.memory.device_bytes),
                             str(e.gpus) if fits else "does not fit", fmt_duration(e.wall_seconds) if fits else "-",
                             fmt_number(e.gpu_hours) if fits else "-",
                             fmt_usd(e.cost_usd) if e.cost_usd is not None else ("no price" if fits else "-"),
                             f"{fmt_number(row['relative_cost'])}x" if row["relative_cost"] else "-",
                             fmt_number(e.energy_kwh) if fits and e.energy_kwh is not None else "-"])
    plan_rows = [["", "method", "GPUs", "precision", "micro-batch", "ckpt", "ZeRO", "memory/GPU", "wall time", "cost"]]
    front = plan.shown()
    for i, c in enumerate(front):
        tag = "cheapest" if i == 0 else ("fastest" if i == len(front) - 1 else "")
        plan_rows.append([tag, c.method, f"{c.gpus:,} x {c.gpu}", c.precision, str(c.micro_batch),
                          "on" if c.grad_ckpt else "off", str(c.zero), fmt_bytes(c.device_bytes),
                          fmt_duration(c.wall_seconds), fmt_usd(c.cost_usd)])
    validation_rows = [["kind", "split", "run", "quantity (unit)", "predicted", "reported", "error", "naive"]]
    for r in validation:
        unit, text = _UNITS.get(r.quantity, ("", fmt_number))
        naive = "-" if r.naive_error is None else f"{r.naive_error:+.1%}"
        validation_rows.append([r.kind, r.split, r.name, f"{r.quantity} ({unit})" if unit else r.quantity,
                                text(r.predicted), text(r.reported), f"{r.error:+.1%}", naive])
    summary_rows = [["kind", "split", "quantity (unit)", "rows", "median |error|", "worst", "naive median"]]
    summary_rows += [[s.kind, s.split, f"{s.quantity} ({_UNITS[s.quantity][0]})" if s.quantity in _UNITS
                      else s.quantity, str(s.rows), f"{s.median_abs:.1%}", f"{s.worst:+.1%}",
                      "-" if s.naive_median_abs is None else f"{s.naive_median_abs:.1%}"] for s in summary]
    return {"compare": compare_rows, "plan": plan_rows, "validation": validation_rows, "summary": summary_rows}


def _md_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def _verification_text(v: dict[str, Any] | None) -> str:
    if not v:
        return "No verification matrix found (run `costplan verify --all`)."
    return (f"{v['cases']} cases traced from the real model code; parameters exact in {v['params_exact']}; "
            f"FLOPs worst error {v['flops_worst']:.2%}; peak memory median error {v['peak_median']:.2%}, "
            f"worst {v['peak_worst']:.2%}.")


def _shown_points(data: dict[str, Any]) -> str:
    shown, total = data["plan"]["shown"], len(data["plan"]["pareto"])
    if shown == total:
        return f"all {total} points"
    return f"{shown} of its {total} points, evenly spread as in `costplan plan` (all of them in report.json)"


def _markdown(data: dict[str, Any], sections: dict[str, list[list[str]]]) -> str:
    shown = data["assumptions_shown"]
    assumptions = "\n".join(f"- {a}" for a in data["assumptions"][shown])
    comparison_notes = "\n".join(f"- {n}" for n in data["notes"]["comparison"])
    plan_text = (f"Pareto front, {_shown_points(data)} (cheapest first, fastest last):\n\n"
                 + _md_table(sections["plan"])
                 if data["plan"]["pareto"] else "Nothing is feasible: see the notes below.")
    plan_notes = "\n".join(f"- {n}" for n in data["notes"]["plan"])
    return f"""# costplan report: {data['model']} on {data['gpu']}, {fmt_count(data['tokens'])} tokens

Generated {data['date']} with costplan {data['versions']['costplan']} (Python {data['versions']['python']}).

## Approaches compared

{_md_table(sections['compare'])}

{comparison_notes}

![memory per GPU by term](memory.png)

## Plan: cost against wall time

{data['plan']['evaluated']:,} configurations evaluated, {data['plan']['fitting']:,} fit in memory,
{data['plan']['feasible']:,} meet the deadline and budget. {plan_text}

![plan](plan.png)

{plan_notes}

## Calibration

{data['calibration']}

{_md_table(data['calibration_ceilings']) if data['calibration_ceilings'] else ''}

## Accuracy record

Verification against traced steps of the real model code: {_verification_text(data['verification'])}

Published runs predicted with default settings ({data['validation']['skipped']} more rows skipped):

{_md_table(sections['summary'])}

{_md_table(sections['validation'])}

## Assumptions ({shown} row; every approach's list is in report.json)

{assumptions}
"""


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(data: dict[str, Any], sections: dict[str, list[list[str]]], memory_png: bytes, plan_png: bytes) -> str:
    def img(png: bytes, alt: str) -> str:
        return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'

    shown = data["assumptions_shown"]
    assumptions = "".join(f"<li>{html.escape(a)}</li>" for a in data["assumptions"][shown])

    def items(lines: list[str]) -> str:
        return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"

    plan_table = (f"<p>Pareto front, {html.escape(_shown_points(data))} (cheapest first, fastest last):</p>"
                  + _html_table(sections["plan"]) if data["plan"]["pareto"] else "<p>Nothing is feasible.</p>")
    title = f"costplan report: {data['model']} on {data['gpu']}, {fmt_count(data['tokens'])} tokens"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th:first-child, td:first-child, td:nth-child(2) {{ text-align: left; }}
thead {{ background: #f0f0f0; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Generated {data['date']} with costplan {html.escape(data['versions']['costplan'])}
(Python {data['versions']['python']}, numpy {data['versions']['numpy']},
matplotlib {data['versions']['matplotlib']}).</p>
<h2>Approaches compared</h2>{_html_table(sections['compare'])}{items(data['notes']['comparison'])}
{img(memory_png, 'memory per GPU by term')}
<h2>Plan: cost against wall time</h2>
<p>{data['plan']['evaluated']:,} configurations evaluated, {data['plan']['fitting']:,} fit in memory,
{data['plan']['feasible']:,} meet the deadline and budget.</p>
{plan_table}{img(plan_png, 'plan')}{items(data['notes']['plan'])}
<h2>Calibration</h2><p>{html.escape(data['calibration'])}</p>
{_html_table(data['calibration_ceilings']) if data['calibration_ceilings'] else ''}
<h2>Accuracy record</h2>
<p>Verification against traced steps of the real model code: {html.escape(_verification_text(data['verification']))}</p>
<p>Published runs predicted with default settings ({data['validation']['skipped']} more rows skipped):</p>
{_html_table(sections['summary'])}{_html_table(sections['validation'])}
<h2>Assumptions ({html.escape(shown)} row; every approach's list is in report.json)</h2><ul>{assumptions}</ul>
</body></html>
"""
