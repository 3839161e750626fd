"""The Moment sandbox's contract, over real HTTP on loopback: what the balance pusher and the demos
may rely on it to do the way Moment's documentation says Moment does.

Webhooks are checked with the Standard Webhooks reference library, not with the sandbox's own code.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks

from local_stack.made_up_values import (
    FORGER_WEBHOOK_SECRET,
    LOCAL_MOMENT_API_KEY,
    LOCAL_WEBHOOK_SECRET,
    OTHER_MADE_UP_API_KEYS,
)
from moment_sandbox import MomentSandbox, SandboxSettings
from moment_sandbox.idempotency import IdempotencyKeys
from moment_sandbox.messages import Request, Response

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"authorization": f"Bearer {LOCAL_MOMENT_API_KEY}"}
CUSTOMER_ID = re.compile(r"bcus_[A-Za-z0-9]{21}")
ACCOUNT_ID = re.compile(r"bacc_[A-Za-z0-9]{21}")
PROBLEM_TYPE = "https://docs.momentco.io/errors#"
CUSTOMER_KEYS = {
    "id",
    "external_reference",
    "name",
    "email",
    "phone",
    "currency",
    "balance",
    "payment_rules",
    "metadata",
}


class Receiver:
    """A webhook endpoint: records every request and answers the scripted statuses, then 200s."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/webhooks/moment"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def answer(self, *statuses: int) -> None:
        with self._lock:
            self.statuses = list(statuses)

    def _record(self, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            self.requests.append((headers, body))
            return self.statuses.pop(0) if self.statuses else 200

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                status = receiver._record({k.lower(): v for k, v in self.headers.items()}, body)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def start_sandbox(receiver: Receiver) -> Iterator[Callable[..., MomentSandbox]]:
    """Start a sandbox that delivers to `receiver` in the request's own thread, retrying fast."""
    started: list[MomentSandbox] = []

    def start(clock: Callable[[], float] = time.time, **settings: Any) -> MomentSandbox:
        defaults: dict[str, Any] = {
            "webhook_url": receiver.url,
            "background_delivery": False,
            "webhook_max_attempts": 4,
            "webhook_base_delay_seconds": 0.01,
        }
        sandbox = MomentSandbox(SandboxSettings(**{**defaults, **settings}), clock).start()
        started.append(sandbox)
        return sandbox

    yield start
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def sandbox(start_sandbox: Callable[..., MomentSandbox]) -> MomentSandbox:
    return start_sandbox()


@pytest.fixture
def moment(sandbox: MomentSandbox) -> Iterator[httpx.Client]:
    """A client of the sandbox with the right key, as the balance pusher would be."""
    with httpx.Client(base_url=sandbox.url, headers=AUTH, trust_env=False) as client:
        yield client


def create(
    client: httpx.Client, path: str, body: Any, key: str | None = None, timeout: float | None = None
) -> httpx.Response:
    """POST with an Idempotency-Key (a fresh one unless given)."""
    headers = {"idempotency-key": key or str(uuid.uuid4())}
    if timeout is None:
        return client.post(path, json=body, headers=headers)
    return client.post(path, json=body, headers=headers, timeout=timeout)


def customer(client: httpx.Client, reference: str = "UCR1001", **fields: Any) -> dict[str, Any]:
    response = create(client, "/billing/customers", {"external_reference": reference, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_problem(response: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert set(problem) == {"type", "title", "status", "detail", "instance"}
    assert problem["status"] == status
    assert problem["type"].startswith(PROBLEM_TYPE)
    assert problem["instance"] == response.request.url.path
    if slug is not None:
        assert problem["type"] == PROBLEM_TYPE + slug
    return problem


def verified(headers: dict[str, str], body: bytes, secret: str = LOCAL_WEBHOOK_SECRET) -> Any:
    return standardwebhooks.Webhook(secret).verify(body, headers)


# Customers and accounts


def test_a_customer_is_created_in_moments_shape(moment: httpx.Client) -> None:
    response = create(
        moment,
        "/billing/customers",
        {
            "external_reference": "UCR1234567890",
            "name": "John Doe",
            "email": "john.doe@example.com",
            "phone": "+27123456789",
            "currency": "ZAR",
            "balance": 2000,
            "metadata": {"branch": "joburg"},
        },
    )
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    assert "idempotent-replayed" not in response.headers
    body = response.json()
    assert set(body) == CUSTOMER_KEYS
    assert CUSTOMER_ID.fullmatch(body["id"])
    assert body["balance"] == 2000
    assert body["currency"] == "ZAR"
    assert body["metadata"] == {"branch": "joburg"}
    assert set(body["payment_rules"]) == {
        "min_amount",
        "max_amount",
        "underpayment_allowed",
        "overpayment_allowed",
    }


def test_a_customer_is_found_by_moment_id_and_by_external_reference(moment: httpx.Client) -> None:
    created = customer(moment, "UCR-by_ref", currency="USD", balance=150)
    assert moment.get(f"/billing/customers/{created['id']}").json() == created
    assert moment.get("/billing/customers/UCR-by_ref").json() == created
    assert_problem(moment.get("/billing/customers/UCR-nobody"), 404, "not-found")


def test_a_duplicate_external_reference_is_a_conflict(moment: httpx.Client) -> None:
    customer(moment, "UCR1001")
    assert_problem(create(moment, "/billing/customers", {"external_reference": "UCR1001"}), 409, "conflict")
    create(moment, "/billing/accounts", {"customer": "UCR1001", "external_reference": "ACC1"})
    duplicate = create(moment, "/billing/accounts", {"customer": "UCR1001", "external_reference": "ACC1"})
    assert_problem(duplicate, 409, "conflict")


def test_an_account_names_its_customer_by_moment_id_or_external_reference(moment: httpx.Client) -> None:
    owner = customer(moment, "UCR1001")
    by_id = create(moment, "/billing/accounts", {"customer": owner["id"], "external_reference": "ACC1"})
    by_reference = create(moment, "/billing/accounts", {"customer": "UCR1001", "external_reference": "ACC2"})
    assert by_id.status_code == by_reference.status_code == 201
    assert by_id.json()["customer_id"] == by_reference.json()["customer_id"] == owner["id"]
    assert set(by_id.json()) == CUSTOMER_KEYS - {"email", "phone"} | {"customer_id"}
    unknown = create(moment, "/billing/accounts", {"customer": "UCR-nobody", "external_reference": "ACC3"})
    assert_problem(unknown, 404, "not-found")


def test_a_composite_create_makes_the_customer_then_the_account(moment: httpx.Client) -> None:
    # WHEN an account is created with a whole customer object instead of a customer id
    response = create(
        moment,
        "/billing/accounts",
        {
            "customer": {"external_reference": "UCR2002", "name": "Jane Doe", "email": "jane@example.com"},
            "external_reference": "ACC2002-1",
            "currency": "ZAR",
            "balance": 10000,
        },
    )
    # THEN both exist, and the account's answer names the new customer
    assert response.status_code == 201, response.text
    account = response.json()
    assert ACCOUNT_ID.fullmatch(account["id"])
    assert CUSTOMER_ID.fullmatch(account["customer_id"])
    assert moment.get("/billing/customers/UCR2002").json()["id"] == account["customer_id"]
    assert moment.get("/billing/accounts/ACC2002-1").json() == account
    assert moment.get(f"/billing/accounts/{account['id']}").json() == account


def test_a_composite_create_whose_account_is_a_duplicate_creates_nothing(
    moment: httpx.Client, sandbox: MomentSandbox
) -> None:
    customer(moment, "UCR1001")
    create(moment, "/billing/accounts", {"customer": "UCR1001", "external_reference": "ACC1"})
    again = create(
        moment,
        "/billing/accounts",
        {"customer": {"external_reference": "UCR-new"}, "external_reference": "ACC1"},
    )
    assert_problem(again, 409, "conflict")
    assert [c["external_reference"] for c in sandbox.state()["customers"]] == ["UCR1001"]


def test_patch_replaces_the_balance_and_changes_only_the_fields_sent(moment: httpx.Client) -> None:
    created = customer(moment, "UCR1001", name="John", currency="ZAR", balance=2000, metadata={"a": "1"})
    response = moment.patch("/billing/customers/UCR1001", json={"balance": 5000, "currency": "ZAR"})
    assert response.status_code == 200
    assert response.json() == {**created, "balance": 5000}  # absolute, not 2000 + 5000
    merged = moment.patch(f"/billing/customers/{created['id']}", json={"metadata": {"b": "2"}}).json()
    assert merged == {**created, "balance": 5000, "metadata": {"a": "1", "b": "2"}}


def test_patch_of_an_account_changes_that_account_only(moment: httpx.Client) -> None:
    owner = customer(moment, "UCR1001", currency="ZAR", balance=100)
    body = {"customer": "UCR1001", "currency": "ZAR", "balance": 700}
    first = create(moment, "/billing/accounts", {**body, "external_reference": "ACC1"}).json()
    second = create(moment, "/billing/accounts", {**body, "external_reference": "ACC2"}).json()
    patched = moment.patch("/billing/accounts/ACC1", json={"balance": 10000, "currency": "ZAR"})
    assert patched.json() == {**first, "balance": 10000}
    assert moment.get("/billing/accounts/ACC2").json() == second
    assert moment.get("/billing/customers/UCR1001").json() == owner


def test_patch_of_an_unknown_customer_is_not_found(moment: httpx.Client) -> None:
    patched = moment.patch("/billing/customers/UCR-nobody", json={"balance": 1, "currency": "ZAR"})
    assert_problem(patched, 404, "not-found")


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_balance_without_currency_is_a_bad_request(moment: httpx.Client, method: str) -> None:
    customer(moment, "UCR1001", currency="ZAR", balance=2000)
    if method == "POST":
        response = create(moment, "/billing/customers", {"external_reference": "UCR1002", "balance": 5})
    else:
        response = moment.patch("/billing/customers/UCR1001", json={"balance": 5000})
    problem = assert_problem(response, 400, "missing-parameter")
    assert "currency" in problem["detail"]
    assert moment.get("/billing/customers/UCR1001").json()["balance"] == 2000


@pytest.mark.parametrize("currency", ["EUR", "zar", "", 710, None])
def test_a_currency_other_than_zar_or_usd_is_a_bad_request(moment: httpx.Client, currency: Any) -> None:
    response = create(
        moment,
        "/billing/customers",
        {"external_reference": "UCR1001", "currency": currency, "balance": 5},
    )
    assert "currency" in assert_problem(response, 400, "invalid-parameter")["detail"]


def test_changing_the_currency_of_a_held_balance_needs_the_balance_too(moment: httpx.Client) -> None:
    customer(moment, "UCR1001", currency="ZAR", balance=2000)
    assert_problem(moment.patch("/billing/customers/UCR1001", json={"currency": "USD"}), 422)
    both = moment.patch("/billing/customers/UCR1001", json={"currency": "USD", "balance": 100})
    assert (both.json()["currency"], both.json()["balance"]) == ("USD", 100)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "no reference"},
        {"external_reference": ""},
        {"external_reference": "has space"},
        {"external_reference": "a" * 256},
        {"external_reference": 12345},
        {"external_reference": "UCR1", "balance": 10.5, "currency": "ZAR"},
        {"external_reference": "UCR1", "balance": True, "currency": "ZAR"},
        {"external_reference": "UCR1", "balance": "100", "currency": "ZAR"},
        {"external_reference": "UCR1", "email": "not-an-email"},
        {"external_reference": "UCR1", "phone": "0123456789"},
        {"external_reference": "UCR1", "metadata": {f"k{i}": "v" for i in range(11)}},
        {"external_reference": "UCR1", "metadata": {"k" * 41: "v"}},
        {"external_reference": "UCR1", "metadata": {"k": "v" * 501}},
        {"external_reference": "UCR1", "metadata": {"k": 1}},
        {"external_reference": "UCR1", "unheard_of": 1},
    ],
)
def test_an_invalid_customer_is_a_bad_request(moment: httpx.Client, body: dict[str, Any]) -> None:
    assert_problem(create(moment, "/billing/customers", body), 400)


def test_the_longest_external_reference_and_fullest_metadata_are_accepted(moment: httpx.Client) -> None:
    metadata = {f"{i}".rjust(40, "k"): "v" * 500 for i in range(10)}
    assert customer(moment, "a" * 255, metadata=metadata)["metadata"] == metadata


def test_metadata_that_would_merge_past_ten_keys_is_refused(moment: httpx.Client) -> None:
    customer(moment, "UCR1001", metadata={f"k{i}": "v" for i in range(10)})
    assert_problem(moment.patch("/billing/customers/UCR1001", json={"metadata": {"k10": "v"}}), 400)


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
def test_a_body_that_is_not_a_json_object_is_a_bad_request(moment: httpx.Client, body: bytes) -> None:
    response = moment.post(
        "/billing/customers",
        content=body,
        headers={"idempotency-key": str(uuid.uuid4()), "content-type": "application/json"},
    )
    assert_problem(response, 400, "invalid-body")
    assert customer(moment)["external_reference"] == "UCR1001"  # and the server carries on


# Keys and problems


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        f"Bearer {OTHER_MADE_UP_API_KEYS[0]}",
        "Basic c2tfdGVzdDo=",
        f"Bearer {LOCAL_MOMENT_API_KEY}x",
        "Bearer",
    ],
)
def test_a_missing_or_wrong_secret_key_is_unauthorized(
    sandbox: MomentSandbox, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    with httpx.Client(base_url=sandbox.url, headers=headers, trust_env=False) as stranger:
        assert_problem(stranger.get("/billing/customers/UCR1001"), 401, "unauthorized")
        assert_problem(create(stranger, "/billing/customers", {"external_reference": "UCR1"}), 401)
    assert sandbox.state()["customers"] == []


def test_the_accepted_key_is_configurable(start_sandbox: Callable[..., MomentSandbox]) -> None:
    sandbox = start_sandbox(api_key=OTHER_MADE_UP_API_KEYS[1])
    with httpx.Client(base_url=sandbox.url, trust_env=False) as client:
        assert_problem(client.get("/billing/customers/x", headers=AUTH), 401)
        other = {"authorization": f"Bearer {OTHER_MADE_UP_API_KEYS[1]}"}
        assert_problem(client.get("/billing/customers/x", headers=other), 404)


def test_problems_are_rfc_9457_in_moments_shape(moment: httpx.Client) -> None:
    response = moment.get("/billing/customers/UCR-nobody")
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "https://docs.momentco.io/errors#not-found",
        "title": "Not Found",
        "status": 404,
        "detail": "no customer has the id or external_reference 'UCR-nobody'",
        "instance": "/billing/customers/UCR-nobody",
    }


def test_unknown_routes_and_methods_are_problems_too(moment: httpx.Client) -> None:
    assert_problem(moment.get("/billing/invoices"), 404, "not-found")
    assert_problem(moment.delete("/billing/customers/UCR1001"), 405, "method-not-allowed")
    assert_problem(moment.get("/_sandbox/nothing-here"), 404, "not-found")


# Idempotency


def test_the_same_idempotency_key_replays_the_first_answer(
    moment: httpx.Client, sandbox: MomentSandbox
) -> None:
    body = {"external_reference": "UCR1001", "currency": "ZAR", "balance": 2000}
    first = create(moment, "/billing/customers", body, key="pusher-UCR1001-create")
    again = create(moment, "/billing/customers", body, key="pusher-UCR1001-create")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(sandbox.state()["customers"]) == 1


def test_the_same_key_with_json_keys_in_another_order_is_the_same_request(moment: httpx.Client) -> None:
    headers = {"idempotency-key": "key-order", "content-type": "application/json"}
    first = moment.post(
        "/billing/customers", content=b'{"external_reference": "U1", "name": "A"}', headers=headers
    )
    again = moment.post(
        "/billing/customers", content=b'{"name":"A","external_reference":"U1"}', headers=headers
    )
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"


def test_the_same_key_with_another_body_or_path_is_a_conflict(moment: httpx.Client) -> None:
    create(moment, "/billing/customers", {"external_reference": "UCR1001"}, key="reused-key")
    other_body = create(moment, "/billing/customers", {"external_reference": "UCR9999"}, key="reused-key")
    assert_problem(other_body, 409, "idempotency-key-reused")
    other_path = create(
        moment, "/billing/accounts", {"customer": "UCR1001", "external_reference": "A"}, key="reused-key"
    )
    assert_problem(other_path, 409, "idempotency-key-reused")


def test_an_error_answer_is_stored_and_replayed_too(moment: httpx.Client) -> None:
    body = {"external_reference": "UCR1001", "currency": "EUR"}
    first = create(moment, "/billing/customers", body, key="bad-currency")
    again = create(moment, "/billing/customers", body, key="bad-currency")
    assert_problem(first, 400, "invalid-parameter")
    assert (again.status_code, again.json()) == (400, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == "application/problem+json"
    conflict_first = create(moment, "/billing/customers", {"external_reference": "UCR1001"})
    assert conflict_first.status_code == 201


@pytest.mark.parametrize("key", [None, "", "has space", "under_score", "k" * 256])
def test_a_create_without_a_valid_idempotency_key_is_a_bad_request(
    moment: httpx.Client, sandbox: MomentSandbox, key: str | None
) -> None:
    headers = {} if key is None else {"idempotency-key": key}
    response = moment.post("/billing/customers", json={"external_reference": "UCR1001"}, headers=headers)
    problem = assert_problem(response, 400)
    assert "Idempotency-Key" in problem["detail"]
    assert sandbox.state()["customers"] == []


def test_a_key_of_255_characters_is_accepted(moment: httpx.Client) -> None:
    assert (
        create(moment, "/billing/customers", {"external_reference": "U1"}, key="K-" * 127 + "K").status_code
        == 201
    )


def test_concurrent_requests_with_one_key_create_one_customer(
    moment: httpx.Client, sandbox: MomentSandbox
) -> None:
    body = {"external_reference": "UCR1001", "currency": "ZAR", "balance": 1}
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(lambda _: create(moment, "/billing/customers", body, key="racing"), range(16))
        )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
    assert len(sandbox.state()["customers"]) == 1


def test_a_stored_answer_is_forgotten_after_24_hours() -> None:
    now = [0.0]
    keys = IdempotencyKeys(clock=lambda: now[0])
    request = Request("POST", "/billing/customers", {}, b"{}")
    answers = iter([Response(201, b"first"), Response(201, b"second")])
    assert keys.answer("k", request, lambda: next(answers)).body == b"first"
    now[0] = 24 * 3600 - 1
    assert keys.answer("k", request, lambda: next(answers)).body == b"first"
    now[0] = 24 * 3600
    assert keys.answer("k", request, lambda: next(answers)).body == b"second"


# Fault injection


@pytest.mark.parametrize(("rate", "status"), [("fail_429_rate", 429), ("fail_500_rate", 500)])
def test_a_fault_rate_of_one_fails_every_api_call_but_no_control_route(
    moment: httpx.Client, receiver: Receiver, rate: str, status: int
) -> None:
    created = customer(moment, "UCR1001", currency="ZAR", balance=2000)
    assert moment.post("/_sandbox/faults", json={rate: 1.0}).json()[rate] == 1.0
    assert_problem(moment.get("/billing/customers/UCR1001"), status)
    assert_problem(moment.patch("/billing/customers/UCR1001", json={"name": "x"}), status)
    assert_problem(create(moment, "/billing/customers", {"external_reference": "UCR2"}), status)
    # the control routes are not faulted
    assert moment.get("/_sandbox/state").status_code == 200
    assert moment.post("/_sandbox/payments", json={"customer": "UCR1001", "amount": 500}).status_code == 201
    assert len(receiver.requests) == 1
    moment.post("/_sandbox/faults", json={rate: 0.0})
    assert moment.get("/billing/customers/UCR1001").json() == {**created, "balance": 1500}


def test_a_faulted_create_changes_nothing_and_its_key_can_be_retried(
    moment: httpx.Client, sandbox: MomentSandbox
) -> None:
    sandbox.set_faults(fail_500_rate=1.0)
    failed = create(moment, "/billing/customers", {"external_reference": "UCR1001"}, key="retry-me")
    assert_problem(failed, 500)
    assert sandbox.state()["customers"] == []
    sandbox.set_faults(fail_500_rate=0.0)
    retried = create(moment, "/billing/customers", {"external_reference": "UCR1001"}, key="retry-me")
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers


def test_faults_are_reproducible_with_a_seed(moment: httpx.Client) -> None:
    def statuses() -> list[int]:
        return [moment.get("/billing/customers/UCR-nobody").status_code for _ in range(30)]

    moment.post("/_sandbox/faults", json={"fail_429_rate": 0.3, "fail_500_rate": 0.2, "seed": 7})
    first = statuses()
    moment.post("/_sandbox/faults", json={"seed": 7})
    assert statuses() == first
    assert {429, 500, 404} == set(first)


def test_latency_is_added_to_api_calls(moment: httpx.Client) -> None:
    moment.post("/_sandbox/faults", json={"latency_ms": 200})
    started = time.monotonic()
    moment.get("/billing/customers/UCR-nobody")
    assert time.monotonic() - started >= 0.2


def test_a_timed_out_request_is_carried_out_and_its_key_replays_the_answer(
    moment: httpx.Client, sandbox: MomentSandbox
) -> None:
    sandbox.set_faults(timeout_rate=1.0, timeout_ms=600)
    with pytest.raises(httpx.ReadTimeout):
        create(moment, "/billing/customers", {"external_reference": "UCR1001"}, key="k-late", timeout=0.2)
    assert [item["external_reference"] for item in sandbox.state()["customers"]] == ["UCR1001"]
    sandbox.set_faults(timeout_rate=0.0)
    retried = create(moment, "/billing/customers", {"external_reference": "UCR1001"}, key="k-late")
    assert retried.status_code == 201
    assert retried.headers["idempotent-replayed"] == "true"
    assert len(sandbox.state()["customers"]) == 1
    assert moment.get("/_sandbox/faults").json()["injected"] == {"429": 0, "500": 0, "timeout": 1}


def test_injected_faults_are_counted(moment: httpx.Client) -> None:
    moment.post("/_sandbox/faults", json={"fail_429_rate": 0.5, "fail_500_rate": 0.5})
    for _ in range(10):
        moment.get("/billing/customers/UCR-nobody")
    injected = moment.get("/_sandbox/faults").json()["injected"]
    assert injected["429"] + injected["500"] == 10 and injected["timeout"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"fail_429_rate": 1.5},
        {"fail_500_rate": -0.1},
        {"timeout_rate": 2},
        {"fail_429_rate": 0.6, "timeout_rate": 0.6},
        {"latency_ms": "1"},
        {"timeout_ms": -1},
        {"seed": "x"},
        {"rate": 1},
    ],
)
def test_bad_fault_settings_are_refused(moment: httpx.Client, body: dict[str, Any]) -> None:
    assert_problem(moment.post("/_sandbox/faults", json=body), 400, "invalid-parameter")
    assert moment.get("/_sandbox/faults").json() == {
        "fail_429_rate": 0.0,
        "fail_500_rate": 0.0,
        "latency_ms": 0,
        "timeout_rate": 0.0,
        "timeout_ms": 11_000,
        "seed": 0,
        "injected": {"429": 0, "500": 0, "timeout": 0},
    }


# Payments and webhooks


def test_a_payment_delivers_a_signed_webhook_and_lowers_the_balance(
    moment: httpx.Client, receiver: Receiver, sandbox: MomentSandbox
) -> None:
    created = customer(moment, "UCR1001", currency="ZAR", balance=2000)
    # WHEN the customer pays R5.00 at Moment
    paid = moment.post("/_sandbox/payments", json={"customer": "UCR1001", "amount": 500})
    # THEN one webhook arrives, signed the Standard Webhooks way, about that payment
    assert paid.status_code == 201, paid.text
    [(headers, body)] = receiver.requests
    event = verified(headers, body)
    assert headers["webhook-id"] == paid.json()["webhook_id"]
    assert re.fullmatch(r"msg_[A-Za-z0-9]+", headers["webhook-id"])
    assert headers["content-type"] == "application/json"
    assert event["type"] == "obligation.amount_applied"
    assert event["id"].startswith("evt_")
    data = event["data"]
    assert set(data) == {"id", "amount", "currency", "payment_id", "customer_id", "created_at", "updated_at"}
    assert (data["amount"], data["currency"], data["customer_id"]) == (500, "ZAR", created["id"])
    assert data["id"].startswith("ob_") and data["payment_id"].startswith("pay_")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["created_at"])
    assert paid.json()["application_id"] == data["id"]
    assert paid.json()["event"] == event
    # AND Moment lowered the balance itself
    assert moment.get("/billing/customers/UCR1001").json()["balance"] == 1500
    [delivery] = sandbox.state()["deliveries"]
    assert delivery["webhook_id"] == headers["webhook-id"]
    assert (delivery["event_type"], delivery["attempts"], delivery["status_code"]) == (
        "obligation.amount_applied",
        1,
        200,
    )
    assert delivery["outcome"] == "delivered"


def test_the_webhook_does_not_verify_with_another_secret(moment: httpx.Client, receiver: Receiver) -> None:
    customer(moment, "UCR1001")
    moment.post("/_sandbox/payments", json={"customer": "UCR1001", "amount": 500})
    [(headers, body)] = receiver.requests
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        verified(headers, body, FORGER_WEBHOOK_SECRET)


@pytest.mark.parametrize(("applies_payments", "balance_after"), [(True, 1500), (False, 2000)])
def test_the_balance_is_lowered_only_when_moment_applies_payments(
    start_sandbox: Callable[..., MomentSandbox],
    receiver: Receiver,
    applies_payments: bool,
    balance_after: int,
) -> None:
    sandbox = start_sandbox(applies_payments=applies_payments)
    with httpx.Client(base_url=sandbox.url, headers=AUTH, trust_env=False) as moment:
        customer(moment, "UCR1001", currency="ZAR", balance=2000)
        paid = moment.post("/_sandbox/payments", json={"customer": "UCR1001", "amount": 500}).json()
        assert moment.get("/billing/customers/UCR1001").json()["balance"] == balance_after
    assert (paid["balance"], paid["balance_lowered"]) == (balance_after, applies_payments)
    assert len(receiver.requests) == 1


def test_the_switch_can_be_flipped_while_running(moment: httpx.Client) -> None:
    customer(moment, "UCR1001", currency="ZAR", balance=2000)
    assert (
        moment.post("/_sandbox/settings", json={"applies_payments": False}).json()["applies_payments"]
        is False
    )
    moment.post("/_sandbox/payments", json={"customer": "UCR1001", "amount": 500})
    assert moment.get("/billing/customers/UCR1001").json()["balance"] == 2000


def test_an_account_payment_names_the_account_and_its_customer(
    moment: httpx.Client, receiver: Receiver
) -> None:
    owner = customer(moment, "UCR1001")
    account = create(
        moment,
        "/billing/accounts",
        {"customer": "UCR1001", "external_reference": "ACC1", "currency": "USD", "balance": 900},
    ).json()
    moment.post("/_sandbox/payments", json={"account": "ACC1", "amount": 400})
    moment.post(
        "/_sandbox/payments", json={"account": account["id"], "amount": 1, "include_customer_id": False}
    )
    [(headers, body), (_, without_parent)] = receiver.requests
    data = verified(headers, body)["data"]
    assert (data["account_id"], data["customer_id"], data["currency"]) == (account["id"], owner["id"], "USD")
    assert "customer_id" not in verified(receiver.requests[1][0], without_parent)["data"]
    assert moment.get("/billing/accounts/ACC1").json()["balance"] == 499
    assert moment.get("/billing/customers/UCR1001").json()["balance"] is None


def test_duplicates_redeliver_the_same_message_with_fresh_timestamps(
    start_sandbox: Callable[..., MomentSandbox], receiver: Receiver
) -> None:
    ticks = itertools.count()
    sandbox = start_sandbox(clock=lambda: time.time() + next(ticks))  # a second passes on every look
    with httpx.Client(base_url=sandbox.url, headers=AUTH, trust_env=False) as moment:
        customer(moment, "UCR1001", currency="ZAR", balance=2000)
        paid = moment.post("/_sandbox/payments", json={"customer": "UCR1001", "amount": 500, "duplicates": 2})
    assert paid.status_code == 201
    assert len(receiver.requests) == 3
    assert {headers["webhook-id"] for headers, _ in receiver.requests} == {paid.json()["webhook_id"]}
    assert len({body for _, body in receiver.requests}) == 1
    assert len({headers["webhook-timestamp"] for headers, _ in receiver.requests}) == 3
    assert len({headers["webhook-signature"] for headers, _ in receiver.requests}) == 3
    for headers, body in receiver.requests:
        verified(headers, body)
    assert moment_balance(sandbox, "UCR1001") == 1500  # one payment, however often it is told
    assert [d["copy"] for d in sandbox.state()["deliveries"]] == [0, 1, 2]


def moment_balance(sandbox: MomentSandbox, reference: str) -> int | None:
    [found] = [c for c in sandbox.state()["customers"] if c["external_reference"] == reference]
    balance: int | None = found["balance"]
    return balance


def test_a_receiver_answering_500_is_retried_until_it_answers_200(
    moment: httpx.Client, receiver: Receiver, sandbox: MomentSandbox
) -> None:
    customer(moment, "UCR1001")
    receiver.answer(500, 503)
    paid = moment.post("/_sandbox/payments", json={"customer": "UCR1001", "amount": 500}).json()
    assert len(receiver.requests) == 3
    assert {headers["webhook-id"] for headers, _ in receiver.requests} == {paid["webhook_id"]}
    for headers, body in receiver.requests:
        verified(headers, body)
    [delivery] = sandbox.state()["deliveries"]
    assert (delivery["attempts"], delivery["status_code"], delivery["outcome"]) == (3, 200, "delivered")
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 503, 200]


def test_delivery_gives_up_after_the_last_attempt(
    moment: httpx.Client, receiver: Receiver, sandbox: MomentSandbox
) -> None:
    customer(moment, "UCR1001")
    receiver.answer(500, 500, 500, 500, 500)
    moment.post("/_sandbox/payments", json={"customer": "UCR1001", "amount": 500})
    [delivery] = sandbox.state()["deliveries"]
    assert (delivery["attempts"], delivery["status_code"], delivery["outcome"]) == (4, 500, "failed")


def test_a_receiver_that_is_not_listening_is_retried_and_recorded(
    start_sandbox: Callable[..., MomentSandbox],
) -> None:
    closed = Receiver()
    url = closed.url
    closed.stop()
    sandbox = start_sandbox(webhook_url=url, webhook_max_attempts=2)
    customer_id = sandbox.pay(unknown_customer_id="bcus_NotKnownToTheSandbox1", amount=100)["customer_id"]
    [delivery] = sandbox.state()["deliveries"]
    assert customer_id == "bcus_NotKnownToTheSandbox1"
    assert (delivery["attempts"], delivery["status_code"], delivery["outcome"]) == (2, None, "failed")
    assert "ConnectError" in delivery["attempt_log"][0]["error"]


def test_background_delivery_is_waited_for(
    start_sandbox: Callable[..., MomentSandbox], receiver: Receiver
) -> None:
    sandbox = start_sandbox(background_delivery=True)
    receiver.answer(500)
    with httpx.Client(base_url=sandbox.url, headers=AUTH, trust_env=False) as moment:
        customer(moment, "UCR1001")
        for _ in range(3):
            moment.post("/_sandbox/payments", json={"customer": "UCR1001", "amount": 100, "duplicates": 1})
        assert moment.post("/_sandbox/wait", json={"timeout_seconds": 10}).json()["settled"] is True
    assert sandbox.wait_for_deliveries(timeout=10)
    assert len(receiver.requests) == 7  # 3 messages x 2 deliveries, one of them retried once
    assert {d["outcome"] for d in sandbox.state()["deliveries"]} == {"delivered"}


def test_a_payment_can_name_a_customer_the_sandbox_does_not_know(
    moment: httpx.Client, receiver: Receiver, sandbox: MomentSandbox
) -> None:
    # GIVEN a demo that wants Moment to report a payment for an id the merchant never created
    paid = moment.post(
        "/_sandbox/payments",
        json={"unknown_customer_id": "bcus_H4jp6KnU5cPw263v1jyz4", "amount": 2000, "currency": "USD"},
    )
    assert paid.status_code == 201, paid.text
    [(headers, body)] = receiver.requests
    data = verified(headers, body)["data"]
    assert (data["customer_id"], data["amount"], data["currency"]) == (
        "bcus_H4jp6KnU5cPw263v1jyz4",
        2000,
        "USD",
    )
    assert sandbox.state()["customers"] == []
    account = moment.post(
        "/_sandbox/payments", json={"unknown_account_id": "bacc_Nobody", "amount": 1}
    ).json()
    assert (account["account_id"], account["customer_id"]) == ("bacc_Nobody", None)


def test_an_unknown_id_the_sandbox_does_know_is_a_conflict(moment: httpx.Client) -> None:
    known = customer(moment, "UCR1001")
    paid = moment.post("/_sandbox/payments", json={"unknown_customer_id": known["id"], "amount": 1})
    assert_problem(paid, 409, "conflict")


def test_a_payment_to_an_unknown_customer_or_account_is_not_found(
    moment: httpx.Client, receiver: Receiver
) -> None:
    assert_problem(moment.post("/_sandbox/payments", json={"customer": "UCR-nobody", "amount": 1}), 404)
    assert_problem(moment.post("/_sandbox/payments", json={"account": "bacc_nobody", "amount": 1}), 404)
    assert receiver.requests == []


@pytest.mark.parametrize(
    "body",
    [
        {"amount": 100},
        {"customer": "UCR1001"},
        {"customer": "UCR1001", "amount": 0},
        {"customer": "UCR1001", "amount": 1.5},
        {"customer": "UCR1001", "amount": 1, "duplicates": -1},
        {"customer": "UCR1001", "account": "ACC1", "amount": 1},
        {"customer": "UCR1001", "amount": 1, "currency": "USD"},
        {"unknown_customer_id": "bacc_wrong_prefix", "amount": 1},
        {"unknown_customer_id": "bcus_x", "amount": 1, "currency": "EUR"},
        {"customer": "UCR1001", "amount": 1, "surprise": True},
    ],
)
def test_a_bad_payment_order_is_a_bad_request(moment: httpx.Client, body: dict[str, Any]) -> None:
    customer(moment, "UCR1001")
    assert_problem(moment.post("/_sandbox/payments", json=body), 400)


def test_two_signing_secrets_sign_during_a_rotation(moment: httpx.Client, receiver: Receiver) -> None:
    moment.post("/_sandbox/settings", json={"webhook_secrets": [LOCAL_WEBHOOK_SECRET, FORGER_WEBHOOK_SECRET]})
    moment.post("/_sandbox/payments", json={"unknown_customer_id": "bcus_Rotating", "amount": 1})
    [(headers, body)] = receiver.requests
    assert len(headers["webhook-signature"].split(" ")) == 2
    verified(headers, body, LOCAL_WEBHOOK_SECRET)
    verified(headers, body, FORGER_WEBHOOK_SECRET)


# State, reset and running it


def test_state_shows_objects_in_moments_shape_and_reset_forgets_them(
    moment: httpx.Client, sandbox: MomentSandbox
) -> None:
    owner = customer(moment, "UCR1001", currency="ZAR", balance=2000)
    account = create(
        moment, "/billing/accounts", {"customer": "UCR1001", "external_reference": "ACC1"}
    ).json()
    moment.post("/_sandbox/payments", json={"customer": "UCR1001", "amount": 5})
    state = moment.get("/_sandbox/state").json()
    assert state["customers"] == [{**owner, "balance": 1995}]
    assert state["accounts"] == [account]
    assert len(state["deliveries"]) == 1
    assert moment.post("/_sandbox/reset").json() == {
        "customers": [],
        "accounts": [],
        "bills": [],
        "deliveries": [],
    }
    # the idempotency keys are forgotten too
    assert (
        "idempotent-replayed"
        not in create(moment, "/billing/customers", {"external_reference": "U"}, "k").headers
    )


def test_the_environment_sets_the_settings() -> None:
    settings = SandboxSettings.from_environment(
        {
            "LOCAL_SANDBOX_PORT": "4999",
            "LOCAL_API_PORT": "3100",
            "SANDBOX_APPLIES_PAYMENTS": "off",
            "SANDBOX_FAIL_429_RATE": "0.25",
            "SANDBOX_SEED": "42",
        }
    )
    assert (settings.port, settings.applies_payments, settings.seed) == (4999, False, 42)
    assert settings.webhook_url == "http://127.0.0.1:3100/webhooks/moment"
    assert settings.faults.fail_429_rate == 0.25
    defaults = SandboxSettings.from_environment({})
    assert (defaults.port, defaults.applies_payments, defaults.api_key) == (4010, True, LOCAL_MOMENT_API_KEY)
    assert defaults.webhook_secrets == (LOCAL_WEBHOOK_SECRET,)
    with pytest.raises(ValueError, match="SANDBOX_APPLIES_PAYMENTS"):
        SandboxSettings.from_environment({"SANDBOX_APPLIES_PAYMENTS": "perhaps"})


def test_python_m_moment_sandbox_runs_it_standalone() -> None:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "local"), str(ROOT / "layers" / "shared")]),
        "LOCAL_SANDBOX_PORT": "0",
        "SANDBOX_WEBHOOK_URL": "",
        "SANDBOX_APPLIES_PAYMENTS": "false",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "moment_sandbox", "--quiet"],
        stdout=subprocess.PIPE,
        env=environment,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+", banner)
        assert found, banner
        settings = httpx.get(f"{found[0]}/_sandbox/settings", trust_env=False).json()
        assert (settings["webhook_url"], settings["applies_payments"]) == (None, False)
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == 0


# Bills

BILL_ID = re.compile(r"bill_[A-Za-z0-9]{21}")
BILL_KEYS = {
    "id",
    "external_reference",
    "customer_id",
    "status",
    "currency",
    "amount_due",
    "amount_paid",
    "amount_remaining",
    "bill_date",
    "due_date",
    "payment_rules",
    "metadata",
}


def bill(client: httpx.Client, reference: str = "FEE-2026", **fields: Any) -> dict[str, Any]:
    body = {"external_reference": reference, "currency": "ZAR", "amount_due": 120000, **fields}
    response = create(client, "/billing/bills", body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def pay_bill(client: httpx.Client, reference: str, amount: int) -> httpx.Response:
    return client.post("/_sandbox/payments", json={"bill": reference, "amount": amount})


def test_a_bill_on_a_customer_is_created_in_moments_shape_and_found_by_id_or_reference(
    moment: httpx.Client,
) -> None:
    owner = customer(moment, "UCR1001")
    created = bill(
        moment,
        customer=owner["id"],
        bill_date="2026-01-01",
        due_date="2026-01-31",
        metadata={"plan": "annual"},
    )
    assert set(created) == BILL_KEYS  # no account_id: it is on the customer
    assert BILL_ID.fullmatch(created["id"])
    assert (
        created["customer_id"],
        created["status"],
        created["amount_paid"],
        created["amount_remaining"],
    ) == (
        owner["id"],
        "unpaid",
        0,
        120000,
    )
    assert (created["bill_date"], created["due_date"], created["metadata"]) == (
        "2026-01-01",
        "2026-01-31",
        {"plan": "annual"},
    )
    assert created["payment_rules"]["overpayment_allowed"] is False
    assert moment.get(f"/billing/bills/{created['id']}").json() == created
    assert moment.get("/billing/bills/FEE-2026").json() == created
    assert_problem(moment.get("/billing/bills/FEE-nobody"), 404, "not-found")


def test_a_bill_on_an_account_names_the_account_and_its_customer(moment: httpx.Client) -> None:
    owner = customer(moment, "UCR1001")
    account = create(
        moment, "/billing/accounts", {"customer": "UCR1001", "external_reference": "ACC1"}
    ).json()
    created = bill(moment, account=account["id"])
    assert set(created) == BILL_KEYS | {"account_id"}
    assert (created["account_id"], created["customer_id"]) == (account["id"], owner["id"])


def test_a_composite_bill_create_makes_the_customer_the_account_and_the_bill(
    moment: httpx.Client, sandbox: MomentSandbox
) -> None:
    created = bill(
        moment,
        account={
            "customer": {"external_reference": "UCR2002", "name": "Jane"},
            "external_reference": "ACC2002",
        },
    )
    state = sandbox.state()
    [new_customer], [new_account] = state["customers"], state["accounts"]
    assert (new_customer["external_reference"], new_account["external_reference"]) == ("UCR2002", "ACC2002")
    assert (created["customer_id"], created["account_id"]) == (new_customer["id"], new_account["id"])


@pytest.mark.parametrize(
    "account",
    [
        {"customer": {"external_reference": "UCR-new"}, "external_reference": "ACC1"},  # account taken
        {"customer": {"external_reference": "UCR1001"}, "external_reference": "ACC-new"},  # customer taken
        {"customer": "UCR-nobody", "external_reference": "ACC-new"},  # no such customer
    ],
)
def test_a_composite_bill_that_cannot_be_made_whole_makes_nothing(
    moment: httpx.Client, sandbox: MomentSandbox, account: dict[str, Any]
) -> None:
    customer(moment, "UCR1001")
    create(moment, "/billing/accounts", {"customer": "UCR1001", "external_reference": "ACC1"})
    before = sandbox.state()
    body = {"external_reference": "FEE-1", "currency": "ZAR", "amount_due": 100, "account": account}
    assert create(moment, "/billing/bills", body).status_code in (404, 409)
    after = sandbox.state()
    assert (after["customers"], after["accounts"], after["bills"]) == (
        before["customers"],
        before["accounts"],
        [],
    )


def test_a_bill_reference_is_unique_and_a_replayed_create_makes_one_bill(
    moment: httpx.Client, sandbox: MomentSandbox
) -> None:
    owner = customer(moment, "UCR1001")
    body = {"external_reference": "FEE-1", "currency": "ZAR", "amount_due": 100, "customer": owner["id"]}
    first = create(moment, "/billing/bills", body, key="bill-key")
    again = create(moment, "/billing/bills", body, key="bill-key")
    assert (first.status_code, again.status_code, again.headers["idempotent-replayed"]) == (201, 201, "true")
    assert again.json() == first.json()
    assert_problem(create(moment, "/billing/bills", body), 409, "conflict")
    assert len(sandbox.state()["bills"]) == 1


@pytest.mark.parametrize(
    ("changes", "status", "slug", "named"),
    [
        ({"external_reference": None}, 400, "missing-parameter", "external_reference"),
        ({"currency": None}, 400, "missing-parameter", "currency"),
        ({"amount_due": None}, 400, "missing-parameter", "amount_due"),
        ({"customer": None}, 400, "missing-parameter", "customer"),
        ({"account": "bacc_x"}, 400, "invalid-parameter", "once"),
        ({"customer": "UCR1001"}, 400, "invalid-parameter", "bcus_"),
        ({"customer": None, "account": "ACC1"}, 400, "invalid-parameter", "bacc_"),
        ({"customer": "bcus_nobody"}, 404, "not-found", "bcus_nobody"),
        ({"customer": None, "account": "bacc_nobody"}, 404, "not-found", "bacc_nobody"),
        ({"amount_due": 0}, 400, "invalid-parameter", "amount_due"),
        ({"amount_due": 100_000_000}, 400, "invalid-parameter", "amount_due"),
        ({"amount_due": 10.5}, 400, "invalid-parameter", "amount_due"),
        ({"amount_due": "100"}, 400, "invalid-parameter", "amount_due"),
        ({"amount_due": True}, 400, "invalid-parameter", "amount_due"),
        ({"currency": "EUR"}, 400, "invalid-parameter", "currency"),
        ({"due_date": "31/01/2026"}, 400, "invalid-parameter", "due_date"),
        ({"bill_date": "2026-02-30"}, 400, "invalid-parameter", "bill_date"),
        ({"external_reference": "FEE 1"}, 400, "invalid-parameter", "external_reference"),
        ({"status": "paid"}, 400, "invalid-parameter", "status"),
        ({"amount_paid": 5}, 400, "invalid-parameter", "amount_paid"),
        ({"metadata": {f"k{i}": "v" for i in range(11)}}, 400, "invalid-parameter", "metadata"),
        (
            {"customer": None, "account": {"external_reference": "ACC9"}},
            400,
            "missing-parameter",
            "account.customer",
        ),
    ],
)
def test_a_bill_moment_would_refuse_is_refused_with_a_problem_naming_the_parameter(
    moment: httpx.Client,
    sandbox: MomentSandbox,
    changes: dict[str, Any],
    status: int,
    slug: str,
    named: str,
) -> None:
    owner = customer(moment, "UCR1001")
    body = {"external_reference": "FEE-1", "currency": "ZAR", "amount_due": 100, "customer": owner["id"]}
    body.update(changes)
    body = {name: value for name, value in body.items() if value is not None}
    problem = assert_problem(create(moment, "/billing/bills", body), status, slug)
    assert named in problem["detail"]
    assert sandbox.state()["bills"] == []


def test_a_patch_records_outside_payments_cumulatively_and_moment_marks_the_bill_paid(
    moment: httpx.Client,
) -> None:
    created = bill(moment, customer=customer(moment, "UCR1001")["id"], metadata={"a": "1"})
    part = moment.patch("/billing/bills/FEE-2026", json={"amount_paid": 50000, "currency": "ZAR"})
    assert part.status_code == 200, part.text
    assert part.json() == {**created, "amount_paid": 50000, "amount_remaining": 70000}
    whole = moment.patch(f"/billing/bills/{created['id']}", json={"amount_paid": 120000, "currency": "ZAR"})
    assert (whole.json()["status"], whole.json()["amount_remaining"]) == ("paid", 0)
    merged = moment.patch("/billing/bills/FEE-2026", json={"metadata": {"b": "2"}}).json()
    assert merged["metadata"] == {"a": "1", "b": "2"}
    assert merged["amount_paid"] == 120000


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        ({"amount_paid": 100}, 400, "currency is required"),
        ({"amount_paid": 100, "currency": "USD"}, 422, "in ZAR"),
        ({"amount_paid": -1, "currency": "ZAR"}, 400, "amount_paid"),
        ({"amount_paid": 100_000_000, "currency": "ZAR"}, 400, "amount_paid"),
        ({"amount_paid": 1.5, "currency": "ZAR"}, 400, "amount_paid"),
        ({"amount_due": 5000}, 400, "void the bill and raise a new one"),
        ({"due_date": "2026-03-01"}, 400, "void the bill and raise a new one"),
        ({"external_reference": "FEE-other"}, 400, "external_reference"),
        ({"status": "paid"}, 400, "status"),
    ],
)
def test_a_bill_patch_accepts_only_amount_paid_with_its_currency_and_metadata(
    moment: httpx.Client, body: dict[str, Any], status: int, named: str
) -> None:
    created = bill(moment, customer=customer(moment, "UCR1001")["id"])
    problem = assert_problem(moment.patch("/billing/bills/FEE-2026", json=body), status)
    assert named in problem["detail"]
    assert moment.get("/billing/bills/FEE-2026").json() == created


@pytest.mark.parametrize(
    ("behaviour", "status", "amount_paid"),
    [("refuse", 422, 120000), ("apply", 200, 90000), ("ignore", 200, 120000)],
)
def test_a_patch_of_a_paid_bill_does_what_the_setting_says(
    moment: httpx.Client, sandbox: MomentSandbox, behaviour: str, status: int, amount_paid: int
) -> None:
    sandbox.configure(paid_bill_patch=behaviour)
    bill(moment, customer=customer(moment, "UCR1001")["id"])
    moment.patch("/billing/bills/FEE-2026", json={"amount_paid": 120000, "currency": "ZAR"})
    answer = moment.patch("/billing/bills/FEE-2026", json={"amount_paid": 90000, "currency": "ZAR"})
    assert answer.status_code == status
    after = moment.get("/billing/bills/FEE-2026").json()
    assert after["amount_paid"] == amount_paid
    assert after["status"] == ("unpaid" if amount_paid < 120000 else "paid")


@pytest.mark.parametrize(
    ("overpayment_allowed", "behaviour", "status", "amount_paid"),
    [
        (False, "refuse", 422, 0),
        (False, "cap", 200, 120000),
        (False, "accept", 200, 130000),
        (True, "refuse", 200, 130000),
    ],
)
def test_a_patch_above_amount_due_does_what_the_payment_rules_and_the_setting_say(
    moment: httpx.Client,
    sandbox: MomentSandbox,
    overpayment_allowed: bool,
    behaviour: str,
    status: int,
    amount_paid: int,
) -> None:
    sandbox.configure(bill_overpayment_allowed=overpayment_allowed, bill_overpaid_patch=behaviour)
    created = bill(moment, customer=customer(moment, "UCR1001")["id"])
    assert created["payment_rules"]["overpayment_allowed"] is overpayment_allowed
    answer = moment.patch("/billing/bills/FEE-2026", json={"amount_paid": 130000, "currency": "ZAR"})
    assert answer.status_code == status
    after = moment.get("/billing/bills/FEE-2026").json()
    assert after["amount_paid"] == amount_paid
    assert after["amount_remaining"] == max(0, 120000 - amount_paid)  # never below 0


def test_a_void_is_permanent_keyed_and_leaves_nothing_to_update(moment: httpx.Client) -> None:
    created = bill(moment, customer=customer(moment, "UCR1001")["id"])
    assert_problem(moment.post("/billing/bills/FEE-2026/void"), 400, "missing-parameter")  # no key
    voided = create(moment, "/billing/bills/FEE-2026/void", None, key="void-1")
    assert voided.status_code == 200, voided.text
    assert voided.json() == {**created, "status": "voided"}
    replayed = create(moment, "/billing/bills/FEE-2026/void", None, key="void-1")
    assert (replayed.status_code, replayed.headers["idempotent-replayed"]) == (200, "true")
    assert_problem(create(moment, f"/billing/bills/{created['id']}/void", None), 409, "conflict")
    patched = moment.patch("/billing/bills/FEE-2026", json={"amount_paid": 5, "currency": "ZAR"})
    assert "voided" in assert_problem(patched, 422, "unprocessable")["detail"]
    assert moment.get("/billing/bills/FEE-2026").json()["status"] == "voided"
    assert_problem(create(moment, "/billing/bills/FEE-nobody/void", None), 404, "not-found")
    assert_problem(moment.get("/billing/bills/FEE-2026/void"), 405, "method-not-allowed")


def test_a_void_takes_no_body(moment: httpx.Client) -> None:
    bill(moment, customer=customer(moment, "UCR1001")["id"])
    assert_problem(create(moment, "/billing/bills/FEE-2026/void", {"reason": "x"}), 400, "invalid-parameter")
    assert create(moment, "/billing/bills/FEE-2026/void", {}).status_code == 200


@pytest.mark.parametrize(("refuse", "status", "after"), [(False, 200, "voided"), (True, 422, "unpaid")])
def test_a_bill_with_payments_is_voided_unless_the_setting_refuses_it(
    moment: httpx.Client, sandbox: MomentSandbox, refuse: bool, status: int, after: str
) -> None:
    sandbox.configure(refuse_void_with_payments=refuse)
    bill(moment, customer=customer(moment, "UCR1001")["id"])
    assert pay_bill(moment, "FEE-2026", 500).status_code == 201
    assert create(moment, "/billing/bills/FEE-2026/void", None).status_code == status
    state = moment.get("/billing/bills/FEE-2026").json()
    assert (state["status"], state["amount_paid"]) == (after, 500)


def test_a_bill_payment_raises_amount_paid_and_sends_a_webhook_with_the_bill_id(
    moment: httpx.Client, receiver: Receiver, sandbox: MomentSandbox
) -> None:
    owner = customer(moment, "UCR1001", currency="ZAR", balance=700)
    created = bill(moment, customer=owner["id"])
    # WHEN the customer pays part of the bill at Moment, then the rest
    first = pay_bill(moment, "FEE-2026", 20000)
    assert first.status_code == 201, first.text
    assert (first.json()["bill_id"], first.json()["bill"]["amount_paid"]) == (created["id"], 20000)
    assert moment.get("/billing/bills/FEE-2026").json()["status"] == "unpaid"
    pay_bill(moment, created["id"], 100000)
    # THEN each webhook names the bill (and, by default, its customer), signed as always
    events = [verified(headers, body) for headers, body in receiver.requests]
    assert [(e["data"]["bill_id"], e["data"]["customer_id"], e["data"]["amount"]) for e in events] == [
        (created["id"], owner["id"], 20000),
        (created["id"], owner["id"], 100000),
    ]
    assert "account_id" not in events[0]["data"]
    # AND Moment settled the bill itself; the customer's balance is untouched by a bill payment
    settled = moment.get("/billing/bills/FEE-2026").json()
    assert (settled["status"], settled["amount_paid"], settled["amount_remaining"]) == ("paid", 120000, 0)
    assert moment.get("/billing/customers/UCR1001").json()["balance"] == 700
    [in_state] = sandbox.state()["bills"]
    assert in_state["moment_payments"] == 120000


@pytest.mark.parametrize(
    ("parent_ids", "expected"), [(True, {"bill_id", "account_id", "customer_id"}), (False, {"bill_id"})]
)
def test_whether_a_bill_webhook_names_the_parents_is_a_setting(
    moment: httpx.Client, receiver: Receiver, parent_ids: bool, expected: set[str]
) -> None:
    assert (
        moment.post("/_sandbox/settings", json={"bill_parent_ids": parent_ids}).json()["bill_parent_ids"]
        is parent_ids
    )
    customer(moment, "UCR1001")
    account = create(
        moment, "/billing/accounts", {"customer": "UCR1001", "external_reference": "ACC1"}
    ).json()
    bill(moment, account=account["id"])
    pay_bill(moment, "FEE-2026", 100)
    [(headers, body)] = receiver.requests
    data = verified(headers, body)["data"]
    assert set(data) & {"bill_id", "account_id", "customer_id"} == expected


@pytest.mark.parametrize(
    ("settings", "amount", "status"),
    [
        ({"bill_underpayment_allowed": False}, 100, 422),
        ({"bill_underpayment_allowed": False}, 120000, 201),
        ({"bill_overpayment_allowed": False}, 120001, 422),
        ({"bill_overpayment_allowed": True}, 130000, 201),
    ],
)
def test_a_bill_payment_follows_the_payment_rules(
    moment: httpx.Client,
    sandbox: MomentSandbox,
    receiver: Receiver,
    settings: dict[str, Any],
    amount: int,
    status: int,
) -> None:
    sandbox.configure(**settings)
    bill(moment, customer=customer(moment, "UCR1001")["id"])
    answer = pay_bill(moment, "FEE-2026", amount)
    assert answer.status_code == status, answer.text
    after = moment.get("/billing/bills/FEE-2026").json()
    assert after["amount_paid"] == (amount if status == 201 else 0)
    assert after["amount_remaining"] == (max(0, 120000 - amount) if status == 201 else 120000)
    assert len(receiver.requests) == (1 if status == 201 else 0)


def test_a_voided_or_unknown_bill_takes_no_payment(moment: httpx.Client, receiver: Receiver) -> None:
    bill(moment, customer=customer(moment, "UCR1001")["id"])
    create(moment, "/billing/bills/FEE-2026/void", None)
    assert_problem(pay_bill(moment, "FEE-2026", 100), 409, "conflict")
    assert_problem(pay_bill(moment, "FEE-nobody", 100), 404, "not-found")
    assert receiver.requests == []


def test_a_payment_can_name_a_bill_the_sandbox_does_not_know(
    moment: httpx.Client, receiver: Receiver
) -> None:
    paid = moment.post(
        "/_sandbox/payments",
        json={
            "unknown_bill_id": "bill_NotOurs",
            "unknown_customer_id": "bcus_NotOurs",
            "amount": 300,
            "currency": "USD",
        },
    )
    assert paid.status_code == 201, paid.text
    [(headers, body)] = receiver.requests
    data = verified(headers, body)["data"]
    assert (data["bill_id"], data["customer_id"], data["currency"]) == ("bill_NotOurs", "bcus_NotOurs", "USD")
    created = bill(moment, customer=customer(moment, "UCR1001")["id"])
    known = moment.post("/_sandbox/payments", json={"unknown_bill_id": created["id"], "amount": 1})
    assert_problem(known, 409, "conflict")
    bad = moment.post("/_sandbox/payments", json={"unknown_bill_id": "bcus_x", "amount": 1})
    assert "bill_" in assert_problem(bad, 400, "invalid-parameter")["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"bill_overpaid_patch": "sometimes"},
        {"paid_bill_patch": "maybe"},
        {"refuse_void_with_payments": "yes"},
        {"bill_parent_ids": 1},
    ],
)
def test_bad_bill_settings_are_refused(moment: httpx.Client, body: dict[str, Any]) -> None:
    before = moment.get("/_sandbox/settings").json()
    assert_problem(moment.post("/_sandbox/settings", json=body), 400, "invalid-parameter")
    assert moment.get("/_sandbox/settings").json() == before


def test_the_environment_sets_the_bill_settings() -> None:
    settings = SandboxSettings.from_environment(
        {
            "SANDBOX_BILL_PARENT_IDS": "off",
            "SANDBOX_BILL_UNDERPAYMENT_ALLOWED": "false",
            "SANDBOX_BILL_OVERPAYMENT_ALLOWED": "true",
            "SANDBOX_BILL_OVERPAID_PATCH": "cap",
            "SANDBOX_PAID_BILL_PATCH": "ignore",
            "SANDBOX_REFUSE_VOID_WITH_PAYMENTS": "1",
        }
    )
    rules = settings.bill_rules
    assert (rules.parent_ids, rules.underpayment_allowed, rules.overpayment_allowed) == (False, False, True)
    assert (rules.overpaid_patch, rules.paid_patch, rules.refuse_void_with_payments) == (
        "cap",
        "ignore",
        True,
    )
    defaults = SandboxSettings.from_environment({}).bill_rules
    assert (defaults.parent_ids, defaults.overpaid_patch, defaults.paid_patch) == (True, "refuse", "refuse")
    with pytest.raises(ValueError, match="SANDBOX_PAID_BILL_PATCH"):
        SandboxSettings.from_environment({"SANDBOX_PAID_BILL_PATCH": "whatever"})
