"""Efficiency and overhead factors: the defaults from ``tables/efficiency.csv`` until a
calibration profile measured on real hardware replaces them."""

from __future__ import annotations

from dataclasses import dataclass

from costplan.tables import number, read_table
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
    """Factors that turn FLOPs and bytes into seconds and reserved memory."""

    name: str
    calibrated: bool
    rows: tuple[dict[str, str], ...]

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
        return self._factor("mfu", method, precision)

    def bandwidth(self) -> Factor:
        return self._factor("bandwidth", "inference", "*")

    def cuda_context_bytes(self) -> float:
        return self._factor("cuda_context_gib", "*", "*").value * GIB

    def allocator_slack(self) -> float:
        return self._factor("allocator_slack", "*", "*").value

    def describe(self) -> str:
        if self.calibrated:
            return f"efficiency calibrated ({self.name})"
        return "efficiency not calibrated: default factors from tables/efficiency.csv"


def default_profile() -> Profile:
    return Profile(name="defaults", calibrated=False, rows=read_table("efficiency"))
