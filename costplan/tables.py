"""Reference tables (CSV files with ``source`` and ``as_of`` columns) and how to find them.

In a checkout they live in ``tables/`` at the top of the repository; an installed wheel carries
the same files as ``costplan/_tables`` (see ``pyproject.toml``). Only the standard library is
used, so reading them costs a few milliseconds.
"""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path
from typing import Any

from costplan.errors import CostplanError, unknown_name

_PACKAGE = Path(__file__).resolve().parent


def tables_dir() -> Path:
    """The folder that holds the reference tables, packaged copy first."""
    for candidate in (_PACKAGE / "_tables", _PACKAGE.parent / "tables"):
        if (candidate / "models.csv").is_file():
            return candidate
    raise CostplanError("costplan's reference tables are missing: reinstall the package.")


@functools.cache
def read_table(name: str) -> tuple[dict[str, str], ...]:
    """Rows of ``tables/<name>.csv`` as dicts of stripped strings; rows starting with # are skipped."""
    path = tables_dir() / f"{name}.csv"
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            lines = (line for line in handle if line.strip() and not line.lstrip().startswith("#"))
            rows = tuple(
                {key.strip(): (value or "").strip() for key, value in row.items() if key}
                for row in csv.DictReader(lines)
            )
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise CostplanError(f"Cannot read reference table {path}: {exc}.") from exc
    for number, row in enumerate(rows, start=2):
        if not row.get("source") or not row.get("as_of"):
            raise CostplanError(f"{path} row {number} lacks its source or as_of date.")
    return rows


def number(row: dict[str, str], column: str) -> float | None:
    """A numeric cell, or None where the table leaves it empty."""
    text = row.get(column, "")
    if not text:
        return None
    try:
        return float(text)
    except ValueError as exc:
        raise CostplanError(f"Reference table cell {column}={text!r} is not a number.") from exc


def row_by_name(table: str, name: str, kind: str) -> dict[str, str]:
    """The row whose ``key`` or one of its ``aliases`` (;-separated) is ``name``, any case."""
    rows: dict[str, dict[str, str]] = {}
    for row in read_table(table):
        for alias in [row["key"], *filter(None, row.get("aliases", "").split(";"))]:
            rows[alias.strip().lower()] = row
    found = rows.get(name.strip().lower())
    if found is None:
        raise unknown_name(kind, name, rows)
    return found


def keys(table: str) -> list[str]:
    return [row["key"] for row in read_table(table)]


def read_json(path: Path, what: str) -> Any:
    """A JSON file's content, or one clear error naming ``what`` the file should have been."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CostplanError(f"No {what} at {path}.") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CostplanError(f"{path} is not a readable {what}: {exc}.") from exc
