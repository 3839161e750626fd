"""The ledger API's contract, docs/api/openapi.yaml, fuzzed by schemathesis against the live local stack
over real HTTP (loopback only): requests that fit the contract and requests that break it, from the
contract's examples, from its boundaries (schemathesis' coverage phase) and at random (seeded and
derandomized, so every run sends the same requests). No answer may be a 5xx, and every answer must be
one the contract documents for its operation: status code, content type, body schema, headers.

Every check schemathesis runs by default applies, except the two named in CONFIG, each with its reason.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from schemathesis import Case, CheckContext, GenerationMode, Response

from local_stack.made_up_values import LOCAL_WEBHOOK_SECRET
from local_stack.template import ROOT
from support.webhooks import amount_applied_body, sign

PROBLEM_PREFIX = "tag:moment-balance-sync,2026:problem/"
# What the contract's examples name: made to exist before the fuzzing, so that those examples reach
# an account's and an event's happy path too (any other customer_ref is a 422, any other event a 404).
EXAMPLE_GROUP_CUSTOMER = "UCR1234567890"
EXAMPLE_WEBHOOK_ID = "msg_2mXnTestDelivery0001"
# The bill examples: an account of that customer, and a bill on it.
EXAMPLE_ACCOUNT = "ACC-2041"
EXAMPLE_BILL = "FEE-2026-0001"

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20260921,
        "generation": {
            "mode": "all",  # positive (the contract's schemas admit it) and negative (they do not)
            "max-examples": 40,  # per operation, random phase; the examples and coverage phases add theirs
            "deterministic": True,
            "database": "none",  # nothing replayed from, or written to, .hypothesis/
            # A SigV4 signature is computed over the request, not drawn from a schema: schemathesis
            # could only send random `authorization` headers, which the local front ignores anyway.
            "with-security-parameters": False,
        },
        "checks": {
            # The local front makes no IAM check (on AWS, API Gateway answers 403 before the function).
            "ignored_auth": {"enabled": False},
            # Replaced by `valid_requests_are_accepted`, which knows the refusals the contract documents
            # for requests its schemas admit (this check takes every 400 and 422 to those for a bug).
            "positive_data_acceptance": {"enabled": False},
        },
    }
)
schema = schemathesis.openapi.from_path(ROOT / "docs" / "api" / "openapi.yaml", config=CONFIG)

# (operation, generation mode, status) of every answer, for `test_the_fuzzing_is_not_vacuous`.
# The last test reads what the fuzzing before it collected in this process, and schemathesis gives every
# operation's test the same node id, by which pytest-xdist tells a worker what to run (each would run the
# first operation): `make unit` runs this module in a pytest of its own, without xdist.
ANSWERS: Counter[tuple[str, str, int]] = Counter()


def _documented_refusal(case: Case[Any], response: Response) -> bool:
    """A 4xx that openapi.yaml documents for a request its schemas admit."""
    body: Any = response.json()
    problem = str(body.get("type", "")).removeprefix(PROBLEM_PREFIX) if isinstance(body, dict) else ""
    status = response.status_code
    if status in (404, 409):  # a generated ref names nothing, or the ledger's state refuses the change
        return True
    if (status, problem) == (422, "customer-not-on-account-model"):
        return True  # a generated customer_ref is rarely a customer on the account-balance model
    if (status, problem) == (422, "customer-not-on-customer-model"):
        return True  # a bill on the example customer, which is on the account-balance model
    if (status, problem) == (422, "bill-amount-out-of-range"):
        return True  # generated outside payments add up past Moment's bound on one bill
    if (status, problem) == (400, "invalid-cursor"):
        return "cursor" in (case.query or {})  # opaque: only a cursor the API returned is one
    if (status, problem) == (400, "invalid-request") and isinstance(case.body, dict):
        # Money and versions spelled as floats (10.0) are refused, though JSON Schema's integer admits
        # them and schemathesis sends them on purpose. The 400 must name exactly those members.
        floats = {name for name, value in case.body.items() if isinstance(value, float)}
        return bool(floats) and {error["field"] for error in body.get("errors", [])} == floats
    return False


def valid_requests_are_accepted(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """schemathesis' positive_data_acceptance, but for the refusals the contract documents."""
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return None
    if response.request.method != case.operation.method.upper():
        return None  # a probe with a method the path has no route for (not_a_server_error covers it)
    if not 400 <= response.status_code < 500:
        return None  # accepted, or a 5xx (not_a_server_error's)
    assert _documented_refusal(case, response), (
        f"a request the contract admits was refused: {response.status_code} {response.text[:500]}"
    )
    return True


@dataclass(frozen=True)
class LiveApi:
    url: str
    session: requests.Session  # what schemathesis sends with


def _deliver_the_example_webhook(client: httpx.Client) -> None:
    body = amount_applied_body()  # for a Moment customer the ledger does not know: it will be parked
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": EXAMPLE_WEBHOOK_ID,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(LOCAL_WEBHOOK_SECRET, EXAMPLE_WEBHOOK_ID, timestamp, body),
    }
    assert client.post("/webhooks/moment", content=body, headers=headers).is_success
    deadline = time.monotonic() + 10
    while client.get(f"/events/{EXAMPLE_WEBHOOK_ID}").json().get("status") == "received":
        assert time.monotonic() < deadline, "the example webhook was never reconciled"
        time.sleep(0.05)  # settled before the fuzzing starts, so that every run meets the same state


@pytest.fixture(scope="module")
def live_api() -> Iterator[LiveApi]:
    from local_stack.stack import LocalSettings, running_stack

    settings = LocalSettings(
        api_port=0, sandbox_port=0, aws_port=0, push_interval_seconds=None, redrive_interval_seconds=None
    )
    with (
        running_stack(settings) as stack,
        httpx.Client(base_url=stack.api_url, trust_env=False) as client,
        requests.Session() as session,
    ):
        group = client.put(
            f"/customers/{EXAMPLE_GROUP_CUSTOMER}", json={"currency": "ZAR", "balance_model": "accounts"}
        )
        assert group.status_code == 201, group.text
        account = {"customer_ref": EXAMPLE_GROUP_CUSTOMER, "currency": "ZAR"}
        assert client.put(f"/accounts/{EXAMPLE_ACCOUNT}", json=account).status_code == 201
        bill = {  # the example of PUT /bills/{ref} itself: sent again, it is the same bill (200)
            "account": EXAMPLE_ACCOUNT,
            "currency": "ZAR",
            "amount_due": 250000,
            "bill_date": "2026-09-01",
            "due_date": "2026-09-30",
            "description": "Annual membership 2026/27",
        }
        assert client.put(f"/bills/{EXAMPLE_BILL}", json=bill).status_code == 201
        _deliver_the_example_webhook(client)
        session.trust_env = False  # loopback only, whatever proxy the environment names
        yield LiveApi(stack.api_url, session)


@schema.parametrize()
def test_every_answer_is_one_the_contract_documents(case: Case[Any], live_api: LiveApi) -> None:
    response = case.call_and_validate(
        base_url=live_api.url, session=live_api.session, additional_checks=[valid_requests_are_accepted]
    )
    mode = case.meta.generation.mode.value if case.meta else "unknown"
    ANSWERS[(case.operation.label, mode, response.status_code)] += 1


def test_the_fuzzing_is_not_vacuous(request: pytest.FixtureRequest) -> None:
    """Each operation fuzzed in this session got requests of both kinds, let valid ones past its
    request checks, and (but for an absolute balance, which needs the version it was read at, so that
    generated requests are 409s) accepted some."""
    fuzzed = [
        item.name.partition("[")[2].removesuffix("]")
        for item in request.session.items
        if item.name.startswith(test_every_answer_is_one_the_contract_documents.__name__ + "[")
    ]
    if not fuzzed:
        pytest.skip("no operation was fuzzed in this session")
    for operation in fuzzed:
        statuses = {
            mode: {status for (label, m, status) in ANSWERS if (label, m) == (operation, mode)}
            for mode in ("positive", "negative")
        }
        assert statuses["negative"], (operation, ANSWERS)
        assert statuses["positive"] - {400}, (operation, ANSWERS)
        if not operation.endswith("/balance"):
            assert any(200 <= status < 300 for status in statuses["positive"]), (operation, ANSWERS)
