"""The Moment Billing API client against a mocked Moment (respx): keys, retries, errors, create-or-adopt.

Nothing here touches the network or really sleeps: the client gets respx as its transport, and records
the pauses it asks for instead of taking them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import formatdate
from typing import Any

import httpx
import pytest
import respx

from local_stack.made_up_values import LOCAL_MOMENT_API_KEY
from moment_sync.moment_client import (
    DEFAULT_BASE_URL,
    CreateOutcome,
    MomentClient,
    NewAccount,
    NewCustomer,
    ObjectKind,
    RetryPolicy,
    idempotency_key,
)
from moment_sync.moment_errors import (
    MomentApiError,
    MomentConflict,
    MomentKeyRefused,
    MomentNotFound,
    MomentNotOurs,
    MomentRateLimited,
    MomentRequestRejected,
    MomentResponseInvalid,
    MomentUnavailable,
)
from moment_sync.observability import logger

TEST_KEY = LOCAL_MOMENT_API_KEY
# Derived from the made-up test key, so the repository still holds no other secret-looking value.
LIVE_SHAPED_KEY = TEST_KEY.replace("sk_test_", "sk_", 1)
PUBLISHABLE_KEY = TEST_KEY.replace("sk_test_", "pk_test_", 1)
NOW = 1_790_000_000.0
REFERENCE = "UCR1234567890"
ACCOUNT_REFERENCE = "ACC-42_a"
IDEMPOTENCY_KEY_ALPHABET = re.compile(r"^[a-zA-Z0-9-]{1,255}$")
REPLAYED = {"Idempotent-Replayed": "true"}
KINDS: tuple[ObjectKind, ...] = ("customer", "account")


# --- Moment's side ----------------------------------------------------------------------------------


def customer_json(reference: str = REFERENCE, balance: Any = 2000, **changes: Any) -> dict[str, Any]:
    return {
        "id": "bcus_H4jp6KnU5cPw263v1jyz4",
        "external_reference": reference,
        "name": "John Doe",
        "email": "john.doe@example.com",
        "phone": "+27123456789",
        "currency": "ZAR",
        "balance": balance,
        "payment_rules": {"underpayment_allowed": True},
        "metadata": {},
        **changes,
    }


def account_json(reference: str = ACCOUNT_REFERENCE, balance: Any = 10000, **changes: Any) -> dict[str, Any]:
    return {
        "id": "bacc_9dkS0aLq1",
        "external_reference": reference,
        "customer_id": "bcus_H4jp6KnU5cPw263v1jyz4",
        "name": "Gym membership",
        "currency": "ZAR",
        "balance": balance,
        **changes,
    }


def problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None, instance: str = ""
) -> httpx.Response:
    document = {
        "type": f"https://docs.momentco.io/errors#{title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    return httpx.Response(
        status,
        content=json.dumps(document).encode(),
        headers={"Content-Type": "application/problem+json", **(headers or {})},
    )


@pytest.fixture
def moment() -> respx.MockRouter:
    return respx.MockRouter(base_url=DEFAULT_BASE_URL, assert_all_called=False)


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_client(
    moment: respx.MockRouter, sleeps: list[float], api_key: str = TEST_KEY, **options: Any
) -> MomentClient:
    return MomentClient(
        api_key,
        environment=options.pop("environment", "dev"),
        transport=httpx.MockTransport(moment.handler),
        sleep=sleeps.append,
        jitter=lambda: 0.5,
        clock=lambda: NOW,
        **options,
    )


@pytest.fixture
def client(moment: respx.MockRouter, sleeps: list[float]) -> Iterator[MomentClient]:
    with make_client(moment, sleeps) as moment_client:
        yield moment_client


def as_bytes(document: object) -> bytes:
    return json.dumps(document).encode()


def sent_keys(route: respx.Route) -> list[str | None]:
    return [call.request.headers.get("Idempotency-Key") for call in route.calls]


# --- Idempotency keys -------------------------------------------------------------------------------


def test_an_idempotency_key_is_a_stable_digest_within_moments_alphabet() -> None:
    # GIVEN / WHEN the same create is keyed twice
    first = idempotency_key("customer", REFERENCE, 0)
    second = idempotency_key("customer", REFERENCE)
    # THEN the keys agree and Moment would accept them
    assert first == second
    assert IDEMPOTENCY_KEY_ALPHABET.match(first)
    assert len(first) == 64


def test_idempotency_keys_differ_per_kind_reference_and_generation() -> None:
    # GIVEN every combination of kind, reference and generation
    combinations = [
        (kind, reference, generation)
        for kind in KINDS
        for reference in (REFERENCE, REFERENCE + "0", "A-1", "A_1")
        for generation in (0, 1, 2)
    ]
    # WHEN each is keyed
    keys = {idempotency_key(kind, reference, generation) for kind, reference, generation in combinations}
    # THEN no two creates share a key
    assert len(keys) == len(combinations)
    assert all(IDEMPOTENCY_KEY_ALPHABET.match(key) for key in keys)


@pytest.mark.parametrize("generation", [-1, True, 1.0])
def test_a_generation_is_a_non_negative_int(generation: Any) -> None:
    with pytest.raises(ValueError, match="generation"):
        idempotency_key("customer", REFERENCE, generation)


def test_a_retried_create_sends_the_same_idempotency_key_on_every_attempt(
    client: MomentClient, moment: respx.MockRouter, sleeps: list[float]
) -> None:
    # GIVEN Moment fails twice with a 5xx, then creates the customer
    route = moment.post("/billing/customers").mock(
        side_effect=[httpx.Response(503), httpx.Response(502), httpx.Response(201, json=customer_json())]
    )
    # WHEN the customer is created
    customer = client.create_customer(NewCustomer(REFERENCE, balance=2000, currency="ZAR"))
    # THEN every attempt carried the one deterministic key, after backoff pauses with full jitter
    assert sent_keys(route) == [idempotency_key("customer", REFERENCE, 0)] * 3
    assert sleeps == [0.25, 0.5]  # jitter 0.5 x ceilings 0.5 s and 1 s
    assert customer.id == "bcus_H4jp6KnU5cPw263v1jyz4"
    assert customer.balance == 2000


def test_a_create_sends_json_with_the_bearer_key_and_explicit_timeouts(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    # GIVEN Moment creates what it is sent
    route = moment.post("/billing/customers").mock(return_value=httpx.Response(201, json=customer_json()))
    # WHEN a customer with an opening balance is created under generation 2
    client.create_customer(
        NewCustomer(REFERENCE, name="John Doe", balance=2000, currency="ZAR", metadata={"plan": "gold"}),
        generation=2,
    )
    # THEN the request is what Moment documents, and absent fields are left out rather than null
    request = route.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {TEST_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == idempotency_key("customer", REFERENCE, 2)
    assert json.loads(request.content) == {
        "external_reference": REFERENCE,
        "name": "John Doe",
        "balance": 2000,
        "currency": "ZAR",
        "metadata": {"plan": "gold"},
    }
    assert request.extensions["timeout"] == {"connect": 3.0, "read": 10.0, "write": 10.0, "pool": 10.0}


# --- Retries ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "expected_sleep"),
    [
        ("7", 7.0),
        (formatdate(NOW + 3, usegmt=True), 3.0),  # an HTTP-date, three seconds after the pinned clock
        (formatdate(NOW - 60, usegmt=True), 0.0),  # a date already past: go now
        ("120", 8.0),  # capped by max_delay_seconds
        ("soon", 0.25),  # unreadable: back off as if Moment had said nothing
    ],
)
def test_a_429_is_retried_after_what_retry_after_asks(
    client: MomentClient,
    moment: respx.MockRouter,
    sleeps: list[float],
    retry_after: str,
    expected_sleep: float,
) -> None:
    # GIVEN Moment throttles once, saying when to come back
    route = moment.get(f"/billing/customers/{REFERENCE}").mock(
        side_effect=[
            problem(429, "Too Many Requests", "Slow down", {"Retry-After": retry_after}),
            httpx.Response(200, json=customer_json()),
        ]
    )
    # WHEN the customer is read
    customer = client.get_customer(REFERENCE)
    # THEN the client paused as asked (within the cap), then succeeded
    assert sleeps == [expected_sleep]
    assert route.call_count == 2
    assert customer.external_reference == REFERENCE


def test_a_429_without_retry_after_backs_off_exponentially_then_gives_up(
    client: MomentClient, moment: respx.MockRouter, sleeps: list[float]
) -> None:
    # GIVEN Moment throttles every attempt and never says for how long
    route = moment.get(f"/billing/customers/{REFERENCE}").mock(
        return_value=problem(429, "Too Many Requests", "Slow down")
    )
    # WHEN the customer is read
    with pytest.raises(MomentRateLimited) as raised:
        client.get_customer(REFERENCE)
    # THEN four attempts were made, with full-jitter pauses under a doubling ceiling
    assert route.call_count == 4
    assert sleeps == [0.25, 0.5, 1.0]
    assert raised.value.status == 429
    assert raised.value.attempts == 4
    assert isinstance(raised.value, MomentUnavailable)  # a caller defers both to a later run


def test_the_backoff_ceiling_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=8, base_delay_seconds=1.0, max_delay_seconds=4.0)
    ceilings = [policy.delay_seconds(attempt, None, jitter=1.0) for attempt in range(1, 8)]
    assert ceilings == [1, 2, 4, 4, 4, 4, 4]
    assert policy.delay_seconds(3, None, jitter=0.0) == 0.0


def test_a_500_then_success_returns_the_object(
    client: MomentClient, moment: respx.MockRouter, sleeps: list[float]
) -> None:
    moment.get("/billing/accounts/bacc_9dkS0aLq1").mock(
        side_effect=[problem(500, "Internal Server Error", "Oops"), httpx.Response(200, json=account_json())]
    )
    account = client.get_account("bacc_9dkS0aLq1")
    assert account.balance == 10000
    assert account.customer_id == "bcus_H4jp6KnU5cPw263v1jyz4"
    assert len(sleeps) == 1


def test_a_timeout_then_success_returns_the_object(
    client: MomentClient, moment: respx.MockRouter, sleeps: list[float]
) -> None:
    # GIVEN the first PATCH times out while reading Moment's answer
    route = moment.patch(f"/billing/customers/{REFERENCE}").mock(
        side_effect=[httpx.ReadTimeout("timed out"), httpx.Response(200, json=customer_json(balance=5000))]
    )
    # WHEN the balance is set
    customer = client.set_customer_balance(REFERENCE, 5000, "ZAR")
    # THEN the PATCH (an absolute set, safe to repeat) was sent again and succeeded
    assert route.call_count == 2
    assert sleeps == [0.25]
    assert customer.balance == 5000


def test_timeouts_until_the_attempts_run_out_raise_moment_unavailable(
    client: MomentClient, moment: respx.MockRouter, sleeps: list[float]
) -> None:
    route = moment.get(f"/billing/customers/{REFERENCE}").mock(side_effect=httpx.ConnectTimeout("timed out"))
    with pytest.raises(MomentUnavailable) as raised:
        client.get_customer(REFERENCE)
    assert route.call_count == 4
    assert len(sleeps) == 3
    assert raised.value.status is None
    assert isinstance(raised.value.__cause__, httpx.ConnectTimeout)
    assert "ConnectTimeout" in str(raised.value)
    assert "after 4 attempts" in str(raised.value)


@pytest.mark.parametrize("status", [400, 401, 402, 403, 422])
def test_other_4xx_are_never_retried(
    client: MomentClient, moment: respx.MockRouter, sleeps: list[float], status: int
) -> None:
    # GIVEN Moment refuses the request itself
    route = moment.post("/billing/customers").mock(return_value=problem(status, "Refused", "Bad request"))
    # WHEN a customer is created
    with pytest.raises(MomentRequestRejected) as raised:
        client.create_customer(NewCustomer(REFERENCE))
    # THEN asking again would not help, so it was asked once
    assert route.call_count == 1
    assert sleeps == []
    assert raised.value.status == status
    assert type(raised.value) is MomentRequestRejected


def test_a_replayed_5xx_is_not_retried(
    client: MomentClient, moment: respx.MockRouter, sleeps: list[float]
) -> None:
    # GIVEN Moment replays a 500 it stored for this idempotency key
    route = moment.post("/billing/customers").mock(
        return_value=problem(500, "Internal Server Error", "Oops", REPLAYED)
    )
    # WHEN the customer is created
    with pytest.raises(MomentUnavailable) as raised:
        client.create_customer(NewCustomer(REFERENCE))
    # THEN the same key would only replay it again: one attempt, and the error says it was replayed
    assert route.call_count == 1
    assert sleeps == []
    assert raised.value.replayed is True
    assert "replayed" in str(raised.value)


# --- Errors -----------------------------------------------------------------------------------------


def test_a_404_is_moment_not_found_with_its_problem_details(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    moment.get("/billing/customers/UCR-missing").mock(
        return_value=problem(
            404, "Not Found", "No customer UCR-missing\nexists.", instance="/billing/customers/UCR-missing"
        )
    )
    with pytest.raises(MomentNotFound) as raised:
        client.get_customer("UCR-missing")
    error = raised.value
    assert error.status == 404
    assert error.problem is not None
    assert error.problem.type == "https://docs.momentco.io/errors#not-found"
    assert error.problem.title == "Not Found"
    assert error.problem.status == 404
    assert error.problem.detail == "No customer UCR-missing\nexists."
    assert error.problem.instance == "/billing/customers/UCR-missing"
    assert error.replayed is False
    assert str(error) == (
        "Moment GET /billing/customers/UCR-missing answered 404: Not Found: No customer UCR-missing exists."
    )


def test_an_error_without_a_problem_document_still_says_what_failed(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    moment.patch("/billing/accounts/bacc_1").mock(return_value=httpx.Response(502, text="<html>Bad gateway"))
    with pytest.raises(MomentUnavailable) as raised:
        client.set_account_balance("bacc_1", 100, "USD")
    assert raised.value.problem is None
    expected = "Moment PATCH /billing/accounts/bacc_1 answered 502: Bad Gateway after 4 attempts"
    assert str(raised.value) == expected


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (b"<html>oops</html>", "the body is not JSON"),
        (b"", "the body is not JSON"),
        (b"\xff\xfe", "the body is not JSON"),
        (b"[1, 2]", "the body is not a JSON object"),
        (as_bytes(customer_json(balance="12")), "balance must be an integer of minor units, got a string"),
        (as_bytes(customer_json(balance=12.5)), "balance must be an integer of minor units, got a decimal"),
        (as_bytes(customer_json(balance=12.0)), "balance must be an integer of minor units, got a decimal"),
        (as_bytes(customer_json(balance=True)), "balance must be an integer of minor units, got a boolean"),
        (as_bytes(customer_json(id=None)), "id must be a non-empty string, got null"),
        (as_bytes(customer_json(id=123)), "id must be a non-empty string, got an integer"),
        (as_bytes({"external_reference": REFERENCE}), "id must be a non-empty string, got nothing"),
        (as_bytes({"id": "bcus_1"}), "external_reference must be a non-empty string, got nothing"),
        (as_bytes(customer_json(currency=["ZAR"])), "currency must be a string when present"),
    ],
)
def test_a_response_of_the_wrong_shape_is_moment_response_invalid(
    client: MomentClient, moment: respx.MockRouter, content: bytes, complaint: str
) -> None:
    # GIVEN Moment answers 200 with something its documentation does not promise
    moment.get(f"/billing/customers/{REFERENCE}").mock(return_value=httpx.Response(200, content=content))
    # WHEN the customer is read
    with pytest.raises(MomentResponseInvalid) as raised:
        client.get_customer(REFERENCE)
    # THEN the error is typed and says what was wrong, never a KeyError or TypeError
    assert complaint in str(raised.value)
    assert raised.value.status == 200


def test_an_account_without_its_customer_id_is_moment_response_invalid(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    document = account_json()
    del document["customer_id"]
    moment.get("/billing/accounts/bacc_9dkS0aLq1").mock(return_value=httpx.Response(200, json=document))
    with pytest.raises(MomentResponseInvalid, match="customer_id must be a non-empty string"):
        client.get_account("bacc_9dkS0aLq1")


def test_a_customer_without_balance_tracking_reads_as_none(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    document = customer_json()
    del document["balance"], document["currency"]
    moment.get(f"/billing/customers/{REFERENCE}").mock(return_value=httpx.Response(200, json=document))
    customer = client.get_customer(REFERENCE)
    assert customer.balance is None
    assert customer.currency is None
    assert customer.raw["payment_rules"] == {"underpayment_allowed": True}


# --- Create or adopt --------------------------------------------------------------------------------


def test_a_409_on_create_adopts_the_customer_by_its_reference(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    # GIVEN the customer exists at Moment already, with Moment's own balance
    create = moment.post("/billing/customers").mock(
        return_value=problem(409, "Conflict", "external_reference already exists")
    )
    lookup = moment.get(f"/billing/customers/{REFERENCE}").mock(
        return_value=httpx.Response(200, json=customer_json(balance=1500))
    )
    # WHEN it is created or adopted
    result = client.create_or_adopt_customer(NewCustomer(REFERENCE, balance=2000, currency="ZAR"))
    # THEN it is adopted, with Moment's current balance (what the caller records as last pushed)
    assert create.call_count == 1
    assert lookup.call_count == 1
    assert result.outcome is CreateOutcome.ADOPTED
    assert result.value.balance == 1500
    assert result.generation == 0


def test_a_plain_create_raises_moment_conflict_on_409(client: MomentClient, moment: respx.MockRouter) -> None:
    moment.post("/billing/accounts").mock(return_value=problem(409, "Conflict", "exists"))
    with pytest.raises(MomentConflict):
        client.create_account(NewAccount(customer=REFERENCE, external_reference=ACCOUNT_REFERENCE))


def test_a_replayed_error_with_nothing_created_moves_to_a_new_key_generation(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    # GIVEN generation 0 of the key keeps replaying a stored 422, and the customer does not exist
    create = moment.post("/billing/customers").mock(
        side_effect=[
            problem(422, "Unprocessable", "phone is not E.164", REPLAYED),
            httpx.Response(201, json=customer_json()),
        ]
    )
    lookup = moment.get(f"/billing/customers/{REFERENCE}").mock(
        return_value=problem(404, "Not Found", "No such customer")
    )
    # WHEN it is created or adopted
    result = client.create_or_adopt_customer(NewCustomer(REFERENCE, balance=2000, currency="ZAR"))
    # THEN it was looked up, then created under generation 1 of the key
    assert lookup.call_count == 1
    assert sent_keys(create) == [
        idempotency_key("customer", REFERENCE, 0),
        idempotency_key("customer", REFERENCE, 1),
    ]
    assert result.outcome is CreateOutcome.CREATED
    assert result.generation == 1
    assert result.value.balance == 2000


def test_a_replayed_error_whose_object_exists_adopts_it(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    # GIVEN the key replays a stored 500, but the account was created meanwhile
    create = moment.post("/billing/accounts").mock(
        return_value=problem(500, "Internal Server Error", "Oops", REPLAYED)
    )
    moment.get(f"/billing/accounts/{ACCOUNT_REFERENCE}").mock(
        return_value=httpx.Response(200, json=account_json(balance=7000))
    )
    # (its customer is the one named, checked by that customer's reference)
    moment.get("/billing/customers/bcus_H4jp6KnU5cPw263v1jyz4").mock(
        return_value=httpx.Response(200, json=customer_json())
    )
    # WHEN it is created or adopted
    result = client.create_or_adopt_account(NewAccount(REFERENCE, ACCOUNT_REFERENCE))
    # THEN it is adopted without another create
    assert create.call_count == 1
    assert result.outcome is CreateOutcome.ADOPTED
    assert result.value.balance == 7000


def test_a_replayed_success_is_reread_for_the_current_balance(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    # GIVEN Moment replays the create of hours ago, and a payment has lowered the balance since
    moment.post("/billing/customers").mock(
        return_value=httpx.Response(201, json=customer_json(balance=2000), headers=REPLAYED)
    )
    lookup = moment.get(f"/billing/customers/{REFERENCE}").mock(
        return_value=httpx.Response(200, json=customer_json(balance=500))
    )
    # WHEN it is created or adopted
    result = client.create_or_adopt_customer(NewCustomer(REFERENCE, balance=2000, currency="ZAR"))
    # THEN the stale replayed balance is not reported: Moment's current one is
    assert lookup.call_count == 1
    assert result.outcome is CreateOutcome.ADOPTED
    assert result.value.balance == 500


def test_new_key_generations_are_bounded(client: MomentClient, moment: respx.MockRouter) -> None:
    # GIVEN every generation replays a stored failure and the customer never exists
    create = moment.post("/billing/customers").mock(
        return_value=problem(500, "Internal Server Error", "Oops", REPLAYED)
    )
    moment.get(f"/billing/customers/{REFERENCE}").mock(return_value=problem(404, "Not Found", "None"))
    # WHEN it is created or adopted from generation 5
    with pytest.raises(MomentUnavailable) as raised:
        client.create_or_adopt_customer(NewCustomer(REFERENCE), generation=5)
    # THEN three generations were tried, then the replayed failure is raised
    assert sent_keys(create) == [idempotency_key("customer", REFERENCE, g) for g in (5, 6, 7)]
    assert raised.value.replayed is True


def test_a_fresh_refusal_is_raised_without_a_lookup(client: MomentClient, moment: respx.MockRouter) -> None:
    moment.post("/billing/customers").mock(return_value=problem(422, "Unprocessable", "phone is not E.164"))
    lookup = moment.get(f"/billing/customers/{REFERENCE}")
    with pytest.raises(MomentRequestRejected):
        client.create_or_adopt_customer(NewCustomer(REFERENCE, phone="0123"))
    assert lookup.call_count == 0


def test_an_unanswered_create_keeps_its_key_for_the_next_run(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    # GIVEN Moment is down for every attempt: the create may or may not have landed
    create = moment.post("/billing/customers").mock(side_effect=httpx.ConnectError("refused"))
    lookup = moment.get(f"/billing/customers/{REFERENCE}")
    # WHEN it is created or adopted
    with pytest.raises(MomentUnavailable):
        client.create_or_adopt_customer(NewCustomer(REFERENCE))
    # THEN no new generation was started (the next run's retry of the same key is what stays safe)
    assert set(sent_keys(create)) == {idempotency_key("customer", REFERENCE, 0)}
    assert lookup.call_count == 0


def test_adoption_refuses_an_object_with_another_reference(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    # GIVEN the lookup path resolves to some other customer (a reference shaped like a Moment id)
    moment.post("/billing/customers").mock(return_value=problem(409, "Conflict", "exists"))
    moment.get("/billing/customers/bcus_lookalike").mock(
        return_value=httpx.Response(200, json=customer_json(reference="SOMEONE-ELSE"))
    )
    # WHEN it is created or adopted
    with pytest.raises(MomentNotOurs, match="external_reference 'SOMEONE-ELSE': not ours to adopt"):
        client.create_or_adopt_customer(NewCustomer("bcus_lookalike"))


def test_find_customer_refuses_a_reference_read_as_another_customers_id(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    # GIVEN a reference equal to another customer's Moment id: Moment answers with that customer
    moment.get("/billing/customers/bcus_H4jp6KnU5cPw263v1jyz4").mock(
        return_value=httpx.Response(200, json=customer_json(reference="SOMEONE-ELSE"))
    )
    moment.get(f"/billing/customers/{REFERENCE}").mock(return_value=problem(404, "Not Found", "none"))
    # THEN a GET by reference never takes it for ours; a missing one is None
    with pytest.raises(MomentNotOurs):
        client.find_customer("bcus_H4jp6KnU5cPw263v1jyz4")
    assert client.find_customer(REFERENCE) is None


def test_an_account_held_by_another_customer_is_not_adopted(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    # GIVEN Moment has an account with this reference, under another customer than the one named
    moment.post("/billing/accounts").mock(return_value=problem(409, "Conflict", "exists"))
    moment.get(f"/billing/accounts/{ACCOUNT_REFERENCE}").mock(
        return_value=httpx.Response(200, json=account_json(customer_id="bcus_SomeoneElse"))
    )
    # WHEN it is created or adopted under a linked customer
    with pytest.raises(MomentNotOurs, match="belongs to bcus_SomeoneElse, not to bcus_H4jp6KnU5cPw263v1jyz4"):
        client.create_or_adopt_account(NewAccount("bcus_H4jp6KnU5cPw263v1jyz4", ACCOUNT_REFERENCE))


def test_an_account_of_a_customer_not_linked_yet_is_checked_by_that_customers_reference(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    moment.post("/billing/accounts").mock(return_value=problem(409, "Conflict", "exists"))
    moment.get(f"/billing/accounts/{ACCOUNT_REFERENCE}").mock(
        return_value=httpx.Response(200, json=account_json(customer_id="bcus_SomeoneElse"))
    )
    holder = moment.get("/billing/customers/bcus_SomeoneElse").mock(
        return_value=httpx.Response(
            200, json=customer_json(reference="OTHER-CUSTOMER", id="bcus_SomeoneElse")
        )
    )
    # WHEN it is created (composite: the customer is not linked yet) or adopted
    with pytest.raises(MomentNotOurs, match="belongs to customer 'OTHER-CUSTOMER'"):
        client.create_or_adopt_account(NewAccount(NewCustomer(REFERENCE), ACCOUNT_REFERENCE))
    assert holder.call_count == 1


def test_a_composite_account_create_sends_the_whole_customer(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    route = moment.post("/billing/accounts").mock(return_value=httpx.Response(201, json=account_json()))
    new_account = NewAccount(
        customer=NewCustomer(REFERENCE, name="John Doe"),
        external_reference=ACCOUNT_REFERENCE,
        balance=10000,
        currency="ZAR",
    )
    result = client.create_or_adopt_account(new_account)
    assert json.loads(route.calls.last.request.content) == {
        "customer": {"external_reference": REFERENCE, "name": "John Doe"},
        "external_reference": ACCOUNT_REFERENCE,
        "balance": 10000,
        "currency": "ZAR",
    }
    assert sent_keys(route) == [idempotency_key("account", ACCOUNT_REFERENCE)]
    assert result.outcome is CreateOutcome.CREATED
    assert result.value.customer_id == "bcus_H4jp6KnU5cPw263v1jyz4"


# --- Balance pushes and paths -----------------------------------------------------------------------


def test_a_customer_balance_patch_always_carries_its_currency(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    route = moment.patch(f"/billing/customers/{REFERENCE}").mock(
        return_value=httpx.Response(200, json=customer_json(balance=5000))
    )
    customer = client.set_customer_balance(REFERENCE, 5000, "ZAR")
    request = route.calls.last.request
    assert json.loads(request.content) == {"balance": 5000, "currency": "ZAR"}
    assert "Idempotency-Key" not in request.headers  # PATCH is an absolute set; Moment takes no key
    assert customer.balance == 5000


def test_an_account_balance_patch_always_carries_its_currency(
    client: MomentClient, moment: respx.MockRouter
) -> None:
    route = moment.patch("/billing/accounts/bacc_9dkS0aLq1").mock(
        return_value=httpx.Response(200, json=account_json(balance=-250, currency="USD"))
    )
    account = client.set_account_balance("bacc_9dkS0aLq1", -250, "USD")
    assert json.loads(route.calls.last.request.content) == {"balance": -250, "currency": "USD"}
    assert account.balance == -250


@pytest.mark.parametrize(
    ("balance", "currency"), [(50.0, "ZAR"), (True, "ZAR"), ("5000", "ZAR"), (5000, "EUR"), (5000, None)]
)
def test_a_balance_that_is_not_int_minor_units_with_a_currency_is_never_sent(
    client: MomentClient, moment: respx.MockRouter, balance: Any, currency: Any
) -> None:
    route = moment.patch(f"/billing/customers/{REFERENCE}")
    with pytest.raises(ValueError, match=r"balance|Moment supports only"):
        client.set_customer_balance(REFERENCE, balance, currency)
    with pytest.raises(ValueError, match=r"balance|Moment supports only"):
        NewCustomer(REFERENCE, balance=balance, currency=currency)
    assert route.call_count == 0


def test_path_segments_are_url_encoded(client: MomentClient, moment: respx.MockRouter) -> None:
    route = moment.route(method="GET").mock(return_value=httpx.Response(200, json=customer_json()))
    client.get_customer("UCR 1/../2?x#y%")
    assert route.calls.last.request.url.raw_path == b"/billing/customers/UCR%201%2F..%2F2%3Fx%23y%25"


@pytest.mark.parametrize("segment", ["", ".", ".."])
def test_a_path_segment_that_would_change_the_path_is_refused(client: MomentClient, segment: str) -> None:
    with pytest.raises(ValueError, match="id or external_reference"):
        client.get_account(segment)


@pytest.mark.parametrize("reference", ["", "has space", "dot.ted", "x" * 256])
def test_an_external_reference_outside_moments_pattern_is_refused(reference: str) -> None:
    with pytest.raises(ValueError, match="external_reference"):
        NewCustomer(reference)


# --- Keys -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_key", "environment", "reason"),
    [
        (LIVE_SHAPED_KEY, "dev", "live Moment key"),
        (LIVE_SHAPED_KEY, "staging", "live Moment key"),
        (TEST_KEY, "prod", "test Moment key"),
        (PUBLISHABLE_KEY, "dev", "publishable key"),
        (PUBLISHABLE_KEY, "prod", "publishable key"),
        ("", "dev", "no Moment API key"),
        ("sk_", "prod", "must be a secret key"),
        ("sk_test_", "dev", "must be a secret key"),
        (TEST_KEY.replace("sk_test_", "sk_test", 1), "prod", "must be a secret key"),
        (TEST_KEY + "\n", "dev", "whitespace"),
    ],
)
def test_a_key_that_does_not_suit_the_environment_is_refused(
    moment: respx.MockRouter, sleeps: list[float], api_key: str, environment: str, reason: str
) -> None:
    with pytest.raises(MomentKeyRefused, match=reason) as raised:
        make_client(moment, sleeps, api_key=api_key, environment=environment)
    if len(api_key.strip()) > len("sk_test_"):  # a bare prefix is named in the message on purpose
        assert api_key.strip() not in str(raised.value)


@pytest.mark.parametrize(("api_key", "environment"), [(TEST_KEY, "dev"), (LIVE_SHAPED_KEY, "prod")])
def test_a_key_that_suits_the_environment_is_accepted(
    moment: respx.MockRouter, sleeps: list[float], api_key: str, environment: str
) -> None:
    client = make_client(moment, sleeps, api_key=api_key, environment=environment)
    assert api_key not in repr(client)
    assert "MomentClient(base_url='https://api.momentpay.net'" in repr(client)


@contextmanager
def powertools_lines_on_stdout() -> Iterator[None]:
    """Point the shared logger's handler at this phase's sys.stdout (capsys), then back.

    Powertools keeps the stdout of import time; capsys only swaps sys.stdout during the test's call."""
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    previous_stream = handler.setStream(sys.stdout)
    try:
        yield
    finally:
        handler.setStream(previous_stream)


def test_the_key_never_reaches_logs_errors_or_reprs(
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    client: MomentClient,
    moment: respx.MockRouter,
) -> None:
    # GIVEN a retried create, a refusal whose detail echoes the key, and a network failure
    create = moment.post("/billing/customers").mock(
        side_effect=[httpx.Response(500), httpx.Response(201, json=customer_json())]
    )
    moment.get("/billing/customers/UCR-1").mock(
        return_value=problem(401, "Unauthorized", f"Key {TEST_KEY} is invalid", instance=f"/k/{TEST_KEY}")
    )
    moment.get("/billing/customers/UCR-2").mock(side_effect=httpx.ConnectError(f"refused for {TEST_KEY}"))
    caplog.set_level(logging.DEBUG, logger=logger.name)
    # WHEN they run with logging at DEBUG
    errors: list[MomentApiError] = []
    with powertools_lines_on_stdout():
        client.create_customer(NewCustomer(REFERENCE))
        for reference in ("UCR-1", "UCR-2"):
            with pytest.raises(MomentApiError) as raised:
                client.get_customer(reference)
            errors.append(raised.value)
    # THEN the key was sent to Moment, and is nowhere else
    assert create.calls.last.request.headers["Authorization"] == f"Bearer {TEST_KEY}"
    printed = capsys.readouterr()
    records = [f"{record.getMessage()} {vars(record)}" for record in caplog.records]
    assert any("moment request" in line and "/billing/customers" in line for line in records)
    assert "moment request" in printed.out  # the Powertools JSON lines were written where we looked
    assert idempotency_key("customer", REFERENCE) in printed.out
    shown = [*records, printed.out, printed.err, repr(client), *map(str, errors), *map(repr, errors)]
    assert all(TEST_KEY not in text for text in shown)
    assert all("Bearer" not in text for text in shown)
    assert errors[0].problem is not None
    assert errors[0].problem.detail == "Key [redacted] is invalid"
    assert "[redacted]" in str(errors[1])


# --- Construction -----------------------------------------------------------------------------------


@pytest.mark.parametrize("base_url", ["http://api.momentpay.net", "ftp://api.momentpay.net"])
def test_a_base_url_without_tls_is_refused(
    moment: respx.MockRouter, sleeps: list[float], base_url: str
) -> None:
    with pytest.raises(ValueError, match="https"):
        make_client(moment, sleeps, base_url=base_url)


def test_plain_http_to_the_docker_host_only_under_sam_local(
    moment: respx.MockRouter, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A `sam local` container reaches `make local`'s sandbox at host.docker.internal; nowhere else
    # is that name a machine of ours, so without AWS_SAM_LOCAL (set only by sam local) it is refused.
    monkeypatch.delenv("AWS_SAM_LOCAL", raising=False)
    with pytest.raises(ValueError, match="https"):
        make_client(moment, sleeps, base_url="http://host.docker.internal:4010")
    monkeypatch.setenv("AWS_SAM_LOCAL", "true")
    with pytest.raises(ValueError, match="https"):
        make_client(moment, sleeps, base_url="http://api.momentpay.net")
    sandbox = respx.MockRouter(base_url="http://host.docker.internal:4010", assert_all_called=False)
    route = sandbox.get("/billing/customers/UCR-1").respond(200, json=customer_json())
    make_client(sandbox, sleeps, base_url="http://host.docker.internal:4010").get_customer("UCR-1")
    assert route.call_count == 1


def test_a_configured_base_url_is_used(sleeps: list[float]) -> None:
    sandbox = respx.MockRouter(base_url="http://127.0.0.1:8765", assert_all_called=False)
    route = sandbox.get("/billing/customers/UCR-1").respond(200, json=customer_json())
    client = make_client(sandbox, sleeps, base_url="http://127.0.0.1:8765/")
    client.get_customer("UCR-1")
    assert route.call_count == 1


def test_a_lent_http_client_is_used_and_left_open(moment: respx.MockRouter) -> None:
    route = moment.get(f"/billing/customers/{REFERENCE}").respond(200, json=customer_json())
    lent = httpx.Client(transport=httpx.MockTransport(moment.handler))  # httpx's own 5 s timeouts
    with MomentClient(TEST_KEY, environment="dev", http_client=lent, connect_timeout_seconds=1.5) as client:
        client.get_customer(REFERENCE)
    assert route.call_count == 1
    assert route.calls.last.request.extensions["timeout"] == {
        "connect": 1.5,
        "read": 10.0,
        "write": 10.0,
        "pool": 10.0,
    }
    assert not lent.is_closed
    lent.close()


def test_a_transport_and_a_client_together_are_refused(moment: respx.MockRouter) -> None:
    transport = httpx.MockTransport(moment.handler)
    with pytest.raises(ValueError, match="not both"):
        MomentClient(TEST_KEY, environment="dev", transport=transport, http_client=httpx.Client())


# --- Whether a failed request may have reached Moment (the pusher keeps or drops its intent) --------------


@pytest.mark.parametrize(
    ("answers", "may_have_reached"),
    [
        # nothing left the machine: no connection, every time
        ([httpx.ConnectError("refused")] * 4, False),
        ([httpx.ConnectTimeout("timed out")] * 4, False),
        # Moment refused it outright
        ([problem(400, "Bad Request", "no")], False),
        ([httpx.Response(429)] * 4, False),
        ([httpx.ConnectError("refused"), problem(422, "Unprocessable", "no")], False),
        # sent, answer lost or late: Moment may have applied it
        ([httpx.ReadTimeout("timed out")] * 4, True),
        ([httpx.RemoteProtocolError("dropped")] * 4, True),
        ([httpx.ConnectError("no"), httpx.ReadTimeout("late")] + [httpx.ConnectError("no")] * 2, True),
        # a 5xx may come after the change was made
        ([httpx.Response(503)] * 4, True),
        # an earlier attempt may have been applied even though the last one was refused
        ([httpx.ReadTimeout("timed out"), problem(409, "Conflict", "stale")], True),
    ],
)
def test_a_failed_patch_says_whether_it_may_have_reached_moment(
    client: MomentClient, moment: respx.MockRouter, answers: list[Any], may_have_reached: bool
) -> None:
    # GIVEN Moment answers (or fails to answer) a balance PATCH this way on every attempt
    moment.patch(f"/billing/customers/{REFERENCE}").mock(side_effect=answers)
    # WHEN the balance is set
    with pytest.raises(MomentApiError) as failure:
        client.set_customer_balance(REFERENCE, 1000, "ZAR")
    # THEN the error says whether Moment may have carried it out
    assert failure.value.may_have_reached is may_have_reached
