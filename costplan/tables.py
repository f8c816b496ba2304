"""Reference tables (CSV files with ``source`` and ``as_of`` columns) and how to find them.

In a checkout they live in ``tables/`` at the top of the repository; an installed wheel carries
the same files as ``costplan/_tables`` (see ``pyproject.toml``). Only the standard library is
used, so reading them costs a few milliseconds.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import stat
from pathlib import Path
from typing import Any

from costplan.errors import CostplanError, shown, unknown_name

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


@functools.cache
def _by_alias(table: str) -> dict[str, dict[str, str]]:
    """A table's rows by lower-case key and alias (read once: ``plan`` looks rows up per GPU type)."""
    rows: dict[str, dict[str, str]] = {}
    for row in read_table(table):
        for alias in [row["key"], *filter(None, row.get("aliases", "").split(";"))]:
            rows[alias.strip().lower()] = row
    return rows


def row_by_name(table: str, name: str, kind: str) -> dict[str, str]:
    """The row whose ``key`` or one of its ``aliases`` (;-separated) is ``name``, any case."""
    rows = _by_alias(table)
    found = rows.get(name.strip().lower())
    if found is None:
        raise unknown_name(kind, name, rows)
    return found


def keys(table: str) -> list[str]:
    return [row["key"] for row in read_table(table)]


MAX_JSON_BYTES = 8 * 2**20
"""The largest JSON file costplan reads (config.json files and calibration profiles are a few kB)."""


def read_json(path: Path | str, what: str, max_bytes: int = MAX_JSON_BYTES, nonfinite: bool = False) -> Any:
    """A JSON file's content, or one clear error naming ``what`` the file should have been.

    Read as ``read_small_file`` reads it; NaN/Infinity literals (not JSON) and nesting too deep to
    parse are refused too, except with ``nonfinite`` for files that Python's ``json`` writes with them
    (the Trainer's ``trainer_state.json`` logs a ``grad_norm`` of NaN): the caller checks the values it uses.
    """
    data = read_small_file(path, what, max_bytes)
    name = shown(Path(path))
    try:
        return json.loads(data.decode("utf-8"), parse_constant=None if nonfinite else _refuse_constant)
    except RecursionError as exc:
        raise CostplanError(f"{name} is nested too deeply to be a {what}.") from exc
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise CostplanError(f"{name} is not a readable {what}: {_reason(exc)}.") from exc


def read_small_file(path: Path | str, what: str, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """A small file's bytes, or one clear error naming ``what`` the file should have been.

    Only a regular file under ``max_bytes`` is read: a FIFO, a device such as ``/dev/zero`` or
    a folder is refused without reading (opened non-blocking, so a FIFO with no writer cannot
    hang).
    """
    path = Path(path)
    name = shown(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError as exc:
        raise CostplanError(f"No {what} at {name}.") from exc
    except (OSError, ValueError) as exc:  # permission, a name too long, a NUL byte
        raise CostplanError(f"Cannot open the {what} {name}: {_reason(exc)}.") from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise CostplanError(f"{name} is a folder, not a {what} file.")
        if not stat.S_ISREG(info.st_mode):
            raise CostplanError(f"{name} is not a regular file (a FIFO or a device): a {what} must be one.")
        if info.st_size > max_bytes:
            raise CostplanError(f"{name} is {info.st_size / 2**20:.3g} MiB: a {what} larger than "
                                f"{max_bytes / 2**20:g} MiB is not read.")
        with os.fdopen(fd, "rb") as handle:
            fd = -1
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise CostplanError(f"Cannot read the {what} {name}: {_reason(exc)}.") from exc
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > max_bytes:
        raise CostplanError(f"{name} grew past {max_bytes / 2**20:g} MiB while being read: not a {what}.")
    return data


def _refuse_constant(literal: str) -> Any:
    raise ValueError(f"{literal} is not a JSON number")


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())[:200].rstrip(".")
