"""GPUs and their prices, from ``tables/gpus.csv`` and ``tables/prices.csv``, or the cost of owning them.

Rented: the listed offers (instance, GPUs per instance, on-demand and spot $/GPU-hour, whether the
provider sells multi-node clusters, the date). Owned: an amortised hardware price per GPU-hour plus
electricity, ``cost = hardware x GPU-hours + $/kWh x kWh``; with energy ``kWh = GPUs x board watts x
hours x PUE / 1000`` (``costplan.energy``) that is one rate per GPU-hour, so estimate and plan price
owned GPUs exactly like rented ones."""

from __future__ import annotations

import functools
import math
from typing import Any

from costplan import xp
from costplan.errors import CostplanError, unknown_name
from costplan.record import record
from costplan.tables import keys, number, read_table, row_by_name
from costplan.units import GIB

_PEAK_COLUMN = {"fp32": "fp32_tflops", "tf32": "tf32_tflops", "fp16": "fp16_tflops",
                "bf16": "bf16_tflops", "fp8": "fp8_tflops"}


@record(kw_only=True)
class GpuSpec:
    key: str
    name: str
    arch: str
    """Architecture (hopper, ampere, ada, ...): efficiency constants are kept per architecture."""
    memory_bytes: float
    bandwidth_bytes_per_s: float
    peak_flops: dict[str, float]
    """Dense peak FLOP/s by dtype; dtypes without hardware support are absent."""
    tdp_watts: float
    source: str
    as_of: str
    host_link_bytes_per_s: float = 31.5e9
    """Host link bandwidth per direction (PCIe x16: gen3 15.75, gen4 31.5, gen5 63 GB/s), which
    offloaded optimizer states, parameters and checkpoints cross."""

    def peak(self, precision: str) -> float:
        """Dense peak FLOP/s at ``precision``: a dtype (fp32, bf16, fp16, fp8) or a precision mode."""
        from costplan import precision as modes

        precision = modes.peak_dtype(precision)
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
    spec = _SPECS.get(row["key"])
    if spec is None:
        spec = _SPECS[row["key"]] = _spec(row)
    return spec


_SPECS: dict[str, GpuSpec] = {}
"""Specs by key, built once (the table is read once; ``plan`` asks per GPU type and count)."""


def _spec(row: dict[str, str]) -> GpuSpec:
    peaks = {}
    for dtype, column in _PEAK_COLUMN.items():
        value = number(row, column)
        if value:
            peaks[dtype] = value * 1e12
    memory, bandwidth = number(row, "memory_gib"), number(row, "mem_bandwidth_gbps")
    if not memory or not bandwidth:
        raise CostplanError(f"GPU table row {row['key']} lacks memory or bandwidth.")
    return GpuSpec(key=row["key"], name=row["name"], arch=row["arch"], memory_bytes=memory * GIB,
                   bandwidth_bytes_per_s=bandwidth * 1e9, peak_flops=peaks,
                   tdp_watts=number(row, "tdp_watts") or 0.0, source=row["source"], as_of=row["as_of"],
                   host_link_bytes_per_s=(number(row, "host_link_gbps") or 31.5) * 1e9)


@record(kw_only=True)
class Price:
    """One rental offer: an instance of ``gpus_per_instance`` GPUs, priced per GPU-hour."""

    usd_per_gpu_hour: float
    provider: str
    instance: str
    spot: bool
    source: str
    as_of: str
    gpus_per_instance: int = 1
    cluster: bool = False
    """The provider sells multi-node clusters of this instance (a fast network between nodes)."""
    owned: Ownership | None = None
    """Set for owned GPUs: the hardware and electricity prices the rate is made of."""

    def billed_gpus(self, gpus: int) -> int:
        """GPUs paid for: whole instances (owned or user-priced GPUs: the ones used)."""
        if self.provider in ("user", "owned"):
            return gpus
        return whole_instances(gpus, self.gpus_per_instance)

    def describe(self, gpus: int = 1) -> str:
        if self.provider == "user":
            return f"price ${self.usd_per_gpu_hour:.2f}/GPU-hour given with --price"
        if self.owned is not None:
            return self.owned.describe(self.usd_per_gpu_hour, self.instance)
        kind = "spot" if self.spot else "on-demand"
        instances = math.ceil(gpus / self.gpus_per_instance)
        count = f"{instances} x " if instances > 1 else ""
        billed = self.billed_gpus(gpus)
        idle = f" ({billed} GPUs billed for {gpus} used)" if billed > gpus else ""
        return (f"price ${self.usd_per_gpu_hour:.2f}/GPU-hour, {self.provider} {count}{self.instance} {kind}"
                f"{idle}, as of {self.as_of}")


@record(kw_only=True)
class Ownership:
    """GPUs you own: amortised hardware $/GPU-hour and electricity $/kWh (either may be 0)."""

    hardware_usd_per_gpu_hour: float = 0.0
    usd_per_kwh: float = 0.0

    def __post_init__(self) -> None:
        if not (0 <= self.hardware_usd_per_gpu_hour < 1e4 and 0 <= self.usd_per_kwh < 100):
            raise ValueError("--hardware-price must be 0 to 10,000 $/GPU-hour and --electricity 0 to 100 $/kWh")

    def kwh_per_gpu_hour(self, watts: float, pue: float) -> float:
        return watts / 1000 * pue

    def price(self, watts: float, pue: float) -> Price:
        """One GPU-hour: the hardware share plus the electricity the GPU and its data centre draw."""
        rate = self.hardware_usd_per_gpu_hour + self.usd_per_kwh * self.kwh_per_gpu_hour(watts, pue)
        described = f"{watts:.0f} W x PUE {pue:.2f}"
        return Price(usd_per_gpu_hour=rate, provider="owned", instance=described, spot=False,
                     source="--hardware-price and --electricity", as_of="", owned=self)

    def describe(self, rate: float, power: str = "board power x PUE") -> str:
        electricity = rate - self.hardware_usd_per_gpu_hour
        return (f"owned GPUs (no rental): ${self.hardware_usd_per_gpu_hour:.2f}/GPU-hour hardware (amortised, given) + "
                f"electricity ${self.usd_per_kwh:.3f}/kWh x {power} = ${electricity:.3f}/GPU-hour; "
                f"${rate:.3f}/GPU-hour in all")


@record(kw_only=True)
class Listing:
    """One row of ``tables/prices.csv``: an instance type and its prices."""

    provider: str
    gpu: str
    instance: str
    gpus_per_instance: int
    usd_per_gpu_hour: float | None
    """On-demand; None where only spot is listed."""
    usd_per_gpu_hour_spot: float | None
    cluster: bool
    source: str
    as_of: str


def listings(gpu_key: str | None = None) -> list[Listing]:
    """Every listed offer (of one GPU type when given), by provider, then price."""
    found = []
    for row in read_table("prices"):
        if gpu_key is not None and row["gpu"] != gpu_key:
            continue
        found.append(Listing(provider=row["provider"], gpu=row["gpu"], instance=row["instance"],
                             gpus_per_instance=int(number(row, "gpus_per_instance") or 1),
                             usd_per_gpu_hour=number(row, "usd_per_gpu_hour"),
                             usd_per_gpu_hour_spot=number(row, "usd_per_gpu_hour_spot"),
                             cluster=row.get("cluster", "").lower() == "true", source=row["source"],
                             as_of=row["as_of"]))
    return sorted(found, key=lambda o: (o.gpu, o.provider, o.usd_per_gpu_hour or math.inf, o.instance))


@functools.cache
def providers() -> list[str]:
    return sorted({row["provider"] for row in read_table("prices")})


def offers(gpu_key: str, provider: str | None = None, spot: bool = False) -> tuple[Price, ...]:
    """Every listed offer of the GPU (at one provider when given) with a price of that kind."""
    if provider is not None and provider.lower() not in providers():
        raise unknown_name("provider", provider, providers())
    return _offers(gpu_key, provider.lower() if provider else None, spot)


@functools.cache
def _offers(gpu_key: str, provider: str | None, spot: bool) -> tuple[Price, ...]:
    found = []
    for row in listings(gpu_key):
        if provider and row.provider != provider:
            continue
        value = row.usd_per_gpu_hour_spot if spot else row.usd_per_gpu_hour
        if value is None:
            continue
        found.append(Price(usd_per_gpu_hour=value, provider=row.provider, instance=row.instance, spot=spot,
                           source=row.source, as_of=row.as_of, gpus_per_instance=row.gpus_per_instance,
                           cluster=row.cluster))
    return tuple(found)


def whole_instances(gpus: Any, per_instance: Any) -> Any:
    """GPUs billed when ``gpus`` are rented as whole instances of ``per_instance`` (numbers or arrays)."""
    return xp.ceil(gpus / per_instance) * per_instance


def hosts(gpus: Any, per_instance: Any, cluster: Any) -> Any:
    """One instance holds the job, or the provider clusters its instances (numbers or arrays)."""
    return (gpus <= per_instance) | cluster


def can_host(offer: Price, gpus: int) -> bool:
    return bool(hosts(gpus, offer.gpus_per_instance, offer.cluster))


def price(gpu_key: str, provider: str | None = None, spot: bool = False, override: float | None = None,
          gpus: int = 1, *, owned: Ownership | None = None, watts: float = 0.0, pue: float = 1.0) -> Price | None:
    """The offer that rents ``gpus`` GPUs most cheaply (whole instances; several instances only where
    the provider sells clusters), at one provider when given; None when none is listed. ``override``
    is a flat $/GPU-hour; ``owned`` prices GPUs you own at ``watts`` of board power and ``pue``."""
    if owned is not None:
        if override is not None or provider is not None or spot:
            raise CostplanError("--hardware-price/--electricity price owned GPUs: drop --price, --provider and --spot.")
        if owned.usd_per_kwh > 0 and not watts > 0:
            raise CostplanError(f"{gpu_key} has no board power (TDP) in tables/gpus.csv, so --electricity cannot "
                                "price it: measure it with `costplan calibrate` on that GPU, or give --price.")
        return owned.price(watts, pue)
    if override is not None:
        if not override >= 0:
            raise ValueError("--price must be zero or positive")
        return Price(usd_per_gpu_hour=override, provider="user", instance="", spot=spot, source="--price", as_of="")
    fitting = [o for o in offers(gpu_key, provider, spot) if can_host(o, gpus)]
    if not fitting:
        return None
    return min(fitting, key=lambda o: (o.usd_per_gpu_hour * o.billed_gpus(gpus), o.provider, o.instance))
