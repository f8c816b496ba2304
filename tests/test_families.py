"""The families added for issue 12 (Phi-3, Gemma 2/3, Qwen2.5/3, Qwen3-MoE, DeepSeek-V3, OLMo 2, T5):
hand-derived FLOPs for each new mechanism, KV caches, saved tensors and peaks against the real
modules, the speed model's shapes, and CI-sized traced verification of every preset family."""

import pytest

from costplan import engine
from costplan.activations import logits_bytes, saved_tensors
from costplan.flops import inference_flops, mean_keys, training_flops
from costplan.memory import inference_memory, kv_cache_bytes
from costplan.methods import FullFineTune, Inference, Lora, parse_targets
from costplan.model import MLA, ModelSpec, count_params, layer_kinds, layer_sequence, model_spec, preset, with_overrides
from costplan.profile import default_profile
from costplan.speed import decode_shape, executed_fraction, step_shape
from costplan.terms import Part
from costplan.workload import Workload

S = 8


PRESET_OF = {"llama": "llama-2-7b", "phi3": "phi-3-mini", "phi": "phi-2", "gemma2": "gemma-2-9b",
             "gemma3": "gemma-3-1b", "qwen3": "qwen3-8b", "qwen3_moe": "qwen3-30b-a3b", "deepseek_v3": "deepseek-v3",
             "olmo2": "olmo-2-7b", "t5": "t5-base", "gpt_oss": "gpt-oss-20b"}


def _spec(family: str, **fields) -> ModelSpec:
    """A tiny model of the family: its preset's traits, small numbers (dense unless told)."""
    base = dict(name=f"tiny-{family}", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                ffn_size=96, vocab_size=100, max_positions=256, num_experts=1, experts_per_token=1,
                shared_experts=0, dense_layers=0, dense_ffn_size=0, expert_groups=1, expert_groups_used=1,
                params_published=None)
    return with_overrides(preset(PRESET_OF[family]), **{**base, **fields})


# --- FLOPs, derived by hand ------------------------------------------------------------------

MLA_SPEC = _spec("deepseek_v3", num_kv_heads=4, head_dim=4,
                 mla=MLA(q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6))


def test_mla_flops_by_hand():
    # q_a, q_b to 4 heads x (8 + 4), kv_a to the latent and rotary key, kv_b to 4 x (8 no-rope + 6 value), o.
    projections = 2 * (64 * 32 + 32 * 48 + 64 * 20 + 16 * 56 + 24 * 64)
    mlp, head = 3 * 2 * 64 * 96, 2 * 64 * 100
    qk, av = 2 * S * 4 * 12, 2 * S * 4 * 6  # QKᵀ over 12-wide heads, AV over 6-wide values
    f = training_flops(MLA_SPEC, FullFineTune(), Workload(seq_len=S, attention="eager"))
    assert f.forward == 2 * (projections + mlp + qk + av) + head
    # Fused attention's backward: three QKᵀ-sized and two AV-sized matmuls.
    fused = training_flops(MLA_SPEC, FullFineTune(), Workload(seq_len=S))
    assert fused.by_part()[Part.SCORES] == 2 * (qk + av + 3 * qk + 2 * av)


def test_mla_decode_re_expands_the_cached_latent():
    """transformers runs kv_b over every cached key at each decode step (no weight absorption)."""
    fl = inference_flops(MLA_SPEC, Inference(), Workload(prompt_len=S, gen_len=5))
    keys = mean_keys(S, 4, None)  # prompt + 1 ... prompt + 4
    per_layer = 2 * (64 * 32 + 32 * 48 + 64 * 20 + 24 * 64) + 2 * 16 * 56 * keys + 2 * keys * 4 * (12 + 6)
    assert fl.decode.per_token == pytest.approx(2 * (per_layer + 3 * 2 * 64 * 96) + 2 * 64 * 100)


def test_mla_kv_cache_holds_the_compressed_latent():
    # transformers 5.24's DynamicCache keeps kv_a_layernorm(latent) and the rotary key: 512 + 64
    # elements per token and layer for DeepSeek-V3, not 2 x 128 heads x 192.
    assert kv_cache_bytes(preset("deepseek-v3"), 1000, 1, 2) == 61 * (512 + 64) * 1000 * 2


def test_shared_experts_and_dense_first_layers_by_hand():
    model = _spec("deepseek_v3", num_layers=3, num_experts=8, experts_per_token=2, shared_experts=1,
                  dense_layers=1, dense_ffn_size=200, num_kv_heads=4, head_dim=4, mla=MLA_SPEC.mla)
    assert [kind.name for kind in layer_sequence(model)] == ["dense", "moe", "moe"]
    f = training_flops(model, FullFineTune(), Workload(seq_len=S))
    dense = 3 * 2 * 64 * 200
    moe = 2 * 3 * 2 * 64 * 96 + 3 * 2 * 64 * 96  # two routed experts, one shared
    assert f.by_part()[Part.MLP] == 3 * (dense + 2 * moe)
    assert f.by_part()[Part.ROUTER] == 3 * 2 * 2 * 64 * 8
    counts = count_params(model)
    assert counts.total - counts.active == 2 * 6 * 3 * 64 * 96  # six idle experts in each MoE layer


def test_sliding_windows_count_every_key_in_training_and_the_window_in_decode():
    """FlopCounterMode sizes SDPA from q, k and v: a window mask changes no count in training or
    prefill; on a decode step the cache holds only the window."""
    windowed = _spec("gemma2", sliding_window=10, sliding_window_pattern=2)
    full = _spec("gemma2", sliding_window=None)
    work = Workload(seq_len=32)
    assert training_flops(windowed, FullFineTune(), work).per_token == training_flops(full, FullFineTune(),
                                                                                      work).per_token
    assert mean_keys(8, 4, 10) == (9 + 10 + 10 + 10) / 4
    fl = inference_flops(windowed, Inference(), Workload(prompt_len=8, gen_len=5))
    sliding, global_ = mean_keys(8, 4, 10), mean_keys(8, 4, None)  # layer 0 slides, layer 1 is global
    assert fl.decode.by_part()[Part.SCORES] == pytest.approx(2 * 2 * 64 * (sliding + global_))
    # The speed model executes the band of the window: at 2048 tokens and a 512 window, 23% of the scores.
    assert executed_fraction(2048, 2048, True, 512) == pytest.approx((512 * 513 / 2 + 1536 * 512) / 2048**2)


def test_qk_norms_add_parameters_but_no_flops():
    llama, qwen3 = _spec("llama"), _spec("qwen3")
    work = Workload(seq_len=S)
    assert training_flops(qwen3, FullFineTune(), work).per_token == training_flops(llama, FullFineTune(),
                                                                                   work).per_token
    assert count_params(qwen3).total - count_params(llama).total == 2 * 2 * 16  # q and k norms of head width
    olmo2 = _spec("olmo2", num_kv_heads=4)
    assert count_params(olmo2).layer_norms == 2 * (2 * 64 + 64 + 64)  # two block norms, q/k over all heads


T5_SPEC = _spec("t5", hidden_size=32, num_layers=2, encoder_layers=1, num_heads=2, num_kv_heads=2, head_dim=8,
                ffn_size=64, vocab_size=50, max_positions=512, relative_attention_buckets=8)


def test_t5_cross_attention_flops_by_hand():
    source, target = 12, 5
    projection = 2 * 32 * 16  # one of q, k, v, o per position
    mlp = 2 * 2 * 32 * 64
    encoder = source * (4 * projection + mlp) + 2 * 2 * source * source * 16
    decoder = target * (4 * projection + mlp) + 2 * 2 * target * target * 16
    cross = target * 2 * projection + source * 2 * projection + 2 * 2 * target * source * 16
    head = target * 2 * 32 * 50
    f = training_flops(T5_SPEC, FullFineTune(), Workload(seq_len=target, source_len=source, attention="eager"))
    assert f.forward * target == encoder + decoder + cross + head
    assert f.tokens_per_step == target  # FLOPs per target token
    # Generation: the encoder once and the first decoder step (cross keys and values projected
    # then), then decoder steps over the cached source keys.
    fl = inference_flops(T5_SPEC, Inference(), Workload(prompt_len=source, gen_len=3))
    first = 4 * projection + mlp + 2 * 2 * 1 * 16 + 2 * projection + source * 2 * projection + 2 * 2 * source * 16
    assert fl.prefill.per_token * source == encoder + first + 2 * 32 * 50
    keys = mean_keys(1, 2, None)
    step = 4 * projection + mlp + 2 * 2 * keys * 16 + 2 * projection + 2 * 2 * source * 16
    assert fl.decode.per_token == pytest.approx(step + 2 * 32 * 50)


def test_t5_kv_cache_and_loss():
    model = preset("t5-base")
    # 12 decoder layers cache their own keys and values and the cross-attention's over the source.
    assert kv_cache_bytes(model, 128, 1, 2, memory_tokens=512) == 12 * 2 * 768 * (128 + 512) * 2
    # T5's cross-entropy runs on the 16-bit logits in pure bf16 (under autocast it upcasts them: see
    # test_bert_and_t5_under_autocast_by_hand).
    pure = Workload(seq_len=128, source_len=512, precision="bf16-true")
    assert logits_bytes(model, FullFineTune(), pure).kept == 2 * 128 * 32128


def test_sliding_window_caches():
    model = preset("gemma-2-9b")  # 21 sliding layers (window 4096) between 21 global ones
    per_token = 2 * 8 * 256 * 2
    assert kv_cache_bytes(model, 8192, 1, 2) == (21 * 8192 + 21 * 4096) * per_token
    # Right after a 6000-token prefill every layer still holds the whole prompt.
    mem = inference_memory(model, Inference(), Workload(prompt_len=6000, gen_len=100))
    assert mem.kv_cache == 42 * 6000 * per_token


def test_lora_targets_land_on_the_fused_and_latent_matrices():
    phi3 = preset("phi-3-mini")
    assert {a.linear.role for a in Lora(targets=("q", "v")).adapters(phi3)} == {"qkv"}
    assert {a.linear.role for a in Lora(targets=parse_targets("gate_up_proj")).adapters(phi3)} == {"gate_up"}
    deepseek = preset("deepseek-v3")
    assert {a.linear.role for a in Lora(targets=("q", "v")).adapters(deepseek)} == {"q_b", "kv_b"}
    assert parse_targets("kv_a_proj_with_mqa,q_a_proj") == ("kv_a", "q_a")
    every = {a.linear.role for a in Lora(targets=parse_targets("all-linear")).adapters(deepseek)}
    assert every == {lin.role for kind in layer_kinds(deepseek) for lin in kind.linears}
    t5 = preset("t5-base")
    assert {a.linear.role for a in Lora(targets=("q", "v")).adapters(t5)} == {"q", "v", "cross_q", "cross_v"}


# --- the speed model's shapes ------------------------------------------------------------------

def test_decode_reads_routed_experts_hit_and_every_shared_weight():
    model = preset("deepseek-v3")
    work = Workload(prompt_len=512, gen_len=256)
    shape = decode_shape(model, Inference(), work, 1.0)
    h, f = 7168, 2048
    assert shape.expert_bytes == 58 * 3 * h * f * 2  # one routed expert in each of the 58 MoE layers
    embedding = model.vocab_size * h * 2
    assert shape.weight_bytes == pytest.approx(count_params(model).total * 2 + 58 * 256 * h * 2  # fp32 routers
                                               - embedding - 256 * shape.expert_bytes)
    assert shape.kv_bytes_per_sequence == kv_cache_bytes(model, 512 + 128, 1, 2)


def test_quantized_experts_and_encoders_are_read_as_stored():
    # Mixtral 8x7B in int4: each routed expert (3 matrices of 4096 x 14336 in 32 layers) is stored
    # quantized like the attention matrices; the step reads the shared weights and two experts.
    from costplan.memory import base_weight_bytes, weight_bytes_per_param
    from costplan.methods import Inference as Generate

    for name, weights in (("mixtral-8x7b", "int4"), ("mixtral-8x7b", "int8"), ("deepseek-v3", "int4")):
        model = preset(name)
        how = Generate(weights=weights)
        shape = decode_shape(model, how, Workload(prompt_len=64, gen_len=2), 0.0)
        per = weight_bytes_per_param(weights, 2)
        embedding = model.vocab_size * model.hidden_size * 2
        assert shape.expert_bytes == pytest.approx(shape.expert_elements * per)
        assert 0 < shape.weight_bytes < shape.expert_bytes * model.num_experts
        assert shape.weight_bytes + model.num_experts * shape.expert_bytes + embedding == pytest.approx(
            base_weight_bytes(model, how, 2))
    mixtral = preset("mixtral-8x7b")
    shape = decode_shape(mixtral, Generate(weights="int4"), Workload(prompt_len=64, gen_len=2), 0.0)
    assert shape.expert_elements == 32 * 3 * 4096 * 14336
    # q, o; k, v (8 KV heads); the router (4096 x 8)
    assert shape.matrix_elements == 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 4096 * 8)
    # T5's decoder step reads its own layers and the head, not the encoder's, as stored.
    t5 = preset("t5-base")
    shape = decode_shape(t5, Generate(weights="int4"), Workload(prompt_len=64, gen_len=2), 0.0)
    assert 0 < shape.weight_bytes < base_weight_bytes(t5, Generate(weights="int4"), 2)


def test_weight_only_decode_is_bounded_by_dequantization_on_the_cuda_cores():
    # Llama-2-7B, batch 1, int4: the 32 layers' matrices (4 of 4096 x 4096, 3 of 4096 x 11008) are
    # dequantized once per step at 12 operations per weight on the fp32 (CUDA-core) peak, or streamed;
    # whichever is slower. An A100 (19.5 TFLOP/s fp32, 2039 GB/s) is dequantization-bound, an RTX 4090
    # (82.6 TFLOP/s, 1008 GB/s) bandwidth-bound.
    from costplan.methods import Inference as Generate
    from costplan.speed import Constants

    model = preset("llama-2-7b")
    shape = decode_shape(model, Generate(weights="int4"), Workload(prompt_len=64, gen_len=2), 0.0)
    elements = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    assert shape.matrix_elements == elements
    constants = Constants(bandwidth_efficiency=0.7, elementwise_hidden=0, elementwise_ffn=0, dispatch_seconds=0)
    for vector_peak, bandwidth, bound in ((19.5e12, 2039e9, "dequant"), (82.6e12, 1008e9, "memory")):
        hw = engine.Hardware(memory_bytes=80e9, peak=312e12, peak_16bit=312e12, bandwidth=bandwidth,
                             gemm_efficiency=0.7, attention_efficiency=0.5, intra_bytes_per_s=1e11,
                             node_bytes_per_s=1e11, gpus_per_node=8, usd_per_gpu_hour=1.0, watts=400)
        step = engine.decode_step_seconds(shape, batch=1, tp=1, hw=hw, constants=constants, dispatch_seconds=0.0,
                                          format_efficiency=0.9, dequant_ops=12, vector_peak=vector_peak,
                                          collective_latency=0.0)
        memory = (shape.weight_bytes / 0.9 + shape.kv_bytes_per_sequence) / (bandwidth * 0.7)
        dequant = elements * 12 / vector_peak
        assert step == pytest.approx(max(memory, dequant))
        assert (dequant > memory) == (bound == "dequant")


def test_step_shape_follows_each_kind_of_layer():
    model = preset("deepseek-v3")
    work = Workload(seq_len=1024)
    flops = training_flops(model, FullFineTune(), work)
    shape = step_shape(model, FullFineTune(), work, flops)
    dense = [g for g in shape.gemms if (g.k, g.n) == (7168, 18432)]
    assert sum(g.calls for g in dense) == 3 * 2 * 3  # gate and up of 3 dense layers, forward + dX + dW
    routed = [g for g in shape.gemms if (g.k, g.n) == (7168, 2048) and g.rows_per_token < 1]
    assert all(g.rows_per_token == 8 / 256 for g in routed)
    # Every matmul the FLOPs count is in the shape (attention scores apart).
    gemm_flops = sum(2 * g.rows_per_token * g.k * g.n * g.calls for g in shape.gemms) * work.seq_len
    assert gemm_flops == pytest.approx(flops.per_token * work.seq_len - flops.by_part()[Part.SCORES] * work.seq_len)
    t5 = step_shape(preset("t5-base"), FullFineTune(), Workload(seq_len=128, source_len=512),
                    training_flops(preset("t5-base"), FullFineTune(), Workload(seq_len=128, source_len=512)))
    assert 0.5 < t5.attention_fraction < 1.0  # the encoder and the cross-attention execute every score


# --- against the real modules (small configs, meta device) ---------------------------------------

def _small(family: str) -> ModelSpec:
    """The family's preset shrunk to a few layers of width 128 (its traits kept)."""
    fields = dict(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32, ffn_size=344,
                  vocab_size=512, max_positions=256, num_experts=1, experts_per_token=1)
    fields.update({
        "phi": {},
        "phi3": dict(num_kv_heads=4, sliding_window=24),
        "gemma2": dict(sliding_window=16),
        "gemma3": dict(sliding_window=16, sliding_window_pattern=3),
        "qwen3": {},
        "qwen3_moe": dict(num_experts=8, experts_per_token=2, ffn_size=96),
        "deepseek_v3": dict(num_experts=8, experts_per_token=2, ffn_size=96, num_kv_heads=4, head_dim=16,
                            shared_experts=1, dense_layers=1, dense_ffn_size=344, expert_groups=2,
                            expert_groups_used=1,
                            mla=MLA(q_lora_rank=64, kv_lora_rank=48, qk_nope_head_dim=32, qk_rope_head_dim=16,
                                    v_head_dim=24)),
        "olmo2": {},
        "t5": dict(num_kv_heads=4, encoder_layers=2),
        "gpt_oss": dict(num_experts=8, experts_per_token=2, ffn_size=96, sliding_window=16),
        # An MLP 5.4 times the hidden width, as StarCoder2's 4x of wider layers keeps the prefill's widest moment
        # in the MLP (at 344 the rotary attention's temporaries would be wider than the plain MLP).
        "starcoder2": dict(sliding_window=16, dropout=0.1, embedding_dropout=True, ffn_size=688),
        "glm4_moe": dict(num_experts=8, experts_per_token=2, ffn_size=96),
    }.get(family, {}))
    if family in LLAMA_VARIANTS:  # the family's traits as a config.json of that model_type gives them
        return model_spec(f"small-{family}", family, fields)
    if family == "glm4_moe":  # DeepSeek-V3's MoE under GQA: a dense first layer, a shared expert, two groups
        return model_spec(f"small-{family}", family, fields, shared_experts=1, dense_layers=1, dense_ffn_size=344,
                          expert_groups=2, expert_groups_used=1, qk_norm="head")
    defaults = dict(shared_experts=0, dense_layers=0, dense_ffn_size=0, expert_groups=1, expert_groups_used=1)
    return with_overrides(preset(PRESET_OF[family]), name=f"small-{family}", params_published=None,
                          **{**defaults, **fields})


LLAMA_VARIANTS = ["smollm3", "granite", "seed_oss", "ernie4_5", "arcee", "hunyuan_v1_dense", "starcoder2"]
FAMILIES = ["phi", "phi3", "gemma2", "gemma3", "qwen3", "qwen3_moe", "deepseek_v3", "olmo2", "t5", "gpt_oss",
            "glm4_moe", *LLAMA_VARIANTS]
METHODS = {"full": FullFineTune(), "lora": Lora(rank=8, targets=("q", "v")),
           "lora-all": Lora(rank=4, targets=parse_targets("attn,mlp"))}


@pytest.mark.needs_torch
@pytest.mark.parametrize("key", list(METHODS))
@pytest.mark.parametrize("family", FAMILIES)
def test_saved_tensors_flops_and_peak_match_the_real_model(family, key):
    """Small configs of every new family, traced like ``costplan verify`` traces the presets."""
    from costplan.tracing import trace_training_step
    from costplan.verify import analytic_breakdown

    model, method = _small(family), METHODS[key]
    if key == "lora-all" and model.is_moe:
        method = Lora(rank=4, targets=("q", "k", "v", "o"))  # routed experts are not peft modules
    # Pure bf16 (the families' own dtype rules; autocast over fp32 weights is checked on Llama).
    work = Workload(seq_len=32, attention="flash", precision="bf16-true",
                    source_len=48 if model.is_encoder_decoder else None)
    traced = trace_training_step(model, method, work, device="meta")
    assert count_params(model).total == traced.params_total
    assert method.trainable_params(model) == traced.params_trainable
    flops = training_flops(model, method, work)
    assert flops.per_token * work.seq_len == pytest.approx(traced.flops, rel=1e-9)
    saved = saved_tensors(model, method, work)
    softcap = work.compute_bytes * model.vocab_size * work.seq_len if model.final_softcap else 0
    # Saved for backward during a forward without labels; the 24 bytes of each layer's dropout
    # seeds are not modelled.
    assert saved.total(False) + saved.batch(False) + softcap == pytest.approx(traced.saved_bytes, rel=0.005)
    assert analytic_breakdown(model, method, work).peak_bytes == pytest.approx(traced.peak_bytes, rel=0.01)


@pytest.mark.needs_torch
@pytest.mark.parametrize("family", FAMILIES)
def test_generation_matches_the_real_model(family):
    from costplan.tracing import trace_inference_step

    model = _small(family)
    work = Workload(prompt_len=48, gen_len=1)
    traced = trace_inference_step(model, work, device="meta")
    fl = inference_flops(model, Inference(), Workload(prompt_len=48, gen_len=2))
    assert fl.prefill.per_token * 48 == pytest.approx(traced.flops_prefill, rel=1e-9)
    assert fl.decode.per_token == pytest.approx(traced.flops_decode, rel=1e-9)
    assert traced.peak_breakdown["kv cache"] or model.is_encoder_decoder  # T5 peaks in its encoder
    profile = default_profile()
    phases = engine.inference_phases(inference_memory(model, Inference(), work), tp=1)
    memory = engine.breakdown(phases, profile.allocator_slack(), profile.cuda_context_bytes())
    assert memory.peak_bytes == pytest.approx(traced.peak_bytes, rel=0.03)


CI_CASES = [
    # One per family at short lengths: the presets' own shapes, built on the meta device (the
    # representative matrix, ``costplan verify --all``, runs them at full length).
    ("phi-3-mini", "lora", "flash", False, 256),
    ("phi-2", "full", "flash", True, 256),  # one LayerNorm read by attention and MLP, biased head, partial RoPE
    ("gemma-2-9b", "lora", "eager", False, 256),
    ("gemma-3-1b", "lora", "flash", False, 1024),  # sliding windows of 512 under a 1024-token sequence
    ("qwen3-8b", "full", "flash", True, 256),
    ("qwen3-30b-a3b", "lora", "flash", False, 128),
    ("deepseek-v3", "inference", "flash", False, 128),
    ("olmo-2-7b", "full", "flash", False, 256),
    ("t5-base", "lora", "flash", False, 64),
    ("gpt-oss-20b", "lora", "flash", False, 256),  # sinks, biased clamped-SwiGLU experts, 128-token windows
    ("afm-4.5b", "lora", "flash", False, 256),  # a plain MLP with ReLU squared
    ("ernie-4.5-0.3b", "full", "flash", True, 256),  # fp32 RoPE tables interleaved in every layer
    ("glm-4.5-air", "lora", "flash", False, 128),  # DeepSeek-V3's MoE under GQA, RoPE on half of each head
]


@pytest.mark.needs_torch
def test_presets_of_every_family_verify_within_the_bounds():
    # The cases run in two processes (the CI machine's two cores), as the representative matrix does.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from costplan.verify import FLOPS_TOLERANCE, PEAK_WORST_TOLERANCE, Case, run_case

    cases = [Case(model=model, method=method, attention=attention, grad_ckpt=ckpt, seq_len=length,
                  source_len=128 if model == "t5-base" else None)
             for model, method, attention, ckpt, length in CI_CASES]
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(run_case, cases))
    assert [result.case for result in results] == cases
    for result in results:
        assert result.params_exact, result.case.label
        assert abs(result.flops_error) <= FLOPS_TOLERANCE, result.case.label
        assert abs(result.peak_error) <= PEAK_WORST_TOLERANCE, result.case.label


@pytest.mark.needs_torch
def test_ministral3_runs_as_mistral_its_query_scale_keeps_nothing(tmp_path):
    """Ministral 3 (``ministral3``; the text model of Mistral 3 containers since December 2025) is Mistral's
    layer with Llama 4's position-dependent query scale after the rotary embedding. That product keeps
    only the per-position scale for its backward, so the real Ministral3 code, traced, has Mistral's
    FLOPs and parameters and its peak within a few KiB; costplan reads it as the mistral family."""
    import transformers as T

    import costplan.tracing as tracing
    from costplan.model import from_hf_config

    rope = {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 16384, "rope_theta": 1e6,
            "llama_4_scaling_beta": 0.1, "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0}
    numbers = dict(hidden_size=256, num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                   intermediate_size=640, vocab_size=1000, max_position_embeddings=8192, tie_word_embeddings=False)
    T.Ministral3Config(**numbers, rope_parameters=rope).save_pretrained(tmp_path)
    spec = from_hf_config(tmp_path)
    assert spec.family == "mistral"
    mistral = tracing.hf_config

    def ministral(model, attention="sdpa"):
        config = T.Ministral3Config(**numbers, rope_parameters=rope)
        config._attn_implementation = mistral(model, attention)._attn_implementation
        return config

    work = Workload(seq_len=256, micro_batch=2, precision="bf16-true", attention="flash")
    for method in (Lora(rank=8), FullFineTune()):
        as_mistral = tracing.trace_training_step(spec, method, work, device="meta")
        tracing.hf_config = ministral
        try:
            real = tracing.trace_training_step(spec, method, work, device="meta")
        finally:
            tracing.hf_config = mistral
        assert real.params_total == as_mistral.params_total == count_params(spec).total
        assert (real.flops_forward, real.flops_backward) == (as_mistral.flops_forward, as_mistral.flops_backward)
        assert 0 <= real.peak_bytes - as_mistral.peak_bytes <= 8 * 1024


# --- gpt-oss -------------------------------------------------------------------------------------

def test_gpt_oss_counts_split_as_the_model_card_and_mxfp4_sizes_as_the_checkpoints():
    """Totals as transformers 5.24 builds GptOssForCausalLM; active parameters without the 0.58 B input
    embedding are the model card's 3.6 B and 5.1 B; MXFP4 experts (4.25 bits) with everything else in
    bf16 give the checkpoints' sizes: vLLM's launch post (vllm-project/vllm-project.github.io
    _posts/2025-08-05-gpt-oss.md: "63 GB (120B) and 14 GB (20B)") and Ollama's gpt-oss:120b file of
    65,290,180,781 bytes (tokenizer and metadata included)."""
    from costplan.memory import base_weight_bytes

    small, large = preset("gpt-oss-20b"), preset("gpt-oss-120b")
    assert (count_params(small).total, count_params(large).total) == (20_914_757_184, 116_829_156_672)
    embedding = 201_088 * 2880
    assert round((count_params(small).active - embedding) / 1e8) == 36
    assert round((count_params(large).active - embedding) / 1e8) == 51
    # 24 layers x 32 experts x (2880 x 5760 + 2880 x 2880) weights at 0.53125 bytes, the rest 2 bytes.
    experts = 24 * 32 * (2880 * 5760 + 2880 * 2880)
    assert base_weight_bytes(small, Inference(weights="mxfp4"), 2) == experts * 0.53125 + (20_914_757_184 - experts) * 2
    assert round(base_weight_bytes(small, Inference(weights="mxfp4"), 2) / 1e9) == 14
    assert base_weight_bytes(large, Inference(weights="mxfp4"), 2) == pytest.approx(65_290_180_781, rel=0.002)


def test_gpt_oss_qlora_quantizes_only_the_attention_linears():
    """bitsandbytes replaces nn.Linear layers: gpt-oss's router and experts are tensors of custom
    modules and stay bf16, so 4-bit loading shrinks only q, k, v and o."""
    from costplan.memory import base_weight_bytes, nf4_bytes_per_param
    from costplan.methods import QLora

    attention = 24 * (2880 * 4096 + 2 * 2880 * 512 + 4096 * 2880)
    expected = attention * nf4_bytes_per_param(True) + (20_914_757_184 - attention) * 2
    assert base_weight_bytes(preset("gpt-oss-20b"), QLora(), 2) == pytest.approx(expected, rel=1e-12)


@pytest.mark.needs_torch
def test_gpt_oss_lora_targets_only_reach_linear_layers_as_peft_finds_them():
    """peft's all-linear (and q,k,v,o,gate,up,down) adapts the attention only: the experts are 3-D
    tensors and the router a custom module. The count equals peft's on the real module."""
    import torch
    import transformers as T
    from peft import LoraConfig, get_peft_model

    from costplan.tracing import hf_config

    model = _small("gpt_oss")
    with torch.device("meta"):
        module = T.AutoModelForCausalLM.from_config(hf_config(model, attention="eager"))
    for targets, peft_targets in (("all-linear", "all-linear"), ("q,k,v,o,gate,up,down", ["q_proj", "k_proj", "v_proj",
                                                                                          "o_proj", "gate_proj",
                                                                                          "up_proj", "down_proj"])):
        method = Lora(rank=4, targets=parse_targets(targets))
        peft = get_peft_model(module, LoraConfig(r=4, target_modules=peft_targets))
        trainable = sum(p.numel() for p in peft.parameters() if p.requires_grad)
        assert method.trainable_params(model) == trainable == 4 * 4 * (128 + 128 + 2 * (128 + 64) + 128 + 128)
        peft.unload()


def test_gpt_oss_is_served_as_it_ships():
    """Inference defaults to the checkpoint's MXFP4 experts: gpt-oss-120b on one 80 GB H100, as OpenAI
    describes it ("designed to run on a single H100 80GB"); dequantized to bf16 it needs four."""
    from costplan.api import estimate

    shipped = estimate(model="gpt-oss-120b", method="inference", gpu="h100")
    assert shipped.method == Inference(weights="mxfp4") and shipped.gpus == 1
    assert estimate(model="gpt-oss-120b", method="inference", gpu="h100", weights="bf16").gpus == 4
    # Training dequantizes (transformers' Mxfp4Config(dequantize=True)): no default format there.
    assert estimate(model="gpt-oss-20b", method="lora", gpu="h100").method.key == "lora"


@pytest.mark.needs_torch
@pytest.mark.parametrize("ckpt", [False, True])
def test_lora_on_some_layers_expert_tensors(ckpt):
    """``experts.N``: peft's target_parameters on layer N's expert stacks only (the OpenAI cookbook adapts
    layers 7, 15 and 23 of gpt-oss-20b): the other layers run their frozen experts."""
    from costplan.tracing import trace_training_step
    from costplan.verify import analytic_breakdown

    model, method = _small("gpt_oss"), Lora(rank=4, targets=parse_targets("q,v,experts.1,experts.3"))
    work = Workload(seq_len=32, attention="flash", precision="bf16-true", grad_ckpt=ckpt)
    traced = trace_training_step(model, method, work, device="meta")
    assert method.trainable_params(model) == traced.params_trainable == 4 * (4 * 256 + 4 * 192) + 2 * (
        8 * 4 * (128 + 192) + 8 * 4 * (96 + 128))
    assert training_flops(model, method, work).per_token * work.seq_len == pytest.approx(traced.flops, rel=1e-9)
    assert analytic_breakdown(model, method, work).peak_bytes == pytest.approx(traced.peak_bytes,
                                                                               rel=0.03 if ckpt else 0.01)


@pytest.mark.needs_torch
@pytest.mark.parametrize("ckpt", [False, True])
def test_lora_on_gpt_oss_expert_tensors_as_peft_target_parameters_runs_it(ckpt):
    """``experts``: peft's target_parameters on each layer's expert stacks. Every forward merges W + s·BA
    into a full-size stack with a batched matmul (twice: torch's parametrization evaluates it once more on
    registering), the grouped matmuls then run on it and compute its gradient, and backward takes both
    factors' gradients from that. Parameters and FLOPs exact against the real module; memory within 1%
    (3% checkpointed)."""
    from costplan.tracing import trace_training_step
    from costplan.verify import analytic_breakdown

    model, method = _small("gpt_oss"), Lora(rank=4, targets=("q", "v", "experts"))
    work = Workload(seq_len=32, attention="flash", precision="bf16-true", grad_ckpt=ckpt)
    traced = trace_training_step(model, method, work, device="meta")
    # q, v on 4 layers; each expert stack 8 x 4 x (in + out): gate_up 128 -> 192, down 96 -> 128.
    assert method.trainable_params(model) == traced.params_trainable == 4 * (
        4 * (128 + 128) + 4 * (128 + 64) + 8 * 4 * (128 + 192) + 8 * 4 * (96 + 128))
    flops = training_flops(model, method, work)
    assert flops.per_token * work.seq_len == pytest.approx(traced.flops, rel=1e-9)
    if not ckpt:
        saved = saved_tensors(model, method, work)
        assert saved.total(False) + saved.batch(False) == pytest.approx(traced.saved_bytes, rel=0.005)
    assert analytic_breakdown(model, method, work).peak_bytes == pytest.approx(traced.peak_bytes,
                                                                               rel=0.03 if ckpt else 0.01)


def test_expert_tensors_answer_to_experts_alone():
    """all-linear and mlp leave gpt-oss's expert tensors alone (peft's target_modules cannot reach them);
    ``experts`` adapts them, and names nothing on a model whose experts are nn.Linear layers or absent."""
    from costplan.errors import CostplanError

    gpt_oss = preset("gpt-oss-20b")
    assert "experts" not in parse_targets("all-linear") and "experts" not in parse_targets("mlp")
    assert {a.linear.role for a in Lora(targets=parse_targets("all-linear")).adapters(gpt_oss)} == {"q", "k", "v", "o"}
    merged = [a for a in Lora(targets=("experts",)).adapters(gpt_oss)]
    assert {a.linear.role for a in merged} == {"expert_gate_up", "expert_down"} and all(a.merged for a in merged)
    with pytest.raises(CostplanError, match="None of the LoRA targets experts"):
        Lora(targets=("experts",)).validate(preset("llama-2-7b"))
    assert parse_targets("experts.7,experts.15") == ("experts.7", "experts.15")
    assert Lora(targets=parse_targets("q,experts.7")).trainable_params(gpt_oss) == 24 * 8 * (2880 + 4096) + 32 * 8 * (
        2880 + 5760 + 2880 + 2880)
    with pytest.raises(CostplanError, match="has layers 0 to 23"):
        Lora(targets=("experts.24",)).validate(gpt_oss)
    for refused in (Lora(targets=("experts",), dora=True), Lora(targets=("experts",), dropout=0.05)):
        with pytest.raises(CostplanError, match="target_parameters"):  # peft raises on both
            refused.validate(gpt_oss)


def test_merged_expert_weights_are_streamed_each_micro_batch():
    """The merges are memory-bound: W read and W + s·BA written twice per forward (and recompute), the
    merged gradient written and read twice in backward, as bytes per micro-batch at the card's bandwidth."""
    model = _small("gpt_oss")
    work = Workload(seq_len=32, precision="bf16-true")
    stacks = 4 * (8 * 128 * 192 + 8 * 96 * 128)  # 4 layers, gate_up and down
    method = Lora(rank=4, targets=("q", "v", "experts"))
    shape = step_shape(model, method, work, training_flops(model, method, work))
    plain = step_shape(model, Lora(rank=4, targets=("q", "v")), work,
                       training_flops(model, Lora(rank=4, targets=("q", "v")), work))
    assert shape.dequant_bytes - plain.dequant_bytes == 2 * stacks * (4 + 3)


# --- LayerNorm models under autocast (the Trainer's bf16=True) --------------------------------------

def test_layernorm_and_gelu_new_under_autocast_by_hand():
    """Under autocast ``layer_norm``, ``pow`` and ``softmax`` run in fp32 (torch's autocast fp32 list):
    a LayerNorm keeps an fp32 copy of its bf16 input with its mean and rstd, and copies its frozen bf16
    weight and bias to fp32 at each call; GPT-2's Python GELU keeps an fp32 copy of x (pow), tanh and
    1 + tanh in fp32, and 0.5·x in bf16; GPT-2's eager softmax keeps fp32 probabilities, its dropout a
    one-byte mask and the AV matmul the bf16 dropped-out copy."""
    from costplan.activations import _activation, _eager_scores, _norm, _norm_weight_copies

    gpt2 = preset("gpt2")
    h, f = 768, 3072
    assert _norm(gpt2, 2, True, False, autocast=True) == 4 * h + 2 * 4
    assert _norm(gpt2, 2, True, False) == 2 * h + 2 * 4
    assert _norm_weight_copies(gpt2, 2, True, False, True) == 2 * 4 * h
    assert _norm_weight_copies(gpt2, 4, True, True, True) == 0  # trained fp32 weights: no copy
    assert _activation(gpt2, 2, f, True, autocast=True) == (4 + 4 + 2 + 4) * f
    assert _activation(gpt2, 2, f, True) == 4 * 2 * f
    assert _eager_scores(gpt2, 2, True, True, autocast=True) == 4 + 1 + 2
    assert _eager_scores(gpt2, 2, True, True) == 2 + 1 + 2


def test_bert_and_t5_under_autocast_by_hand():
    """BERT's post-norm LayerNorms return fp32 under autocast, so its residual stream is fp32 over a bf16
    LoRA base; its masked-LM loss (and T5's) upcasts the logits, as cross_entropy's log_softmax and
    nll_loss are on autocast's fp32 list: 3 x 4 bytes per logit at log_softmax's backward."""
    from costplan.activations import logit_count, logits_bytes, model_bytes

    bert, t5 = preset("bert-base"), preset("t5-base")
    mixed, pure = Workload(seq_len=128, precision="bf16-mixed"), Workload(seq_len=128, precision="bf16-true")
    lora = Lora(rank=8, targets=("q", "v"))
    assert model_bytes(lora, mixed, bert) == 4 and model_bytes(lora, mixed) == 2
    assert model_bytes(lora, pure, bert) == 2
    assert model_bytes(lora, mixed, preset("gpt2")) == 2  # pre-norm: the stream stays in the LoRA base's bf16
    for model in (bert, t5):
        work = mixed if model is bert else Workload(seq_len=128, source_len=512, precision="bf16-mixed")
        assert logits_bytes(model, lora, work).kept == 4 * logit_count(model, lora, work)
    assert logits_bytes(bert, lora, pure).kept == 2 * logit_count(bert, lora, pure)


def _small_layernorm(name: str) -> ModelSpec:
    shape = dict(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=4, head_dim=32, ffn_size=512,
                 vocab_size=512, max_positions=256, num_experts=1, experts_per_token=1)
    if name == "starcoder2":
        return model_spec(f"small-{name}", "starcoder2", shape)
    return with_overrides(preset(name), name=f"small-{name}", params_published=None, **shape)


@pytest.mark.needs_torch
@pytest.mark.parametrize("attention", ["flash", "eager"])
@pytest.mark.parametrize("key", ["full", "lora"])
@pytest.mark.parametrize("name", ["gpt2", "phi-2", "pythia-1b", "starcoder2"])
def test_layernorm_models_under_autocast_match_the_real_model(name, key, attention):
    """GPT-2, Phi-2, Pythia (GPT-NeoX) and StarCoder2 under bf16-mixed, as the Trainer's bf16=True runs
    them: fp32 weights trained, or a bf16 base under LoRA, with the LayerNorms in fp32."""
    from costplan.tracing import trace_training_step
    from costplan.verify import analytic_breakdown

    model = _small_layernorm(name)
    method = {"full": FullFineTune(), "lora": Lora(rank=8, targets=("qkv",) if name == "gpt2" else ("q", "v"))}[key]
    work = Workload(seq_len=64, attention=attention, precision="bf16-mixed")
    traced = trace_training_step(model, method, work, device="meta")
    assert analytic_breakdown(model, method, work).peak_bytes == pytest.approx(traced.peak_bytes, rel=0.01)


@pytest.mark.needs_torch
def test_glm4_moe_lite_reads_and_traces_as_deepseek_v3(tmp_path, monkeypatch):
    """GLM-4.7-Flash (``glm4_moe_lite``) is read as DeepSeek-V3 (MLA, grouped sigmoid router, shared expert)
    with its dense layers from ``mlp_layer_types``; its own transformers module, traced, holds and keeps
    what that reading predicts."""
    import json

    import torch
    import transformers as T

    import costplan.tracing as tracing
    from costplan.model import from_hf_config
    from costplan.tracing import trace_training_step
    from costplan.verify import analytic_breakdown

    config = T.Glm4MoeLiteConfig(hidden_size=128, intermediate_size=344, moe_intermediate_size=96,
                                 num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                                 n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, q_lora_rank=64,
                                 kv_lora_rank=48, qk_rope_head_dim=16, qk_nope_head_dim=32, v_head_dim=24,
                                 vocab_size=512, mlp_layer_types=["dense", "sparse", "sparse"],
                                 max_position_embeddings=256)
    config.save_pretrained(tmp_path)
    with torch.device("meta"):
        module = T.AutoModelForCausalLM.from_config(config)
    spec = from_hf_config(tmp_path)
    assert (spec.family, spec.dense_layers, spec.num_experts) == ("deepseek_v3", 1, 8)
    assert count_params(spec).total == sum(p.numel() for p in module.parameters())

    def real_config(model, attention="sdpa"):  # trace Glm4MoeLiteForCausalLM itself, not DeepSeek-V3's class
        raw = json.loads((tmp_path / "config.json").read_text())
        cfg = T.Glm4MoeLiteConfig(**{k: v for k, v in raw.items()
                                     if k not in ("architectures", "transformers_version", "model_type")})
        cfg._attn_implementation = attention
        cfg.experts_implementation = "grouped_mm"
        return cfg

    monkeypatch.setattr(tracing, "hf_config", real_config)
    for method in (FullFineTune(), Lora(rank=8, targets=("q_b", "kv_b", "o"))):
        work = Workload(seq_len=32, attention="flash", precision="bf16-true")
        traced = trace_training_step(spec, method, work, device="meta")
        assert training_flops(spec, method, work).per_token * 32 == pytest.approx(traced.flops, rel=1e-9)
        saved = saved_tensors(spec, method, work)
        assert saved.total(False) + saved.batch(False) == pytest.approx(traced.saved_bytes, rel=0.005)
        assert analytic_breakdown(spec, method, work).peak_bytes == pytest.approx(traced.peak_bytes, rel=0.01)


@pytest.mark.needs_torch
def test_qwen2_5_vl_text_training_traces_as_its_qwen2_text_model(monkeypatch, tmp_path):
    """Qwen2_5_VLForConditionalGeneration itself, trained on text (M-RoPE tables merged once per forward, the
    ViT held and never run), keeps and peaks at what the Qwen2 text model with a held tower predicts."""
    import transformers as T

    import costplan.tracing as tracing
    from costplan.model import from_hf_config
    from costplan.tracing import trace_training_step
    from costplan.verify import analytic_breakdown

    text = dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=512, vocab_size=1000, tie_word_embeddings=False, max_position_embeddings=512,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]})
    vision = dict(depth=2, hidden_size=128, intermediate_size=200, num_heads=4, patch_size=14, temporal_patch_size=2,
                  spatial_merge_size=2, out_hidden_size=256, in_channels=3)

    def real_config(model, attention="sdpa"):
        cfg = T.Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False)
        cfg._attn_implementation = cfg.text_config._attn_implementation = attention
        return cfg

    real_config(None).save_pretrained(tmp_path)
    spec = from_hf_config(tmp_path)
    monkeypatch.setattr(tracing, "hf_config", real_config)
    monkeypatch.setattr(T.AutoModelForCausalLM, "from_config",
                        lambda cfg, **_: T.Qwen2_5_VLForConditionalGeneration(cfg))
    method, work = Lora(rank=8, targets=("q", "v")), Workload(seq_len=32, attention="flash", precision="bf16-true")
    traced = trace_training_step(spec, method, work, device="meta")
    assert count_params(spec).total == traced.params_total
    assert method.trainable_params(spec) == traced.params_trainable
    assert training_flops(spec, method, work).per_token * 32 == pytest.approx(traced.flops, rel=1e-9)
    saved = saved_tensors(spec, method, work)
    assert saved.total(False) + saved.batch(False) == pytest.approx(traced.saved_bytes, rel=0.005)
    assert analytic_breakdown(spec, method, work).peak_bytes == pytest.approx(traced.peak_bytes, rel=0.01)
