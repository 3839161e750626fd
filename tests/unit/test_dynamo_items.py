"""dynamo_items reads and writes the common attribute values itself (text, whole numbers, flags, maps,
lists): every value must come out exactly as boto3's TypeSerializer / TypeDeserializer (and `_plain`)
make it, or fail as they do, including what is left to boto3 (Decimal, bytes, sets, enum members,
numbers past 38 digits, a stream record's base64 binary)."""

from __future__ import annotations

import base64
import enum
from decimal import Decimal, DecimalException, Inexact, Rounded
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from hypothesis import given, settings
from hypothesis import strategies as st

from moment_sync.adapters.dynamo_items import _plain, from_item, to_item, to_values


def boto3_value(value: Any) -> Any:
    """What the module did before it read any value itself: boto3 for all of it."""
    try:
        return ("ok", TypeSerializer().serialize(value))
    except Exception as error:  # the same failure is the point
        return ("error", type(error))


def ours(value: Any) -> Any:
    try:
        return ("ok", to_values({":v": value})[":v"])
    except Exception as error:
        return ("error", type(error))


def boto3_read(value: dict[str, Any], *, as_text: bool = False) -> Any:
    if "B" in value and isinstance(value["B"], str):
        value = {"B": base64.b64decode(value["B"])}
    try:
        return ("ok", _plain(TypeDeserializer().deserialize(value)))
    except DecimalException:
        if as_text and isinstance(value.get("N"), str):
            return ("ok", value["N"])
        return ("error", DecimalException)
    except Exception as error:
        return ("error", type(error))


def our_read(value: dict[str, Any], *, as_text: bool = False) -> Any:
    try:
        return ("ok", from_item({"v": value}, unreadable_numbers_as_text=as_text)["v"])
    except DecimalException:
        return ("error", DecimalException)
    except Exception as error:
        return ("error", type(error))


class Kind(enum.StrEnum):
    CUSTOMER = "customer"


leaves = st.one_of(
    st.text(max_size=8),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([0, -1, 10**38 - 1, -(10**38) + 1, 10**38, -(10**38)]),
    st.booleans(),
    st.none(),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.binary(max_size=4),
    st.just(Kind.CUSTOMER),
    st.floats(allow_nan=False),
    st.frozensets(st.integers(min_value=0, max_value=9), min_size=1).map(set),
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3)
        | st.tuples(inner)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_every_value_is_written_as_boto3_writes_it(value: Any) -> None:
    assert repr(ours(value)) == repr(boto3_value(value))


number_texts = st.one_of(
    st.from_regex(r"-?[0-9]{1,40}", fullmatch=True),
    st.sampled_from(["-0", "007", "1E+2", "1.5", "-1.50", "+3", "1_000", "١٢", "", "-", "9" * 38, "9" * 39]),
)
attribute_values: st.SearchStrategy[dict[str, Any]] = st.recursive(
    st.one_of(
        st.builds(lambda text: {"S": text}, st.text(max_size=6)),
        st.builds(lambda text: {"N": text}, number_texts),
        st.builds(lambda flag: {"BOOL": flag}, st.booleans()),
        st.just({"NULL": True}),
        st.builds(lambda data: {"B": data}, st.binary(max_size=4)),
        st.builds(lambda data: {"B": base64.b64encode(data).decode()}, st.binary(max_size=4)),
        st.just({"NS": ["1", "2.5"]}),
        st.just({"SS": ["a", "b"]}),
        st.just({}),
        st.just({"S": "a", "N": "1"}),
    ),
    lambda inner: (
        st.builds(lambda members: {"L": members}, st.lists(inner, max_size=3))
        | st.builds(lambda members: {"M": members}, st.dictionaries(st.text(max_size=4), inner, max_size=3))
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(attribute_values, st.booleans())
def test_every_value_is_read_as_boto3_reads_it(value: dict[str, Any], as_text: bool) -> None:
    # repr: a Decimal NaN (boto3 reads "1_000" so) is not equal to itself
    assert repr(our_read(value, as_text=as_text)) == repr(boto3_read(value, as_text=as_text))


def test_the_types_come_out_as_boto3s() -> None:
    # int, not Decimal; bytes, not Binary; a list, not a set; the 38-digit bound boto3 keeps
    read = from_item(
        {
            "n": {"N": "12"},
            "b": {"B": b"\x01"},
            "ns": {"NS": ["1", "2"]},
            "big": {"N": "9" * 38},
            "m": {"M": {"x": {"N": "-3"}}},
        }
    )
    assert read == {"n": 12, "b": b"\x01", "ns": [1, 2], "big": int("9" * 38), "m": {"x": -3}}
    assert all(type(read[name]) is int for name in ("n", "big"))
    with pytest.raises(DecimalException):
        from_item({"n": {"N": "9" * 39}})
    assert from_item({"n": {"N": "9" * 39}}, unreadable_numbers_as_text=True) == {"n": "9" * 39}
    assert to_item({"a": 1, "b": None, "c": Decimal("1.5"), "d": Binary(b"x")}) == {
        "a": {"N": "1"},
        "c": {"N": "1.5"},
        "d": {"B": Binary(b"x")},
    }
    with pytest.raises(TypeError):
        to_values({":f": 1.5})
    with pytest.raises((Inexact, Rounded)):
        to_values({":big": 10**38})
