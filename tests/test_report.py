"""costplan report: files produced, numbers equal to the API's, a self-contained HTML."""

import json
import re

from click.testing import CliRunner

from costplan.cli import cli
from costplan.compare import compare
from costplan.units import fmt_usd


def test_report_files_and_numbers(tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["report", "--model", "7b", "--tokens", "100M", "--out", str(out),
                                      "--deadline", "48h"])
    assert result.exit_code == 0, result.output
    for name in ("report.md", "report.html", "report.json", "memory.png", "plan.png"):
        assert (out / name).stat().st_size > 0
    assert not list(out.glob("*.tmp"))
    data = json.loads((out / "report.json").read_text())
    expected = compare("7b", tokens=100e6, gpu="h100").rows()
    assert [r["method"] for r in data["comparison"]] == [r["method"] for r in expected]
    for got, want in zip(data["comparison"], expected, strict=True):
        assert got["cost_usd"] == want["cost_usd"] and got["gpus"] == want["gpus"]
    markdown = (out / "report.md").read_text()
    lora = next(r for r in expected if r["method"] == "lora")
    assert "| lora |" in markdown and fmt_usd(lora["cost_usd"]) in markdown
    assert "Pareto front" in markdown and data["plan"]["pareto"]
    assert all(c["wall_seconds"] <= 48 * 3600 for c in data["plan"]["pareto"])
    html = (out / "report.html").read_text()
    # Self-contained: plots embedded, nothing fetched from the network.
    assert html.count("data:image/png;base64,") == 2
    assert not re.search(r"""(src|href)=["']https?://""", html)
    assert fmt_usd(lora["cost_usd"]) in html and "Accuracy record" in html
    assert data["verification"]["cases"] >= 18 and data["verification"]["params_exact"] == data["verification"]["cases"]


def test_report_shows_the_calibration_in_use(tmp_path, monkeypatch):
    import os

    from costplan.report import build

    cache = tmp_path / "cache"
    monkeypatch.setenv("COSTPLAN_CACHE", str(cache))
    (cache / "profiles").mkdir(parents=True)
    profile = {"version": 1, "created": "2026-11-26", "gpu_key": "h100-sxm", "precision": "bf16",
               "device": {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3"},
               "gemm": [{"dtype": "bf16", "m": 8192, "n": 8192, "k": 8192, "seconds": 1.0, "flops_per_second": 7.5e14}],
               "copy_bandwidth_bytes_per_second": 2.9e12,
               "methods": {"lora": {"achieved_flops_per_second": 3.8e14, "max_allocated": 1e10,
                                    "max_reserved": 1.1e10}}}
    (cache / "profiles" / "h100.json").write_text(json.dumps(profile))
    files = build("7b", tokens=1e8, gpu="h100", out=tmp_path / "r")
    markdown = files.markdown.read_text()
    assert "calibrated on NVIDIA H100 80GB HBM3, 2026-11-26" in markdown
    assert "| matmul bf16 | 750 TFLOP/s | 989.5 TFLOP/s |" in markdown
    assert os.path.getsize(files.html) > 0


def test_report_options_units_and_the_thinned_plan(tmp_path):
    out = tmp_path / "r"
    result = CliRunner().invoke(cli, ["report", "--model", "70b", "--gpu", "rtx-4090", "--tokens", "100M", "--method",
                                      "qlora,lora", "--seq-len", "1024", "--grad-ckpt", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "report.json").read_text())
    assert data["settings"] == {"methods": ["qlora", "lora"], "seq_len": 1024, "grad_ckpt": True,
                                "deadline_seconds": None, "budget_usd": None}
    assert data["assumptions_shown"] == "qlora"
    assert all(c["grad_ckpt"] for c in data["plan"]["pareto"])
    markdown = (out / "report.md").read_text()
    assert "## Assumptions (qlora row" in markdown
    assert "quantity (unit)" in markdown and "gpu_hours (GPU-hours)" in markdown and "memory_gib (GiB)" in markdown
    # Rows that do not fit on an RTX 4090 have no price, and the report says where they would fit.
    no_fit = [r for r in data["comparison"] if not r["fits"]]
    assert no_fit and all(r["cost_usd"] is None for r in no_fit)
    assert f"{no_fit[0]['method']} does not fit on rtx-4090, so it has no price" in markdown
    assert "cheapest that fits" in markdown


def test_the_report_shows_the_same_thinned_front_as_the_cli():
    from costplan.plan import Candidate, PlanResult
    from costplan.report import _sections

    front = tuple(Candidate("lora", "h100-sxm", n, 1, False, 1, "bf16", 3600.0 / n, 10.0 + n, 1e9, 1.0)
                  for n in range(1, 41))
    plan = PlanResult(front, 100, 50, 40, ())
    assert len(plan.shown()) == 15 and plan.shown()[0] is front[0] and plan.shown()[-1] is front[-1]
    sections = _sections({}, compare("gpt2", tokens=1e6, gpu="h100"), plan, [], [])
    assert len(sections["plan"]) == 1 + 15
    assert sections["plan"][1][0] == "cheapest" and sections["plan"][-1][0] == "fastest"
