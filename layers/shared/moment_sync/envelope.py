"""Moment's webhook envelope `{"id": "evt_…", "type": …, "data": {…}}`, read without trusting it.

Pure: the receiver stores what this extracts beside the raw body, and the reconciler decides from
the same function, so the two can never read one body two ways. Nothing here raises on bad input:
an authentic body that is not the expected envelope is still stored, and parked later as invalid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

AMOUNT_APPLIED = "obligation.amount_applied"

# The `data` fields the reconciler needs, copied onto the stored event so operators can query them.
SUMMARY_FIELDS = ("id", "amount", "currency", "payment_id", "customer_id", "account_id", "bill_id")


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


def _summarise(data: dict[str, Any]) -> dict[str, str | int]:
    summary: dict[str, str | int] = {}
    for name in SUMMARY_FIELDS:
        value = data.get(name)
        if name == "amount":
            # bool is an int in Python; a JSON true is not an amount.
            if isinstance(value, int) and not isinstance(value, bool):
                summary[name] = value
        elif (text := _text(value)) is not None:
            summary[name] = text
    return summary


def _text(value: object) -> str | None:
    if isinstance(value, str) and value and len(value) <= 255:
        return value
    return None
