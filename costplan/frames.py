"""Results as flat rows: CSV text (``--csv``, standard library only) and pandas DataFrames (``to_frame``).

Every command that prints a table has one list of flat rows behind its ``--csv``; the result objects
of ``compare``, ``plan`` and ``validate`` hand the same rows to ``to_frame``. Values are in base units
(bytes, FLOPs, seconds, dollars) like ``--json``. A ``*_range`` pair becomes ``*_low`` and ``*_high``
columns; any other list or mapping is written as JSON text. pandas is imported only by
``to_frame`` (``pip install 'costplan[data]'``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from costplan.errors import CostplanError

if TYPE_CHECKING:
    from costplan.api import Estimate


def flat(row: Mapping[str, Any]) -> dict[str, Any]:
    """One row with scalar cells only."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key.endswith("_range") and isinstance(value, (list, tuple)) and len(value) == 2:
            stem = key.removesuffix("_range")
            out[f"{stem}_low"], out[f"{stem}_high"] = value
        elif key.endswith("_range") and value is None:
            stem = key.removesuffix("_range")
            out[f"{stem}_low"] = out[f"{stem}_high"] = None
        elif isinstance(value, (list, tuple, dict)):
            out[key] = json.dumps(value, default=str)
        else:
            out[key] = value
    return out


def csv_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV with a header; the columns are the union of the rows' keys, in first-seen order."""
    flat_rows = [flat(r) for r in rows]
    columns: dict[str, None] = {}
    for row in flat_rows:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in flat_rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def to_frame(rows: Iterable[Mapping[str, Any]]) -> Any:
    """A pandas DataFrame of the flat rows."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise CostplanError("to_frame needs pandas: pip install 'costplan[data]'.") from exc
    return pd.DataFrame([flat(r) for r in rows])


def estimate_row(est: Estimate) -> dict[str, Any]:
    """The summary of one estimate as one row (``estimate --csv``)."""
    layout = est.placement.layout
    return {
        "model": est.model.name, "method": est.method.key, "gpu": est.gpu.key, "gpus": est.gpus,
        "precision": est.workload.precision, "params_total": est.params_total,
        "params_trainable": est.params_trainable, "tokens": est.tokens, "epochs": est.epochs,
        "flops_per_token": est.flops.per_token, "flops_total": est.flops_total,
        "memory_peak_bytes": est.memory.peak_bytes, "memory_device_bytes": est.memory.device_bytes,
        "fits": est.placement.fits, "micro_batch": layout.micro_batch, "grad_accumulation": layout.grad_accum,
        "zero_stage": layout.zero, "grad_ckpt": layout.grad_ckpt, "tokens_per_second": est.tokens_per_second,
        "mfu": est.mfu, "wall_hours": est.wall_hours, "gpu_hours": est.gpu_hours,
        "usd_per_gpu_hour": None if est.price is None else est.price.usd_per_gpu_hour,
        "price_from": None if est.price is None else est.price.provider,
        "cost_usd": est.cost_usd, "cost_usd_range": est.cost_usd_range, "energy_kwh": est.energy_kwh,
        "co2_kg": est.co2_kg, "fit_problem": est.placement.reason or None,
    }
