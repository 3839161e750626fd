"""Reading Moment's envelope never raises, and keeps only fields of the expected types."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moment_sync.envelope import AMOUNT_APPLIED, read_envelope
from support.webhooks import amount_applied_body


def test_amount_applied_summary() -> None:
    envelope = read_envelope(amount_applied_body(account_id="bacc_1", customer_id="bcus_1"))
    assert envelope.event_type == AMOUNT_APPLIED
    assert envelope.event_id == "evt_2341234567890abcdef"
    assert envelope.problem is None
    assert envelope.summary == {
        "id": "ob_N2a38DJQWPL8K4X42354234",
        "amount": 2000,
        "currency": "ZAR",
        "payment_id": "pay_1313235234843nmafdsa",
        "customer_id": "bcus_1",
        "account_id": "bacc_1",
    }


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "body is not JSON"),
        (b"\xff\xfe\x00", "body is not JSON"),
        (b"[1, 2]", "body is not a JSON object"),
        (b'{"id": "evt_1", "type": "x"}', "data is not an object"),
        (b'{"id": "evt_1", "type": "x", "data": []}', "data is not an object"),
        (b"[" * 100_000, "body is not JSON"),
    ],
)
def test_unreadable_bodies_say_why(body: bytes, problem: str) -> None:
    assert read_envelope(body).problem == problem


@pytest.mark.parametrize("amount", [20.0, "2000", True, None, [2000]])
def test_an_amount_that_is_not_an_integer_is_left_out(amount: object) -> None:
    body = json.dumps({"id": "evt_1", "type": AMOUNT_APPLIED, "data": {"id": "ob_1", "amount": amount}})
    assert "amount" not in read_envelope(body.encode()).summary


@given(st.binary(max_size=500))
def test_any_bytes_are_read_without_raising(body: bytes) -> None:
    read_envelope(body)
