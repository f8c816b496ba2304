"""--csv on every table, DataFrames from results, the offers table and the price of owned GPUs."""

import csv
import io
import json

import pytest
from click.testing import CliRunner

from costplan.cli import cli


def run(*args):
    return CliRunner().invoke(cli, list(args))


def csv_rows(result):
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.output)))


@pytest.mark.parametrize("args,column", [
    (["estimate", "-m", "gpt2", "--method", "lora", "--tokens", "1M"], "cost_usd"),
    (["models"], "params"),
    (["gpus"], "fp16_tflops"),
    (["compare", "-m", "gpt2", "--tokens", "1M"], "relative_cost"),
    (["plan", "-m", "gpt2", "--tokens", "10M", "--gpu", "a100,l4"], "cost_usd"),
    (["cram", "--gpu", "l4", "--hours", "1"], "tokens_in_budget"),
    (["cram", "--gpu", "l4", "--hours", "1", "-m", "gpt2"], "epochs"),
    (["validate"], "error"),
    (["prices", "--gpu", "h100"], "usd_per_gpu_hour_spot"),
])
def test_every_table_prints_as_csv(args, column):
    rows = csv_rows(run(*args, "--csv"))
    assert rows and column in rows[0]


def test_estimate_csv_is_its_summary_row_and_matches_json():
    args = ["estimate", "-m", "gpt2", "--method", "lora", "--tokens", "1M"]
    (row,) = csv_rows(run(*args, "--csv"))
    data = json.loads(run(*args, "--json").output)
    assert int(row["params_trainable"]) == data["params_trainable"]
    assert float(row["cost_usd"]) == pytest.approx(data["cost_usd"])
    assert float(row["cost_usd_low"]) == pytest.approx(data["cost_usd_range"][0])


@pytest.mark.parametrize("command", [["estimate"], ["models"], ["gpus"], ["prices"], ["compare"], ["validate"]])
def test_csv_and_json_together_is_one_error_line(command):
    result = CliRunner().invoke(cli, [*command, "--csv", "--json"])
    assert result.exit_code == 2
    assert result.output.strip() == "Error: give --json or --csv, not both."


def test_results_become_dataframes():
    pd = pytest.importorskip("pandas")
    from costplan.compare import compare
    from costplan.plan import search
    from costplan.validate import validate

    frame = compare("gpt2", tokens=1e6).to_frame()
    assert isinstance(frame, pd.DataFrame) and "inference" in set(frame["method"])
    assert {"cost_usd_low", "cost_usd_high"} <= set(frame.columns)
    front = search("gpt2", ("lora",), tokens=1e7, gpus=("a100-80gb",)).to_frame()
    assert len(front) >= 1 and front["cost_usd"].is_monotonic_increasing
    run_ = validate()
    results, skipped = run_  # still unpacks as a pair
    assert len(run_.to_frame()) == len(results) > 0


def test_prices_lists_offers_by_provider_with_dates():
    rows = json.loads(run("prices", "--gpu", "h100", "--json").output)
    assert {r["gpu"] for r in rows} == {"h100-sxm"}
    assert {"aws", "lambda", "runpod"} <= {r["provider"] for r in rows}
    for r in rows:
        assert r["as_of"] and r["gpus_per_instance"] >= 1 and r["source"]
    aws = [r for r in rows if r["instance"] == "p5.48xlarge"]
    assert aws[0]["usd_per_gpu_hour"] == pytest.approx(55.04 / 8) and aws[0]["cluster"]
    bad = run("prices", "--gpu", "h1000")
    assert bad.exit_code == 2 and "Unknown GPU" in bad.output


def test_owned_gpus_cost_hardware_times_gpu_hours_plus_electricity_times_kwh():
    args = ["estimate", "-m", "8b", "--method", "lora", "--tokens", "50M", "--json"]
    data = json.loads(run(*args, "--hardware-price", "1.2", "--electricity", "0.15").output)
    assert data["cost_usd"] == pytest.approx(1.2 * data["gpu_hours"] + 0.15 * data["energy_kwh"])
    assert data["offer"]["provider"] == "owned"
    assert any(a.startswith("owned GPUs") for a in data["assumptions"])
    only_power = json.loads(run(*args, "--electricity", "0.15").output)
    assert only_power["cost_usd"] == pytest.approx(0.15 * only_power["energy_kwh"])
    rented = json.loads(run(*args).output)
    assert rented["offer"]["provider"] != "owned"
    clash = run(*args[:-1], "--electricity", "0.1", "--price", "2")
    assert clash.exit_code == 2 and "drop --price" in clash.output


def test_plan_prices_owned_gpus_the_same_way():
    from costplan.energy import energy_model
    from costplan.hardware import gpu
    from costplan.plan import search

    result = search("gpt2", ("lora",), tokens=1e7, gpus=("a100-80gb",), hardware_price=1.0, electricity=0.2)
    rate = 1.0 + 0.2 * gpu("a100").tdp_watts / 1000 * energy_model().pue
    for c in result.pareto:
        assert c.provider == "owned" and c.usd_per_gpu_hour == pytest.approx(rate)
        assert c.cost_usd == pytest.approx(rate * c.gpus * c.wall_hours)
