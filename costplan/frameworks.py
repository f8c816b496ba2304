"""Training stacks: which layouts each supports and how it runs kernels.

A layout is only offered where the stack the user runs supports it: the Hugging Face Trainer
(with DeepSpeed or FSDP behind it) shards data-parallel replicas with ZeRO-1/2/3 but has no tensor
or pipeline parallelism; Megatron-style stacks add tensor parallelism inside a node and pipeline
stages across nodes, and shard optimizer states with their distributed optimizer (ZeRO-1).
"""

from __future__ import annotations

from dataclasses import dataclass

from costplan.errors import unknown_name


@dataclass(frozen=True, kw_only=True, slots=True)
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
    source: str


FRAMEWORKS: dict[str, Framework] = {f.key: f for f in (
    Framework(key="hf-trainer", label="Hugging Face Trainer (+ peft, DeepSpeed/FSDP for sharding)",
              zero_stages=(0, 1, 2, 3), tensor_parallel=False, pipeline_parallel=False, runtime="eager",
              source="transformers Trainer: DDP by default, DeepSpeed ZeRO or FSDP through accelerate"),
    Framework(key="fsdp", label="PyTorch FSDP2 / accelerate FSDP", zero_stages=(0, 2, 3), tensor_parallel=False,
              pipeline_parallel=False, runtime="eager",
              source="torch.distributed.fsdp fully_shard (FULL_SHARD = ZeRO-3, SHARD_GRAD_OP = ZeRO-2)"),
    Framework(key="deepspeed", label="DeepSpeed ZeRO", zero_stages=(0, 1, 2, 3), tensor_parallel=False,
              pipeline_parallel=False, runtime="eager", source="DeepSpeed ZeRO stages 0-3"),
    Framework(key="torchtune", label="torchtune recipes", zero_stages=(0, 3), tensor_parallel=False,
              pipeline_parallel=False, runtime="eager",
              source="torchtune single-device recipes and FSDP2 distributed recipes"),
    Framework(key="litgpt", label="LitGPT (Lightning Fabric)", zero_stages=(0, 3), tensor_parallel=False,
              pipeline_parallel=False, runtime="eager", source="LitGPT finetune/pretrain: DDP or FSDP strategy"),
    Framework(key="unsloth", label="Unsloth (Triton kernels)", zero_stages=(0,), tensor_parallel=False,
              pipeline_parallel=False, runtime="eager", kernels="fused",
              source="Unsloth: fused Triton kernels for RMSNorm, RoPE, SwiGLU and the cross-entropy; one GPU"),
    Framework(key="axolotl", label="Axolotl (Hugging Face Trainer underneath)", zero_stages=(0, 1, 2, 3),
              tensor_parallel=False, pipeline_parallel=False, runtime="eager",
              source="Axolotl builds on the transformers Trainer with DeepSpeed or FSDP"),
    Framework(key="megatron", label="Megatron-LM / Megatron Core (TP, PP, distributed optimizer)",
              zero_stages=(0, 1), tensor_parallel=True, pipeline_parallel=True, runtime="eager", kernels="fused",
              source="Megatron-LM: tensor, pipeline and data parallelism; --use-distributed-optimizer shards "
                     "optimizer states like ZeRO-1; fused layer norm, bias-GeLU/SwiGLU and cross-entropy "
                     "(Narayanan et al. 2021; Megatron Core docs)"),
    Framework(key="torchtitan", label="torchtitan (FSDP2 + TP + PP, torch.compile)", zero_stages=(0, 3),
              tensor_parallel=True, pipeline_parallel=True, runtime="compiled", kernels="fused",
              source="pytorch/torchtitan: FSDP2, tensor and pipeline parallelism, torch.compile per block"),
)}


def framework(name: str) -> Framework:
    try:
        return FRAMEWORKS[name.lower()]
    except KeyError:
        raise unknown_name("framework", name, FRAMEWORKS) from None


def default_framework(training: bool, trains_base: bool, pretraining_scale: bool) -> Framework:
    """The stack a practitioner would use: Megatron-style for pretraining and continual
    pretraining at scale, the Hugging Face Trainer otherwise."""
    return FRAMEWORKS["megatron" if training and trains_base and pretraining_scale else "hf-trainer"]
