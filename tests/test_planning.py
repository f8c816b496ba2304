"""Planning beyond one estimate: compare, plan (search + Pareto), cram, scaling, energy, ranges."""

import itertools
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

import costplan
from costplan import engine
from costplan.api import hardware
from costplan.cli import cli
from costplan.compare import compare
from costplan.cram import TOKENS_PER_PARAM, cram
from costplan.energy import energy_model
from costplan.errors import CostplanError
from costplan.flops import training_flops
from costplan.hardware import gpu
from costplan.memory import training_memory
from costplan.methods import FullFineTune, Lora, PromptTuning, QLora
from costplan.model import preset
from costplan.plan import STARTUP_SECONDS, search
from costplan.profile import default_profile
from costplan.scaling import link
from costplan.speed import step_shape
from costplan.workload import Workload
from tests.specs import sharded


def test_memory_phases_on_arrays_equal_each_scalar_configuration():
    """One formula: the plan's arrays give, element by element, what one configuration gives."""
    profile = default_profile()
    slack, context = profile.allocator_slack(), profile.cuda_context_bytes()
    for name, method, ckpt, attention in itertools.product(
            ["llama-3-8b", "gpt2", "mixtral-8x7b"], [FullFineTune(), Lora(), QLora(), PromptTuning()],
            [False, True], ["flash", "eager"]):
        one = training_memory(preset(name), method, Workload(seq_len=1024, grad_ckpt=ckpt, attention=attention))
        grid = list(itertools.product([1, 3], [1, 4, 16], [0, 1, 2, 3], [1, 2], [1, 2], [1, 2]))
        mb, dp, zero, accum, tp, pp = (np.array(column) for column in zip(*grid, strict=True))
        arrays = engine.device_bytes(engine.peak_bytes(engine.training_phases(
            one, dp=dp, zero=zero, micro_batch=mb, grad_accum=accum, tp=tp, pp=pp)), slack, context)
        for i, (m, d, z, a, t, p) in enumerate(grid):
            expected = sharded(one, dp=d, zero=z, grad_accum=a, micro_batch=m, tp=t, pp=p).device_bytes
            assert float(arrays[i]) == pytest.approx(expected, rel=1e-12)


def test_hierarchical_collectives_by_hand():
    # One H100 node: a ring inside the node over NVLink (450 GB/s one way per GPU).
    h100 = gpu("h100-sxm")
    hw = hardware(h100, link("h100-sxm"), "bf16", default_profile())
    grads = 16e9  # 8B parameters' bf16 gradients
    once, per_batch = engine.data_parallel_seconds(grads, grads, dp=8, tp=1, pp=1, zero=1, hw=hw)
    buckets = math.ceil(grads / engine.DDP_BUCKET_BYTES)
    intra = 2 * 7 / 8 * grads / 450e9
    assert once == pytest.approx(intra + engine.NCCL_LATENCY_SECONDS * buckets)
    assert per_batch == 0
    # Four nodes of eight: a reduce-scatter inside each node, the node's 8 x 400 Gb/s NICs carry its
    # share between nodes (2 (4-1)/4 of the gradients), then an all-gather inside the node.
    once4, _ = engine.data_parallel_seconds(grads, grads, dp=32, tp=1, pp=1, zero=1, hw=hw)
    inter = 2 * 3 / 4 * grads / (8 * 400e9 / 8)
    latency = engine.NCCL_LATENCY_SECONDS * buckets + engine.INTER_NODE_LATENCY_SECONDS
    assert once4 == pytest.approx(intra + inter + latency)
    # ZeRO-3 gathers the weights twice and reduce-scatters the gradients in every micro-batch.
    zero_once, zero_each = engine.data_parallel_seconds(grads, grads, dp=8, tp=1, pp=1, zero=3, hw=hw)
    assert zero_once == 0
    one_pass = 7 / 8 * grads / 450e9 + engine.NCCL_LATENCY_SECONDS
    assert zero_each == pytest.approx(3 * one_pass)
    # Accumulating without sync (the Trainer's and LitGPT's FSDP), the reduce-scatter runs once a step;
    # FSDP1 units mixing frozen and trainable parameters reduce-scatter their whole flat gradients.
    sync_once, sync_each = engine.data_parallel_seconds(grads, grads, dp=8, tp=1, pp=1, zero=3, hw=hw, no_sync=True)
    assert (sync_once, sync_each) == (pytest.approx(one_pass), pytest.approx(2 * one_pass))
    flat_once, _ = engine.data_parallel_seconds(1e6, grads, dp=8, tp=1, pp=1, zero=3, hw=hw, no_sync=True,
                                                flat_gradient_bytes=grads)
    assert flat_once == pytest.approx(one_pass)
    assert link("h100-sxm").node_bytes_per_s == 8 * 400e9 / 8
    # GeForce cards have no peer-to-peer: transfers go through host memory at half the PCIe rate.
    assert link("rtx-4090").intra_bytes_per_s == 31.5e9 / 2


def test_scaling_efficiency_shows_up_in_time():
    one = costplan.estimate("8b", "full", gpu="h100", gpus=8, zero=3, micro_batch=1, grad_ckpt=True, tokens=1e9)
    many = costplan.estimate("8b", "full", gpu="h100", gpus=64, zero=3, micro_batch=1, grad_ckpt=True, tokens=1e9,
                             global_batch=512)
    assert 0 < many.scaling_efficiency <= 1 and 0 < one.scaling_efficiency <= 1
    assert many.step.data_parallel_total > one.step.data_parallel_total  # the node network is slower
    # Adapters send almost nothing: LoRA scales nearly perfectly.
    lora = costplan.estimate("8b", "lora", gpu="h100", gpus=64, tokens=1e9, global_batch=256)
    assert lora.scaling_efficiency > 0.98


def test_energy_and_co2_by_hand():
    est = costplan.estimate("7b", "lora", gpu="a100", tokens=1e8, pue=1.2, grid="0.5")
    kwh = est.gpus * 400 * est.wall_seconds / 3600 / 1000 * 1.2  # A100 SXM TDP 400 W
    assert est.energy_kwh == pytest.approx(kwh)
    assert est.co2_kg == pytest.approx(0.5 * kwh)
    assert energy_model(grid="france").grid_kg_per_kwh < energy_model(grid="world").grid_kg_per_kwh


def test_ranges_follow_the_spread_of_published_runs():
    est = costplan.estimate("7b", "lora", gpu="h100", tokens=1e8)
    spread = default_profile().time_spread()
    low, high = est.wall_seconds_range
    assert low < est.wall_seconds < high
    assert low == pytest.approx(est.wall_seconds * spread.low)
    assert high == pytest.approx(est.wall_seconds * spread.high)
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
    from costplan.terms import Mem

    def model_state(e):  # what does not shrink with the micro-batch
        return sum(v for k, v in e.memory.terms.items() if k in (Mem.WEIGHTS, Mem.MASTER, Mem.OPTIMIZER))

    assert by["lora"].gpus == 1
    assert model_state(by["full"]) * by["full"].gpus > 3 * model_state(by["lora"])
    assert by["lora"].gpu_hours < by["full"].gpu_hours < by["cpt"].gpu_hours
    assert result.relative_cost(by["cpt"]) > 50 * result.relative_cost(by["lora"])
    assert model_state(by["qlora"]) < model_state(by["lora"]) / 2


def _same_as_estimate(c, model, tokens, **extra):
    """Re-estimate a plan row with its layout pinned: the numbers must be identical."""
    est = costplan.estimate(model, c.method, gpu=c.gpu, gpus=c.gpus, zero=c.zero, micro_batch=c.micro_batch,
                            grad_ckpt=c.grad_ckpt, precision=c.precision, tokens=tokens, tp=c.tp, pp=c.pp,
                            framework=c.framework, startup_seconds=STARTUP_SECONDS, provider=c.provider, **extra)
    assert est.placement.fits
    assert est.placement.grad_accum == c.grad_accum
    assert est.memory.device_bytes == pytest.approx(c.device_bytes, rel=1e-12)
    assert est.wall_seconds == pytest.approx(c.wall_seconds, rel=1e-12)
    assert est.cost_usd == pytest.approx(c.cost_usd, rel=1e-12)
    return est


def test_plan_results_fit_meet_the_deadline_and_are_non_dominated():
    deadline, budget = 48 * 3600, 5000
    result = search("70b", ("lora", "qlora"), tokens=1e9, deadline_seconds=deadline, budget_usd=budget)
    assert result.pareto and result.evaluated > 1000
    for c in result.pareto:
        assert c.wall_seconds <= deadline and c.cost_usd <= budget
        _same_as_estimate(c, "70b", 1e9)
    costs = [c.cost_usd for c in result.pareto]
    times = [c.wall_seconds for c in result.pareto]
    assert costs == sorted(costs) and times == sorted(times, reverse=True)
    for a, b in itertools.permutations(result.pareto, 2):
        assert not (a.cost_usd <= b.cost_usd and a.wall_seconds <= b.wall_seconds
                    and (a.cost_usd, a.wall_seconds) != (b.cost_usd, b.wall_seconds))


def test_plan_and_estimate_agree_with_tensor_parallelism_and_a_profile(tmp_path):
    from tests.test_calibrate import fake_gpu_profile

    profile_path = fake_gpu_profile(tmp_path, "h100-sxm")
    from costplan.profile import load_profile

    profile = load_profile(profile_path)
    result = search("70b", ("cpt",), tokens=5e10, gpus=("h100-sxm",), framework="megatron", max_gpus=256,
                    profile=profile)
    rows = [c for c in result.pareto if c.tp > 1]
    assert rows, "a 70B model's continual pretraining should use tensor parallelism"
    for c in rows[:3]:
        est = _same_as_estimate(c, "70b", 5e10, profile=profile)
        assert "calibrated" in " ".join(est.assumptions)
    without = search("70b", ("cpt",), tokens=5e10, gpus=("h100-sxm",), framework="megatron", max_gpus=256)
    assert without.pareto[0].wall_seconds != result.pareto[0].wall_seconds  # the profile changes the answer


def test_plan_and_estimate_build_litgpts_model_alike():
    # LitGPT unties a tied checkpoint's head, quantizes it under QLoRA and puts dropout (0.05) on its
    # adapters, in plan as in estimate.
    for method in ("lora", "qlora", "full"):
        result = search("gemma-2b", (method,), tokens=1e8, gpus=("a10g",), framework="litgpt")
        assert result.pareto
        for c in result.pareto[:3]:
            est = _same_as_estimate(c, "gemma-2b", 1e8)
            assert any("weight of its own" in note for note in est.assumptions)


def test_plan_with_an_impossible_deadline_is_a_clear_answer():
    result = CliRunner().invoke(cli, ["plan", "--model", "70b", "--method", "full", "--tokens", "1T",
                                      "--deadline", "1h", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["feasible"] is False and data["rows"] == [] and "1h deadline" in data["why"]
    text = CliRunner().invoke(cli, ["plan", "--model", "70b", "--method", "full", "--tokens", "1T",
                                    "--deadline", "1h"])
    assert text.exit_code == 0 and "No configuration meets a 1h deadline" in text.output


def test_plan_never_trains_a_4bit_base_in_fp8_and_searches_fp8_only_when_asked():
    default = search("8b", ("qlora", "lora"), tokens=1e8, gpus=("h100-sxm",))
    assert {c.precision for c in default.pareto} == {"bf16"}
    asked = search("8b", ("qlora",), tokens=1e8, gpus=("h100-sxm",), precisions=("bf16", "fp8"))
    assert {c.precision for c in asked.pareto} == {"bf16"}
    assert any("quantized base is not trained in fp8" in n for n in asked.notes)


def test_cram_compute_optimal_point_obeys_its_rule():
    result = cram("h100", 24)
    assert result.optimal_tokens == pytest.approx(TOKENS_PER_PARAM * result.optimal_params)
    assert 6 * result.optimal_params * result.optimal_tokens == pytest.approx(result.compute_flops)
    # The budget is what a model of that size achieves: below the dense peak, above a tenth of it.
    assert 0.1 * 989.5e12 * 86400 < result.compute_flops < 989.5e12 * 86400
    # Full training keeps 16+ bytes per parameter: on 80 GiB the largest fitting model is 2-4B.
    assert 2e9 < result.largest_fitting.params < 4.5e9
    assert all(not o.fits for o in result.options if o.params > 5e9)
    # Small models are held back by the loss over the vocabulary and by memory traffic.
    tiny, small = result.options[0], result.options[2]
    assert tiny.mfu < small.mfu and tiny.tokens_per_second < 3e6
    assert next(o for o in result.options if 100e6 < o.params < 200e6).finishes


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
                                  "--gpu", "a100,l40s", "--json"])
    assert planned.exit_code == 0, planned.output
    assert {c["gpu"] for c in json.loads(planned.output)["rows"]} <= {"a100-80gb", "l40s"}
    bad = runner.invoke(cli, ["plan", "--model", "8b", "--tokens", "100M", "--deadline", "soon"])
    assert bad.exit_code == 2 and "cannot read 'soon'" in bad.output


def test_plan_search_is_vectorised():
    # Pretraining's large global batch opens the grid: GPU types x counts x TP x PP x ZeRO x micro-batches.
    result = search("8b", ("pretrain",), tokens=1e11, framework="megatron", price=2.0, max_gpus=4096)
    assert result.evaluated > 40_000
    assert np.isfinite([c.cost_usd for c in result.pareto]).all()


def test_tensor_parallel_training_splits_memory_and_adds_collectives():
    plain = costplan.estimate("70b", "full", gpu="h100", gpus=32, zero=1, tokens=1e9, grad_ckpt=True,
                              framework="megatron", tp=1, pp=1, micro_batch=1)
    tp4 = costplan.estimate("70b", "full", gpu="h100", gpus=32, zero=1, tp=4, pp=1, tokens=1e9, grad_ckpt=True,
                            framework="megatron", micro_batch=1)
    assert tp4.placement.dp == 8 and tp4.gpus == 32
    # Weights and activations split 4 ways; ZeRO-1 shards states over 8 replicas instead of 32.
    from costplan.terms import Mem

    assert tp4.memory.terms[Mem.WEIGHTS] == pytest.approx(plain.memory.terms[Mem.WEIGHTS] / 4)
    assert tp4.step.tensor_parallel > 0 and plain.step.tensor_parallel == 0
    with pytest.raises(costplan_error()):
        costplan.estimate("70b", "full", gpu="h100", gpus=32, tp=16, framework="megatron")  # beyond a node
    with pytest.raises(costplan_error()):
        costplan.estimate("70b", "full", gpu="h100", gpus=30, tp=4, framework="megatron")  # not a multiple
    with pytest.raises(costplan_error()):
        costplan.estimate("70b", "full", gpu="h100", gpus=32, tp=4)  # the HF Trainer has no TP


def costplan_error():
    from costplan.errors import CostplanError

    return CostplanError


def test_the_plans_price_grid_is_hardware_price_at_every_gpu_type_and_count():
    # plan prices its whole (GPU type x count) grid at once; each cell is the offer price() picks for
    # that many GPUs: whole instances, clusters only where sold, ties alphabetical.
    import numpy as np

    from costplan.hardware import Ownership, price
    from costplan.plan import _offers
    from costplan.tables import read_table

    keys = sorted({row["key"] for row in read_table("gpus")})
    counts = [1, 2, 3, 4, 6, 8, 9, 12, 16, 24, 64, 100, 1024]
    owned = Ownership(hardware_usd_per_gpu_hour=0.3, usd_per_kwh=0.2)
    for provider, spot, override, own in ((None, False, None, None), (None, True, None, None),
                                          ("runpod", False, None, None), (None, False, 2.0, None),
                                          (None, False, None, owned)):
        grid = _offers(keys, counts, provider, spot, override, own, [300.0] * len(keys), 1.2)
        priced = 0
        for i, key in enumerate(keys):
            for j, n in enumerate(counts):
                offer = price(key, provider, spot, override, gpus=n, owned=own, watts=300.0, pue=1.2)
                if offer is None:
                    assert np.isnan(grid.price[i, j])
                    continue
                priced += 1
                assert grid.price[i, j] == offer.usd_per_gpu_hour
                assert grid.billed[i, j] == offer.billed_gpus(n) / n
                assert (grid.provider[i][j], grid.instance[i][j]) == (offer.provider, offer.instance)
        assert priced >= (len(keys) * len(counts) if override or own else 10)  # flat rates price every cell


def test_pipeline_bubble_follows_the_schedule():
    # Llama-2-70B (80 layers, hidden 8192), 64 H100s as TP 4 x PP 4 x DP 4, micro-batch 1 of 4096 tokens, 16
    # micro-batches per step. Per micro-batch each stage sends its neighbour 4096 x 8192 bf16 activations
    # forward and their gradients back, split over TP 4, through the node's NICs: 8 x 400 Gb/s shared by 8 GPUs
    # = 50 GB/s each. Plain 1F1B (v = 1) idles pp - 1 = 3 micro-batch slots; interleaved with v virtual stages
    # (by default 80 // (2 x 4) = 10) idles 3/v of a slot and sends v times as often (Narayanan et al. 2021,
    # Sec. 2.2).
    common = dict(gpus=64, tp=4, pp=4, micro_batch=1, global_batch=64, seq_len=4096, tokens=1e9, zero=1,
                  grad_ckpt=True)
    message = 4096 * 8192 * 2 / 4 / 50e9
    for given, virtual in ((1, 1), (None, 10), (5, 5), (40, 20)):  # never more stages than the 20 layers a GPU holds
        est = costplan.estimate("llama-2-70b", "pretrain", gpu="h100", virtual_stages=given, **common)
        per_micro = est.step.compute / 16
        assert est.step.pipeline_bubble == pytest.approx(3 / virtual * per_micro + 16 * 2 * virtual * message,
                                                          rel=1e-9)
        assert any(f"({f'interleaved 1F1B, {virtual} virtual stages' if virtual > 1 else '1F1B, one stage'}" in a
                   for a in est.assumptions)
    with pytest.raises(CostplanError, match="--virtual-stages"):
        costplan.estimate("llama-2-70b", "pretrain", virtual_stages=0, **common)


def test_a_stated_goodput_replaces_the_fitted_run_allowance():
    common = dict(gpus=64, tokens=1e11, seq_len=4096)
    steady = costplan.estimate("llama-2-7b", "pretrain", steady_state=True, **common)
    stated = costplan.estimate("llama-2-7b", "pretrain", goodput=0.9, **common)
    fitted = costplan.estimate("llama-2-7b", "pretrain", **common)
    assert stated.wall_seconds == pytest.approx(steady.wall_seconds / 0.9, rel=1e-12)
    goodput = default_profile().value("run_goodput").value
    assert fitted.wall_seconds == pytest.approx(steady.wall_seconds / goodput, rel=1e-12)
    assert "wall time: steady-state steps over a whole-run efficiency of 90% (given)" in stated.assumptions
    with pytest.raises(CostplanError, match="not both"):
        costplan.estimate("llama-2-7b", "pretrain", goodput=0.9, steady_state=True, **common)
    result = CliRunner().invoke(cli, ["estimate", "-m", "7b", "--method", "pretrain", "--goodput", "1.5"])
    assert result.exit_code == 2 and "--goodput" in result.output


def test_offloaded_parameters_cross_the_host_link_once_per_micro_batch_per_shard():
    # FSDP CPU offload of Llama-2-7B's bf16 base under LoRA: each GPU copies its own shard of the weights up
    # in forward and again in backward, whatever the micro-batch's size (the all-gather between GPUs is
    # ZeRO-3's own traffic). Before, the fetch was charged per sequence and unsharded.
    work = Workload(seq_len=2048, grad_ckpt=True, offload=("params",))
    mem = training_memory(preset("llama-2-7b"), Lora(), work)
    plain = training_memory(preset("llama-2-7b"), Lora(), Workload(seq_len=2048, grad_ckpt=True))
    assert mem.offload_param_bytes_per_micro == pytest.approx(2 * plain.weights)
    assert mem.offload_bytes_per_micro == 0
    hw = hardware(gpu("rtx-4090"), link("rtx-4090"), "bf16", default_profile())
    fetch = 2 * plain.weights / 2 / (hw.host_link_bytes_per_s * engine.HOST_LINK_EFFICIENCY)  # dp 2, ZeRO-3
    shape = step_shape(preset("llama-2-7b"), Lora(), work, training_flops(preset("llama-2-7b"), Lora(), work))
    constants = default_profile().constants("rtx-4090", "eager")
    for micro_batch in (1, 8):
        common = dict(hw=hw, constants=constants, dp=2, tp=1, pp=1, zero=3, micro_batch=micro_batch, grad_accum=1,
                      hidden_size=4096)
        with_offload = engine.training_step(shape, mem, **common)
        without = engine.training_step(shape, replace(mem, offload_param_bytes_per_micro=0.0), **common)
        hidden = engine.BACKWARD_OVERLAP * with_offload.micro_batch
        assert with_offload.data_parallel - without.data_parallel == pytest.approx(max(fetch - hidden, 0.0))


def test_pretraining_without_a_gpu_count_finishes_within_the_practice_target():
    # tables/practice.csv: the fewest whole nodes that finish within 30 days. The wall time printed (steady-state
    # steps over the run allowance) is what must fit: before, the steps alone were sized to 30 days and the
    # estimate printed 40 days.
    est = costplan.estimate("70b", "pretrain", tokens=2e12)
    assert est.gpus % 8 == 0 and est.wall_seconds <= 30 * 86400
    assert any("the fewest whole nodes that finish in about 30 days" in a for a in est.assumptions)
    fewer = costplan.estimate("70b", "pretrain", tokens=2e12, gpus=est.gpus - 8)
    assert fewer.wall_seconds > 30 * 86400


def test_the_fewest_gpus_that_fit_when_accumulation_would_hold_unsharded_gradients():
    """FSDP under the Trainer accumulates without sync, holding unsharded gradients; a global batch of
    2 sequences needs no accumulation on 2 or more replicas, so the search for the fewest GPUs must
    not assume it (it did, found nothing that fit, and planned 107,024 GPUs)."""
    from costplan.api import estimate

    args = dict(model="gpt-oss-20b", method="full", gpu="l40s", framework="fsdp", global_batch=2, micro_batch=1,
                seq_len=4096)
    chosen = estimate(**args)
    assert chosen.gpus == 16 and chosen.placement.fits and chosen.placement.layout.grad_accum == 1
    assert not estimate(**args, gpus=8).placement.fits  # the candidate before 16: one whole node


def test_plan_and_estimate_reserve_alike_under_axolotls_expandable_segments():
    # Axolotl runs the caching allocator with expandable segments: plan's rows carry the same smaller
    # reserve as estimate's, and that reserve is the table's 2.2% above the peak, not the default 12%.
    result = search("8b", ("qlora",), tokens=1e8, gpus=("a10g", "l40s"), framework="axolotl")
    assert result.pareto
    for c in result.pareto[:3]:
        est = _same_as_estimate(c, "8b", 1e8)
        memory = est.memory
        assert memory.reserved_bytes == pytest.approx(1.022 * memory.peak_bytes, rel=1e-12)
        assert any("expandable_segments (axolotl sets it)" in note for note in est.assumptions)


def test_plan_and_estimate_build_unsloths_4bit_experts_alike():
    # Unsloth's gpt-oss QLoRA loads its pre-quantized checkpoint, routed experts in NF4: plan's rows hold
    # the same bytes as estimate's (one stack_model builds the method for both).
    result = search("gpt-oss-20b", ("qlora",), tokens=1e8, gpus=("h100",), framework="unsloth")
    assert result.pareto
    for c in result.pareto[:3]:
        est = _same_as_estimate(c, "gpt-oss-20b", 1e8)
        assert est.method.quantize_experts
