"""GPUs and their prices, from ``tables/gpus.csv`` and ``tables/prices.csv``."""

from __future__ import annotations

from dataclasses import dataclass

from costplan.errors import CostplanError, unknown_name
from costplan.tables import keys, number, read_table, row_by_name
from costplan.units import GIB

_PEAK_COLUMN = {"fp32": "fp32_tflops", "tf32": "tf32_tflops", "fp16": "fp16_tflops",
                "bf16": "bf16_tflops", "fp8": "fp8_tflops"}


@dataclass(frozen=True, kw_only=True, slots=True)
class GpuSpec:
    key: str
    name: str
    memory_bytes: float
    bandwidth_bytes_per_s: float
    peak_flops: dict[str, float]
    """Dense peak FLOP/s by dtype; dtypes without hardware support are absent."""
    tdp_watts: float
    source: str
    as_of: str

    def peak(self, precision: str) -> float:
        try:
            return self.peak_flops[precision]
        except KeyError:
            have = ", ".join(p for p in ("fp32", "fp16", "bf16", "fp8") if p in self.peak_flops)
            raise CostplanError(
                f"{self.name} has no {precision} tensor-core peak in the GPU table; use --precision "
                f"one of {have}."
            ) from None


def gpu_names() -> list[str]:
    return keys("gpus")


def gpu(name: str) -> GpuSpec:
    """A GPU from ``tables/gpus.csv`` by key or alias (``h100`` is the SXM part)."""
    row = row_by_name("gpus", name, "GPU")
    peaks = {}
    for dtype, column in _PEAK_COLUMN.items():
        value = number(row, column)
        if value:
            peaks[dtype] = value * 1e12
    memory, bandwidth = number(row, "memory_gib"), number(row, "mem_bandwidth_gbps")
    if not memory or not bandwidth:
        raise CostplanError(f"GPU table row {row['key']} lacks memory or bandwidth.")
    return GpuSpec(key=row["key"], name=row["name"], memory_bytes=memory * GIB,
                   bandwidth_bytes_per_s=bandwidth * 1e9, peak_flops=peaks,
                   tdp_watts=number(row, "tdp_watts") or 0.0, source=row["source"], as_of=row["as_of"])


@dataclass(frozen=True, kw_only=True, slots=True)
class Price:
    usd_per_gpu_hour: float
    provider: str
    instance: str
    spot: bool
    source: str
    as_of: str

    def describe(self) -> str:
        if self.provider == "user":
            return f"price ${self.usd_per_gpu_hour:.2f}/GPU-hour given with --price"
        kind = "spot" if self.spot else "on-demand"
        return (f"price ${self.usd_per_gpu_hour:.2f}/GPU-hour, {self.provider} {self.instance} {kind}, "
                f"as of {self.as_of}")


def providers() -> list[str]:
    return sorted({row["provider"] for row in read_table("prices")})


def price(gpu_key: str, provider: str | None = None, spot: bool = False,
          override: float | None = None) -> Price | None:
    """The cheapest listed price for the GPU (at one provider when given); None when unlisted."""
    if override is not None:
        if override < 0:
            raise ValueError("--price must not be negative")
        return Price(usd_per_gpu_hour=override, provider="user", instance="", spot=spot, source="--price", as_of="")
    if provider is not None and provider.lower() not in providers():
        raise unknown_name("provider", provider, providers())
    column = "usd_per_gpu_hour_spot" if spot else "usd_per_gpu_hour"
    best: Price | None = None
    for row in read_table("prices"):
        if row["gpu"] != gpu_key or (provider and row["provider"] != provider.lower()):
            continue
        value = number(row, column)
        if value is None:
            continue
        if best is None or value < best.usd_per_gpu_hour:
            best = Price(usd_per_gpu_hour=value, provider=row["provider"], instance=row["instance"],
                         spot=spot, source=row["source"], as_of=row["as_of"])
    return best
