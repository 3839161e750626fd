"""The Moment client's bill calls against a mocked Moment (respx): create or adopt, read, PATCH amount_paid,
void; their keys, retries and errors. Nothing touches the network or really sleeps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from local_stack.made_up_values import LOCAL_MOMENT_API_KEY
from moment_sync.moment_client import (
    DEFAULT_BASE_URL,
    BillStatus,
    CreateOutcome,
    MomentClient,
    NewAccount,
    NewBill,
    NewCustomer,
    idempotency_key,
    void_idempotency_key,
)
from moment_sync.moment_errors import (
    MomentApiError,
    MomentBillDiffers,
    MomentConflict,
    MomentNotFound,
    MomentNotOurs,
    MomentRateLimited,
    MomentRequestRejected,
    MomentResponseInvalid,
    MomentUnavailable,
)

NOW = 1_790_000_000.0
CUSTOMER_ID = "bcus_H4jp6KnU5cPw263v1jyz4"
ACCOUNT_ID = "bacc_9dkS0aLq1"
BILL_ID = "bill_7Gq2LmX0"
BILL_REFERENCE = "FEE-2026_annual"
REPLAYED = {"Idempotent-Replayed": "true"}


def bill_json(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": BILL_ID,
        "external_reference": BILL_REFERENCE,
        "customer_id": CUSTOMER_ID,
        "status": "unpaid",
        "currency": "ZAR",
        "amount_due": 120000,
        "amount_paid": 0,
        "amount_remaining": 120000,
        "bill_date": "2026-01-01",
        "due_date": "2026-01-31",
        "payment_rules": {"underpayment_allowed": True, "overpayment_allowed": False},
        "metadata": {},
    }
    document.update(changes)
    return document


def account_json(**changes: Any) -> dict[str, Any]:
    return {
        "id": ACCOUNT_ID,
        "external_reference": "ACC-42",
        "customer_id": CUSTOMER_ID,
        "currency": "ZAR",
        "balance": None,
        **changes,
    }


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> httpx.Response:
    document = {"type": f"https://docs.momentco.io/errors#{status}", "title": title, "status": status}
    return httpx.Response(
        status,
        json={**document, "detail": detail},
        headers={"Content-Type": "application/problem+json", **(headers or {})},
    )


@pytest.fixture
def moment() -> respx.MockRouter:
    return respx.MockRouter(base_url=DEFAULT_BASE_URL, assert_all_called=False)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(moment: respx.MockRouter, sleeps: list[float]) -> Iterator[MomentClient]:
    with MomentClient(
        LOCAL_MOMENT_API_KEY,
        environment="dev",
        transport=httpx.MockTransport(moment.handler),
        sleep=sleeps.append,
        jitter=lambda: 0.5,
        clock=lambda: NOW,
    ) as moment_client:
        yield moment_client


def sent_keys(route: respx.Route) -> list[str | None]:
    return [call.request.headers.get("Idempotency-Key") for call in route.calls]


def customer_bill(**changes: Any) -> NewBill:
    fields: dict[str, Any] = {
        "external_reference": BILL_REFERENCE,
        "amount_due": 120000,
        "currency": "ZAR",
        "customer": CUSTOMER_ID,
        "due_date": "2026-01-31",
    }
    fields.update(changes)
    return NewBill(**fields)


# --- Creating a bill ----------------------------------------------------------------------------------


def test_a_bill_create_sends_its_body_under_the_deterministic_key_of_its_reference(
    client: MomentClient, moment: respx.MockRouter, sleeps: list[float]
) -> None:
    # GIVEN Moment fails once with a 503, then creates the bill
    route = moment.post("/billing/bills").mock(
        side_effect=[httpx.Response(503), httpx.Response(201, json=bill_json())]
    )
    # WHEN the bill is created
    result = client.create_bill(customer_bill(bill_date="2026-01-01", metadata={"plan": "annual"}))
    # THEN both attempts carried the one key of the bill's reference, and the body is Moment's shape
    assert sent_keys(route) == [idempotency_key("bill", BILL_REFERENCE, 0)] * 2
    assert json.loads(route.calls.last.request.content) == {
        "external_reference": BILL_REFERENCE,
        "currency": "ZAR",
        "amount_due": 120000,
        "customer": CUSTOMER_ID,
        "bill_date": "2026-01-01",
        "due_date": "2026-01-31",
        "metadata": {"plan": "annual"},
    }
    assert sleeps == [0.25]
    assert result.outcome is CreateOutcome.CREATED
    assert result.value.id == BILL_ID
    assert result.value.status is BillStatus.UNPAID
    assert result.value.owner_id == CUSTOMER_ID
    assert result.value.overpayment_allowed is False


def test_a_bill_key_differs_from_a_customer_or_account_key_of_the_same_reference() -> None:
    keys = {idempotency_key(kind, BILL_REFERENCE) for kind in ("customer", "account", "bill")}
    keys.add(void_idempotency_key(BILL_REFERENCE))
    assert len(keys) == 4


def test_a_composite_bill_create_sends_the_whole_account_and_customer(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    route = moment.post("/billing/bills").mock(
        return_value=httpx.Response(201, json=bill_json(account_id=ACCOUNT_ID))
    )
    account = NewAccount(NewCustomer("UCR1", name="Thandi"), "ACC-42", name="Membership")
    result = client.create_bill(customer_bill(customer=None, account=account, due_date=None))
    assert json.loads(route.calls.last.request.content) == {
        "external_reference": BILL_REFERENCE,
        "currency": "ZAR",
        "amount_due": 120000,
        "account": {
            "customer": {"external_reference": "UCR1", "name": "Thandi"},
            "external_reference": "ACC-42",
            "name": "Membership",
        },
    }
    assert result.value.owner_id == ACCOUNT_ID


def test_a_409_adopts_the_bill_when_its_owner_amount_and_currency_match(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    # GIVEN Moment holds the bill already, partly paid at Moment
    moment.post("/billing/bills").mock(return_value=problem(409, "Conflict", "external_reference exists"))
    moment.get(f"/billing/bills/{BILL_REFERENCE}").mock(
        return_value=httpx.Response(200, json=bill_json(amount_paid=20000, amount_remaining=100000))
    )
    # WHEN it is created
    result = client.create_bill(customer_bill())
    # THEN it is adopted with Moment's current amount_paid
    assert result.outcome is CreateOutcome.ADOPTED
    assert result.value.amount_paid == 20000


@pytest.mark.parametrize(
    ("existing", "message"),
    [
        ({"amount_due": 99000}, "amount_due 99000, not 120000"),
        ({"currency": "USD"}, "currency USD, not ZAR"),
        ({"customer_id": "bcus_SomeoneElse"}, "owner bcus_SomeoneElse, not customer"),
        ({"account_id": ACCOUNT_ID}, f"owner {ACCOUNT_ID}, not customer"),
    ],
)
def test_a_bill_with_our_reference_but_other_terms_is_not_adopted(
    client: MomentClient, moment: respx.MockRouter, existing: dict[str, Any], message: str
) -> None:
    moment.post("/billing/bills").mock(return_value=problem(409, "Conflict", "exists"))
    moment.get(f"/billing/bills/{BILL_REFERENCE}").mock(
        return_value=httpx.Response(200, json=bill_json(**existing))
    )
    with pytest.raises(MomentBillDiffers, match=message):
        client.create_bill(customer_bill())


def test_a_bill_on_another_account_is_not_adopted(client: MomentClient, moment: respx.MockRouter) -> None:
    moment.post("/billing/bills").mock(return_value=problem(409, "Conflict", "exists"))
    moment.get(f"/billing/bills/{BILL_REFERENCE}").mock(
        return_value=httpx.Response(200, json=bill_json(account_id="bacc_Other"))
    )
    with pytest.raises(MomentBillDiffers, match=f"owner bacc_Other, not account {ACCOUNT_ID}"):
        client.create_bill(customer_bill(customer=None, account=ACCOUNT_ID))


def test_a_composite_bill_is_adopted_only_on_the_account_and_customer_it_names(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    # GIVEN the bill exists on an account whose customer is someone else's
    moment.post("/billing/bills").mock(return_value=problem(409, "Conflict", "exists"))
    moment.get(f"/billing/bills/{BILL_REFERENCE}").mock(
        return_value=httpx.Response(200, json=bill_json(account_id=ACCOUNT_ID))
    )
    moment.get(f"/billing/accounts/{ACCOUNT_ID}").mock(return_value=httpx.Response(200, json=account_json()))
    moment.get(f"/billing/customers/{CUSTOMER_ID}").mock(
        return_value=httpx.Response(200, json={"id": CUSTOMER_ID, "external_reference": "OTHER"})
    )
    account = NewAccount(NewCustomer("UCR1"), "ACC-42")
    # WHEN it is created: THEN the customer check refuses it
    with pytest.raises(MomentBillDiffers, match="belongs to customer 'OTHER'"):
        client.create_bill(customer_bill(customer=None, account=account))
    # AND with the right customer it is adopted
    adopted = client.create_bill(
        customer_bill(customer=None, account=NewAccount(NewCustomer("OTHER"), "ACC-42"))
    )
    assert adopted.outcome is CreateOutcome.ADOPTED


def test_a_replayed_create_is_reread_for_what_moment_holds_now(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    moment.post("/billing/bills").mock(return_value=httpx.Response(201, json=bill_json(), headers=REPLAYED))
    reread = moment.get(f"/billing/bills/{BILL_REFERENCE}").mock(
        return_value=httpx.Response(
            200, json=bill_json(status="paid", amount_paid=120000, amount_remaining=0)
        )
    )
    result = client.create_bill(customer_bill())
    assert reread.call_count == 1
    assert result.outcome is CreateOutcome.ADOPTED
    assert result.value.status is BillStatus.PAID


def test_a_replayed_failure_with_no_bill_moves_to_the_next_key_generation(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    create = moment.post("/billing/bills").mock(
        side_effect=[problem(500, "Server Error", "boom", REPLAYED), httpx.Response(201, json=bill_json())]
    )
    moment.get(f"/billing/bills/{BILL_REFERENCE}").mock(return_value=problem(404, "Not Found", "no bill"))
    result = client.create_bill(customer_bill())
    assert sent_keys(create) == [idempotency_key("bill", BILL_REFERENCE, g) for g in (0, 1)]
    assert result.outcome is CreateOutcome.CREATED
    assert result.generation == 1


def test_an_unanswered_bill_create_says_it_may_have_reached_moment(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    moment.post("/billing/bills").mock(side_effect=httpx.ReadTimeout("late"))
    with pytest.raises(MomentUnavailable) as failure:
        client.create_bill(customer_bill())
    assert failure.value.may_have_reached is True
    assert failure.value.idempotency_key == idempotency_key("bill", BILL_REFERENCE)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"customer": None}, "exactly one"),
        ({"account": ACCOUNT_ID}, "exactly one"),
        ({"customer": "UCR1"}, "bcus_"),
        ({"customer": None, "account": "ACC-42"}, "bacc_"),
        ({"amount_due": 0}, "amount_due must be 1"),
        ({"amount_due": 100_000_000}, "amount_due must be 1"),
        ({"amount_due": 120.0}, "int of minor units"),
        ({"amount_due": True}, "int of minor units"),
        ({"currency": "EUR"}, "Moment supports only"),
        ({"due_date": "2026-1-31"}, "due_date must be a date"),
        ({"bill_date": "2026-02-30"}, "bill_date must be a date"),
        ({"external_reference": "FEE 2026"}, "external_reference"),
    ],
)
def test_a_bill_moment_would_refuse_is_never_built(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        customer_bill(**changes)


# --- Reading a bill -----------------------------------------------------------------------------------


def test_get_bill_reads_by_id_or_reference_and_none_when_moment_has_none(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    moment.get(f"/billing/bills/{BILL_ID}").mock(
        return_value=httpx.Response(
            200,
            json=bill_json(
                status="paid",
                amount_paid=130000,
                amount_remaining=0,
                payment_rules={"overpayment_allowed": True},
            ),
        )
    )
    moment.get("/billing/bills/NOPE").mock(return_value=problem(404, "Not Found", "no bill"))
    bill = client.get_bill(BILL_ID)
    assert bill is not None
    assert (bill.status, bill.amount_paid, bill.amount_remaining, bill.amount_overpaid) == (
        BillStatus.PAID,
        130000,
        0,
        10000,
    )
    assert client.get_bill("NOPE") is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"status": "PAID"}, "status 'PAID' is none of"),
        ({"amount_paid": "100"}, "amount_paid must be an integer"),
        ({"amount_due": 10.5}, "amount_due must be an integer"),
        ({"customer_id": None}, "customer_id or account_id"),
        ({"payment_rules": []}, "payment_rules must be an object"),
        ({"id": "bill_Other", "external_reference": "OTHER"}, "not 'bill_7Gq2LmX0'"),
    ],
)
def test_a_bill_of_the_wrong_shape_is_moment_response_invalid(
    client: MomentClient, moment: respx.MockRouter, changes: dict[str, Any], message: str
) -> None:
    moment.get(f"/billing/bills/{BILL_ID}").mock(return_value=httpx.Response(200, json=bill_json(**changes)))
    with pytest.raises(MomentResponseInvalid, match=message):
        client.get_bill(BILL_ID)


def test_a_bill_read_that_keeps_failing_raises_rather_than_answering_none(
    client: MomentClient, moment: respx.MockRouter, sleeps: list[float]
) -> None:
    moment.get(f"/billing/bills/{BILL_ID}").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "2"})
    )
    with pytest.raises(MomentRateLimited):
        client.get_bill(BILL_ID)
    assert sleeps == [2.0, 2.0, 2.0]


# --- Outside payments: PATCH amount_paid --------------------------------------------------------------


def test_amount_paid_is_patched_cumulatively_with_its_currency_and_no_key(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    route = moment.patch(f"/billing/bills/{BILL_ID}").mock(
        return_value=httpx.Response(200, json=bill_json(amount_paid=50000, amount_remaining=70000))
    )
    bill = client.update_bill_amount_paid(BILL_ID, 50000, "ZAR")
    request = route.calls.last.request
    assert json.loads(request.content) == {"amount_paid": 50000, "currency": "ZAR"}
    assert "Idempotency-Key" not in request.headers
    assert bill.amount_remaining == 70000


def test_a_moment_bill_is_patched_and_voided_by_its_moment_id(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    moment.get(f"/billing/bills/{BILL_REFERENCE}").mock(return_value=httpx.Response(200, json=bill_json()))
    patch = moment.patch(f"/billing/bills/{BILL_ID}").mock(return_value=httpx.Response(200, json=bill_json()))
    void = moment.post(f"/billing/bills/{BILL_ID}/void").mock(
        return_value=httpx.Response(200, json=bill_json(status="voided"))
    )
    read = client.get_bill(BILL_REFERENCE)
    assert read is not None
    client.update_bill_amount_paid(read, 0, "ZAR")
    client.void_bill(read)
    assert patch.call_count == 1
    assert sent_keys(void) == [void_idempotency_key(BILL_ID)]


@pytest.mark.parametrize(
    ("amount_paid", "currency"),
    [(-1, "ZAR"), (100_000_000, "ZAR"), (500.0, "ZAR"), (False, "ZAR"), (500, "EUR")],
)
def test_an_amount_paid_moment_would_refuse_is_never_sent(
    client: MomentClient, moment: respx.MockRouter, amount_paid: Any, currency: Any
) -> None:
    route = moment.patch(f"/billing/bills/{BILL_ID}")
    with pytest.raises(ValueError, match=r"amount_paid|Moment supports only"):
        client.update_bill_amount_paid(BILL_ID, amount_paid, currency)
    assert route.call_count == 0


@pytest.mark.parametrize(
    ("answers", "may_have_reached"),
    [
        ([httpx.ConnectError("refused")] * 4, False),
        ([problem(422, "Unprocessable", "bill is voided")], False),
        ([httpx.Response(429)] * 4, False),
        ([httpx.ReadTimeout("late")] * 4, True),
        ([httpx.Response(502)] * 4, True),
        ([httpx.ReadTimeout("late"), problem(400, "Bad Request", "no")], True),
    ],
)
def test_a_failed_amount_paid_patch_says_whether_it_may_have_landed(
    client: MomentClient, moment: respx.MockRouter, answers: list[Any], may_have_reached: bool
) -> None:
    # The pusher records an unknown landing as an open intent: this flag is what it decides by.
    moment.patch(f"/billing/bills/{BILL_ID}").mock(side_effect=answers)
    with pytest.raises(MomentApiError) as failure:
        client.update_bill_amount_paid(BILL_ID, 1000, "ZAR")
    assert failure.value.may_have_reached is may_have_reached


# --- Voiding ------------------------------------------------------------------------------------------


def test_a_void_is_keyed_retried_with_its_key_and_returns_the_voided_bill(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    route = moment.post(f"/billing/bills/{BILL_REFERENCE}/void").mock(
        side_effect=[httpx.Response(500), httpx.Response(200, json=bill_json(status="voided"))]
    )
    bill = client.void_bill(BILL_REFERENCE)
    assert sent_keys(route) == [void_idempotency_key(BILL_REFERENCE)] * 2
    assert route.calls.last.request.content == b""
    assert bill.status is BillStatus.VOIDED


def test_voiding_a_bill_moment_has_voided_already_is_done(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    moment.post(f"/billing/bills/{BILL_ID}/void").mock(
        return_value=problem(409, "Conflict", "already voided")
    )
    moment.get(f"/billing/bills/{BILL_ID}").mock(
        return_value=httpx.Response(200, json=bill_json(status="voided"))
    )
    assert client.void_bill(BILL_ID).status is BillStatus.VOIDED


def test_a_refused_void_of_a_bill_still_open_is_raised(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    moment.post(f"/billing/bills/{BILL_ID}/void").mock(
        return_value=problem(409, "Conflict", "a bill with payments cannot be voided")
    )
    moment.get(f"/billing/bills/{BILL_ID}").mock(
        return_value=httpx.Response(200, json=bill_json(amount_paid=500))
    )
    with pytest.raises(MomentConflict, match="a bill with payments cannot be voided"):
        client.void_bill(BILL_ID)


def test_voiding_a_bill_moment_does_not_have_is_moment_not_found(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    moment.post(f"/billing/bills/{BILL_ID}/void").mock(return_value=problem(404, "Not Found", "no bill"))
    with pytest.raises(MomentNotFound):
        client.void_bill(BILL_ID)


def test_bill_paths_are_url_encoded(client: MomentClient, moment: respx.MockRouter) -> None:
    route = moment.route(method="GET").mock(return_value=problem(404, "Not Found", "no"))
    assert client.get_bill("FEE 1/../2") is None
    assert route.calls.last.request.url.raw_path == b"/billing/bills/FEE%201%2F..%2F2"


def test_a_reference_read_as_another_bills_id_is_not_adopted(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    moment.post("/billing/bills").mock(return_value=problem(409, "Conflict", "exists"))
    moment.get(f"/billing/bills/{BILL_REFERENCE}").mock(
        return_value=httpx.Response(200, json=bill_json(id=BILL_REFERENCE, external_reference="OTHER"))
    )
    with pytest.raises(MomentNotOurs) as refused:
        client.create_bill(customer_bill())
    assert not isinstance(refused.value, MomentBillDiffers)


def test_a_bill_create_moment_refuses_is_raised_without_a_lookup(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    moment.post("/billing/bills").mock(return_value=problem(400, "Bad Request", "customer not found"))
    lookup = moment.get(f"/billing/bills/{BILL_REFERENCE}")
    with pytest.raises(MomentRequestRejected, match="customer not found"):
        client.create_bill(customer_bill())
    assert lookup.call_count == 0


def test_metadata_travels_in_the_same_patch_as_amount_paid(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    route = moment.patch(f"/billing/bills/{BILL_ID}").mock(return_value=httpx.Response(200, json=bill_json()))
    client.update_bill_amount_paid(BILL_ID, 700, "ZAR", metadata={"moment_sync_outside_paid": "700"})
    assert json.loads(route.calls.last.request.content) == {
        "amount_paid": 700,
        "currency": "ZAR",
        "metadata": {"moment_sync_outside_paid": "700"},
    }


def test_a_void_under_a_new_generation_is_a_new_request_to_moment(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    # Moment keeps replaying a refused void for 24 hours under its key: a later attempt needs another.
    route = moment.post(f"/billing/bills/{BILL_ID}/void").mock(
        side_effect=[
            problem(422, "Unprocessable", "has payments"),
            httpx.Response(200, json=bill_json(status="voided")),
        ]
    )
    moment.get(f"/billing/bills/{BILL_ID}").mock(return_value=httpx.Response(200, json=bill_json()))
    with pytest.raises(MomentRequestRejected):
        client.void_bill(BILL_ID)
    assert client.void_bill(BILL_ID, generation=1).status is BillStatus.VOIDED
    assert sent_keys(route) == [void_idempotency_key(BILL_ID, 0), void_idempotency_key(BILL_ID, 1)]
    assert void_idempotency_key(BILL_ID, 0) != void_idempotency_key(BILL_ID, 1)
