"""Planning beyond one estimate: compare, plan (search + Pareto), cram, scaling, energy, ranges."""

import itertools
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

import costplan
from costplan.cli import cli
from costplan.compare import compare
from costplan.cram import TOKENS_PER_PARAM, cram
from costplan.energy import energy_model
from costplan.memory import device_bytes_array, shard, training_memory
from costplan.methods import FullFineTune, Lora, PromptTuning, QLora
from costplan.model import preset
from costplan.plan import STARTUP_SECONDS, search
from costplan.profile import default_profile
from costplan.scaling import data_parallel_bytes, link
from costplan.workload import Workload


def test_vectorised_memory_equals_the_scalar_phases():
    profile = default_profile()
    for name, method, ckpt, attention in itertools.product(
            ["llama-3-8b", "gpt2", "mixtral-8x7b"], [FullFineTune(), Lora(), QLora(), PromptTuning()],
            [False, True], ["flash", "eager"]):
        one = training_memory(preset(name), method, Workload(seq_len=1024, grad_ckpt=ckpt, attention=attention))
        for mb, dp, zero, accum in itertools.product([1, 3], [1, 4, 16], [0, 1, 2, 3], [1, 2]):
            work = Workload(seq_len=1024, grad_ckpt=ckpt, attention=attention, micro_batch=mb)
            expected = shard(training_memory(preset(name), method, work), dp, zero, accum, profile).device_bytes
            got = device_bytes_array(one, dp=dp, zero=zero, grad_accum=accum, micro_batch=mb, profile=profile)
            assert float(got) == pytest.approx(expected, rel=1e-12)


def test_data_parallel_volumes():
    # Ring all-reduce sends 2 (n-1)/n of the gradients; ZeRO-3 adds two weight all-gathers.
    assert data_parallel_bytes(100.0, 50.0, 1, 0) == 0
    assert data_parallel_bytes(100.0, 50.0, 4, 0) == pytest.approx(2 * 0.75 * 100)
    assert data_parallel_bytes(100.0, 50.0, 4, 2) == pytest.approx(2 * 0.75 * 100)
    assert data_parallel_bytes(100.0, 50.0, 4, 3) == pytest.approx(0.75 * (100 + 2 * 50))
    h100 = link("h100-sxm")  # NVLink inside an 8-GPU node, InfiniBand between nodes
    assert h100.bandwidth(8) == 450e9 and h100.bandwidth(16) == 50e9


def test_scaling_efficiency_shows_up_in_time():
    one = costplan.estimate("8b", "full", gpu="h100", gpus=8, zero=3, tokens=1e9, grad_ckpt=True)
    many = costplan.estimate("8b", "full", gpu="h100", gpus=64, zero=3, tokens=1e9, grad_ckpt=True)
    assert 0 < many.scaling_efficiency < one.scaling_efficiency <= 1
    ideal = one.wall_seconds * one.scaling_efficiency * 8 / 64
    assert many.wall_seconds == pytest.approx(ideal / many.scaling_efficiency)
    # Adapters send almost nothing: LoRA scales nearly perfectly.
    lora = costplan.estimate("8b", "lora", gpu="h100", gpus=64, tokens=1e9)
    assert lora.scaling_efficiency > 0.99


def test_energy_and_co2_by_hand():
    est = costplan.estimate("7b", "lora", gpu="a100", tokens=1e8, pue=1.2, grid="0.5")
    kwh = est.gpus * 400 * est.wall_seconds / 3600 / 1000 * 1.2  # A100 SXM TDP 400 W
    assert est.energy_kwh == pytest.approx(kwh)
    assert est.co2_kg == pytest.approx(0.5 * kwh)
    assert energy_model(grid="france").grid_kg_per_kwh < energy_model(grid="world").grid_kg_per_kwh


def test_ranges_follow_the_efficiency_range():
    est = costplan.estimate("7b", "lora", gpu="h100", tokens=1e8)
    low, high = est.wall_seconds_range
    assert low < est.wall_seconds < high
    assert low == pytest.approx(est.wall_seconds * 0.35 / 0.45)
    assert high == pytest.approx(est.wall_seconds * 0.35 / 0.25)
    cost_low, cost_high = est.cost_usd_range
    assert cost_low < est.cost_usd < cost_high


def test_serving_adds_the_inference_cost():
    est = costplan.estimate("8b", "lora", gpu="h100", tokens=5e7, serve_tokens=1e9)
    served = costplan.estimate("8b", "inference", gpu="h100", tokens=1e9, micro_batch=32)
    assert est.serve.cost_usd == pytest.approx(served.cost_usd)
    assert est.total_cost_usd == pytest.approx(est.cost_usd + served.cost_usd)


def test_compare_orders_approaches_for_a_7b_model():
    result = compare("7b", tokens=100e6, gpu="h100")
    by = {e.method.key: e for e in result.estimates}
    assert set(by) == {"inference", "prompt", "prefix", "lora", "qlora", "full", "cpt"}
    # Prompting only costs least; PEFT trains few parameters on one GPU; full fine-tuning needs more
    # memory and GPU-hours; continual pretraining on 10B tokens costs the most, by orders of magnitude.
    assert min(result.rows(), key=lambda r: r["cost_usd"])["method"] == "inference"
    assert by["lora"].params_trainable < 0.01 * by["full"].params_trainable
    assert by["lora"].gpus == 1 and by["full"].memory.peak_bytes > 3 * by["lora"].memory.peak_bytes
    assert by["lora"].gpu_hours < by["full"].gpu_hours < by["cpt"].gpu_hours
    assert result.relative_cost(by["cpt"]) > 50 * result.relative_cost(by["lora"])
    assert by["qlora"].memory.peak_bytes < by["lora"].memory.peak_bytes


def test_plan_results_fit_meet_the_deadline_and_are_non_dominated():
    deadline, budget = 48 * 3600, 5000
    result = search("70b", ("lora", "qlora"), tokens=1e9, deadline_seconds=deadline, budget_usd=budget)
    assert result.pareto and result.evaluated > 100_000
    for c in result.pareto:
        assert c.wall_seconds <= deadline and c.cost_usd <= budget
        # Re-estimate each front point with the scalar path: same memory, fits, same time.
        est = costplan.estimate("70b", c.method, gpu=c.gpu, gpus=c.gpus, zero=c.zero, micro_batch=c.micro_batch,
                                grad_ckpt=c.grad_ckpt, precision=c.precision, tokens=1e9)
        assert est.placement.fits
        assert est.memory.device_bytes == pytest.approx(c.device_bytes)
        assert est.wall_seconds + STARTUP_SECONDS == pytest.approx(c.wall_seconds)
    costs = [c.cost_usd for c in result.pareto]
    times = [c.wall_seconds for c in result.pareto]
    assert costs == sorted(costs) and times == sorted(times, reverse=True)
    for a, b in itertools.permutations(result.pareto, 2):
        assert not (a.cost_usd <= b.cost_usd and a.wall_seconds <= b.wall_seconds
                    and (a.cost_usd, a.wall_seconds) != (b.cost_usd, b.wall_seconds))


def test_plan_with_an_impossible_deadline_is_a_clear_answer():
    result = CliRunner().invoke(cli, ["plan", "--model", "70b", "--method", "full", "--tokens", "1T",
                                      "--deadline", "1h"])
    assert result.exit_code == 1
    assert "No configuration meets a 1h deadline" in result.output and "Traceback" not in result.output


def test_cram_compute_optimal_point_obeys_its_rule():
    result = cram("h100", 24)
    compute = 989.5e12 * 0.42 * 24 * 3600  # bf16 dense peak x default pretraining MFU x one day
    assert result.compute_flops == pytest.approx(compute)
    assert result.optimal_tokens == pytest.approx(TOKENS_PER_PARAM * result.optimal_params)
    assert 6 * result.optimal_params * result.optimal_tokens == pytest.approx(compute)
    # Full training keeps 16 bytes per parameter: on 80 GiB the largest fitting model is 2-4B.
    assert 2e9 < result.largest_fitting.params < 4.5e9
    assert all(not o.fits for o in result.options if o.params > 5e9)
    # The BERT-base-sized sanity row: a ~134M model trains on >20 tokens/param within the day.
    small = next(o for o in result.options if 100e6 < o.params < 200e6)
    assert small.finishes


def test_cram_with_a_model_counts_epochs():
    result = CliRunner().invoke(cli, ["cram", "--gpu", "a100", "--model", "7b", "--dataset-tokens", "50M", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    rows = {r["method"]: r for r in data["approaches"]}
    assert rows["lora"]["fits"] and rows["qlora"]["fits"] and not rows["full"]["fits"]
    assert rows["lora"]["epochs"] == pytest.approx(rows["lora"]["tokens_in_budget"] / 50e6)
    assert math.isclose(rows["lora"]["tokens_in_budget"] / (24 * 3600),
                        costplan.estimate("7b", "lora", gpu="a100", gpus=1).tokens_per_second)


def test_compare_and_plan_cli():
    runner = CliRunner()
    compared = runner.invoke(cli, ["compare", "--model", "8b", "--tokens", "50M", "--json"])
    assert compared.exit_code == 0, compared.output
    assert len(json.loads(compared.output)["rows"]) == 7
    planned = runner.invoke(cli, ["plan", "--model", "8b", "--tokens", "100M", "--deadline", "2d",
                                  "--gpus", "a100,l40s", "--json"])
    assert planned.exit_code == 0, planned.output
    assert {c["gpu"] for c in json.loads(planned.output)["pareto"]} <= {"a100-80gb", "l40s"}
    bad = runner.invoke(cli, ["plan", "--model", "8b", "--tokens", "100M", "--deadline", "soon"])
    assert bad.exit_code == 2 and "cannot read 'soon'" in bad.output


def test_plan_search_is_vectorised():
    # The grid: 13+ GPU types x 135 counts x 5 micro-batches x 4 stages x 2 checkpointing x 2 precisions.
    result = search("8b", ("lora",), tokens=1e8)
    assert result.evaluated > 100_000
    assert np.isfinite([c.cost_usd for c in result.pareto]).all()


def test_tensor_parallel_training_splits_memory_and_adds_collectives():
    plain = costplan.estimate("70b", "full", gpu="h100", gpus=32, zero=1, tokens=1e9, grad_ckpt=True)
    tp4 = costplan.estimate("70b", "full", gpu="h100", gpus=32, zero=1, tp=4, tokens=1e9, grad_ckpt=True)
    assert tp4.placement.dp == 8 and tp4.gpus == 32
    # Weights and activations split 4 ways; ZeRO-1 shards states over 8 replicas instead of 32.
    assert tp4.memory.terms["weights"] == pytest.approx(plain.memory.terms["weights"] / 4)
    assert any("tensor parallel 4" in a for a in tp4.assumptions)
    with pytest.raises(costplan_error()):
        costplan.estimate("70b", "full", gpu="h100", gpus=32, tp=16)  # beyond an 8-GPU node
    with pytest.raises(ValueError):
        costplan.estimate("70b", "full", gpu="h100", gpus=30, tp=4)  # not a multiple


def costplan_error():
    from costplan.errors import CostplanError

    return CostplanError
