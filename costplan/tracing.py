"""Ground truth from the real model code: build the Hugging Face module for a ModelSpec, apply the
real peft adapter, run one training step, and measure it.

Three measurements, each independent of the analytical model:

- FLOPs with ``torch.utils.flop_counter.FlopCounterMode``;
- bytes autograd saves for backward, through ``saved_tensors_hooks``;
- the peak of live tensor bytes over a whole step (forward, backward, optimizer), with a
  dispatch mode that follows every storage's allocation and release (``LiveBytes``).

The step follows the conventions the analytical model states: bf16/fp16 training of a trained
base keeps fp32 master weights in the optimizer (gradients copied to fp32 before the step),
peft parameters are fp32, ``zero_grad(set_to_none=True)``, foreach AdamW, and, as transformers'
Trainer does, only the loss is kept from the model's outputs.

torch, transformers and peft are imported inside the functions: never on the estimate path.
"""

from __future__ import annotations

import gc
import weakref
from dataclasses import dataclass
from typing import Any

from costplan.methods import Lora, Method, PrefixTuning, PromptTuning
from costplan.model import ModelSpec
from costplan.workload import Workload

_HF_LINEAR = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj",
              "up": "up_proj", "down": "down_proj"}


def hf_config(model: ModelSpec, attention: str = "sdpa") -> Any:
    """A transformers config with the spec's architecture numbers (no download)."""
    import transformers as T

    common: dict[str, Any] = {"vocab_size": model.vocab_size}
    if model.family == "gpt2":
        cfg = T.GPT2Config(n_embd=model.hidden_size, n_layer=model.num_layers, n_head=model.num_heads,
                           n_positions=model.max_positions, n_inner=model.ffn_size,
                           resid_pdrop=model.dropout, embd_pdrop=model.dropout,
                           attn_pdrop=model.attention_dropout, **common)
    elif model.family == "bert":
        cfg = T.BertConfig(hidden_size=model.hidden_size, num_hidden_layers=model.num_layers,
                           num_attention_heads=model.num_heads, intermediate_size=model.ffn_size,
                           max_position_embeddings=model.max_positions, type_vocab_size=model.token_types,
                           hidden_dropout_prob=model.dropout,
                           attention_probs_dropout_prob=model.attention_dropout, **common)
    elif model.family == "gpt_neox":
        cfg = T.GPTNeoXConfig(hidden_size=model.hidden_size, num_hidden_layers=model.num_layers,
                              num_attention_heads=model.num_heads, intermediate_size=model.ffn_size,
                              max_position_embeddings=model.max_positions,
                              tie_word_embeddings=model.tied_embeddings, **common)
    else:
        cls = {"llama": T.LlamaConfig, "mistral": T.MistralConfig, "mixtral": T.MixtralConfig,
               "qwen2": T.Qwen2Config, "gemma": T.GemmaConfig}[model.family]
        extra: dict[str, Any] = {}
        if model.family == "mixtral":
            extra = {"num_local_experts": model.num_experts, "num_experts_per_tok": model.experts_per_token}
        cfg = cls(hidden_size=model.hidden_size, num_hidden_layers=model.num_layers,
                  num_attention_heads=model.num_heads, num_key_value_heads=model.num_kv_heads,
                  head_dim=model.head_dim, intermediate_size=model.ffn_size,
                  max_position_embeddings=model.max_positions,
                  tie_word_embeddings=model.tied_embeddings, **extra, **common)
    cfg._attn_implementation = attention
    return cfg


def build_model(model: ModelSpec, attention: str = "sdpa", device: str = "cpu", dtype: Any = None) -> Any:
    """The transformers module, randomly initialised in ``dtype`` (default fp32); on ``meta``, or
    under a FakeTensorMode, it takes no memory."""
    import torch
    import transformers as T

    cfg = hf_config(model, attention)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype or torch.float32)
    try:
        with torch.device(device):
            if model.family == "bert":
                return T.BertForMaskedLM(cfg)
            return T.AutoModelForCausalLM.from_config(cfg)
    finally:
        torch.set_default_dtype(previous)


def apply_method(module: Any, method: Method) -> Any:
    """Wrap a model with the real peft adapter for a costplan method."""
    import peft

    if isinstance(method, Lora):
        targets = [_HF_LINEAR[t] for t in method.targets if t in _HF_LINEAR]
        config = peft.LoraConfig(r=method.rank, lora_alpha=2 * method.rank, lora_dropout=method.dropout,
                                 target_modules=targets)
        return peft.get_peft_model(module, config)
    if isinstance(method, PromptTuning):
        return peft.get_peft_model(module, peft.PromptTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=method.num_virtual_tokens))
    if isinstance(method, PrefixTuning):
        return peft.get_peft_model(module, peft.PrefixTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=method.num_virtual_tokens))
    return module


def _live_bytes_mode() -> Any:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveBytes(TorchDispatchMode):
        """Live tensor bytes: each storage counts from the op that creates it until it is freed."""

        def __init__(self, existing: list[Any]) -> None:
            super().__init__()
            self._op = "start"
            self.live = 0
            self.peak = 0
            self.peak_op = "start"
            self.ops = 0
            self.peak_at = 0
            self._refs: dict[int, Any] = {}
            for tensor in existing:
                self.track(tensor)

        def track(self, tensor: Any) -> None:
            if not isinstance(tensor, torch.Tensor):
                return
            storage = tensor.untyped_storage()  # its Python object lives as long as the storage
            key = id(storage)
            if key in self._refs:
                return
            size = storage.nbytes()

            def free(_ref: Any, key: int = key, size: int = size) -> None:
                self.live -= size
                self._refs.pop(key, None)

            self._refs[key] = weakref.ref(storage, free)
            self.live += size
            if self.live > self.peak:
                self.peak, self.peak_op, self.peak_at = self.live, self._op, self.ops

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            self._op = str(func)
            self.ops += 1
            out = func(*args, **(kwargs or {}))
            for tensor in tree_flatten(out)[0]:
                self.track(tensor)
            return out

    return LiveBytes


@dataclass(frozen=True, slots=True)
class TracedStep:
    """What one real training step did."""

    params_total: int
    params_trainable: int
    flops: int
    """Forward + backward (+ recompute) matmul FLOPs, as FlopCounterMode counts them."""
    saved_bytes: int
    """Distinct non-parameter storages the model saves for backward during a forward without
    labels (the loss's own saved log-softmax is not included)."""
    peak_bytes: int
    """Peak of live tensor bytes over a steady-state step (second step: optimizer states exist)."""
    peak_op: str
    """The operator whose output set the peak, and how far into the step it ran (op count)."""


def trace_training_step(model: ModelSpec, method: Method, work: Workload, seed: int = 0) -> TracedStep:
    """Run real training steps of a (small) model on the CPU and measure the second one."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(seed)
    dtype = {"fp32": torch.float32, "fp16": torch.float16}.get(work.precision, torch.bfloat16)
    module = build_model(model, attention="sdpa" if work.attention == "flash" else "eager", dtype=dtype)
    params_total = sum(p.numel() for p in module.parameters())
    if work.grad_ckpt:
        module.gradient_checkpointing_enable()
        module.config.use_cache = False
    module = apply_method(module, method)
    module.train()
    trainable = [p for p in module.parameters() if p.requires_grad]
    mixed = work.mixed_precision and method.trains_base
    master = [p.detach().float().clone().requires_grad_() for p in trainable] if mixed else trainable
    optimizer = torch.optim.AdamW(master, foreach=True, fused=False)
    ids = torch.randint(0, model.vocab_size, (work.micro_batch, work.seq_len))

    def forward() -> Any:
        # Causal LMs shift the labels; BERT's masked-LM loss is taken over every position.
        return module(input_ids=ids, labels=ids)

    def step() -> None:
        # As transformers' Trainer does: keep the loss, drop the outputs (and their logits)
        # before backward.
        loss = forward().loss
        loss.backward()
        del loss
        if mixed:
            for m, p in zip(master, trainable, strict=True):
                m.grad = p.grad.float()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if mixed:
            with torch.no_grad():
                for m, p in zip(master, trainable, strict=True):
                    p.copy_(m)
        for p in trainable:
            p.grad = None

    with FlopCounterMode(display=False) as counter:
        forward().loss.backward()
    for p in trainable:
        p.grad = None
    step()  # the first step allocates the optimizer states
    gc.collect()
    saved: dict[int, int] = {}
    param_storages = {p.untyped_storage().data_ptr() for p in module.parameters()}

    def pack(t: Any) -> Any:
        storage = t.untyped_storage()
        if storage.data_ptr() not in param_storages:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(input_ids=ids)
    del out
    gc.collect()
    existing = [*module.parameters(), *module.buffers(), *([] if master is trainable else master),
                *(v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v))]
    with _live_bytes_mode()(existing) as tracker:
        step()
    return TracedStep(params_total=params_total, params_trainable=sum(p.numel() for p in trainable),
                      flops=counter.get_total_flops(), saved_bytes=sum(saved.values()),
                      peak_bytes=tracker.peak, peak_op=f"{tracker.peak_op} (op {tracker.peak_at} of {tracker.ops})")
