"""FLOPs: hand-derived values for tiny configs, and FlopCounterMode on the real modules."""

import pytest

from costplan.flops import inference_flops, training_flops
from costplan.methods import FullFineTune, Inference, Lora, PrefixTuning, PromptTuning, parse_targets
from costplan.model import ModelSpec, preset
from costplan.terms import Part
from costplan.workload import Workload
from tests.specs import TRACE

TINY = ModelSpec(name="tiny", family="llama", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                 head_dim=16, ffn_size=128, vocab_size=100, max_positions=64)
S = 8

# Forward FLOPs per token of TINY at sequence length 8, derived by hand:
Q, K, V, O = 2 * 64 * 64, 2 * 64 * 32, 2 * 64 * 32, 2 * 64 * 64  # GQA: k, v project to 2 heads x 16
MLP = 3 * 2 * 64 * 128  # gate, up, down
SCORES = 2 * (2 * 64 * S)  # QKᵀ and AV: 2 · (heads · head_dim) · keys each
HEAD = 2 * 64 * 100
FORWARD = 2 * (Q + K + V + O + MLP + SCORES) + HEAD


def test_full_fine_tune_is_three_forwards():
    f = training_flops(TINY, FullFineTune(), Workload(seq_len=S, attention="eager"))
    assert f.forward == FORWARD
    assert f.per_token == 3 * FORWARD
    assert f.recompute == 0
    # Fused attention recomputes QKᵀ in backward: one more score-sized matmul per layer.
    fused = training_flops(TINY, FullFineTune(), Workload(seq_len=S, attention="flash"))
    assert fused.per_token == 3 * FORWARD + 2 * SCORES / 2


def test_lora_skips_frozen_weight_gradients_and_first_layer_input_gradients():
    r = 2
    f = training_flops(TINY, Lora(rank=r, targets=("q", "v")), Workload(seq_len=S))
    qa, qb, va, vb = 2 * 64 * r, 2 * r * 64, 2 * 64 * r, 2 * r * 32
    adapters = qa + qb + va + vb
    assert f.forward == FORWARD + 2 * adapters
    # Layer 0: embeddings are frozen, so q/k/v get no dX, nor do the adapters' A matrices.
    # Fused attention's backward is five score-sized matmuls: 2.5x its forward.
    layer0 = (qa + qb + va + vb) + (qb + vb) + 2.5 * SCORES + O + MLP
    layer1 = 2 * adapters + (Q + K + V + O + MLP) + 2.5 * SCORES
    assert f.backward == layer0 + layer1 + HEAD
    assert f.column("backward_weight") == 2 * adapters


def test_checkpointing_recomputes_layers_but_not_their_last_down_projection():
    plain = training_flops(TINY, FullFineTune(), Workload(seq_len=S))
    ckpt = training_flops(TINY, FullFineTune(), Workload(seq_len=S, grad_ckpt=True))
    down = 2 * 128 * 64
    assert ckpt.recompute == 2 * (Q + K + V + O + MLP + SCORES - down)
    assert ckpt.per_token == plain.per_token + ckpt.recompute


def test_prompt_tuning_lengthens_the_sequence():
    n = 4
    f = training_flops(TINY, PromptTuning(num_virtual_tokens=n), Workload(seq_len=S))
    positions = S + n
    per_position = 2 * (Q + K + V + O + MLP) + HEAD
    scores = 2 * 2 * (2 * 64 * positions)
    assert f.forward * S == pytest.approx(positions * (per_position + scores))
    # No weight gradients, but dX everywhere (virtual tokens are a trainable input).
    assert f.column("backward_weight") == 0
    assert f.column("backward_input") * S == pytest.approx(positions * (per_position + 2.5 * scores))


def test_prefix_tuning_lengthens_only_the_keys():
    n = 4
    f = training_flops(TINY, PrefixTuning(num_virtual_tokens=n), Workload(seq_len=S))
    scores = 2 * 2 * (2 * 64 * (S + n))
    assert f.forward == 2 * (Q + K + V + O + MLP) + scores + HEAD


def test_moe_counts_router_and_top_k_experts():
    moe = ModelSpec(name="moe", family="mixtral", hidden_size=64, num_layers=1, num_heads=4, num_kv_heads=2,
                    head_dim=16, ffn_size=128, vocab_size=100, max_positions=64, num_experts=4,
                    experts_per_token=2)
    f = training_flops(moe, FullFineTune(), Workload(seq_len=S))
    assert f.by_part()[Part.ROUTER] == 3 * 2 * 64 * 4
    assert f.by_part()[Part.MLP] == 3 * 2 * MLP  # two experts per token, forward + dX + dW


def test_llama2_7b_full_is_about_6n_plus_attention():
    model = preset("llama-2-7b")
    f = training_flops(model, FullFineTune(), Workload(seq_len=2048))
    n_matmul = 6_738_415_616 - 32000 * 4096 - 65 * 4096  # the input embedding and norms do no matmul
    # QKᵀ and AV forward (2 · 2 · hidden · seq per layer, Kaplan et al. 2020 eq. 2.2) and a fused
    # backward of five such matmuls (QKᵀ recomputed): 14 · layers · hidden · seq.
    attention = 32 * (2 + 5) * 2 * 4096 * 2048
    assert f.per_token == 6 * n_matmul + attention


def test_inference_decode_reads_a_growing_context():
    work = Workload(prompt_len=8, gen_len=5)
    fl = inference_flops(TINY, Inference(), work)
    mean_keys = (9 + 10 + 11 + 12) / 4  # decode steps attend over prompt + 1 ... prompt + 4 keys
    assert fl.decode.per_token == pytest.approx(2 * (Q + K + V + O + MLP) + 2 * 2 * (2 * 64 * mean_keys) + HEAD)
    assert fl.prefill.per_token * 8 == pytest.approx(8 * 2 * (Q + K + V + O + MLP + SCORES) + HEAD)


# --- against the real modules, traced with torch.utils.flop_counter ------------------------

METHODS = {
    "full": FullFineTune(),
    "lora-qv": Lora(rank=8, targets=("q", "v")),
    "lora-all": Lora(rank=4, targets=parse_targets("all-linear")),
    "lora-down": Lora(rank=4, targets=("down",)),
    "prompt": PromptTuning(num_virtual_tokens=8),
}


@pytest.mark.needs_torch
@pytest.mark.parametrize("grad_ckpt", [False, True], ids=["plain", "ckpt"])
@pytest.mark.parametrize("key", list(METHODS))
def test_training_flops_equal_flop_counter_on_the_real_model(key, grad_ckpt):
    from costplan.tracing import trace_training_step

    # Eager attention: FlopCounterMode has no formula for the CPU flash-attention kernel.
    work = Workload(seq_len=32, grad_ckpt=grad_ckpt, attention="eager")
    traced = trace_training_step(TRACE, METHODS[key], work)
    assert training_flops(TRACE, METHODS[key], work).per_token * work.seq_len == traced.flops
    assert METHODS[key].trainable_params(TRACE) == traced.params_trainable
