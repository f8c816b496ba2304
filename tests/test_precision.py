"""Precision modes and stack conventions: bytes per parameter by hand, for each mode and technique."""

import shutil

import pytest

import costplan
from costplan import precision as modes
from costplan.errors import CostplanError
from costplan.memory import loss_logits, training_memory
from costplan.methods import FullFineTune, Lora, QLora
from costplan.model import ModelSpec, count_params, preset
from costplan.terms import Mem
from costplan.workload import Workload

TINY = ModelSpec(name="tiny", family="llama", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                 head_dim=16, ffn_size=128, vocab_size=100, max_positions=64)
N = 100 * 64 * 2 + 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128 + 2 * 64) + 64
LARGEST = 64 * 128  # the MLP matrices are the largest tensors


def per_param(mode: str, optimizer: str = "adamw", **extra) -> dict[str, float]:
    mem = training_memory(TINY, FullFineTune(), Workload(seq_len=8, precision=mode, optimizer=optimizer, **extra))
    return {name: getattr(mem, name) / N for name in ("weights", "gradients", "master_weights", "optimizer_states",
                                                       "gradient_copies", "step_temporaries", "weight_copies")}


def test_fp32_is_16_bytes_plus_foreach_temporaries():
    assert per_param("fp32") == {"weights": 4, "gradients": 4, "master_weights": 0, "optimizer_states": 8,
                                 "gradient_copies": 0, "step_temporaries": 4, "weight_copies": 0}


def test_bf16_mixed_is_fp32_weights_with_autocast_copies():
    # The Hugging Face Trainer's bf16=True: fp32 weights are the master; autocast's bf16 casts
    # (2 B/param) are saved for backward; with foreach AdamW the step peaks at 4 + 4 + 8 + 4 = 20.
    b = per_param("bf16-mixed")
    copies = b.pop("weight_copies")
    assert b == {"weights": 4, "gradients": 4, "master_weights": 0, "optimizer_states": 8, "gradient_copies": 0,
                 "step_temporaries": 4}
    assert b["weights"] + b["gradients"] + b["optimizer_states"] + b["step_temporaries"] == 20
    # Copies of the matmuls' weights (the layers' matrices and the LM head), not the embedding's or norms'.
    matrices = 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128)
    assert copies * N == 2 * (matrices + 100 * 64)
    assert per_param("fp16-mixed") == {**b, "weight_copies": copies}


def test_bf16_true_is_10_bytes_with_foreach_adamw():
    # Pure bf16 (torchtune, LitGPT bf16-true): torch.optim states take the parameter's dtype.
    b = per_param("bf16-true")
    assert b == {"weights": 2, "gradients": 2, "master_weights": 0, "optimizer_states": 4, "gradient_copies": 0,
                 "step_temporaries": 2, "weight_copies": 0}
    assert sum(b.values()) == 10
    assert per_param("bf16-true", "adamw-fused")["step_temporaries"] == 0  # fused: in place


def test_bf16_master_deepspeed_and_megatron():
    # DeepSpeed: bf16 weights and gradients, fp32 master and states, the gradient partition cast to
    # fp32 at the step: 2 + 2 + 4 + 8 + 4 = 20 (+ temporaries).
    ds = per_param("bf16-master", "adamw-fused")
    assert ds == {"weights": 2, "gradients": 2, "master_weights": 4, "optimizer_states": 8, "gradient_copies": 4,
                  "step_temporaries": 0, "weight_copies": 0}
    # Megatron: a persistent fp32 main-gradient buffer instead, each bf16 gradient added to it and
    # freed, no cast at the step: 2 + 4 + 4 + 8 = 18 (its docs' table).
    mem = training_memory(TINY, FullFineTune(), Workload(seq_len=8, precision="bf16-master", optimizer="adamw-fused",
                                                         fp32_main_grads=True))
    assert mem.gradient_buffer == 4 * N and mem.gradients == 2 * LARGEST and mem.gradient_copies == 0
    assert (mem.weights + mem.gradient_buffer + mem.master_weights + mem.optimizer_states) / N == 18


def test_deepspeed_casts_adapters_to_bf16_and_keeps_fp32_masters_of_them():
    # DeepSpeed's engine casts the whole module (peft's adapters included) to bf16 and holds an fp32 master
    # partition of every trainable parameter: LoRA r8 on q and v of Llama-2-7B (4,194,304 parameters) keeps
    # 2 bytes each in the model, 4 in the master copy and 8 in AdamW's fp32 states.
    from costplan.methods import Lora
    from costplan.model import preset

    est = costplan.estimate("llama-2-7b", "lora", gpu="a100-80gb", gpus=1, framework="deepspeed", tokens=1e8,
                            seq_len=512, micro_batch=1, global_batch=1, optimizer="adamw-fused")
    assert est.workload.adapter_bytes == 2
    mem = training_memory(preset("llama-2-7b"), Lora(rank=8, targets=("q", "v")), est.workload)
    adapters = 4_194_304
    assert mem.master_weights == 4 * adapters and mem.optimizer_states == 8 * adapters


def test_fp16_master_keeps_deepspeeds_copies_in_fp16():
    # DeepSpeed's fp16 (and Megatron's --fp16), what V100s and T4s run: fp16 weights and gradients,
    # fp32 master and states, the partition cast at the step: the same 20 B/param as bf16-master, at
    # the fp16 tensor-core peak.
    assert per_param("fp16-master", "adamw-fused") == per_param("bf16-master", "adamw-fused")
    assert modes.peak_key("fp16-master") == "fp16" and modes.compute_bytes("fp16-master") == 2
    assert modes.resolve("fp16", "bf16-master") == "fp16-master"  # on DeepSpeed/Megatron
    assert modes.resolve("fp16", "bf16-mixed") == "fp16-mixed"  # elsewhere, as before
    est = costplan.estimate("llama-2-7b", "full", gpu="v100", gpus=8, framework="deepspeed", precision="fp16",
                            tokens=1e6)
    assert est.workload.precision == "fp16-master"
    assert est.memory.terms[Mem.MASTER] == pytest.approx(4 * count_params(preset("llama-2-7b")).total / 8)


def test_fp8_adds_transformer_engine_weight_copies_on_its_bf16_mode():
    fp8 = training_memory(TINY, FullFineTune(), Workload(seq_len=8, precision="fp8", fp8_base="bf16-master",
                                                         optimizer="adamw-fused"))
    base = training_memory(TINY, FullFineTune(), Workload(seq_len=8, precision="bf16-master",
                                                          optimizer="adamw-fused"))
    matrices = 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128)
    assert fp8.weight_copies - base.weight_copies == 2 * matrices  # row-wise and transposed fp8 copies
    assert fp8.optimizer_states == base.optimizer_states and fp8.master_weights == base.master_weights


def test_adapters_fp32_under_peft_and_in_the_model_dtype_on_torchtune():
    lora = Lora(rank=8, targets=("q", "v"))
    adapter = lora.trainable_params(TINY)
    peft = training_memory(TINY, lora, Workload(seq_len=8, precision="bf16-true", optimizer="adamw-fused"))
    tune = training_memory(TINY, lora, Workload(seq_len=8, precision="bf16-true", optimizer="adamw-fused",
                                                fp32_adapters=False))
    assert peft.gradients == 4 * adapter and peft.optimizer_states == 8 * adapter
    assert tune.gradients == 2 * adapter and tune.optimizer_states == 4 * adapter
    assert peft.weights - tune.weights == 2 * adapter  # the frozen base is bf16 in both


def test_optimizer_in_backward_keeps_one_gradient():
    b = per_param("bf16-true", "adamw-fused", optimizer_in_backward=True)
    assert b["gradients"] * N == 2 * LARGEST  # only the largest tensor's gradient at a time
    mem = training_memory(TINY, FullFineTune(), Workload(seq_len=8, precision="bf16-true",
                                                         optimizer="adamw", optimizer_in_backward=True))
    assert mem.step_temporaries == 2 * LARGEST  # foreach temporaries for one tensor, in bf16


def test_paged_states_are_managed_memory_and_offload_moves_states_to_the_host():
    paged = training_memory(TINY, FullFineTune(), Workload(seq_len=8, precision="bf16-true",
                                                           optimizer="paged-adamw-8bit"))
    assert paged.optimizer_states == 0 and paged.paged_states > 0
    off = training_memory(TINY, FullFineTune(), Workload(seq_len=8, precision="bf16-master", optimizer="adamw-fused",
                                                         offload=("optimizer",)))
    assert off.optimizer_states == off.master_weights == off.gradient_copies == 0
    assert off.host_states == (8 + 4 + 4) * N  # states, master, fp32 gradients
    assert off.offloaded_params == N
    assert off.offload_bytes_per_step == (2 + 2) * N  # bf16 gradients down, bf16 weights up


def test_qlora_through_peft_upcasts_what_is_not_quantized():
    qlora = QLora(rank=8, targets=("q", "v"))
    plain = training_memory(TINY, qlora, Workload(seq_len=8, precision="bf16-mixed"))
    peft = training_memory(TINY, qlora, Workload(seq_len=8, precision="bf16-mixed", kbit_fp32_upcast=True))
    matrices = 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128)
    assert peft.weights - plain.weights == 2 * (count_params(TINY).total - matrices)


def test_losses_keep_what_their_code_keeps():
    model, lora = preset("llama-3-8b"), Lora(rank=8, targets=("q", "v"))
    logits = 2048 * 128256

    def loss(**extra):
        return loss_logits(model, lora, Workload(seq_len=2048, precision="bf16-true", **extra))

    full = loss()
    assert full.kept == 4 * logits and full.backward_peak == 12 * logits  # fp32 log-softmax; 3 fp32 at backward
    chunked = loss(loss="chunked")  # torchtune: every chunk's fp32 log-softmax kept, one chunk's gradients
    assert chunked.kept == 4 * logits
    assert chunked.backward_peak == pytest.approx(4 * logits + (2 * 4 + 2) * logits / 8)
    litgpt = loss(loss="chunked", loss_fp32=False)
    assert litgpt.kept == 2 * logits  # bf16 log-softmax
    fused = loss(loss="fused")
    assert fused.kept == 2 * 2048 * 4096  # only the head's input gradient, hidden-wide
    # torch.compile's cross-entropy keeps its input as it came (and a log-sum-exp per position; on the CPU,
    # torch 2.13's saved-tensor hooks see the input itself) and writes the input's gradient in one kernel.
    compiled = loss(loss="chunked", compiled=True)  # torchtune's compiled compute_cross_entropy, bf16 chunks
    assert compiled.kept == 2 * logits and compiled.backward_peak == pytest.approx(2 * logits + 2 * logits / 8)
    whole = loss(compiled=True)  # the whole model and loss compiled (transformers): bf16 logits
    assert whole.kept == 2 * logits and whole.backward_peak == 6 * logits
    upcast = loss(compiled=True, output_upcast=True)  # torchtune's decoder upcasts before the compiled loss
    assert upcast.kept == 4 * logits and upcast.backward_peak == 8 * logits  # fp32 input and its fp32 gradient


def test_precision_names_resolve_per_stack():
    assert modes.resolve("bf16", "bf16-true") == "bf16-true"
    assert modes.resolve("fp16") == "fp16-mixed"
    with pytest.raises(ValueError):
        modes.resolve("bf17")
    assert Workload(precision="fp16").precision == "fp16-mixed"


def test_estimate_names_the_resolved_mode_and_the_stack():
    est = costplan.estimate("llama-2-7b", "full", gpu="a100-80gb", gpus=8, framework="torchtune", tokens=1e6)
    assert est.workload.precision == "bf16-true"
    data = est.to_dict()
    assert data["precision"] == "bf16-true" and data["framework"] == "torchtune"
    hf = costplan.estimate("llama-2-7b", "full", gpu="a100-80gb", gpus=8, tokens=1e6)
    assert hf.workload.precision == "bf16-mixed"
    assert any("--precision bf16 on hf-trainer is bf16-mixed" in a for a in hf.assumptions)
    with pytest.raises(CostplanError):
        costplan.estimate("7b", "lora", precision="bf17")


@pytest.mark.needs_torch
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_the_autocast_emulation_saves_what_real_autocast_saves(attention):
    # verify traces mixed precision on the meta device through costplan.autocast (meta tensors have no
    # autocast key); on the CPU, where real autocast runs, both must save the very same tensors.
    import collections

    import torch

    from costplan.autocast import autocast_mode
    from costplan.tracing import build_model

    def saved(context):
        torch.manual_seed(0)
        module = build_model(TINY, attention=attention)
        module.train()
        ids = torch.randint(0, 100, (2, 16))
        kept = collections.Counter()

        def pack(t):
            kept[(tuple(t.shape), t.dtype)] += 1
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), context():
            module(input_ids=ids, labels=ids).loss.backward()
        return kept

    real = saved(lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    emulated = saved(lambda: autocast_mode(torch.bfloat16))
    assert real == emulated
    assert sum(n for (shape, dtype), n in real.items() if dtype == torch.bfloat16) > 0  # casts were saved


@pytest.mark.needs_torch
@pytest.mark.skipif(shutil.which("cc") is None, reason="Inductor's CPU backend needs a C compiler")
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_a_compiled_cross_entropy_keeps_its_input_and_writes_one_gradient(dtype):
    # what memory.loss_logits assumes of torch.compile's loss (torchtune's compute_cross_entropy, whose
    # input is a bf16 chunk, or the fp32 logits its decoder upcast): the input itself is kept, with a
    # statistic per position, and backward allocates one input-sized gradient in the input's dtype.
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    rows, vocab = 64, 2048
    loss_fn = torch.compile(lambda x, y: F.cross_entropy(x.float(), y, reduction="sum"))
    x = torch.randn(rows, vocab, dtype=getattr(torch, dtype), requires_grad=True)
    labels = torch.randint(0, vocab, (rows,))
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        loss = loss_fn(x, labels)
    assert any(t.data_ptr() == x.data_ptr() for t in kept)
    assert sum(t.numel() * t.element_size() for t in kept if t.data_ptr() != x.data_ptr()) < rows * 64
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss.backward()
    sizes = {e.cpu_memory_usage for e in prof.events() if e.name == "CompiledFunctionBackward"}
    assert sizes == {x.numel() * x.element_size()} and x.grad.dtype == x.dtype
