"""@record behaves as @dataclass(frozen=True, slots=True) does, with its methods shared."""

import copy
import pickle
from dataclasses import FrozenInstanceError, asdict, dataclass, field, fields, replace

import pytest

from costplan.methods import QLora
from costplan.model import preset
from costplan.record import record


@record(kw_only=True)
class Point:
    x: float
    y: float = 0.0
    label: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reference:
    x: float
    y: float = 0.0
    label: str = field(default="", compare=False, repr=False)


@record
class Child(Point):
    z: int = 0


def test_equality_hash_and_repr_match_the_generated_ones():
    for a, b in ((Point(x=1.0, y=2.0), Point(x=1.0, y=2.0, label="other")),
                 (Reference(x=1.0, y=2.0), Reference(x=1.0, y=2.0, label="other"))):
        assert a == b and hash(a) == hash(b)  # label is not compared
        assert a != replace(a, y=3.0)
    assert repr(Point(x=1.0, y=2.0)) == "Point(x=1.0, y=2.0)"
    assert repr(Reference(x=1.0, y=2.0)).endswith("Reference(x=1.0, y=2.0)")
    assert hash(Point(x=1.0, y=2.0)) == hash(Reference(x=1.0, y=2.0)) == hash((1.0, 2.0))
    assert Point(x=1.0) != Reference(x=1.0)  # another class is never equal
    assert Child(x=1.0, z=3) != Point(x=1.0) and repr(Child(x=1.0, z=3)) == "Child(x=1.0, y=0.0, z=3)"


def test_a_record_is_frozen_and_slotted():
    p = Point(x=1.0)
    with pytest.raises(FrozenInstanceError):
        p.x = 2.0
    with pytest.raises(FrozenInstanceError):
        del p.y
    with pytest.raises(AttributeError):
        p.other = 1  # no __dict__
    assert not hasattr(p, "__dict__") and p == Point(x=1.0)


def test_fields_replace_asdict_copy_and_pickle_work():
    p = Point(x=1.0, y=2.0, label="a")
    assert [f.name for f in fields(p)] == ["x", "y", "label"]
    assert asdict(replace(p, y=5.0)) == {"x": 1.0, "y": 5.0, "label": "a"}
    for twin in (copy.copy(p), copy.deepcopy(p), pickle.loads(pickle.dumps(p))):
        assert twin == p and twin.label == "a"
        with pytest.raises(FrozenInstanceError):
            twin.x = 0.0


def test_costplans_own_records_compare_by_value():
    assert preset("llama-2-7b") == preset("llama-2-7b") and hash(preset("llama-2-7b")) == hash(preset("llama-2-7b"))
    assert preset("llama-2-7b") != preset("llama-3-8b")
    assert QLora(rank=16) == QLora(rank=16) != QLora(rank=8)
    assert repr(QLora(rank=16)).startswith("QLora(") and "rank=16" in repr(QLora(rank=16))
