"""Parameter counts: the itemised inventory against published counts and the real modules."""

import pytest

from costplan.methods import FullFineTune, Lora, PrefixTuning, PromptTuning, parse_targets
from costplan.model import count_params, preset, preset_names

# Published / printed counts of the real checkpoints (model cards and `model.num_parameters()`).
PUBLISHED = {
    "gpt2": 124_439_808,
    "bert-base": 109_514_298,  # BertForMaskedLM, bert-base-uncased
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-2-70b": 68_976_648_192,
    "llama-3-8b": 8_030_261_248,
    "llama-3-70b": 70_553_706_496,
    "mistral-7b": 7_241_732_096,
    "mixtral-8x7b": 46_702_792_704,
}


@pytest.mark.parametrize("name,expected", sorted(PUBLISHED.items()))
def test_preset_parameter_counts_equal_the_real_models(name, expected):
    assert count_params(preset(name)).total == expected


@pytest.mark.parametrize("alias,key", [("7b", "llama-2-7b"), ("8b", "llama-3-8b"), ("13b", "llama-2-13b"),
                                       ("70b", "llama-3-70b"), ("GPT2", "gpt2"), ("mixtral", "mixtral-8x7b")])
def test_aliases(alias, key):
    assert preset(alias).name == key


def test_llama2_7b_by_hand():
    # embeddings + 32 x (4 h² attention + 3 h f MLP + 2 h norms) + final norm + LM head
    h, f, v = 4096, 11008, 32000
    expected = v * h + 32 * (4 * h * h + 3 * h * f + 2 * h) + h + v * h
    assert count_params(preset("llama-2-7b")).total == expected


def test_lora_trainable_counts_match_peft_printouts():
    # peft's print_trainable_parameters for Llama-2-7B: r=8 on q,v -> 4,194,304;
    # r=16 on all linear layers -> 39,976,960.
    model = preset("llama-2-7b")
    assert Lora(rank=8, targets=("q", "v")).trainable_params(model) == 4_194_304
    assert Lora(rank=16, targets=parse_targets("all-linear")).trainable_params(model) == 39_976_960


def test_gqa_lora_uses_the_narrow_kv_projections():
    # Llama-3-8B: k and v project 4096 -> 1024, so r(4096+1024) each; q is r(4096+4096).
    model = preset("llama-3-8b")
    r = 8
    assert Lora(rank=r, targets=("k",)).trainable_params(model) == 32 * r * (4096 + 1024)
    assert Lora(rank=r, targets=("q",)).trainable_params(model) == 32 * r * (4096 + 4096)


def test_prompt_and_prefix_parameters():
    model = preset("llama-3-8b")
    assert PromptTuning(num_virtual_tokens=20).trainable_params(model) == 20 * 4096
    # 20 positions x 32 layers x (key + value) x 8 kv heads x 128
    assert PrefixTuning(num_virtual_tokens=20).trainable_params(model) == 20 * 32 * 2 * 1024


def test_full_fine_tune_trains_everything():
    for name in preset_names():
        model = preset(name)
        assert FullFineTune().trainable_params(model) == count_params(model).total


MODULE_CASES = ["gpt2", "bert-base", "pythia-1b", "gemma-2b", "qwen2-7b", "llama-3-8b", "mixtral-8x7b"]


@pytest.mark.needs_torch
@pytest.mark.parametrize("name", MODULE_CASES)
def test_counts_equal_the_transformers_module_on_meta_device(name, tmp_path):
    from costplan.tracing import build_model

    model = preset(name)
    module = build_model(model, device="meta")
    assert sum(p.numel() for p in module.parameters()) == count_params(model).total


def _small_configs():
    import transformers as T

    return {
        "llama": T.LlamaConfig(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, vocab_size=500),
        "mistral": T.MistralConfig(hidden_size=128, intermediate_size=344, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=1, vocab_size=500),
        "mixtral": T.MixtralConfig(hidden_size=128, intermediate_size=344, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=500,
                                   num_local_experts=4, num_experts_per_tok=2),
        "qwen2": T.Qwen2Config(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, vocab_size=500, tie_word_embeddings=True),
        "gemma": T.GemmaConfig(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=1, head_dim=64, vocab_size=500),
        "gpt2": T.GPT2Config(n_embd=128, n_layer=2, n_head=4, n_positions=256, vocab_size=500),
        "gpt_neox": T.GPTNeoXConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                                    num_attention_heads=4, vocab_size=500),
        "bert": T.BertConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                             vocab_size=500),
    }


@pytest.mark.needs_torch
@pytest.mark.parametrize("family", ["llama", "mistral", "mixtral", "qwen2", "gemma", "gpt2", "gpt_neox", "bert"])
def test_config_json_is_read_like_transformers_reads_it(family, tmp_path):
    """A config written by transformers, read back without it, gives the module's exact count."""
    import torch
    import transformers as T

    from costplan.model import from_hf_config

    config = _small_configs()[family]
    config.save_pretrained(tmp_path)
    with torch.device("meta"):
        module = T.BertForMaskedLM(config) if family == "bert" else T.AutoModelForCausalLM.from_config(config)
    spec = from_hf_config(tmp_path)
    assert spec.family == family
    assert count_params(spec).total == sum(p.numel() for p in module.parameters())
