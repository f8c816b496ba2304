"""Start `costplan serve` on a free port of 127.0.0.1 for a benchmark, and stop it afterwards."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def serving(workers: int = 2) -> Iterator[str]:
    """The base URL of a fresh `python -m costplan serve` (this checkout first on the path)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="costplan-bench-") as folder:
        log_path = Path(folder) / "server.log"
        with log_path.open("w") as log:
            process = subprocess.Popen([sys.executable, "-m", "costplan", "serve", "--port", str(port), "--workers",
                                        str(workers)], env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
            base = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + 90
                while True:
                    try:
                        urllib.request.urlopen(f"{base}/api/options", timeout=5).read()
                        break
                    except OSError:
                        if process.poll() is not None or time.monotonic() > deadline:
                            raise SystemExit(f"costplan serve did not start:\n{log_path.read_text()}") from None
                        time.sleep(0.2)
                yield base
            finally:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
