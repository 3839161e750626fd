"""The rules that decide what a stored webhook does to the ledger (pure)."""

from __future__ import annotations

import json

import pytest

from moment_sync.envelope import read_envelope
from moment_sync.ledger.model import BalanceKind, BalanceRef
from moment_sync.reconciliation import (
    BillPaymentApplication,
    Ignore,
    Park,
    ParkReason,
    PaymentApplication,
    decide,
)
from support.ledger import payment


def test_a_customer_payment_is_applied_to_that_customer() -> None:
    decision = decide(read_envelope(payment("ob_1", 2000, customer_id="bcus_1")))
    assert decision == PaymentApplication("ob_1", 2000, "ZAR", BalanceKind.CUSTOMER, "bcus_1", "pay_ob_1")


def test_the_account_wins_over_its_customer() -> None:
    decision = decide(read_envelope(payment("ob_1", 2000, customer_id="bcus_1", account_id="bacc_1")))
    assert isinstance(decision, PaymentApplication)
    assert (decision.target_kind, decision.moment_id) == (BalanceKind.ACCOUNT, "bacc_1")


def test_a_bill_payment_goes_to_its_bill_never_to_a_customer_balance() -> None:
    decision = decide(
        read_envelope(payment("ob_1", 2000, customer_id="bcus_1", account_id="bacc_1", bill_id="bill_1"))
    )
    assert decision == BillPaymentApplication("ob_1", 2000, "ZAR", "bill_1", "pay_ob_1")


def test_a_bill_payment_is_checked_like_any_payment() -> None:
    decision = decide(read_envelope(payment("ob_1", 0, bill_id="bill_1")))
    assert isinstance(decision, Park) and decision.reason is ParkReason.INVALID


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"not json", "body is not JSON"),
        (json.dumps({"type": "obligation.amount_applied", "data": []}).encode(), "data is not an object"),
        (json.dumps({"id": "evt_1", "data": {}}).encode(), "the event has no type"),
        (payment("ob_1", 0, customer_id="bcus_1"), "data.amount must be an integer from 1 to 99999999"),
        (payment("ob_1", -5, customer_id="bcus_1"), "data.amount must be an integer from 1 to 99999999"),
        (
            payment("ob_1", 100_000_000, customer_id="bcus_1"),
            "data.amount must be an integer from 1 to 99999999",
        ),
        (
            json.dumps(
                {
                    "type": "obligation.amount_applied",
                    "data": {"id": "ob_1", "amount": 20.5, "currency": "ZAR", "customer_id": "bcus_1"},
                }
            ).encode(),
            "data.amount must be an integer from 1 to 99999999",
        ),
        (payment("ob_1", 100, customer_id="bcus_1", currency="EUR"), "data.currency must be ZAR or USD"),
        (payment("ob_1", 100), "neither data.account_id nor data.customer_id is present"),
        (
            json.dumps(
                {
                    "type": "obligation.amount_applied",
                    "data": {"amount": 100, "currency": "ZAR", "customer_id": "bcus_1"},
                }
            ).encode(),
            "data.id is missing",
        ),
    ],
)
def test_unreadable_payments_are_parked_as_invalid_with_the_reason(body: bytes, detail: str) -> None:
    assert decide(read_envelope(body)) == Park(ParkReason.INVALID, detail)


def test_other_event_types_are_ignored_with_their_type() -> None:
    assert decide(read_envelope(payment("ob_1", 1, event_type="customer.created"))) == Ignore(
        "customer.created"
    )


def test_balance_refs_round_trip_and_shard_stably() -> None:
    balance = BalanceRef(BalanceKind.ACCOUNT, "ACC-1_x")
    assert BalanceRef.from_partition_key(balance.partition_key) == balance
    assert balance.push_shard == BalanceRef(BalanceKind.ACCOUNT, "ACC-1_x").push_shard
    shards = {BalanceRef(BalanceKind.CUSTOMER, f"C{number}").push_shard for number in range(200)}
    assert len(shards) == 8
