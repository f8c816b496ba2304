"""The Starlette application of ``costplan serve``: the page, and the JSON API over the CLI's commands.

``GET /api/<command>?<option>=<value>...`` for estimate, compare, plan and cram answers exactly what
``costplan <command> ... --json`` prints; ``POST`` the same with a config.json (the request body, or a
multipart field ``config``) instead of ``model``. A mistake is HTTP 400 ``{"error": "<message>"}``, the
message being the CLI's ``Error:`` line without the ``Error:``. ``/api/report?format=md|html|json``
streams back one file of ``costplan report``. Every file a request needs (an upload, a Hub config, a
report) lives in a temporary folder that is removed when the answer is sent.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from costplan.errors import shown
from costplan.web.args import COMMANDS, RequestError, build_args, check_model_name, describe, hub_config, single_values
from costplan.web.workers import Busy, Outcome, Timeout, WorkerPool

STATIC = Path(__file__).resolve().parent / "static"
MAX_UPLOAD_BYTES = 64 * 1024
"""A config.json is a few KiB; anything larger is refused (HTTP 413) before it is written."""
_MULTIPART_SLACK = 4096
REPORT_FORMATS = {"md": ("report.md", "text/markdown; charset=utf-8"),
                  "html": ("report.html", "text/html; charset=utf-8"),
                  "json": ("report.json", "application/json")}
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                                 b"script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'"),
    (b"referrer-policy", b"no-referrer"),
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    workers: int = 2
    """Worker processes: requests answered at once."""
    timeout_s: float = 30.0
    """Longest a request may run (a plan search, a report) before it is stopped."""
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    start_method: str = "spawn"


@dataclass(slots=True)
class _Runtime:
    pool: WorkerPool
    scratch: Path
    settings: Settings
    listings: dict[str, str] = field(default_factory=dict)


def create_app(settings: Settings | None = None, allowed_hosts: list[str] | None = None) -> Starlette:
    """The application; ``allowed_hosts`` (e.g. localhost names) refuses requests for other host names,
    which keeps a page on another site from reaching the server through DNS rebinding."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        scratch = Path(tempfile.mkdtemp(prefix="costplan-web-"))
        pool = WorkerPool(settings.workers, str(scratch / "workers"), settings.start_method)
        try:
            await run_in_threadpool(pool.start)
            app.state.runtime = _Runtime(pool, scratch, settings)
            yield
        finally:
            pool.close()
            shutil.rmtree(scratch, ignore_errors=True)

    routes = [
        Route("/", index),
        Route("/api/options", options),
        Route("/api/models", partial(listing, name="models")),
        Route("/api/gpus", partial(listing, name="gpus")),
        Route("/api/report", report, methods=["GET", "POST"]),
        Route("/api/{command}", api_command, methods=["GET", "POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(_SecurityHeaders)]
    if allowed_hosts:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


class _SecurityHeaders:
    """No sniffing, no framing, and scripts, styles and images from this server only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")


async def options(request: Request) -> Response:
    return JSONResponse(describe((*COMMANDS, "report")))


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def listing(request: Request, name: str) -> Response:
    """``costplan models --json`` / ``gpus --json``, run once and kept."""
    runtime: _Runtime = request.app.state.runtime
    if name not in runtime.listings:
        outcome = await _run(runtime, [name, "--json"], name)
        if isinstance(outcome, Response):
            return outcome
        if outcome.status != 200:
            return _error(outcome.text, outcome.status)
        runtime.listings[name] = outcome.text
    return Response(runtime.listings[name], media_type="application/json")


async def api_command(request: Request) -> Response:
    name = request.path_params["command"]
    if name not in COMMANDS:
        return _error(f"No such endpoint /api/{name}; the API answers {', '.join(COMMANDS)}, report, options, "
                      "models and gpus.", 404)
    return await _answer(request, name, as_json=True)


async def report(request: Request) -> Response:
    """One file of ``costplan report`` (``format`` md, html or json), written to a temporary folder."""
    return await _answer(request, "report", as_json=False)


async def _answer(request: Request, name: str, as_json: bool) -> Response:
    runtime: _Runtime = request.app.state.runtime
    try:
        params = single_values(list(request.query_params.multi_items()))
        fmt = params.pop("format", "md") if name == "report" else None
        if fmt is not None and fmt not in REPORT_FORMATS:
            raise RequestError(f"format is one of {', '.join(REPORT_FORMATS)}, not {fmt[:20]!r}.")
        upload = await _uploaded_config(request, runtime.settings.max_upload_bytes) \
            if request.method == "POST" else None
        with _scratch(runtime) as folder:
            server, labels = _model_file(params, upload, folder)
            if fmt is not None:
                server["out"] = str(folder / "report")
            args = build_args(name, params, server, as_json=as_json)
            outcome = await _run(runtime, args, name)
            if isinstance(outcome, Response):
                return outcome
            text = outcome.text
            for path, label in labels.items():
                text = text.replace(path, label)
            if outcome.status != 200:
                return _error(text, outcome.status)
            if fmt is None:
                return Response(text, media_type="application/json")
            filename, media_type = REPORT_FORMATS[fmt]
            content = (folder / "report" / filename).read_bytes()
            return Response(content, media_type=media_type,
                            headers={"content-disposition": f'attachment; filename="costplan-{filename}"'})
    except RequestError as exc:
        return _error(exc.message, exc.status)


async def _run(runtime: _Runtime, args: list[str], name: str) -> Outcome | Response:
    limit = runtime.settings.timeout_s
    try:
        return await run_in_threadpool(runtime.pool.run, args, limit)
    except Timeout:
        what = "The plan search" if name == "plan" else f"costplan {name}"
        hint = (" Narrow it: name the GPU types (gpu=h100,a100), lower max-gpus, or search fewer methods and "
                "precisions." if name in ("plan", "report") else "")
        return _error(f"{what} took longer than {limit:g} s and was stopped.{hint}", 504)
    except Busy:
        return _error(f"The server stayed busy for {limit:g} s; try again.", 503)


@contextmanager
def _scratch(runtime: _Runtime) -> Iterator[Path]:
    """A folder of its own for one request, removed afterwards."""
    folder = runtime.scratch / "requests" / uuid.uuid4().hex
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class _Upload:
    content: bytes
    filename: str


async def _uploaded_config(request: Request, limit: int) -> _Upload | None:
    """The config.json of a POST: the body itself, or the multipart field ``config``; at most ``limit`` bytes."""
    too_large = RequestError(f"The uploaded config.json is larger than {limit // 1024} KiB; a config.json is a few "
                             "KiB.", status=413)
    multipart = request.headers.get("content-type", "").startswith("multipart/form-data")
    ceiling = limit + (_MULTIPART_SLACK if multipart else 0)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > ceiling:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > ceiling:
            raise too_large
    if not multipart:
        return _Upload(bytes(body), "config.json") if body.strip() else None
    replay = Request(request.scope, receive=_replay(bytes(body)))
    async with replay.form(max_files=1, max_fields=16, max_part_size=limit) as form:
        part = form.get("config")
        if part is None or isinstance(part, str):
            raise RequestError("POST the config.json as a multipart file field named config, or as the body.")
        content = await part.read()
        if len(content) > limit:
            raise too_large
        return _Upload(content, part.filename or "config.json") if content.strip() else None


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _model_file(params: dict[str, str], upload: _Upload | None, folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The ``--model`` the server gives (a file in ``folder``), and how to name that file in messages."""
    model = params.get("model", "").strip()
    if upload is not None:
        if model:
            raise RequestError("Give model or upload a config.json, not both.")
        path = _place(folder, _folder_name(upload.filename), upload.content)
        return {"model": str(path)}, _path_names(path, "uploaded config.json")
    if model and check_model_name(model) == "hub":
        source = hub_config(model)
        if source.stat().st_size > MAX_UPLOAD_BYTES:
            raise RequestError(f"The cached config.json of {model} is larger than {MAX_UPLOAD_BYTES // 1024} KiB.")
        path = _place(folder, model.split("/")[1], source.read_bytes())
        return {"model": str(path)}, _path_names(path, f"{model} config.json (local Hub cache)")
    return {}, {}


def _path_names(path: Path, label: str) -> dict[str, str]:
    """How a server path is named in messages: whole, or cut short as ``errors.shown`` quotes it."""
    return {shown(str(path)): repr(label), str(path): label}


def _folder_name(filename: str) -> str:
    """The model's name in the answer: the upload's file name without ``.json`` (``config`` says nothing)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(filename).name.rsplit(".json", 1)[0]).strip(".-")[:64]
    return stem if stem and stem.lower() != "config" else "uploaded-model"


def _place(folder: Path, name: str, content: bytes) -> Path:
    target = folder / "model" / name / "config.json"
    target.parent.mkdir(parents=True)
    target.write_bytes(content)
    return target


def serve(host: str, port: int, settings: Settings | None = None, log_level: str = "info") -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    loopback = host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
    hosts = ["127.0.0.1", "localhost", "::1", "[::1]", host] if loopback else None
    config: dict[str, Any] = {"host": host, "port": port, "log_level": log_level, "access_log": False}
    uvicorn.run(create_app(settings, allowed_hosts=hosts), **config)
