"""The one error type for user mistakes: bad names, broken files, impossible requests.

Impossible numeric specs raise ``ValueError`` from the spec constructors; the CLI turns
both into a single line and exit code 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CostplanError(Exception):
    """A mistake in what the user asked for, explained in one sentence."""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> CostplanError:
    """Build an error for an unknown ``kind`` (model, GPU, ...) with a did-you-mean hint."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name.lower(), choices, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = f" Known: {', '.join(choices)}." if len(choices) <= 40 else ""
    return CostplanError(f"Unknown {kind} {name!r}.{hint}{listing}")
