"""Wrong or misleading answers found by trying costplan as a new user would (issue 11), each with
the test that would have caught it: prices, presets, cram's encoder question, what does not fit,
output at 80 columns, option names, and the items the engine rewrite already fixed."""

import io
import json
import re

import pytest
from click.testing import CliRunner
from rich.console import Console

import costplan
from costplan.cli import cli
from costplan.hardware import offers


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# --- prices -------------------------------------------------------------------------------------

def test_spot_takes_the_cheapest_spot_offer_and_says_when_on_demand_is_cheaper():
    est = costplan.estimate("7b", "lora", gpu="a100-40gb", gpus=1, spot=True)
    spot = [o.usd_per_gpu_hour for o in offers("a100-40gb", spot=True) if o.gpus_per_instance == 1]
    on_demand = [o.usd_per_gpu_hour for o in offers("a100-40gb") if o.gpus_per_instance == 1]
    assert est.price.spot and est.price.usd_per_gpu_hour == min(spot)
    assert min(on_demand) < min(spot)  # the table's A100 40GB spot offers are dearer than on-demand
    note = next(a for a in est.assumptions if a.startswith("on-demand is cheaper"))
    assert f"${min(on_demand):.2f}/GPU-hour" in note
    # Where spot is cheaper, no such note.
    h100 = costplan.estimate("7b", "lora", gpu="h100", gpus=1, spot=True)
    assert h100.price.spot and not any(a.startswith("on-demand is cheaper") for a in h100.assumptions)


# --- presets ------------------------------------------------------------------------------------

def test_llama_3_1_presets_have_the_128k_context_and_the_same_parameters():
    from costplan.model import count_params, preset

    for new, old in (("llama-3.1-8b", "llama-3-8b"), ("llama-3.1-70b", "llama-3-70b")):
        spec, base = preset(new), preset(old)
        assert spec.name == new and spec.max_positions == 131_072 and base.max_positions == 8192
        assert count_params(spec).total == count_params(base).total == spec.params_published
    est = costplan.estimate("llama-3.1-8b", "qlora", seq_len=16_384, gpu="h100")
    assert est.placement.fits
    with pytest.raises(costplan_error(), match="context of 8192"):
        costplan.estimate("llama-3-8b", "qlora", seq_len=16_384)


def costplan_error():
    from costplan.errors import CostplanError

    return CostplanError


# --- cram: the Cramming question -----------------------------------------------------------------

def test_cram_for_an_encoder_lists_pretraining_and_answers_cramming():
    result = run("cram", "--gpu", "a6000", "--model", "bert-base", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    methods = {r["method"] for r in data["approaches"]}
    assert {"pretrain", "cpt", "full", "lora"} <= methods and "prefix" not in methods
    assert data["model_seq_len"] == 128  # an encoder pretrains at 128, as BERT and Cramming do
    encoder = {r["mlm_head_on"]: r for r in data["encoder"]}
    assert set(encoder) == {"masked positions", "every position"}
    assert all(r["seq_len"] == 128 and r["masking"] == 0.15 and r["fits"] for r in encoder.values())
    # Predicting only the masked 15% skips most of the head's work: more tokens in the day.
    assert encoder["masked positions"]["tokens_in_budget"] > encoder["every position"]["tokens_in_budget"]
    published = data["cramming_published"]
    assert published["gpu"] == "rtx-a6000" and published["hours"] == 24 and published["seq_len"] == 128
    assert published["batch_sequences"] == 8192 and "crammed-bert" in published["source"]
    text = run("cram", "--gpu", "a6000", "--model", "bert-base")
    assert "Cramming" in text.output and "Geiping & Goldstein 2022" in text.output


def test_cram_honours_seq_len_for_the_model():
    data = json.loads(run("cram", "--model", "7b", "--seq-len", "512", "--json").output)
    assert data["model_seq_len"] == 512
    one = costplan.estimate("7b", "lora", gpu="h100", gpus=1, seq_len=512, tokens=1e9, price=0.0)
    lora = next(r for r in data["approaches"] if r["method"] == "lora")
    assert lora["tokens_per_second"] == pytest.approx(one.tokens_per_second)


def test_masked_lm_head_flops_by_hand():
    """BERT-base at 128 tokens: the MLM head (dense h x h and decoder h x vocab) is 2(h² + h·v) FLOPs a
    position forward; Hugging Face runs it on all 128 positions, sparse prediction on 15% of them."""
    from costplan.flops import training_flops
    from costplan.methods import Pretraining
    from costplan.model import preset
    from costplan.terms import Part
    from costplan.workload import Workload

    bert = preset("bert-base")
    h, v = 768, 30522
    work = Workload(seq_len=128, precision="fp32")
    every = training_flops(bert, Pretraining(), work).by_part()[Part.HEAD]
    sparse = training_flops(bert, Pretraining(sparse_prediction=True), work).by_part()[Part.HEAD]
    forward = 2 * (h * h + h * v)  # per position
    assert every == pytest.approx(3 * forward)  # forward, dX and dW, on every position
    assert sparse == pytest.approx(0.15 * 3 * forward)
    note = next(a for a in costplan.estimate(bert, "pretrain").assumptions if a.startswith("masked language"))
    assert "every position" in note and "BertForMaskedLM" in note
    with pytest.raises(costplan_error(), match="sparse prediction"):
        costplan.estimate("7b", Pretraining(sparse_prediction=True))


# --- what does not fit ----------------------------------------------------------------------------

def test_an_estimate_that_does_not_fit_has_no_price_and_says_what_would():
    result = run("estimate", "-m", "70b", "--method", "full", "--gpus", "1", "--json")
    data = json.loads(result.output)
    assert data["fits"] is False and data["cost_usd"] is None
    assert data["would_fit"]["gpus"] > 1 and data["would_fit"]["cost_usd"] > 0
    text = run("estimate", "-m", "70b", "--method", "full", "--gpus", "1").output
    assert "none: it does not fit" in text and "would fit" in text and "$" not in text.split("would fit")[0]


def test_the_would_fit_search_answers_max_only_for_the_users_own_gpu(monkeypatch):
    # --max is a binary search of a dozen estimates; the alternative GPU types need only their
    # verdict and price, or a --max on a job that does not fit took seconds (one search per type).
    import costplan.api as api

    searched = []
    real = api.largest_fitting
    monkeypatch.setattr(api, "largest_fitting", lambda *a, **k: searched.append(a[0]) or real(*a, **k))
    result = run("estimate", "-m", "70b", "--method", "full", "--gpus", "1", "--max", "seq-len", "--json")
    data = json.loads(result.output)
    assert data["fits"] is False and data["would_fit"]["gpus"] > 1
    assert searched == ["seq-len"] and data["max"] == {"seq_len": 0}


def test_compare_rows_that_do_not_fit_show_no_gpus_hours_or_dollars():
    result = run("compare", "-m", "70b", "--gpu", "t4", "--precision", "fp16")
    assert result.exit_code == 0, result.output
    # Continual pretraining at the 70B's 8K context: one sequence's activations exceed a T4.
    cpt = next(line for line in result.output.splitlines() if line.strip().startswith("cpt "))
    assert "no fit" in cpt and "$" not in cpt and " h " not in cpt
    assert re.search(r"cpt does not fit on t4 .*cheapest that fits: \d+ x", " ".join(result.output.split()))
    data = json.loads(run("compare", "-m", "70b", "--gpu", "t4", "--precision", "fp16", "--json").output)
    row = next(r for r in data["rows"] if r["method"] == "cpt")
    assert row["cost_usd"] is None and row["would_fit"]["gpu"] != "t4"


# --- compare is like for like (fixed by the engine rewrite; the tests that would have caught it) ----

def test_compare_prices_prompting_at_the_serving_batch_and_serving_for_every_row():
    from costplan.compare import compare

    result = compare("7b", tokens=1e8, gpu="h100", serve_tokens=1e9, serve_batch=16)
    by = {e.method.key: e for e in result.estimates}
    assert by["inference"].workload.micro_batch == 16
    assert all(e.serve is not None and e.serve.workload.micro_batch == 16 for e in result.estimates)
    for e in result.estimates:
        assert result.relative_cost(e) == pytest.approx(e.total_cost_usd / result.cheapest_usd)


def test_prompt_and_prefix_tuning_are_served_with_their_virtual_tokens():
    for method in ("prompt", "prefix"):
        est = costplan.estimate("7b", method, gpu="h100", virtual_tokens=50, serve_tokens=1e8, prompt_len=512)
        assert est.serve.workload.prompt_len == 562
        assert any("50 virtual tokens added to every prompt" in a for a in est.assumptions)
    lora = costplan.estimate("7b", "lora", gpu="h100", serve_tokens=1e8, prompt_len=512)
    assert lora.serve.workload.prompt_len == 512


def test_plan_caps_data_parallelism_by_the_global_batch_and_clusters_only_where_sold():
    from costplan.layout import default_global_batch
    from costplan.methods import Lora
    from costplan.model import preset
    from costplan.plan import search

    result = search("8b", ("lora",), tokens=1e9, gpus=("h100-sxm", "rtx-4090"), max_gpus=4096)
    batch, _ = default_global_batch(preset("8b"), Lora(), 2048)
    for c in result.pareto:
        assert c.gpus // (c.tp * c.pp) <= batch
        if c.gpu == "rtx-4090":  # consumer cards are not sold as clusters
            assert c.gpus <= 8


def test_gpus_is_a_count_everywhere_and_gpu_takes_types():
    assert run("estimate", "--gpus", "8", "--json").exit_code == 0
    bad = run("estimate", "--gpus", "a100")
    assert bad.exit_code == 2 and "--gpus" in bad.output
    planned = run("plan", "--tokens", "100M", "--gpu", "a100,l40s", "--json")
    assert planned.exit_code == 0
    assert run("plan", "--tokens", "100M", "--gpus", "8").exit_code == 2  # plan has --gpu and --max-gpus


def test_costplan_alone_prints_usage_on_stdout():
    result = CliRunner().invoke(cli, [])
    assert result.exit_code == 0 and "Usage:" in result.stdout and not result.stderr


# --- output at 80 columns ---------------------------------------------------------------------------

def _render(renderable, width=80):
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None).print(renderable)
    return buffer.getvalue()


def _check_narrow(text):
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert not re.search(r"\d\.?\d*e[+-]\d", text), re.findall(r"\S*\d\.?\d*e[+-]\d\S*", text)


@pytest.mark.parametrize("args", [
    ["compare", "-m", "7b"], ["compare", "-m", "7b", "--serve-tokens", "1B"],
    ["compare", "-m", "70b", "--gpu", "t4", "--precision", "fp16"],
    ["plan", "-m", "70b", "--method", "lora,qlora", "--tokens", "1B", "--deadline", "48h"],
    ["plan", "-m", "8b", "--method", "pretrain", "--tokens", "1T", "--framework", "megatron", "--max-gpus", "4096"],
    ["cram"], ["cram", "--gpu", "a6000", "--model", "bert-base"],
    ["cram", "--gpu", "t4", "--model", "70b", "--precision", "fp16"],
    ["estimate", "-m", "70b", "--method", "pretrain", "--gpus", "32", "--tokens", "5T"],
    ["models"], ["gpus"], ["prices"], ["validate", "--kind", "max_context"],
    ["estimate", "-m", "phi-4", "--method", "qlora", "--gpu", "t4", "--precision", "fp16"],  # a recompute column
])
def test_tables_fit_80_columns_without_cut_cells_or_scientific_notation(args):
    result = run(*args)  # CliRunner's console is not a terminal: rich uses 80 columns, as in a pipe
    assert result.exit_code == 0, result.output
    _check_narrow(result.output)


def test_numbers_never_use_scientific_notation():
    from costplan.units import fmt_count, fmt_duration, fmt_flops, fmt_number, fmt_usd

    assert fmt_number(2573.4) == "2,570" and fmt_duration(1910 * 86400) == "5.23 years"
    assert fmt_duration(1000 * 86400) == "1,000 days" and fmt_count(1e16) == "10,000 T"
    assert fmt_flops(3e27) == "3,000 YFLOP" and fmt_usd(1.23e-5) == "$0.0000123"
    # a value that rounds up to the next unit is shown in it: Gemma-3-1B's 999,885,952 parameters
    assert fmt_count(999_885_952) == "1 B" and fmt_count(999_400_000) == "999 M" and fmt_flops(999.9e9) == "1 TFLOP"
    est = costplan.estimate("70b", "pretrain", gpu="h100", gpus=32, tokens=5e12)
    assert est.wall_seconds > 3 * 365 * 86400
    from costplan.render import estimate_view

    text = _render(estimate_view(est))
    assert "years" in text and not re.search(r"\d\.?\d*e[+-]\d", text)


# --- docs -----------------------------------------------------------------------------------------

def test_readme_numbers_match_the_tables():
    from pathlib import Path

    from costplan.report import verification_summary

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    cases = verification_summary()["cases"]
    assert f"full matrix ({cases} cases" in readme
    assert "under 0.2 s" not in readme and "about a minute" not in readme


def test_benchmarks_write_outside_the_tracked_tables_by_default():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "run_all.py"
    spec = importlib.util.spec_from_file_location("run_all", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.OUT.parts[-2:] == ("benchmarks", "output")


def test_the_inference_flops_table_labels_prefill_and_decode():
    from costplan.render import flops_table

    text = _render(flops_table(costplan.estimate("8b", "inference", gpu="h100")))
    stages = re.findall(r"^\W*(prefill|decode) ", text, re.MULTILINE)
    assert stages.count("prefill") == stages.count("decode") > 1


def test_compare_prints_the_assumptions_every_row_shares_not_the_last_rows():
    text = run("compare", "-m", "7b").output
    shared = text.split("assumptions shared by every row")[1]
    assert "llama-2-7b: 6.74 B parameters" in " ".join(shared.split())
    assert "unlabelled tokens" not in shared and "LoRA rank" not in shared  # cpt's and lora's own lines


def test_plan_and_estimate_refuse_the_same_sequence_length():
    for command in (["estimate", "-m", "gpt2", "--seq-len", "5000"],
                    ["plan", "-m", "gpt2", "--tokens", "1M", "--seq-len", "5000"]):
        result = run(*command)
        assert result.exit_code == 2 and "exceed gpt2's context of 1024" in result.output


def test_validate_and_gpus_tables_have_no_scientific_notation():
    for command in (["validate"], ["gpus"], ["models"]):
        result = run(*command)
        assert result.exit_code == 0
        assert not re.search(r"\d\.?\d*e[+-]\d", result.output), command
