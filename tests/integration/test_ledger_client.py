"""The merchant's client (clients/python) against the local stack with LOCAL_REQUIRE_SIGV4 on: every
operation of the contract, signed, through the real front and handlers; the local check refusing what
API Gateway refuses; problems as typed exceptions; retries with the same body. And the operator CLI's
`--local`, pointed at the same running stack with nothing else set.

`test_every_operation_has_a_method_and_a_case` enumerates docs/api/openapi.yaml: a route added to the
contract without a client method and a case here fails the suite.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import botocore.auth
import httpx
import pytest
import yaml
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local_stack.made_up_values import (
    LOCAL_AWS_ACCESS_KEY_ID,
    LOCAL_AWS_SECRET_ACCESS_KEY,
    LOCAL_WEBHOOK_SECRET,
)
from local_stack.stack import REGION, LocalSettings, RunningStack, running_stack
from local_stack.template import ROOT
from moment_ledger_client import (
    Conflict,
    Forbidden,
    LedgerAnswer,
    LedgerBusy,
    LedgerClient,
    LedgerUnreachable,
    NotFound,
    RequestInvalid,
)
from moment_sandbox import SandboxSettings
from moment_sync.cli import main as cli
from support.webhooks import sign

CREDENTIALS = Credentials(LOCAL_AWS_ACCESS_KEY_ID, LOCAL_AWS_SECRET_ACCESS_KEY)


@pytest.fixture(scope="module")
def stack() -> Iterator[RunningStack]:
    settings = LocalSettings(
        api_port=0,
        sandbox_port=0,
        aws_port=0,
        push_interval_seconds=None,
        redrive_interval_seconds=None,
        require_sigv4=True,
        sandbox=SandboxSettings(webhook_base_delay_seconds=0.05),
    )
    with running_stack(settings) as running:
        yield running


@pytest.fixture
def client(stack: RunningStack) -> Iterator[LedgerClient]:
    with LedgerClient(stack.api_url, region=REGION, credentials=CREDENTIALS) as ledger:
        yield ledger


# --- every operation of the contract ----------------------------------------------------------------


def snake(operation_id: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower()


def contract_operations() -> set[str]:
    contract = yaml.safe_load((ROOT / "docs/api/openapi.yaml").read_text())
    return {
        operation["operationId"]
        for path in contract["paths"].values()
        for method, operation in path.items()
        if method in {"get", "put", "post", "delete", "patch"}
    }


# operationId -> a call that must succeed (after the ones before it), and what its answer must show.
CASES: dict[str, tuple[Callable[[LedgerClient], LedgerAnswer], Callable[[LedgerAnswer], bool]]] = {
    "putCustomer": (
        lambda c: c.put_customer("CL-1", currency="ZAR", name="Thandi Nkosi"),
        lambda a: a.created and a["ref"] == "CL-1",
    ),
    "getCustomer": (lambda c: c.get_customer("CL-1", limit=5), lambda a: a["balance"] == 0),
    "putAccount": (
        lambda c: (
            c.put_customer("CL-FAM", currency="ZAR", balance_model="accounts")
            and c.put_account("CL-ACC", customer_ref="CL-FAM", currency="ZAR")
        ),
        lambda a: a.created and a["customer_ref"] == "CL-FAM",
    ),
    "getAccount": (lambda c: c.get_account("CL-ACC"), lambda a: a["ref"] == "CL-ACC"),
    "postCustomerCharge": (
        lambda c: c.post_customer_charge("CL-1", charge_id="inv-1", amount=45000, description="June"),
        lambda a: a.created and a["amount"] == 45000,
    ),
    "postAccountCharge": (
        lambda c: c.post_account_charge("CL-ACC", charge_id="inv-2", amount=1200),
        lambda a: a.created and a["amount"] == 1200,
    ),
    "putCustomerBalance": (
        lambda c: c.put_customer_balance("CL-1", balance=40000, expected_version=1),
        lambda a: (a["balance"], a["version"]) == (40000, 2),
    ),
    "putAccountBalance": (
        lambda c: c.put_account_balance("CL-ACC", balance=0, expected_version=1),
        lambda a: a["balance"] == 0,
    ),
    "getEvent": (lambda c: c.get_event("msg_client_1"), lambda a: a["webhook_id"] == "msg_client_1"),
    "putBill": (
        lambda c: c.put_bill(
            "CL-FEE", customer="CL-1", currency="ZAR", amount_due=90000, due_date="2026-12-31"
        ),
        lambda a: a.created and a["status"] == "unpaid" and a["amount_remaining"] == 90000,
    ),
    "postBillPayment": (
        lambda c: c.post_bill_payment("CL-FEE", payment_id="cash-1", amount=40000, description="Cash"),
        lambda a: a.created and a["id"] == "outside_payment:cash-1",
    ),
    "getBill": (lambda c: c.get_bill("CL-FEE"), lambda a: a["amount_paid"] == 40000),
    "getCustomerBills": (
        lambda c: c.get_customer_bills("CL-1", status="unpaid"),
        lambda a: [bill["reference"] for bill in a["bills"]] == ["CL-FEE"],
    ),
    "getAccountBills": (
        lambda c: (
            c.put_bill("CL-ACC-FEE", account="CL-ACC", currency="ZAR", amount_due=100)
            and c.get_account_bills("CL-ACC")
        ),
        lambda a: [bill["reference"] for bill in a["bills"]] == ["CL-ACC-FEE"],
    ),
    "postBillVoid": (
        lambda c: c.post_bill_void("CL-ACC-FEE"),
        lambda a: a["status"] == "voided" and a.status == 200,
    ),
}


def test_every_operation_has_a_method_and_a_case() -> None:
    operations = contract_operations()
    assert operations == set(CASES)
    assert all(callable(getattr(LedgerClient, snake(operation), None)) for operation in operations)


def test_every_operation_signed_through_the_local_stack(stack: RunningStack, client: LedgerClient) -> None:
    body = json.dumps({"id": "evt_c1", "type": "customer.updated", "data": {}}).encode()
    now = int(time.time())
    headers = {
        "webhook-id": "msg_client_1",
        "webhook-timestamp": str(now),
        "webhook-signature": sign(LOCAL_WEBHOOK_SECRET, "msg_client_1", now, body),
    }
    assert httpx.post(stack.api_url + "/webhooks/moment", content=body, headers=headers).status_code == 200
    for operation, (call, shows) in CASES.items():
        answer = call(client)
        assert shows(answer), (operation, answer)


def test_problems_are_typed_exceptions_with_their_fields(client: LedgerClient) -> None:
    client.put_customer("CL-2", currency="ZAR")
    with pytest.raises(NotFound) as missing:
        client.get_account("CL-NOBODY")
    assert (missing.value.status, missing.value.problem) == (404, "not-found")
    with pytest.raises(RequestInvalid) as invalid:
        client.post_customer_charge("CL-2", charge_id="x", amount=0)
    assert invalid.value.errors == [{"field": "amount", "message": "must not be 0"}]
    with pytest.raises(Conflict) as stale:
        client.put_customer_balance("CL-2", balance=5, expected_version=9)
    assert (stale.value.problem, stale.value.current_version, stale.value.current_balance) == (
        "stale-version",
        0,
        0,
    )


def test_a_charge_sent_again_is_the_same_charge(client: LedgerClient) -> None:
    client.put_customer("CL-3", currency="ZAR")
    first = client.post_customer_charge("CL-3", charge_id="inv-3", amount=700)
    again = client.post_customer_charge("CL-3", charge_id="inv-3", amount=700)
    assert (first.status, again.status, again["id"]) == (201, 200, first["id"])
    assert client.get_customer("CL-3")["balance"] == 700


# --- the local SigV4 check refuses what API Gateway refuses ---------------------------------------


def signed(
    stack: RunningStack,
    path: str,
    body: bytes,
    *,
    secret: str = LOCAL_AWS_SECRET_ACCESS_KEY,
    service: str = "execute-api",
    region: str = REGION,
) -> dict[str, str]:
    request = AWSRequest(
        method="PUT", url=stack.api_url + path, data=body, headers={"content-type": "application/json"}
    )
    SigV4Auth(Credentials(LOCAL_AWS_ACCESS_KEY_ID, secret), service, region).add_auth(request)
    return dict(request.headers.items())


BODY = json.dumps({"currency": "ZAR"}).encode()


def put(stack: RunningStack, headers: dict[str, str], body: bytes = BODY) -> httpx.Response:
    return httpx.put(stack.api_url + "/customers/SIG-1", content=body, headers=headers)


def test_a_good_signature_passes(stack: RunningStack) -> None:
    assert put(stack, signed(stack, "/customers/SIG-1", BODY)).status_code in {200, 201}


@pytest.mark.parametrize(
    ("why", "change"),
    [
        ("no signature", lambda stack: ({"content-type": "application/json"}, BODY)),
        ("a wrong secret", lambda stack: (signed(stack, "/customers/SIG-1", BODY, secret="not-it"), BODY)),
        (
            "a changed body",
            lambda stack: (signed(stack, "/customers/SIG-1", BODY), BODY.replace(b"ZAR", b"USD")),
        ),
        ("another path", lambda stack: (signed(stack, "/customers/SIG-2", BODY), BODY)),
        (
            "the wrong service",
            lambda stack: (signed(stack, "/customers/SIG-1", BODY, service="lambda"), BODY),
        ),
        (
            "the wrong region",
            lambda stack: (signed(stack, "/customers/SIG-1", BODY, region="eu-west-1"), BODY),
        ),
    ],
)
def test_a_bad_signature_is_403(stack: RunningStack, why: str, change: Any) -> None:
    headers, body = change(stack)
    response = put(stack, headers, body)
    assert response.status_code == 403, why
    assert response.json()["message"] == "Forbidden"


@pytest.mark.parametrize(("minutes", "status"), [(-4, 200), (6, 403), (-6, 403)])
def test_a_signature_more_than_5_minutes_off_is_403(
    stack: RunningStack, monkeypatch: pytest.MonkeyPatch, minutes: int, status: int
) -> None:
    skewed = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=minutes)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: skewed)
    put(stack, signed(stack, "/customers/SIG-1", BODY))  # created by an earlier test or now
    assert put(stack, signed(stack, "/customers/SIG-1", BODY)).status_code == status


def test_a_client_with_the_wrong_secret_gets_forbidden(stack: RunningStack) -> None:
    wrong = Credentials(LOCAL_AWS_ACCESS_KEY_ID, "not-the-secret")
    with LedgerClient(stack.api_url, region=REGION, credentials=wrong) as client, pytest.raises(Forbidden):
        client.get_customer("CL-1")


def test_the_webhook_route_is_not_behind_iam(stack: RunningStack) -> None:
    response = httpx.post(stack.api_url + "/webhooks/moment", content=b"{}")
    assert response.status_code == 400  # the receiver's own check (no webhook headers), not the IAM one
    assert "Forbidden" not in response.text


# --- retries: the same body, signed again --------------------------------------------------------


def test_busy_answers_are_retried_with_the_same_body_then_raised() -> None:
    seen: list[httpx.Request] = []
    answers = iter(
        [
            httpx.Response(503, headers={"retry-after": "1"}, json={"type": "tag:x", "status": 503}),
            httpx.Response(429, json={"message": "Too Many Requests"}),
            httpx.Response(201, json={"entry_id": "charge:inv-9"}),
        ]
    )

    def transport(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(answers)

    pauses: list[float] = []
    with LedgerClient(
        "https://api.example.test",
        region=REGION,
        credentials=CREDENTIALS,
        transport=httpx.MockTransport(transport),
        sleep=pauses.append,
    ) as client:
        answer = client.post_customer_charge("R1", charge_id="inv-9", amount=100)
    assert answer.created and len(seen) == 3
    assert {request.content for request in seen} == {b'{"id":"inv-9","amount":100}'}
    assert all(request.headers["authorization"].startswith("AWS4-HMAC-SHA256 ") for request in seen)
    assert pauses[0] == 1.0  # the API's retry-after

    busy = httpx.MockTransport(lambda _: httpx.Response(503, json={"status": 503, "detail": "busy"}))
    with (
        LedgerClient(
            "https://api.example.test",
            region=REGION,
            credentials=CREDENTIALS,
            transport=busy,
            sleep=pauses.append,
        ) as client,
        pytest.raises(LedgerBusy) as still_busy,
    ):
        client.get_event("msg_1")
    assert still_busy.value.detail == "busy"


def test_no_answer_is_retried_then_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pauses: list[float] = []
    with (
        LedgerClient(
            f"http://127.0.0.1:{port}", region=REGION, credentials=CREDENTIALS, sleep=pauses.append
        ) as client,
        pytest.raises(LedgerUnreachable),
    ):
        client.get_customer("R1")
    assert len(pauses) == 3  # four attempts


# --- the operator CLI with --local and nothing else ------------------------------------------------


def test_the_cli_with_local_needs_no_other_setup(
    stack: RunningStack, client: LedgerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("WEBHOOK_EVENTS_TABLE", "LEDGER_TABLE", "MOMENT_API_KEY", "MOMENT_BASE_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_AWS_PORT", stack.aws_endpoint.rsplit(":", 1)[1])
    monkeypatch.setenv("LOCAL_SANDBOX_PORT", stack.sandbox_url.rsplit(":", 1)[1])
    client.put_customer("CLI-1", currency="ZAR")
    client.post_customer_charge("CLI-1", charge_id="inv-cli", amount=2500)
    stack.push_now()
    out, err = io.StringIO(), io.StringIO()
    assert cli(["--local", "balance", "customer", "CLI-1"], out=out, err=err) == 0, err.getvalue()
    assert re.search(r"balance\s+2500", out.getvalue())
    out = io.StringIO()
    assert cli(["--local", "--json", "reconcile-report", "customer", "CLI-1"], out=out, err=err) == 0, (
        err.getvalue()
    )
    assert json.loads(out.getvalue())["balances"][0]["moment"] == 2500  # read from the sandbox
    assert cli(["--local", "verify"], out=io.StringIO(), err=err) == 0, err.getvalue()


def test_local_settings_read_the_switch() -> None:
    assert LocalSettings.from_environment({}).require_sigv4 is False
    assert LocalSettings.from_environment({"LOCAL_REQUIRE_SIGV4": "1"}).require_sigv4 is True
    assert replace(LocalSettings(), require_sigv4=True).require_sigv4
