"""Precision modes as the training stacks define them, and the bytes each keeps per parameter.

A mode says how the trained weights are stored, what the gradients and optimizer states are held
in, whether an fp32 master copy exists, and what activations are computed in:

- ``fp32``: everything in fp32 (4 + 4 + 8 bytes per trained parameter with AdamW).
- ``bf16-mixed`` / ``fp16-mixed``: autocast over fp32 weights, which are the master copy
  (``torch.autocast``; the Hugging Face Trainer's ``bf16=True``, LitGPT's ``bf16-mixed``). fp32
  weights, gradients and states; autocast keeps a 16-bit copy of each weight it casts, which the
  matmuls save for backward. 16 bytes per parameter plus the copies.
- ``bf16-true``: pure bf16, no master (torchtune, LitGPT ``bf16-true``): weights, gradients and
  ``torch.optim`` states all bf16 (states take the parameter's dtype): 8 bytes per parameter.
- ``bf16-master``: bf16 weights with an fp32 master copy and fp32 states in the optimizer. DeepSpeed
  keeps bf16 gradients and casts each partition to fp32 at the step (``grad_accum_dtype`` None);
  Megatron accumulates into an fp32 main-gradient buffer (18 bytes per parameter).
- ``fp16-master``: the same copies with fp16 weights and gradients and a loss scaler: DeepSpeed's
  ``fp16`` (``FP16_Optimizer`` / ZeRO's fp16 partitions) and Megatron's ``--fp16``, what they run on
  GPUs without bf16 (V100, T4).
- ``fp8``: Transformer Engine: the GEMMs of linear layers run in fp8; weights, master weights,
  gradients and states follow the stack's bf16 mode, norms, attention, activations and the loss
  stay bf16/fp32, and an fp8 copy of each weight (row-wise and transposed) is kept for the step.
  Not traceable without CUDA: modelled from Transformer Engine's source.

``--precision bf16`` means the chosen stack's bf16 mode (``tables/frameworks.csv``) and
``--precision fp16`` its fp16 counterpart: ``fp16-mixed``, or ``fp16-master`` on a stack whose bf16
mode is ``bf16-master`` (DeepSpeed, Megatron). A frozen base is held in the compute dtype (as peft users
load it with ``torch_dtype=bfloat16``); peft keeps its adapters in fp32 (``autocast_adapter_dtype``),
stacks that build the whole model in bf16 (torchtune, LitGPT) keep them in bf16.
"""

from __future__ import annotations

from costplan.record import record

MODES = ("fp32", "bf16-mixed", "fp16-mixed", "bf16-true", "bf16-master", "fp16-master", "fp8")
"""The precision modes a workload runs in."""
MASTER_MODES = ("bf16-master", "fp16-master")
"""Modes whose optimizer keeps an fp32 master copy of 16-bit trainable parameters (DeepSpeed, Megatron)."""
ALIASES = {"fp16": "fp16-mixed"}
NAMES = (*MODES, "bf16", "fp16")
"""What ``--precision`` accepts: the modes, ``bf16`` (the stack's bf16 mode) and ``fp16``."""

FP32 = 4
FP8_WEIGHT_COPIES = 2.0
"""Bytes per matrix weight of Transformer Engine's fp8 workspaces: a row-wise copy for the forward
GEMM and a column-wise (transposed) one for dgrad, cached across micro-batches (Megatron passes
``is_first_microbatch``)."""


def resolve(name: str, stack_bf16: str = "bf16-mixed") -> str:
    """The mode ``--precision name`` means on a stack whose ``bf16`` is ``stack_bf16``."""
    key = name.lower()
    if key == "bf16":
        return stack_bf16
    if key == "fp16" and stack_bf16 == "bf16-master":  # DeepSpeed's and Megatron's fp16: fp32 master copies
        return "fp16-master"
    key = ALIASES.get(key, key)
    if key not in MODES:
        raise ValueError(f"--precision must be one of {', '.join(NAMES)}, not {name!r}")
    return key


def peak_key(mode: str) -> str:
    """The GPU table's tensor-core peak a mode's matmuls run at."""
    return {"fp32": "fp32", "fp16-mixed": "fp16", "fp16-master": "fp16", "fp8": "fp8"}.get(mode, "bf16")


def peak_dtype(name: str) -> str:
    """The dtype column of a dense peak for a precision mode, or a dtype (fp32, bf16, fp16, fp8) as given."""
    return peak_key(name) if name in MODES else name


def compute_bytes(mode: str) -> int:
    """Bytes per element of activations, and of a frozen base as loaded."""
    return FP32 if mode == "fp32" else 2


@record
class Bytes:
    """Bytes per trained parameter of each copy a mode keeps (0 where it keeps none)."""

    weights: int
    gradients: int
    """As accumulated over backward (Megatron's fp32 main gradients under bf16-master)."""
    master: int
    states: int
    """Per element of each optimizer state buffer (``torch.optim`` takes the parameter's dtype;
    the master copy's under bf16-master). 8-bit optimizers keep their own layout."""
    gradient_copies: int
    """fp32 copies of 16-bit gradients made for the step (DeepSpeed's partition cast)."""
    autocast_copies: int
    """16-bit copies of fp32 weights that autocast makes in forward and the matmuls save for backward."""
    fp8_copies: float = 0.0


def trained_bytes(mode: str, *, fp32_main_grads: bool = False, base_mode: str = "bf16-master") -> Bytes:
    """Bytes per trained base parameter under ``mode``. ``fp32_main_grads``: Megatron's fp32
    main-gradient buffer under bf16-master; ``base_mode``: the bf16 mode fp8 runs on top of."""
    if mode == "fp8":
        base = trained_bytes(base_mode if base_mode != "fp8" else "bf16-master", fp32_main_grads=fp32_main_grads)
        return Bytes(base.weights, base.gradients, base.master, base.states, base.gradient_copies,
                     base.autocast_copies, FP8_WEIGHT_COPIES)
    if mode == "fp32":
        return Bytes(FP32, FP32, 0, FP32, 0, 0)
    if mode in ("bf16-mixed", "fp16-mixed"):
        return Bytes(FP32, FP32, 0, FP32, 0, 2)
    if mode == "bf16-true":
        return Bytes(2, 2, 0, 2, 0, 0)
    if mode in MASTER_MODES:
        if fp32_main_grads:
            return Bytes(2, FP32, FP32, FP32, 0, 0)
        return Bytes(2, 2, FP32, FP32, FP32, 0)
    raise ValueError(f"unknown precision mode {mode!r}")


def adapter_bytes(mode: str, fp32_adapters: bool = True) -> int:
    """Bytes per element of peft adapters, virtual tokens and prefixes (and their gradients and
    ``torch.optim`` states): fp32 under peft (``autocast_adapter_dtype=True``) or in fp32 mode, the
    model's dtype where the stack builds the adapters with the model (torchtune, LitGPT)."""
    if mode == "fp32" or fp32_adapters:
        return FP32
    return compute_bytes(mode)


def describe(mode: str, trains_base: bool, *, fp32_main_grads: bool = False, fp32_adapters: bool = True,
             base_mode: str = "bf16-master") -> str:
    """One line for the assumptions: what each copy is held in."""
    if mode == "fp32":
        return "fp32: weights, activations, gradients and optimizer states in fp32"
    if not trains_base:
        adapters = "fp32" if adapter_bytes(mode, fp32_adapters) == FP32 else "bf16"
        frozen = "fp16" if peak_key(mode) == "fp16" else "bf16"
        return (f"{mode}: frozen base in {frozen}, trainable parameters (adapters, virtual tokens) with their "
                f"gradients and optimizer states in {adapters}")
    b = trained_bytes(mode, fp32_main_grads=fp32_main_grads, base_mode=base_mode)
    texts = {
        "bf16-mixed": "bf16-mixed: autocast over fp32 weights (the master copy): fp32 weights, gradients and "
                      "optimizer states, bf16 copies of the weights saved for backward, bf16 activations",
        "fp16-mixed": "fp16-mixed: autocast over fp32 weights (the master copy) with loss scaling: fp32 weights, "
                      "gradients and optimizer states, fp16 copies of the weights saved for backward",
        "bf16-true": "bf16-true: pure bf16 (no master copy): weights, gradients and optimizer states in bf16",
        "bf16-master": "bf16-master: bf16 weights, fp32 master weights and optimizer states, "
                       + ("fp32 main gradients (Megatron)" if fp32_main_grads else
                          "bf16 gradients cast to fp32 for the step (DeepSpeed)"),
        "fp16-master": "fp16-master: fp16 weights with loss scaling, fp32 master weights and optimizer states, "
                       + ("fp32 main gradients (Megatron)" if fp32_main_grads else
                          "fp16 gradients cast to fp32 for the step (DeepSpeed)"),
    }
    if mode == "fp8":
        base = texts.get(base_mode, base_mode).split(": ", 1)[1]
        return (f"fp8 (Transformer Engine, modelled from its source; not traced): linear GEMMs in fp8 with "
                f"{b.fp8_copies:g} B/param of fp8 weight copies; otherwise {base_mode}: {base}; norms, attention, "
                "activations and the loss in bf16/fp32")
    return texts[mode]
