"""costplan: compute cost and feasibility planning for adapting large language models.

    >>> import costplan
    >>> est = costplan.estimate("7b", "lora", gpu="a100", tokens=100e6)
    >>> est.gpus, est.memory.peak_bytes, est.cost_usd
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from costplan.api import Estimate

__all__ = ["estimate", "Estimate"]


def estimate(*args: Any, **kwargs: Any) -> Estimate:
    """Estimate one approach; see :func:`costplan.api.estimate`."""
    from costplan.api import estimate as run

    return run(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "Estimate":
        from costplan.api import Estimate

        return Estimate
    raise AttributeError(name)
