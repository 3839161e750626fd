"""Bills through the ledger API in-process: the real handler, moto's tables built from template.yaml,
every answer checked against docs/api/openapi.yaml (support.ledger_api)."""

from __future__ import annotations

from typing import Any

import pytest

from moment_sync.ledger.bills import BillRef
from moment_sync.runtime import LedgerDependencies
from support.ledger import LedgerHarness
from support.ledger_api import LedgerApi
from support.webhooks import NOW


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        self.now += 1
        return self.now


@pytest.fixture
def harness(dynamodb: Any) -> LedgerHarness:
    return LedgerHarness(dynamodb, clock=Clock())


@pytest.fixture
def api(harness: LedgerHarness) -> LedgerApi:
    api = LedgerApi(LedgerDependencies(events=harness.events, ledger=harness.ledger, clock=harness.clock))
    assert api.put("/customers/UCR1", {"currency": "ZAR"}).status == 201
    assert api.put("/customers/FAM1", {"currency": "ZAR", "balance_model": "accounts"}).status == 201
    assert api.put("/accounts/ACC1", {"customer_ref": "FAM1", "currency": "ZAR"}).status == 201
    return api


FEE = {"customer": "UCR1", "currency": "ZAR", "amount_due": 250000, "due_date": "2026-09-30"}


def test_a_bill_is_raised_once_and_the_same_bill_again_is_200(api: LedgerApi, harness: LedgerHarness) -> None:
    created = api.put("/bills/FEE-2026", FEE | {"description": "Annual fee"})
    assert created.status == 201
    assert created.body["status"] == "unpaid"
    assert (created.body["amount_due"], created.body["amount_paid"], created.body["amount_remaining"]) == (
        250000,
        0,
        250000,
    )
    assert created.body["owner"] == {"kind": "customer", "reference": "UCR1"}
    # Pending from the start: Moment must create it, and the bill pusher finds it.
    assert created.body["sync"]["state"] == "pending"
    assert [bill for _, bill in harness.ledger.pending_bill_pushes(NOW + 10)] == [BillRef("FEE-2026")]
    # The balance pusher never meets a bill.
    assert harness.ledger.pending_pushes(NOW + 10) == []

    again = api.put("/bills/FEE-2026", FEE | {"description": "Annual fee"})
    assert again.status == 200 and again.body["version"] == created.body["version"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount_due": 250001}, "amount_due"),
        ({"currency": "USD"}, "currency"),
        ({"due_date": "2026-10-31"}, "due_date"),
        ({"bill_date": "2026-09-01"}, "bill_date"),
    ],
)
def test_a_bill_never_changes_a_different_one_is_409(
    api: LedgerApi, change: dict[str, Any], field: str
) -> None:
    assert api.put("/bills/FEE-2026", FEE).status == 201
    refused = api.put("/bills/FEE-2026", FEE | change)
    assert refused.status == 409 and refused.problem == "bill-immutable"
    assert field in refused.body["different"] and "void" in refused.body["detail"]


def test_another_owner_is_409(api: LedgerApi) -> None:
    assert api.put("/bills/FEE-2026", FEE).status == 201
    moved = {key: value for key, value in FEE.items() if key != "customer"} | {"account": "ACC1"}
    refused = api.put("/bills/FEE-2026", moved)
    assert refused.status == 409 and "owner_kind" in refused.body["different"]


def test_the_owner_must_exist_and_a_customer_on_the_account_model_takes_bills_on_its_accounts(
    api: LedgerApi,
) -> None:
    assert api.put("/bills/B1", FEE | {"customer": "NOBODY"}).status == 404
    on_family = api.put("/bills/B1", FEE | {"customer": "FAM1"})
    assert on_family.status == 422 and on_family.problem == "customer-not-on-customer-model"
    account_bill = {key: value for key, value in FEE.items() if key != "customer"} | {"account": "ACC1"}
    assert api.put("/bills/B1", account_bill).status == 201
    assert api.put("/bills/B2", account_bill | {"account": "NOACC"}).status == 404


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"currency": "ZAR", "amount_due": 100}, ["customer"]),
        ({"customer": "UCR1", "account": "ACC1", "currency": "ZAR", "amount_due": 100}, ["account"]),
        ({"customer": "UCR1", "currency": "ZAR", "amount_due": 0}, ["amount_due"]),
        ({"customer": "UCR1", "currency": "ZAR", "amount_due": 100_000_000}, ["amount_due"]),
        ({"customer": "UCR1", "currency": "ZAR", "amount_due": 10.0}, ["amount_due"]),
        ({"customer": "UCR1", "currency": "ZAR", "amount_due": "100"}, ["amount_due"]),
        ({"customer": "UCR1", "currency": "ZAR", "amount_due": True}, ["amount_due"]),
        ({"customer": "UCR1", "currency": "EUR", "amount_due": 100}, ["currency"]),
        ({"customer": "UCR1", "currency": "ZAR", "amount_due": 100, "due_date": "2026-02-30"}, ["due_date"]),
        ({"customer": "UCR1", "currency": "ZAR", "amount_due": 100, "bill_date": "1/2/2026"}, ["bill_date"]),
        (
            {"customer": "UCR1", "currency": "ZAR", "amount_due": 100, "description": "a\u202eb"},
            ["description"],
        ),
        ({"customer": "UCR1", "currency": "ZAR", "amount_due": 100, "colour": "red"}, ["colour"]),
        ({"customer": "a b", "currency": "ZAR", "amount_due": 100}, ["customer"]),
    ],
)
def test_hostile_bills_are_refused_with_every_problem_named(
    api: LedgerApi, harness: LedgerHarness, body: dict[str, Any], fields: list[str]
) -> None:
    refused = api.put("/bills/B1", body)
    assert refused.status == 400 and refused.problem == "invalid-request"
    assert refused.error_fields == fields
    assert harness.ledger.get_bill(BillRef("B1")) is None


def test_a_reserved_reference_is_422(api: LedgerApi) -> None:
    refused = api.put("/bills/bill_123", FEE)
    assert refused.status == 422 and refused.problem == "reference-reserved"


def test_an_outside_payment_is_recorded_once_by_id(api: LedgerApi, harness: LedgerHarness) -> None:
    api.put("/bills/FEE-2026", FEE)
    head = harness.ledger.get_bill(BillRef("FEE-2026"))
    assert head is not None
    harness.ledger.record_bill_push(BillRef("FEE-2026"), head, 0, NOW + 5)  # Moment has it, nothing due
    assert api.get("/bills/FEE-2026").body["sync"]["state"] == "synced"

    cash = {"id": "cash-7", "amount": 50000, "description": "Cash at the desk"}
    first = api.post("/bills/FEE-2026/payments", cash)
    assert (
        first.status == 201 and first.body["id"] == "outside_payment:cash-7" and first.body["amount"] == 50000
    )
    again = api.post("/bills/FEE-2026/payments", cash)
    assert again.status == 200 and again.body == first.body
    reused = api.post("/bills/FEE-2026/payments", cash | {"amount": 50001})
    assert reused.status == 409 and reused.problem == "payment-id-reused"

    bill = api.get("/bills/FEE-2026").body
    assert (bill["amount_paid"], bill["amount_remaining"], bill["status"]) == (50000, 200000, "unpaid")
    # An outside payment makes it pending: Moment must hear of it.
    assert bill["sync"]["state"] == "pending" and bill["sync"]["outside_pending"] == 50000
    assert [entry["id"] for entry in bill["entries"]] == ["outside_payment:cash-7"]


def test_paying_off_then_overpaying_keeps_the_excess_visible(api: LedgerApi) -> None:
    api.put("/bills/FEE-2026", FEE | {"amount_due": 1000})
    api.post("/bills/FEE-2026/payments", {"id": "p1", "amount": 1000})
    paid = api.get("/bills/FEE-2026").body
    assert (paid["status"], paid["amount_remaining"], paid["amount_overpaid"]) == ("paid", 0, 0)
    api.post("/bills/FEE-2026/payments", {"id": "p2", "amount": 300})
    over = api.get("/bills/FEE-2026").body
    assert (over["status"], over["amount_paid"], over["amount_remaining"], over["amount_overpaid"]) == (
        "paid",
        1300,
        0,
        300,
    )


def test_past_momentss_bound_on_amount_paid_is_422(api: LedgerApi) -> None:
    api.put("/bills/BIG", FEE | {"amount_due": 99_999_999})
    assert api.post("/bills/BIG/payments", {"id": "p1", "amount": 99_999_999}).status == 201
    refused = api.post("/bills/BIG/payments", {"id": "p2", "amount": 1})
    assert refused.status == 422 and refused.problem == "bill-amount-out-of-range"
    # The first one sent again is still a replay, not a refusal.
    assert api.post("/bills/BIG/payments", {"id": "p1", "amount": 99_999_999}).status == 200


def test_void_is_idempotent_keeps_payments_and_refuses_new_ones(
    api: LedgerApi, harness: LedgerHarness
) -> None:
    api.put("/bills/FEE-2026", FEE)
    api.post("/bills/FEE-2026/payments", {"id": "p1", "amount": 1000})
    voided = api.post("/bills/FEE-2026/void")
    assert voided.status == 200 and voided.body["status"] == "voided"
    assert voided.body["sync"]["void_at_moment"] == "pending"
    assert [entry["id"] for entry in voided.body["entries"]] == ["outside_payment:p1"]
    again = api.post("/bills/FEE-2026/void")
    assert again.status == 200 and again.body["version"] == voided.body["version"]

    refused = api.post("/bills/FEE-2026/payments", {"id": "p2", "amount": 1})
    assert refused.status == 409 and refused.problem == "bill-voided"
    # A payment recorded before the void, sent again, is still found (its answer was lost).
    assert api.post("/bills/FEE-2026/payments", {"id": "p1", "amount": 1000}).status == 200
    assert api.post("/bills/NOPE/void").status == 404
    assert api.post("/bills/NOPE/payments", {"id": "p1", "amount": 1}).status == 404


def test_a_bill_payment_never_changes_the_owners_balance(api: LedgerApi) -> None:
    api.post("/customers/UCR1/charges", {"id": "c1", "amount": 700})
    api.put("/bills/FEE-2026", FEE)
    api.post("/bills/FEE-2026/payments", {"id": "p1", "amount": 1000})
    customer = api.get("/customers/UCR1").body
    assert customer["balance"] == 700 and [entry["id"] for entry in customer["entries"]] == ["charge:c1"]


def test_an_owners_bills_are_listed_open_first_and_paged(api: LedgerApi) -> None:
    for ref, due in (
        ("B-late", "2026-12-01"),
        ("B-soon", "2026-10-01"),
        ("B-undated", None),
        ("B-paid", "2026-09-01"),
    ):
        body = FEE | {"amount_due": 100}
        body.pop("due_date")
        if due:
            body["due_date"] = due
        assert api.put(f"/bills/{ref}", body).status == 201
    api.post("/bills/B-paid/payments", {"id": "p1", "amount": 100})
    api.put("/bills/B-other", {"account": "ACC1", "currency": "ZAR", "amount_due": 5})

    listed = api.get("/customers/UCR1/bills").body
    assert [bill["reference"] for bill in listed["bills"]] == ["B-soon", "B-late", "B-undated", "B-paid"]
    unpaid = api.get("/customers/UCR1/bills", "status=unpaid").body
    assert [bill["reference"] for bill in unpaid["bills"]] == ["B-soon", "B-late", "B-undated"]
    paid = api.get("/customers/UCR1/bills", "status=paid").body
    assert [bill["reference"] for bill in paid["bills"]] == ["B-paid"]
    assert api.get("/customers/UCR1/bills", "status=voided").body["bills"] == []

    seen, cursor = [], None
    while True:
        page = api.get("/customers/UCR1/bills", "limit=1" + (f"&cursor={cursor}" if cursor else "")).body
        seen += [bill["reference"] for bill in page["bills"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert seen == ["B-soon", "B-late", "B-undated", "B-paid"]
    assert [bill["reference"] for bill in api.get("/accounts/ACC1/bills").body["bills"]] == ["B-other"]


def test_listing_refuses_what_it_did_not_return(api: LedgerApi) -> None:
    assert api.get("/customers/NOBODY/bills").status == 404
    bad = api.get("/customers/UCR1/bills", "status=open")
    assert bad.status == 400 and bad.error_fields == ["status"]
    assert api.get("/customers/UCR1/bills", "cursor=abc").problem == "invalid-cursor"
    assert api.get("/customers/UCR1/bills", "page=2").error_fields == ["page"]
    assert api.get("/bills/NOPE").status == 404
