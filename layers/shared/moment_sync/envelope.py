"""Moment's webhook envelope `{"id": "evt_…", "type": …, "data": {…}}`, read without trusting it.

Pure: the receiver stores what this extracts (the summary) beside the raw body, and the reconciler
and the re-drive decide from that stored summary alone, never from the body: a body erased by
`forget` (personal data) cannot change what a payment does. Nothing here raises on bad input: an
authentic body that is not the expected envelope is still stored, and parked later as invalid.

Every value copied into the summary is one DynamoDB and boto3 can store and read back: text as
UTF-8, and an amount of at most 38 digits. Anything else is left out, so the event is parked invalid
instead of being refused by DynamoDB (Moment would retry it for days) or raising on every read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

AMOUNT_APPLIED = "obligation.amount_applied"

# The `data` fields the reconciler needs, copied onto the stored event: it decides from them alone.
SUMMARY_FIELDS = ("id", "amount", "currency", "payment_id", "customer_id", "account_id", "bill_id")
# Text copied into the summary (ids become parts of keys): at most this many UTF-8 bytes.
MAX_TEXT_BYTES = 255
# DynamoDB holds numbers of up to 38 significant digits, and boto3 refuses to read more.
MAX_STORABLE_DIGITS = 38


@dataclass(frozen=True, slots=True)
class WebhookEnvelope:
    event_id: str | None
    event_type: str | None
    # The `data` fields of SUMMARY_FIELDS that had a usable type (strings, and an integer amount).
    summary: dict[str, str | int] = field(default_factory=dict)
    # Set when the body is not a JSON object with a `data` object: why, in a few words.
    problem: str | None = None


def read_envelope(body: bytes) -> WebhookEnvelope:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return WebhookEnvelope(None, None, problem="body is not JSON")
    if not isinstance(document, dict):
        return WebhookEnvelope(None, None, problem="body is not a JSON object")

    event_id = _text(document.get("id"))
    event_type = _text(document.get("type"))
    data = document.get("data")
    if not isinstance(data, dict):
        return WebhookEnvelope(event_id, event_type, problem="data is not an object")
    return WebhookEnvelope(event_id, event_type, summary=_summarise(data))


def stored_envelope(
    event_id: object, event_type: object, problem: object, data: Mapping[str, object]
) -> WebhookEnvelope:
    """The envelope again from what was stored beside the body (`data` keyed by SUMMARY_FIELDS).
    Every value is checked as `read_envelope` checks it, so an item written by older code, or an
    amount that could not be read back as a number, decides exactly as its body would."""
    return WebhookEnvelope(
        _text(event_id), _text(event_type), summary=_summarise(data), problem=_text(problem)
    )


def _summarise(data: Mapping[str, object]) -> dict[str, str | int]:
    summary: dict[str, str | int] = {}
    for name in SUMMARY_FIELDS:
        value = data.get(name)
        if name == "amount":
            # bool is an int in Python; a JSON true is not an amount.
            if isinstance(value, int) and not isinstance(value, bool) and _storable(value):
                summary[name] = value
        elif (text := _text(value)) is not None:
            summary[name] = text
    return summary


def _storable(amount: int) -> bool:
    return len(str(abs(amount))) <= MAX_STORABLE_DIGITS


def _text(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        # JSON may escape a lone surrogate (\ud800): boto3 cannot send such a string at all.
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    # In bytes, not characters: an id becomes part of keys (`ENTRY#<time>#payment:<id>`), and DynamoDB's
    # 1,024-byte sort-key limit must hold even for 255 four-byte characters.
    return value if len(encoded) <= MAX_TEXT_BYTES else None
