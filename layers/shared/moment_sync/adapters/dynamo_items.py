"""Plain Python values to and from DynamoDB's attribute-value form (numbers come back as int)."""

from __future__ import annotations

import base64
from decimal import Decimal, DecimalException
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {name: _attribute(value) for name, value in values.items() if value is not None}


def to_values(values: dict[str, Any]) -> dict[str, Any]:
    """Expression attribute values: the same serialisation, keyed by placeholder."""
    return {name: _attribute(value) for name, value in values.items()}


# A number with more digits than DynamoDB keeps (38) is boto3's to refuse.
_MOST_DIGITS = 38
_LARGEST_NUMBER = 10**_MOST_DIGITS


def _attribute(value: Any) -> dict[str, Any]:
    """boto3's TypeSerializer, with the values every request is made of (text, whole numbers, flags,
    maps and lists of them) done here: boto3's dispatch costs some 40 µs per request, paid by every
    DynamoDB call of every function. Anything else (Decimal, bytes, sets, subclasses such as an enum
    member, a number out of range) is boto3's, so each value comes out exactly as boto3 makes it."""
    kind = type(value)
    if kind is str:
        return {"S": value}
    if kind is int and -_LARGEST_NUMBER < value < _LARGEST_NUMBER:
        return {"N": str(value)}
    if kind is bool:
        return {"BOOL": value}
    if value is None:
        return {"NULL": True}
    if kind is dict:
        return {"M": {name: _attribute(inner) for name, inner in value.items()}}
    if kind is list:
        return {"L": [_attribute(inner) for inner in value]}
    return _serializer.serialize(value)  # type: ignore[no-any-return]  # boto3 is untyped


def from_item(item: dict[str, Any], *, unreadable_numbers_as_text: bool = False) -> dict[str, Any]:
    """With `unreadable_numbers_as_text`, a number boto3 refuses to read (over 38 digits: only a
    store that does not enforce DynamoDB's limits could hold one) comes back as its text instead of
    raising, so one such item cannot stop every reader of its table."""
    return {name: _plain_value(value, unreadable_numbers_as_text) for name, value in item.items()}


def _plain_value(value: dict[str, Any], unreadable_numbers_as_text: bool) -> Any:
    read = _read_common(value)
    if read is not _BOTO3:
        return read
    try:
        return _plain(_deserializer.deserialize(_binary_as_bytes(value)))
    except DecimalException:
        if unreadable_numbers_as_text and isinstance(value.get("N"), str):
            return value["N"]
        raise


_BOTO3 = object()  # `_read_common`: this one is boto3's to read


def _read_common(value: dict[str, Any]) -> Any:
    """What boto3's TypeDeserializer and `_plain` make of text, whole numbers of at most 38 digits,
    flags, nulls, and maps and lists of them, read here (boto3's dispatch and its Decimal for every
    number cost some 3 µs per attribute); `_BOTO3` for anything else, which boto3 reads (or refuses)."""
    if len(value) != 1:
        return _BOTO3
    [(kind, inner)] = value.items()
    if kind == "S":
        return inner
    if kind == "N":
        if type(inner) is str:
            digits = inner[1:] if inner.startswith("-") else inner
            if digits.isascii() and digits.isdigit() and len(digits) <= _MOST_DIGITS:
                return int(inner)
        return _BOTO3
    if kind == "BOOL":
        return inner
    if kind == "NULL":
        return None
    if kind == "M":
        return {name: _read_nested(member) for name, member in inner.items()}
    if kind == "L":
        return [_read_nested(member) for member in inner]
    return _BOTO3


def _read_nested(value: dict[str, Any]) -> Any:
    read = _read_common(value)
    # Inside a map or list, as boto3 reads a whole item: no base64 text taken for binary here.
    return _plain(_deserializer.deserialize(value)) if read is _BOTO3 else read


def _binary_as_bytes(value: dict[str, Any]) -> dict[str, Any]:
    """A Lambda stream event carries binary attributes as base64 text; the SDK gives bytes."""
    if "B" in value and isinstance(value["B"], str):
        return {"B": base64.b64decode(value["B"])}
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else value
    if isinstance(value, dict):
        return {key: _plain(inner) for key, inner in value.items()}
    if isinstance(value, list | set):
        return [_plain(inner) for inner in value]
    if hasattr(value, "value") and isinstance(getattr(value, "value", None), bytes):
        return bytes(value.value)  # boto3's Binary wrapper
    return value


def error_code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    code: str = response.get("Error", {}).get("Code", "")
    return code
