"""The ledger API in-process: the real handler, API Gateway payload 2.0 events, moto's tables. Every
answer is checked against docs/api/openapi.yaml as it arrives (support.ledger_api)."""

from __future__ import annotations

import ast
import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from jsonschema import ValidationError

import ledger_api_handler
from local_stack.api_gateway import LocalHttpApi, Route
from local_stack.functions import http_routes
from local_stack.lambda_context import LocalLambdaContext
from local_stack.template import ROOT
from moment_sync import ledger_api
from moment_sync.adapters.ledger_table import TransientLedgerError
from moment_sync.ledger.model import BalanceRef
from moment_sync.ledger.service import encode_cursor
from moment_sync.observability import logger
from moment_sync.runtime import LedgerDependencies
from support.ledger import LedgerHarness, payment
from support.ledger_api import (
    LedgerApi,
    check_against_contract,
    openapi,
    request_validator,
    validator_at,
)
from support.webhooks import NOW


class Clock:
    """Advances a second on every reading, so entries have distinct times, newest last."""

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
    return LedgerApi(LedgerDependencies(events=harness.events, ledger=harness.ledger, clock=harness.clock))


def ledger_items(harness: LedgerHarness) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = harness.dynamodb.scan(TableName=harness.ledger_name)["Items"]
    return sorted(items, key=lambda item: (item["pk"]["S"], item["sk"]["S"]))


@pytest.fixture
def customer(api: LedgerApi) -> str:
    assert api.put("/customers/UCR1", {"currency": "ZAR", "name": "Thandi Mokoena"}).status == 201
    return "/customers/UCR1"


# --- customers and accounts -------------------------------------------------------------------------


def test_put_customer_creates_with_201_then_updates_with_200(api: LedgerApi) -> None:
    # WHEN a customer is put for the first time
    created = api.put(
        "/customers/UCR1",
        {"currency": "ZAR", "name": "Thandi", "email": "thandi@example.com", "phone": "+27821234567"},
    )
    # THEN it exists with a zero balance, at version 0, nothing to push
    assert created.status == 201
    assert created.body == {
        "ref": "UCR1",
        "kind": "customer",
        "balance_model": "customer",
        "currency": "ZAR",
        "balance": 0,
        "version": 0,
        "name": "Thandi",
        "email": "thandi@example.com",
        "phone": "+27821234567",
        "sync": {
            "state": "synced",
            "pushed_balance": None,
            "pushed_at": None,
            "attempts": 0,
            "last_error": None,
        },
        "entries": [],
    }
    # WHEN it is put again without email and phone: a PUT replaces the descriptive fields
    updated = api.put("/customers/UCR1", {"currency": "ZAR", "name": "Thandi M"})
    assert updated.status == 200
    assert updated.body["name"] == "Thandi M"
    assert "email" not in updated.body and "phone" not in updated.body
    assert api.get("/customers/UCR1").body == updated.body


def test_a_customers_balance_model_cannot_change(api: LedgerApi) -> None:
    api.put("/customers/GROUP1", {"currency": "ZAR", "balance_model": "accounts"})
    answer = api.put("/customers/GROUP1", {"currency": "ZAR"})
    assert (answer.status, answer.problem) == (409, "balance-model-fixed")
    assert api.get("/customers/GROUP1").body["balance_model"] == "accounts"


def test_accounts_belong_to_a_customer_on_the_account_model(api: LedgerApi, harness: LedgerHarness) -> None:
    # GIVEN a customer on the account model, and one on the customer model
    group = api.put("/customers/GROUP1", {"currency": "ZAR", "balance_model": "accounts"})
    assert (group.status, group.body["balance"], group.body["balance_model"]) == (201, None, "accounts")
    api.put("/customers/UCR1", {"currency": "ZAR"})
    # WHEN an account is put under each (and under a customer that does not exist)
    created = api.put("/accounts/ACC1", {"customer_ref": "GROUP1", "currency": "ZAR", "name": "Gym"})
    refused = api.put("/accounts/ACC2", {"customer_ref": "UCR1", "currency": "ZAR"})
    missing = api.put("/accounts/ACC3", {"customer_ref": "NOBODY", "currency": "ZAR"})
    # THEN only the first exists
    assert created.status == 201
    assert {key: created.body[key] for key in ("kind", "customer_ref", "balance", "name")} == {
        "kind": "account",
        "customer_ref": "GROUP1",
        "balance": 0,
        "name": "Gym",
    }
    assert (refused.status, refused.problem) == (422, "customer-not-on-account-model")
    assert (missing.status, missing.problem) == (422, "customer-not-on-account-model")
    assert api.get("/accounts/ACC2").status == 404
    # AND an account stays with its customer, and the grouping customer holds no balance
    api.put("/customers/GROUP2", {"currency": "ZAR", "balance_model": "accounts"})
    moved = api.put("/accounts/ACC1", {"customer_ref": "GROUP2", "currency": "ZAR"})
    assert (moved.status, moved.problem) == (409, "customer-fixed")
    assert api.put("/accounts/ACC1", {"customer_ref": "GROUP1", "currency": "ZAR"}).status == 200
    charged = api.post("/customers/GROUP1/charges", {"id": "c1", "amount": 100})
    assert (charged.status, charged.problem) == (409, "balance-not-tracked")
    harness.assert_balances_equal_their_entries()


def test_the_currency_is_fixed_once_there_are_entries(api: LedgerApi, customer: str) -> None:
    # Before any entry the currency may still be corrected
    assert api.put(customer, {"currency": "USD", "name": "Thandi"}).body["currency"] == "USD"
    assert api.post(f"{customer}/charges", {"id": "c1", "amount": 1000}).status == 201
    refused = api.put(customer, {"currency": "ZAR", "name": "Thandi"})
    assert (refused.status, refused.problem) == (409, "currency-fixed")
    assert api.get(customer).body["currency"] == "USD"
    # A customer on the account model holds no money: its currency can always be corrected
    api.put("/customers/GROUP1", {"currency": "ZAR", "balance_model": "accounts"})
    corrected = api.put("/customers/GROUP1", {"currency": "USD", "balance_model": "accounts"})
    assert (corrected.status, corrected.body["currency"]) == (200, "USD")


# --- charges ---------------------------------------------------------------------------------------


def test_a_charge_is_posted_once_per_id(api: LedgerApi, customer: str, harness: LedgerHarness) -> None:
    charge = {"id": "inv-0042", "amount": 25000, "description": "September membership"}
    # WHEN the same charge is posted twice
    first = api.post(f"{customer}/charges", charge)
    again = api.post(f"{customer}/charges", charge)
    # THEN it is one entry, answered 201 then 200 with the same entry
    assert first.status == 201
    assert first.body["id"] == "charge:inv-0042"
    assert (first.body["kind"], first.body["amount"]) == ("charge", 25000)
    assert first.body["source"] == {"charge_id": "inv-0042", "description": "September membership"}
    assert (again.status, again.body) == (200, first.body)
    view = api.get(customer).body
    assert (view["balance"], view["version"], len(view["entries"])) == (25000, 1, 1)
    assert view["sync"]["state"] == "pending"
    # AND the same id with another body is refused, changing nothing
    for changed in ({**charge, "amount": 25001}, {"id": "inv-0042", "amount": 25000}):
        conflict = api.post(f"{customer}/charges", changed)
        assert (conflict.status, conflict.problem) == (409, "charge-id-reused")
    assert api.get(customer).body["balance"] == 25000
    harness.assert_balances_equal_their_entries()


def test_a_negative_charge_is_a_credit(api: LedgerApi, customer: str, harness: LedgerHarness) -> None:
    api.post(f"{customer}/charges", {"id": "c1", "amount": 1000})
    credit = api.post(f"{customer}/charges", {"id": "refund-1", "amount": -5000, "description": "Refund"})
    assert (credit.status, credit.body["amount"]) == (201, -5000)
    assert api.get(customer).body["balance"] == -4000
    harness.assert_balances_equal_their_entries()


def test_charges_to_an_account_and_to_nothing(api: LedgerApi) -> None:
    api.put("/customers/GROUP1", {"currency": "USD", "balance_model": "accounts"})
    api.put("/accounts/ACC1", {"customer_ref": "GROUP1", "currency": "USD"})
    assert api.post("/accounts/ACC1/charges", {"id": "c1", "amount": 999}).status == 201
    assert api.get("/accounts/ACC1").body["balance"] == 999
    for path in ("/accounts/NOPE/charges", "/customers/NOPE/charges"):
        missing = api.post(path, {"id": "c1", "amount": 999})
        assert (missing.status, missing.problem) == (404, "not-found")


# --- absolute balances ------------------------------------------------------------------------------


def test_set_balance_needs_the_version_it_was_computed_from(
    api: LedgerApi, customer: str, harness: LedgerHarness
) -> None:
    api.post(f"{customer}/charges", {"id": "c1", "amount": 1000})
    # Without expected_version: 428, nothing changes
    required = api.put(f"{customer}/balance", {"balance": 3000})
    assert (required.status, required.problem, required.error_fields) == (
        428,
        "expected-version-required",
        ["expected_version"],
    )
    # At the version read: set, as an entry of the difference
    done = api.put(f"{customer}/balance", {"balance": 3000, "expected_version": 1})
    assert done.status == 200
    assert (done.body["balance"], done.body["version"]) == (3000, 2)
    newest = done.body["entries"][0]
    assert (newest["id"], newest["kind"], newest["amount"]) == ("balance_set:v2", "balance_set", 2000)
    assert newest["source"] == {"previous_balance": "1000", "new_balance": "3000", "expected_version": "1"}
    # A change lands; a balance computed before it is refused, and says where the balance is now
    api.post(f"{customer}/charges", {"id": "c2", "amount": 2000})
    refused = api.put(f"{customer}/balance", {"balance": 0, "expected_version": 2})
    assert (refused.status, refused.problem) == (409, "stale-version")
    assert (refused.body["current_version"], refused.body["current_balance"]) == (3, 5000)
    assert api.get(customer).body["balance"] == 5000
    # Setting the balance it already has adds nothing
    same = api.put(f"{customer}/balance", {"balance": 5000, "expected_version": 3})
    assert (same.status, same.body["version"], len(same.body["entries"])) == (200, 3, 3)
    # A credit balance is a balance too
    credit = api.put(f"{customer}/balance", {"balance": -2500, "expected_version": 3})
    assert credit.body["balance"] == -2500
    assert api.put("/accounts/NOPE/balance", {"balance": 1, "expected_version": 0}).status == 404
    harness.assert_balances_equal_their_entries()


def test_a_balance_set_sent_again_after_its_answer_was_lost_is_200_and_sets_nothing_more(
    api: LedgerApi, customer: str, harness: LedgerHarness
) -> None:
    """PUT is idempotent: a set that committed but was answered 503 (its view could not be read) and
    is sent again is 200, even though the balance has moved on; so a client never sets it twice."""
    api.post(f"{customer}/charges", {"id": "c1", "amount": 1000})
    lost = {"left": 1}

    def throttle_the_view(**_: Any) -> None:
        if lost["left"]:
            lost["left"] -= 1
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "Query")

    harness.dynamodb.meta.events.register("before-call.dynamodb.Query", throttle_the_view)
    first = api.put(f"{customer}/balance", {"balance": 3000, "expected_version": 1})
    assert (first.status, first.problem) == (503, "ledger-busy")  # committed, but the answer is lost
    api.post(f"{customer}/charges", {"id": "c2", "amount": 500})  # and the balance moves on meanwhile

    again = api.put(f"{customer}/balance", {"balance": 3000, "expected_version": 1})
    assert (again.status, again.body["balance"], again.body["version"]) == (200, 3500, 3)
    sets = [entry for entry in api.get(customer).body["entries"] if entry["kind"] == "balance_set"]
    assert [entry["amount"] for entry in sets] == [2000]
    # Another balance at that old version is not this request: stale, as before
    other = api.put(f"{customer}/balance", {"balance": 9999, "expected_version": 1})
    assert (other.status, other.problem, other.body["current_balance"]) == (409, "stale-version", 3500)
    harness.assert_balances_equal_their_entries()


# --- reading ---------------------------------------------------------------------------------------


def test_entries_page_newest_first_with_a_cursor(api: LedgerApi, customer: str) -> None:
    for number in range(7):
        api.post(f"{customer}/charges", {"id": f"c{number}", "amount": number + 1})
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = api.get(customer, query=query).body
        pages += 1
        assert len(page["entries"]) <= 3
        seen += [entry["id"] for entry in page["entries"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert seen == [f"charge:c{number}" for number in reversed(range(7))]
    assert pages == 3
    assert len(api.get(customer).body["entries"]) == 7  # default limit 50


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=abc",
        "limit=-1",
        "limit=1.5",
        "limit=5,6",
        "colour=red",
        "cursor=not-a-cursor",
        "cursor=W10",  # "[]"
        "cursor=" + "A" * 3000,
    ],
)
def test_bad_paging_is_a_400(api: LedgerApi, customer: str, query: str) -> None:
    answer = api.get(customer, query=query)
    assert answer.status == 400
    assert answer.problem in {"invalid-request", "invalid-cursor"}


def test_a_cursor_of_another_balance_is_refused(api: LedgerApi, customer: str) -> None:
    api.put("/customers/UCR2", {"currency": "ZAR"})
    for number in range(3):
        api.post("/customers/UCR2/charges", {"id": f"c{number}", "amount": 1})
    cursor = api.get("/customers/UCR2", query="limit=1").body["next_cursor"]
    answer = api.get(customer, query=f"limit=1&cursor={cursor}")
    assert (answer.status, answer.problem) == (400, "invalid-cursor")
    forged = encode_cursor({"pk": {"S": "CUSTOMER#UCR1"}, "sk": {"N": "1"}, "entry_order": {"S": "x"}})
    assert api.get(customer, query=f"cursor={forged}").problem == "invalid-cursor"
    # the base table's key alone (no `entry_order` since entries are keyed by time), and only an entry's
    for sort_key in ("HEAD", "SOURCE#charge:c0", "ENTRY#void"):
        outside = encode_cursor({"pk": {"S": "CUSTOMER#UCR1"}, "sk": {"S": sort_key}})
        assert api.get(customer, query=f"cursor={outside}").problem == "invalid-cursor"
    old_style = {"pk": {"S": "CUSTOMER#UCR1"}, "sk": {"S": "ENTRY#charge:c0"}, "entry_order": {"S": "x"}}
    assert api.get(customer, query=f"cursor={encode_cursor(old_style)}").problem == "invalid-cursor"


def test_get_event_tells_what_became_of_a_webhook(api: LedgerApi, harness: LedgerHarness) -> None:
    # GIVEN a customer Moment knows, one payment for it and one for a customer nobody knows
    harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_paid", payment("ob_1", 1500, customer_id="bcus_1"))
    harness.receive("msg_unknown", payment("ob_2", 700, customer_id="bcus_unknown"))
    harness.invoke(harness.next_batch())
    # THEN the API shows each event as the reconciler left it
    applied = api.get("/events/msg_paid")
    assert applied.status == 200
    assert {key: applied.body[key] for key in ("webhook_id", "event_id", "type", "status", "entry_id")} == {
        "webhook_id": "msg_paid",
        "event_id": "evt_ob_1",
        "type": "obligation.amount_applied",
        "status": "applied",
        "entry_id": "payment:ob_1",
    }
    parked = api.get("/events/msg_unknown").body
    assert (parked["status"], parked["reason"]) == ("parked", "unmatched")
    assert "bcus_unknown" in parked["reason_detail"]
    assert api.get("/customers/UCR1").body["entries"][0]["source"]["webhook_id"] == "msg_paid"
    missing = api.get("/events/msg_never")
    assert (missing.status, missing.problem) == (404, "not-found")
    assert api.get("/events/msg%20space").status == 400


def test_the_sample_event_for_sam_local_invoke_creates_its_customer(harness: LedgerHarness) -> None:
    """events/ledger_api/put-customer.json, as `sam local invoke LedgerApiFunction -e` sends it."""
    sample = ROOT / "events" / "ledger_api" / "put-customer.json"
    if not sample.exists():
        pytest.skip("no sample event yet")
    event = json.loads(sample.read_text())
    dependencies = LedgerDependencies(events=harness.events, ledger=harness.ledger, clock=harness.clock)
    response = ledger_api_handler.lambda_handler(event, LocalLambdaContext("ledger_api"), dependencies)
    headers = {name.lower(): value for name, value in response["headers"].items()}
    body = json.loads(response["body"])
    check_against_contract("PUT", event["rawPath"], response["statusCode"], headers, body)
    assert (response["statusCode"], body["ref"], body["balance"]) == (201, event["pathParameters"]["ref"], 0)


# --- routes ----------------------------------------------------------------------------------------


def test_an_unknown_route_is_404_and_a_wrong_method_405(api: LedgerApi) -> None:
    assert api.get("/nothing/here").problem == "route-not-found"
    assert api.get("/customers/").status == 404
    wrong = api.request("DELETE", "/customers/UCR1")
    assert (wrong.status, wrong.problem, wrong.headers["allow"]) == (405, "method-not-allowed", "GET, PUT")
    assert api.request("GET", "/customers/UCR1/charges").headers["allow"] == "POST"


def test_openapi_paths_are_exactly_the_functions_routes() -> None:
    documented = {
        (method.upper(), path)
        for path, item in openapi()["paths"].items()
        for method in item
        if method in {"get", "put", "post", "patch", "delete"}
    }
    assert documented == set(http_routes("LedgerApiFunction"))
    routed = {(method, rule.replace("<", "{").replace(">", "}")) for method, rule, _ in ledger_api.ROUTES}
    assert routed == documented


def test_the_openapi_document_is_valid_openapi_3_1() -> None:
    validation = pytest.importorskip("openapi_spec_validator")
    validation.validate(openapi())
    assert openapi()["openapi"].startswith("3.1")


def test_the_contract_check_is_not_vacuous() -> None:
    good = {
        "id": "charge:c1",
        "kind": "charge",
        "amount": 1,
        "source": {"charge_id": "c1"},
        "created_at": "2026-09-21T14:13:20.000Z",
    }
    check_against_contract("POST", "/customers/A/charges", 201, {"content-type": "application/json"}, good)
    for bad in ({**good, "amount": "1"}, {**good, "extra": 1}, {**good, "source": {"n": 1}}):
        with pytest.raises(AssertionError):
            check_against_contract(
                "POST", "/customers/A/charges", 201, {"content-type": "application/json"}, bad
            )
    with pytest.raises(AssertionError, match="not documented"):
        check_against_contract("GET", "/customers/A", 428, {"content-type": "application/problem+json"}, {})
    with pytest.raises(ValidationError):
        validator_at("/components/schemas/Problem").validate({"type": "about:blank", "title": "x"})


# --- hostile input ---------------------------------------------------------------------------------

OVERSIZE = json.dumps({"id": "c1", "amount": 1, "description": "x" * (17 * 1024)}).encode()
HOSTILE: list[tuple[str, str, bytes, int]] = [
    # (method, path, raw body, expected status)
    ("POST", "/customers/bad%20ref/charges", b'{"id":"c1","amount":1}', 400),
    ("POST", "/customers/a.b/charges", b'{"id":"c1","amount":1}', 400),
    ("POST", "/customers/%C3%A9/charges", b'{"id":"c1","amount":1}', 400),
    ("POST", "/customers/a%2Fb/charges", b'{"id":"c1","amount":1}', 400),
    ("POST", "/customers/" + "a" * 256 + "/charges", b'{"id":"c1","amount":1}', 400),
    ("GET", "/customers/" + "a" * 256, b"", 400),
    ("PUT", "/customers/bad$ref", b'{"currency":"ZAR"}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":10.0}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":1e3}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":"100"}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":true}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":null}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":0}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":100000000}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":-100000000}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":' + b"9" * 40 + b"}", 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":' + b"9" * 5000 + b"}", 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":1e400}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":NaN}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":Infinity}', 400),
    ("POST", "/customers/UCR1/charges", b'{"amount":1}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"has space","amount":1}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"","amount":1}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":42,"amount":1}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":1,"colour":"red"}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":1,"amount":2}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":1,"description":"a\\u0000b"}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":1,"description":"\\ud800"}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":1,"description":""}', 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":1,"description":"' + b"x" * 501 + b'"}', 400),
    ("POST", "/customers/UCR1/charges", b"not json", 400),
    ("POST", "/customers/UCR1/charges", b'[{"id":"c1","amount":1}]', 400),
    ("POST", "/customers/UCR1/charges", b'"c1"', 400),
    ("POST", "/customers/UCR1/charges", b"null", 400),
    ("POST", "/customers/UCR1/charges", b"", 400),
    ("POST", "/customers/UCR1/charges", b'{"id":"c1","amount":1', 400),
    ("POST", "/customers/UCR1/charges", b"\xff\xfe{}", 400),  # not UTF-8: arrives base64-encoded
    ("POST", "/customers/UCR1/charges", b"[" * 6000 + b"]" * 6000, 400),
    ("POST", "/customers/UCR1/charges", OVERSIZE, 413),
    ("PUT", "/customers/UCR1", b'{"currency":"EUR"}', 400),
    ("PUT", "/customers/UCR1", b'{"currency":"zar"}', 400),
    ("PUT", "/customers/UCR1", b"{}", 400),
    ("PUT", "/customers/UCR1", b'{"currency":"ZAR","balance_model":"bill"}', 400),
    ("PUT", "/customers/UCR1", b'{"currency":"ZAR","email":"not-an-email"}', 400),
    ("PUT", "/customers/UCR1", b'{"currency":"ZAR","email":"a@b"}', 400),
    ("PUT", "/customers/UCR1", b'{"currency":"ZAR","phone":"0821234567"}', 400),
    ("PUT", "/customers/UCR1", b'{"currency":"ZAR","phone":"+0821234567"}', 400),
    ("PUT", "/customers/UCR1", b'{"currency":"ZAR","name":""}', 400),
    ("PUT", "/customers/UCR1", b'{"currency":"ZAR","name":"' + b"n" * 256 + b'"}', 400),
    ("PUT", "/customers/UCR1", b'{"currency":"ZAR","name":["Thandi"]}', 400),
    ("PUT", "/customers/UCR1", b'{"currency":"ZAR","name":"line\\nbreak"}', 400),
    ("PUT", "/customers/UCR1", b'{"currency":"ZAR","balance":5000}', 400),
    ("PUT", "/customers/UCR1", OVERSIZE, 413),
    ("PUT", "/accounts/ACC1", b'{"customer_ref":"bad ref","currency":"ZAR"}', 400),
    ("PUT", "/accounts/ACC1", b'{"currency":"ZAR"}', 400),
    ("PUT", "/customers/UCR1/balance", b'{"balance":1.5,"expected_version":1}', 400),
    ("PUT", "/customers/UCR1/balance", b'{"balance":100000000,"expected_version":1}', 400),
    ("PUT", "/customers/UCR1/balance", b'{"balance":1,"expected_version":-1}', 400),
    ("PUT", "/customers/UCR1/balance", b'{"balance":1,"expected_version":"1"}', 400),
    ("PUT", "/customers/UCR1/balance", b'{"balance":1,"expected_version":true}', 400),
    ("PUT", "/customers/UCR1/balance", b'{"balance":1,"expected_version":1,"force":true}', 400),
    ("PUT", "/customers/UCR1/balance", b'{"balance":"1"}', 400),
    ("PUT", "/customers/UCR1/balance", b"{}", 400),
    ("PUT", "/customers/UCR1/balance", b'{"balance":1}', 428),
]


@pytest.fixture
def charged_customer(api: LedgerApi, customer: str) -> str:
    assert api.post(f"{customer}/charges", {"id": "c1", "amount": 1000}).status == 201
    return customer


@pytest.mark.parametrize(("method", "path", "raw", "status"), HOSTILE, ids=lambda value: str(value)[:40])
def test_hostile_input_is_a_problem_and_changes_nothing(
    api: LedgerApi,
    harness: LedgerHarness,
    charged_customer: str,
    method: str,
    path: str,
    raw: bytes,
    status: int,
) -> None:
    before = ledger_items(harness)
    answer = api.request(method, path, raw=raw)
    assert answer.status == status, answer.body
    if status == 400:
        assert answer.problem in {"invalid-request", "invalid-json"}
        if answer.problem == "invalid-request":
            assert answer.body["errors"], answer.body
    assert ledger_items(harness) == before


def test_problems_list_each_field_that_is_wrong(api: LedgerApi, customer: str) -> None:
    answer = api.post(f"{customer}/charges", {"id": "a b", "amount": 10.5, "colour": "red", "size": 2})
    assert answer.error_fields == ["colour", "size", "id", "amount"]
    many = api.post(f"{customer}/charges", {f"field{number}": 1 for number in range(50)})
    assert len(many.body["errors"]) == 20
    assert "more" in many.body["detail"]


def test_a_base64_body_is_measured_then_decoded(
    api: LedgerApi, harness: LedgerHarness, customer: str
) -> None:
    body = json.dumps({"id": "c1", "amount": 5}).encode()
    assert api.post(f"{customer}/charges", raw=body, base64_body=True).status == 201
    before = ledger_items(harness)
    assert api.post(f"{customer}/charges", raw=b"{}" + b" " * 16 * 1024, base64_body=True).status == 413
    not_base64 = api.post(f"{customer}/charges", raw=body, base64_body=True, mangle_base64=True)
    assert (not_base64.status, not_base64.problem) == (400, "invalid-json")
    assert ledger_items(harness) == before


ACCEPTED_AND_REFUSED: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("/customers/{ref}", "PUT"): [
        {"currency": "ZAR"},
        {
            "currency": "USD",
            "balance_model": "customer",
            "name": "A",
            "email": "a@b.co",
            "phone": "+27821234567",
        },
        {"currency": "ZAR", "email": "first.last+tag@mail.example.co.za"},
        {"currency": "ZAR", "email": "a@b"},
        {"currency": "ZAR", "email": "a b@c.co"},
        {"currency": "ZAR", "phone": "+2782123"},
        {"currency": "ZAR", "phone": "+27 82 123 4567"},
        {"currency": "ZAR", "name": "Zoë Ndlovu-Smith"},
        {"currency": "ZAR", "name": "tab\there"},
        {"currency": "ZAR", "name": None},
        {"currency": "GBP"},
        {"name": "no currency"},
    ],
    ("/customers/{ref}/charges", "POST"): [
        {"id": "c-1_A", "amount": 1},
        {"id": "c2", "amount": -99999999, "description": "credit"},
        {"id": "c3", "amount": 99999999},
        {"id": "c4", "amount": 100000000},
        {"id": "c5", "amount": 0},
        {"id": "c6", "amount": "5"},
        {"id": "c7", "amount": False},
        {"id": "c8", "amount": 5, "description": "d" * 500},
        {"id": "c9", "amount": 5, "description": "d" * 501},
        {"id": "c.10", "amount": 5},
        {"id": "c11", "amount": 5, "extra": None},
    ],
    ("/accounts/{ref}", "PUT"): [
        {"customer_ref": "NOBODY", "currency": "ZAR"},
        {"customer_ref": "NOBODY", "currency": "ZAR", "name": "Gym"},
        {"customer_ref": "", "currency": "ZAR"},
        {"customer_ref": "NOBODY", "currency": "ZAR", "balance_model": "accounts"},
        {"currency": "ZAR"},
    ],
    ("/customers/{ref}/balance", "PUT"): [
        {"balance": 99999999, "expected_version": 1},
        {"balance": -99999999, "expected_version": 1},
        {"balance": 5, "expected_version": -1},
        {"balance": 5, "expected_version": 9007199254740992},
        {"balance": "5", "expected_version": 1},
    ],
}


@pytest.mark.parametrize(
    ("operation", "bodies"),
    list(ACCEPTED_AND_REFUSED.items()),
    ids=[f"{method} {template}" for template, method in ACCEPTED_AND_REFUSED],
)
def test_the_contracts_request_schemas_accept_what_the_api_accepts(
    api: LedgerApi, customer: str, operation: tuple[str, str], bodies: list[dict[str, Any]]
) -> None:
    template, method = operation
    schema = request_validator(template, method)
    for body in bodies:
        # (10.0 is the one difference: JSON Schema's integer takes it, the API does not; openapi.yaml says so)
        answer = api.request(method, template.replace("{ref}", "UCR1"), body)
        assert (answer.status != 400) == schema.is_valid(body), (body, answer.body)


@pytest.mark.parametrize("email", [".@v6.9.1M1q4.00", "a..b@example.com", "a.@example.com"])
def test_an_email_the_api_takes_fits_the_contract_where_formats_are_asserted(
    api: LedgerApi, email: str
) -> None:
    """Found by test_api_contract_fuzz.py: the contract's Email said `format: email`, which validators that
    assert formats (jsonschema-rs, as schemathesis uses) hold to RFC 5321, and the API does not check."""
    assert api.put("/customers/UCR1", {"currency": "ZAR", "email": email}).status == 201
    asserting_formats = jsonschema_rs.Draft202012Validator(
        {**openapi(), "$ref": "#/components/schemas/CustomerPut"}, validate_formats=True
    )
    assert asserting_formats.is_valid({"currency": "ZAR", "email": email})


# --- failures --------------------------------------------------------------------------------------


class FailingLedger:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def get_head(self, balance: BalanceRef) -> Any:
        raise self.error


@pytest.fixture
def function_log() -> Iterator[io.StringIO]:
    """What the function logs (Powertools' JSON lines), as CloudWatch would receive it."""
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    yield buffer
    handler.setStream(previous)


def test_an_unexpected_failure_is_a_500_that_leaks_nothing(
    harness: LedgerHarness, function_log: io.StringIO
) -> None:
    failing = FailingLedger(RuntimeError("table arn:aws:secret-internals"))
    broken = LedgerDependencies(events=harness.events, ledger=failing, clock=Clock())  # type: ignore[arg-type]
    answer = LedgerApi(broken).get("/customers/UCR1")
    assert (answer.status, answer.problem) == (500, "internal-error")
    assert "secret-internals" not in json.dumps(answer.body)
    [failure] = [line for line in log_lines(function_log.getvalue()) if line["level"] == "ERROR"]
    assert failure["message"] == "ledger api request failed unexpectedly"
    assert "secret-internals" in failure["exception"] and failure["reference"] == "UCR1"


@pytest.mark.parametrize(
    "error",
    [
        TransientLedgerError("ThrottlingException"),
        ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "GetItem"),
        ClientError({"Error": {"Code": "InternalServerError"}}, "UpdateItem"),
        EndpointConnectionError(endpoint_url="https://dynamodb.af-south-1.amazonaws.com"),
        ReadTimeoutError(endpoint_url="https://dynamodb.af-south-1.amazonaws.com"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_busy_or_unreachable_ledger_is_a_503_to_retry(harness: LedgerHarness, error: Exception) -> None:
    busy = LedgerDependencies(events=harness.events, ledger=FailingLedger(error), clock=Clock())  # type: ignore[arg-type]
    answer = LedgerApi(busy).post("/customers/UCR1/charges", {"id": "c1", "amount": 1})
    assert (answer.status, answer.problem, answer.headers["retry-after"]) == (503, "ledger-busy", "1")


def test_an_aws_error_that_is_not_transient_is_a_500(harness: LedgerHarness) -> None:
    error = ClientError({"Error": {"Code": "ValidationException", "Message": "internals"}}, "Query")
    broken = LedgerDependencies(events=harness.events, ledger=FailingLedger(error), clock=Clock())  # type: ignore[arg-type]
    answer = LedgerApi(broken).get("/customers/UCR1")
    assert (answer.status, answer.problem) == (500, "internal-error")
    assert "internals" not in answer.body["detail"]


def log_lines(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        if line.startswith("{"):
            yield json.loads(line)


def test_logs_carry_the_reference_and_metrics_count_the_charge(
    api: LedgerApi, customer: str, function_log: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    api.post(f"{customer}/charges", {"id": "c1", "amount": 100})
    [request_log] = [
        line for line in log_lines(function_log.getvalue()) if line["message"] == "ledger api request"
    ]
    assert (request_log["reference"], request_log["balance_kind"], request_log["charge_id"]) == (
        "UCR1",
        "customer",
        "c1",
    )
    assert request_log["status"] == 201 and request_log["route"] == "POST /customers/{ref}/charges"
    assert request_log["correlation_id"]  # API Gateway's request id
    [emf] = [line for line in log_lines(capsys.readouterr().out) if "_aws" in line]
    assert (emf["ChargesPosted"], emf["LedgerApiRequests"]) == ([1.0], [1.0])


# --- over real HTTP ---------------------------------------------------------------------------------


def test_create_charge_and_read_over_real_http() -> None:
    from local_stack.stack import LocalSettings, running_stack

    with running_stack(LocalSettings(api_port=0)) as stack, httpx.Client(base_url=stack.api_url) as client:
        created = client.put("/customers/UCR1", json={"currency": "ZAR", "name": "Thandi"})
        assert created.status_code == 201
        charged = client.post("/customers/UCR1/charges", json={"id": "inv-1", "amount": 25000})
        assert charged.status_code == 201
        read = client.get("/customers/UCR1", params={"limit": 10})
        assert read.status_code == 200
        assert read.headers["content-type"] == "application/json"
        view = read.json()
        assert (view["balance"], view["version"], view["entries"][0]["id"]) == (25000, 1, "charge:inv-1")
        bad = client.post("/customers/UCR1/charges", content=b'{"id":"inv-2","amount":1.5}')
        assert bad.status_code == 400
        assert bad.headers["content-type"] == "application/problem+json"
        for response in (created, charged, read, bad):
            check_against_contract(
                response.request.method,
                response.request.url.path,
                response.status_code,
                {name.lower(): value for name, value in response.headers.items()},
                response.json(),
            )


def test_the_local_front_answers_a_method_no_route_takes_with_its_404() -> None:
    """Found by test_api_contract_fuzz.py: http.server answered HEAD, OPTIONS, TRACE and any other
    method without a do_* of its own with a 501 (an HTML page), where API Gateway answers 404."""
    route = Route("GET", "/customers/{ref}", "ledger_api", lambda _: {"statusCode": 200, "body": "{}"})
    with LocalHttpApi([route]) as front, httpx.Client(base_url=front.url, trust_env=False) as client:
        for method in ("HEAD", "OPTIONS", "TRACE", "DELETE", "PROPFIND"):
            answer = client.request(method, "/customers/UCR1")
            assert answer.status_code == 404, (method, answer.text)
            if method != "HEAD":
                assert answer.json()["status"] == 404
        head = client.head("/customers/UCR1")
        # No body follows a HEAD answer, so the next answer on the connection is read cleanly.
        assert (head.status_code, head.content) == (404, b"")
        assert int(head.headers["content-length"]) > 0
        assert client.get("/customers/UCR1").status_code == 200


def _problem_slugs_in_the_code() -> set[str]:
    """The slug argument of every problem the ledger API's modules can raise or answer."""
    makers = {"LedgerProblem", "RequestInvalid", "cls", "_problem", "problem_response"}
    slugs: set[str] = set()
    package = ROOT / "layers" / "shared" / "moment_sync"
    for path in (
        package / "ledger_api.py",
        package / "ledger" / "requests.py",
        package / "ledger" / "service.py",
        package / "ledger" / "bill_service.py",
    ):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", "")) in makers
            ):
                slug = node.args[1] if len(node.args) > 1 else None
                if isinstance(slug, ast.Constant):
                    slugs.add(slug.value)
                else:  # only forwarding a problem already made may pass something else
                    assert ast.unparse(slug or node).endswith("problem"), f"{path.name}: {ast.unparse(node)}"
    return slugs


def test_every_problem_the_api_can_answer_is_documented() -> None:
    problems_md = (ROOT / "docs" / "api" / "problems.md").read_text()
    ledger_section = problems_md.split("## The ledger API", 1)[1]
    documented = set(re.findall(r"^\| `([a-z-]+)` \|", ledger_section, flags=re.MULTILINE))
    in_code = _problem_slugs_in_the_code()
    assert in_code - documented <= {"body-too-large"}  # listed with the receiver's problems, above
    assert documented <= in_code
    assert "`body-too-large` | 413 |" in problems_md
