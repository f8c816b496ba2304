"""Worker processes that run ``costplan`` commands, each call bounded in time.

A request runs the very click command the CLI runs (``cli.main(args, standalone_mode=False)``) with
its standard output captured, so the API answers exactly what ``--json`` prints and the same one-line
message on a mistake, and an option added to the CLI later needs nothing here. Each worker is its own
process, started once and kept warm: a call that runs past its time limit is stopped by ending the
process, and a fresh worker takes its place. Workers run in an empty folder under the server's
temporary folder, so a name is never read as a relative path on the server, and matplotlib keeps its
cache there too (a report draws charts), so that no request writes anywhere else.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import queue
import threading
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Any

STARTUP_S = 120.0
"""Longest a fresh worker may take to import costplan and answer a first estimate (not counted in a request's limit)."""
READY = "ready"
PRELOAD = ("costplan.cli", "costplan.api", "costplan.compare", "costplan.plan", "costplan.cram",
           "costplan.serialize")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command did: 200 with its standard output, 400 with the CLI's message, 500 for a bug."""

    status: int
    text: str


class Timeout(Exception):
    """The command ran past its time limit and was stopped."""


class Busy(Exception):
    """Every worker stayed busy for the whole time limit."""


def run_command(args: list[str]) -> Outcome:
    """Run ``costplan <args>`` in this process: what it prints, or its ``Error:`` message."""
    import click

    from costplan.cli import cli, error_message

    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            cli.main(list(args), prog_name="costplan", standalone_mode=False)
    except click.ClickException as exc:
        return Outcome(400, error_message(exc))
    except click.exceptions.Exit as exc:
        if exc.exit_code:
            lines = err.getvalue().strip().splitlines() or [f"costplan exited with code {exc.exit_code}."]
            return Outcome(400, lines[-1])
    except click.Abort:
        return Outcome(400, "Aborted.")
    except Exception as exc:  # a bug: the CLI would print a traceback
        return Outcome(500, f"Internal error: {type(exc).__name__}: {exc}")
    return Outcome(200, out.getvalue())


def _serve(connection: Any, scratch: str) -> None:
    """A worker's loop: argument lists in, outcomes out, until told to stop (``None``)."""
    import importlib

    os.chdir(os.path.join(scratch, "cwd"))
    os.environ["MPLBACKEND"] = "Agg"
    os.environ["MPLCONFIGDIR"] = os.path.join(scratch, "matplotlib")
    for name in PRELOAD:
        importlib.import_module(name)
    run_command(["estimate", "--json"])  # warm the tables' caches
    connection.send(READY)
    while True:
        try:
            args = connection.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if args is None:
            return
        try:
            connection.send(run_command(args))
        except (BrokenPipeError, OSError):
            return


class _Worker:
    def __init__(self, context: Any, scratch: str) -> None:
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, scratch), daemon=True,
                                       name="costplan-web-worker")
        self.process.start()
        child.close()
        self.ready = False

    def wait_ready(self) -> None:
        """Block until the worker has started (its imports are not counted in a request's time limit)."""
        if self.ready:
            return
        if not self.connection.poll(STARTUP_S) or self.connection.recv() != READY:
            raise OSError("the worker process did not start")
        self.ready = True

    def call(self, args: list[str], timeout_s: float) -> Outcome:
        self.wait_ready()
        self.connection.send(args)
        if not self.connection.poll(timeout_s):
            raise Timeout
        return self.connection.recv()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.connection.close()


class WorkerPool:
    """``size`` warm worker processes; ``run`` hands a command to an idle one, waiting at most the limit.

    The workers run in ``scratch/cwd`` (kept empty) and keep matplotlib's cache in ``scratch/matplotlib``.
    """

    def __init__(self, size: int, scratch: str, start_method: str = "spawn") -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one worker, not {size}")
        self._context = multiprocessing.get_context(start_method)
        self._scratch, self._size = scratch, size
        for folder in ("cwd", "matplotlib"):
            os.makedirs(os.path.join(scratch, folder), exist_ok=True)
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        """Start the workers and wait until each is ready, so that the first requests are fast."""
        workers = [self._new() for _ in range(self._size)]
        for worker in workers:
            worker.wait_ready()
            self._idle.put(worker)

    def _new(self) -> _Worker:
        worker = _Worker(self._context, self._scratch)
        with self._lock:
            self._all.add(worker)
        return worker

    def _retire(self, worker: _Worker) -> None:
        with self._lock:
            self._all.discard(worker)
        worker.stop()

    def run(self, args: list[str], timeout_s: float) -> Outcome:
        """Run ``costplan <args>`` in a worker; ``Timeout`` past ``timeout_s`` (the worker is replaced)."""
        try:
            worker = self._idle.get(timeout=timeout_s)
        except queue.Empty:
            raise Busy from None
        try:
            outcome = worker.call(args, timeout_s)
        except Timeout:
            self._replace(worker)
            raise
        except (EOFError, OSError) as exc:  # the worker died (out of memory, killed)
            self._replace(worker)
            return Outcome(500, f"Internal error: the worker process ended ({type(exc).__name__}).")
        self._idle.put(worker)
        return outcome

    def _replace(self, worker: _Worker) -> None:
        self._retire(worker)
        if not self._closed:
            self._idle.put(self._new())

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers = list(self._all)
            self._all.clear()
        for worker in workers:
            worker.stop()
