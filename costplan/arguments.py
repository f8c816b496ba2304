"""The bounds of every numeric argument, shared by the command line and the Python API.

A value is finite, within a stated range, and of the right kind; strings are read as the
command line reads them (``tokens="100M"``, ``gpus="2"``). The ranges accept real work (128K-token
contexts, 15T-token pretraining, 100k-GPU clusters) and refuse what would overflow a formula or
mean nothing (NaN, infinity, 2**63 GPUs, a 0.5-token run). Every refusal is a ``CostplanError``
naming the argument as the command line spells it.
"""

from __future__ import annotations

import math
from typing import Any

from costplan.errors import CostplanError, shown
from costplan.record import record
from costplan.units import parse_count

MAX_SEQ = 10_000_000
"""Tokens in one sequence, prompt or generation (the longest published contexts are 10M)."""
MAX_BATCH = 1_000_000
MAX_GPUS = 1_000_000
MAX_TOKENS = 1e16
"""Training or generated tokens: 15T-token pretraining runs, times 600."""


@record
class Bound:
    """A finite number in [low, high] (strictly above ``low`` when ``low_open``)."""

    low: float
    high: float
    integer: bool = False
    low_open: bool = False
    units: bool = False
    """Read strings with suffixes (100M, 2.5B) as the command line does."""
    unit: str = ""
    """What the number counts, for the message (seconds)."""

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        low = "above" if self.low_open else "from"
        return f"{kind} {low} {self.low:,.10g} up to {self.high:,.10g}" + (f" {self.unit}" if self.unit else "")

    def __call__(self, name: str, value: Any) -> Any:
        flag = "--" + FLAGS.get(name, name).replace("_", "-")
        if isinstance(value, bool) or value is None:
            raise CostplanError(f"{flag} must be {self.describe()}, got {value!r}.")
        if isinstance(value, str):
            try:
                number = parse_count(value[:200]) if self.units else float(value[:200])
            except ValueError as exc:
                raise CostplanError(f"{flag}: {exc}.") from None
        elif isinstance(value, (int, float)):
            try:
                number = float(value)
            except OverflowError:
                raise CostplanError(f"{flag} must be {self.describe()}, got an integer of {len(str(value))} "
                                    "digits.") from None
        else:
            try:  # numpy scalars and other numbers
                number = float(value)
            except (TypeError, ValueError):
                raise CostplanError(f"{flag} must be {self.describe()}, not {type(value).__name__}.") from None
        if not math.isfinite(number):
            raise CostplanError(f"{flag} must be a finite number, got {value!r}.")
        below = number <= self.low if self.low_open else number < self.low
        if below or number > self.high:
            raise CostplanError(f"{flag} must be {self.describe()}, got {shown(value)}.")
        if self.integer:
            if not number.is_integer():
                raise CostplanError(f"{flag} must be a whole number, got {shown(value)}.")
            return int(number)
        return number + 0.0  # -0.0 becomes 0.0


FLAGS = {"deadline_seconds": "deadline", "budget_usd": "budget"}
"""Arguments whose command-line option has another name."""

TOKENS = Bound(1, MAX_TOKENS, units=True)
SEQ = Bound(1, MAX_SEQ, integer=True, units=True)

ESTIMATE: dict[str, Bound] = {
    "gpus": Bound(1, MAX_GPUS, integer=True, units=True),
    "tokens": TOKENS,
    "epochs": Bound(0.001, 10_000),
    "seq_len": SEQ,
    "micro_batch": Bound(1, MAX_BATCH, integer=True, units=True),
    "global_batch": Bound(1, 100_000_000, integer=True, units=True),
    "global_batch_tokens": Bound(1, 1e12, units=True),
    "zero": Bound(0, 3, integer=True),
    "tp": Bound(1, 64, integer=True),
    "pp": Bound(1, 1024, integer=True),
    "cp": Bound(1, 64, integer=True),
    "price": Bound(0, 10_000),
    "lora_rank": Bound(1, 65_536, integer=True),
    "lora_dropout": Bound(0, 0.99),
    "lora_alpha": Bound(0, 1e6, low_open=True),
    "electricity": Bound(0, 100, unit="dollars per kWh"),
    "hardware_price": Bound(0, 10_000, unit="dollars per GPU-hour"),
    "virtual_tokens": Bound(1, 100_000, integer=True),
    "prompt_len": SEQ,
    "gen_len": SEQ,
    "source_len": SEQ,
    "target_len": SEQ,
    "pue": Bound(1.0, 3.0),
    "serve_tokens": TOKENS,
    "serve_batch": Bound(1, MAX_BATCH, integer=True, units=True),
    "startup_seconds": Bound(0, 1e7),
    "goodput": Bound(0.05, 1.0),
    "virtual_stages": Bound(1, 1024, integer=True),
}
"""``costplan estimate``'s numeric options; None means "auto" wherever the option has no default."""

PLAN: dict[str, Bound] = {
    "tokens": TOKENS,
    "epochs": ESTIMATE["epochs"],
    "deadline_seconds": Bound(0, 100 * 365 * 86400, low_open=True, unit="seconds (100 years)"),
    "budget_usd": Bound(0, 1e12, low_open=True, unit="dollars"),
    "max_gpus": Bound(1, 16_384, integer=True),
    "seq_len": SEQ,
    "global_batch": ESTIMATE["global_batch"],
    "price": ESTIMATE["price"],
    "lora_rank": ESTIMATE["lora_rank"],
    "startup_seconds": ESTIMATE["startup_seconds"],
    "electricity": ESTIMATE["electricity"],
    "hardware_price": ESTIMATE["hardware_price"],
}

COMPARE: dict[str, Bound] = {
    "tokens": TOKENS, "cpt_tokens": TOKENS, "eval_tokens": TOKENS, "serve_tokens": TOKENS,
    "serve_batch": ESTIMATE["serve_batch"],
}

CRAM: dict[str, Bound] = {
    "hours": Bound(0.1, 24 * 365),
    "dataset_tokens": TOKENS,
    "seq_len": SEQ,
}


def checked(bounds: dict[str, Bound], values: dict[str, Any], auto: frozenset[str] | set[str] = frozenset()
            ) -> dict[str, Any]:
    """``values`` with every bounded one converted and checked; None is kept only for the names
    in ``auto`` (chosen by costplan, or absent)."""
    out = dict(values)
    for name, value in values.items():
        if value is None and name in auto:
            continue
        bound = bounds.get(name)
        if bound is not None:
            out[name] = bound(name, value)
    return out


def text(name: str, value: Any, choices: tuple[str, ...] | None = None, *, optional: bool = False) -> str | None:
    """A name argument (GPU, provider, precision...): a non-empty string, one of ``choices`` if given."""
    flag = "--" + name.replace("_", "-")
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise CostplanError(f"{flag} must be a name" + (f" (one of {', '.join(choices)})" if choices else "")
                            + f", not {shown(value)}.")
    if choices is not None and value.lower() not in choices:
        raise CostplanError(f"{flag} must be one of {', '.join(choices)}, not {shown(value)}.")
    return value.lower() if choices is not None else value


def flag(name: str, value: Any, *, optional: bool = False) -> bool | None:
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise CostplanError(f"--{name.replace('_', '-')} must be True or False, not {shown(value)}.")
    return value
