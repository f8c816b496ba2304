"""Hugging Face Hub ids (``org/name``), offline first.

A Hub id is looked up in the local Hugging Face cache, the folder ``huggingface_hub`` itself uses:
``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
``~/.cache/huggingface/hub``. There a repository lives as
``models--{org}--{name}/snapshots/{commit}/{file}``, with ``refs/main`` naming the commit of the
main branch. Nothing goes over the network for a cached file.

Only when the file is not cached, ``huggingface_hub`` is installed and ``HF_HUB_OFFLINE`` is not
set, the one small file asked for (``config.json``, ``tokenizer.json``) is downloaded with
``hf_hub_download``, never weights; the estimate's assumptions say so. Offline (or refused) and
uncached, a preset of the repository's own name stands in where one exists (``costplan.model``:
``Qwen/Qwen2.5-0.5B-Instruct`` is the qwen2.5-0.5b preset), said so in the assumptions; else it is one
clear error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from costplan.errors import CostplanError
from costplan.record import record

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TRUE = {"1", "on", "yes", "true"}


@record
class Located:
    """A file of a Hub repository on this machine, and how it got here."""

    path: Path
    note: str
    """One line for the assumptions: cache or download, revision."""


def is_repo_id(text: str) -> bool:
    """``org/name`` as the Hub spells it (and not an existing path or a .json file)."""
    if not _REPO_ID.match(text) or text.endswith(".json"):
        return False
    try:
        return not Path(text).expanduser().exists()
    except (OSError, RuntimeError, ValueError):  # a name too long for a path, an unknown ~user
        return True


def cache_dir() -> Path:
    """The Hugging Face Hub cache folder, resolved as ``huggingface_hub`` does."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def cached_file(repo_id: str, filename: str, revision: str = "main") -> Path | None:
    """The cached copy of ``filename`` at ``revision`` (a branch or a commit), or None.

    The snapshot named by ``refs/<revision>`` comes first; failing that (a cache filled by hand or
    by an older client), the most recent snapshot that holds the file."""
    repo = cache_dir() / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / revision
    try:
        commit = ref.read_text(encoding="utf-8").strip() if ref.is_file() else revision
        candidate = snapshots / commit / filename
        if candidate.is_file():
            return candidate
    except (OSError, UnicodeDecodeError, ValueError):
        pass  # a ref that names no snapshot (too long, not text): fall back to the snapshots held
    found = [s / filename for s in snapshots.iterdir() if (s / filename).is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


_LOCATED: dict[tuple[str, str, str], Located] = {}


def locate(repo_id: str, filename: str = "config.json") -> Located:
    """``filename`` of a Hub repository: from the cache, else downloaded alone (see the module)."""
    key = (str(cache_dir()), repo_id, filename)
    if key in _LOCATED:
        return _LOCATED[key]
    path = cached_file(repo_id, filename)
    if path is not None:
        located = Located(path, f"{filename} of {repo_id} from the local Hugging Face cache "
                                f"(revision {path.parent.name[:12]}, {cache_dir()}); nothing downloaded")
    else:
        located = _download(repo_id, filename)
    _LOCATED[key] = located
    return located


def _download(repo_id: str, filename: str) -> Located:
    where = f"{repo_id} has no {filename} in the local Hugging Face cache ({cache_dir()})"
    hint = f"download it (hf download {repo_id} {filename}) or pass a local folder or file"
    if offline():
        raise CostplanError(f"{where} and HF_HUB_OFFLINE is set: {hint}.")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise CostplanError(f"{where}, and huggingface_hub is not installed to fetch it: {hint}.") from None
    host = _endpoint_host()
    if not _hub_answers(host):
        raise CostplanError(f"{where}, and {host} cannot be reached (offline?): {hint}.")
    import logging

    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its retry warnings would break the one-line error
    try:
        path = Path(hf_hub_download(repo_id, filename))
    except Exception as exc:  # network down, unknown or gated repository: one line, whatever the client raised
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CostplanError(f"{where}, and fetching it failed ({type(exc).__name__}: {reason}): {hint}.") from None
    finally:
        hub_log.setLevel(level)
    return Located(path, f"{filename} of {repo_id} fetched from the Hugging Face Hub with huggingface_hub "
                         f"({filename} only, no weights), cached in {cache_dir()}")


def _endpoint_host() -> str:
    from urllib.parse import urlparse

    return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"


_SILENT_FOR_S = 60.0
"""A Hub that did not answer is not asked again for this long (a server resolving many ids offline)."""
_SILENT_SINCE: dict[str, float] = {}


def _hub_answers(host: str) -> bool:
    import time

    since = _SILENT_SINCE.get(host)
    if since is not None and time.monotonic() - since < _SILENT_FOR_S:
        return False
    if _reachable(host):
        _SILENT_SINCE.pop(host, None)
        return True
    _SILENT_SINCE[host] = time.monotonic()
    return False


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether the Hub answers on port 443 within ``timeout`` seconds (so offline fails fast). The socket's
    timeout does not bound the name lookup, which an unanswering resolver holds for 5 s and more per try:
    the probe runs in a thread that is given up on after ``timeout``."""
    import socket
    import threading

    answered: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                answered.append(True)
        except OSError:
            answered.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered) and answered[0]


def origin(name: object, filename: str = "config.json") -> str | None:
    """The assumptions line for a model given as a Hub id that was already located (or stood in for by a
    preset), else None."""
    if not isinstance(name, str) or not is_repo_id(name):
        return None
    located = _LOCATED.get((str(cache_dir()), name, filename))
    return located.note if located else _STOOD_IN.get((str(cache_dir()), name), (None, None))[1]


_STOOD_IN: dict[tuple[str, str], tuple[str, str]] = {}
"""(cache, repo id) -> (preset key, assumptions line) for the Hub ids a preset stands in for."""


def stand_in(repo_id: str) -> str | None:
    """The preset already standing in for ``repo_id`` (so a second estimate probes nothing), else None."""
    return _STOOD_IN.get((str(cache_dir()), repo_id), (None, None))[0]


def record_stand_in(repo_id: str, key: str, note: str) -> None:
    _STOOD_IN[(str(cache_dir()), repo_id)] = (key, note)
