"""Optimizer state and step-time temporaries, per trainable tensor.

States live in fp32 (on the fp32 master copy under mixed precision). Conventions for the
transient memory of a step:
- ``adamw`` is PyTorch's default foreach implementation: ``_foreach_sqrt`` allocates one fp32
  tensor the size of all trainable parameters during the step.
- ``adamw-fused`` (``fused=True``) and bitsandbytes' 8-bit kernels update in place.
- 8-bit Adam (bitsandbytes) keeps two uint8 states with one fp32 absmax per 256 values; tensors
  under 4096 elements stay in 32-bit. The paged variants hold the same bytes but may spill
  to host memory under pressure; they are planned as resident.
- Adafactor (no first moment) factors the second moment of matrices into row and column
  vectors; vectors keep a full second moment; one parameter is updated at a time.
"""

from __future__ import annotations

from collections.abc import Callable

from costplan.errors import unknown_name
from costplan.methods import Tensor2D
from costplan.record import record

FP32 = 4


def _adam(t: Tensor2D) -> float:
    return 2 * FP32 * t.elements


def _adam_8bit(t: Tensor2D) -> float:
    if t.rows * t.cols < 4096:
        return _adam(t)
    return 2 * t.elements * (1 + FP32 / 256)


def _adafactor(t: Tensor2D) -> float:
    if t.rows == 1 or t.cols == 1:
        return FP32 * t.elements
    return FP32 * (t.rows + t.cols) * t.count


@record
class Optimizer:
    name: str
    state: Callable[[Tensor2D], float]
    """State bytes of one trainable tensor."""
    foreach_temp_bytes: float
    """Temporary bytes per trainable element during the step (all at once)."""
    per_tensor_temp: bool = False
    """The step's temporary is one tensor's size at a time (fp32)."""
    note: str = ""
    streamed_bytes: float = 84.0
    """Bytes the step reads and writes per trainable fp32 element (weight, gradient, states and
    temporaries), which makes its time: it is memory-bound. Counted from the tensors each kernel of a
    steady-state step reads and writes (``tests/test_memory.py`` traces torch's own steps); states
    that take the parameter's dtype scale with it."""
    quantized_states: bool = False
    """States kept in 8 bits whatever the parameter's dtype (bitsandbytes); otherwise they take the
    parameter's dtype (``torch.zeros_like``), fp32 for fp32 parameters."""
    paged: bool = False
    """bitsandbytes' paged states (tensors of 10^5 elements or more) live in CUDA managed memory,
    which ``torch.cuda.max_memory_allocated`` does not count and which pages to host memory under
    pressure."""
    fixed_dtype: bool = False
    """States in fp32 whatever the parameter's dtype (bitsandbytes' 32-bit optimizers)."""

    def state_bytes_in(self, tensors: tuple[Tensor2D, ...], param_bytes: int) -> float:
        """State bytes for parameters of ``param_bytes`` per element (not fp32: modules_to_save copies)."""
        scale = 1.0 if self.quantized_states or self.fixed_dtype else param_bytes / FP32
        return scale * self.state_bytes(tensors)

    def step_temp_bytes_in(self, tensors: tuple[Tensor2D, ...], param_bytes: int) -> float:
        return param_bytes / FP32 * self.step_temp_bytes(tensors)

    def state_bytes(self, tensors: tuple[Tensor2D, ...]) -> float:
        return sum(self.state(t) for t in tensors)

    def step_bytes_per_param(self, compute_bytes: int, master: bool, element_bytes: int = FP32) -> float:
        """Bytes streamed per trainable parameter of ``element_bytes`` (the dtype the step updates: the
        fp32 master copy, a pure-bf16 weight, an adapter); with fp32 master weights also the 16-bit
        gradient's copy to fp32 and the updated weight's copy back."""
        scale = 1.0 if self.quantized_states or self.fixed_dtype else element_bytes / FP32
        return self.streamed_bytes * scale + (2 * (compute_bytes + FP32) if master else 0.0)

    def step_temp_bytes(self, tensors: tuple[Tensor2D, ...]) -> float:
        if self.per_tensor_temp:
            return max((FP32 * t.rows * t.cols for t in tensors), default=0.0)
        return self.foreach_temp_bytes * sum(t.elements for t in tensors)


OPTIMIZERS: dict[str, Optimizer] = {o.name: o for o in (
    # Streamed bytes per fp32 element of a steady-state step, as torch 2.13's kernels read and write
    # them: fused AdamW reads weight, gradient and both states and writes weight and states (28);
    # foreach AdamW runs eight passes (weight decay, lerp, mul, addcmul, sqrt, div, add, addcdiv:
    # 56 read, 28 written); foreach SGD reads weight and gradient and writes the weight (12); with
    # momentum it also scales and adds into the buffer (32).
    Optimizer("adamw", _adam, FP32, note="AdamW (PyTorch foreach): fp32 m and v", streamed_bytes=84.0),
    Optimizer("adamw-fused", _adam, 0.0, note="AdamW fused: fp32 m and v, updated in place", streamed_bytes=28.0),
    Optimizer("adamw-8bit", _adam_8bit, 0.0, note="8-bit AdamW (bitsandbytes, block 256)", streamed_bytes=16.0,
              quantized_states=True),
    Optimizer("paged-adamw", _adam, 0.0, note="paged AdamW (bitsandbytes): fp32 m and v in managed memory",
              streamed_bytes=28.0, paged=True, fixed_dtype=True),
    Optimizer("paged-adamw-8bit", _adam_8bit, 0.0, note="paged 8-bit AdamW (bitsandbytes): states in managed memory",
              streamed_bytes=16.0, quantized_states=True, paged=True),
    Optimizer("sgd", lambda t: 0.0, 0.0, note="SGD without momentum: no state", streamed_bytes=12.0),
    Optimizer("sgd-momentum", lambda t: FP32 * t.elements, 0.0, note="SGD with momentum: fp32 buffer",
              streamed_bytes=32.0),
    Optimizer("adafactor", _adafactor, 0.0, per_tensor_temp=True,
              note="Adafactor: factored fp32 second moment, no first moment", streamed_bytes=24.0),
)}


IN_BACKWARD = "+in-backward"
"""Suffix of an optimizer stepped inside backward (``adamw+in-backward``: torchtune's ``optimizer_in_bwd``)."""


def optimizer(name: str) -> Optimizer:
    try:
        return OPTIMIZERS[name.lower().removesuffix(IN_BACKWARD)]
    except KeyError:
        raise unknown_name("optimizer", name, OPTIMIZERS) from None


def split_in_backward(name: str) -> tuple[str, bool]:
    """``adamw+in-backward`` into (``adamw``, True)."""
    key = name.lower()
    return key.removesuffix(IN_BACKWARD), key.endswith(IN_BACKWARD)
