"""Efficiency and overhead factors: the defaults from ``tables/efficiency.csv`` until a
calibration profile measured on real hardware replaces them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from costplan.tables import number, read_json, read_table
from costplan.units import GIB


@dataclass(frozen=True, slots=True)
class Factor:
    """One efficiency or overhead value with its range and where it comes from."""

    value: float
    low: float
    high: float
    source: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Profile:
    """Factors that turn FLOPs and bytes into seconds and reserved memory.

    The defaults come from ``tables/efficiency.csv``; a calibration profile (``costplan
    calibrate``) overrides them with measured values where it has them.
    """

    name: str
    calibrated: bool
    rows: tuple[dict[str, str], ...]
    measured_mfu: tuple[tuple[str, float], ...] = ()
    """Method key -> measured model FLOPs utilisation (fraction of the datasheet peak)."""
    measured_bandwidth: float | None = None
    measured_slack: float | None = None
    measured_context_bytes: float | None = None
    measured_power_watts: float | None = None
    """Average board power during the calibration's training steps."""
    measured_collective_bandwidth: float | None = None
    """Best all-reduce bus bandwidth measured under torchrun (bytes/s per GPU), inside a node."""
    device_key: str | None = None
    """The GPU table row the profile was measured on (None: a CPU or an unknown GPU)."""
    device_name: str = ""

    def _factor(self, kind: str, method: str, precision: str) -> Factor:
        best: tuple[int, dict[str, str]] | None = None
        for row in self.rows:
            if row["kind"] != kind or row["method"] not in (method, "*") or row["precision"] not in (precision, "*"):
                continue
            # A precision-specific row beats a method-specific one (fp32 and fp8 run differently).
            score = 2 * (row["precision"] == precision) + (row["method"] == method)
            if best is None or score > best[0]:
                best = (score, row)
        if best is None:
            raise LookupError(f"no {kind} factor for {method}/{precision}")
        row = best[1]
        value = number(row, "value")
        assert value is not None
        return Factor(value, number(row, "low") or value, number(row, "high") or value,
                      row["source"])

    def mfu(self, method: str, precision: str) -> Factor:
        measured = dict(self.measured_mfu)
        # Methods without their own measurement borrow the closest measured one.
        for key in (method, *_SIMILAR.get(method, ())):
            if key in measured:
                value = measured[key]
                return Factor(value, value * 0.9, value * 1.1, f"measured ({self.name})")
        return self._factor("mfu", method, precision)

    def bandwidth(self) -> Factor:
        if self.measured_bandwidth is not None:
            value = self.measured_bandwidth
            return Factor(value, value * 0.9, min(1.0, value * 1.1), f"measured ({self.name})")
        return self._factor("bandwidth", "inference", "*")

    def cuda_context_bytes(self) -> float:
        if self.measured_context_bytes is not None:
            return self.measured_context_bytes
        return self._factor("cuda_context_gib", "*", "*").value * GIB

    def allocator_slack(self) -> float:
        if self.measured_slack is not None:
            return self.measured_slack
        return self._factor("allocator_slack", "*", "*").value

    def describe(self, gpu_key: str | None = None) -> str:
        if not self.calibrated:
            return "efficiency not calibrated: default factors from tables/efficiency.csv"
        if not self.measured_mfu:
            return f"{self.name}: measured on a CPU, so GPU projections keep the default (not calibrated) factors"
        if gpu_key is not None and self.device_key not in (None, gpu_key):
            return (f"{self.name}, transferred to {gpu_key}: measured efficiency kept, throughput scaled by the "
                    "ratio of datasheet peaks")
        return f"efficiency {self.name}"


_SIMILAR = {"cpt": ("full",), "pretrain": ("full",), "prefix": ("prompt", "lora"), "prompt": ("lora",),
            "qlora": ()}


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
    if device["kind"] != "cuda":
        return Profile(name=name, calibrated=True, rows=rows, device_name=device["name"])
    key = data.get("gpu_key")
    precision = data["precision"]
    if key:
        peak = gpu(key).peak(precision)
        bandwidth = data["copy_bandwidth_bytes_per_second"] / gpu(key).bandwidth_bytes_per_s
    else:  # an unknown GPU: efficiency relative to the best matmul it measured
        peak = measured_matmul_peaks(data)[precision]
        bandwidth = None
        name += " (unknown GPU: efficiency relative to its measured matmul peak)"
    mfu = tuple((method, float(entry["achieved_flops_per_second"]) / peak)
                for method, entry in data["methods"].items())
    slacks = [e["max_reserved"] / e["max_allocated"] - 1 for e in data["methods"].values()
              if e.get("max_allocated")]
    collective = max((p["all_reduce_bus_bytes_per_second"] for p in data.get("collectives", [])), default=None)
    contexts = [e["context_bytes"] for e in data["methods"].values() if e.get("context_bytes")]
    powers = [e["power_watts"] for e in data["methods"].values() if e.get("power_watts")]
    return Profile(name=name, calibrated=True, rows=rows, measured_mfu=mfu, measured_collective_bandwidth=collective,
                   measured_bandwidth=min(bandwidth, 1.0) if bandwidth else None,
                   measured_slack=statistics.median(slacks) if slacks else None,
                   measured_context_bytes=max(contexts) if contexts else None,
                   measured_power_watts=statistics.mean(powers) if powers else None, device_key=key,
                   device_name=device["name"])


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
