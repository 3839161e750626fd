"""What the ledger API accepts (docs/api/openapi.yaml), checked before anything reads the ledger. Pure.

Each function turns one part of a request (a body, a path parameter, a query) into the plain values
`moment_sync.ledger.service` takes, or raises `RequestInvalid` with every problem it found at once.
Nothing here trusts a value's type: money must be a JSON integer (not 10.0, "10" or true), strings
may not carry control characters, and a member the contract does not name is refused rather than
ignored, so a typo never passes silently. The operator CLI checks its arguments with the same rules.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from moment_sync.ledger.model import CURRENCIES, MAX_AMOUNT, is_valid_reference

MAX_BODY_BYTES = 16 * 1024
MAX_PAGE = 200
DEFAULT_PAGE = 50
MAX_CURSOR_LENGTH = 2048
MAX_EXPECTED_VERSION = 2**53 - 1  # what any JSON client can hold exactly
MAX_NAME_LENGTH = 255
MAX_TEXT_LENGTH = 500
MAX_EMAIL_LENGTH = 254
# A problem response lists at most this many field errors; the detail says how many there were.
MAX_LISTED_ERRORS = 20
BALANCE_MODELS = ("customer", "accounts")

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
# What free text (names, descriptions, reasons) may not carry: C0 and C1 controls and DEL; the bidi
# marks, embeddings, overrides and isolates (U+202E can make "gnp.exe" read "exe.png"); line and
# paragraph separators; the zero-width space, word joiner and byte-order mark (invisible, so two
# names that look the same differ). The zero-width non-joiner and joiner (U+200C, U+200D) are
# allowed: Persian and Indic names and emoji need them. Every other field has an ASCII pattern.
_UNSAFE_TEXT = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u2028-\u202e\u2060\u2066-\u2069\ufeff]"
)
# The media types a body may be sent as; a body with no Content-Type is read as JSON too.
_JSON_MEDIA_TYPE = re.compile(r"application/(?:[\w.+-]+\+)?json", re.IGNORECASE)
# The WHATWG (HTML) shape of an address, with at least one dot in the domain.
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
_PHONE = re.compile(r"\+[1-9][0-9]{6,14}")  # E.164, as Moment takes it
_WEBHOOK_ID = re.compile(r"[\x21-\x7e]{1,255}")  # as the receiver stores it
_PAGE_SIZE = re.compile(r"[0-9]{1,4}")


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class RequestInvalid(Exception):
    """The request is not what the contract describes; rendered as an RFC 9457 problem (400/413/428)."""

    def __init__(
        self, status: int, problem: str, title: str, detail: str, errors: tuple[FieldError, ...] = ()
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.problem = problem
        self.title = title
        self.detail = detail
        self.errors = errors

    @classmethod
    def fields(cls, errors: list[FieldError]) -> RequestInvalid:
        named = ", ".join(dict.fromkeys(error.field for error in errors[:MAX_LISTED_ERRORS]))
        more = f" (and {len(errors) - MAX_LISTED_ERRORS} more)" if len(errors) > MAX_LISTED_ERRORS else ""
        count = "1 problem" if len(errors) == 1 else f"{len(errors)} problems"
        return cls(
            400,
            "invalid-request",
            "The request is not valid",
            f"{count}: {named}{more}",
            tuple(errors[:MAX_LISTED_ERRORS]),
        )

    def extensions(self) -> dict[str, Any]:
        return {"errors": [error.as_dict() for error in self.errors]} if self.errors else {}


def invalid(field: str, message: str) -> RequestInvalid:
    return RequestInvalid.fields([FieldError(field, message)])


# --- the body -------------------------------------------------------------------------------------


def json_object(body: str | None, is_base64: bool, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The body as API Gateway passes it (base64 when it is not UTF-8 text) → a JSON object.
    The size is checked before anything is decoded."""
    raw = _body_bytes(body or "", is_base64, max_bytes)
    if not raw.strip():
        raise invalid("body", "required: a JSON object")
    try:
        value = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_unique_members, parse_constant=_no_constant
        )
    except _DuplicateMember as duplicate:
        raise invalid(_shown(duplicate.name), "appears more than once") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RequestInvalid(
            400, "invalid-json", "The body is not JSON", "the body must be one JSON object in UTF-8"
        ) from None
    if not isinstance(value, dict):
        raise invalid("body", "must be a JSON object")
    return value


def json_content_type(content_type: str | None) -> None:
    """Refuse a body declared as anything but JSON (415): `text/plain` or a form is not read as JSON.
    Parameters (`; charset=utf-8`) are allowed; no Content-Type at all is read as JSON."""
    if content_type is None or not content_type.strip():
        return
    media_type = content_type.split(";", 1)[0].strip()
    if not _JSON_MEDIA_TYPE.fullmatch(media_type):
        raise RequestInvalid(
            415,
            "unsupported-media-type",
            "The body must be JSON",
            f"send Content-Type: application/json, not {_shown(media_type)[:64]}",
        )


def _body_bytes(body: str, is_base64: bool, max_bytes: int) -> bytes:
    too_large = RequestInvalid(
        413, "body-too-large", "The body is too large", f"the body must be at most {max_bytes} bytes"
    )
    if is_base64:
        if len(body) > 4 * ((max_bytes + 2) // 3):
            raise too_large
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise RequestInvalid(
                400, "invalid-json", "The body is not JSON", "the body is marked base64 but is not"
            ) from None
    else:
        if len(body) > max_bytes:  # a character is at least one byte: no need to encode to know
            raise too_large
        try:
            raw = body.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestInvalid(
                400, "invalid-json", "The body is not JSON", "the body is not valid UTF-8"
            ) from None
    if len(raw) > max_bytes:
        raise too_large
    return raw


class _DuplicateMember(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members: dict[str, Any] = {}
    for name, value in pairs:
        if name in members:
            raise _DuplicateMember(name)
        members[name] = value
    return members


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _shown(name: str) -> str:
    """A member name as a problem may echo it: short, and printable."""
    cleaned = _CONTROL_CHARACTERS.sub("?", name)
    return cleaned if len(cleaned) <= 64 else cleaned[:61] + "..."


# --- checks of one value: None when it is acceptable, else what is wrong ----------------------------

Check = Callable[[Any], "str | None"]


def _reference(value: Any) -> str | None:
    if not isinstance(value, str) or not is_valid_reference(value):
        return "must be 1-255 characters of a-z, A-Z, 0-9, _ and -"
    return None


def _currency(value: Any) -> str | None:
    return None if isinstance(value, str) and value in CURRENCIES else "must be ZAR or USD"


def _balance_model(value: Any) -> str | None:
    return None if isinstance(value, str) and value in BALANCE_MODELS else "must be customer or accounts"


def _text(value: Any, maximum: int) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if not 1 <= len(value) <= maximum:
        return f"must be 1-{maximum} characters"
    if _UNSAFE_TEXT.search(value) or not _is_utf8(value):
        return "must not contain control, bidi, separator or zero-width characters"
    return None


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, from a "\ud800" escape
        return False
    return True


def _name(value: Any) -> str | None:
    return _text(value, MAX_NAME_LENGTH)


def _description(value: Any) -> str | None:
    return _text(value, MAX_TEXT_LENGTH)


def _email(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(value):
        return "must be an email address"
    return None


def _phone(value: Any) -> str | None:
    if not isinstance(value, str) or not _PHONE.fullmatch(value):
        return "must be an E.164 number, e.g. +27821234567"
    return None


def _integer(value: Any, minimum: int, maximum: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be an integer of minor units (no fraction, not a string)"
    if not minimum <= value <= maximum:
        return f"must be between {minimum} and {maximum}"
    return None


def _amount(value: Any) -> str | None:
    problem = _integer(value, -MAX_AMOUNT, MAX_AMOUNT)
    if problem is None and value == 0:
        return "must not be 0"
    return problem


def _balance(value: Any) -> str | None:
    return _integer(value, -MAX_AMOUNT, MAX_AMOUNT)


def _version(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be an integer"
    if not 0 <= value <= MAX_EXPECTED_VERSION:
        return f"must be between 0 and {MAX_EXPECTED_VERSION}"
    return None


def _members(
    body: Mapping[str, Any],
    required: Mapping[str, Check],
    optional: Mapping[str, Check],
) -> dict[str, Any]:
    """The members `required` and `optional` name, each checked; every problem is raised together."""
    errors = [
        FieldError(_shown(name), "not a field of this request")
        for name in body
        if name not in required and name not in optional
    ]
    errors.extend(FieldError(name, "required") for name in required if name not in body)
    for name, check in {**required, **optional}.items():
        if name in body and (message := check(body[name])) is not None:
            errors.append(FieldError(name, message))
    if errors:
        raise RequestInvalid.fields(errors)
    return {name: body[name] for name in (*required, *optional) if name in body}


# --- each request ---------------------------------------------------------------------------------


def customer_change(body: Mapping[str, Any]) -> dict[str, Any]:
    """PUT /customers/{ref} → `put_customer`'s change (balance_model defaults to `customer`)."""
    change = _members(
        body,
        {"currency": _currency},
        {"balance_model": _balance_model, "name": _name, "email": _email, "phone": _phone},
    )
    change.setdefault("balance_model", "customer")
    return change


def account_change(body: Mapping[str, Any]) -> dict[str, Any]:
    """PUT /accounts/{ref} → `put_account`'s change."""
    return _members(body, {"customer_ref": _reference, "currency": _currency}, {"name": _name})


def charge(body: Mapping[str, Any]) -> dict[str, Any]:
    """POST …/charges → `post_charge`'s charge: id, a non-zero amount (negative: a credit), description."""
    return _members(body, {"id": _reference, "amount": _amount}, {"description": _description})


def balance_change(body: Mapping[str, Any]) -> tuple[int, int]:
    """PUT …/balance → (balance, expected_version). Without expected_version the request is refused
    with 428 (once nothing else is wrong with it): an absolute balance is only safe against the
    version it was computed from."""
    if "expected_version" in body:
        values = _members(body, {"balance": _balance, "expected_version": _version}, {})
        return values["balance"], values["expected_version"]
    try:
        _members(body, {"balance": _balance}, {})
    except RequestInvalid as problem:
        raise RequestInvalid.fields([*problem.errors, FieldError("expected_version", "required")]) from None
    raise RequestInvalid(
        428,
        "expected-version-required",
        "The version the balance was computed from is required",
        "send expected_version: the version read with the balance this one replaces",
        (FieldError("expected_version", "required"),),
    )


def adjustment(amount: Any, reason: Any, operator: Any, adjustment_id: Any) -> None:
    """The operator CLI's `adjust`: checked with the same rules, raised together."""
    _members(
        {"amount": amount, "reason": reason, "operator": operator, "id": adjustment_id},
        {"amount": _amount, "reason": _description, "operator": _name, "id": _reference},
        {},
    )


# --- the path and the query -----------------------------------------------------------------------


def reference(value: Any, field: str = "ref") -> str:
    if (message := _reference(value)) is not None:
        raise invalid(field, message)
    return str(value)


def webhook_id(value: Any) -> str:
    if not isinstance(value, str) or not _WEBHOOK_ID.fullmatch(value):
        raise invalid("webhook_id", "must be 1-255 printable ASCII characters")
    return value


def page(query: Mapping[str, str] | None) -> tuple[int, str | None]:
    """`limit` (1-200, default 50) and `cursor` of a balance's entries."""
    query = query or {}
    errors = [
        FieldError(_shown(name), "not a parameter of this request")
        for name in query
        if name not in {"limit", "cursor"}
    ]
    limit = DEFAULT_PAGE
    if "limit" in query:
        text = query["limit"]
        if _PAGE_SIZE.fullmatch(text) and 1 <= int(text) <= MAX_PAGE:
            limit = int(text)
        else:
            errors.append(FieldError("limit", f"must be an integer from 1 to {MAX_PAGE}"))
    cursor = query.get("cursor")
    if cursor is not None and not 1 <= len(cursor) <= MAX_CURSOR_LENGTH:
        errors.append(FieldError("cursor", "must be the next_cursor of a previous page"))
    if errors:
        raise RequestInvalid.fields(errors)
    return limit, cursor


def no_query(query: Mapping[str, str] | None) -> None:
    if query:
        raise RequestInvalid.fields(
            [FieldError(_shown(name), "not a parameter of this request") for name in query]
        )


# --- bills (docs/ledger.md#bills) ---------------------------------------------------------------

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
BILL_STATUSES = ("unpaid", "paid", "voided")


def _date(value: Any) -> str | None:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        return "must be a date, YYYY-MM-DD"
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return "must be a real calendar date, YYYY-MM-DD"
    return None


def _amount_due(value: Any) -> str | None:
    return _integer(value, 1, MAX_AMOUNT)


def bill_change(body: Mapping[str, Any]) -> dict[str, Any]:
    """PUT /bills/{ref} → `put_bill`'s bill: exactly one owner (`customer` or `account`)."""
    owner_errors = []
    if "customer" in body and "account" in body:
        owner_errors.append(FieldError("account", "give customer or account, not both"))
    elif "customer" not in body and "account" not in body:
        owner_errors.append(FieldError("customer", "required: customer or account"))
    try:
        change = _members(
            body,
            {"currency": _currency, "amount_due": _amount_due},
            {
                "customer": _reference,
                "account": _reference,
                "bill_date": _date,
                "due_date": _date,
                "description": _description,
            },
        )
    except RequestInvalid as problem:
        raise RequestInvalid.fields([*problem.errors, *owner_errors]) from None
    if owner_errors:
        raise RequestInvalid.fields(owner_errors)
    return change


def outside_payment(body: Mapping[str, Any]) -> dict[str, Any]:
    """POST /bills/{ref}/payments → a payment taken outside Moment: id, a positive amount, description."""
    return _members(body, {"id": _reference, "amount": _amount_due}, {"description": _description})


def bill_page(query: Mapping[str, str] | None) -> tuple[int, str | None, str | None]:
    """`limit`, `cursor` and `status` (unpaid, paid or voided) of an owner's bills."""
    query = dict(query or {})
    status = query.pop("status", None)
    errors: list[FieldError] = []
    if status is not None and status not in BILL_STATUSES:
        errors.append(FieldError("status", f"must be one of {', '.join(BILL_STATUSES)}"))
    try:
        limit, cursor = page(query)
    except RequestInvalid as problem:
        raise RequestInvalid.fields([*problem.errors, *errors]) from None
    if errors:
        raise RequestInvalid.fields(errors)
    return limit, cursor, status
