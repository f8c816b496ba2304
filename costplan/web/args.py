"""Query parameters to a ``costplan`` argument list, read off the click command's own options.

The API takes the CLI's long option names as query parameters (``seq-len=4096``, ``grad-ckpt=true``,
flags as true/false, an empty value or ``auto`` for the default). Because the argument list is built
from the command's options, an option added to the CLI later is taken over the web unchanged, with
the CLI's own conversion and messages. Refused here, before anything runs: options that take a path
on the server (``--profile``, ``--out``), a ``model`` that is neither a preset name nor a Hugging Face
Hub id, repeated or overlong parameters, and searches wider than the web allows.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

COMMANDS = ("estimate", "compare", "plan", "cram")
"""Commands answered under ``/api/<command>`` with the command's ``--json`` object."""

MAX_VALUE_CHARS = 200
MAX_PARAMS = 64
WEB_LIMITS = {("plan", "max-gpus"): 1024}
"""Upper bounds tighter than the CLI's, so that no request searches for long (the CLI allows 16,384)."""

IGNORED = frozenset({"json", "brief"})  # the API always answers JSON; --brief only shortens the text view
_TRUE, _FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_PRESET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_HUB_ID = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]{0,95})/([A-Za-z0-9][A-Za-z0-9._-]{0,95})")


class RequestError(Exception):
    """A request the API refuses: its HTTP status and a one-line message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


@dataclass(frozen=True, slots=True)
class WebOption:
    """One option of a command as the API takes it."""

    name: str
    """The query parameter: the long option without its leading dashes (``seq-len``)."""
    flag: bool
    """Given as true/false rather than a value."""
    negative: str | None
    """The ``--no-...`` spelling of a two-way flag, if it has one."""
    path: bool
    """Takes a path on the server: never accepted from a request."""
    default: Any
    choices: tuple[str, ...] | None
    help: str


def command(name: str) -> click.Command:
    from costplan.cli import cli

    found = cli.commands.get(name)
    if found is None:
        raise RequestError(f"No such command {name!r}.", status=404)
    return found


def web_options(command_name: str) -> dict[str, WebOption]:
    """The command's options by query name (the ones a request may not give are marked, not left out)."""
    options: dict[str, WebOption] = {}
    for param in command(command_name).params:
        if not isinstance(param, click.Option) or not param.expose_value or param.hidden:
            continue
        long_names = [o for o in param.opts if o.startswith("--")]
        if not long_names:
            continue
        name = long_names[0][2:]
        if name in IGNORED:
            continue
        negative = next((o for o in param.secondary_opts if o.startswith("--")), None)
        choices = tuple(param.type.choices) if isinstance(param.type, click.Choice) else None
        default = param.default if isinstance(param.default, (str, int, float, bool)) else None  # not click's UNSET
        if default is None and isinstance(param.show_default, str) and param.show_default != "auto":
            default = param.show_default  # a default the command resolves itself (--model: 7b, --method: lora)
        options[name] = WebOption(name=name, flag=param.is_flag and param.is_bool_flag, negative=negative,
                                  path=isinstance(param.type, (click.Path, click.File)), default=default,
                                  choices=choices, help=" ".join((param.help or "").split()))
    return options


def describe(command_names: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    """What each command takes, for the page and for people (``/api/options``)."""
    return {name: [{"name": o.name, "flag": o.flag, "default": o.default, "choices": o.choices, "help": o.help}
                   for o in web_options(name).values() if not o.path]
            for name in command_names}


def single_values(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Query pairs as a dict, refusing repeats, too many and overlong values (scalars only)."""
    if len(pairs) > MAX_PARAMS:
        raise RequestError(f"Too many parameters ({len(pairs)}; at most {MAX_PARAMS}).")
    values: dict[str, str] = {}
    for key, value in pairs:
        if key in values:
            raise RequestError(f"Give {key} once: query parameters are single values.")
        if len(value) > MAX_VALUE_CHARS:
            raise RequestError(f"The value of {key} is longer than {MAX_VALUE_CHARS} characters.")
        values[key] = value
    return values


def build_args(command_name: str, params: dict[str, str], server: dict[str, str] | None = None,
               as_json: bool = True) -> list[str]:
    """``[command, --option=value, ..., --json]`` from query parameters; ``server`` holds values the
    server itself sets (a resolved model file, a temporary output folder), which skip the checks."""
    options = web_options(command_name)
    args = [command_name]
    for name, raw in params.items():
        value = raw.strip()
        if name in IGNORED or value == "":
            continue
        if not _NAME.fullmatch(name):
            raise RequestError(f"No such option {name[:40]!r}.")
        option = options.get(name)
        if option is None:  # click's own message, with its did-you-mean
            args.append(f"--{name}={value}")
            continue
        if option.path:
            raise RequestError(f"{name} names a file on the server, which the web API never reads or writes.")
        if server and name in server:  # a Hub id the server has resolved to its cached config.json
            continue
        if name == "model":
            check_model_name(value)
        limit = WEB_LIMITS.get((command_name, name))
        if limit is not None and _number(value) > limit:
            raise RequestError(f"{name} is at most {limit:,} over the web (the command line allows more).")
        if option.flag:
            args += _flag(option, value)
        else:
            args.append(f"--{name}={value}")
    for name, value in (server or {}).items():
        args.append(f"--{name}={value}")
    return args + ["--json"] if as_json else args


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0  # not a number: the command says so in its own words


def _flag(option: WebOption, value: str) -> list[str]:
    word = value.lower()
    if word == "auto":
        return []
    if word in _TRUE:
        return [f"--{option.name}"]
    if word in _FALSE:
        return [option.negative] if option.negative else []
    raise RequestError(f"{option.name} is true or false (or auto), not {value[:40]!r}.")


# --- model: a preset name or a Hub id from the local cache, never a path -------------------------

def check_model_name(value: str) -> str:
    """``"preset"`` or ``"hub"``; anything that could name a path on the server is refused."""
    if _PRESET.fullmatch(value) and not value.lower().endswith(".json") and value not in (".", ".."):
        return "preset"
    match = _HUB_ID.fullmatch(value)
    if match and ".." not in value and not any(p.lower().endswith(".json") for p in match.groups()):
        return "hub"
    raise RequestError(f"model {value[:60]!r} is neither a preset name nor a Hugging Face Hub id (owner/name); "
                       "the web API never reads paths on the server: upload a config.json instead.")


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads (its environment variables, then its default)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = Path(os.environ["XDG_CACHE_HOME"]).expanduser() if os.environ.get("XDG_CACHE_HOME") else (
        Path.home() / ".cache")
    return base / "huggingface" / "hub"


def hub_config(repo_id: str) -> Path:
    """The cached ``config.json`` of a Hub model (the ``main`` revision, else the newest snapshot).

    Only the local cache is read: the server never downloads.
    """
    if check_model_name(repo_id) != "hub":
        raise RequestError(f"{repo_id!r} is not a Hub id.")
    folder = hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    snapshots = folder / "snapshots"
    candidates: list[Path] = []
    ref = folder / "refs" / "main"
    if ref.is_file():
        revision = ref.read_text(encoding="utf-8").strip()
        if re.fullmatch(r"[0-9a-f]{6,64}", revision):
            candidates.append(snapshots / revision / "config.json")
    if snapshots.is_dir():
        candidates += sorted((p / "config.json" for p in snapshots.iterdir() if p.is_dir()),
                             key=lambda p: p.parent.stat().st_mtime, reverse=True)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise RequestError(f"{repo_id} is not in the local Hugging Face cache, and the server never downloads: "
                       f"fetch it there first (huggingface-cli download {repo_id} config.json) or upload its "
                       "config.json.")
