"""costplan validate: published runs predicted with default settings."""

import json

import pytest
from click.testing import CliRunner

from costplan.cli import cli
from costplan.tables import read_table
from costplan.validate import summarize, validate


def test_published_runs_table_is_sourced_and_large_enough():
    rows = read_table("published_runs")
    assert len(rows) >= 30
    assert {r["kind"] for r in rows} >= {"pretrain", "cpt", "full", "lora", "qlora", "inference"}


def test_llama2_gpu_hours_by_hand():
    # Llama 2 model card: 7B took 184,320 A100-80GB hours for 2T tokens. Our prediction is the
    # analytic FLOPs per token (6N plus attention at 4K context) over 312 TFLOPS x MFU 0.42.
    results, _ = validate()
    row = next(r for r in results if r.name == "Llama 2 7B pretraining" and r.quantity == "gpu_hours")
    from costplan.flops import training_flops
    from costplan.methods import Pretraining
    from costplan.model import preset
    from costplan.workload import Workload

    flops = training_flops(preset("llama-2-7b"), Pretraining(), Workload(seq_len=4096)).per_token
    assert row.predicted == pytest.approx(flops * 2e12 / (312e12 * 0.42) / 3600)
    assert row.reported == 184_320 and abs(row.error) < 0.15


def test_validation_reports_every_row_once():
    results, skipped = validate()
    names = {r.name for r in results} | {s.name for s in skipped}
    assert names == {r["name"] for r in read_table("published_runs")}
    assert all(s.reason for s in skipped)
    kinds = {s.kind for s in summarize(results)}
    assert kinds == {"pretrain/cpt", "fine-tuning"}


def test_cli_validate_json():
    result = CliRunner().invoke(cli, ["validate", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["rows"] and data["summary"] and all("error" in r for r in data["rows"])
