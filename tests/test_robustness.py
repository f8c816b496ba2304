"""Every input gets an honest answer (issue 11): files, config.json fields, profiles, paths, the
Python API and numeric options. Each test reproduces one class of defect found by fuzzing."""

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from costplan.cli import cli
from costplan.errors import CostplanError

LLAMA = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
         "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096}


def one_error_line(result, *fragments):
    """Exit code 2, exactly one line on the output, starting with ``Error:``, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def run(*args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


# --- files ------------------------------------------------------------------------------------

def test_a_folder_a_missing_file_and_a_long_name_are_one_line(tmp_path):
    one_error_line(run("estimate", "-m", tmp_path / "nope.json"), "No config.json")
    (tmp_path / "config.json").mkdir()  # a folder is looked into for its config.json
    one_error_line(run("estimate", "-m", tmp_path / "config.json"), "No config.json", "config.json/config.json'")
    one_error_line(run("estimate", "-m", "a" * 300), "Unknown model", "(300 characters)")
    one_error_line(run("estimate", "-m", "a" * 300 + ".json"), "File name too long", "(305 characters)")
    one_error_line(run("estimate", "-m", ""), "empty")


def test_an_unreadable_file_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA))
    real_open = os.open

    def refuse(name, *args, **kwargs):  # tests run as root here, where chmod 000 does not stop a read
        if str(name) == str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    one_error_line(run("estimate", "-m", path), "Permission denied")


def test_deep_nesting_large_files_and_non_json_numbers(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 10_000 + "]" * 10_000)
    one_error_line(run("estimate", "-m", deep), "nested too deeply")
    big = tmp_path / "big.json"
    big.write_text(json.dumps(dict(LLAMA, padding="x" * (9 * 2**20))))
    one_error_line(run("estimate", "-m", big), "larger than 8 MiB")
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(dict(LLAMA, hidden_size=float("nan"))))
    one_error_line(run("estimate", "-m", nan), "NaN is not a JSON number")


# --- config.json fields -------------------------------------------------------------------------

@pytest.mark.parametrize("change,fragments", [
    ({"hidden_size": 1e200}, ["hidden_size", "above 1,000,000", "widest published"]),
    ({"hidden_size": int("9" * 200)}, ["hidden_size", "above 1,000,000"]),
    ({"hidden_size": 10**100}, ["hidden_size"]),
    ({"num_hidden_layers": 10**6}, ["num_hidden_layers 1,000,000 is above 10,000"]),
    ({"num_attention_heads": 0}, ["num_attention_heads must be a positive integer"]),
    ({"num_key_value_heads": 0}, ["num_key_value_heads must be a positive integer"]),
    ({"num_key_value_heads": 5}, ["multiple of num_kv_heads"]),
    ({"hidden_size": 4095}, ["multiple of the 32 attention heads"]),
    ({"vocab_size": 10**9}, ["vocab_size", "256,000"]),
    ({"max_position_embeddings": 10**12}, ["max_position_embeddings", "10M tokens"]),
    ({"intermediate_size": 4.5}, ["intermediate_size must be an integer"]),
    ({"intermediate_size": "11008"}, ["intermediate_size must be an integer"]),
    ({"num_hidden_layers": True}, ["num_hidden_layers must be an integer"]),
    ({"model_type": ["llama"]}, ["model_type", "not supported"]),
])
def test_config_fields_are_checked_with_their_names(tmp_path, change, fragments):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(LLAMA, **change)))
    one_error_line(run("estimate", "-m", path, "--brief"), *fragments)


def test_gpt2_and_bert_fields(tmp_path):
    gpt2 = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024,
            "vocab_size": 50257}
    for change, fragment in (({"n_inner": 1e200}, "ffn_size"), ({"n_head": 0}, "n_head must be a positive"),
                             ({"resid_pdrop": "x"}, "resid_pdrop must be a number"),
                             ({"attn_pdrop": 1.5}, "attention_dropout must be a probability")):
        path = tmp_path / "config.json"
        path.write_text(json.dumps(dict(gpt2, **change)))
        one_error_line(run("estimate", "-m", path, "--brief"), fragment)


def test_a_model_at_the_limits_still_answers(tmp_path):
    """The ranges still accept real work: a 128K context, a 256K vocabulary."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(LLAMA, vocab_size=256_000, max_position_embeddings=131_072)))
    result = run("estimate", "-m", path, "--json", "--seq-len", "131072", "--method", "qlora")
    assert result.exit_code == 0, result.output


def test_model_spec_ranges_cover_every_source():
    from costplan.model import ModelSpec

    with pytest.raises(ValueError, match="num_layers 20,000 is above 10,000"):
        ModelSpec(name="x", family="llama", hidden_size=64, num_layers=20_000, num_heads=4, num_kv_heads=4,
                  head_dim=16, ffn_size=128, vocab_size=100, max_positions=128)
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        ModelSpec(name="x", family="llama", hidden_size=64.0, num_layers=2, num_heads=4, num_kv_heads=4,
                  head_dim=16, ffn_size=128, vocab_size=100, max_positions=128)


# --- calibration profiles -----------------------------------------------------------------------

def _profile(tmp_path, **changes):
    from tests.test_calibrate import fake_gpu_profile

    path = fake_gpu_profile(tmp_path, "h100-sxm")
    data = json.loads(open(path).read())
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = data
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[last] = value
    with open(path, "w") as handle:
        json.dump(data, handle)
    return path


@pytest.mark.parametrize("change,fragment", [
    ({"methods__lora__max_reserved": 1.0}, "methods.lora.max_reserved"),
    ({"methods__lora__max_allocated": -5.0}, "methods.lora.max_allocated must be a number above 0"),
    ({"methods__lora__power_watts": -300.0}, "methods.lora.power_watts"),
    ({"methods__lora__context_bytes": -1.0}, "methods.lora.context_bytes"),
    ({"methods__full__seconds": 0.0}, "methods.full.seconds"),
    ({"methods__full__predicted_seconds": 1e-9}, "over predicted_seconds"),
    ({"methods": "str"}, "methods must be an object"),
    ({"methods__lora": []}, "methods.lora must be an object"),
    ({"gemm__0__flops_per_second": 0.0}, "gemm[0].flops_per_second"),
    ({"gemm__0__dtype": 3}, "gemm[0].dtype must be one of"),
    ({"gemm": {}}, "gemm must be a list"),
    ({"copy_bandwidth_bytes_per_second": -1.0}, "copy_bandwidth_bytes_per_second"),
    ({"attention__flops_per_second": 0}, "attention.flops_per_second"),
    ({"gpu_key": "h1000"}, "gpu_key must be one of"),
    ({"created": 20261129}, "created must be a text"),
    ({"device__kind": "tpu"}, "device.kind must be one of"),
    ({"corrections": [{"factor": 0, "model": "*", "method": "lora", "source": "x"}]}, "corrections[0].factor"),
    ({"collectives": [{"all_reduce_bus_bytes_per_second": 0}]}, "collectives[0].all_reduce_bus_bytes_per_second"),
])
def test_a_bad_profile_is_an_error_naming_its_field(tmp_path, change, fragment):
    path = _profile(tmp_path, **change)
    one_error_line(run("estimate", "--gpu", "h100", "--profile", path), "damaged calibration profile", fragment)


def test_a_bad_saved_profile_is_skipped_with_a_warning(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    profiles = cache / "profiles"
    profiles.mkdir(parents=True)
    monkeypatch.setenv("COSTPLAN_CACHE", str(cache))
    good = _profile(tmp_path, gemm__0__flops_per_second=0.5 * 989.5e12)
    os.replace(good, profiles / "good.json")
    bad = _profile(tmp_path, methods__lora__power_watts=float("nan"), created="2027-01-01")
    os.replace(bad, profiles / "newer-but-bad.json")
    (profiles / "created-int.json").write_text(json.dumps(dict(json.loads((profiles / "good.json").read_text()),
                                                               created=5)))
    (profiles / "garbage.json").write_text("{not json")
    (profiles / "list.json").write_text("[1, 2]")
    (profiles / "deep.json").write_text("[" * 10_000 + "]" * 10_000)
    (profiles / "folder.json").mkdir()
    os.mkfifo(profiles / "fifo.json")
    result = CliRunner().invoke(cli, ["estimate", "--gpu", "h100", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert any("calibrated on NVIDIA A100" in a for a in data["assumptions"])  # the good one is used
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert all(line.startswith("Warning: skipped the saved profile") for line in warnings)
    assert len(warnings) == 7, warnings
    assert any("newer-but-bad.json" in w and "NaN is not a JSON number" in w for w in warnings)


@pytest.mark.parametrize("kind", ["file", "profiles-file"])
def test_a_cache_that_is_a_file_is_no_cache_for_estimates(tmp_path, monkeypatch, kind):
    target = tmp_path / "cache"
    if kind == "file":
        target.write_text("x")
    else:
        target.mkdir()
        (target / "profiles").write_text("x")
    monkeypatch.setenv("COSTPLAN_CACHE", str(target))
    result = run("estimate", "--json")
    assert result.exit_code == 0, result.output


# --- output paths -------------------------------------------------------------------------------

@pytest.mark.parametrize("out,fragment", [
    ("/dev/null", "is a file or a device, not a folder"),
    ("{file}/sub", "which is a file"),
    ("", "--out is empty"),
    ("  ", "--out is empty"),
    ("{long}", "File name too long"),
])
def test_report_out_that_cannot_be_a_folder(tmp_path, out, fragment):
    (tmp_path / "file").write_text("x")
    out = out.format(file=tmp_path / "file", long=tmp_path / ("d" * 300))
    before = sorted(os.listdir(tmp_path))
    one_error_line(run("report", "--out", out), fragment)
    assert sorted(os.listdir(tmp_path)) == before  # nothing written


def test_an_unwritable_out_is_one_line(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if str(p) == str(locked) else real_access(p, mode))
    one_error_line(run("report", "--out", locked / "r"), "is not writable")


@pytest.mark.needs_torch
def test_an_unwritable_cache_is_one_line_before_calibrating(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if str(p) == str(locked) else real_access(p, mode))
    (tmp_path / "cache-file").write_text("x")
    monkeypatch.setenv("COSTPLAN_CACHE", str(tmp_path / "cache-file"))
    one_error_line(run("calibrate", "--quick"), "COSTPLAN_CACHE", "which is a file")
    monkeypatch.setenv("COSTPLAN_CACHE", str(locked))
    one_error_line(run("calibrate", "--quick"), "COSTPLAN_CACHE", "is not writable")


def test_write_file_set_replaces_only_its_own_files_and_leaves_no_temporary(tmp_path, monkeypatch):
    from costplan.files import write_file_set

    out = tmp_path / "report"
    write_file_set(out, {"a.md": "one", "b.json": "{}"})  # a new folder appears whole
    assert sorted(os.listdir(out)) == ["a.md", "b.json"] and sorted(os.listdir(tmp_path)) == ["report"]
    (out / "mine.txt").write_text("the user's")
    write_file_set(out, {"a.md": "two", "b.json": "[]"})
    assert (out / "a.md").read_text() == "two" and (out / "mine.txt").read_text() == "the user's"
    # A failure while swapping in: the error is one line and the temporary folder is gone.
    real_replace = os.replace

    def fail_second(src, dst):
        if str(dst) == str(out / "b.json") and ".previous" not in str(src):  # the new file, not the restore
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_second)
    with pytest.raises(CostplanError, match="No space left on device"):
        write_file_set(out, {"a.md": "three", "b.json": "{}"})
    assert sorted(os.listdir(tmp_path)) == ["report"]
    assert sorted(os.listdir(out)) == ["a.md", "b.json", "mine.txt"]
    assert (out / "a.md").read_text() == "two" and (out / "b.json").read_text() == "[]"  # the old set, whole
    # A folder where a report file should be is refused before anything is written.
    monkeypatch.setattr(os, "replace", real_replace)
    (out / "c.png").mkdir()
    with pytest.raises(CostplanError, match="not a regular file"):
        write_file_set(out, {"a.md": "four", "c.png": b""})
    assert (out / "a.md").read_text() == "two"


def test_write_atomically_into_a_folder_or_under_a_file(tmp_path):
    from costplan.files import write_atomically

    (tmp_path / "f").write_text("x")
    with pytest.raises(CostplanError, match="Cannot write"):
        write_atomically(tmp_path / "f" / "x.json", "{}")
    with pytest.raises(CostplanError, match="not a file"):
        write_atomically(tmp_path, "{}")
    assert sorted(os.listdir(tmp_path)) == ["f"]


# --- the Python API -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,fragment", [
    ({"model": 123}, "model must be a preset name"),
    ({"model": b"7b"}, "model must be a preset name"),
    ({"method": 3}, "method must be a method name"),
    ({"gpu": None}, "--gpu must be a name"),
    ({"gpu": 3}, "--gpu must be a name"),
    ({"gpus": "two"}, "--gpus: cannot read 'two'"),
    ({"gpus": 2**63}, "--gpus must be an integer from 1 up to 1,000,000"),
    ({"gpus": 1.5}, "--gpus must be a whole number"),
    ({"tokens": float("nan")}, "--tokens must be a finite number"),
    ({"tokens": float("inf")}, "--tokens must be a finite number"),
    ({"tokens": 0.5}, "--tokens must be a number from 1"),
    ({"tokens": "lots"}, "--tokens: cannot read 'lots'"),
    ({"epochs": float("nan")}, "--epochs must be a finite number"),
    ({"epochs": None}, "--epochs must be a number from 0.001"),
    ({"price": float("nan")}, "--price must be a finite number"),
    ({"price": -1}, "--price must be a number from 0"),
    ({"serve_tokens": 1e308}, "--serve-tokens must be a number from 1"),
    ({"micro_batch": 10**300}, "--micro-batch must be an integer"),
    ({"seq_len": True}, "--seq-len must be an integer"),
    ({"precision": "fp4"}, "--precision must be one of"),
    ({"spot": "yes"}, "--spot must be True or False"),
    ({"grid": b"eu"}, "--grid must be a region name"),
    ({"profile": "p.json"}, "profile must be a costplan.profile.Profile"),
])
def test_every_bad_api_argument_is_a_costplan_error(kwargs, fragment):
    import costplan

    with pytest.raises(CostplanError) as caught:
        costplan.estimate(**kwargs)
    assert fragment in str(caught.value)
    assert isinstance(caught.value, ValueError)  # CostplanError is a ValueError


def test_api_strings_with_units_are_read_as_the_cli_reads_them():
    import costplan

    by_string = costplan.estimate("7b", "lora", tokens="100M", gpus="2", seq_len="1024")
    by_number = costplan.estimate("7b", "lora", tokens=100e6, gpus=2, seq_len=1024)
    assert by_string.tokens == 1e8 and by_string.gpus == 2
    assert by_string.wall_seconds == by_number.wall_seconds


def test_plan_compare_and_cram_reject_nan_and_inf():
    from costplan.compare import compare
    from costplan.cram import cram
    from costplan.plan import search

    for call in (lambda: search("7b", tokens=float("nan")), lambda: search("7b", tokens=1e8, epochs=float("inf")),
                 lambda: search("7b", tokens=1e8, budget_usd=float("nan")),
                 lambda: search("7b", tokens=1e8, deadline_seconds=-1.0),
                 lambda: search("7b", tokens=1e8, max_gpus=10**6), lambda: search("7b", tokens=1e8, methods=None),
                 lambda: compare("7b", tokens=float("inf")), lambda: compare("7b", eval_tokens=float("nan")),
                 lambda: compare("7b", approaches="lora"),
                 lambda: cram("h100", float("nan")), lambda: cram("h100", 24, dataset_tokens=float("inf")),
                 lambda: cram(None)):
        with pytest.raises(CostplanError):
            call()


def test_plan_takes_gpu_aliases_and_comma_lists_from_python():
    from costplan.plan import search

    result = search("7b", "lora,qlora", tokens="100M", gpus="a100")
    assert result.pareto and {c.gpu for c in result.pareto} == {"a100-80gb"}


def test_cli_and_api_share_their_bounds():
    """Every numeric option of estimate, plan, compare and cram has the API's range."""
    import click

    from costplan import arguments
    from costplan.cli import _Count, _Number

    tables = {"estimate": arguments.ESTIMATE, "plan": arguments.PLAN, "compare": arguments.COMPARE,
              "cram": arguments.CRAM}
    checked = 0
    for command, bounds in tables.items():
        for param in cli.commands[command].params:
            bound = bounds.get(param.name)
            if bound is None or isinstance(param.type, click.Choice):
                continue
            kind = param.type
            low, high = ((kind.min, kind.max) if isinstance(kind, click.IntRange) else (kind.low, kind.high)
                         if isinstance(kind, (_Count, _Number)) else (None, None))
            assert (low, high) == (bound.low, bound.high), (command, param.name)
            checked += 1
    assert checked >= 25


# --- calibrate and verify -----------------------------------------------------------------------

def test_missing_extras_are_all_named(monkeypatch):
    import costplan.cli

    monkeypatch.setattr(costplan.cli, "_importable", lambda name: name == "torch")
    for command in ("verify", "calibrate"):
        one_error_line(run(command), f"costplan {command} needs torch, transformers and peft",
                       "(transformers, peft missing)", "pip install 'costplan[verify]'")


@pytest.mark.needs_torch
def test_calibrate_an_encoder(tmp_path):
    """BERT has no generation head for peft's prompt tuning: calibrate skips it and says why."""
    out = tmp_path / "bert.json"
    result = run("calibrate", "--model", "bert-base", "--quick", "--seq-len", "32", "--out", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert set(data["methods"]) == {"full", "lora"} and "encoder" in data["skipped_methods"]["prompt"]
    for entry in [*data["gemm"], *data["methods"].values()]:
        spread = entry["spread"]
        assert 0 < spread["min"] <= spread["median"] <= spread["max"]
    from costplan.profile import load_profile

    assert load_profile(out).calibrated


@pytest.mark.needs_torch
def test_calibrate_bounds_its_sequence_on_the_cpu():
    one_error_line(run("calibrate", "--seq-len", "65536"), "--seq-len 65536 is above 4096")
    one_error_line(run("calibrate", "--seq-len", "1e9"), "--seq-len")


def test_a_noisy_calibration_is_saved_with_its_spread_and_a_warning(tmp_path, monkeypatch):
    from costplan import calibrate as cal
    from costplan.profile import load_profile
    from tests.test_calibrate import fake_gpu_profile

    data = json.loads(open(fake_gpu_profile(tmp_path, "h100-sxm")).read())
    data["gemm"][0]["spread"] = {"min": 0.5, "median": 1.0, "max": 4.0}
    data["methods"]["lora"]["spread"] = {"min": 0.1, "median": 0.125, "max": 0.13}
    assert len(cal.noise_warnings(data)) == 1 and "8x the fastest" in cal.noise_warnings(data)[0]
    data["warnings"] = cal.noise_warnings(data)
    monkeypatch.setattr(cal, "calibrate", lambda *a, **k: data)
    monkeypatch.setattr("costplan.cli._require_extras", lambda command: None)
    out = tmp_path / "noisy.json"
    result = CliRunner().invoke(cli, ["calibrate", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("Warning: noisy matmul")]
    assert load_profile(out).calibrated  # saved, not refused
    bad = dict(data, gemm=[dict(data["gemm"][0], spread={"min": 2.0, "median": 1.0, "max": 4.0})])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(CostplanError, match="min <= median <= max"):
        load_profile(path)


def test_verify_refuses_a_huge_model_up_front(tmp_path, monkeypatch):
    import time

    monkeypatch.setattr("costplan.cli._require_extras", lambda command: None)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(LLAMA, num_hidden_layers=10_000)))
    started = time.perf_counter()
    one_error_line(run("verify", "--model", path), "up to 256 layers", "has 10,000")
    path.write_text(json.dumps(dict(LLAMA, num_hidden_layers=10**6)))
    one_error_line(run("verify", "--model", path), "num_hidden_layers 1,000,000 is above 10,000")
    one_error_line(run("verify", "--model", "gpt2", "--seq-len", "5000"), "exceed gpt2's context of 1024")
    assert time.perf_counter() - started < 10


@pytest.mark.needs_torch
def test_verify_of_a_config_the_real_code_rejects_is_one_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(LLAMA, hidden_size=256, intermediate_size=512, num_hidden_layers=1,
                                    num_attention_heads=4, num_key_value_heads=4, head_dim=3, vocab_size=100)))
    one_error_line(run("verify", "--model", path, "--seq-len", "16"), "tracing", "failed: RuntimeError")


def test_sizes_within_their_limits_that_make_an_absurd_model_are_refused(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(LLAMA, hidden_size=10**6, intermediate_size=10**7, num_hidden_layers=10**4)))
    for command in (["estimate"], ["plan", "--tokens", "1B"], ["cram"], ["compare"]):
        one_error_line(run(*command, "-m", path), "parameters are above 1e+15")


def test_experts_are_read_for_mixtures_only(tmp_path):
    """transformers' Llama and BERT ignore num_local_experts; so does costplan (it crashed on a MoE BERT)."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(LLAMA, num_local_experts=8)))
    data = json.loads(run("estimate", "-m", path, "--json").output)
    assert data["params_total"] == 6_738_415_616


def test_fuzzed_estimate_inputs_are_answered_or_refused_in_one_line(tmp_path):
    # Found by fuzzing the CLI: each used to end in a traceback or a wrong refusal.
    runner = CliRunner()
    # No --method on a job that does not fit: the cheapest place it would fit is looked up for LoRA.
    result = runner.invoke(cli, ["estimate", "-m", "70b", "--gpus", "1", "--gpu", "l4", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["would_fit"]
    # 8-bit LoRA takes LoRA's default global batch (tables/practice.csv).
    result = runner.invoke(cli, ["estimate", "-m", "7b", "--method", "lora-int8", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["layout"]["global_batch"] == 16
    # A micro-batch above the given global batch is refused; above the default one, it sets it.
    result = runner.invoke(cli, ["estimate", "-m", "7b", "--micro-batch", "16", "--global-batch", "8"])
    assert result.exit_code == 2 and "larger than the global batch of 8" in result.output
    result = runner.invoke(cli, ["estimate", "-m", "7b", "--micro-batch", "64", "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["layout"]["global_batch"] == 64
    # Training configs: settings of the wrong kind, and files that are not regular files.
    for name, text in (("tt.yaml", "model:\n  _component_: torchtune.models.llama2.lora_llama2_7b\n"
                                   "  lora_attn_modules: false\n  lora_rank: [1, 2]\n"),
                       ("ax.yml", "base_model: meta-llama/Llama-2-7b-hf\nadapter: lora\nlora_alpha: {a: 1}\n"),
                       ("ta.json", '{"per_device_train_batch_size": 2, "deepspeed": {"zero_optimization": [1]}}')):
        (tmp_path / name).write_text(text)
        result = runner.invoke(cli, ["estimate", "-m", "7b", "--from", str(tmp_path / name)])
        assert result.exit_code == 2 and "wrong type" in result.output, result.output
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/zero"):
        result = runner.invoke(cli, ["estimate", "-m", "7b", "--from", path])
        assert result.exit_code == 2 and "not a regular file" in result.output, result.output


def test_unknown_board_power_inapplicable_approaches_and_options_of_the_other_kind():
    # Found by fuzzing: each gave a wrong number or a refusal of the whole question.
    # H800 has no TDP in tables/gpus.csv: energy is unknown (it read 0 kWh) and --electricity cannot price it
    # (it read $0).
    est = json.loads(run("estimate", "-m", "7b", "--method", "lora", "--gpu", "h800", "--json").output)
    assert est["energy_kwh"] is None and est["co2_kg"] is None
    assert any("no board power" in a for a in est["assumptions"])
    one_error_line(run("estimate", "-m", "7b", "--gpu", "h800", "--electricity", "0.2"), "no board power (TDP)")
    plan = json.loads(run("plan", "-m", "7b", "--method", "lora", "--gpu", "h800", "--tokens", "1e8",
                          "--electricity", "0.2", "--json").output)
    assert not plan["rows"] and "no board power" in plan["why"]
    mixed = json.loads(run("plan", "-m", "7b", "--method", "lora", "--gpu", "h800,h100", "--tokens", "1e8",
                           "--electricity", "0.2", "--json").output)
    assert mixed["rows"] and all(r["gpu"] != "h800" for r in mixed["rows"])
    # No listed price (it said "relax the deadline or budget" with neither given).
    plan = json.loads(run("plan", "-m", "7b", "--method", "lora", "--gpu", "h800", "--tokens", "1e8",
                          "--json").output)
    assert not plan["rows"] and plan["why"].startswith("No price is listed")
    # compare leaves out the approaches that do not apply to the model (it refused the whole comparison).
    for model, left_out in (("bert-base", {"inference", "prefix"}), ("t5-base", {"prompt", "prefix", "qlora"}),
                            ("deepseek-v3", {"prefix"})):
        result = run("compare", "-m", model, "--json")
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert {r["method"] for r in data["rows"]} == {"inference", "prompt", "prefix", "lora", "qlora", "full",
                                                       "cpt"} - left_out
        assert sum("left out" in n for n in data["notes"]) == len(left_out)
    # Options of the other kind of job: --weights on training is refused (it was ignored); training-only
    # options on inference are named as unused.
    one_error_line(run("estimate", "-m", "7b", "--method", "lora", "--weights", "int4"), "applies to inference")
    est = json.loads(run("estimate", "-m", "7b", "--method", "inference", "--offload", "params", "--json").output)
    assert "--offload applies to training: not used for inference" in est["assumptions"]
    est = json.loads(run("estimate", "-m", "7b", "--method", "inference", "--virtual-stages", "4", "--goodput", "0.9",
                         "--json").output)
    assert "--virtual-stages, --goodput apply to training: not used for inference" in est["assumptions"]


def test_an_out_of_range_setting_read_from_a_config_names_the_file(tmp_path):
    # It used to read as a flag the user never typed ("--micro-batch must be ...").
    config = tmp_path / "ax.yml"
    config.write_text("base_model: meta-llama/Llama-2-7b-hf\nadapter: lora\nmicro_batch_size: 100000000\n")
    one_error_line(run("estimate", "-m", "7b", "--from", config), f"{config}: --micro-batch must be",
                   "read from the file")
    assert run("estimate", "-m", "7b", "--from", config, "--micro-batch", "2").exit_code == 0


def test_the_input_sweep_counts_answers_refusals_and_failures(tmp_path):
    # benchmarks/input_sweep.py over a folder: a real adapter answers (with and without -m 8b), a broken
    # file is refused in one line both times, and nothing fails.
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "input_sweep", Path(__file__).parent.parent / "benchmarks" / "input_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    good = json.loads((Path(__file__).parent / "fixtures" / "adapters" / "tinyllama_lora" / "adapter_config.json")
                      .read_text())
    good["base_model_name_or_path"] = "NousResearch/Llama-2-7b-hf"  # not cached: the llama-2-7b preset stands in
    (tmp_path / "good.json").write_text(json.dumps(good))
    (tmp_path / "broken.json").write_text("{not json")
    counts, reasons, failures = module.sweep("adapters", tmp_path)
    assert counts == {"kind": "adapters", "files": 2, "runs": 4, "answers": 2, "refusals": 2, "failures": 0}
    assert failures == [] and sum(reasons.values()) == 2
