"""Plain Python values to and from DynamoDB's attribute-value form (numbers come back as int)."""

from __future__ import annotations

import base64
from decimal import Decimal, DecimalException
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(value) for name, value in values.items() if value is not None}


def to_values(values: dict[str, Any]) -> dict[str, Any]:
    """Expression attribute values: the same serialisation, keyed by placeholder."""
    return {name: _serializer.serialize(value) for name, value in values.items()}


def from_item(item: dict[str, Any], *, unreadable_numbers_as_text: bool = False) -> dict[str, Any]:
    """With `unreadable_numbers_as_text`, a number boto3 refuses to read (over 38 digits: only a
    store that does not enforce DynamoDB's limits could hold one) comes back as its text instead of
    raising, so one such item cannot stop every reader of its table."""
    return {name: _plain_value(value, unreadable_numbers_as_text) for name, value in item.items()}


def _plain_value(value: dict[str, Any], unreadable_numbers_as_text: bool) -> Any:
    try:
        return _plain(_deserializer.deserialize(_binary_as_bytes(value)))
    except DecimalException:
        if unreadable_numbers_as_text and isinstance(value.get("N"), str):
            return value["N"]
        raise


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
