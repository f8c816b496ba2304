"""Memory: hand-derived bytes for tiny configs, orderings, and saved tensors of the real modules."""

from dataclasses import replace

import pytest

from costplan.activations import logits_bytes, saved_tensors
from costplan.memory import (
    base_weight_bytes,
    inference_memory,
    kv_cache_bytes,
    nf4_bytes_per_param,
    training_memory,
)
from costplan.methods import FullFineTune, Inference, Lora, PromptTuning, QLora, parse_targets
from costplan.model import ModelSpec, count_params, preset
from costplan.terms import Phase
from costplan.verify import analytic_breakdown
from costplan.workload import Workload
from tests.specs import TRACE, sharded

TINY = ModelSpec(name="tiny", family="llama", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                 head_dim=16, ffn_size=128, vocab_size=100, max_positions=64)
N_TINY = 100 * 64 * 2 + 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128 + 2 * 64) + 64


def test_tiny_param_count_by_hand():
    assert count_params(TINY).total == N_TINY


def test_full_bf16_master_adamw_bytes_per_parameter():
    # bf16 weights with an fp32 master copy (DeepSpeed's bf16 layout) and foreach AdamW.
    mem = training_memory(TINY, FullFineTune(), Workload(seq_len=8, precision="bf16-master"))
    assert mem.weights == 2 * N_TINY  # bf16
    assert mem.gradients == 2 * N_TINY  # bf16
    assert mem.master_weights == 4 * N_TINY  # fp32 master copy
    assert mem.optimizer_states == 8 * N_TINY  # fp32 m and v
    assert mem.gradient_copies == 4 * N_TINY  # fp32 gradients handed to the master weights
    assert mem.step_temporaries == 4 * N_TINY  # foreach AdamW's sqrt buffer


def test_fp32_training_has_no_master_copy():
    mem = training_memory(TINY, FullFineTune(), Workload(seq_len=8, precision="fp32"))
    assert (mem.weights, mem.gradients, mem.master_weights) == (4 * N_TINY, 4 * N_TINY, 0)


def test_optimizer_states():
    w = lambda opt: training_memory(TINY, FullFineTune(), Workload(seq_len=8, optimizer=opt))  # noqa: E731
    assert w("sgd").optimizer_states == 0
    assert w("sgd-momentum").optimizer_states == 4 * N_TINY
    # 8-bit Adam: tensors of >= 4096 elements (embeddings, LM head, q, o, MLP) in 2 bytes + an
    # absmax per 256; smaller ones (k, v at 64 x 32, norms) in fp32.
    big = 2 * 100 * 64 + 2 * (64 * 64 * 2 + 3 * 64 * 128)
    small = N_TINY - big
    assert w("adamw-8bit").optimizer_states == pytest.approx(2 * big * (1 + 4 / 256) + 8 * small)
    # Adafactor: rows + cols per matrix (embeddings and LM head too), full second moment for vectors.
    matrices = 2 * (100 + 64) + 2 * (2 * (64 + 64) + 2 * (32 + 64) + 2 * (128 + 64) + (64 + 128))
    vectors = 2 * 2 * 64 + 64
    assert w("adafactor").optimizer_states == 4 * (matrices + vectors)



def _bytes_a_step_moves(make, dtype) -> float:
    """Bytes per parameter torch's kernels read (every tensor argument) and write (mutated arguments and
    fresh outputs) over one steady-state optimizer step, counted op by op."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    def size(value) -> int:
        return sum(t.numel() * t.element_size() for t in tree_flatten(value)[0]
                   if isinstance(t, torch.Tensor) and t.numel() > 1)  # not the step counters

    class Moved(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            bound = dict(zip((a.name for a in func._schema.arguments), args, strict=False)) | (kwargs or {})
            # Fused Adam's schema marks the gradients mutable for AMP's unscale, done only with a grad_scale.
            unscaled = "fused_adam" in func._schema.name and bound.get("grad_scale") is None
            written = [bound.get(a.name) for a in func._schema.arguments
                       if a.alias_info is not None and a.alias_info.is_write and not (unscaled and a.name == "grads")]
            Moved.total += size(list(bound.values())) + size(written)
            fresh = [o for o, r in zip(out if isinstance(out, tuple) else (out,), func._schema.returns, strict=False)
                     if r.alias_info is None]
            Moved.total += size(fresh)
            return out

    n = 4 * 4096
    params = [torch.nn.Parameter(torch.randn(4096, dtype=dtype)) for _ in range(4)]
    optimizer = make(params)
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer.step()  # the first step creates the states
    with Moved():
        optimizer.step()
    return Moved.total / n


@pytest.mark.needs_torch
@pytest.mark.parametrize("name", ["adamw", "adamw-fused", "sgd", "sgd-momentum"])
def test_an_optimizer_step_streams_what_torchs_kernels_read_and_write(name):
    # The step's time is its traffic: each optimizer's bytes per parameter are what torch's own
    # step reads and writes, in fp32 (bf16-mixed's weights, a master copy) and in bf16 (pure bf16:
    # states take the parameter's dtype). Foreach AdamW: eight passes, 56 read and 28 written.
    import torch

    from costplan.optimizers import optimizer

    make = {"adamw": lambda p: torch.optim.AdamW(p, foreach=True),
            "adamw-fused": lambda p: torch.optim.AdamW(p, fused=True),
            "sgd": lambda p: torch.optim.SGD(p, lr=1e-3, foreach=True),
            "sgd-momentum": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9, foreach=True)}[name]
    for dtype, element in ((torch.float32, 4), (torch.bfloat16, 2)):
        traced = _bytes_a_step_moves(make, dtype)
        assert optimizer(name).step_bytes_per_param(2, False, element) == traced
    assert optimizer("adamw").step_bytes_per_param(2, False, 4) == 84
def test_nf4_storage():
    assert nf4_bytes_per_param(True) == pytest.approx(0.5 + 1 / 64 + 4 / (64 * 256))  # 4.127 bits
    assert nf4_bytes_per_param(False) == pytest.approx(0.5 + 4 / 64)
    model = preset("llama-2-7b")
    matrices = 32 * (4 * 4096**2 + 3 * 4096 * 11008)
    others = count_params(model).total - matrices
    assert base_weight_bytes(model, QLora(), 2) == pytest.approx(matrices * nf4_bytes_per_param(True) + 2 * others)


def test_kv_cache_formula_is_gqa_aware():
    # 2 · layers · kv_heads · head_dim · tokens · bytes: Llama-3-8B, 8K tokens, bf16 = 1 GiB.
    assert kv_cache_bytes(preset("llama-3-8b"), 8192, 1, 2) == 2 * 32 * 8 * 128 * 8192 * 2 == 2**30
    # Llama-2-7B has no GQA: 4x the bytes per token.
    assert kv_cache_bytes(preset("llama-2-7b"), 8192, 1, 2) == 4 * 2**30
    mem = inference_memory(preset("llama-3-8b"), Inference(), Workload(prompt_len=4096, gen_len=4096, micro_batch=3))
    assert mem.kv_cache == 3 * 2**30


def test_logits_scale_with_vocabulary():
    # HF causal-LM loss in fp32: the log-softmax is kept; at the top of backward it meets its
    # fp32 gradient and the fp32 gradient of the logits: 12 bytes per position and vocab entry.
    positions = 2048 * 128256
    lb = logits_bytes(preset("llama-3-8b"), Lora(), Workload(seq_len=2048))
    assert lb.backward_peak == 12 * positions  # 3 GiB at 2K tokens with a 128K vocabulary
    assert lb.kept == 4 * positions
    # A trained LM head adds its weight gradient when the logits gradient reaches it; with a
    # 128K vocabulary and 4K hidden that moment stays below the log-softmax one at 2K tokens.
    full = logits_bytes(preset("llama-3-8b"), FullFineTune(), Workload(seq_len=256))
    assert full.backward_peak == 2 * 256 * 128256 + 2 * 128256 * 4096


def test_llama_layer_activations_by_hand():
    # Full fine-tuning, pure bf16, SDPA, per position of one layer (h=64, q=64, kv=32, f=128):
    # each RMSNorm keeps an fp32 input (4h + 4 for rsqrt) and its normalised bf16 x (2h); the
    # q/k/v and gate/up inputs (2h each); SDPA keeps q, k, v (2(q + 2kv)), lse (4 · heads) and its
    # output (2q), which o reads; the MLP keeps gate, silu(gate), up and their product (4 · 2f).
    h, q, kv, f = 64, 64, 32, 128
    norm = 4 * h + 4 + 2 * h
    per_position = 2 * norm + 2 * (2 * h) + 2 * (q + 2 * kv) + 4 * 4 + 2 * q + 4 * 2 * f
    saved = saved_tensors(TINY, FullFineTune(), Workload(seq_len=8, precision="bf16-true"))
    assert saved.later_layer == 8 * per_position
    # Under autocast over fp32 weights (bf16-mixed) the norms' normalised x is fp32 (4h, not 2h),
    # and q, k, v, gate and up each keep their own bf16 cast of the fp32 norm output (not one).
    mixed = saved_tensors(TINY, FullFineTune(), Workload(seq_len=8, precision="bf16-mixed"))
    assert mixed.later_layer == 8 * (per_position + 2 * 2 * h + 2 * (2 * h) + 1 * (2 * h))

    # Compiled (torch.compile's partitioner): each RMSNorm keeps its 16-bit input and rsqrt (2h + 4),
    # the MLP gate and up outputs and their product (3 · 2f); the rest as eager.
    compiled = saved_tensors(TINY, FullFineTune(), Workload(seq_len=8, precision="bf16-true", compiled=True))
    assert compiled.later_layer == 8 * (per_position - 2 * (norm - (2 * h + 4)) - 2 * f)


# One later layer's saved bytes per token, traced from LitGPT 0.4.0's own GPT (litgpt.model, litgpt.lora with
# LoRA r=8 on q and v, dropout 0.05) in bf16 with saved_tensors_hooks by benchmarks/litgpt_trace.py (torch 2.13
# CPU). LoRA's figures less what the CPU keeps unlike CUDA: a 2-byte dropout mask where CUDA keeps a 1-byte bool
# (hidden bytes per token) and zero_pad's int64 index of the q and v columns (a per-layer constant).
LITGPT_TRACED = [
    ("llama-2-7b", "full", 256, 211080.0),
    ("llama-3-8b", "full", 256, 221320.0),
    ("llama-2-7b", "lora", 1304, 180954.3 - 4096 - 8 * (4096 + 4096) / 1304),
    ("llama-3-8b", "lora", 512, 178424.0 - 4096 - 8 * (4096 + 1024) / 512),
]


@pytest.mark.parametrize(("key", "method", "seq", "traced"), LITGPT_TRACED)
def test_litgpt_layers_keep_what_litgpts_own_code_keeps(key, method, seq, traced):
    from costplan.api import stack_workload
    from costplan.frameworks import framework

    how = Lora(rank=8, targets=parse_targets("q,v"), dropout=0.05) if method == "lora" else FullFineTune()
    work, _ = stack_workload(framework("litgpt"), how, precision="bf16", gpus=1, seq_len=seq)
    litgpt = saved_tensors(preset(key), how, work).layers_saved[-1].bytes / seq
    assert litgpt == pytest.approx(traced, abs=0.1)
    # transformers' modules keep less: separate q/k/v projections (v its own tensor, k and v not
    # repeated under grouped-query attention) and one peft adapter per enabled projection.
    hf = saved_tensors(preset(key), how, replace(work, modeling="transformers")).layers_saved[-1].bytes / seq
    assert hf < 0.95 * litgpt

def test_orderings():
    model, work = preset("llama-2-7b"), Workload(seq_len=2048)
    peak = lambda method, w=work: analytic_breakdown(model, method, w).peak_bytes  # noqa: E731
    assert peak(Lora()) < peak(FullFineTune())
    assert base_weight_bytes(model, QLora(), 2) < base_weight_bytes(model, Lora(), 2) / 3
    plain = saved_tensors(model, FullFineTune(), work).total(False)
    ckpt = saved_tensors(model, FullFineTune(), Workload(seq_len=2048, grad_ckpt=True)).total(True)
    assert ckpt < plain / 5
    eager = saved_tensors(model, FullFineTune(), Workload(seq_len=2048, attention="eager")).total(False)
    assert eager - plain >= 32 * 32 * 2048 * 2048 * 4  # at least the fp32 softmax per head


def test_zero_stages_shard_what_they_promise():
    mem = training_memory(preset("llama-2-7b"), FullFineTune(), Workload(seq_len=2048))
    base, z1, z2, z3 = (sharded(mem, dp=8, zero=z).phases[Phase.OPTIMIZER_STEP] for z in range(4))
    states = mem.master_weights + mem.optimizer_states + mem.step_temporaries + mem.gradient_copies
    assert base - z1 == pytest.approx(states * 7 / 8)
    assert z1 - z2 == pytest.approx(mem.gradients * 7 / 8)
    assert z2 - z3 == pytest.approx(mem.weights * 7 / 8)


def test_a_gathered_checkpoint_load_peaks_at_the_whole_model_plus_its_shard():
    # Lightning Fabric's FSDP load before #18190 (2023-07-30): every GPU gathers all 6.74 B bf16
    # weights while holding its own shard.
    lora = Lora(rank=8, targets=("q", "v"))
    work = Workload(seq_len=1304, precision="bf16-true", grad_ckpt=True, gathered_load=True)
    mem = training_memory(preset("llama-2-7b"), lora, work)
    weights = 2 * 6_738_415_616 + 4 * 4_194_304  # the bf16 base and peft's fp32 adapters
    assert mem.load_gather == weights
    for dp, expected in ((2, 1.5 * weights), (4, 1.25 * weights)):
        assert sharded(mem, dp=dp, zero=3).phases[Phase.CHECKPOINT_LOAD] == pytest.approx(expected)
    assert Phase.CHECKPOINT_LOAD not in sharded(training_memory(preset("llama-2-7b"), lora, Workload(
        seq_len=1304, precision="bf16-true", grad_ckpt=True)), dp=2, zero=3).phases
    assert sharded(mem, dp=2, zero=0).phases[Phase.CHECKPOINT_LOAD] == pytest.approx(weights)  # DDP: no gather


def test_fsdp_accumulation_without_sync_keeps_unsharded_gradients():
    # LitGPT accumulates under Fabric's no_backward_sync (FSDP's no_sync): until the last micro-batch
    # every GPU keeps its gradients unsharded. Its FSDP1 LoRA wrapped whole Blocks, frozen base and
    # adapters in one flat parameter, so every layer's parameters get gradients (bf16, as the model).
    from costplan.model import count_params
    from costplan.terms import Mem

    spec, lora = preset("llama-2-7b"), Lora(rank=8, targets=("q", "v"))
    base = Workload(seq_len=1304, precision="bf16-true", grad_ckpt=True, fp32_adapters=False)
    adapters = 2 * 4_194_304
    counts = count_params(spec)
    layers = 2 * (counts.layer_linear + counts.layer_norms)  # 6.48 B parameters in 32 layers
    mem = training_memory(spec, lora, replace(base, unsharded_accumulation=True, flat_unit_gradients=True))
    assert mem.flat_gradients == mem.unsharded_gradients == layers + adapters
    accumulating = sharded(mem, dp=2, zero=3, grad_accum=32)
    assert accumulating.terms[Mem.GRADIENTS] == pytest.approx(layers + adapters)  # at the top of backward
    step = sharded(mem, dp=2, zero=3, grad_accum=32).phases
    plain = sharded(training_memory(spec, lora, base), dp=2, zero=3, grad_accum=32).phases
    # After the reduce-scatter, each GPU holds its half of the whole flat gradients, not just the adapters'.
    assert step[Phase.OPTIMIZER_STEP] - plain[Phase.OPTIMIZER_STEP] == pytest.approx((layers + adapters) / 2
                                                                                      - adapters / 2)
    # Without accumulation, or without FSDP, nothing is held unsharded.
    once = sharded(mem, dp=2, zero=3, grad_accum=1)
    assert once.phases[Phase.BACKWARD_START] == pytest.approx(
        sharded(training_memory(spec, lora, base), dp=2, zero=3, grad_accum=1).phases[Phase.BACKWARD_START])
    full = training_memory(spec, FullFineTune(), replace(base, unsharded_accumulation=True))
    assert sharded(full, dp=4, zero=3, grad_accum=8).terms[Mem.GRADIENTS] == pytest.approx(full.gradients)
    assert sharded(full, dp=4, zero=0, grad_accum=8).terms[Mem.GRADIENTS] == pytest.approx(full.gradients)


def test_the_trainer_under_fsdp_accumulates_unsharded_gradients():
    # transformers' Trainer runs every micro-batch but the last under accelerate's no_sync: under FSDP
    # each GPU holds the whole model's gradients (fp32 under bf16-mixed: 4 bytes x 8.03 B) until the
    # step's last micro-batch reduce-scatters them. Without accumulation it holds its eighth.
    from costplan.api import estimate
    from costplan.terms import Mem

    def gradients(global_batch, **options):
        est = estimate("llama-3-8b", "full", tokens=1e8, gpu="h100-sxm", gpus=8, framework="fsdp", seq_len=2048,
                       micro_batch=1, global_batch=global_batch, zero=3, grad_ckpt=True, **options)
        return est.memory.terms[Mem.GRADIENTS]

    assert gradients(32) == pytest.approx(4 * 8_030_261_248)
    assert gradients(8) == pytest.approx(4 * 8_030_261_248 / 8)
    # accelerate's sync_each_batch (and Composer's loop) reduce-scatter after every micro-batch.
    assert gradients(32, sync_each_batch=True) == pytest.approx(4 * 8_030_261_248 / 8)


def test_torchaos_nf4_is_gathered_as_stored_under_fsdp():
    # torchao's NF4Tensor.fsdp_pre_all_gather sends its 4-bit data and scalers: torchtune's QLoRA under
    # FSDP2 gathers a Llama-2-7B layer's 202,375,168 matrix weights at NF4's bytes, its two norms in bf16.
    from costplan.memory import nf4_bytes_per_param
    from costplan.terms import Mem

    qlora = QLora(rank=8, targets=("q", "v"))
    work = Workload(seq_len=2048, precision="bf16-true", grad_ckpt=True)
    layer = 4 * 4096 * 4096 + 3 * 4096 * 11008
    stored = sharded(training_memory(preset("llama-2-7b"), qlora, replace(work, quantized_gather=True)), dp=8, zero=3)
    assert stored.terms[Mem.GATHER] == pytest.approx(2 * (layer * nf4_bytes_per_param(True) + 2 * 4096 * 2))
    plain = sharded(training_memory(preset("llama-2-7b"), qlora, work), dp=8, zero=3)
    assert plain.terms[Mem.GATHER] == pytest.approx(2 * (layer + 2 * 4096) * 2)


def test_fsdps_root_unit_holds_the_embeddings_and_head_through_backward():
    # torch 2.13's FSDPMemTracker over a fake 4-rank process group, FSDP2 with fully_shard on each
    # LlamaDecoderLayer and then the model (hidden 1024, 4 layers, ffn 2816, vocab 32000, untied, bf16,
    # full fine-tuning): at the peak, the loss's backward, 125.0 MiB of unsharded parameters (the root's
    # embeddings and head) beside a 24.5 MiB all-gather (the last layer, prefetched), with or without
    # reshard_after_forward on the root; through the layers' backward the root stays unsharded.
    from costplan.api import estimate
    from costplan.terms import Mem
    from costplan.validate import architecture

    spec = architecture("hidden=1024;layers=4;heads=8;kv_heads=8;ffn=2816;vocab=32000;mlp=gated;pos=rope;tied=false")
    root, layer = 2 * 32000 * 1024 * 2, (4 * 1024 * 1024 + 3 * 1024 * 2816 + 2 * 1024) * 2

    def memory(framework, gpus=4):
        return estimate(spec, "full", tokens=1e8, gpu="h100-sxm", gpus=gpus, zero=3, framework=framework,
                        micro_batch=1, seq_len=512, global_batch=gpus, grad_ckpt=False, optimizer="adamw",
                        precision="bf16-true", price=0.0).memory

    traced = memory("fsdp")
    assert traced.peak_phase == Phase.BACKWARD_START
    assert traced.terms[Mem.GATHER] == pytest.approx(root + layer)
    assert root == 125 * 2**20 and layer == pytest.approx(24.5 * 2**20, rel=1e-3)
    assert traced.peak_bytes == pytest.approx(631.85 * 2**20, rel=0.06)  # the tracker's peak
    # Late in backward the root is still unsharded, the head's bf16 gradient beside it.
    late = traced.phases[Phase.BACKWARD_END] - memory("torchtune").phases[Phase.BACKWARD_END]
    assert late == pytest.approx(root + 32000 * 1024 * 2)
    # torchtune shards the embeddings and head as units of their own (custom_sharded_layers), and
    # DeepSpeed's ZeRO-3 gathers each module's parameters: two layers at a time, no root unit.
    for framework in ("torchtune", "deepspeed"):
        assert memory(framework).terms[Mem.GATHER] == pytest.approx(2 * layer)


def test_torchao_01_quantizes_a_whole_matrix_at_load():
    # torchao 0.1's NF4Tensor.from_tensor on Llama-2-7B's largest matrix (11008 x 4096 bf16): the matrix
    # (2n), its block-scaled copy (2n), and (value - nf4) and its abs() over 16 NF4 values (32n each)
    # at once. The load's peak is that on top of the quantized model; torchao 0.2 chunks it away.
    from costplan.terms import Mem

    work = Workload(seq_len=512, precision="bf16-true", grad_ckpt=True)
    n = 11008 * 4096
    spike = training_memory(preset("llama-2-7b"), QLora(rank=8, unchunked_quantize=True), work)
    assert spike.load_quantize == 68 * n
    phases = sharded(spike, dp=1, zero=0).phases
    assert phases[Phase.CHECKPOINT_LOAD] == pytest.approx(spike.weights + 68 * n)
    assert Phase.CHECKPOINT_LOAD not in sharded(
        training_memory(preset("llama-2-7b"), QLora(rank=8), work), dp=1, zero=0).phases
    assert Mem.QUANTIZE.label == "quantization at load"


def test_unsloth_kernels_keep_what_their_save_for_backward_lists():
    # unsloth/kernels (015bdef): fast_rms_layernorm saves X and fp32 r per row; LoRA_QKV saves X;
    # the rotary embedding clones q and k; FlashAttention keeps q, k, v, its output (which LoRA_W
    # reads as a view) and an fp32 log-sum-exp per head; LoRA_MLP saves X, e and g. Llama-3-8B, bf16,
    # per token: h = 4096, q = 4096, kv = 1024, f = 14336, 32 heads.
    from costplan.api import stack_workload
    from costplan.frameworks import framework

    h, q, kv, f = 4096, 4096, 1024, 14336
    per_token = 2 * (2 * h + 4) + 2 * (2 * h) + 2 * (q + 2 * kv) + 2 * q + 4 * 32 + 2 * 2 * f
    qlora = QLora(rank=32, targets=parse_targets("all-linear"))
    work, _ = stack_workload(framework("unsloth"), qlora, precision="bf16", gpus=1, seq_len=1000)
    assert saved_tensors(preset("llama-3-8b"), qlora, work).later_layer == 1000 * per_token
    # LoRA_MLP's backward adds the incoming gradient, the down projection's input gradient and, while
    # matmul_lora forms it, its LoRA term of the same size (c67183f: out += (X @ A) @ (s * B)).
    full_width = training_memory(preset("llama-3-8b"), qlora, work).layer_transient
    assert full_width == 1000 * 2 * (h + 2 * f)
    # With LoRA on q and v only, Unsloth runs peft's modules: transformers' layer, which keeps more.
    partial = QLora(rank=32, targets=("q", "v"))
    peft_work, _ = stack_workload(framework("unsloth"), partial, precision="bf16", gpus=1, seq_len=1000)
    assert saved_tensors(preset("llama-3-8b"), partial, peft_work).later_layer == saved_tensors(
        preset("llama-3-8b"), partial, replace(peft_work, modeling="transformers")).later_layer > 1000 * per_token


def test_axolotls_lora_mlp_kernel_keeps_its_input_and_the_gate_and_up_outputs():
    # axolotl kernels/lora.py LoRA_MLP saves X, gate and up (bf16, per token 2h + 2 x 2f bytes); peft's
    # modules keep the gate's output (SiLU's input), SiLU's output, up, the product (down's lora_A input)
    # and their adapters' inputs. The attention half of the layer is transformers' either way.
    # Llama-3-8B, h = 4096, f = 14336.
    from costplan.api import stack_workload
    from costplan.frameworks import framework

    f, h, tokens = 14336, 4096, 1000
    lora = Lora(rank=16, targets=parse_targets("all-linear"))
    work, _ = stack_workload(framework("axolotl"), lora, precision="bf16", gpus=1, seq_len=tokens)
    spec = preset("llama-3-8b")

    def items(w):
        return {i.name: i.bytes for i in saved_tensors(spec, lora, w).layers_saved[-1].items}

    kernel, peft = items(work), items(replace(work, modeling="transformers"))
    assert kernel["mlp inputs"] == tokens * 2 * h and kernel["mlp activations"] == tokens * 2 * 2 * f
    assert "down input" not in kernel and peft["mlp activations"] == tokens * 3 * 2 * f
    mlp = ("mlp inputs", "mlp activations", "down input")
    assert {k: v for k, v in kernel.items() if k not in mlp} == {k: v for k, v in peft.items() if k not in mlp}
    kernel_total = saved_tensors(spec, lora, work).later_layer
    assert training_memory(spec, lora, work).layer_transient == tokens * 2 * (h + 2 * f)  # as Unsloth's
    # It takes no dropout (until axolotl#3528), no 8-bit base, and needs all three MLP matrices.
    for other in (replace(lora, dropout=0.05), Lora(rank=16, targets=parse_targets("q,k,v,o,gate,up"))):
        assert saved_tensors(spec, other, work).later_layer == saved_tensors(
            spec, other, replace(work, modeling="transformers")).later_layer
    qlora = QLora(rank=16, targets=parse_targets("all-linear"))
    assert saved_tensors(spec, qlora, work).later_layer == kernel_total
    import costplan

    est = costplan.estimate("8b", "lora", lora_targets="all-linear", framework="axolotl", gpu="h100", seq_len=1024)
    assert any("LoRA_MLP" in note for note in est.assumptions)


def test_a_loop_that_holds_the_models_outputs_holds_its_logits_in_every_phase():
    # Answer.AI's fsdp_qlora train.py keeps `output` through loss.backward(): under transformers before
    # 4.46, Llama-2's fp32 logits, 4 bytes x 2048 positions x 32,000 entries per sequence (262 MB),
    # in every phase from the loss's backward to the next forward; in the compute dtype after 4.46.
    qlora = QLora(rank=64, targets=parse_targets("q,k,v,gate,up,down"))
    work = Workload(seq_len=2048, precision="bf16-true", grad_ckpt=True)
    plain = sharded(training_memory(preset("llama-2-7b"), qlora, work), dp=2, zero=3, micro_batch=4).phases
    for held, per_logit in (("fp32", 4), ("compute", 2)):
        kept = sharded(training_memory(preset("llama-2-7b"), qlora, replace(work, held_logits=held)), dp=2, zero=3,
                       micro_batch=4).phases
        assert kept.keys() == plain.keys()
        for phase in plain:
            assert kept[phase] - plain[phase] == pytest.approx(4 * per_logit * 2048 * 32000)

    # LitGPT's fit loops keep `logits = model(...)` bound through backward and into the next forward:
    # its stack holds them in the compute dtype unless told otherwise.
    from costplan.api import stack_workload
    from costplan.frameworks import framework

    lora = Lora(rank=8, targets=("q", "v"))
    litgpt, notes = stack_workload(framework("litgpt"), lora, gpus=1, seq_len=512)
    assert litgpt.held_logits == "compute" and any("holds the model's" in n for n in notes)
    assert stack_workload(framework("hf-trainer"), lora, gpus=1, seq_len=512)[0].held_logits is None
    assert stack_workload(framework("litgpt"), lora, gpus=1, seq_len=512, held_logits="fp32")[0].held_logits == "fp32"


# --- against the real modules: bytes autograd saves for backward ----------------------------

CASES = {
    "full": FullFineTune(),
    "lora-qv": Lora(rank=8, targets=("q", "v")),
    "lora-all": Lora(rank=4, targets=parse_targets("all-linear")),
    "prompt": PromptTuning(num_virtual_tokens=8),
}


@pytest.mark.needs_torch
@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true", "fp32"])
@pytest.mark.parametrize("attention", ["flash", "eager"])
@pytest.mark.parametrize("key", list(CASES))
def test_saved_activations_match_the_real_model(key, attention, precision):
    from costplan.tracing import trace_training_step

    method = CASES[key]
    work = Workload(seq_len=32, attention=attention, precision=precision)
    traced = trace_training_step(TRACE, method, work)
    saved = saved_tensors(TRACE, method, work)
    # One sequence: its micro-batch's tables too; under autocast the matmuls also save the 16-bit
    # copies of fp32 weights it made.
    ours = saved.total(False) + saved.batch(False) + training_memory(TRACE, method, work).weight_copies
    assert ours == pytest.approx(traced.saved_bytes, rel=0.005)


COMPILED_CASES = {
    "full": (FullFineTune(), {}),
    "lora-all, fp32 adapters": (Lora(rank=4, targets=parse_targets("all-linear")), {}),
    "lora-all, bf16 adapters": (Lora(rank=4, targets=parse_targets("all-linear")), {"fp32_adapters": False}),
    "lora-qv, dropout": (Lora(rank=8, targets=("q", "v"), dropout=0.05), {}),
}


@pytest.mark.needs_torch
@pytest.mark.parametrize("key", list(COMPILED_CASES))
def test_compiled_layers_keep_what_the_compile_partitioner_keeps(key):
    """torchtune compiles each layer: traced through AOT autograd's partitioner (Inductor's)."""
    from costplan.tracing import trace_training_step

    method, options = COMPILED_CASES[key]
    work = Workload(seq_len=32, precision="bf16-true", compiled=True, **options)
    traced = trace_training_step(TRACE, method, work)
    saved = saved_tensors(TRACE, method, work)
    ours = saved.total(False) + saved.batch(False)
    # Dropout: the CPU's dropout keeps a wider mask than CUDA's one-byte bool (see LITGPT_TRACED).
    assert ours == pytest.approx(traced.saved_bytes, rel=0.025 if getattr(method, "dropout", 0) else 1e-9)
    eager = saved_tensors(TRACE, method, replace(work, compiled=False))
    assert ours < eager.total(False) + eager.batch(False)


@pytest.mark.needs_torch
@pytest.mark.parametrize("grad_ckpt", [False, True], ids=["plain", "ckpt"])
@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true", "bf16-master", "fp32"])
@pytest.mark.parametrize("key", list(CASES))
def test_step_peak_matches_live_bytes_of_a_real_step(key, precision, grad_ckpt):
    """The peak over forward, backward and the optimizer step, tracked storage by storage."""
    from costplan.tracing import trace_training_step

    method = CASES[key]
    work = Workload(seq_len=64, precision=precision, grad_ckpt=grad_ckpt)
    traced = trace_training_step(TRACE, method, work)
    ours = analytic_breakdown(TRACE, method, work).peak_bytes
    # Without checkpointing the peak is one exact moment (loss gradients or optimizer step); with
    # it, the re-run layer's backward interleaves frees and allocations the model only brackets.
    assert ours == pytest.approx(traced.peak_bytes, rel=0.04 if grad_ckpt else 0.002)


def test_a_vision_tower_is_held_in_memory_but_never_run_on_text():
    """Gemma-3-4B's SigLIP tower and projector (419,816,304 parameters: google/gemma-3-4b-pt's 4,300,079,472
    less its text model's 3,880,263,168; 411,070,464 of them nn.Linear weights): the LoRA base
    holds it in bf16, QLoRA quantizes its Linear weights as bitsandbytes does the language model's,
    full fine-tuning holds its fp32 weights with no gradient or optimizer state, and decoding reads none
    of it."""
    import costplan
    from costplan.model import siglip_tower

    tower = siglip_tower({"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "patch_size": 14,
                          "image_size": 896, "vision_use_head": False}, 2560)
    text = preset("gemma-3-4b")
    both = replace(text, vision=tower)
    assert count_params(both).total - count_params(text).total == tower.params == 419_816_304
    assert count_params(both).total == 4_300_079_472
    assert count_params(both).active == count_params(text).active
    linear, rest = tower.linear_weights, tower.params - tower.linear_weights
    assert linear == 27 * (4 * 1152**2 + 2 * 1152 * 4304)  # q, k, v, o, fc1, fc2 of every layer
    base = dict(gpu="a100", gpus=1, micro_batch=1, seq_len=1024, grad_ckpt=True)

    def terms(model, method, **options):
        est = costplan.estimate(model, method, **{**base, **options})
        return est, {t.value: v for t, v in est.memory.terms.items()}

    # peft's q_proj and v_proj targets adapt the tower's q_proj and v_proj too: fp32 adapters, no gradient.
    idle = 27 * 8 * 2 * (1152 + 1152)
    assert sum(t.elements for t in Lora(rank=8).idle_tensors(both)) == idle
    for method, extra, adapters in (("lora", 2 * tower.params + 4 * idle, idle),
                                    # peft upcasts the rest to fp32
                                    ("qlora", linear * nf4_bytes_per_param(True) + rest * 4 + 4 * idle, idle),
                                    ("full", 4 * tower.params, 0)):  # bf16-mixed: fp32 weights, the master copy
        with_tower, with_terms = terms(both, method)
        alone, alone_terms = terms(text, method)
        assert with_terms["weights"] - alone_terms["weights"] == pytest.approx(extra), method
        assert {k: v for k, v in with_terms.items() if k != "weights"} == pytest.approx(
            {k: v for k, v in alone_terms.items() if k != "weights"}), method
        assert with_tower.flops_total == alone.flops_total
        assert with_tower.params_trainable == alone.params_trainable + adapters
        assert any(a.startswith("vision tower: 420 M parameters (SigLIP") for a in with_tower.assumptions)
    served, alone = (costplan.estimate(m, "inference", gpu="a100", micro_batch=1) for m in (both, text))
    assert served.wall_seconds == alone.wall_seconds
    assert served.memory.peak_bytes - alone.memory.peak_bytes == pytest.approx(2 * tower.params)


def test_litgpt_builds_its_own_head_and_quantizes_it_under_qlora():
    # LitGPT's GPT has an lm_head apart from the embeddings (its finetune scripts never tie them) and
    # Lightning's BitsandbytesPrecision quantizes every nn.Linear, the head included.
    from costplan.api import litgpt_model
    from costplan.memory import nf4_bytes_per_param

    gemma, head = preset("gemma-2b"), 256_000 * 2048
    built, qlora, notes = litgpt_model(gemma, QLora())
    assert gemma.tied_embeddings and not built.tied_embeddings and qlora.quantize_head and notes
    assert count_params(built).total - count_params(gemma).total == head
    nf4 = nf4_bytes_per_param(True)
    assert base_weight_bytes(built, qlora, 2) - base_weight_bytes(built, QLora(), 2) == pytest.approx(head * (nf4 - 2))
    # The loss reads the head whole: dequantized (2 bytes a weight) while the loss's gradients are alive.
    work = Workload(seq_len=512, micro_batch=2, precision="bf16-true")
    assert training_memory(built, qlora, work).head_workspace == 2 * head
    top = {q: sharded(training_memory(built, q, work), dp=1, zero=0).phases[Phase.BACKWARD_START]
           for q in (qlora, QLora())}
    assert top[qlora] - top[QLora()] == pytest.approx(head * nf4)  # NF4 head and its bf16 copy, not a bf16 head
    # An untied model keeps its shape; LoRA's base is not quantized.
    llama, lora = preset("llama-2-7b"), Lora()
    assert litgpt_model(llama, lora) == (llama, lora, [])


def test_the_reserve_follows_the_allocator_mode_the_stack_runs():
    import json

    from click.testing import CliRunner

    import costplan
    from costplan.cli import cli

    # PyTorch's caching allocator keeps about 12% above the allocated peak with its default blocks
    # (tables/efficiency.csv allocator_slack) and 2.2% with expandable segments (Axolotl's log:
    # 27.72 GiB reserved over 27.13 GiB allocated), which Axolotl sets and the Trainer does not.
    options = dict(gpu="h100", gpus=1, micro_batch=2, seq_len=2048, grad_ckpt=True, tokens=1e8)
    axolotl = costplan.estimate("8b", "qlora", framework="axolotl", **options)
    trainer = costplan.estimate("8b", "qlora", framework="hf-trainer", **options)
    assert axolotl.memory.reserved_bytes == pytest.approx(1.022 * axolotl.memory.peak_bytes, rel=1e-12)
    assert trainer.memory.reserved_bytes == pytest.approx(1.12 * trainer.memory.peak_bytes, rel=1e-12)
    assert any("expandable_segments (axolotl sets it)" in a for a in axolotl.assumptions)
    assert not any("expandable_segments" in a for a in trainer.assumptions)
    # Either way round when asked: the peak is the same, only the reserve and the device total move.
    off = costplan.estimate("8b", "qlora", framework="axolotl", expandable_segments=False, **options)
    on = costplan.estimate("8b", "qlora", framework="hf-trainer", expandable_segments=True, **options)
    assert off.memory.peak_bytes == axolotl.memory.peak_bytes
    assert off.memory.reserved_bytes == pytest.approx(1.12 * off.memory.peak_bytes, rel=1e-12)
    assert on.memory.reserved_bytes == pytest.approx(1.022 * on.memory.peak_bytes, rel=1e-12)
    assert any("(--expandable-segments)" in a for a in on.assumptions)
    result = CliRunner().invoke(cli, ["estimate", "-m", "8b", "--method", "qlora", "--framework", "axolotl",
                                      "--no-expandable-segments", "--gpus", "1", "--micro-batch", "2",
                                      "--grad-ckpt", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["memory_reserved_bytes"] == pytest.approx(1.12 * data["memory_peak_bytes"], rel=1e-9)


def test_the_optimizer_step_streams_the_dtype_it_updates():
    # Under autocast (bf16-mixed) foreach AdamW updates fp32 weights; pure bf16 updates bf16 weights
    # with bf16 states (half the traffic); bf16-master updates the fp32 master and copies the bf16
    # gradient in and the weight back (2 + 4 bytes each way).
    import costplan

    def seconds(precision):
        est = costplan.estimate("llama-2-7b", "full", gpu="h100", gpus=1, micro_batch=1, global_batch=1, seq_len=512,
                                grad_ckpt=True, precision=precision, optimizer="adamw", tokens=1e6, price=0.0)
        return est.step.optimizer

    assert seconds("bf16-mixed") == pytest.approx(2 * seconds("bf16-true"))
    assert seconds("bf16-master") == pytest.approx(seconds("bf16-true") * (84 + 2 * (2 + 4)) / 42)


def test_axolotl_quantized_experts_dequantize_a_whole_layer_stack():
    """Axolotl quantizes MoE experts as a parametrization of their 3-D tensors (quantize_moe_experts): a layer's
    whole stack is dequantized in bf16 where its experts run and kept by the grouped matmuls until its backward.
    GLM-4.5-Air: 128 experts of gate, up and down, 1408 x 4096 each."""
    from dataclasses import replace

    from costplan.api import estimate
    from costplan.memory import training_memory
    from costplan.methods import QLora
    from costplan.model import preset
    from costplan.workload import Workload

    model = preset("glm-4.5-air")
    stack = 2 * 128 * 3 * 1408 * 4096
    method = QLora(rank=16, targets=("q", "k", "v", "o"))
    plain = training_memory(model, method, Workload(seq_len=2048, micro_batch=2, grad_ckpt=True))
    parametrized = replace(method, expert_stack_dequant=True)
    ckpt = training_memory(model, parametrized, Workload(seq_len=2048, micro_batch=2, grad_ckpt=True))
    assert plain.workspace == 2 * 4096 * 96 * 128  # the largest matrix (q) at a time, as bitsandbytes' Linear4bit
    assert ckpt.workspace == stack  # one layer's stack at a time, during its recompute and backward
    whole = training_memory(model, parametrized, Workload(seq_len=2048, micro_batch=2, grad_ckpt=False))
    bare = training_memory(model, method, Workload(seq_len=2048, micro_batch=2, grad_ckpt=False))
    assert whole.batch_activations - bare.batch_activations == 45 * stack  # every MoE layer's, kept to backward
    # Axolotl's stack sets it for a quantized MoE base; the Hugging Face Trainer (bitsandbytes' loading) does not.
    assert estimate("glm-4.5-air", "qlora", framework="axolotl", gpu="h100").method.expert_stack_dequant
    assert not estimate("glm-4.5-air", "qlora", gpu="h100").method.expert_stack_dequant
    assert not estimate("mixtral", "lora", framework="axolotl", gpu="h100").method.expert_stack_dequant
