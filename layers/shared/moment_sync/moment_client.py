"""Moment's Billing API as this project uses it: create, read and set the balance of customers and accounts;
raise, read, record outside payments on and void bills.

Owns: the one reused httpx.Client and its timeouts; authentication, and refusing a key that does not suit
the environment; deterministic Idempotency-Keys on creates; retries (429, 5xx and network errors only,
exponential backoff with full jitter, Retry-After honoured, bounded); reading Moment's answers into small
frozen objects, checked field by field; turning every failure into a typed error (moment_errors).

Never: writes the API key into a log line, an error or a repr; sends or accepts an amount that is not an
int of minor units; retries a 4xx that Moment would refuse again; decides whether a balance should be
pushed (balance_pusher does).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Final, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx

from moment_sync.moment_errors import (
    REDACTED,
    MomentApiError,
    MomentBillDiffers,
    MomentConflict,
    MomentKeyRefused,
    MomentNotFound,
    MomentNotOurs,
    MomentOutOfTime,
    MomentRateLimited,
    MomentRequestRejected,
    MomentResponseInvalid,
    MomentUnavailable,
    ProblemDetails,
)
from moment_sync.observability import logger

DEFAULT_BASE_URL: Final = "https://api.momentpay.net"
PROD_ENVIRONMENT: Final = "prod"
CURRENCIES: Final = frozenset({"ZAR", "USD"})
IDEMPOTENCY_KEY_SCHEME: Final = "moment-sync/v1"

Currency = Literal["ZAR", "USD"]
ObjectKind = Literal["customer", "account", "bill"]
KeyMode = Literal["test", "live"]

_COLLECTION_PATH: Final[Mapping[ObjectKind, str]] = {
    "customer": "/billing/customers",
    "account": "/billing/accounts",
    "bill": "/billing/bills",
}
# A bill's amount_due (1..) and amount_paid (0..) are bounded by the same ceiling at Moment.
MAX_BILL_AMOUNT: Final = 99_999_999
_BILL_VOID_KEY_KIND: Final = "bill-void"  # not an ObjectKind, so no create can share a void's key
_EXTERNAL_REFERENCE: Final = re.compile(r"[a-zA-Z0-9_-]{1,255}")
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})
# Docker's name for the developer's machine, seen from a container; only `sam local` sets AWS_SAM_LOCAL.
_SAM_LOCAL_HOST: Final = "host.docker.internal"
_TEST_KEY_PREFIX: Final = "sk_test_"
_SECRET_KEY_PREFIX: Final = "sk_"  # noqa: S105 -- a prefix to recognise keys by, not a key
_USER_AGENT: Final = "moment-balance-sync"

_T = TypeVar("_T")


# --- What we send ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewCustomer:
    """The body of POST /billing/customers. An opening balance needs its currency (Moment requires both)."""

    external_reference: str
    name: str | None = field(default=None, repr=False)  # personal details stay out of reprs and logs
    email: str | None = field(default=None, repr=False)
    phone: str | None = field(default=None, repr=False)
    balance: int | None = None
    currency: Currency | None = None
    metadata: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        _check_external_reference(self.external_reference)
        _check_opening_balance(self.balance, self.currency)

    def to_body(self) -> dict[str, Any]:
        return _present(
            external_reference=self.external_reference,
            name=self.name,
            email=self.email,
            phone=self.phone,
            balance=self.balance,
            currency=self.currency,
            metadata=dict(self.metadata) if self.metadata is not None else None,
        )


@dataclass(frozen=True, slots=True)
class NewAccount:
    """The body of POST /billing/accounts. `customer` is a `bcus_` id, a customer's external_reference,
    or a NewCustomer, which makes Moment create the customer and the account together (composite create)."""

    customer: str | NewCustomer
    external_reference: str
    name: str | None = None
    balance: int | None = None
    currency: Currency | None = None
    metadata: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.customer, str) and not self.customer:
            raise ValueError("an account needs its customer: a bcus_ id, a reference or a NewCustomer")
        _check_external_reference(self.external_reference)
        _check_opening_balance(self.balance, self.currency)

    def to_body(self) -> dict[str, Any]:
        customer = self.customer if isinstance(self.customer, str) else self.customer.to_body()
        return _present(
            customer=customer,
            external_reference=self.external_reference,
            name=self.name,
            balance=self.balance,
            currency=self.currency,
            metadata=dict(self.metadata) if self.metadata is not None else None,
        )


@dataclass(frozen=True, slots=True)
class NewBill:
    """The body of POST /billing/bills: a bill of `amount_due` (minor units, 1..99,999,999) on one owner,
    either `customer` (a `bcus_` id) or `account` (a `bacc_` id, or a NewAccount, which makes Moment create
    the account, and its customer if that is a NewCustomer too, together with the bill: composite create).
    Dates are `YYYY-MM-DD`."""

    external_reference: str
    amount_due: int
    currency: Currency
    customer: str | None = None
    account: str | NewAccount | None = None
    bill_date: str | None = None
    due_date: str | None = None
    metadata: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        _check_external_reference(self.external_reference)
        if (self.customer is None) == (self.account is None):
            raise ValueError("a bill is on a customer or on an account: give exactly one of them")
        # Moment's reference names ids here (not references as for an account's customer): the pusher links
        # the owner first, or sends it whole.
        if self.customer is not None and not _is_moment_id(self.customer, "bcus_"):
            raise ValueError("a bill's customer is a Moment customer id (bcus_…)")
        if isinstance(self.account, str) and not _is_moment_id(self.account, "bacc_"):
            raise ValueError("a bill's account is a Moment account id (bacc_…) or a NewAccount")
        _check_bill_amount(self.amount_due, self.currency, "amount_due", minimum=1)
        for name, value in (("bill_date", self.bill_date), ("due_date", self.due_date)):
            _check_date(name, value)

    def to_body(self) -> dict[str, Any]:
        account = self.account.to_body() if isinstance(self.account, NewAccount) else self.account
        return _present(
            external_reference=self.external_reference,
            currency=self.currency,
            amount_due=self.amount_due,
            customer=self.customer,
            account=account,
            bill_date=self.bill_date,
            due_date=self.due_date,
            metadata=dict(self.metadata) if self.metadata is not None else None,
        )


def _present(**members: Any) -> dict[str, Any]:
    # Moment treats an omitted balance as "no balance tracking", so absent means absent, never null.
    return {name: value for name, value in members.items() if value is not None}


def _check_external_reference(reference: str) -> None:
    if not isinstance(reference, str) or not _EXTERNAL_REFERENCE.fullmatch(reference):
        raise ValueError("external_reference must be 1-255 characters of [a-zA-Z0-9_-]")


def _check_opening_balance(balance: int | None, currency: str | None) -> None:
    if currency is not None:
        _check_currency(currency)
    if balance is not None:
        _check_balance(balance, currency)


def _check_balance(balance: int, currency: str | None) -> None:
    # bool is an int to Python, and a float amount is the bug this whole project is careful to avoid.
    if isinstance(balance, bool) or not isinstance(balance, int):
        raise ValueError(
            f"a balance is an int of minor units (R 10.95 is 1095), not {type(balance).__name__}"
        )
    if currency is None:
        raise ValueError("a balance needs its currency: Moment refuses one without the other")
    _check_currency(currency)


def _check_currency(currency: str) -> None:
    if currency not in CURRENCIES:
        raise ValueError(f"Moment supports only {sorted(CURRENCIES)}, not {currency!r}")


def _check_bill_amount(amount: int, currency: str, name: str, *, minimum: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValueError(f"{name} is an int of minor units (R 10.95 is 1095), not {type(amount).__name__}")
    if not minimum <= amount <= MAX_BILL_AMOUNT:
        raise ValueError(f"{name} must be {minimum}..{MAX_BILL_AMOUNT:,} minor units, not {amount}")
    _check_currency(currency)


def _check_date(name: str, value: str | None) -> None:
    if value is None:
        return
    try:
        valid = isinstance(value, str) and len(value) == 10 and date.fromisoformat(value).isoformat() == value
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"{name} must be a date as YYYY-MM-DD")


def _is_moment_id(value: object, prefix: str) -> bool:
    return isinstance(value, str) and value.startswith(prefix) and len(value) > len(prefix)


def idempotency_key(kind: ObjectKind, external_reference: str, generation: int = 0) -> str:
    """The Idempotency-Key of one create: the same kind, reference and generation always give the same key,
    so a retried create can never make two objects. A new generation gives a fresh key, for when Moment keeps
    replaying a stored failure of the old one. 64 hex characters, within Moment's 1-255 of [a-zA-Z0-9-]."""
    if kind not in _COLLECTION_PATH:
        raise ValueError(f"no Moment object kind {kind!r}")
    return _key_digest(kind, external_reference, generation)


def void_idempotency_key(bill: str, generation: int = 0) -> str:
    """The Idempotency-Key of voiding the bill `bill` (its Moment id or external_reference, as in the path):
    every attempt of one void sends the same key. A void is idempotent at Moment anyway (a voided bill
    stays voided), so a caller moves to a new generation after a refusal, which Moment would otherwise
    replay for 24 hours."""
    return _key_digest(_BILL_VOID_KEY_KIND, bill, generation)


def _key_digest(kind: str, name: str, generation: int) -> str:
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise ValueError("an idempotency key generation is an int >= 0")
    # The separator cannot occur in a reference or a kind, so no two inputs share a digest input.
    material = "\n".join((IDEMPOTENCY_KEY_SCHEME, kind, name, str(generation)))
    return hashlib.sha256(material.encode()).hexdigest()


# --- What Moment answers --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MomentCustomer:
    """A Moment customer. `balance` is minor units (None: Moment tracks no balance on it).
    Personal details stay out of the repr, so logging one never logs a person."""

    id: str
    external_reference: str
    balance: int | None
    currency: str | None
    name: str | None = field(default=None, repr=False)
    email: str | None = field(default=None, repr=False)
    phone: str | None = field(default=None, repr=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class MomentAccount:
    """A Moment account: a balance of its own, belonging to the customer `customer_id`."""

    id: str
    external_reference: str
    customer_id: str
    balance: int | None
    currency: str | None
    name: str | None = field(default=None, repr=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


class BillStatus(StrEnum):
    """A bill's status at Moment (lowercase there). `paid` is Moment's to set, once nothing remains."""

    UNPAID = "unpaid"
    PAID = "paid"
    VOIDED = "voided"


@dataclass(frozen=True, slots=True)
class MomentBill:
    """A Moment bill. Amounts are minor units; `amount_paid` is cumulative and counts Moment's own payments
    and the outside payments PATCHed to it. `amount_remaining` never goes below 0, so an overpayment shows
    only as `amount_paid` above `amount_due`. `customer_id` and `account_id`: whichever Moment sends (a bill
    on an account may carry its customer too). `overpayment_allowed` is from Moment's `payment_rules`
    (None: Moment did not say)."""

    id: str
    external_reference: str
    status: BillStatus
    currency: str
    amount_due: int
    amount_paid: int
    amount_remaining: int
    customer_id: str | None
    account_id: str | None
    bill_date: str | None = None
    due_date: str | None = None
    overpayment_allowed: bool | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def owner_id(self) -> str:
        """The Moment id the bill is on: its account when it has one, else its customer."""
        # The reader insists on one of them.
        return self.account_id or self.customer_id or ""

    @property
    def amount_overpaid(self) -> int:
        return max(0, self.amount_paid - self.amount_due)


class CreateOutcome(StrEnum):
    # CREATED: this call's create was applied, so Moment's balance is the one sent.
    # ADOPTED: the object existed already (or Moment replayed an earlier create); it was read back from
    # Moment, so its balance is Moment's current one: treat it as the balance last pushed.
    CREATED = "created"
    ADOPTED = "adopted"


@dataclass(frozen=True, slots=True)
class CreatedOrAdopted(Generic[_T]):
    value: _T
    outcome: CreateOutcome
    generation: int  # the idempotency key generation of the last create sent


class _ShapeInvalid(Exception):
    """A Moment document lacks a field or has one of the wrong type (becomes MomentResponseInvalid)."""


def _customer_from(document: Mapping[str, Any]) -> MomentCustomer:
    return MomentCustomer(
        id=_required_text(document, "id"),
        external_reference=_required_text(document, "external_reference"),
        balance=_minor_units(document, "balance"),
        currency=_optional_text(document, "currency"),
        name=_optional_text(document, "name"),
        email=_optional_text(document, "email"),
        phone=_optional_text(document, "phone"),
        raw=document,
    )


def _account_from(document: Mapping[str, Any]) -> MomentAccount:
    return MomentAccount(
        id=_required_text(document, "id"),
        external_reference=_required_text(document, "external_reference"),
        customer_id=_required_text(document, "customer_id"),
        balance=_minor_units(document, "balance"),
        currency=_optional_text(document, "currency"),
        name=_optional_text(document, "name"),
        raw=document,
    )


def _bill_from(document: Mapping[str, Any]) -> MomentBill:
    status_text = _required_text(document, "status")
    try:
        status = BillStatus(status_text)
    except ValueError:
        raise _ShapeInvalid(f"status {status_text!r} is none of unpaid, paid, voided") from None
    amount_due = _required_minor_units(document, "amount_due")
    amount_paid = _required_minor_units(document, "amount_paid")
    remaining = _minor_units(document, "amount_remaining")
    customer_id = _optional_text(document, "customer_id")
    account_id = _optional_text(document, "account_id")
    if not customer_id and not account_id:
        raise _ShapeInvalid("a bill must name its customer_id or account_id")
    rules = document.get("payment_rules")
    if rules is not None and not isinstance(rules, dict):
        raise _ShapeInvalid(
            f"payment_rules must be an object when present, got {_json_type(document, 'payment_rules')}"
        )
    overpayment_allowed = (rules or {}).get("overpayment_allowed")
    if overpayment_allowed is not None and not isinstance(overpayment_allowed, bool):
        raise _ShapeInvalid("payment_rules.overpayment_allowed must be a boolean when present")
    metadata = document.get("metadata")
    return MomentBill(
        id=_required_text(document, "id"),
        external_reference=_required_text(document, "external_reference"),
        status=status,
        currency=_required_text(document, "currency"),
        amount_due=amount_due,
        amount_paid=amount_paid,
        # Moment documents it; should it ever be absent, it is what the other two say.
        amount_remaining=remaining if remaining is not None else max(0, amount_due - amount_paid),
        customer_id=customer_id or None,
        account_id=account_id or None,
        bill_date=_optional_text(document, "bill_date"),
        due_date=_optional_text(document, "due_date"),
        overpayment_allowed=overpayment_allowed,
        metadata=metadata if isinstance(metadata, dict) else {},
        raw=document,
    )


def _bill_named(name: str) -> Callable[[Mapping[str, Any]], MomentBill]:
    """A bill reader that insists the answer is the bill asked for, by Moment id or by reference."""

    def read_checked(document: Mapping[str, Any]) -> MomentBill:
        bill = _bill_from(document)
        if name not in {bill.id, bill.external_reference}:
            raise _ShapeInvalid(
                f"Moment answered with bill {bill.id} ({bill.external_reference!r}), not {name!r}"
            )
        return bill

    return read_checked


def _required_text(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise _ShapeInvalid(f"{name} must be a non-empty string, got {_json_type(document, name)}")
    return value


def _optional_text(document: Mapping[str, Any], name: str) -> str | None:
    value = document.get(name)
    if value is not None and not isinstance(value, str):
        raise _ShapeInvalid(f"{name} must be a string when present, got {_json_type(document, name)}")
    return value


def _minor_units(document: Mapping[str, Any], name: str) -> int | None:
    value = document.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise _ShapeInvalid(f"{name} must be an integer of minor units, got {_json_type(document, name)}")
    return value


def _required_minor_units(document: Mapping[str, Any], name: str) -> int:
    value = _minor_units(document, name)
    if value is None:
        raise _ShapeInvalid(f"{name} must be an integer of minor units, got {_json_type(document, name)}")
    return value


def _json_type(document: Mapping[str, Any], name: str) -> str:
    # Names the type, never the value: the value may be personal data.
    if name not in document:
        return "nothing"
    value = document[name]
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a decimal number"
    return {str: "a string", int: "an integer", list: "an array", dict: "an object"}.get(type(value), "?")


def _json_object(content: bytes) -> dict[str, Any]:
    try:
        document = json.loads(content)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        raise _ShapeInvalid("the body is not JSON") from None
    if not isinstance(document, dict):
        raise _ShapeInvalid("the body is not a JSON object")
    return document


def _with_reference(
    reference: str, read: Callable[[Mapping[str, Any]], _T]
) -> Callable[[Mapping[str, Any]], _T]:
    """A reader that also insists the object is the one asked for: a path segment may be a Moment id or a
    reference, and adopting some other customer's object would push a balance onto the wrong person."""

    def read_checked(document: Mapping[str, Any]) -> _T:
        value = read(document)  # checks that external_reference is a string first
        answered = document["external_reference"]
        if answered != reference:
            raise _ShapeInvalid(f"Moment answered with external_reference {answered!r}, not {reference!r}")
        return value

    return read_checked


# --- Keys and retries -----------------------------------------------------------------------------


def check_key_for_environment(api_key: str, environment: str) -> KeyMode:
    """Refuse a key that does not suit the environment: live money only from prod, and prod only live.
    The messages name the key's kind, never the key."""
    mode = _key_mode(api_key)
    if mode == "live" and environment != PROD_ENVIRONMENT:
        raise MomentKeyRefused(
            f"a live Moment key (sk_…) is refused in environment {environment!r}: only prod uses live keys"
        )
    if mode == "test" and environment == PROD_ENVIRONMENT:
        raise MomentKeyRefused("a test Moment key (sk_test_…) is refused in prod: prod uses a live key")
    return mode


def _key_mode(api_key: str) -> KeyMode:
    if not isinstance(api_key, str) or not api_key:
        raise MomentKeyRefused("no Moment API key was given: a secret key (sk_test_… or sk_…) is needed")
    if any(character.isspace() or not character.isprintable() for character in api_key):
        raise MomentKeyRefused("the Moment API key contains whitespace (a stray newline in the secret?)")
    if api_key.startswith(_TEST_KEY_PREFIX) and len(api_key) > len(_TEST_KEY_PREFIX):
        return "test"
    # "sk_test" without its final underscore is a mangled test key, never a live one.
    is_secret = api_key.startswith(_SECRET_KEY_PREFIX) and len(api_key) > len(_SECRET_KEY_PREFIX)
    if is_secret and not api_key.startswith("sk_test"):
        return "live"
    kind = "a publishable key (pk_…), which is for browsers" if api_key.startswith("pk_") else "not one"
    raise MomentKeyRefused(f"the Moment API key must be a secret key (sk_test_… or sk_…); this is {kind}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to keep trying after a 429, a 5xx or a network error (nothing else is retried)."""

    max_attempts: int = 4
    base_delay_seconds: float = 0.5
    max_delay_seconds: float = 8.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 <= self.base_delay_seconds <= self.max_delay_seconds:
            raise ValueError("delays must satisfy 0 <= base_delay_seconds <= max_delay_seconds")

    def delay_seconds(self, attempt: int, retry_after: float | None, jitter: float) -> float:
        """The pause after failed attempt `attempt` (from 1): Moment's Retry-After when it sent one,
        else full jitter (uniform up to an exponentially growing ceiling); never more than the cap."""
        if retry_after is not None:
            return min(retry_after, self.max_delay_seconds)
        ceiling = self.base_delay_seconds * 2.0 ** min(attempt - 1, 32)
        return jitter * min(ceiling, self.max_delay_seconds)


DEFAULT_RETRY_POLICY: Final = RetryPolicy()
DEFAULT_CONNECT_TIMEOUT_SECONDS: Final = 3.0
DEFAULT_READ_TIMEOUT_SECONDS: Final = 10.0


def worst_call_seconds(
    *,
    connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
    read_timeout_seconds: float = DEFAULT_READ_TIMEOUT_SECONDS,
    retry: RetryPolicy = DEFAULT_RETRY_POLICY,
) -> float:
    """The longest one call (one request with its retries) can take: every attempt connecting and
    reading to its timeouts, and a full pause (the cap: a Retry-After is capped there too) between
    attempts. At the defaults 4 x (3 + 10) + 3 x 8 = 76 s. Not counted: the write and pool timeouts
    (a body of a few hundred bytes is written at once; the pool's 100 connections exceed any
    concurrency here), and a response trickled a byte per read timeout (Moment's are one small JSON)."""
    per_attempt = connect_timeout_seconds + read_timeout_seconds
    return retry.max_attempts * per_attempt + (retry.max_attempts - 1) * retry.max_delay_seconds


def _retry_after_seconds(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from `now`: delay-seconds or an HTTP-date (RFC 9110); None when unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" parses naive; HTTP-dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _is_replayed(response: httpx.Response) -> bool:
    return str(response.headers.get("Idempotent-Replayed", "")).strip().lower() == "true"


def _worth_retrying(response: httpx.Response) -> bool:
    # A replayed answer is stored for 24 hours: asking again with the same key only replays it again.
    status = response.status_code
    return (status == 429 or status >= 500) and not _is_replayed(response)


# Failures before any byte of the request left: Moment cannot have carried it out.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def _may_apply(response: httpx.Response) -> bool:
    """A 5xx may come after Moment applied the request; a 4xx (429 included) is a refusal."""
    return response.status_code >= 500


def _error_class(status: int) -> type[MomentApiError]:
    if status == 404:
        return MomentNotFound
    if status == 409:
        return MomentConflict
    if status == 429:
        return MomentRateLimited
    if 400 <= status < 500:
        return MomentRequestRejected
    if status >= 500:
        return MomentUnavailable
    return MomentResponseInvalid  # 1xx/3xx: nothing Moment documents


def _path_segment(value: str) -> str:
    """One {customer}/{account} path parameter, percent-encoded so a reference can never change the path."""
    if not isinstance(value, str) or value in {"", ".", ".."}:
        raise ValueError("a Moment id or external_reference is needed")
    return quote(value, safe="")


def _checked_base_url(base_url: str) -> str:
    url = httpx.URL(base_url)
    # The key travels in every request: plain http only to a sandbox on this machine (from a `sam
    # local` container, the machine is host.docker.internal).
    local_hosts = set(_LOOPBACK_HOSTS)
    if os.environ.get("AWS_SAM_LOCAL") == "true":
        local_hosts.add(_SAM_LOCAL_HOST)
    if url.scheme != "https" and not (url.scheme == "http" and url.host in local_hosts):
        raise ValueError("the Moment base URL must be https (plain http only to a local sandbox)")
    return str(url).rstrip("/")


# --- The client -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    body: Mapping[str, Any] | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class _Reply(Generic[_T]):
    value: _T
    replayed: bool


class MomentClient:
    """Moment's Billing API over one httpx.Client: construct once per execution environment and reuse.

    Tests pass `transport` (or a whole `http_client`), `sleep` and `jitter`, so nothing touches the network
    or really sleeps. Every method raises a MomentApiError subclass when the request fails.
    """

    def __init__(
        self,
        api_key: str,
        *,
        environment: str,
        base_url: str = DEFAULT_BASE_URL,
        connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
        read_timeout_seconds: float = DEFAULT_READ_TIMEOUT_SECONDS,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        max_key_generations: int = 3,
        http_client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key_mode = check_key_for_environment(api_key, environment)
        if http_client is not None and transport is not None:
            raise ValueError("pass an http_client or a transport, not both")
        if max_key_generations < 1:
            raise ValueError("max_key_generations must be at least 1")
        self._api_key = api_key
        self._environment = environment
        self._base_url = _checked_base_url(base_url)
        # Explicit on every request too, so an injected client cannot leave them unbounded.
        self._timeout = httpx.Timeout(read_timeout_seconds, connect=connect_timeout_seconds)
        self._retry = retry
        self._max_key_generations = max_key_generations
        self._owns_http_client = http_client is None
        self._http = http_client or httpx.Client(transport=transport, timeout=self._timeout)
        self._sleep = sleep
        self._jitter = jitter
        self._clock = clock
        self._attempt_seconds = connect_timeout_seconds + read_timeout_seconds
        self._worst_call_seconds = worst_call_seconds(
            connect_timeout_seconds=connect_timeout_seconds,
            read_timeout_seconds=read_timeout_seconds,
            retry=retry,
        )
        self._time_left: Callable[[], float] | None = None

    @property
    def worst_call_seconds(self) -> float:
        """The longest one call of this client can take (`worst_call_seconds`)."""
        return self._worst_call_seconds

    def within(self, time_left: Callable[[], float], *, keep_seconds: float = 0.0) -> MomentClient:
        """This client, on the same connections, for one run: it starts no attempt, nor a pause before
        one, that could outlast `time_left() - keep_seconds`, and raises MomentOutOfTime instead, so
        a run is never killed by Lambda's timeout inside a Moment call (however many calls a push makes)."""
        bounded = copy.copy(self)
        bounded._owns_http_client = False
        bounded._time_left = lambda: time_left() - keep_seconds
        return bounded

    def __repr__(self) -> str:
        return (
            f"MomentClient(base_url={self._base_url!r}, environment={self._environment!r}, "
            f"key={self._key_mode!r})"
        )

    def close(self) -> None:
        """Close the connection pool, unless it was lent to us."""
        if self._owns_http_client:
            self._http.close()

    def __enter__(self) -> MomentClient:
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self.close()

    # Creates ------------------------------------------------------------------------------------

    def create_customer(self, customer: NewCustomer, *, generation: int = 0) -> MomentCustomer:
        """POST /billing/customers. A replayed success returns the customer as it was created, which may
        be stale: create_or_adopt_customer re-reads it."""
        reference = customer.external_reference
        return self._create("customer", reference, customer.to_body(), _customer_from, generation).value

    def create_account(self, account: NewAccount, *, generation: int = 0) -> MomentAccount:
        """POST /billing/accounts (see create_customer about replays)."""
        reference = account.external_reference
        return self._create("account", reference, account.to_body(), _account_from, generation).value

    def create_or_adopt_customer(
        self, customer: NewCustomer, *, generation: int = 0
    ) -> CreatedOrAdopted[MomentCustomer]:
        """Make sure Moment has this customer: create it, or adopt the one with its external_reference."""
        reference = customer.external_reference
        return self._create_or_adopt("customer", reference, customer.to_body(), _customer_from, generation)

    def create_or_adopt_account(
        self, account: NewAccount, *, generation: int = 0
    ) -> CreatedOrAdopted[MomentAccount]:
        """Make sure Moment has this account: create it, or adopt the one with its external_reference
        that belongs to `account.customer` (MomentNotOurs when it belongs to another customer)."""
        reference = account.external_reference
        result = self._create_or_adopt("account", reference, account.to_body(), _account_from, generation)
        if result.outcome is CreateOutcome.ADOPTED:
            self._check_owner(account.customer, result.value)
        return result

    def find_customer(self, reference: str) -> MomentCustomer | None:
        """GET /billing/customers/{reference}, insisting the answer carries that external_reference
        (MomentNotOurs otherwise: the path was read as another customer's Moment id); None on 404."""
        return self._find("customer", reference, _customer_from)

    # Reads and balance pushes ---------------------------------------------------------------------

    def get_customer(self, customer: str) -> MomentCustomer:
        """GET /billing/customers/{customer}: by Moment id (bcus_…) or external_reference."""
        return self._call(_Request("GET", _object_path("customer", customer)), _customer_from).value

    def get_account(self, account: str) -> MomentAccount:
        """GET /billing/accounts/{account}: by Moment id (bacc_…) or external_reference."""
        return self._call(_Request("GET", _object_path("account", account)), _account_from).value

    def set_customer_balance(self, customer: str, balance: int, currency: Currency) -> MomentCustomer:
        """PATCH the customer's balance: an absolute set (not a delta), always with its currency."""
        request = _Request("PATCH", _object_path("customer", customer), _balance_body(balance, currency))
        return self._call(request, _customer_from).value

    def set_account_balance(self, account: str, balance: int, currency: Currency) -> MomentAccount:
        """PATCH that account's balance only: an absolute set, always with its currency."""
        request = _Request("PATCH", _object_path("account", account), _balance_body(balance, currency))
        return self._call(request, _account_from).value

    # Bills ----------------------------------------------------------------------------------------

    def create_bill(self, bill: NewBill, *, generation: int = 0) -> CreatedOrAdopted[MomentBill]:
        """Make sure Moment has this bill: POST /billing/bills under the deterministic key of its reference
        and generation, or adopt the bill Moment already holds under that reference, but only when its
        owner, amount_due and currency are the ones sent (MomentBillDiffers otherwise; MomentNotOurs when
        the reference was read as another bill's id). An adopted bill is read afresh, so its amount_paid
        and status are Moment's current ones; a created one is as sent (nothing paid)."""
        reference = bill.external_reference
        result = self._create_or_adopt("bill", reference, bill.to_body(), _bill_from, generation)
        if result.outcome is CreateOutcome.ADOPTED:
            self.check_bill_terms(bill, result.value)
        return result

    def get_bill(self, bill_id_or_reference: str) -> MomentBill | None:
        """GET /billing/bills/{bill} by Moment id (bill_…) or external_reference; None on 404. The answer
        must carry the id or the reference asked for (MomentResponseInvalid otherwise)."""
        request = _Request("GET", _object_path("bill", bill_id_or_reference))
        try:
            return self._call(request, _bill_named(bill_id_or_reference)).value
        except MomentNotFound:
            return None

    def update_bill_amount_paid(
        self,
        bill: str | MomentBill,
        amount_paid: int,
        currency: Currency,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> MomentBill:
        """PATCH the bill's cumulative `amount_paid` (0..99,999,999, with its currency): what Moment records
        as paid in all, its own payments included, not a delta. No Idempotency-Key (an absolute set); a
        failure whose `may_have_reached` is True may have landed. Moment sets `paid` itself. `metadata`
        goes in the same PATCH (Moment merges it), so it lands with the amount or not at all."""
        _check_bill_amount(amount_paid, currency, "amount_paid", minimum=0)
        name = _bill_name(bill)
        body: dict[str, Any] = {"amount_paid": amount_paid, "currency": currency}
        if metadata is not None:
            body["metadata"] = dict(metadata)
        return self._call(_Request("PATCH", _object_path("bill", name), body), _bill_named(name)).value

    def void_bill(self, bill: str | MomentBill, *, generation: int = 0) -> MomentBill:
        """POST /billing/bills/{bill}/void (permanent), keyed by void_idempotency_key of the name in the
        path (the Moment id when given a MomentBill) and `generation`. A bill that is voided already is
        the outcome asked for: when Moment refuses the void, the bill is read, and returned if voided."""
        name = _bill_name(bill)
        key = void_idempotency_key(name, generation)
        request = _Request("POST", f"{_object_path('bill', name)}/void", idempotency_key=key)
        try:
            return self._call(request, _bill_named(name)).value
        except MomentRequestRejected as refused:
            if isinstance(refused, MomentNotFound):
                raise
            current = self.get_bill(name)
            if current is not None and current.status is BillStatus.VOIDED:
                return current
            raise

    def check_bill_terms(self, bill: NewBill, existing: MomentBill) -> None:
        """An adopted bill must be this bill: same reference, amount, currency and owner (MomentNotOurs /
        MomentBillDiffers otherwise). Anything else is a bill the ledger did not raise (or raised
        differently), and recording payments on it would misstate a debt."""
        if existing.external_reference != bill.external_reference:
            raise MomentNotOurs(
                f"Moment's bill {existing.id} has external_reference {existing.external_reference!r}, "
                f"not {bill.external_reference!r}: not ours to adopt"
            )
        differences = []
        if existing.amount_due != bill.amount_due:
            differences.append(f"amount_due {existing.amount_due}, not {bill.amount_due}")
        if existing.currency != bill.currency:
            differences.append(f"currency {existing.currency}, not {bill.currency}")
        owner = self._bill_owner_difference(bill, existing)
        if owner:
            differences.append(owner)
        if differences:
            raise MomentBillDiffers(
                f"Moment's bill {bill.external_reference!r} ({existing.id}) has " + "; ".join(differences)
            )

    def _bill_owner_difference(self, bill: NewBill, existing: MomentBill) -> str | None:
        if bill.customer is not None:
            if existing.account_id is not None or existing.customer_id != bill.customer:
                return f"owner {existing.owner_id}, not customer {bill.customer}"
            return None
        if isinstance(bill.account, str):
            if existing.account_id != bill.account:
                return f"owner {existing.owner_id}, not account {bill.account}"
            return None
        if not isinstance(bill.account, NewAccount):  # pragma: no cover -- NewBill insists on one owner
            raise TypeError("a NewBill has a customer or an account")
        if existing.account_id is None:
            return f"owner customer {existing.customer_id}, not account {bill.account.external_reference!r}"
        account = self.get_account(existing.account_id)
        if account.external_reference != bill.account.external_reference:
            return f"account {account.external_reference!r}, not {bill.account.external_reference!r}"
        try:
            self._check_owner(bill.account.customer, account)
        except MomentNotOurs as other_customer:
            return str(other_customer)
        return None

    # Create or adopt ------------------------------------------------------------------------------

    def _create(
        self,
        kind: ObjectKind,
        reference: str,
        body: Mapping[str, Any],
        read: Callable[[Mapping[str, Any]], _T],
        generation: int,
    ) -> _Reply[_T]:
        key = idempotency_key(kind, reference, generation)
        request = _Request("POST", _COLLECTION_PATH[kind], body, idempotency_key=key)
        return self._call(request, _with_reference(reference, read))

    def _create_or_adopt(
        self,
        kind: ObjectKind,
        reference: str,
        body: Mapping[str, Any],
        read: Callable[[Mapping[str, Any]], _T],
        generation: int,
    ) -> CreatedOrAdopted[_T]:
        # POST; on a 409, or on any failure Moment replayed for this key, look the object up by its
        # reference; if it does not exist, the stored failure is all the old key will ever return, so
        # create again under the next generation (bounded). A replayed *success* is re-read, because it
        # is the object as created (up to 24 hours ago), not its current balance.
        last_generation = generation + self._max_key_generations - 1
        for current in range(generation, last_generation + 1):
            try:
                reply = self._create(kind, reference, body, read, current)
            except MomentApiError as error:
                if not (isinstance(error, MomentConflict) or error.replayed):
                    raise
                existing = self._find(kind, reference, read)
                if existing is not None:
                    self._log_adopted(kind, reference, current, error.status)
                    return CreatedOrAdopted(existing, CreateOutcome.ADOPTED, current)
                if current == last_generation:
                    raise
                logger.info(
                    "moment create moves to a new idempotency key generation",
                    extra={"kind": kind, "external_reference": reference, "generation": current + 1},
                )
                continue
            if reply.replayed:
                current_state = self._adopt(kind, reference, read)
                self._log_adopted(kind, reference, current, 201)
                return CreatedOrAdopted(current_state, CreateOutcome.ADOPTED, current)
            return CreatedOrAdopted(reply.value, CreateOutcome.CREATED, current)
        raise AssertionError("max_key_generations is at least 1")  # pragma: no cover

    def _find(self, kind: ObjectKind, reference: str, read: Callable[[Mapping[str, Any]], _T]) -> _T | None:
        try:
            return self._adopt(kind, reference, read)
        except MomentNotFound:
            return None

    def _adopt(self, kind: ObjectKind, reference: str, read: Callable[[Mapping[str, Any]], _T]) -> _T:
        request = _Request("GET", _object_path(kind, reference))
        value = self._call(request, read).value
        # Every GET by reference checks the answer: a path segment may also be read as a Moment id.
        answered = getattr(value, "external_reference", None)
        if answered != reference:
            raise MomentNotOurs(
                f"Moment's {kind} at {reference!r} has external_reference {answered!r}: not ours to adopt"
            )
        return value

    def _check_owner(self, owner: str | NewCustomer, account: MomentAccount) -> None:
        """An adopted account must belong to the customer it was meant for: by Moment id when the
        customer is linked, else by that customer's external_reference, read from Moment."""
        if isinstance(owner, str) and owner.startswith("bcus_"):
            if account.customer_id != owner:
                raise MomentNotOurs(
                    f"Moment's account {account.external_reference!r} belongs to {account.customer_id}, "
                    f"not to {owner}"
                )
            return
        expected = owner if isinstance(owner, str) else owner.external_reference
        holder = self.get_customer(account.customer_id)
        if holder.external_reference != expected:
            raise MomentNotOurs(
                f"Moment's account {account.external_reference!r} belongs to customer "
                f"{holder.external_reference!r} ({account.customer_id}), not to {expected!r}"
            )

    @staticmethod
    def _log_adopted(kind: ObjectKind, reference: str, generation: int, status: int | None) -> None:
        logger.info(
            "moment object adopted by external_reference",
            extra={"kind": kind, "external_reference": reference, "generation": generation, "status": status},
        )

    # One request, with retries ------------------------------------------------------------------------

    def _call(self, request: _Request, read: Callable[[Mapping[str, Any]], _T]) -> _Reply[_T]:
        response, attempts, reached = self._send(request)
        replayed = _is_replayed(response)
        if not response.is_success:
            error = self._status_error(request, response, attempts, replayed, reached or _may_apply(response))
            if isinstance(error, MomentRateLimited):
                error.retry_after = _retry_after_seconds(response.headers.get("Retry-After"), self._clock())
            raise error
        try:
            value = read(_json_object(response.content))
        except _ShapeInvalid as invalid:
            raise self._error(
                MomentResponseInvalid,
                request,
                status=response.status_code,
                reason=str(invalid),
                replayed=replayed,
                attempts=attempts,
            ) from None
        return _Reply(value, replayed)

    def _send(self, request: _Request) -> tuple[httpx.Response, int, bool]:
        """Send until Moment gives an answer a later attempt would not change; return it, the attempts,
        and whether an earlier attempt may have been carried out by Moment (its answer was lost)."""
        last_attempt = self._retry.max_attempts
        reached = False
        for attempt in range(1, last_attempt + 1):
            self._check_time(request, attempt, 0.0, reached)
            try:
                response = self._attempt(request, attempt)
            except httpx.TransportError as failure:
                reached = reached or not isinstance(failure, _NEVER_SENT)
                if attempt == last_attempt:
                    reason = f"{type(failure).__name__}: {failure}"
                    raise self._error(
                        MomentUnavailable,
                        request,
                        status=None,
                        reason=reason,
                        attempts=attempt,
                        may_have_reached=reached,
                    ) from failure
                self._pause(request, attempt, retry_after=None, reached=reached)
                continue
            if attempt == last_attempt or not _worth_retrying(response):
                return response, attempt, reached
            reached = reached or _may_apply(response)
            retry_after = _retry_after_seconds(response.headers.get("Retry-After"), self._clock())
            self._pause(request, attempt, retry_after, reached=reached)
        raise AssertionError("RetryPolicy.max_attempts is at least 1")  # pragma: no cover

    def _attempt(self, request: _Request, attempt: int) -> httpx.Response:
        started = time.perf_counter()
        try:
            response = self._http.request(
                request.method,
                self._base_url + request.path,
                content=json.dumps(request.body).encode() if request.body is not None else None,
                headers=self._headers(request),
                timeout=self._timeout,
            )
        except httpx.TransportError as failure:
            self._log_attempt(request, attempt, started, status=None, failure=type(failure).__name__)
            raise
        self._log_attempt(request, attempt, started, status=response.status_code)
        return response

    def _log_attempt(
        self, request: _Request, attempt: int, started: float, status: int | None, failure: str | None = None
    ) -> None:
        logger.debug(
            "moment request",
            extra={
                "http_method": request.method,
                "path": self._redact(request.path),
                "status": status,
                "failure": failure,
                "attempt": attempt,
                "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
                "idempotency_key": request.idempotency_key,
            },
        )

    def _headers(self, request: _Request) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
        }
        if request.body is not None:
            headers["Content-Type"] = "application/json"
        if request.idempotency_key is not None:
            headers["Idempotency-Key"] = request.idempotency_key
        return headers

    def _check_time(self, request: _Request, attempt: int, pause: float, reached: bool) -> None:
        """Within a run's budget (`within`): the pause and the whole next attempt must fit."""
        if self._time_left is None or self._time_left() >= pause + self._attempt_seconds:
            return
        raise self._error(
            MomentOutOfTime,
            request,
            status=None,
            reason="the run's time budget ends before another attempt could",
            attempts=attempt - 1,
            may_have_reached=reached,
        )

    def _pause(self, request: _Request, attempt: int, retry_after: float | None, *, reached: bool) -> None:
        delay = self._retry.delay_seconds(attempt, retry_after, self._jitter())
        self._check_time(request, attempt + 1, delay, reached)
        logger.info(
            "moment request will be retried",
            extra={
                "http_method": request.method,
                "path": self._redact(request.path),
                "attempt": attempt,
                "delay_seconds": round(delay, 3),
                "retry_after_seconds": retry_after,
                "idempotency_key": request.idempotency_key,
            },
        )
        self._sleep(delay)

    # Errors ------------------------------------------------------------------------------------------

    def _status_error(
        self, request: _Request, response: httpx.Response, attempts: int, replayed: bool, reached: bool
    ) -> MomentApiError:
        try:
            problem = ProblemDetails.from_document(json.loads(response.content))
        except ValueError:
            problem = None
        return self._error(
            _error_class(response.status_code),
            request,
            status=response.status_code,
            problem=problem,
            reason=response.reason_phrase,
            replayed=replayed,
            attempts=attempts,
            may_have_reached=reached,
        )

    def _error(
        self,
        error_class: type[MomentApiError],
        request: _Request,
        *,
        status: int | None,
        reason: str,
        attempts: int,
        problem: ProblemDetails | None = None,
        replayed: bool = False,
        may_have_reached: bool = True,
    ) -> MomentApiError:
        if problem is not None:
            # Moment may echo what it was sent (e.g. "invalid key sk_…"): nothing of the key leaves here.
            problem = problem.redacted(self._api_key)
        return error_class(
            method=request.method,
            path=self._redact(request.path),
            status=status,
            problem=problem,
            reason=self._redact(reason),
            replayed=replayed,
            idempotency_key=request.idempotency_key,
            attempts=attempts,
            may_have_reached=may_have_reached,
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, REDACTED)


def _object_path(kind: ObjectKind, moment_id_or_reference: str) -> str:
    return f"{_COLLECTION_PATH[kind]}/{_path_segment(moment_id_or_reference)}"


def _bill_name(bill: str | MomentBill) -> str:
    return bill.id if isinstance(bill, MomentBill) else bill


def _balance_body(balance: int, currency: Currency) -> dict[str, Any]:
    _check_balance(balance, currency)
    return {"balance": balance, "currency": currency}
