"""Writing files atomically: a temporary file beside the target, then a rename, so a reader never
sees a half-written table, profile or report."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomically(path: Path, content: bytes | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode("utf-8") if isinstance(content, str) else content
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(data)
    os.chmod(handle.name, 0o644)  # NamedTemporaryFile creates it private
    os.replace(handle.name, path)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows of dicts (the first row's keys are the header), written atomically."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, buffer.getvalue())
