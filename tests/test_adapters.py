"""--adapter: peft adapter_config.json files (real ones, and ones peft itself wrote) set the method."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from costplan.adapter_config import read_adapter_config
from costplan.cli import cli
from costplan.errors import CostplanError
from costplan.model import preset

ADAPTERS = Path(__file__).parent / "fixtures" / "adapters"


def run(*args):
    return CliRunner().invoke(cli, ["estimate", *args])


def run_json(*args):
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def one_error_line(result, message):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], result.output


def test_real_tinyllama_lora_adapter():
    """r=16 on q,k,v,o,gate,up,down of TinyLlama: 22 layers x 16 x sum(in + out) = 12,615,680."""
    data = run_json("-m", "tinyllama", "--adapter", str(ADAPTERS / "tinyllama_lora"))
    assert data["method"] == "lora"
    h, kv, f, layers = 2048, 256, 5632, 22
    expected = layers * 16 * ((h + h) * 2 + (h + kv) * 2 + (h + f) * 3)
    assert data["params_trainable"] == expected == 12_615_680
    assert any("adapter" in a and "LORA" in a for a in data["assumptions"])


def test_real_qwen_adapter_uses_qlora_when_asked():
    data = run_json("-m", "qwen2-7b", "--method", "qlora", "--adapter", str(ADAPTERS / "qwen2.5_7b_lora"))
    assert data["method"] == "qlora" and data["params_trainable"] > 0


def test_adapter_base_model_comes_from_the_hub_cache(monkeypatch, tmp_path):
    from tests.test_hub import fake_cache

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    tiny = preset("tinyllama")
    fake_cache(tmp_path, "TinyLlama/TinyLlama-1.1B-Chat-v1.0", {"config.json": {
        "model_type": "llama", "hidden_size": tiny.hidden_size, "num_hidden_layers": tiny.num_layers,
        "num_attention_heads": tiny.num_heads, "num_key_value_heads": tiny.num_kv_heads,
        "intermediate_size": tiny.ffn_size, "vocab_size": tiny.vocab_size, "max_position_embeddings": 2048}})
    data = run_json("--adapter", str(ADAPTERS / "tinyllama_lora"))  # no -m: the adapter's base model
    assert data["model"] == "TinyLlama/TinyLlama-1.1B-Chat-v1.0" and data["params_trainable"] == 12_615_680


def test_dora_rslora_and_modules_to_save():
    pinned = ("--gpus", "1", "--micro-batch", "1", "--no-grad-ckpt")
    plain = run_json("-m", "tinyllama", "--lora-targets", "all-linear", "--lora-rank", "16", *pinned)
    data = run_json("-m", "tinyllama", "--adapter", str(ADAPTERS / "peft_dora_modules_to_save"), *pinned)
    tiny = preset("tinyllama")
    magnitudes = tiny.num_layers * (2 * tiny.hidden_size + 2 * tiny.kv_size + 2 * tiny.ffn_size + tiny.hidden_size)
    copies = 2 * tiny.vocab_size * tiny.hidden_size  # embed_tokens and lm_head
    assert data["params_trainable"] == plain["params_trainable"] + magnitudes + copies
    assert data["memory_peak_bytes"] > plain["memory_peak_bytes"]
    text = " ".join(data["assumptions"])
    assert "DoRA" in text and "rsLoRA" in text and "modules_to_save" in text


@pytest.mark.needs_torch
@pytest.mark.parametrize("fixture", ["tinyllama_lora", "peft_dora_modules_to_save", "peft_prompt_tuning",
                                     "peft_prefix_tuning"])
def test_trainable_parameters_equal_peft_on_the_real_module(fixture):
    """The adapter file applied by peft itself to TinyLlama built on the meta device."""
    import warnings

    import peft

    from costplan.api import estimate
    from costplan.tracing import build_model

    spec = preset("tinyllama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = peft.PeftConfig.from_pretrained(str(ADAPTERS / fixture))
        config.inference_mode = False  # saved adapters say True; train them
        module = peft.get_peft_model(build_model(spec, device="meta"), config)
    traced = sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert estimate("tinyllama", adapter=str(ADAPTERS / fixture)).params_trainable == traced


@pytest.mark.parametrize("fixture,method,tokens", [("peft_prompt_tuning", "prompt", 20),
                                                   ("peft_prefix_tuning", "prefix", 30)])
def test_prompt_and_prefix_tuning_adapters(fixture, method, tokens):
    data = run_json("-m", "tinyllama", "--adapter", str(ADAPTERS / fixture))
    assert data["method"] == method
    per_token = preset("tinyllama").hidden_size if method == "prompt" else 22 * 2 * 256
    assert data["params_trainable"] == tokens * per_token


def test_method_that_contradicts_the_adapter_is_an_error():
    one_error_line(run("-m", "tinyllama", "--method", "full", "--adapter", str(ADAPTERS / "tinyllama_lora")),
                   "--method full contradicts")
    one_error_line(run("-m", "tinyllama", "--method", "lora", "--adapter", str(ADAPTERS / "peft_prompt_tuning")),
                   "a PROMPT_TUNING adapter")
    one_error_line(run("-m", "tinyllama", "--lora-rank", "4", "--adapter", str(ADAPTERS / "tinyllama_lora")),
                   "--lora-rank comes from the --adapter file")


@pytest.mark.parametrize("change,message", [
    ({"peft_type": "IA3"}, "peft_type IA3 is not modelled"),
    ({"peft_type": None}, "has no peft_type"),
    ({"r": 0}, "r must be a positive integer"),
    ({"rank_pattern": {"q_proj": 4}}, "rank_pattern"),
    ({"layers_to_transform": "last"}, "layers_to_transform must be a layer index"),
    ({"bias": "all"}, "trains biases"),
    ({"target_modules": ["c_attn"]}, "match no layer matrix"),
    ({"modules_to_save": ["score"]}, "modules_to_save score is not modelled"),
])
def test_bad_adapter_files_are_one_line(tmp_path, change, message):
    data = json.loads((ADAPTERS / "tinyllama_lora" / "adapter_config.json").read_text())
    data.update(change)
    (tmp_path / "adapter_config.json").write_text(json.dumps(data))
    one_error_line(run("-m", "tinyllama", "--adapter", str(tmp_path)), message)


def test_lora_on_the_lm_head_and_embeddings_from_a_file(tmp_path):
    """r=16 on q_proj in 22 layers, plus lm_head (2048 x r + r x 32000) and embed_tokens (r x 32000 + 2048 x r)."""
    data = json.loads((ADAPTERS / "tinyllama_lora" / "adapter_config.json").read_text())
    data.update({"target_modules": ["q_proj", "lm_head", "embed_tokens"]})
    (tmp_path / "adapter_config.json").write_text(json.dumps(data))
    out = run_json("-m", "tinyllama", "--adapter", str(tmp_path))
    r = data["r"]
    assert out["params_trainable"] == 22 * r * (2048 + 2048) + 2 * r * (2048 + 32000)


def test_broken_and_missing_files_are_one_line(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{not json")
    one_error_line(run("-m", "tinyllama", "--adapter", str(tmp_path)), "not a readable adapter_config.json")
    one_error_line(run("-m", "tinyllama", "--adapter", str(tmp_path / "nowhere")), "No adapter_config.json")


def test_target_modules_match_as_peft_matches():
    from costplan.adapter_config import target_roles

    gpt2, llama = preset("gpt2"), preset("7b")
    notes: list[str] = []
    assert target_roles(gpt2, ["c_attn"], None, Path("x"), notes) == ("qkv",)
    assert target_roles(gpt2, ["c_proj"], None, Path("x"), notes) == ("o", "down")  # both are named c_proj
    assert target_roles(llama, r".*\.(q_proj|v_proj)", None, Path("x"), notes) == ("q", "v")
    assert target_roles(llama, "all-linear", None, Path("x"), notes) == ("q", "k", "v", "o", "gate", "up", "down")
    assert target_roles(llama, ["q_proj", "v_proj", "mlp"], ["v_proj"], Path("x"), notes) == ("q",)
    assert any("mlp" in n for n in notes)
    assert target_roles(llama, None, None, Path("x"), notes) == ("q", "v")
    with pytest.raises(CostplanError):
        read_adapter_config(ADAPTERS / "missing")


def test_adapters_on_some_layers_are_read_and_said(tmp_path):
    # peft names a module by its whole name: "model.layers.31.self_attn.q_proj" is layer 31's alone, and
    # layers_to_transform keeps a list of layers; costplan puts the adapters in every layer and says so.
    from costplan.adapter_config import target_roles

    llama = preset("7b")
    notes: list[str] = []
    names = [f"model.layers.31.self_attn.{m}_proj" for m in "qkvo"]
    assert target_roles(llama, names, None, Path("x"), notes) == ("q", "k", "v", "o")
    assert any("layers 31 only" in n for n in notes)
    data = json.loads((ADAPTERS / "tinyllama_lora" / "adapter_config.json").read_text())
    data.update({"layers_to_transform": [0, 1, 2]})
    (tmp_path / "adapter_config.json").write_text(json.dumps(data))
    out = run_json("-m", "tinyllama", "--adapter", str(tmp_path))
    assert any("layers_to_transform puts adapters on layers 0, 1, 2 only" in a for a in out["assumptions"])


@pytest.mark.parametrize("base,key", [
    # base_model_name_or_path as found in published adapters: the trainer's own cache and folders
    ("/content/llama3_model/models--meta-llama--Meta-Llama-3-8B/snapshots/8cde5ca8380496c9a6cc7ef3a8b46a0372a1d920",
     "llama-3-8b"),
    ("../../Llama2-7b-chat/", "llama-2-7b"),
    ("C:\\\\models\\\\Qwen2.5-3B-Instruct", "qwen2.5-3b"),
])
def test_a_base_model_path_from_another_machine_stands_in_by_the_preset_it_names(tmp_path, base, key):
    data = json.loads((ADAPTERS / "tinyllama_lora" / "adapter_config.json").read_text())
    data.update({"base_model_name_or_path": base})
    (tmp_path / "adapter_config.json").write_text(json.dumps(data))
    out = run_json("--adapter", str(tmp_path))
    assert out["model"] == key
    assert any(f"the {key} preset it names stands in" in a for a in out["assumptions"])


def test_a_base_model_path_naming_no_preset_is_one_line(tmp_path):
    data = json.loads((ADAPTERS / "tinyllama_lora" / "adapter_config.json").read_text())
    data.update({"base_model_name_or_path": "/data/models/my-private-model"})
    (tmp_path / "adapter_config.json").write_text(json.dumps(data))
    one_error_line(run("--adapter", str(tmp_path)), "or pass --model")
