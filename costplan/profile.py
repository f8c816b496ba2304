"""Efficiency and overhead factors: the speed model's constants from ``tables/efficiency.csv``
until a calibration profile measured on real hardware, or a finished run's log, replaces them."""

from __future__ import annotations

import math
import sys
from dataclasses import field
from pathlib import Path
from typing import Any

from costplan.errors import CostplanError, shown
from costplan.record import record
from costplan.speed import Constants
from costplan.tables import number, read_json, read_table
from costplan.units import GIB


@record
class Factor:
    """One efficiency or overhead value with its range and where it comes from."""

    value: float
    low: float
    high: float
    source: str


_FACTORS: dict[int, tuple[tuple[dict[str, str], ...], dict[str, dict[str, Factor]]]] = {}


def _factors(rows: tuple[dict[str, str], ...]) -> dict[str, dict[str, Factor]]:
    """The rows as factors by kind and scope (the last row of a scope wins), built once per table:
    ``plan`` asks for a few thousand constants per search."""
    held = _FACTORS.get(id(rows))
    if held is not None and held[0] is rows:
        return held[1]
    factors: dict[str, dict[str, Factor]] = {}
    for row in rows:
        value = number(row, "value")
        if value is None:
            continue
        factors.setdefault(row["kind"], {})[row["scope"]] = Factor(
            value, number(row, "low") or value, number(row, "high") or value, row["source"])
    if len(_FACTORS) > 32:
        _FACTORS.clear()
    _FACTORS[id(rows)] = (rows, factors)
    return factors


@record
class Correction:
    """A measured step time over the speed model's prediction for the same configuration."""

    factor: float
    """Multiplies the predicted compute time (above 1: the real run was slower)."""
    model: str
    """The model it was measured on ('*' for any)."""
    method: str
    source: str
    gpu: str | None = None
    """The GPU type it was measured on (None: the profile's own device)."""


@record(kw_only=True)
class Profile:
    """Factors that turn FLOPs and bytes into seconds and reserved memory.

    The defaults come from ``tables/efficiency.csv``; a calibration profile (``costplan
    calibrate``) overrides them with measured values for the GPU type it was measured on.
    """

    name: str
    calibrated: bool
    rows: tuple[dict[str, str], ...]
    device_key: str | None = None
    """The GPU table row the profile was measured on (None: a CPU or an unknown GPU)."""
    device_name: str = ""
    measured: tuple[tuple[str, float], ...] = ()
    """Measured constants by kind (gemm_efficiency, attention_efficiency, bandwidth_efficiency,
    allocator_slack, cuda_context_bytes, power_watts, collective_bytes_per_s)."""
    corrections: tuple[Correction, ...] = field(default=())

    def value(self, kind: str, *scopes: str) -> Factor:
        """A table constant for the most specific of ``scopes`` that has a row (else ``*``)."""
        return self._row(kind, scopes)

    def _row(self, kind: str, scopes: tuple[str, ...]) -> Factor:
        found = _factors(self.rows).get(kind, {})
        for scope in (*scopes, "*"):
            factor = found.get(scope)
            if factor is not None:
                return factor
        raise LookupError(f"tables/efficiency.csv has no {kind} row")

    def _measured(self, kind: str, gpu_key: str | None) -> float | None:
        if gpu_key is not None and gpu_key != self.device_key:
            return None
        return dict(self.measured).get(kind)

    def factor(self, kind: str, gpu_key: str | None = None, arch: str | None = None,
               kernels: str | None = None) -> Factor:
        """A constant for a GPU: measured on it, else the table's row for the GPU, its architecture
        with the stack's kernels (``hopper-fused``), its architecture, or any."""
        value = self._measured(kind, gpu_key)
        if value is not None:
            return Factor(value, value * 0.95, value * 1.05, f"measured ({self.name})")
        scopes = (gpu_key, f"{arch}-{kernels}" if arch and kernels else None, arch)
        return self._row(kind, tuple(s for s in scopes if s))

    def constants(self, gpu_key: str | None, runtime: str, kernels: str = "eager") -> Constants:
        return Constants(
            bandwidth_efficiency=self.factor("bandwidth_efficiency", gpu_key).value,
            elementwise_hidden=self._row("elementwise_hidden", (kernels,)).value,
            elementwise_ffn=self._row("elementwise_ffn", (kernels,)).value,
            dispatch_seconds=self._row("dispatch_seconds", (runtime,)).value,
        )

    def correction(self, model: str, method: str, gpu_key: str) -> Correction | None:
        """The calibration that applies to this model, method and GPU: one learned from the user's own
        run logs first, then the profile's measured steps; a model's own before any model's."""
        for wanted in (model, "*"):
            for c in self.corrections:
                if c.model == wanted and c.method == method and (c.gpu or self.device_key) == gpu_key:
                    return c
        return None

    def correction_factor(self, model: str, method: str, gpu_key: str) -> float:
        """The measured over predicted step time that scales the compute (1 without a calibration)."""
        found = self.correction(model, method, gpu_key)
        return found.factor if found else 1.0

    def with_run_logs(self, gpu_key: str) -> Profile:
        """This profile plus the corrections ``calibrate --from-log`` saved for the GPU type."""
        if not runs_path(gpu_key).is_file():  # most users have none: costplan.runlogs is not imported
            return self
        from dataclasses import replace

        from costplan.runlogs import load_corrections

        learned = load_corrections(gpu_key)
        return replace(self, corrections=learned + self.corrections) if learned else self

    def time_spread(self) -> Factor:
        return self._row("time_spread", ())

    def cuda_context_bytes(self) -> float:
        measured = dict(self.measured).get("cuda_context_bytes")
        return measured if measured is not None else self._row("cuda_context_gib", ()).value * GIB

    def allocator_slack(self, expandable: bool = False) -> float:
        """The caching allocator's reserve above its allocated peak, as a share of it: with its default
        fixed-size blocks, or with ``expandable_segments:True`` (one growing segment, little fragmentation)."""
        kind = _slack_kind(expandable)
        measured = dict(self.measured).get(kind)
        return measured if measured is not None else self._row(kind, ()).value

    def power_watts(self, gpu_key: str) -> float | None:
        return self._measured("power_watts", gpu_key)

    def board_watts(self, device: Any) -> float:
        """A GPU's board power: measured by calibration, else its TDP (0 where the table lists none)."""
        return self.power_watts(device.key) or device.tdp_watts

    def collective_bytes_per_s(self, gpu_key: str) -> float | None:
        return self._measured("collective_bytes_per_s", gpu_key)

    def describe(self, gpu_key: str | None = None) -> str:
        if not self.calibrated:
            return "speed model constants from tables/efficiency.csv (not calibrated on this GPU)"
        if self.device_key is None:
            return f"{self.name}: measured on a CPU, so GPU projections keep the table's constants"
        if gpu_key is not None and self.device_key != gpu_key:
            return f"{self.name} is for {self.device_key}; {gpu_key} keeps the table's constants"
        return f"speed model calibrated: {self.name}"


def _slack_kind(expandable: bool) -> str:
    """The constant (``tables/efficiency.csv`` kind, and measured key) of an allocator mode's slack."""
    return "allocator_slack_expandable" if expandable else "allocator_slack"


def default_profile() -> Profile:
    return Profile(name="defaults", calibrated=False, rows=read_table("efficiency"))


PROFILE_VERSION = 1
"""The calibration profile schema ``check_profile`` accepts (see its docstring)."""


class ProfileError(CostplanError):
    """A calibration profile that is not one, or whose fields are missing, mistyped or out of range."""


def load_profile(path: str | Path) -> Profile:
    """A calibration profile written by ``costplan calibrate``, checked against the schema."""
    path = Path(path)
    data = read_json(path, "calibration profile")
    try:
        check_profile(data)
    except ProfileError as exc:
        raise ProfileError(f"{shown(path)} {exc}.") from None
    try:
        return _from_profile_data(data)
    except (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:  # an unknown GPU key
        raise ProfileError(f"{shown(path)} is a damaged calibration profile ({type(exc).__name__}: {exc}).") from exc


def check_profile(data: Any) -> None:
    """Check a profile (version 1) field by field; raise ``ProfileError`` naming the first bad one.

    Version 1 holds: ``version`` (1), ``created`` (ISO date), ``device`` (``kind`` cuda or cpu,
    ``name``), ``gpu_key`` (a GPU table key or null), ``precision``; ``gemm``, a list of points
    (``dtype``, ``m``/``n``/``k``, ``seconds``, ``flops_per_second``, optionally ``spread`` with
    ``min``/``median``/``max`` seconds; or ``unsupported``); optionally
    ``copy_bandwidth_bytes_per_second``, ``attention`` (``seq_len``, ``seconds``,
    ``flops_per_second``), ``methods`` (per method: ``seconds``, ``predicted_seconds``, ``flops``,
    ``achieved_flops_per_second``, ``max_allocated``/``max_reserved``/``analytic_peak`` bytes,
    ``power_watts``, ``context_bytes``), ``allocator`` (``default`` or ``expandable``: the caching
    allocator's mode, which the measured reserve belongs to), ``collectives`` (bus bytes per second per message size),
    ``corrections`` (``factor``, ``model``, ``method``, ``source``). Every number must be finite
    and in a physical range, so no measurement can turn an estimate negative, infinite or NaN.
    """
    if not isinstance(data, dict) or data.get("version") != PROFILE_VERSION \
            or not {"device", "methods", "gemm"} <= set(data):
        raise ProfileError(f"is not a costplan calibration profile (version {PROFILE_VERSION})")
    check = _Fields()
    device = check.mapping(data, "device")
    check.choice(device, "device.kind", ("cuda", "cpu"))
    check.text(device, "device.name")
    check.text(data, "created")
    if data.get("gpu_key") is not None:
        from costplan.hardware import gpu_names

        check.choice(data, "gpu_key", tuple(gpu_names()))
    check.choice(data, "precision", ("fp32", "tf32", "bf16", "fp16", "fp8"), required=False)
    check.choice(data, "allocator", ("default", "expandable"), required=False)
    for i, point in enumerate(check.sequence(data, "gemm")):
        where = f"gemm[{i}]"
        point = check.mapping({where: point}, where)
        check.choice(point, f"{where}.dtype", ("fp32", "tf32", "bf16", "fp16", "fp8"))
        if "unsupported" in point:
            check.text(point, f"{where}.unsupported")
            continue
        for size in ("m", "n", "k"):
            check.number(point, f"{where}.{size}", 1, 1e7, required=False, integer=True)
        check.number(point, f"{where}.seconds", 0, 1e6, low_open=True, required=False)
        check.number(point, f"{where}.flops_per_second", *_THROUGHPUT)
        _check_spread(check, point, where)
    check.number(data, "copy_bandwidth_bytes_per_second", *_BANDWIDTH, required=False)
    attention = check.mapping(data, "attention", required=False)
    if attention:
        check.number(attention, "attention.seq_len", 1, 1e7, integer=True, required=False)
        check.number(attention, "attention.seconds", 0, 1e6, low_open=True, required=False)
        check.number(attention, "attention.flops_per_second", *_THROUGHPUT, required=False)
    for method, entry in check.mapping(data, "methods").items():
        where = f"methods.{method}"
        entry = check.mapping({where: entry}, where)
        for name in ("seconds", "predicted_seconds"):
            check.number(entry, f"{where}.{name}", 0, 1e6, low_open=True, required=False)
        check.number(entry, f"{where}.flops", 0, 1e24, low_open=True, required=False)
        check.number(entry, f"{where}.achieved_flops_per_second", *_THROUGHPUT, required=False)
        for name in ("max_allocated", "max_reserved", "analytic_peak"):
            check.number(entry, f"{where}.{name}", 0, 2**50, low_open=True, required=False)
        check.number(entry, f"{where}.context_bytes", 0, 2**40, required=False)
        check.number(entry, f"{where}.power_watts", 0, 10_000, low_open=True, required=False)
        check.number(entry, f"{where}.joules_per_token", 0, 1e9, required=False)
        _check_spread(check, entry, where)
        allocated, reserved = entry.get("max_allocated"), entry.get("max_reserved")
        if allocated and reserved is not None and not allocated <= reserved <= 11 * allocated:
            raise ProfileError(f"is a damaged calibration profile: {where}.max_reserved ({reserved:.4g}) must be "
                               f"from max_allocated ({allocated:.4g}) to 11 times it (allocator slack 0 to 1000%)")
        if entry.get("seconds") and entry.get("predicted_seconds"):
            ratio = entry["seconds"] / entry["predicted_seconds"]
            if not _CORRECTION[0] <= ratio <= _CORRECTION[1]:
                raise ProfileError(f"is a damaged calibration profile: {where}.seconds over predicted_seconds "
                                   f"({ratio:.3g}) is outside {_CORRECTION[0]:g} to {_CORRECTION[1]:g}")
    for i, point in enumerate(check.sequence(data, "collectives", required=False)):
        where = f"collectives[{i}]"
        point = check.mapping({where: point}, where)
        check.number(point, f"{where}.bytes", 1, 2**50, required=False)
        check.number(point, f"{where}.all_reduce_bus_bytes_per_second", *_BANDWIDTH)
        check.number(point, f"{where}.all_gather_bus_bytes_per_second", *_BANDWIDTH, required=False)
        check.number(point, f"{where}.world_size", 1, 1e7, integer=True, required=False)
    for i, item in enumerate(check.sequence(data, "corrections", required=False)):
        where = f"corrections[{i}]"
        item = check.mapping({where: item}, where)
        check.number(item, f"{where}.factor", *_CORRECTION)
        for name in ("model", "method", "source"):
            check.text(item, f"{where}.{name}")


_THROUGHPUT = (1e3, 1e18)
"""FLOP/s a measurement may report: from a kiloFLOP/s to an exaFLOP/s."""
_BANDWIDTH = (1e3, 1e15)
"""Bytes per second: from a kB/s to a PB/s."""
_CORRECTION = (0.01, 100.0)
"""A measured step over the predicted one: the speed model is not off by more than 100x."""


def _check_spread(check: _Fields, entry: dict[str, Any], where: str) -> None:
    spread = check.mapping(entry, f"{where}.spread", required=False)
    if not spread:
        return
    values = [check.number(spread, f"{where}.spread.{k}", 0, 1e6, low_open=True) for k in ("min", "median", "max")]
    if not values[0] <= values[1] <= values[2]:
        raise ProfileError(f"is a damaged calibration profile: {where}.spread must have min <= median <= max")


class _Fields:
    """Typed access to a profile's fields; the first bad one raises ``ProfileError`` by its dotted name."""

    @staticmethod
    def _get(container: dict[str, Any], name: str, required: bool) -> Any:
        key = name.rsplit(".", 1)[-1] if name not in container else name
        if key not in container or container[key] is None:
            if required:
                raise ProfileError(f"is a damaged calibration profile: {name} is missing")
            return None
        return container[key]

    @staticmethod
    def _bad(name: str, wanted: str, value: Any) -> ProfileError:
        return ProfileError(f"is a damaged calibration profile: {name} must be {wanted}, got {shown(value)}")

    def mapping(self, container: dict[str, Any], name: str, required: bool = True) -> dict[str, Any]:
        value = self._get(container, name, required)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._bad(name, "an object", value)
        return value

    def sequence(self, container: dict[str, Any], name: str, required: bool = True) -> list[Any]:
        value = self._get(container, name, required)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._bad(name, "a list", value)
        return value

    def text(self, container: dict[str, Any], name: str) -> str:
        value = self._get(container, name, True)
        if not isinstance(value, str) or not value.strip() or len(value) > 1000:
            raise self._bad(name, "a text", value)
        return value

    def choice(self, container: dict[str, Any], name: str, choices: tuple[str, ...], required: bool = True) -> None:
        value = self._get(container, name, required)
        if value is not None and value not in choices:
            raise self._bad(name, "one of " + ", ".join(choices[:12]) + ("..." if len(choices) > 12 else ""),
                            value)

    def number(self, container: dict[str, Any], name: str, low: float, high: float, *, low_open: bool = False,
               required: bool = True, integer: bool = False) -> float | None:
        value = self._get(container, name, required)
        if value is None:
            return None
        kind = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or (integer and isinstance(value, float) and not value.is_integer()):
            raise self._bad(name, kind, value)
        if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
            bound = "above" if low_open else "from"
            raise self._bad(name, f"{kind} {bound} {low:g} up to {high:g}", value)
        return float(value)


def _from_profile_data(data: dict) -> Profile:
    import statistics

    from costplan.hardware import gpu

    device = data["device"]
    name = f"calibrated on {device['name']}, {data['created']}"
    rows = read_table("efficiency")
    corrections = tuple(Correction(float(c["factor"]), c["model"], c["method"], c["source"])
                        for c in data.get("corrections") or [])
    if device["kind"] != "cuda":
        return Profile(name=name, calibrated=True, rows=rows, device_name=device["name"], corrections=corrections)
    key = data.get("gpu_key")
    measured: dict[str, float] = {}
    if key:
        spec = gpu(key)
        best = measured_matmul_peaks(data)
        precision = "bf16" if "bf16" in best else data.get("precision", "bf16")
        if precision in best and precision in spec.peak_flops:
            measured["gemm_efficiency"] = min(best[precision] / spec.peak_flops[precision], 1.0)
        if data.get("copy_bandwidth_bytes_per_second"):
            measured["bandwidth_efficiency"] = min(
                data["copy_bandwidth_bytes_per_second"] / spec.bandwidth_bytes_per_s, 1.0)
        attention = data.get("attention") or {}
        if attention.get("flops_per_second") and precision in spec.peak_flops:
            # The benchmark counts causal attention's FLOPs in full; the kernel runs half of them.
            measured["attention_efficiency"] = min(0.5 * attention["flops_per_second"] / spec.peak_flops[precision],
                                                   1.0)
    else:
        name += " (unknown GPU: its measurements cannot be matched to the GPU table)"
    slacks = [e["max_reserved"] / e["max_allocated"] - 1 for e in data["methods"].values()
              if e.get("max_allocated") and e.get("max_reserved")]
    contexts = [e["context_bytes"] for e in data["methods"].values() if e.get("context_bytes")]
    powers = [e["power_watts"] for e in data["methods"].values() if e.get("power_watts")]
    collective = max((p["all_reduce_bus_bytes_per_second"] for p in data.get("collectives") or []), default=None)
    if slacks:  # the slack of the allocator mode the calibration ran under
        measured[_slack_kind(data.get("allocator") == "expandable")] = statistics.median(slacks)
    if contexts:
        measured["cuda_context_bytes"] = max(contexts)
    if powers:
        measured["power_watts"] = statistics.mean(powers)
    if collective:
        measured["collective_bytes_per_s"] = collective
    for method, entry in data["methods"].items():
        if entry.get("predicted_seconds") and entry.get("seconds"):
            corrections += (Correction(entry["seconds"] / entry["predicted_seconds"], "*", method,
                                       f"calibration step ({str(data.get('calibration_model', '?'))[:100]})"),)
    return Profile(name=name, calibrated=True, rows=rows, device_key=key, device_name=device["name"],
                   measured=tuple(measured.items()), corrections=corrections)


def cache_dir() -> Path:
    """Where profiles are saved: ``$COSTPLAN_CACHE`` or ``~/.cache/costplan``."""
    import os

    configured = os.environ.get("COSTPLAN_CACHE")
    if configured:
        return Path(configured)
    try:
        return Path.home() / ".cache" / "costplan"
    except RuntimeError:  # no home directory
        return Path(".costplan-cache")


def runs_path(gpu_key: str) -> Path:
    """Where ``calibrate --from-log`` keeps what it learned for a GPU type (``costplan.runlogs``)."""
    return cache_dir() / "runs" / f"{gpu_key}.json"


def measured_matmul_peaks(data: dict[str, Any]) -> dict[str, float]:
    """The best matmul throughput a profile measured, per dtype (FLOP/s)."""
    best: dict[str, float] = {}
    for point in data.get("gemm") or []:
        if "flops_per_second" in point:
            best[point["dtype"]] = max(best.get(point["dtype"], 0.0), point["flops_per_second"])
    return best


def saved_profile_path(gpu_key: str) -> Path | None:
    """The newest valid profile saved by ``costplan calibrate`` for this GPU type, if any.

    A file in the cache that is not a valid profile (damaged, hand-edited, not a file at all) is
    skipped with a one-line warning on stderr; an unreadable or misplaced cache is no cache.
    """
    folder = cache_dir() / "profiles"
    try:
        if not folder.is_dir():
            return None
        paths = sorted(folder.glob("*.json"))
    except OSError:
        return None
    best: tuple[str, Path] | None = None
    for path in paths:
        try:
            data = read_json(path, "calibration profile")
            check_profile(data)
        except CostplanError as exc:
            _warn_once(path, f"skipped the saved profile {shown(path)}: {str(exc).rstrip('.')}")
            continue
        if data.get("gpu_key") == gpu_key and (best is None or data["created"] > best[0]):
            best = (data["created"], path)
    return best[1] if best else None


_WARNED: set[tuple[str, str]] = set()


def _warn_once(path: Path, message: str) -> None:
    """One line on stderr per bad file and message in a process (compare estimates seven times)."""
    key = (str(path), message)
    if key not in _WARNED:
        _WARNED.add(key)
        print(f"Warning: {' '.join(message.split())}", file=sys.stderr)


def saved_profile_for(gpu_key: str) -> Profile | None:
    path = saved_profile_path(gpu_key)
    if path is None:
        return None
    try:
        return load_profile(path)
    except CostplanError as exc:  # changed since it was checked, or names a GPU key it cannot use
        _warn_once(path, f"skipped the saved profile {shown(path)}: {str(exc).rstrip('.')}")
        return None
