"""Energy and emissions: board power x time x data-centre PUE, and a grid's carbon intensity.

Defaults come from ``tables/energy.csv``: GPUs at their TDP (conservative: no published
measurement of average board power during LLM training was found), the industry-average PUE, the
world-average grid intensity.
"""

from __future__ import annotations

from costplan.errors import unknown_name
from costplan.record import record
from costplan.tables import number, read_table

GRIDS = ("world", "us", "eu", "france")


def _value(key: str) -> float:
    for row in read_table("energy"):
        if row["key"] == key:
            value = number(row, "value")
            assert value is not None
            return value
    raise KeyError(key)


@record
class EnergyModel:
    pue: float
    grid_kg_per_kwh: float
    described: str

    def kwh(self, gpus: int, watts: float, seconds: float) -> float:
        return gpus * watts * seconds / 3600 / 1000 * self.pue

    def co2_kg(self, kwh: float) -> float:
        return kwh * self.grid_kg_per_kwh


def energy_model(pue: float | None = None, grid: str | float | None = None) -> EnergyModel:
    """PUE (default: industry average) and grid intensity (a region name or kg CO2/kWh)."""
    if pue is None:
        pue, pue_note = _value("pue_average"), "industry-average PUE (Uptime Institute)"
    else:
        if not 1.0 <= pue <= 3.0:
            raise ValueError("--pue must be between 1.0 and 3.0")
        pue_note = "PUE given"
    if grid is None:
        grid = "world"
    if isinstance(grid, str):
        try:
            intensity = float(grid)
            grid_note = "grid intensity given"
        except ValueError:
            if grid.lower() not in GRIDS:
                raise unknown_name("grid", grid, GRIDS) from None
            intensity = _value(f"grid_{grid.lower()}_kg_per_kwh")
            grid_note = f"{grid.lower()} grid"
    else:
        intensity, grid_note = float(grid), "grid intensity given"
    if not 0.0 <= intensity <= 2.0:
        raise ValueError("--grid intensity must be between 0 and 2 kg CO2/kWh")
    intensity += 0.0  # -0 becomes 0
    described = (f"energy: GPUs at board TDP x {pue_note} {pue:.2f}; CO2 at {intensity:.3f} kg/kWh "
                 f"({grid_note})")
    return EnergyModel(pue, intensity, described)
