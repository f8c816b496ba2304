"""estimate --from: real Axolotl, torchtune and LLaMA-Factory configs and TrainingArguments JSON files."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from costplan.cli import cli
from costplan.trainconfig import read_training_config

CONFIGS = Path(__file__).parent / "fixtures" / "configs"


def estimate_json(*args):
    result = CliRunner().invoke(cli, ["estimate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("name,kind,expected", [
    ("axolotl_llama3_lora_8b.yml", "axolotl", dict(
        model="NousResearch/Meta-Llama-3-8B", method="lora-int8", seq_len=4096, micro_batch=2, global_batch=8,
        epochs=4.0,
        lora_rank=32, lora_targets="all-linear", lora_alpha=16.0, lora_dropout=0.05, optimizer="adamw-8bit",
        precision="bf16", grad_ckpt=True, attention="flash", modules_to_save=("embeddings", "head"))),
    ("axolotl_llama3_qlora.yml", "axolotl", dict(method="qlora", optimizer="paged-adamw", lora_rank=32)),
    ("axolotl_llama3_qlora_fsdp_70b.yaml", "axolotl", dict(
        model="casperhansen/llama-3-70b-fp16", method="qlora", seq_len=512, micro_batch=1, global_batch=4, zero=3,
        optimizer="adamw-fused", lora_rank=8)),
    ("axolotl_gpt_oss_20b_fft_fsdp2.yaml", "axolotl", dict(
        model="openai/gpt-oss-20b", method="full", seq_len=4096, micro_batch=1, global_batch=2, zero=3,
        framework="axolotl", optimizer="adamw-8bit", loss="fused", offload=("activations",), grad_ckpt=True,
        precision="bf16")),
    ("torchtune_llama3_1_8B_lora_single_device.yaml", "torchtune", dict(
        model="llama-3.1-8b", method="lora", lora_targets="q,v,o,gate,up,down", lora_rank=8, lora_alpha=16.0,
        micro_batch=2, global_batch=16, epochs=1.0, optimizer="adamw-fused", precision="bf16", grad_ckpt=True)),
    ("torchtune_llama3_1_8B_qlora_single_device.yaml", "torchtune", dict(method="qlora", model="llama-3.1-8b")),
    ("torchtune_llama3_1_8B_full.yaml", "torchtune", dict(method="full", zero=3, micro_batch=2, global_batch=2)),
    ("llamafactory_llama3_lora_sft.yaml", "llama-factory", dict(
        model="meta-llama/Meta-Llama-3-8B-Instruct", method="lora", seq_len=2048, micro_batch=1, global_batch=8,
        epochs=3.0, lora_rank=8, lora_targets="all-linear", precision="bf16", grad_ckpt=True)),
    ("llamafactory_qwen3_lora_sft_ds3.yaml", "llama-factory", dict(zero=3, global_batch=2)),
    ("llamafactory_qwen3_lora_sft_otfq.yaml", "llama-factory", dict(method="qlora")),
    ("transformers_training_args.json", "training-arguments", dict(
        micro_batch=4, global_batch=16, epochs=2.0, optimizer="adamw-fused", precision="bf16", grad_ckpt=True,
        zero=3)),
    ("trl_grpo_training_args.json", "training-arguments", dict(
        micro_batch=6, global_batch=12, precision="fp16", optimizer="paged-adamw-8bit", grad_ckpt=False)),
])
def test_real_configs_become_estimate_settings(name, kind, expected):
    config = read_training_config(CONFIGS / name)
    assert config.kind == kind
    for key, value in expected.items():
        assert config.options.get(key) == value, (key, config.options)


def test_trainer_arguments_that_sync_each_batch_reduce_every_micro_batch(tmp_path):
    # accelerate's GradientAccumulationPlugin(sync_each_batch=True), as TrainingArguments pass it: under FSDP
    # the gradients are reduce-scattered after each micro-batch instead of held unsharded.
    args = json.loads((CONFIGS / "transformers_training_args.json").read_text())
    args["accelerator_config"] = {"gradient_accumulation_kwargs": {"sync_each_batch": True}}
    path = tmp_path / "training_args.json"
    path.write_text(json.dumps(args))
    assert read_training_config(path).options["sync_each_batch"] is True
    synced = estimate_json("--from", str(path), "-m", "8b", "--method", "full", "--gpus", "2", "--gpu", "h100")
    held = estimate_json("--from", str(CONFIGS / "transformers_training_args.json"), "-m", "8b", "--method", "full",
                         "--gpus", "2", "--gpu", "h100")
    assert held["layout"]["grad_accum"] == synced["layout"]["grad_accum"] > 1
    assert synced["memory_peak_bytes"] < held["memory_peak_bytes"]


def test_unknown_keys_are_listed_not_dropped():
    grpo = read_training_config(CONFIGS / "trl_grpo_training_args.json")
    assert {"num_generations", "use_vllm", "max_completion_length"} - {"use_vllm"} <= set(grpo.unknown)
    assert any("unknown key(s)" in n and "num_generations" in n for n in grpo.notes)
    assert any("max_steps 100" in n for n in grpo.notes)  # no sequence length to turn steps into tokens
    axolotl = read_training_config(CONFIGS / "axolotl_llama3_lora_8b.yml")
    assert any("lora-int8 (load_in_8bit)" in n for n in axolotl.notes)  # an 8-bit base, modelled
    assert any("key(s) of the file unset or changing nothing" in n for n in axolotl.notes)


def test_estimate_from_a_file_uses_its_layout_and_lists_it():
    data = estimate_json("--from", str(CONFIGS / "torchtune_llama3_1_8B_lora_single_device.yaml"), "--gpus", "1")
    assert data["model"] == "llama-3.1-8b"  # torchtune's llama3_1_8b builder -> the Llama 3.1 preset
    assert data["method"] == "lora"
    layout = data["layout"]
    chosen = (layout["micro_batch"], layout["grad_accum"], layout["global_batch"], layout["grad_ckpt"])
    assert chosen == (2, 8, 16, True)
    assert any(a.startswith("from ") and "torchtune" in a for a in data["assumptions"])


def test_axolotls_fsdp2_file_keeps_bf16_weights():
    # Axolotl replaces accelerate's fsdp2_prepare_model (which upcasts to fp32 under bf16) with one that
    # keeps the bf16-loaded weights: gpt-oss-20b's 20,914,757,184 parameters, sharded over 8 GPUs, hold
    # 2 bytes each of weights on each GPU (fp32 would be 4).
    data = estimate_json("--from", str(CONFIGS / "axolotl_gpt_oss_20b_fft_fsdp2.yaml"), "-m", "gpt-oss-20b",
                         "--gpus", "8", "--gpu", "h100")
    assert data["precision"] == "bf16-true" and data["framework"] == "axolotl"
    assert data["memory_breakdown"]["weights"] == pytest.approx(20_914_757_184 * 2 / 8, rel=1e-6)


def test_command_line_flags_override_the_file():
    data = estimate_json("--from", str(CONFIGS / "axolotl_llama3_qlora.yml"), "-m", "8b", "--seq-len", "1024",
                         "--optimizer", "adamw", "--gpus", "1")
    assert data["method"] == "qlora" and data["model"] == "llama-3-8b"
    assert any("--seq-len 1024 (file: 4096)" in a and "--model 8b" in a for a in data["assumptions"])
    assert any("AdamW (PyTorch foreach)" in a for a in data["assumptions"])


def test_deepspeed_stage_read_from_its_json_next_to_the_yaml(tmp_path):
    config = read_training_config(CONFIGS / "llamafactory_qwen3_lora_sft_ds3.yaml")
    assert any("DeepSpeed ZeRO-3" in n for n in config.notes) and "from the name" not in " ".join(config.notes)
    moved = tmp_path / "ds3.yaml"  # without the JSON beside it, the stage comes from the file name
    shutil.copy(CONFIGS / "llamafactory_qwen3_lora_sft_ds3.yaml", moved)
    assert read_training_config(moved).options["zero"] == 3


def test_model_named_by_the_file_resolves_offline_or_says_pass_model(tmp_path):
    # Not cached here: the preset of the same name stands in (NousResearch/Meta-Llama-3-8B: meta-llama-3-8b,
    # an alias of llama-3-8b), and says so.
    data = estimate_json("--from", str(CONFIGS / "axolotl_llama3_qlora.yml"))
    assert data["model"] == "NousResearch/Meta-Llama-3-8B" and data["params_total"] == 8_030_261_248
    assert any("the llama-3-8b preset of that name stands in" in a for a in data["assumptions"])
    unknown = tmp_path / "axolotl.yml"
    unknown.write_text((CONFIGS / "axolotl_llama3_qlora.yml").read_text().replace(
        "NousResearch/Meta-Llama-3-8B", "someone/Not-A-Preset-8B"))
    result = CliRunner().invoke(cli, ["estimate", "--from", str(unknown)])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: someone/Not-A-Preset-8B has no config.json") and "pass --model" in line


@pytest.mark.parametrize("content,message", [
    ("- just\n- a list\n", "does not hold a mapping"),
    ("learning_rate: 0.1\nfoo: 1\n", "not a config costplan recognises"),
    ("base_model: x\n  bad: [indent\n", "not valid YAML"),
    ("base_model: llama\nmicro_batch_size: lots\n", "micro_batch_size must be a number"),
    ("base_model: llama\nadapter: ia3\n", "adapter 'ia3' is not modelled"),
    ("model_name_or_path: x\nfinetuning_type: freeze\n", "finetuning_type 'freeze' is not modelled"),
    ('{"per_device_train_batch_size": 2,', "not valid JSON"),
])
def test_bad_files_are_one_line(tmp_path, content, message):
    path = tmp_path / ("bad.json" if content.startswith("{") else "bad.yaml")
    path.write_text(content)
    result = CliRunner().invoke(cli, ["estimate", "-m", "gpt2", "--from", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], result.output


def test_missing_file_is_one_line():
    result = CliRunner().invoke(cli, ["estimate", "--from", "/nonexistent/axolotl.yml"])
    assert result.exit_code == 2 and "No training config at" in result.output


AXOLOTL_LORA = """base_model: NousResearch/Meta-Llama-3-8B
adapter: lora
lora_r: 16
sequence_len: 2048
micro_batch_size: 1
gradient_accumulation_steps: 4
"""


@pytest.mark.parametrize("targets,roles,note", [
    # a string is a regular expression peft full-matches against module names; Axolotl's image-text
    # examples (gemma3, mistral3, llama-3.2 vision) name the language model's layers so
    (r"'model.language_model.layers.[\d]+.(mlp|cross_attn|self_attn).(up|down|gate|q|k|v|o)_proj'",
     "q,k,v,o,gate,up,down", None),
    (r"'language_model.model.layers.[\d]+.(mlp|self_attn).(up|down|gate|q|k|v|o)_proj'", "q,k,v,o,gate,up,down", None),
    # attention in every fourth layer only (examples/qwen3: ".*\.layers\.(3|7|...)\.self_attn...")
    (r'".*\\.layers\\.(3|7|11|15|19|23|27|31)\\.self_attn\\.(q|k|v|o)_proj|.*\\.mlp\\.(gate|up|down)_proj"',
     "q,k,v,o,gate,up,down", "layers 3, 7, 11, 15, 19, 23, 27, 31 only"),
    # DeepSeek-style MLA and shared experts (examples/deepseek-v2)
    (r"'model.layers.[\d]+.(self_attn.(q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj)|"
     r"mlp.(shared_experts.)?(gate_proj|up_proj|down_proj))'", "o,gate,up,down,q_a,q_b,kv_a,kv_b", None),
    # a list names modules by their last parts; peft leaves out what the model lacks (Jamba's in_proj)
    ("[self_attn.q_proj, self_attn.v_proj, in_proj, x_proj]", "q,v", "in_proj, x_proj name no matrix"),
])
def test_axolotl_target_modules_are_read_as_peft_reads_them(tmp_path, targets, roles, note):
    path = tmp_path / "axolotl.yml"
    path.write_text(AXOLOTL_LORA + f"lora_target_modules: {targets}\n")
    config = read_training_config(path)
    assert config.options["lora_targets"] == roles
    assert (note is None) == (not any("lora_target_modules" in n for n in config.notes))
    if note:
        assert any(note in n for n in config.notes), config.notes


@pytest.mark.parametrize("targets,message", [
    (r"'model.vision_tower.layers.[\d]+.fc[12]'", "matches no projection of a Llama-style layer"),
    ("'(q_proj'", "is not a regular expression"),
])
def test_axolotl_target_modules_that_name_nothing_are_one_line(tmp_path, targets, message):
    path = tmp_path / "axolotl.yml"
    path.write_text(AXOLOTL_LORA + f"lora_target_modules: {targets}\n")
    result = CliRunner().invoke(cli, ["estimate", "--from", str(path), "-m", "8b"])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("component,model", [
    ("torchtune.models.llama3_2.lora_llama3_2_3b", "llama-3.2-3b"),
    ("torchtune.models.llama3_3.llama3_3_70b", "llama-3.3-70b"),
    ("torchtune.models.qwen2_5.lora_qwen2_5_1_5b_instruct", "qwen2.5-1.5b"),
    ("torchtune.models.qwen3.qwen3_0_6b_instruct", "qwen3-0.6b"),
    ("torchtune.models.gemma2.gemma2_27b", "gemma-2-27b"),
    ("torchtune.models.phi4.lora_phi4_14b", "phi-4-14b"),
])
def test_torchtune_builders_name_their_presets(tmp_path, component, model):
    from costplan.model import resolve_model

    path = tmp_path / "recipe.yaml"
    path.write_text(f"model:\n  _component_: {component}\nbatch_size: 2\n")
    config = read_training_config(path)
    assert config.options["model"] == model
    resolve_model(model)  # a preset (or an alias of one)


def test_torchtune_lora_on_the_output_projection_is_lora_on_the_head(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("model:\n  _component_: torchtune.models.mistral.lora_mistral_7b\n"
                    "  lora_attn_modules: ['q_proj', 'v_proj']\n  apply_lora_to_output: True\n  lora_rank: 8\n"
                    "batch_size: 2\n")
    assert read_training_config(path).options["lora_targets"] == "q,v,head"
    data = estimate_json("--from", str(path), "--gpus", "1")
    # peft's own count: r (in + out) per matrix; q and v of Mistral-7B (4096->4096, 4096->1024), the head 4096->32000
    assert data["params_trainable"] == 32 * 8 * ((4096 + 4096) + (4096 + 1024)) + 8 * (4096 + 32000)


def test_axolotls_quantized_moe_experts_are_read(tmp_path):
    """Axolotl's GLM-4.5-Air QLoRA example (examples/glm45/glm-45-air-qlora.yaml, 753906cfc): quantize_moe_experts
    is read, not listed as unknown, and the estimate plans each layer's expert stack dequantized where it runs."""
    path = tmp_path / "glm-45-air-qlora.yaml"
    path.write_text("base_model: zai-org/GLM-4.5-Air\nload_in_4bit: true\nquantize_moe_experts: true\nadapter: qlora\n"
                    "sequence_len: 2048\nsample_packing: true\nlora_r: 16\nlora_alpha: 8\nlora_dropout: 0\n"
                    "lora_target_modules:\n  - q_proj\n  - v_proj\n  - k_proj\n  - o_proj\n"
                    "gradient_accumulation_steps: 2\nmicro_batch_size: 2\noptimizer: adamw_bnb_8bit\nbf16: auto\n"
                    "gradient_checkpointing: true\nflash_attention: true\n")
    config = read_training_config(path)
    assert "quantize_moe_experts" not in config.unknown
    assert any("quantize_moe_experts" in n for n in config.notes)
    data = estimate_json("--from", str(path), "--gpu", "h100")
    assert data["model"] == "zai-org/GLM-4.5-Air"  # the glm-4.5-air preset stands in offline
    assert any("parametrization of their 3-D tensors" in a for a in data["assumptions"])
