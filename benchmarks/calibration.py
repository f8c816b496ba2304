"""Calibration ceilings measured on this machine (CPU here, GPU when there is one), against the
datasheet row when the device is a known GPU.

    python benchmarks/calibration.py [--csv tables/generated/calibration.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--model", default="7b")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    from costplan.calibrate import calibrate
    from costplan.hardware import gpu
    from costplan.model import resolve_model
    from costplan.profile import measured_matmul_peaks

    profile = calibrate(resolve_model(args.model), quick=True)
    sheet = gpu(profile["gpu_key"]) if profile["gpu_key"] else None
    table = Table(title=f"measured ceilings on {profile['device']['name']}", title_justify="left")
    for column in ("ceiling", "measured", "datasheet", "fraction"):
        table.add_column(column, justify="left" if column == "ceiling" else "right")
    rows = []
    best = measured_matmul_peaks(profile)
    for dtype, measured in best.items():
        peak = sheet.peak_flops.get(dtype) if sheet else None
        rows.append({"ceiling": f"matmul {dtype} FLOP/s", "measured": measured, "datasheet": peak})
    peak_bw = sheet.bandwidth_bytes_per_s if sheet else None
    rows.append({"ceiling": "copy bandwidth B/s", "measured": profile["copy_bandwidth_bytes_per_second"],
                 "datasheet": peak_bw})
    for method, entry in profile["methods"].items():
        rows.append({"ceiling": f"training step {method} FLOP/s", "measured": entry["achieved_flops_per_second"],
                     "datasheet": sheet.peak_flops.get(profile["precision"]) if sheet else None})
    for row in rows:
        fraction = row["measured"] / row["datasheet"] if row["datasheet"] else None
        row["fraction"] = fraction
        sheet_text = "-" if not row["datasheet"] else f"{row['datasheet']:.4g}"
        fraction_text = "-" if fraction is None else f"{fraction:.1%}"
        table.add_row(row["ceiling"], f"{row['measured']:.4g}", sheet_text, fraction_text)
    Console().print(table)
    if args.csv:
        from costplan.files import write_csv

        write_csv(args.csv, rows)


if __name__ == "__main__":
    main()
