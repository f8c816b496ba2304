"""``torch.autocast`` as a ``TorchFunctionMode``, for tracing mixed precision on the meta device.

Autocast is a dispatch key per device type (``AutocastCUDA``, ``AutocastCPU``); meta tensors have
none, so ``torch.autocast`` does nothing to them. This mode applies the same rules one level up, in
the order autocast sits in the dispatcher (above autograd, so the casts are recorded and saved as
autocast's are):

- the ops autocast runs in the lower precision (matmuls, linear, convolutions, fused attention)
  get their floating inputs cast to the 16-bit dtype;
- the ops it runs in fp32 (softmax, log-softmax, the losses, norms, exp/log/pow...) get theirs
  cast to fp32;
- every other op runs on its inputs as they are (type promotion does the rest).

As autocast does with ``cache_enabled=True``, the cast of a leaf tensor that requires a gradient
(a trainable fp32 weight) is made once and kept until the mode exits, so each weight's 16-bit copy
lives from its first use in forward to the end of forward, and beyond when autograd saved it.
The op lists follow ``aten/src/ATen/autocast_mode.cpp`` (CUDA) for the ops transformers' models call.
"""

from __future__ import annotations

from typing import Any


def autocast_mode(dtype: Any) -> Any:
    """A context manager that casts as ``torch.autocast("cuda", dtype)`` would."""
    import torch
    from torch import nn
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_map

    F = nn.functional
    lower = {
        F.linear, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.Tensor.mm,
        torch.bmm, torch.Tensor.bmm, torch.addmm, torch.Tensor.addmm, torch.baddbmm, torch.Tensor.baddbmm,
        torch.addbmm, torch.mv, torch.addmv, torch.addr, torch.chain_matmul, torch.einsum,
        F.conv1d, F.conv2d, F.conv3d, F.scaled_dot_product_attention, F.prelu,
        *((torch._grouped_mm,) if hasattr(torch, "_grouped_mm") else ()),
        *((F.grouped_mm,) if hasattr(F, "grouped_mm") else ()),
    }
    fp32 = {
        F.softmax, torch.softmax, torch.Tensor.softmax, F.log_softmax, torch.log_softmax, torch.Tensor.log_softmax,
        F.cross_entropy, F.nll_loss, F.mse_loss, F.binary_cross_entropy_with_logits, F.kl_div,
        F.layer_norm, F.group_norm, torch.norm, torch.Tensor.norm, torch.cumsum, torch.Tensor.cumsum,
        torch.exp, torch.Tensor.exp, torch.log, torch.Tensor.log, torch.pow, torch.Tensor.pow, torch.rsqrt,
        torch.Tensor.rsqrt, torch.logsumexp, torch.Tensor.logsumexp, F.softplus, torch.erfinv,
    }

    class Autocast(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.cache: dict[int, tuple[Any, Any]] = {}

        def _cast(self, target: Any) -> Any:
            def cast(t: Any) -> Any:
                if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dtype == target:
                    return t
                if target != torch.float32 and t.dtype == torch.float64:
                    return t
                cacheable = target != torch.float32 and t.is_leaf and t.requires_grad
                if cacheable and id(t) in self.cache:
                    return self.cache[id(t)][1]
                out = t.to(target)
                if cacheable:
                    self.cache[id(t)] = (t, out)  # the source is kept so its id is not reused
                return out

            return cast

        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if func in lower:
                args, kwargs = tree_map(self._cast(dtype), (args, kwargs))
            elif func in fp32:
                args, kwargs = tree_map(self._cast(torch.float32), (args, kwargs))
            return func(*args, **kwargs)

        def __exit__(self, *exc: Any) -> Any:
            self.cache.clear()
            return super().__exit__(*exc)

    return Autocast()
