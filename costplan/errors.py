"""The one error type for user mistakes: bad names, broken files, impossible requests.

``CostplanError`` subclasses ``ValueError``, so a caller of the Python API catches every bad
argument with either name. Impossible numeric specs raise ``ValueError`` from the spec
constructors; the CLI turns both into a single line and exit code 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import PurePath


class CostplanError(ValueError):
    """A mistake in what the user asked for, explained in one sentence."""


SHOWN_CHARACTERS = 80
"""Longer names and paths are cut in messages, so an error stays one readable line."""


def shown(value: object) -> str:
    """A name, path or value for a message: quoted, cut to a readable length (a path keeps its end)."""
    quoted = isinstance(value, (str, PurePath))
    text = str(value) if quoted else repr(value)
    if len(text) > SHOWN_CHARACTERS:
        cut = "..." + text[-SHOWN_CHARACTERS:] if quoted and "/" in text else text[:SHOWN_CHARACTERS] + "..."
        return (repr(cut) if quoted else cut) + f" ({len(text)} characters)"
    return repr(text) if quoted else text


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> CostplanError:
    """Build an error for an unknown ``kind`` (model, GPU, ...) with a did-you-mean hint."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(str(name).lower()[:100], choices, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = f" Known: {', '.join(choices)}." if len(choices) <= 40 else ""
    return CostplanError(f"Unknown {kind} {shown(name)}.{hint}{listing}")
