"""Bill requests while DynamoDB says "not now": the merchant is told to retry (503), never 500.

Found by the soak once it took cash for bills: a transaction DynamoDB cancels for a conflict (or a
throttle) is an answer that a retry changes, as it is for charges (docs/ledger.md#ledger-api)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from moment_sync.runtime import LedgerDependencies
from support.ledger import LedgerHarness
from support.ledger_api import LedgerApi
from support.webhooks import NOW


@pytest.fixture
def harness(dynamodb: Any) -> LedgerHarness:
    return LedgerHarness(dynamodb, clock=lambda: float(NOW))


@pytest.fixture
def api(harness: LedgerHarness) -> LedgerApi:
    api = LedgerApi(LedgerDependencies(events=harness.events, ledger=harness.ledger, clock=harness.clock))
    assert api.put("/customers/UCR1", {"currency": "ZAR"}).status == 201
    bill = {"customer": "UCR1", "currency": "ZAR", "amount_due": 250000}
    assert api.put("/bills/FEE", bill).status == 201
    return api


def cancel_next_transaction(harness: LedgerHarness, reason: str) -> None:
    """DynamoDB cancels the next TransactWriteItems for `reason` on its head (as the soak injects it)."""
    left = {"times": 1}

    def cancel(**_: Any) -> None:
        if left["times"]:
            left["times"] -= 1
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "injected"},
                    "CancellationReasons": [{"Code": "None"}, {"Code": reason}],
                },
                "TransactWriteItems",
            )

    harness.dynamodb.meta.events.register("before-call.dynamodb.TransactWriteItems", cancel)


@pytest.mark.parametrize("reason", ["TransactionConflict", "ThrottlingError"])
def test_cash_for_a_bill_during_a_transaction_conflict_is_a_503_and_the_retry_records_it_once(
    api: LedgerApi, harness: LedgerHarness, reason: str
) -> None:
    cancel_next_transaction(harness, reason)
    payment = {"id": "CASH-1", "amount": 30000}
    busy = api.post("/bills/FEE/payments", payment)
    assert (busy.status, busy.problem) == (503, "ledger-busy")
    assert api.post("/bills/FEE/payments", payment).status == 201
    assert [entry["id"] for entry in api.get("/bills/FEE").body["entries"]] == ["outside_payment:CASH-1"]
