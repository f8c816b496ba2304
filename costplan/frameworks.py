"""Training stacks: which layouts each supports, how it runs kernels, and its defaults
(``tables/frameworks.csv``, each row read from the stack's source).

A layout is only offered where the stack the user runs supports it: the Hugging Face Trainer
(with DeepSpeed or FSDP behind it) shards data-parallel replicas with ZeRO-1/2/3 but has no tensor
or pipeline parallelism; Megatron-style stacks add tensor parallelism inside a node and pipeline
stages across nodes, and shard optimizer states with their distributed optimizer (ZeRO-1).
"""

from __future__ import annotations

import functools

from costplan.errors import unknown_name
from costplan.record import record
from costplan.tables import read_table


@record(kw_only=True)
class Framework:
    key: str
    label: str
    zero_stages: tuple[int, ...]
    """Data-parallel sharding it offers (0 = DDP; 3 = ZeRO-3 / FSDP full shard)."""
    tensor_parallel: bool
    pipeline_parallel: bool
    runtime: str
    """How it dispatches kernels: ``eager`` PyTorch or ``compiled`` (CUDA graphs, torch.compile)."""
    kernels: str = "eager"
    """``fused``: norms, activations, rotary embeddings and the loss run as fused kernels (Megatron's
    fused layers, Triton kernels, torch.compile); ``eager``: one PyTorch operator each."""
    bf16: str = "bf16-mixed"
    """What ``--precision bf16`` means on this stack (a precision mode of ``costplan.workload``)."""
    optimizer: str = "adamw"
    grad_ckpt: bool = False
    """Activation checkpointing on by default."""
    loss: str = "full"
    """``full`` logits for every position, ``chunked`` or ``fused`` cross-entropy."""
    fp32_adapters: bool = True
    """peft adapters in fp32 (``autocast_adapter_dtype``); False: in the model's dtype."""
    fp32_main_grads: bool = False
    """Under bf16-master: Megatron's fp32 main-gradient buffer (else DeepSpeed's bf16 gradients)."""
    loss_fp32: bool = True
    """Logits upcast to fp32 for the loss."""
    output_upcast: bool = False
    """The model's forward upcasts the full logits (torchtune's ``TransformerDecoder``:
    ``self.output(h).float()``), outside a compiled loss."""
    kbit_upcast: bool = False
    """QLoRA prepared by peft's ``prepare_model_for_kbit_training``: unquantized parameters in fp32."""
    offload_checkpoints: bool = False
    """Checkpointed layer inputs copied to host memory (Unsloth's checkpointing)."""
    autocast: bool = False
    """The forward runs under ``torch.autocast`` whatever the weights' dtype (the Trainer's ``bf16=True``)."""
    lora_dropout: float = 0.0
    """The stack's default LoRA dropout."""
    modeling: str = "transformers"
    """Whose layer code the saved activations follow: ``litgpt`` (LitGPT's own GPT), ``unsloth`` (its fused
    LoRA kernels), ``axolotl`` (transformers' modules and its fused LoRA MLP kernel) or ``transformers``."""
    full_single_gpu_optimizer: str = ""
    """The optimizer of full fine-tuning on one GPU where it differs (``+in-backward``: stepped in backward)."""
    quantized_gather: bool = False
    """Under FSDP a 4-bit base's layers are all-gathered as stored (torchao's NF4 under FSDP2), not at the
    compute dtype's size."""
    root_unit: bool = False
    """Under FSDP the stack wraps each layer and leaves the embeddings and LM head to the root unit,
    gathered for the loss's backward and unsharded until backward ends (``Workload.fsdp_root_unit``)."""
    held_logits: str = ""
    """The training loop keeps the model's logits from one forward to the next (``compute``: LitGPT's
    fit loops); empty: it keeps only the loss (``Workload.held_logits``)."""
    expandable_segments: bool = False
    """The stack runs PyTorch's caching allocator with ``expandable_segments:True`` (it sets
    ``PYTORCH_CUDA_ALLOC_CONF`` before CUDA starts): its reserve stays close to the allocated peak."""
    accumulation: str = "reduce"
    """Gradient accumulation under FSDP: ``reduce`` (each micro-batch reduce-scatters its gradients) or
    ``no-sync`` (FSDP's ``no_sync``: unsharded gradients kept until the last micro-batch)."""
    source: str = ""

    @property
    def fused(self) -> bool:
        """Elementwise work runs fused (fused kernels, or torch.compile's Inductor)."""
        return self.kernels == "fused" or self.runtime == "compiled"


@functools.cache
def frameworks() -> dict[str, Framework]:
    """The table's stacks by key."""
    found = {}
    for row in read_table("frameworks"):
        found[row["key"]] = Framework(
            key=row["key"], label=row["label"], zero_stages=tuple(int(z) for z in row["zero_stages"].split(";")),
            tensor_parallel=row["tensor_parallel"] == "true", pipeline_parallel=row["pipeline_parallel"] == "true",
            runtime=row["runtime"], kernels=row["kernels"], bf16=row["bf16"], optimizer=row["optimizer"],
            grad_ckpt=row["grad_ckpt"] == "true", loss=row["loss"], fp32_adapters=row["adapters"] == "fp32",
            fp32_main_grads=row["main_grads"] == "fp32", loss_fp32=row["loss_fp32"] in ("true", "output"),
            output_upcast=row["loss_fp32"] == "output",
            kbit_upcast=row["kbit_upcast"] == "true", offload_checkpoints=row["offload_checkpoints"] == "true",
            full_single_gpu_optimizer=row["full_single_gpu_optimizer"], autocast=row["autocast"] == "true",
            lora_dropout=float(row["lora_dropout"]), modeling=row["modeling"], accumulation=row["accumulation"],
            held_logits=row["held_logits"], quantized_gather=row["quantized_gather"] == "true",
            root_unit=row["root_unit"] == "true",
            expandable_segments=row["allocator"] == "expandable", source=row["source"])
    return found


FRAMEWORK_KEYS = ("hf-trainer", "fsdp", "deepspeed", "torchtune", "litgpt", "unsloth", "axolotl", "megatron",
                  "torchtitan")
"""The table's keys, for option choices (a test keeps them equal)."""


def framework(name: str) -> Framework:
    try:
        return frameworks()[name.lower()]
    except KeyError:
        raise unknown_name("framework", name, frameworks()) from None


def default_framework(training: bool, trains_base: bool, pretraining_scale: bool) -> Framework:
    """The stack a practitioner would use: Megatron-style for pretraining and continual
    pretraining at scale, the Hugging Face Trainer otherwise."""
    return frameworks()["megatron" if training and trains_base and pretraining_scale else "hf-trainer"]
