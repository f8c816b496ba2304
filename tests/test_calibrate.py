"""costplan calibrate on the CPU: measure, write the profile, estimate with it; torchrun + gloo."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import costplan
from costplan.cli import cli
from costplan.profile import load_profile


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
    assert all(p["flops_per_second"] > 1e8 for p in data["gemm"])  # even 2 CPU cores do 0.1 GFLOP/s
    assert data["copy_bandwidth_bytes_per_second"] > 1e8


@pytest.mark.needs_torch
def test_a_cpu_profile_leaves_gpu_projections_on_defaults(cpu_profile):
    path, _ = cpu_profile
    profile = load_profile(path)
    est = costplan.estimate("7b", "lora", gpu="h100", profile=profile)
    default = costplan.estimate("7b", "lora", gpu="h100")
    assert est.mfu == default.mfu
    assert any("measured on a CPU" in a for a in est.assumptions)


def _gpu_profile(base: dict, key: str, peak: float, mfu: float) -> dict:
    data = json.loads(json.dumps(base))
    data["device"] = {"kind": "cuda", "name": "NVIDIA A100-SXM4-80GB", "memory_bytes": 85e9}
    data["gpu_key"], data["precision"] = key, "bf16"
    data["gemm"] = [{"dtype": "bf16", "m": 4096, "n": 4096, "k": 4096, "seconds": 1.0, "flops_per_second": 0.8 * peak}]
    data["copy_bandwidth_bytes_per_second"] = 0.8 * 2039e9
    for method in data["methods"].values():
        method.update(achieved_flops_per_second=mfu * peak, max_allocated=10e9, max_reserved=11e9, analytic_peak=10e9,
                      power_watts=300.0, context_bytes=0.6e9)
    return data


@pytest.mark.needs_torch
def test_a_gpu_profile_replaces_default_efficiencies_and_transfers(cpu_profile, tmp_path):
    _, base = cpu_profile
    path = tmp_path / "a100.json"
    path.write_text(json.dumps(_gpu_profile(base, "a100-80gb", 312e12, 0.5)))
    profile = load_profile(path)
    on_a100 = costplan.estimate("7b", "lora", gpu="a100", tokens=1e8, profile=profile)
    assert on_a100.mfu == pytest.approx(0.5)
    assert profile.allocator_slack() == pytest.approx(0.1)  # reserved 11 GB over allocated 10 GB
    assert profile.bandwidth().value == pytest.approx(0.8)
    assert profile.cuda_context_bytes() == pytest.approx(0.6e9)
    # Measured board power replaces the 400 W TDP in the energy figure, on the calibrated GPU type.
    kwh = on_a100_kwh = costplan.estimate("7b", "lora", gpu="a100", tokens=1e8, profile=profile, pue=1.0)
    assert on_a100_kwh.energy_kwh == pytest.approx(kwh.gpus * 300 * kwh.wall_seconds / 3.6e6)
    assert any("calibrated on NVIDIA A100" in a for a in on_a100.assumptions)
    # Another GPU type: the measured efficiency transfers, throughput scales with the datasheet peak.
    on_h100 = costplan.estimate("7b", "lora", gpu="h100", tokens=1e8, profile=profile)
    assert on_h100.mfu == pytest.approx(0.5)
    assert on_h100.tokens_per_second / on_a100.tokens_per_second == pytest.approx(989.5 / 312)
    assert any("transferred to h100-sxm" in a for a in on_h100.assumptions)
    # Saved in the cache, it is picked up by default for the matching GPU type only.
    cache = os.path.join(os.environ["COSTPLAN_CACHE"], "profiles")
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, "a100.json"), "w") as handle:
        json.dump(_gpu_profile(base, "a100-80gb", 312e12, 0.5), handle)
    assert costplan.estimate("7b", "lora", gpu="a100").mfu == pytest.approx(0.5)
    assert costplan.estimate("7b", "lora", gpu="h100").mfu == pytest.approx(0.35)


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


def test_collectives_outside_torchrun_is_a_clear_error():
    result = CliRunner().invoke(cli, ["calibrate", "--collectives"])
    assert result.exit_code == 2 and "torchrun" in result.output
