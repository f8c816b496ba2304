"""Parsing of human quantities and formatting of base units, in one place.

Base units everywhere else: bytes, FLOPs, seconds, dollars. GiB is 1024**3 bytes, GB is 1e9.
"""

from __future__ import annotations

import math
import re

GIB = 1024**3
MIB = 1024**2

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_QUANTITY = re.compile(r"^\s*([+-]?[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h|d|w)?\s*$", re.IGNORECASE)


def parse_count(text: str | int | float) -> float:
    """Parse a count such as ``100M``, ``2.5B``, ``1e9`` or ``50k`` into a number.

    Suffixes are decimal (k=1e3, M=1e6, B/G=1e9, T=1e12), as token budgets are quoted.
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = _QUANTITY.match(text)
        if not match:
            raise ValueError(f"cannot read {text!r} as a number (examples: 100M, 2.5B, 1e9)")
        value = float(match.group(1)) * _SUFFIX[match.group(2).lower()]
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def parse_duration_seconds(text: str) -> float:
    """Parse ``90m``, ``48h``, ``2d`` or a bare number of hours into seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"cannot read {text!r} as a duration (examples: 90m, 48h, 2d)")
    scale = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800, None: 3600}
    unit = match.group(2).lower() if match.group(2) else None
    return float(match.group(1)) * scale[unit]


def fmt_number(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits with thousands separators, never in scientific
    notation (tables are read by people and diffed in CI logs): 2,730 not 2.73e+03."""
    if not math.isfinite(value):
        return "never" if value > 0 else "-"
    if value == 0:
        return "0"
    rounded = float(f"{value:.{digits}g}")
    magnitude = math.floor(math.log10(abs(rounded)))
    decimals = min(max(0, digits - 1 - magnitude), 9)
    text = f"{rounded:,.{decimals}f}"
    if float(text.replace(",", "")) == 0:
        return f"{'-' if value < 0 else ''}<0.{'0' * 8}1"
    return text.rstrip("0").rstrip(".") if "." in text else text


ROUNDS_UP = 1 - 5e-4
"""A value this close under a unit shows as that unit (999.9 M is 1 B, not 1,000 M) at 3 digits."""


def _scaled(value: float, steps: list[tuple[float, str]], unit: str) -> str:
    for scale, prefix in steps:
        if abs(value) >= scale * ROUNDS_UP:
            return f"{fmt_number(value / scale)} {prefix}{unit}"
    return f"{fmt_number(value)} {unit}"


def fmt_bytes(n: float) -> str:
    """Bytes in binary units (GiB = 1024**3), as GPU memory is quoted."""
    steps = [(1024**6, "Ei"), (1024**5, "Pi"), (1024**4, "Ti"), (GIB, "Gi"), (MIB, "Mi"), (1024, "Ki")]
    return _scaled(n, steps, "B")


def fmt_count(n: float) -> str:
    """A count in decimal units: 6.74 B, 100 M."""
    steps = [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")]
    for scale, prefix in steps:
        if abs(n) >= scale * ROUNDS_UP:
            return f"{fmt_number(n / scale)} {prefix}"
    return fmt_number(n)


def fmt_flops(n: float) -> str:
    steps = [(1e24, "Y"), (1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
    return _scaled(n, steps, "FLOP")


def fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "never"
    if seconds < 1e-3:
        return f"{fmt_number(seconds * 1e6)} µs"
    if seconds < 1:
        return f"{fmt_number(seconds * 1e3)} ms"
    if seconds < 120:
        return f"{fmt_number(seconds)} s"
    if seconds < 2 * 3600:
        return f"{fmt_number(seconds / 60)} min"
    if seconds < 3 * 86400:
        return f"{fmt_number(seconds / 3600)} h"
    if seconds < 3 * 365.25 * 86400:
        return f"{fmt_number(seconds / 86400)} days"
    return f"{fmt_number(seconds / (365.25 * 86400))} years"


def fmt_usd(dollars: float) -> str:
    if dollars >= 100:
        return f"${dollars:,.0f}"
    if dollars >= 1:
        return f"${dollars:,.2f}"
    return f"${fmt_number(dollars)}"
