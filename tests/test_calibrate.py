"""costplan calibrate on the CPU: measure, write the profile, estimate with it; torchrun + gloo."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import costplan
from costplan.cli import cli
from costplan.profile import ProfileError, load_profile


@pytest.fixture(scope="module")
def cpu_profile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("profile")
    out, cache = folder / "cpu.json", folder / "cache"
    result = CliRunner().invoke(cli, ["calibrate", "--quick", "--out", str(out)], env={"COSTPLAN_CACHE": str(cache)})
    assert result.exit_code == 0, result.output
    saved = list((cache / "profiles").iterdir())
    assert [p.suffix for p in saved] == [".json"]  # written atomically: no temporary left behind
    assert json.loads(saved[0].read_text()) == json.loads(out.read_text())
    return out, json.loads(out.read_text())


@pytest.mark.needs_torch
def test_cpu_calibration_measures_and_saves(cpu_profile):
    path, data = cpu_profile
    assert data["version"] == 1 and data["device"]["kind"] == "cpu" and data["gpu_key"] is None
    assert {"full", "lora", "prompt"} <= set(data["methods"])
    for entry in data["methods"].values():
        assert entry["seconds"] > 0 and entry["achieved_flops_per_second"] == pytest.approx(
            entry["flops"] / entry["seconds"])
    # Even 2 busy CPU cores do 0.1 GFLOP/s on the largest matmul (small ones are dispatch-bound).
    largest = max(data["gemm"], key=lambda p: p.get("m", 0) * p.get("n", 0) * p.get("k", 0))
    assert largest["flops_per_second"] > 1e8
    assert data["copy_bandwidth_bytes_per_second"] > 1e8


@pytest.mark.needs_torch
def test_a_cpu_profile_leaves_gpu_projections_on_defaults(cpu_profile):
    path, _ = cpu_profile
    profile = load_profile(path)
    est = costplan.estimate("7b", "lora", gpu="h100", profile=profile)
    default = costplan.estimate("7b", "lora", gpu="h100")
    assert est.wall_seconds == default.wall_seconds
    assert any("measured on a CPU" in a for a in est.assumptions)


def fake_gpu_profile(folder, key: str = "a100-80gb", *, gemm_fraction: float = 0.8, step_ratio: float = 1.25,
                     name: str = "NVIDIA A100-SXM4-80GB") -> str:
    """A GPU calibration profile as `costplan calibrate` writes one, with chosen measurements."""
    from costplan.hardware import gpu

    spec = gpu(key)
    peak = spec.peak_flops["bf16"]
    method = {"seconds": step_ratio * 0.1, "predicted_seconds": 0.1, "flops": 1e12,
              "achieved_flops_per_second": 1e13, "max_allocated": 10e9, "max_reserved": 11e9,
              "analytic_peak": 10e9, "power_watts": 300.0, "context_bytes": 0.6e9}
    data = {"version": 1, "created": "2026-11-29", "device": {"kind": "cuda", "name": name, "memory_bytes": 85e9},
            "gpu_key": key, "precision": "bf16", "seq_len": 512,
            "gemm": [{"dtype": "bf16", "m": 4096, "n": 4096, "k": 4096, "seconds": 1.0,
                      "flops_per_second": gemm_fraction * peak}],
            "copy_bandwidth_bytes_per_second": 0.9 * spec.bandwidth_bytes_per_s,
            "attention": {"seq_len": 512, "seconds": 1.0, "flops_per_second": 0.8 * peak},
            "methods": {m: dict(method) for m in ("full", "lora", "prompt")}}
    path = folder / f"{key}.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_a_gpu_profile_replaces_the_tables_constants_on_its_gpu_only(tmp_path):
    path = fake_gpu_profile(tmp_path, "a100-80gb", gemm_fraction=0.6, step_ratio=1.25)
    profile = load_profile(path)
    assert profile.factor("gemm_efficiency", "a100-80gb", "ampere").value == pytest.approx(0.6)
    assert profile.factor("bandwidth_efficiency", "a100-80gb").value == pytest.approx(0.9)
    assert profile.factor("attention_efficiency", "a100-80gb").value == pytest.approx(0.4)  # causal: half counted
    assert profile.allocator_slack() == pytest.approx(0.1)  # reserved 11 GB over allocated 10 GB
    assert profile.cuda_context_bytes() == pytest.approx(0.6e9)
    assert profile.correction("llama-2-7b", "lora", "a100-80gb").factor == pytest.approx(1.25)
    on_a100 = costplan.estimate("7b", "lora", gpu="a100", tokens=1e8, profile=profile, gpus=1, micro_batch=1,
                                grad_ckpt=False)
    default = costplan.estimate("7b", "lora", gpu="a100", tokens=1e8, gpus=1, micro_batch=1, grad_ckpt=False)
    assert on_a100.wall_seconds > default.wall_seconds  # slower GEMMs and a measured 25% slower step
    # Measured board power replaces the 400 W TDP in the energy figure, on the calibrated GPU type.
    kwh = costplan.estimate("7b", "lora", gpu="a100", tokens=1e8, profile=profile, pue=1.0)
    assert kwh.energy_kwh == pytest.approx(kwh.gpus * 300 * kwh.wall_seconds / 3.6e6)
    assert any("calibrated on NVIDIA A100" in a for a in on_a100.assumptions)
    # Another GPU type keeps the table's constants.
    on_h100 = costplan.estimate("7b", "lora", gpu="h100", tokens=1e8, profile=profile)
    assert on_h100.wall_seconds == pytest.approx(costplan.estimate("7b", "lora", gpu="h100", tokens=1e8).wall_seconds)
    assert any("keeps the table's constants" in a for a in on_h100.assumptions)
    # Saved in the cache, it is picked up by default for the matching GPU type only.
    cache = os.path.join(os.environ["COSTPLAN_CACHE"], "profiles")
    os.makedirs(cache, exist_ok=True)
    with open(path) as src, open(os.path.join(cache, "a100.json"), "w") as dst:
        dst.write(src.read())
    assert costplan.estimate("7b", "lora", gpu="a100", tokens=1e8, gpus=1, micro_batch=1,
                             grad_ckpt=False).wall_seconds == pytest.approx(on_a100.wall_seconds)


@pytest.mark.parametrize("content,message", [
    ("{not json", "not a readable calibration profile"),
    ('{"version": 7}', "not a costplan calibration profile"),
    ('{"version": 1, "device": {"kind": "cuda"}, "methods": {}, "gemm": []}', "damaged calibration profile"),
])
def test_broken_profiles_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "p.json"
    path.write_text(content)
    result = CliRunner().invoke(cli, ["estimate", "--profile", str(path)])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.needs_torch
def test_collectives_under_torchrun_with_gloo(tmp_path):
    out = tmp_path / "collectives.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                          "-m", "costplan", "calibrate", "--collectives", "--quick", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    points = json.loads(out.read_text())["collectives"]
    assert len(points) >= 3 and {p["backend"] for p in points} == {"gloo"} and points[0]["world_size"] == 2
    assert all(p["all_reduce_bus_bytes_per_second"] > 0 for p in points)


@pytest.mark.needs_torch
def test_collectives_outside_torchrun_is_a_clear_error():
    result = CliRunner().invoke(cli, ["calibrate", "--collectives"])
    assert result.exit_code == 2 and "torchrun" in result.output


FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "logs")


def test_learning_from_a_trainer_state_json_scales_later_estimates():
    from costplan.runlogs import read_log

    path = os.path.join(FIXTURES, "trainer_state.json")
    measured = read_log(path, seq_len=None, gpus=1)
    assert measured.tokens_per_second_per_gpu == pytest.approx(500 * 16 * 2048 / 3276.8)
    settings = ["-m", "8b", "--method", "lora", "--gpu", "a100", "--seq-len", "2048", "--micro-batch", "4",
                "--global-batch", "16", "--no-grad-ckpt"]
    before = costplan.estimate("8b", "lora", gpu="a100", gpus=1, seq_len=2048, micro_batch=4, global_batch=16,
                               grad_ckpt=False, tokens=1e8)
    result = CliRunner().invoke(cli, ["calibrate", "--from-log", path, *settings])
    assert result.exit_code == 0, result.output
    after = costplan.estimate("8b", "lora", gpu="a100", gpus=1, seq_len=2048, micro_batch=4, global_batch=16,
                              grad_ckpt=False, tokens=1e8)
    # The correction multiplies the step's compute: the same run is now predicted at the log's speed.
    assert after.tokens_per_second == pytest.approx(measured.tokens_per_second_per_gpu, rel=0.02)
    assert after.correction_applied == pytest.approx(before.tokens_per_second / measured.tokens_per_second_per_gpu)
    assert any("trainer_state.json" in a for a in after.assumptions)
    # Another GPU type or method is untouched.
    assert costplan.estimate("8b", "full", gpu="a100", tokens=1e8).correction_applied is None


def test_learning_from_a_torchtune_log_takes_the_steady_median():
    from costplan.runlogs import read_log

    measured = read_log(os.path.join(FIXTURES, "torchtune_log_1732800000.txt"), seq_len=None, gpus=1)
    assert measured.tokens_per_second_per_gpu == pytest.approx(2900.0)


@pytest.mark.parametrize("content,message", [
    ('{"log_history": []}', "no log_history"),
    ('{"log_history": [{"loss": 1.0, "step": 10}]}', "did not finish"),
    ('{"log_history": [{"train_runtime": -3, "train_samples_per_second": 1}]}', "positive"),
    ("Step 1 | loss:1.0\n", "tokens_per_second_per_gpu"),
    # a speed that is no number, or no finite one, is not a step's speed
    ("Step 1 | tokens_per_second_per_gpu:1.2.3\nStep 2 | tokens_per_second_per_gpu:1e999\n",
     "tokens_per_second_per_gpu"),
    ('{"log_history": [{"train_runtime": 1e-10, "num_input_tokens_seen": 1e308}]}', "not a training speed"),
])
def test_bad_logs_are_one_line(tmp_path, content, message):
    path = tmp_path / ("trainer_state.json" if content.startswith("{") else "log_1.txt")
    path.write_text(content)
    result = CliRunner().invoke(cli, ["calibrate", "--from-log", str(path), "--seq-len", "2048"])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.needs_torch
def test_the_gpu_check_runs_its_cpu_path(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gpu_check", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gpu_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.run(cpu=True, quick=True, out=tmp_path)
    assert {r["method"] for r in rows} == {"full", "lora", "prompt"}
    assert (tmp_path / "gpu_check.csv").is_file() and (tmp_path / "gpu_check.md").is_file()
    for r in rows:  # the live peak of a real step against the analytic peak
        assert r["measured_step_s"] > 0 and abs(r["allocated_error"]) < 0.02
    with open(tmp_path / "saved_tensors.csv") as f:  # the meta side of the saved-tensor comparison
        assert {r["where"] for r in csv.DictReader(f)} == {"meta (costplan's autocast emulation)"}


@pytest.mark.needs_torch
def test_the_saved_tensor_listing_shows_the_gelu_chain_autocast_keeps():
    # GPT-2's gelu_new, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), on the bf16 output x of c_fc under
    # autocast: pow runs in fp32 (autocast's fp32 list) and keeps its fp32 copy of x; tanh keeps its fp32
    # output; the last product keeps its operands, 0.5·x (bf16) and 1 + tanh (fp32); c_proj keeps its
    # input cast to bf16, as a (batch·sequence) x 3072 matrix. At micro-batch 8, sequence 1024:
    module = _gpu_check_module()
    rows = {(r["shape"], r["dtype"]): r for r in module.saved_tensors("meta")}
    width = 8 * 1024 * 3072
    assert rows[("8x1024x3072", "float32")]["count"] == 3
    assert rows[("8x1024x3072", "float32")]["bytes"] == 3 * 4 * width
    assert rows[("8x1024x3072", "bfloat16")]["count"] == 1 and rows[("8192x3072", "bfloat16")]["count"] == 1
    # the fused dropout's one-byte masks after the two residual branches
    assert rows[("8x1024x768", "bool")]["bytes"] == 2 * 8 * 1024 * 768


def _gpu_check_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gpu_check", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gpu_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_peaks_measured_on_an_h200_hold(tmp_path):
    # benchmarks/gpu_check.py on one H200 (2026-11-30, torch 2.11, transformers 5.24, bitsandbytes 0.50):
    # torch.cuda.max_memory_allocated of real steps. Re-estimated with today's model, every Llama-family
    # step (LoRA, QLoRA with bitsandbytes' own NF4, prompt tuning, full fine-tuning in bf16-mixed and
    # bf16-true, torchtune's LoRA) is within 2% of what the allocator held, and the reserve within 10%.
    # (GPT-2's step held 1.7 GiB more than costplan counts: not explained yet.)
    import shutil

    shutil.copytree(os.path.join(os.path.dirname(__file__), "..", "tables", "generated", "gpu_check_h200"),
                    tmp_path / "run")
    rows = _gpu_check_module().reestimate(tmp_path / "run")
    llama = [r for r in rows if r["model"] != "gpt2"]
    assert len(llama) == 10 and all(r["status"] == "ran" for r in llama)
    for r in llama:
        assert abs(r["allocated_error"]) < 0.02, r["case"]
        assert abs(r["reserved_error"]) < 0.10, r["case"]
    # Step time: the steps costplan puts at a quarter of a second or more (7B-8B models: full
    # fine-tuning, checkpointed LoRA) within 25%; the shorter ones ran 20-60% slower than estimated
    # (fixed per-step costs the estimate leaves out, some of them this machine's host).
    long = [r for r in llama if r["estimated_step_s"] >= 0.25]
    assert len(long) == 4 and all(-0.25 < r["step_error"] < 0 for r in long)
    assert sorted(r["step_error"] for r in llama)[len(llama) // 2] < -0.15


def test_a_profile_measured_under_expandable_segments_keeps_that_reserve_apart(tmp_path):
    # The reserve a calibration measures belongs to the allocator mode it ran under: measured with
    # expandable segments it replaces only that mode's slack, and the default mode keeps the table's.
    path = Path(fake_gpu_profile(tmp_path, "a100-80gb"))
    data = json.loads(path.read_text())
    data["allocator"] = "expandable"
    path.write_text(json.dumps(data))
    profile = load_profile(str(path))
    assert profile.allocator_slack(expandable=True) == pytest.approx(0.1)  # reserved 11 GB over 10 GB
    assert profile.allocator_slack() == pytest.approx(0.12)  # tables/efficiency.csv allocator_slack
    data["allocator"] = "segments"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="allocator"):
        load_profile(str(path))


def test_calibration_names_the_allocator_mode_it_runs_under(monkeypatch):
    from costplan.calibrate import allocator_mode

    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    assert allocator_mode() == "default"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128, expandable_segments:True")
    assert allocator_mode() == "expandable"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:False")
    assert allocator_mode() == "default"
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")
    monkeypatch.setenv("PYTORCH_ALLOC_CONF", "expandable_segments:True")
    assert allocator_mode() == "expandable"


@pytest.mark.needs_torch
def test_a_measured_step_is_timed_before_it_is_traced_and_the_trace_is_unchanged():
    # The GPU check's path on the CPU: measure_steps times plain steps (before any tracing) and
    # count_flops=False (CUDA's grouped-query shapes trip torch's counter) leaves the FLOPs at 0;
    # the traced peak is the same step's either way.
    from costplan.methods import Lora
    from costplan.tracing import trace_training_step
    from costplan.workload import Workload
    from tests.specs import TRACE

    work = Workload(seq_len=32, micro_batch=2, precision="fp32")
    plain = trace_training_step(TRACE, Lora(), work)
    measured = trace_training_step(TRACE, Lora(), work, measure_steps=2, count_flops=False)
    assert plain.flops > 0 and measured.flops == 0 and plain.step_seconds is None
    assert measured.step_seconds > 0 and measured.device_allocated_bytes is None  # no CUDA allocator here
    assert measured.peak_bytes == plain.peak_bytes


def test_a_trainer_state_with_nan_grad_norms_is_read(tmp_path):
    # Python's json writes a NaN or infinite grad_norm as NaN / Infinity, and the Trainer logs them
    # (found in published trainer_state.json files); only train_runtime and the speed must be numbers.
    from costplan.runlogs import read_log

    path = tmp_path / "trainer_state.json"
    path.write_text('{"log_history": [{"loss": 2.1, "grad_norm": NaN, "step": 10}, '
                    '{"loss": 1.9, "grad_norm": Infinity, "step": 20}, '
                    '{"train_runtime": 100.0, "train_samples_per_second": 4.0, "step": 20}]}')
    assert read_log(path, seq_len=512, gpus=2).tokens_per_second_per_gpu == pytest.approx(4.0 * 512 / 2)
    path.write_text('{"log_history": [{"train_runtime": NaN, "train_samples_per_second": 4.0}]}')
    with pytest.raises(costplan.errors.CostplanError, match="train_runtime must be a positive number"):
        read_log(path, seq_len=512, gpus=1)
