"""``@record``: the frozen, slotted dataclass that every costplan value type is, cheaper to define.

For each dataclass, Python 3.11 writes the source of ``__init__``, ``__eq__``, ``__hash__``,
``__repr__`` and (frozen) ``__setattr__`` and ``__delattr__``, and compiles each: about 0.7 ms a
class, 45 ms for the ~60 value types that ``costplan estimate`` imports, a third of its cold start
(benchmarks/cold_start.py). Only ``__init__`` differs in substance from class to class. So a record
is a plain ``@dataclass(slots=True)`` whose other five methods are written once, here, and shared;
each class keeps the tuples of its field names. They behave as the generated ones do: equality and
hash over the fields' values as one tuple, equality only within one class, ``Name(field=value, ...)``
for the repr, and ``FrozenInstanceError`` on assigning or deleting a field. Frozen is enforced as
"set once": ``__init__`` fills each empty slot, and a slot that holds a value cannot be written again.
That costs ``__init__`` about 0.3 us a field (about 1.5 ms of a 4 ms estimate), against the 18 ms
that compiling the frozen methods cost at every start. ``fields``, ``replace`` and ``asdict`` work
as on any dataclass.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from dataclasses import FrozenInstanceError, dataclass, fields
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """The values of ``names`` as one tuple (``attrgetter`` returns a bare value for one name)."""
    if len(names) > 1:
        return attrgetter(*names)
    if names:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    return lambda obj: ()


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    compared = self.__class__._record_compared
    return compared(self) == compared(other)


def _hash(self: Any) -> int:
    return hash(self.__class__._record_hashed(self))


@reprlib.recursive_repr()
def _repr(self: Any) -> str:
    cls = self.__class__
    values = cls._record_shown_values(self)
    shown = ", ".join(f"{name}={value!r}" for name, value in zip(cls._record_shown, values, strict=True))
    return f"{cls.__qualname__}({shown})"


_EMPTY = object()
_object_setattr = object.__setattr__


def _set_once(self: Any, name: str, value: Any) -> None:
    """Frozen: each field is set once, by ``__init__`` (or ``copy``/``pickle`` filling a new
    object), and never again; an empty slot is the only one that may be written."""
    if getattr(self, name, _EMPTY) is not _EMPTY:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")
    _object_setattr(self, name, value)


def _no_delete(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


@dataclass_transform(frozen_default=True)
def record(cls: type[T] | None = None, /, *, kw_only: bool = False) -> Any:
    """``@record`` or ``@record(kw_only=True)``: as ``@dataclass(frozen=True, slots=True)`` with the
    methods above. An ``__eq__``, ``__hash__`` or ``__repr__`` the class writes itself is kept."""

    def wrap(body: type[T]) -> type[T]:
        own = {name for name in ("__eq__", "__hash__", "__repr__") if name in body.__dict__}
        made: Any = dataclass(slots=True, kw_only=kw_only, eq=False, repr=False)(body)
        every = fields(made)
        shown = tuple(f.name for f in every if f.repr)
        made._record_compared = _getter(tuple(f.name for f in every if f.compare))
        made._record_hashed = _getter(tuple(f.name for f in every if (f.compare if f.hash is None else f.hash)))
        made._record_shown = shown
        made._record_shown_values = _getter(shown)
        made.__setattr__, made.__delattr__ = _set_once, _no_delete
        for name, shared in (("__eq__", _eq), ("__hash__", _hash), ("__repr__", _repr)):
            if name not in own:
                setattr(made, name, shared)
        return made

    return wrap if cls is None else wrap(cls)
