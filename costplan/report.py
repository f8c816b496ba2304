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
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

from costplan.compare import Comparison, compare
from costplan.errors import CostplanError
from costplan.files import check_folder, write_file_set
from costplan.plan import PlanResult, search
from costplan.tables import tables_dir
from costplan.units import fmt_bytes, fmt_count, fmt_duration, fmt_usd


@dataclass(frozen=True, slots=True)
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


def _plan_chart(plan: PlanResult) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    if plan.samples:
        hours, dollars = zip(*((s / 3600, c) for s, c in plan.samples), strict=True)
        ax.scatter(hours, dollars, s=4, alpha=0.3, color="grey", label="feasible configurations (sample)")
    ax.plot([c.wall_hours for c in plan.pareto], [c.cost_usd for c in plan.pareto], "o-", color="crimson",
            label="Pareto front")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("wall time (hours)")
    ax.set_ylabel("cost (USD)")
    ax.set_title("plan: cost against wall time")
    ax.legend(fontsize=8)
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
            case = (row["model"], row["method"], row["precision"], row["attention"], row["grad_ckpt"])
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


REPORT_FILES = ("report.md", "report.html", "report.json", "memory.png", "plan.png")
"""The files a report writes; nothing else in the --out folder is touched."""


def build(model: str, *, tokens: float, gpu: str = "h100", out: Path | str,
          plan_methods: tuple[str, ...] = ("lora", "qlora"), deadline_seconds: float | None = None,
          budget_usd: float | None = None) -> ReportFiles:
    from costplan import validate as val
    from costplan.profile import load_profile, saved_profile_path

    if not str(out).strip():
        raise CostplanError("--out is empty: give the folder to write the report into, such as report/.")
    out = Path(out)
    check_folder(out, "--out folder")

    comparison = compare(model, tokens=tokens, gpu=gpu)
    plan = search(model, plan_methods, tokens=tokens, deadline_seconds=deadline_seconds, budget_usd=budget_usd)
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
                 "feasible": plan.feasible},
        "validation": {"rows": [dict(asdict(r), error=r.error) for r in validation],
                       "summary": [asdict(s) for s in validation_summary], "skipped": len(skipped)},
        "verification": verification,
        "calibration": profile.describe(first.gpu.key) if profile else "none: default efficiencies (not calibrated)",
        "calibration_ceilings": _ceilings(profile_path) if profile_path else [],
        "assumptions": {e.method.key: list(e.assumptions) for e in comparison.estimates},
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


def _sections(data: dict[str, Any], comparison: Comparison, plan: PlanResult, validation: list[Any],
              summary: list[Any]) -> dict[str, list[list[str]]]:
    compare_rows = [["approach", "trainable", "tokens", "memory/GPU", "GPUs", "wall time", "GPU-hours", "cost",
                     "x cheapest", "kWh"]]
    for e, row in zip(comparison.estimates, comparison.rows(), strict=True):
        compare_rows.append([e.method.key, fmt_count(e.params_trainable) if e.method.training else "-",
                             fmt_count(row["tokens"]),
                             fmt_bytes(e.memory.device_bytes) + ("" if e.placement.fits else " (no fit)"),
                             str(e.gpus), fmt_duration(e.wall_seconds), f"{e.gpu_hours:,.3g}",
                             fmt_usd(e.cost_usd) if e.cost_usd is not None else "-",
                             f"{row['relative_cost']:,.3g}x" if row["relative_cost"] else "-", f"{e.energy_kwh:,.3g}"])
    plan_rows = [["method", "GPUs", "precision", "micro-batch", "ckpt", "ZeRO", "wall time", "cost"]]
    for c in plan.pareto:
        plan_rows.append([c.method, f"{c.gpus} x {c.gpu}", c.precision, str(c.micro_batch),
                          "on" if c.grad_ckpt else "off", str(c.zero), fmt_duration(c.wall_seconds),
                          fmt_usd(c.cost_usd)])
    validation_rows = [["kind", "run", "quantity", "predicted", "reported", "error"]]
    for r in validation:
        validation_rows.append([r.kind, r.name, r.quantity, f"{r.predicted:,.4g}", f"{r.reported:,.4g}",
                                f"{r.error:+.1%}"])
    summary_rows = [["kind", "quantity", "rows", "median |error|", "worst"]]
    summary_rows += [[s.kind, s.quantity, str(s.rows), f"{s.median_abs:.1%}", f"{s.worst:+.1%}"] for s in summary]
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


def _markdown(data: dict[str, Any], sections: dict[str, list[list[str]]]) -> str:
    assumptions = "\n".join(f"- {a}" for a in data["assumptions"]["lora" if "lora" in data["assumptions"]
                                                                   else next(iter(data["assumptions"]))])
    return f"""# costplan report: {data['model']} on {data['gpu']}, {fmt_count(data['tokens'])} tokens

Generated {data['date']} with costplan {data['versions']['costplan']} (Python {data['versions']['python']}).

## Approaches compared

{_md_table(sections['compare'])}

![memory per GPU by term](memory.png)

## Plan: cost against wall time

{data['plan']['evaluated']:,} configurations evaluated, {data['plan']['fitting']:,} fit in memory,
{data['plan']['feasible']:,} meet the deadline and budget. Pareto front:

{_md_table(sections['plan'])}

![plan](plan.png)

## Calibration

{data['calibration']}

{_md_table(data['calibration_ceilings']) if data['calibration_ceilings'] else ''}

## Accuracy record

Verification against traced steps of the real model code: {_verification_text(data['verification'])}

Published runs predicted with default settings ({data['validation']['skipped']} more rows skipped):

{_md_table(sections['summary'])}

{_md_table(sections['validation'])}

## Assumptions (LoRA row; every approach's list is in report.json)

{assumptions}
"""


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(data: dict[str, Any], sections: dict[str, list[list[str]]], memory_png: bytes, plan_png: bytes) -> str:
    def img(png: bytes, alt: str) -> str:
        return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'

    lora = data["assumptions"].get("lora") or next(iter(data["assumptions"].values()))
    assumptions = "".join(f"<li>{html.escape(a)}</li>" for a in lora)
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
<h2>Approaches compared</h2>{_html_table(sections['compare'])}{img(memory_png, 'memory per GPU by term')}
<h2>Plan: cost against wall time</h2>
<p>{data['plan']['evaluated']:,} configurations evaluated, {data['plan']['fitting']:,} fit in memory,
{data['plan']['feasible']:,} meet the deadline and budget.</p>
{_html_table(sections['plan'])}{img(plan_png, 'plan')}
<h2>Calibration</h2><p>{html.escape(data['calibration'])}</p>
{_html_table(data['calibration_ceilings']) if data['calibration_ceilings'] else ''}
<h2>Accuracy record</h2>
<p>Verification against traced steps of the real model code: {html.escape(_verification_text(data['verification']))}</p>
<p>Published runs predicted with default settings ({data['validation']['skipped']} more rows skipped):</p>
{_html_table(sections['summary'])}{_html_table(sections['validation'])}
<h2>Assumptions (LoRA)</h2><ul>{assumptions}</ul>
</body></html>
"""
