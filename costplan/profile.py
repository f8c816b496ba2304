"""Efficiency and overhead factors: the speed model's constants from ``tables/efficiency.csv``
until a calibration profile measured on real hardware, or a finished run's log, replaces them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costplan.speed import Constants
from costplan.tables import number, read_json, read_table
from costplan.units import GIB


@dataclass(frozen=True, slots=True)
class Factor:
    """One efficiency or overhead value with its range and where it comes from."""

    value: float
    low: float
    high: float
    source: str


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, kw_only=True, slots=True)
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
        found = {row["scope"]: row for row in self.rows if row["kind"] == kind}
        for scope in (*scopes, "*"):
            row = found.get(scope)
            if row is not None:
                value = number(row, "value")
                assert value is not None
                return Factor(value, number(row, "low") or value, number(row, "high") or value, row["source"])
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

    def with_run_logs(self, gpu_key: str) -> Profile:
        """This profile plus the corrections ``calibrate --from-log`` saved for the GPU type."""
        from dataclasses import replace

        from costplan.runlogs import load_corrections

        learned = load_corrections(gpu_key)
        return replace(self, corrections=learned + self.corrections) if learned else self

    def time_spread(self) -> Factor:
        return self._row("time_spread", ())

    def cuda_context_bytes(self) -> float:
        measured = dict(self.measured).get("cuda_context_bytes")
        return measured if measured is not None else self._row("cuda_context_gib", ()).value * GIB

    def allocator_slack(self) -> float:
        measured = dict(self.measured).get("allocator_slack")
        return measured if measured is not None else self._row("allocator_slack", ()).value

    def power_watts(self, gpu_key: str) -> float | None:
        return self._measured("power_watts", gpu_key)

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


def default_profile() -> Profile:
    return Profile(name="defaults", calibrated=False, rows=read_table("efficiency"))


def load_profile(path: str | Path) -> Profile:
    """A calibration profile written by ``costplan calibrate``."""
    from costplan.errors import CostplanError

    path = Path(path)
    data = read_json(path, "calibration profile")
    if not isinstance(data, dict) or data.get("version") != 1 or not {"device", "methods", "gemm"} <= set(data):
        raise CostplanError(f"{path} is not a costplan calibration profile (version 1).")
    try:
        return _from_profile_data(data)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise CostplanError(f"{path} is a damaged calibration profile ({type(exc).__name__}: {exc}).") from exc


def _from_profile_data(data: dict) -> Profile:
    import statistics

    from costplan.hardware import gpu

    device = data["device"]
    name = f"calibrated on {device['name']}, {data['created']}"
    rows = read_table("efficiency")
    corrections = tuple(Correction(float(c["factor"]), c["model"], c["method"], c["source"])
                        for c in data.get("corrections", []))
    if device["kind"] != "cuda":
        return Profile(name=name, calibrated=True, rows=rows, device_name=device["name"], corrections=corrections)
    key = data.get("gpu_key")
    measured: dict[str, float] = {}
    if key:
        spec = gpu(key)
        best = measured_matmul_peaks(data)
        precision = "bf16" if "bf16" in best else data["precision"]
        if precision in best and precision in spec.peak_flops:
            measured["gemm_efficiency"] = min(best[precision] / spec.peak_flops[precision], 1.0)
        measured["bandwidth_efficiency"] = min(data["copy_bandwidth_bytes_per_second"] / spec.bandwidth_bytes_per_s,
                                               1.0)
        attention = data.get("attention") or {}
        if attention.get("flops_per_second") and precision in spec.peak_flops:
            # The benchmark counts causal attention's FLOPs in full; the kernel runs half of them.
            measured["attention_efficiency"] = min(0.5 * attention["flops_per_second"] / spec.peak_flops[precision],
                                                   1.0)
    else:
        name += " (unknown GPU: its measurements cannot be matched to the GPU table)"
    slacks = [e["max_reserved"] / e["max_allocated"] - 1 for e in data["methods"].values() if e.get("max_allocated")]
    contexts = [e["context_bytes"] for e in data["methods"].values() if e.get("context_bytes")]
    powers = [e["power_watts"] for e in data["methods"].values() if e.get("power_watts")]
    collective = max((p["all_reduce_bus_bytes_per_second"] for p in data.get("collectives", [])), default=None)
    if slacks:
        measured["allocator_slack"] = statistics.median(slacks)
    if contexts:
        measured["cuda_context_bytes"] = max(contexts)
    if powers:
        measured["power_watts"] = statistics.mean(powers)
    if collective:
        measured["collective_bytes_per_s"] = collective
    for method, entry in data["methods"].items():
        if entry.get("predicted_seconds") and entry.get("seconds"):
            corrections += (Correction(entry["seconds"] / entry["predicted_seconds"], "*", method,
                                       f"calibration step ({data.get('calibration_model', '?')})"),)
    return Profile(name=name, calibrated=True, rows=rows, device_key=key, device_name=device["name"],
                   measured=tuple(measured.items()), corrections=corrections)


def cache_dir() -> Path:
    """Where profiles are saved: ``$COSTPLAN_CACHE`` or ``~/.cache/costplan``."""
    import os

    return Path(os.environ.get("COSTPLAN_CACHE") or Path.home() / ".cache" / "costplan")


def measured_matmul_peaks(data: dict[str, Any]) -> dict[str, float]:
    """The best matmul throughput a profile measured, per dtype (FLOP/s)."""
    best: dict[str, float] = {}
    for point in data.get("gemm", []):
        if "flops_per_second" in point:
            best[point["dtype"]] = max(best.get(point["dtype"], 0.0), point["flops_per_second"])
    return best


def saved_profile_path(gpu_key: str) -> Path | None:
    """The newest profile file saved by ``costplan calibrate`` for this GPU type, if any."""
    folder = cache_dir() / "profiles"
    if not folder.is_dir():
        return None
    best: tuple[str, Path] | None = None
    for path in folder.glob("*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("gpu_key") == gpu_key and data.get("version") == 1:
            if best is None or data.get("created", "") > best[0]:
                best = (data.get("created", ""), path)
    return best[1] if best else None


def saved_profile_for(gpu_key: str) -> Profile | None:
    path = saved_profile_path(gpu_key)
    return load_profile(path) if path else None
