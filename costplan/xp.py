"""Arithmetic that works on one configuration (Python numbers) and on many (numpy arrays) alike.

The engine's formulas are written once with these helpers. With plain numbers they stay in pure
Python and never import numpy, so ``costplan estimate`` starts fast; when the plan search passes
arrays, they broadcast with numpy.
"""

from __future__ import annotations

import functools
import math
from typing import Any

_SCALARS = (int, float, bool)


def is_scalar(*values: Any) -> bool:
    return all(type(v) in _SCALARS for v in values)


def where(condition: Any, yes: Any, no: Any) -> Any:
    """``yes`` where ``condition`` holds, else ``no``."""
    if is_scalar(condition):
        return yes if condition else no
    import numpy as np

    return np.where(condition, yes, no)


def maximum(*values: Any) -> Any:
    if is_scalar(*values):
        return max(values)
    import numpy as np

    return functools.reduce(np.maximum, values)


def minimum(*values: Any) -> Any:
    if is_scalar(*values):
        return min(values)
    import numpy as np

    return functools.reduce(np.minimum, values)


def ceil(value: Any) -> Any:
    if is_scalar(value):
        return math.ceil(value)
    import numpy as np

    return np.ceil(value)


def sqrt(value: Any) -> Any:
    if is_scalar(value):
        return math.sqrt(value)
    import numpy as np

    return np.sqrt(value)


def log2(value: Any) -> Any:
    if is_scalar(value):
        return math.log2(value)
    import numpy as np

    return np.log2(value)


def soft_max(a: Any, b: Any, sharpness: float) -> Any:
    """A smooth maximum, ``(a^k + b^k)^(1/k)``: two costs that mostly overlap (compute and memory
    traffic of one kernel; GPU time and host dispatch time) take a little longer than the larger."""
    if is_scalar(a, b):
        return (a**sharpness + b**sharpness) ** (1.0 / sharpness)
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if sharpness == 3.0:  # products and a cube root: a third of the time of float powers
        return np.cbrt(a * a * a + b * b * b)
    if sharpness == 4.0:
        a, b = a * a, b * b
        return np.sqrt(np.sqrt(a * a + b * b))
    return (a**sharpness + b**sharpness) ** (1.0 / sharpness)
