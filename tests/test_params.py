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
    # transformers' model.num_parameters() of the official checkpoints (Hub model pages).
    "phi-3-mini": 3_821_079_552,  # microsoft/Phi-3-mini-4k-instruct
    "gemma-2-9b": 9_241_705_984,  # google/gemma-2-9b
    "gemma-3-1b": 999_885_952,  # google/gemma-3-1b-pt
    "qwen2.5-7b": 7_615_616_512,  # Qwen/Qwen2.5-7B
    "qwen3-8b": 8_190_735_360,  # Qwen/Qwen3-8B
    "qwen3-30b-a3b": 30_532_122_624,  # Qwen/Qwen3-30B-A3B
    "olmo-2-7b": 7_298_617_344,  # allenai/OLMo-2-1124-7B
    "t5-base": 222_903_552,  # google-t5/t5-base, T5ForConditionalGeneration
    # the safetensors totals on the Hub model pages (shapes from torchtune's builders, tables/models.csv)
    "llama-3.2-1b": 1_235_814_400,  # meta-llama/Llama-3.2-1B (tied embeddings)
    "llama-3.2-3b": 3_212_749_824,  # meta-llama/Llama-3.2-3B
    "llama-3.3-70b": 70_553_706_496,  # meta-llama/Llama-3.3-70B-Instruct
    "llama-3.1-405b": 405_853_388_800,  # meta-llama/Llama-3.1-405B
    "qwen2-0.5b": 494_032_768,  # Qwen/Qwen2-0.5B
    "qwen2-1.5b": 1_543_714_304,  # Qwen/Qwen2-1.5B
    "qwen2.5-0.5b": 494_032_768,  # Qwen/Qwen2.5-0.5B
    "qwen2.5-1.5b": 1_543_714_304,  # Qwen/Qwen2.5-1.5B
    "qwen2.5-3b": 3_085_938_688,  # Qwen/Qwen2.5-3B
    "qwen2.5-14b": 14_770_033_664,  # Qwen/Qwen2.5-14B
    "qwen2.5-32b": 32_763_876_352,  # Qwen/Qwen2.5-32B
    "qwen2.5-72b": 72_706_203_648,  # Qwen/Qwen2.5-72B
    "qwen3-4b": 4_022_468_096,  # Qwen/Qwen3-4B
    "qwen3-14b": 14_768_307_200,  # Qwen/Qwen3-14B
    "qwen3-32b": 32_762_123_264,  # Qwen/Qwen3-32B
    # Qwen/Qwen3-0.6B and -1.7B tie their embeddings but their checkpoints store lm_head.weight too: the
    # pages' totals (751,632,384 and 2,031,739,904) count the vocabulary x hidden matrix twice.
    "qwen3-0.6b": 751_632_384 - 151_936 * 1024,
    "qwen3-1.7b": 2_031_739_904 - 151_936 * 2048,
    "gemma-7b": 8_537_680_896,  # google/gemma-7b
    "gemma-2-2b": 2_614_341_888,  # google/gemma-2-2b
    "gemma-2-27b": 27_227_128_320,  # google/gemma-2-27b
    "phi-4": 14_659_507_200,  # microsoft/phi-4
    "phi-4-mini": 3_836_021_760,  # microsoft/Phi-4-mini-instruct
    "phi-2": 2_779_683_840,  # microsoft/phi-2 (PhiForCausalLM: the LM head's bias included)
    "phi-1.5": 1_418_270_720,  # microsoft/phi-1_5
    "smollm2-135m": 134_515_008,  # HuggingFaceTB/SmolLM2-135M
    "smollm2-360m": 361_821_120,  # HuggingFaceTB/SmolLM2-360M
    "smollm2-1.7b": 1_711_376_384,  # HuggingFaceTB/SmolLM2-1.7B
    "mistral-7b-v0.3": 7_248_023_552,  # mistralai/Mistral-7B-v0.3
    "codellama-7b": 6_738_546_688,  # codellama/CodeLlama-7b-hf
    "phi-3.5-mini": 3_821_079_552,  # microsoft/Phi-3.5-mini-instruct (Phi-3-mini's shapes, 128K positions)
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
    """Every parameter text reaches: an image-text checkpoint's vision tower gets no gradient."""
    for name in preset_names():
        counts = count_params(preset(name))
        assert FullFineTune().trainable_params(preset(name)) == counts.total - counts.vision


@pytest.mark.needs_torch
@pytest.mark.parametrize("name,text,total,tower", [
    # Mistral-Small-3.1-24B: 24,011,361,280 parameters, 438,958,080 of them the Pixtral tower and projector.
    ("mistral-small", dict(model_type="mistral", hidden_size=5120, num_hidden_layers=40, num_attention_heads=32,
                           num_key_value_heads=8, head_dim=128, intermediate_size=32768, vocab_size=131072,
                           tie_word_embeddings=False), 24_011_361_280, 438_958_080),
    # Ministral-3-3B-2512: a tied 3.43B text model beside the same tower, its projector 3072 wide.
    ("ministral-3-3b", dict(model_type="ministral3", hidden_size=3072, num_hidden_layers=26, num_attention_heads=32,
                            num_key_value_heads=8, head_dim=128, intermediate_size=9216, vocab_size=131072,
                            max_position_embeddings=262144, tie_word_embeddings=True), 3_849_090_048, 420_083_712),
])
def test_the_mistral3_presets_are_the_whole_image_text_checkpoints(name, text, total, tower):
    """Mistral3ForConditionalGeneration built from the checkpoint's config.json holds what the preset counts."""
    import torch
    import transformers as T

    model = preset(name)
    vision = dict(model_type="pixtral", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                  num_attention_heads=16, head_dim=64, patch_size=14, image_size=1540)
    config = T.Mistral3Config(text_config=text, vision_config=vision, tie_word_embeddings=text["tie_word_embeddings"])
    with torch.device("meta"):
        whole = T.Mistral3ForConditionalGeneration(config)
    assert count_params(model).total == sum(p.numel() for p in whole.parameters()) == total
    assert model.vision.params == tower


@pytest.mark.needs_torch
@pytest.mark.parametrize("name,text,total", [
    ("gemma-3-4b-it", dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=34, num_attention_heads=8,
                           num_key_value_heads=4, head_dim=256), 4_300_079_472),
    ("gemma-3-12b-it", dict(hidden_size=3840, intermediate_size=15360, num_hidden_layers=48, num_attention_heads=16,
                            num_key_value_heads=8, head_dim=256), 12_187_325_040),
    ("gemma-3-27b-it", dict(hidden_size=5376, intermediate_size=21504, num_hidden_layers=62, num_attention_heads=32,
                            num_key_value_heads=16, head_dim=128, query_pre_attn_scalar=168), 27_432_406_640),
])
def test_the_gemma3_presets_are_whole_image_text_checkpoints(name, text, total):
    """google/gemma-3-*-it as Gemma3ForConditionalGeneration builds them from their config.json (4.3B,
    12.2B, 27.4B); the gemma-3-4b preset stays the 4B's text model."""
    import torch
    import transformers as T

    text = T.Gemma3TextConfig(**text, vocab_size=262208, sliding_window=1024)
    vision = T.SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                  num_attention_heads=16, patch_size=14, image_size=896, vision_use_head=False)
    with torch.device("meta"):
        whole = T.Gemma3ForConditionalGeneration(T.Gemma3Config(text_config=text, vision_config=vision))
    assert count_params(preset(name)).total == sum(p.numel() for p in whole.parameters()) == total
    assert count_params(preset("gemma-3-4b")).total == count_params(preset("gemma-3-4b-it")).active


def test_moe_active_parameters_match_the_published_figures():
    # Mixtral: "46.7B total parameters but only uses 12.9B parameters per token" (Mistral AI, 2023-12-11).
    assert round(count_params(preset("mixtral-8x7b")).active / 1e8) == 129
    # Qwen3-30B-A3B: 30.5B total, 3.3B activated (model card).
    assert round(count_params(preset("qwen3-30b-a3b")).active / 1e8) == 34  # 3.35B
    # DeepSeek-V3: 671B total; "activation parameters: 36.6B (including 0.9B for the output head)",
    # without the input embedding (deepseek-ai/DeepSeek-V3 README_WEIGHTS.md).
    model = preset("deepseek-v3")
    counts = count_params(model)
    assert round(counts.total / 1e9) == 671
    assert round((counts.active - model.vocab_size * model.hidden_size) / 1e8) == 366
    # Dense models are all active.
    assert count_params(preset("qwen3-8b")).active == count_params(preset("qwen3-8b")).total


def test_deepseek_v3_layers_by_hand():
    """MLA projections, three dense layers, then routed experts with one shared expert."""
    h, v, heads, rq, rkv, nope, rope, vd = 7168, 129280, 128, 1536, 512, 128, 64, 128
    attention = (h * rq + rq + rq * heads * (nope + rope) + h * (rkv + rope) + rkv
                 + rkv * heads * (nope + vd) + heads * vd * h)  # with the q_a and kv_a norms
    dense = 3 * h * 18432
    moe = h * 256 + 256 * 3 * h * 2048 + 3 * h * 2048  # router, routed experts, shared expert
    expected = 2 * v * h + 61 * (attention + 2 * h) + 3 * dense + 58 * moe + h
    assert count_params(preset("deepseek-v3")).total == expected


MODULE_CASES = ["gpt2", "bert-base", "pythia-1b", "gemma-2b", "qwen2-7b", "llama-3-8b", "mixtral-8x7b",
                "phi-3-mini", "gemma-2-9b", "gemma-3-1b", "gemma-3-4b", "qwen2.5-7b", "qwen3-8b", "qwen3-30b-a3b",
                "deepseek-v3", "olmo-2-7b", "t5-base"]


@pytest.mark.needs_torch
@pytest.mark.parametrize("name", MODULE_CASES)
def test_counts_equal_the_transformers_module_on_meta_device(name, tmp_path):
    from costplan.tracing import build_model

    model = preset(name)
    module = build_model(model, device="meta")
    assert sum(p.numel() for p in module.parameters()) == count_params(model).total


def _small_configs():
    import transformers as T

    small = dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=500)
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
        "phi3": T.Phi3Config(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=500, sliding_window=64, pad_token_id=0),
        "gemma2": T.Gemma2Config(hidden_size=128, intermediate_size=344, num_hidden_layers=3, num_attention_heads=4,
                                 num_key_value_heads=2, head_dim=64, vocab_size=500, sliding_window=32),
        "gemma3": T.Gemma3TextConfig(hidden_size=128, intermediate_size=344, num_hidden_layers=7,
                                     num_attention_heads=4, num_key_value_heads=1, head_dim=64, vocab_size=500,
                                     sliding_window=32),
        "qwen3": T.Qwen3Config(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, head_dim=48, vocab_size=500, tie_word_embeddings=True),
        "qwen3_moe": T.Qwen3MoeConfig(hidden_size=128, intermediate_size=344, moe_intermediate_size=96,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                      num_experts=8, num_experts_per_tok=2, vocab_size=500),
        "deepseek_v3": T.DeepseekV3Config(hidden_size=128, intermediate_size=344, moe_intermediate_size=96,
                                          num_hidden_layers=3, num_attention_heads=4, n_routed_experts=16,
                                          num_experts_per_tok=2, n_shared_experts=2, first_k_dense_replace=1,
                                          q_lora_rank=64, kv_lora_rank=32, qk_rope_head_dim=16,
                                          qk_nope_head_dim=32, v_head_dim=24, n_group=4, topk_group=2,
                                          vocab_size=500),
        "olmo2": T.Olmo2Config(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, vocab_size=500),
        "t5": T.T5Config(d_model=128, d_kv=32, d_ff=344, num_layers=2, num_decoder_layers=3, num_heads=4,
                         vocab_size=500, feed_forward_proj="gated-gelu"),
        "gpt_oss": T.GptOssConfig(hidden_size=128, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=48, num_local_experts=8, num_experts_per_tok=2,
                                  vocab_size=500, sliding_window=16),
        # Llama's layers under their own model types: the biases each one's fields switch on.
        "smollm3": T.SmolLM3Config(**small, pad_token_id=None, no_rope_layers=[1, 0]),
        "granite": T.GraniteConfig(**small, mlp_bias=True, embedding_multiplier=12.0, residual_multiplier=0.22),
        "seed_oss": T.SeedOssConfig(**small, head_dim=48, pad_token_id=None),  # q, k, v biased, o not
        "ernie4_5": T.Ernie4_5Config(**small, use_bias=True, pad_token_id=None),
        "arcee": T.ArceeConfig(**small, tie_word_embeddings=True),
        "hunyuan_v1_dense": T.HunYuanDenseV1Config(**small, head_dim=32, attention_bias=True, pad_token_id=None),
        "starcoder2": T.Starcoder2Config(**small, sliding_window=64, residual_dropout=0.1, embedding_dropout=0.1),
        "glm4_moe": T.Glm4MoeConfig(**{**small, "num_hidden_layers": 3}, head_dim=48, attention_bias=True,
                                    moe_intermediate_size=96, n_routed_experts=16, num_experts_per_tok=2,
                                    n_shared_experts=1, first_k_dense_replace=1, n_group=4, topk_group=2,
                                    use_qk_norm=True),
    }


def _module(family, config):
    import transformers as T

    if family == "bert":
        return T.BertForMaskedLM(config)
    if family == "t5":
        return T.T5ForConditionalGeneration(config)
    return T.AutoModelForCausalLM.from_config(config)


@pytest.mark.needs_torch
@pytest.mark.parametrize("family", ["llama", "mistral", "mixtral", "qwen2", "gemma", "gpt2", "gpt_neox", "bert",
                                    "phi3", "gemma2", "gemma3", "qwen3", "qwen3_moe", "deepseek_v3", "olmo2", "t5",
                                    "gpt_oss", "smollm3", "granite", "seed_oss", "ernie4_5", "arcee",
                                    "hunyuan_v1_dense", "starcoder2", "glm4_moe"])
def test_config_json_is_read_like_transformers_reads_it(family, tmp_path):
    """A config written by transformers, read back without it, gives the module's exact count."""
    import torch

    from costplan.model import from_hf_config

    config = _small_configs()[family]
    config.save_pretrained(tmp_path)
    with torch.device("meta"):
        module = _module(family, config)
    spec = from_hf_config(tmp_path)
    assert spec.family == family
    assert count_params(spec).total == sum(p.numel() for p in module.parameters())


def _vision_modules(module):
    import torch

    return sum(m.weight.numel() for name, m in module.named_modules()
               if isinstance(m, torch.nn.Linear) and ("vision" in name or "projector" in name))


@pytest.mark.needs_torch
@pytest.mark.parametrize("head", [False, True])
def test_a_multimodal_gemma3_config_is_its_text_model_and_a_siglip_tower(tmp_path, head):
    """A gemma3 config.json nests the text model, listing only what differs from its defaults, beside
    the SigLIP vision config (Gemma 3's own leaves out the pooling head). The count is
    Gemma3ForConditionalGeneration's; the text model is the causal LM's."""
    import torch
    import transformers as T

    from costplan.model import from_hf_config

    text = T.Gemma3TextConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=6, sliding_window=64)
    vision = T.SiglipVisionConfig(hidden_size=96, intermediate_size=200, num_hidden_layers=3, num_attention_heads=4,
                                  patch_size=14, image_size=112, vision_use_head=head)
    config = T.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=16)
    config.save_pretrained(tmp_path)
    with torch.device("meta"):
        language = T.AutoModelForCausalLM.from_config(text)
        whole = T.Gemma3ForConditionalGeneration(config)
    spec = from_hf_config(tmp_path)
    assert (spec.family, spec.sliding_window, spec.sliding_window_pattern) == ("gemma3", 64, 6)
    counts = count_params(spec)
    assert counts.total == sum(p.numel() for p in whole.parameters())
    assert counts.active == sum(p.numel() for p in language.parameters())
    assert spec.vision.linear_weights == _vision_modules(whole)


@pytest.mark.needs_torch
@pytest.mark.parametrize("text_type,extra", [
    ("mistral", {}),
    ("mistral", {"multimodal_projector_bias": True, "vision_feature_layer": [-1, -4], "spatial_merge_size": 3}),
    ("ministral3", {}),
])
def test_a_mistral3_config_is_its_mistral_text_model_and_a_pixtral_tower(tmp_path, text_type, extra):
    """Mistral Small 3.1/3.2 and Magistral Small 2509 ship as Mistral3ForConditionalGeneration: a
    Mistral text model, a Pixtral encoder and a patch-merging projector; Ministral 3 with a ministral3
    text model (Mistral's layers with Llama 4's query scale, test_families)."""
    import torch
    import transformers as T

    from costplan.model import from_hf_config

    text = dict(model_type=text_type, hidden_size=256, intermediate_size=640, num_hidden_layers=4,
                num_attention_heads=8, num_key_value_heads=2, head_dim=32, vocab_size=1000, tie_word_embeddings=False)
    vision = dict(model_type="pixtral", hidden_size=128, intermediate_size=320, num_hidden_layers=3,
                  num_attention_heads=4, head_dim=32, patch_size=14, image_size=224)
    config = T.Mistral3Config(text_config=text, vision_config=vision, tie_word_embeddings=False, **extra)
    config.save_pretrained(tmp_path)
    with torch.device("meta"):
        whole = T.Mistral3ForConditionalGeneration(config)
    spec = from_hf_config(tmp_path)
    assert spec.family == "mistral" and spec.vision.kind == "Pixtral"
    assert count_params(spec).total == sum(p.numel() for p in whole.parameters())
    assert spec.vision.linear_weights == _vision_modules(whole)


@pytest.mark.needs_torch
@pytest.mark.parametrize("family,targets,names,dora", [
    ("gemma3", "q,v", ["q_proj", "v_proj"], False),
    ("gemma3", "q,v", ["q_proj", "v_proj"], True),
    ("gemma3", "all-linear", "all-linear", False),
    ("mistral3", "mlp", ["gate_proj", "up_proj", "down_proj"], False),
    ("mistral3", "all-linear", "all-linear", False),
])
def test_lora_on_an_image_text_model_adapts_the_vision_tower_as_peft_does(tmp_path, family, targets, names, dora):
    """peft matches target names by their last part, so q_proj adapts the vision tower's q_proj too, and
    all-linear takes every Linear but the LM head (the Mistral 3 projector's included): costplan's
    trainable count is peft's, adapters that text never reaches included."""
    import peft
    import torch
    import transformers as T

    from costplan.model import from_hf_config

    if family == "gemma3":
        text = T.Gemma3TextConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=6, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=64)
        vision = T.SiglipVisionConfig(hidden_size=96, intermediate_size=200, num_hidden_layers=3, num_attention_heads=4,
                                      patch_size=14, image_size=112, vision_use_head=False)
        config, cls = T.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=16), \
            T.Gemma3ForConditionalGeneration
    else:
        config = T.Mistral3Config(
            text_config=dict(model_type="mistral", hidden_size=256, intermediate_size=640, num_hidden_layers=4,
                             num_attention_heads=8, num_key_value_heads=2, head_dim=32, vocab_size=1000),
            vision_config=dict(model_type="pixtral", hidden_size=128, intermediate_size=320, num_hidden_layers=3,
                               num_attention_heads=4, head_dim=32, patch_size=14), tie_word_embeddings=False)
        cls = T.Mistral3ForConditionalGeneration
    config.save_pretrained(tmp_path)
    with torch.device("meta"):
        model = peft.get_peft_model(cls(config), peft.LoraConfig(r=8, target_modules=names, use_dora=dora))
    method = Lora(rank=8, targets=parse_targets(targets), dora=dora)
    assert method.trainable_params(from_hf_config(tmp_path)) == sum(
        p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.needs_torch
def test_an_olmo3_config_reads_as_olmo2_layers_three_in_four_sliding(tmp_path):
    """OLMo 3 keeps OLMo 2's layers (norms after each block, q/k norms over all heads) and slides
    three layers in four over a 4096-token window (its config's layer_types)."""
    import torch
    import transformers as T

    from costplan.model import from_hf_config, layer_sequence

    config = T.Olmo3Config(hidden_size=128, intermediate_size=256, num_hidden_layers=8, num_attention_heads=4,
                           num_key_value_heads=4, vocab_size=1000)
    config.save_pretrained(tmp_path)
    with torch.device("meta"):
        module = T.AutoModelForCausalLM.from_config(config)
    spec = from_hf_config(tmp_path)
    assert (spec.family, spec.qk_norm, spec.norm_placement) == ("olmo2", "full", "reordered")
    assert (spec.sliding_window, spec.sliding_window_pattern) == (4096, 4)
    assert count_params(spec).total == sum(p.numel() for p in module.parameters())
    assert [kind.name for kind in layer_sequence(spec)] == (["sliding"] * 3 + ["global"]) * 2


@pytest.mark.needs_torch
@pytest.mark.parametrize("family", ["phi3", "gemma2", "gemma3", "deepseek_v3", "t5"])
def test_the_layer_structure_read_from_config_json(family, tmp_path):
    from costplan.model import from_hf_config, layer_sequence

    _small_configs()[family].save_pretrained(tmp_path)
    spec = from_hf_config(tmp_path)
    kinds = [kind.name for kind in layer_sequence(spec)]
    assert kinds == {"phi3": ["sliding"] * 2, "gemma2": ["sliding", "global", "sliding"],
                     "gemma3": ["sliding"] * 5 + ["global", "sliding"], "deepseek_v3": ["dense", "moe", "moe"],
                     "t5": ["encoder"] * 2 + ["decoder"] * 3}[family]


@pytest.mark.needs_torch
def test_every_text_preset_counts_what_transformers_builds_from_it():
    """The module transformers builds (meta device) from each preset's config holds exactly the parameters
    costplan counts; image-text presets are checked whole above (their towers are built apart)."""
    from costplan.tracing import build_model

    for name in preset_names():
        spec = preset(name)
        if spec.vision is not None:
            continue
        module = build_model(spec, device="meta")
        assert sum(p.numel() for p in module.parameters()) == count_params(spec).total, name


def test_roberta_reads_as_the_bert_it_is_built_as(tmp_path):
    """FacebookAI/roberta-base's config.json: RobertaForMaskedLM holds BERT's modules with 514 positions and
    one token type; by hand: embeddings (word, position, token type, LayerNorm), 12 layers (four biased
    h x h projections, the biased MLP, two LayerNorms), the MLM head's dense + LayerNorm and the output bias
    (its weight tied): 124,697,433, what transformers builds."""
    import json

    from costplan.model import resolve_model

    config = {"architectures": ["RobertaForMaskedLM"], "model_type": "roberta", "hidden_size": 768,
              "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
              "max_position_embeddings": 514, "type_vocab_size": 1, "vocab_size": 50265, "pad_token_id": 1}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    h, f, v = 768, 3072, 50265
    by_hand = (v * h + 514 * h + h + 2 * h) + 12 * (4 * (h * h + h) + (h * f + f) + (f * h + h) + 4 * h) \
        + (h * h + h + 2 * h + v)
    assert count_params(resolve_model(str(path))).total == by_hand == 124_697_433


@pytest.mark.needs_torch
def test_kimi_k2_reads_as_the_deepseek_v3_it_ships(tmp_path):
    """moonshotai/Kimi-K2-Instruct's config.json says model_type kimi_k2 and DeepseekV3ForCausalLM: MLA, 384
    routed experts of 2048 (8 a token) and one shared, a first dense layer, vocabulary 163,840. Cut to three
    layers, costplan counts what transformers' DeepseekV3ForCausalLM builds from the same numbers."""
    import json

    import torch
    import transformers as T

    from costplan.model import resolve_model

    config = {"model_type": "kimi_k2", "architectures": ["DeepseekV3ForCausalLM"], "hidden_size": 7168,
              "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 3,
              "num_attention_heads": 64, "num_key_value_heads": 64, "n_routed_experts": 384, "n_shared_experts": 1,
              "num_experts_per_tok": 8, "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1,
              "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
              "v_head_dim": 128, "vocab_size": 163840, "max_position_embeddings": 262144,
              "tie_word_embeddings": False}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    spec = resolve_model(str(path))
    fields = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    with torch.device("meta"):
        module = T.DeepseekV3ForCausalLM(T.DeepseekV3Config(**fields))
    assert spec.family == "deepseek_v3"
    assert count_params(spec).total == sum(p.numel() for p in module.parameters()) == 36_965_047_296


@pytest.mark.needs_torch
def test_phi_4_mini_reads_with_its_partial_rotary(tmp_path):
    """microsoft/Phi-4-mini-instruct's config.json (Phi3ForCausalLM, RoPE on 0.75 of each head, tied
    embeddings, a 200,064-token vocabulary): 3,836,021,760 parameters, as transformers builds it; the
    partial rotary holds no weight."""
    import json

    import torch
    import transformers as T

    from costplan.model import resolve_model

    config = {"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
              "num_attention_heads": 24, "num_key_value_heads": 8, "vocab_size": 200064,
              "max_position_embeddings": 131072, "partial_rotary_factor": 0.75, "tie_word_embeddings": True}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    fields = {k: v for k, v in config.items() if k != "model_type"}
    with torch.device("meta"):
        module = T.Phi3ForCausalLM(T.Phi3Config(**fields))
    total = sum(p.numel() for p in module.parameters())
    assert count_params(resolve_model(str(path))).total == total == 3_836_021_760


@pytest.mark.needs_torch
def test_qwen2_5_vl_is_its_qwen2_text_model_and_its_vit(tmp_path):
    """Qwen2.5-VL's config.json, nested (as transformers 5 writes it) or flat (the Hub's files keep the text
    model's fields at the top level), counts what Qwen2_5_VLForConditionalGeneration holds; the preset is
    Qwen2.5-VL-7B-Instruct's 8,292,166,656 parameters, 676,550,144 of them the ViT and its merger."""
    import json

    import torch
    import transformers as T

    from costplan.model import from_hf_config

    text = dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=512, vocab_size=1000, tie_word_embeddings=False)
    vision = dict(depth=2, hidden_size=128, intermediate_size=200, num_heads=4, patch_size=14, temporal_patch_size=2,
                  spatial_merge_size=2, out_hidden_size=256, in_channels=3)
    config = T.Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False)
    config.save_pretrained(tmp_path)
    with torch.device("meta"):
        whole = T.Qwen2_5_VLForConditionalGeneration(config)
    spec = from_hf_config(tmp_path)
    assert spec.family == "qwen2" and spec.qkv_bias and not spec.out_bias
    assert count_params(spec).total == sum(p.numel() for p in whole.parameters())
    assert spec.vision.params == sum(p.numel() for p in whole.model.visual.parameters())
    raw = json.loads((tmp_path / "config.json").read_text())
    flat = {**raw.pop("text_config"), **raw, "model_type": "qwen2_5_vl"}
    (tmp_path / "config.json").write_text(json.dumps(flat))
    assert count_params(from_hf_config(tmp_path)).total == count_params(spec).total
    seven = dict(model_type="qwen2_5_vl_text", hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False)
    vit = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14, temporal_patch_size=2,
               spatial_merge_size=2, out_hidden_size=3584, in_channels=3)
    with torch.device("meta"):
        whole = T.Qwen2_5_VLForConditionalGeneration(
            T.Qwen2_5_VLConfig(text_config=seven, vision_config=vit, tie_word_embeddings=False))
    model = preset("qwen2.5-vl-7b")
    assert count_params(model).total == sum(p.numel() for p in whole.parameters()) == 8_292_166_656
    assert model.vision.params == 676_550_144
