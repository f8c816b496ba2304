"""What is run: sequence shape, batch, precision, optimizer and memory-saving switches."""

from __future__ import annotations

from typing import Literal

from costplan import precision as modes
from costplan.record import record

Attention = Literal["flash", "eager"]
Loss = Literal["full", "chunked", "fused"]
LOSSES = ("full", "chunked", "fused")
OFFLOADS = ("optimizer", "params", "activations")


@record(kw_only=True)
class Workload:
    seq_len: int = 2048
    """Tokens per training sequence (data tokens, before any virtual tokens)."""
    micro_batch: int = 1
    """Sequences per GPU per forward/backward (for inference: concurrent requests per replica)."""
    global_batch: int | None = None
    """Sequences per optimizer step over all GPUs; gradient accumulation makes up the rest."""
    precision: str = "bf16-mixed"
    """A precision mode (``costplan.precision.MODES``); ``bf16`` and ``fp16`` are read as
    ``bf16-mixed`` and ``fp16-mixed`` here (the estimate resolves ``bf16`` per stack)."""
    optimizer: str = "adamw"
    grad_ckpt: bool = False
    """Activation checkpointing of every transformer layer (one extra forward in backward)."""
    attention: Attention = "flash"
    """``flash`` (SDPA / FlashAttention: no s² scores kept) or ``eager`` (scores materialised)."""
    prompt_len: int = 512
    """Inference: prompt tokens per request."""
    gen_len: int = 256
    """Inference: generated tokens per request."""
    source_len: int | None = None
    """Encoder-decoder models (T5) in training: source tokens per example, which the encoder reads;
    ``seq_len`` is then the target, the decoder's tokens and the loss's. In generation the source is
    ``prompt_len`` and the target ``gen_len``. None for decoder-only models."""
    fp32_adapters: bool = True
    """peft's adapters (and soft prompts) in fp32; False: in the model's dtype (torchtune, LitGPT)."""
    fp32_main_grads: bool = False
    """bf16-master with Megatron's fp32 main-gradient buffer (else DeepSpeed's bf16 gradients)."""
    fp8_base: str = "bf16-master"
    """The bf16 mode fp8 runs on (weights, master, gradients and states as in it)."""
    optimizer_in_backward: bool = False
    """Each parameter is stepped as soon as its gradient is complete and the gradient freed
    (torchtune's ``optimizer_in_bwd``): no step-wide gradients, no accumulation."""
    loss: Loss = "full"
    """``full``: logits for every position, upcast to fp32 (transformers); ``chunked``: the head and
    loss over chunks of positions, each chunk's fp32 logits kept for backward (torchtune, LitGPT);
    ``fused``: a fused linear + cross-entropy that keeps no logits (Liger, Unsloth, Cut Cross-Entropy)."""
    compiled: bool = False
    """torch.compile over the model and loss (Inductor): the cross-entropy runs as one fused kernel that
    keeps its input (the 16-bit logits; fp32 ones where the model upcast them, ``output_upcast``) and a
    log-sum-exp per position for backward, not an fp32 log-softmax."""
    loss_fp32: bool = True
    """Logits upcast to fp32 for the loss (transformers, torchtune, Megatron); False: in the compute
    dtype (LitGPT)."""
    output_upcast: bool = False
    """The model's forward upcasts the full logits to fp32 (torchtune's ``TransformerDecoder``), so a
    compiled loss receives, and keeps for backward, fp32 logits."""
    offload: tuple[str, ...] = ()
    """What lives in host memory: ``optimizer`` (states, master weights, fp32 gradients: ZeRO-Offload,
    FSDP CPU offload), ``params`` (ZeRO-3 / FSDP parameter shards), ``activations`` (checkpoints)."""
    autocast_forward: bool | None = None
    """The forward runs under ``torch.autocast`` (None: in the mixed modes). The Hugging Face Trainer
    with ``bf16=True`` autocasts a model loaded in bf16 too (Axolotl), which matters to fp32 adapters."""
    fsdp_root_unit: bool = False
    """Under FSDP the root unit holds the embeddings and the LM head (the stack wraps only the layers
    as units of their own): gathered at the loss's backward and kept unsharded to the end of it."""
    kbit_fp32_upcast: bool = False
    """QLoRA through peft's ``prepare_model_for_kbit_training``: the parameters left unquantized
    (embeddings, LM head, norms) upcast to fp32."""
    modeling: str = "transformers"
    """Whose layer code runs: ``transformers`` (its modules with peft), ``litgpt`` (LitGPT's GPT: one
    fused qkv projection split into views, k and v repeated to every query head under grouped-query
    attention, one zero-padded adapter for the enabled q/k/v), ``unsloth`` (its fused LoRA kernels
    where they apply, ``activations.unsloth_kernels``) or ``axolotl`` (transformers' modules, and
    Axolotl's fused ``LoRA_MLP`` kernel where it applies, ``activations.axolotl_mlp_kernel``)."""
    unsharded_accumulation: bool = False
    """Under FSDP, gradient accumulation runs the micro-batches before the last without syncing
    (FSDP's ``no_sync``, Lightning Fabric's ``no_backward_sync``): each GPU keeps the unsharded
    gradients until the last micro-batch reduce-scatters them."""
    flat_unit_gradients: bool = False
    """FSDP1 wrapping whole layers that mix frozen and trainable parameters (LitGPT's Block policy
    before its LoRA moved to FSDP2): a layer holding any trainable parameter gets a gradient for its
    whole flat parameter (PyTorch warns of it: pytorch/torch/distributed/fsdp/_wrap_utils.py)."""
    quantized_gather: bool = False
    """Under FSDP / ZeRO-3 a quantized base's layers are gathered as stored (torchao's NF4 under FSDP2);
    False: at the compute dtype's size."""
    held_logits: str | None = None
    """The training loop holds the model's outputs, its logits, until the next forward replaces them
    (``output = model(...); output.loss.backward()``, as Answer.AI's fsdp_qlora ``train.py`` and many
    hand-written loops do; the Trainer keeps only the loss): ``fp32`` (transformers' causal LMs returned
    the loss's fp32 upcast of the logits until v4.46) or ``compute`` (the compute dtype); None: not held."""
    virtual_stages: int | None = None
    """Pipeline stages each GPU holds under interleaved 1F1B (Megatron's virtual pipeline); None: about two
    layers each, as NeMo's recipes run large models; 1: plain 1F1B (DeepSpeed's pipeline engine, as GPT-NeoX
    and Megatron-DeepSpeed run it, and Megatron-LM unless virtual stages are asked for)."""
    expandable_segments: bool = False
    """PyTorch's caching allocator runs with ``expandable_segments:True`` (``PYTORCH_CUDA_ALLOC_CONF``): one
    growing segment instead of fixed-size blocks, so the reserve stays close to the allocated peak
    (``Profile.allocator_slack``)."""
    gathered_load: bool = False
    """The checkpoint is loaded into the sharded (ZeRO-3 / FSDP) model by gathering the whole model onto
    every GPU at once: Lightning Fabric's ``load_raw`` summoned all parameters until
    Lightning-AI/pytorch-lightning#18190 (2023-07-30), so LitGPT's runs of 2023 peaked at the full
    model plus its shard while loading."""

    def __post_init__(self) -> None:
        for name in ("seq_len", "micro_batch", "prompt_len", "gen_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.source_len is not None and (not isinstance(self.source_len, int) or self.source_len <= 0):
            raise ValueError(f"--source-len must be a positive integer, got {self.source_len!r}")
        if self.global_batch is not None and self.global_batch <= 0:
            raise ValueError("--global-batch must be a positive integer")
        mode = modes.resolve(self.precision) if isinstance(self.precision, str) else self.precision
        if mode != self.precision:
            object.__setattr__(self, "precision", mode)
        if self.fp8_base not in modes.MODES or self.fp8_base == "fp8":
            raise ValueError("the mode fp8 runs on must be a 16-bit or fp32 mode")
        if self.attention not in ("flash", "eager"):
            raise ValueError("--attention must be flash or eager")
        if self.loss not in LOSSES:
            raise ValueError(f"--loss must be one of {', '.join(LOSSES)}")
        unknown = set(self.offload) - set(OFFLOADS)
        if unknown:
            raise ValueError(f"--offload takes {', '.join(OFFLOADS)}, not {', '.join(sorted(unknown))}")

    @property
    def compute_bytes(self) -> int:
        """Bytes per element of activations and of a frozen base."""
        return modes.compute_bytes(self.precision)

    @property
    def trained(self) -> modes.Bytes:
        """Bytes per trained base parameter of each copy the mode keeps."""
        return modes.trained_bytes(self.precision, fp32_main_grads=self.fp32_main_grads, base_mode=self.fp8_base)

    @property
    def adapter_bytes(self) -> int:
        """Bytes per element of adapters, soft prompts and prefixes (and their gradients)."""
        return modes.adapter_bytes(self.precision, self.fp32_adapters)

    @property
    def autocast(self) -> bool:
        if self.autocast_forward is not None:
            return self.autocast_forward and self.precision != "fp32"
        return self.precision in ("bf16-mixed", "fp16-mixed")

    @property
    def peak_key(self) -> str:
        """The tensor-core peak the matmuls run at (``fp32``, ``bf16``, ``fp16``, ``fp8``)."""
        return modes.peak_key(self.precision)
