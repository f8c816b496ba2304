"""The command line, driven through click's CliRunner: output, JSON contract, and user errors."""

import json

import pytest
from click.testing import CliRunner

from costplan.cli import cli

JSON_KEYS = {"model", "method", "gpu", "params_total", "params_active", "params_trainable", "flops_per_token",
             "flops_total",
             "memory_peak_bytes", "memory_reserved_bytes", "memory_breakdown", "gpus", "tokens_per_second",
             "wall_hours", "gpu_hours", "cost_usd", "assumptions"}


def run(*args):
    return CliRunner().invoke(cli, list(args))


def run_json(*args):
    result = run("estimate", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_the_headline_command():
    result = run("estimate", "--model", "7b", "--method", "lora", "--tokens", "100M")
    assert result.exit_code == 0, result.output
    for text in ("llama-2-7b", "LoRA", "fits?", "GPU-hours", "assumptions", "not calibrated"):
        assert text in result.output


@pytest.mark.parametrize("method", ["inference", "prompt", "prefix", "lora", "qlora", "full", "cpt", "pretrain"])
def test_json_contract_for_every_method(method):
    data = run_json("--model", "8b", "--method", method)
    assert JSON_KEYS <= set(data)
    assert data["method"] == method and data["model"] == "llama-3-8b"
    assert data["params_total"] == 8_030_261_248
    assert data["memory_peak_bytes"] == pytest.approx(sum(data["memory_breakdown"].values()))
    assert data["memory_reserved_bytes"] > data["memory_peak_bytes"]
    assert data["gpu_hours"] == pytest.approx(data["wall_hours"] * data["gpus"])
    assert data["cost_usd"] > 0 and all(isinstance(a, str) for a in data["assumptions"])
    if method == "inference":
        assert data["cost_usd_per_million_tokens"] > 0
    else:
        assert data["flops_total"] == pytest.approx(data["flops_per_token"] * data["tokens"] * data["epochs"])


def test_tokens_accept_suffixes_and_scientific_notation():
    a = run_json("--tokens", "2.5B", "--method", "full")
    b = run_json("--tokens", "2.5e9", "--method", "full")
    assert a["tokens"] == b["tokens"] == 2.5e9
    assert a["wall_hours"] == pytest.approx(b["wall_hours"])


def test_time_and_dollars_follow_the_formula():
    data = run_json("--model", "7b", "--method", "full", "--gpu", "a100", "--gpus", "8", "--tokens", "1B",
                    "--price", "2")
    peak_bf16_a100 = 312e12
    seconds = data["flops_total"] / (8 * peak_bf16_a100 * data["mfu"])
    assert data["wall_seconds"] == pytest.approx(seconds)
    assert data["cost_usd"] == pytest.approx(2 * 8 * seconds / 3600)


def test_seventy_b_full_needs_sharding_over_many_gpus():
    data = run_json("--model", "70b", "--method", "full", "--gpu", "h100", "--grad-ckpt")
    assert data["fits"] and data["gpus"] > 8 and data["zero_stage"] == 3


def test_qlora_70b_fits_one_80gb_gpu():
    data = run_json("--model", "70b", "--method", "qlora", "--gpu", "a100-80gb", "--grad-ckpt", "--seq-len", "1024")
    assert data["fits"] and data["gpus"] == 1


def test_a_fixed_gpu_count_that_cannot_fit_says_why():
    data = run_json("--model", "70b", "--method", "full", "--gpus", "1")
    assert data["fits"] is False and "per GPU" in data["fit_problem"]


def test_activations_that_never_fit_are_explained():
    data = run_json("--model", "8b", "--method", "full", "--gpu", "t4", "--precision", "fp16",
                    "--seq-len", "8192", "--micro-batch", "8")
    assert data["fits"] is False and "--grad-ckpt" in data["fit_problem"]


def test_config_json_path(tmp_path):
    config = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
              "max_position_embeddings": 4096}
    (tmp_path / "config.json").write_text(json.dumps(config))
    data = run_json("--model", str(tmp_path), "--method", "lora")
    assert data["params_total"] == 6_738_415_616


def test_moe_reports_total_and_active_parameters():
    data = run_json("--model", "qwen3-30b-a3b", "--method", "lora")
    assert data["params_total"] == 30_532_122_624 and data["params_active"] == 3_353_032_704
    assert run_json("--model", "8b")["params_active"] == 8_030_261_248
    text = run("estimate", "--model", "deepseek-v3", "--method", "lora", "--brief").output
    assert "671 B total (37.6 B active)" in text and "MLA" in text


def test_encoder_decoder_takes_source_and_target_lengths():
    data = run_json("--model", "t5-base", "--method", "full", "--source-len", "512", "--target-len", "128")
    assert data["params_total"] == 222_903_552
    assert any("512 source tokens" in line and "per target token" in line for line in data["assumptions"])
    longer = run_json("--model", "t5-base", "--method", "full", "--source-len", "512", "--target-len", "256")
    # Per target token, a longer target shares the encoder's work over more tokens.
    assert longer["flops_per_token"] < data["flops_per_token"]
    served = run_json("--model", "t5-base", "--method", "inference", "--source-len", "400", "--target-len", "50")
    assert served["fits"] and served["latency_seconds"] > 0
    for args, message in ((["--model", "8b", "--source-len", "512"], "encoder-decoder models"),
                          (["--model", "t5-base", "--method", "prompt"], "encoder-decoder"),
                          (["--model", "t5-base", "--source-len", "1024"], "trained length")):
        result = run("estimate", *args)
        assert result.exit_code == 2 and message in result.output, result.output


def test_models_and_gpus_lists():
    models = run("models")
    assert models.exit_code == 0 and "llama-3-8b" in models.output and "mixtral" in models.output
    gpus = json.loads(run("gpus", "--json").output)
    keys = {row["key"] for row in gpus}
    assert {"h200", "h100-sxm", "h100-pcie", "a100-80gb", "a100-40gb", "l40s", "l4", "a10g", "rtx-4090",
            "rtx-3090", "rtx-a6000", "v100-16gb", "v100-32gb", "t4", "mi300x", "b200", "h100-nvl", "h800", "a40",
            "l40", "rtx-5090", "mi250x", "rtx-2080ti"} <= keys
    assert "v100" not in keys  # now an alias of v100-32gb


@pytest.mark.parametrize("args,message", [
    (["--model", "llama-9b"], "Unknown model 'llama-9b'"),
    (["--model", "lama-2-7b"], "Did you mean 'llama-2-7b'"),
    (["--gpu", "h1000"], "Unknown GPU 'h1000'"),
    (["--tokens", "-5"], "must be positive"),
    (["--tokens", "lots"], "cannot read 'lots'"),
    (["--seq-len", "0"], "--seq-len"),
    (["--micro-batch", "-1"], "--micro-batch"),
    (["--lora-rank", "5000"], "exceeds the smallest targeted matrix"),
    (["--lora-targets", "q,zz"], "Unknown LoRA target 'zz'"),
    (["--optimizer", "adamm"], "Unknown optimizer 'adamm'"),
    (["--gpu", "v100", "--precision", "bf16"], "no bf16"),
    (["--gpu", "a100", "--precision", "fp8"], "no fp8"),
    (["--seq-len", "100000"], "exceed"),
    (["--provider", "nowhere"], "Unknown provider"),
    (["--model", "bert-base", "--method", "inference"], "encoder"),
    (["--method", "dreambooth"], "dreambooth"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message):
    result = CliRunner().invoke(cli, ["estimate", *args], standalone_mode=True)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert message in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("content,message", [
    ("{not json", "not a readable config.json"),
    ('{"model_type": "llama"}', "required field"),
    ('{"model_type": "mamba"}', "not supported"),
    ('{"model_type": "t5"}', "required field 'd_model'"),
    ('{"model_type": "llama", "hidden_size": -4, "intermediate_size": 8, "num_hidden_layers": 1, '
     '"num_attention_heads": 1, "vocab_size": 10}', "positive integer"),
    ("[1, 2]", "JSON object"),
])
def test_broken_config_json(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_text(content)
    result = run("estimate", "--model", str(path))
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_missing_config_path(tmp_path):
    result = run("estimate", "--model", str(tmp_path / "nope" / "config.json"))
    assert result.exit_code == 2 and "No config.json" in result.output


def test_unknown_command_is_one_line():
    result = run("estimat")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
