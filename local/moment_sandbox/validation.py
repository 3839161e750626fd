"""The field rules of Moment's customers, accounts and bills, as pure functions over a parsed JSON body.

Each function returns only the fields the body sent, validated (so a PATCH changes only those), or
raises a 400 `Problem` that names the offending parameter. Rules that need the stored objects
(uniqueness, merged metadata size) live in `store.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from datetime import date
from typing import Any, Literal

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
BILL_FIELDS = frozenset(
    {
        "external_reference",
        "currency",
        "amount_due",
        "customer",
        "account",
        "bill_date",
        "due_date",
        "metadata",
    }
)
BILL_UPDATE_FIELDS = frozenset({"currency", "amount_paid", "metadata"})
MAX_BILL_AMOUNT = 99_999_999
CUSTOMER_ID_PREFIX = "bcus_"
ACCOUNT_ID_PREFIX = "bacc_"

# What a bill is raised on: an existing customer or account (by Moment id), or an account to create
# first (its fields, and its customer as account_create gives it).
BillOwner = (
    tuple[Literal["customer", "account"], str]
    | tuple[Literal["new_account"], tuple[dict[str, Any], str | dict[str, Any]]]
)


def customer_create(body: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    return _fields(body, CUSTOMER_FIELDS, required=("external_reference",), prefix=prefix)


def customer_update(body: Mapping[str, Any]) -> dict[str, Any]:
    return _fields(body, CUSTOMER_FIELDS, required=())


def account_create(body: Mapping[str, Any], prefix: str = "") -> tuple[dict[str, Any], str | dict[str, Any]]:
    """The account's own fields, and its customer: a reference to resolve, or fields to create."""
    if "customer" not in body:
        raise missing(f"{prefix}customer is required: a customer id, external_reference or customer object")
    own = {name: value for name, value in body.items() if name != "customer"}
    fields = _fields(own, ACCOUNT_FIELDS, required=("external_reference",), prefix=prefix)
    return fields, _customer(body["customer"], prefix)


def bill_create(body: Mapping[str, Any]) -> tuple[dict[str, Any], BillOwner]:
    """A bill's own fields, and its owner: `customer` (a bcus_ id) or `account` (a bacc_ id, or an
    account object, with its customer, to create first)."""
    own = {name: value for name, value in body.items() if name not in ("customer", "account")}
    fields = _fields(own, BILL_FIELDS, required=("external_reference", "currency", "amount_due"))
    if ("customer" in body) == ("account" in body):
        raise (invalid if "customer" in body else missing)(
            "send the bill's owner once: customer (a bcus_ id) or account (a bacc_ id or an account object)"
        )
    if "customer" in body:
        return fields, ("customer", _moment_id(body["customer"], "customer", CUSTOMER_ID_PREFIX))
    account = body["account"]
    if isinstance(account, dict):
        return fields, ("new_account", account_create(account, prefix="account."))
    return fields, ("account", _moment_id(account, "account", ACCOUNT_ID_PREFIX))


def bill_update(body: Mapping[str, Any]) -> dict[str, Any]:
    """A bill PATCH: only `currency`, `amount_paid` (with its currency) and `metadata`."""
    fixed = sorted(set(body) & {"amount_due", "bill_date", "due_date"})
    if fixed:
        raise invalid(f"{fixed[0]} cannot change: void the bill and raise a new one")
    fields = _fields(body, BILL_UPDATE_FIELDS, required=())
    if "amount_paid" in fields and "currency" not in fields:
        raise missing("currency is required when amount_paid is sent")
    return fields


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


def _customer(value: Any, prefix: str = "") -> str | dict[str, Any]:
    if isinstance(value, dict):
        return customer_create(value, prefix=f"{prefix}customer.")
    return reference(value, f"{prefix}customer")


def _moment_id(value: Any, name: str, prefix: str) -> str:
    text = reference(value, name)
    if not text.startswith(prefix):
        raise invalid(f"{name} must be a Moment id starting {prefix}")
    return text


def _bill_amount(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_BILL_AMOUNT:
        raise invalid(f"{name} must be an integer from {minimum} to {MAX_BILL_AMOUNT} (minor units)")
    return value


def _date(value: Any, name: str) -> str:
    try:
        valid = isinstance(value, str) and len(value) == 10 and date.fromisoformat(value).isoformat() == value
    except ValueError:
        valid = False
    if not valid:
        raise invalid(f"{name} must be a date as YYYY-MM-DD")
    return str(value)


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
    "amount_due": lambda value, name: _bill_amount(value, name, minimum=1),
    "amount_paid": lambda value, name: _bill_amount(value, name, minimum=0),
    "bill_date": _date,
    "due_date": _date,
}
