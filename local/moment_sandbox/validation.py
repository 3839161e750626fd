"""The field rules of Moment's customers and accounts, as pure functions over a parsed JSON body.

Each function returns only the fields the body sent, validated (so a PATCH changes only those), or
raises a 400 `Problem` that names the offending parameter. Rules that need the stored objects
(uniqueness, merged metadata size) live in `store.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from moment_sandbox.messages import invalid, missing

CURRENCIES = ("ZAR", "USD")
REFERENCE = re.compile(r"[a-zA-Z0-9_-]+")  # external_reference, and the {customer}/{account} it stands for
MAX_REFERENCE_LENGTH = 255
MAX_TEXT_LENGTH = 255
E164_PHONE = re.compile(r"\+[1-9][0-9]{1,14}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
MAX_METADATA_KEYS = 10
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 500

CUSTOMER_FIELDS = frozenset(
    {"external_reference", "name", "email", "phone", "currency", "balance", "metadata"}
)
ACCOUNT_FIELDS = frozenset({"external_reference", "name", "currency", "balance", "metadata"})


def customer_create(body: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    return _fields(body, CUSTOMER_FIELDS, required=("external_reference",), prefix=prefix)


def customer_update(body: Mapping[str, Any]) -> dict[str, Any]:
    return _fields(body, CUSTOMER_FIELDS, required=())


def account_create(body: Mapping[str, Any]) -> tuple[dict[str, Any], str | dict[str, Any]]:
    """The account's own fields, and its customer: a reference to resolve, or fields to create."""
    if "customer" not in body:
        raise missing("customer is required: a customer id, external_reference or customer object")
    own = {name: value for name, value in body.items() if name != "customer"}
    return _fields(own, ACCOUNT_FIELDS, required=("external_reference",)), _customer(body["customer"])


def account_update(body: Mapping[str, Any]) -> dict[str, Any]:
    return _fields(body, ACCOUNT_FIELDS, required=())


def reference(value: Any, name: str) -> str:
    """A Moment id or an external_reference: both are 1-255 of [a-zA-Z0-9_-]."""
    if not isinstance(value, str) or not REFERENCE.fullmatch(value):
        raise invalid(f"{name} must be a string of letters, digits, '_' and '-'")
    if len(value) > MAX_REFERENCE_LENGTH:
        raise invalid(f"{name} must be at most {MAX_REFERENCE_LENGTH} characters")
    return value


def metadata_size(metadata: Mapping[str, str], name: str = "metadata") -> None:
    if len(metadata) > MAX_METADATA_KEYS:
        raise invalid(f"{name} may hold at most {MAX_METADATA_KEYS} keys")


def _customer(value: Any) -> str | dict[str, Any]:
    if isinstance(value, dict):
        return customer_create(value, prefix="customer.")
    return reference(value, "customer")


def _fields(
    body: Mapping[str, Any], allowed: Collection[str], required: Collection[str], prefix: str = ""
) -> dict[str, Any]:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise invalid(f"unknown parameter {prefix}{unknown[0]}")
    for name in required:
        if name not in body:
            raise missing(f"{prefix}{name} is required")
    fields = {name: VALIDATORS[name](value, prefix + name) for name, value in body.items()}
    if "balance" in fields and "currency" not in fields:
        raise missing(f"{prefix}currency is required when {prefix}balance is sent")
    return fields


def _optional_text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT_LENGTH:
        raise invalid(f"{name} must be a string of at most {MAX_TEXT_LENGTH} characters, or null")
    return value


def _email(value: Any, name: str) -> str | None:
    text = _optional_text(value, name)
    if text is not None and not EMAIL.fullmatch(text):
        raise invalid(f"{name} must be an email address")
    return text


def _phone(value: Any, name: str) -> str | None:
    text = _optional_text(value, name)
    if text is not None and not E164_PHONE.fullmatch(text):
        raise invalid(f"{name} must be an E.164 phone number, e.g. +27123456789")
    return text


def _currency(value: Any, name: str) -> str:
    if value not in CURRENCIES:
        raise invalid(f"{name} must be one of {', '.join(CURRENCIES)}")
    return str(value)


def _balance(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{name} must be an integer amount in minor units")
    return value


def metadata(value: Any, name: str = "metadata") -> dict[str, str]:
    if not isinstance(value, dict):
        raise invalid(f"{name} must be an object of string keys and string values")
    metadata_size(value, name)
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY_LENGTH:
            raise invalid(f"{name} keys must be at most {MAX_METADATA_KEY_LENGTH} characters")
        if not isinstance(item, str) or len(item) > MAX_METADATA_VALUE_LENGTH:
            raise invalid(f"{name}.{key} must be a string of at most {MAX_METADATA_VALUE_LENGTH} characters")
    return dict(value)


VALIDATORS: dict[str, Callable[[Any, str], Any]] = {
    "external_reference": reference,
    "name": _optional_text,
    "email": _email,
    "phone": _phone,
    "currency": _currency,
    "balance": _balance,
    "metadata": metadata,
}
