"""Writing files atomically: a temporary file beside the target, then a rename, so a reader never
sees a half-written table, profile or report. A path that cannot be written (under a file, a
device, a read-only place) is one ``CostplanError`` line, and no temporary is left behind."""

from __future__ import annotations

import csv
import io
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from costplan.errors import CostplanError, shown


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).rstrip(".")


def check_folder(folder: Path, what: str = "folder") -> None:
    """Fail early, writing nothing, when ``folder`` could not be created or written: it is a file or
    a device, lies under one, or its nearest existing folder is not writable."""
    folder = Path(folder)
    if not str(folder):
        raise CostplanError(f"The {what} path is empty.")
    try:
        if folder.exists() and not folder.is_dir():
            raise CostplanError(f"The {what} {shown(folder)} is a file or a device, not a folder.")
        existing = Path(os.path.abspath(folder))
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise CostplanError(f"The {what} {shown(folder)} lies under {shown(existing)}, which is a file.")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise CostplanError(f"Cannot write in the {what} {shown(folder)}: {shown(existing)} is not writable.")
    except OSError as exc:
        raise CostplanError(f"Cannot use the {what} {shown(folder)}: {_reason(exc)}.") from None


def check_file(path: Path, what: str = "output file") -> None:
    """Fail early, writing nothing, when ``path`` could not be written as a regular file."""
    path = Path(path)
    if not str(path):
        raise CostplanError(f"The {what} path is empty.")
    try:
        if path.exists() and not path.is_file():
            raise CostplanError(f"The {what} {shown(path)} is a folder or a device, not a file.")
    except OSError as exc:
        raise CostplanError(f"Cannot use the {what} {shown(path)}: {_reason(exc)}.") from None
    check_folder(Path(os.path.abspath(path)).parent, f"folder of the {what}")


def write_atomically(path: Path, content: bytes | str) -> None:
    path = Path(path)
    if not str(path):
        raise CostplanError("The output path is empty.")
    data = content.encode("utf-8") if isinstance(content, str) else content
    temporary: str | None = None
    try:
        if path.exists() and not path.is_file():
            raise CostplanError(f"Cannot write {shown(path)}: it is a folder or a device, not a file.")
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=path.parent, delete=False, suffix=".tmp") as handle:
            temporary = handle.name
            handle.write(data)
        os.chmod(temporary, 0o644)  # NamedTemporaryFile creates it private
        os.replace(temporary, path)
        temporary = None
    except OSError as exc:
        raise CostplanError(f"Cannot write {shown(path)}: {_reason(exc)}.") from None
    finally:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows of dicts (the first row's keys are the header), written atomically."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, buffer.getvalue())


def write_file_set(folder: Path, files: dict[str, bytes | str]) -> None:
    """Write a set of files (a report) into ``folder`` as a set.

    Every file is first written into a fresh temporary folder beside the target; only when all
    of them are complete are they moved in: the temporary folder is renamed into place when the
    target does not exist yet, otherwise each of the set's files replaces its namesake, file by
    file (a rename each), and if one rename fails the earlier ones are undone, so the folder
    holds the whole old set or the whole new one. Nothing else in the folder is touched, and the
    temporary folder is removed whatever happens.
    """
    folder = Path(folder)
    if not str(folder):
        raise CostplanError("The output folder is empty: give a folder such as report/.")
    try:
        if folder.exists() and not folder.is_dir():
            raise CostplanError(f"The output folder {shown(folder)} is a file or a device, not a folder.")
        for name in files:
            target = folder / name
            if os.path.lexists(target) and not stat.S_ISREG(os.lstat(target).st_mode):
                raise CostplanError(f"{shown(target)} is not a regular file: costplan will not replace it.")
        beside = Path(os.path.abspath(folder)).parent
        beside.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".costplan-", suffix=".tmp", dir=beside))
    except OSError as exc:
        raise CostplanError(f"Cannot write in {shown(folder)}: {_reason(exc)}.") from None
    try:
        for name, content in files.items():
            data = content.encode("utf-8") if isinstance(content, str) else content
            (staging / name).write_bytes(data)
            os.chmod(staging / name, 0o644)
        if not folder.exists():
            os.chmod(staging, 0o755)  # mkdtemp creates it private
            os.rename(staging, folder)
            return
        _swap_in(staging, folder, list(files))
    except OSError as exc:
        raise CostplanError(f"Cannot write the files into {shown(folder)}: {_reason(exc)}.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, folder: Path, names: list[str]) -> None:
    """Move the staged files over their namesakes; on a failure put the old ones back."""
    old = staging / ".previous"
    old.mkdir()
    done: list[tuple[str, bool]] = []  # (name, had an old file)
    try:
        for name in names:
            existed = os.path.lexists(folder / name)
            if existed:
                os.replace(folder / name, old / name)
            done.append((name, existed))
            os.replace(staging / name, folder / name)
    except OSError:
        for name, existed in reversed(done):
            try:
                if existed:
                    os.replace(old / name, folder / name)
                elif os.path.lexists(folder / name):
                    os.unlink(folder / name)
            except OSError:
                pass
        raise
