"""The whole system through the local stack, over real HTTP on loopback: moto's server, the Moment
sandbox, the HTTP front, the stream event source and the scheduler, with the handlers unchanged.

- the demo's month (`make demo` plays it both ways Moment may treat a balance; here the default);
- a random month (seeded; the seed is printed) with faults on both sides: the sandbox answers a share
  of the pusher's calls 429/500, and DynamoDB throttles a few of the functions' writes; at the end,
  invariants 1-5 of DESIGN.md;
- the pusher's races, each forced deterministically (they were bugs this file found);
- the stream event source's semantics (filter, batch size, partial failures, bisection, retries, the
  on-failure destination), against scripted responses;
- every file in events/ drives its handler, and events/env.json is what `make local` sets;
- `python -m local_stack` (what `make local` runs) starts, says where it is, and stops on Ctrl-C.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from botocore.exceptions import ClientError

from local_stack import demo
from local_stack.event_source import MappingSettings, StreamEventSource
from local_stack.functions import Invocation
from local_stack.made_up_values import FORGER_WEBHOOK_SECRET, LOCAL_WEBHOOK_SECRET
from local_stack.sample_events import EVENTS, env_file, function_folder
from local_stack.stack import LocalSettings, RunningStack, running_stack, scheduled_functions
from local_stack.template import ROOT
from moment_sandbox import Faults, SandboxSettings
from support.webhooks import sign

SEED = int(os.environ.get("LOCAL_STACK_SEED") or random.SystemRandom().randrange(1_000_000))
FINAL = {"applied", "duplicate", "ignored", "parked"}


def quick_settings(**changes: Any) -> LocalSettings:
    """Free ports, nothing on a timer unless asked, fast retries."""
    settings = LocalSettings(
        api_port=0,
        sandbox_port=0,
        aws_port=0,
        push_interval_seconds=None,
        redrive_interval_seconds=None,
        stream_retry_delay_seconds=0.01,
        stream_batching_window_seconds=0.2,
        sandbox=SandboxSettings(webhook_base_delay_seconds=0.05, webhook_max_attempts=10),
    )
    return replace(settings, **changes)


def send_signed(api: httpx.Client, webhook_id: str, body: bytes, secret: str = LOCAL_WEBHOOK_SECRET) -> int:
    """Deliver a webhook as Moment does: signed afresh on every attempt, retried while the answer is 5xx."""
    for _ in range(20):
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, webhook_id, timestamp, body),
        }
        status = api.post("/webhooks/moment", content=body, headers=headers).status_code
        if status < 500:
            return status
        time.sleep(0.05)
    raise AssertionError(f"{webhook_id} still answered {status} after 20 attempts")


def call(request: Any, *args: Any, **kwargs: Any) -> httpx.Response:
    """A merchant's call to the ledger API: retried on 503 (a throttled table), as its client would."""
    for _ in range(20):
        response: httpx.Response = request(*args, **kwargs)
        if response.status_code < 500:
            response.raise_for_status()
            return response
        time.sleep(0.05)
    raise AssertionError(f"still {response.status_code} after 20 tries: {response.text}")


# --- the demo -------------------------------------------------------------------------------------


def test_the_demo_month_ends_with_the_ledger_and_moment_agreeing() -> None:
    """`make demo` plays it both ways; here the default way (the random month below plays both)."""
    lines: list[str] = []
    with running_stack(demo.demo_settings(applies_payments=True, environ={})) as stack:
        result = demo.play(stack, lines.append)
    assert result.ok, "\n".join(lines)
    assert Counter(status.split(":")[0] for status in result.statuses.values()) == {
        "applied": 4,
        "duplicate": 1,
        "ignored": 1,
        "parked": 2,
    }
    assert result.forged_ids and not set(result.forged_ids) & set(result.statuses)
    assert {row["ref"]: row["ledger"] for row in result.rows} == {
        "UCR1001": 36500,
        "UCR1002": 0,
        "UCR1003": 120000,
        "UCR2001": None,
        "UCR2001-GYM": 25000,
        "UCR2001-POOL": 0,
    }


# --- a random month with faults -------------------------------------------------------------------


class Throttles:
    """A few DynamoDB throttles on the functions' own client (botocore event hooks), as a busy table
    answers once the SDK's retries are spent."""

    CODES: ClassVar[dict[str, str]] = {
        "PutItem": "ProvisionedThroughputExceededException",
        "UpdateItem": "ProvisionedThroughputExceededException",
        "TransactWriteItems": "TransactionCanceledException",
    }

    def __init__(self, rng: random.Random, rate: float, budget: int) -> None:
        self._rng = rng
        self._rate = rate
        self.left = dict.fromkeys(self.CODES, budget)
        self.first = {"TransactWriteItems"}  # the first payment transaction always fails
        self.injected: Counter[str] = Counter()
        self._lock = threading.Lock()

    def attach(self, client: Any) -> None:
        for operation in self.CODES:
            client.meta.events.register(f"before-parameter-build.dynamodb.{operation}", self._maybe_throttle)

    def stop(self) -> None:
        """No more random throttles (the first payment's still fails if it has not run yet)."""
        with self._lock:
            self.left = dict.fromkeys(self.CODES, 0)

    def _maybe_throttle(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        operation = model.name
        with self._lock:
            if operation in self.first and _is_payment(params):
                self.first.discard(operation)
            elif self.left[operation] > 0 and self._rng.random() < self._rate:
                self.left[operation] -= 1
            else:
                return
            self.injected[operation] += 1
        error: dict[str, Any] = {"Error": {"Code": self.CODES[operation], "Message": "injected throttle"}}
        if operation == "TransactWriteItems":
            error["CancellationReasons"] = [{"Code": "ThrottlingError"}] + [
                {"Code": "None"} for _ in params.get("TransactItems", [])[1:]
            ]
        raise ClientError(error, operation)


def _is_payment(params: dict[str, Any]) -> bool:
    first = params.get("TransactItems", [{}])[0]
    return str(first.get("Put", {}).get("Item", {}).get("entry_id", {}).get("S", "")).startswith("payment:")


@dataclass
class Month:
    """What the test did, to check what the system made of it."""

    on_moment: dict[str, str] = field(default_factory=dict)  # ref -> "customer"/"account"
    payments: dict[str, tuple[str, str, int]] = field(
        default_factory=dict
    )  # application id -> (kind, ref, amount)
    unknown_payments: set[str] = field(default_factory=set)
    sent_bodies: dict[str, bytes] = field(default_factory=dict)  # webhook id -> body (valid ones)
    webhooks_of: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # application -> ids
    ignored: set[str] = field(default_factory=set)
    forged: set[str] = field(default_factory=set)


@pytest.mark.parametrize("applies_payments", [True, False], ids=["moment-lowers", "moment-keeps"])
def test_a_random_month_with_faults_on_both_sides_keeps_every_invariant(applies_payments: bool) -> None:
    seed = SEED * 2 + int(applies_payments)
    print(f"seed {seed} (LOCAL_STACK_SEED={SEED} reruns this)")
    rng = random.Random(seed)
    settings = quick_settings(
        push_interval_seconds=0.5,
        redrive_interval_seconds=3.0,
        sandbox=SandboxSettings(
            applies_payments=applies_payments,
            webhook_base_delay_seconds=0.05,
            webhook_max_attempts=10,
            faults=Faults(fail_429_rate=0.04, fail_500_rate=0.02),
            seed=seed,
        ),
    )
    month = Month()
    with running_stack(settings, notify=lambda line: print(f"stack: {line}")) as stack:
        from moment_sync import runtime

        throttles = Throttles(rng, rate=0.1, budget=3)
        throttles.attach(runtime.aws_client("dynamodb"))  # the client every function uses
        with (
            httpx.Client(base_url=stack.api_url, timeout=60, trust_env=False) as api,
            httpx.Client(base_url=stack.sandbox_url, timeout=60, trust_env=False) as moment,
        ):
            started = time.monotonic()
            families = _open_the_books(api, rng)
            print(f"books opened after {time.monotonic() - started:.1f}s")
            _wait_until_on_moment(moment, month, expected=_all_refs(api_refs=families), timeout=20)
            print(f"on Moment after {time.monotonic() - started:.1f}s")
            _play_the_month(api, moment, rng, month, families)
            print(f"month played after {time.monotonic() - started:.1f}s")
            # Quiet: no more faults; the system catches up by itself (pushes and the stream).
            stack.sandbox.set_faults(fail_429_rate=0.0, fail_500_rate=0.0)
            throttles.stop()
            _settle(stack)
            print(f"settled after {time.monotonic() - started:.1f}s")
        print(f"injected throttles: {dict(throttles.injected)}; stream: {vars(stack.stream.stats)}")
        _assert_invariants(stack, month)
    assert throttles.injected["TransactWriteItems"] >= 1 and stack.stream.stats.batch_item_failures >= 1


MEMBERS = [f"M{number:02d}" for number in range(4)]
OPENED_FIRST = {"F0": ["F0-A", "F0-B"], "F1": ["F1-A"]}  # F1-B is opened during the month


def _all_refs(api_refs: dict[str, list[str]]) -> dict[str, str]:
    refs = dict.fromkeys(MEMBERS, "customer")
    for family in api_refs:
        refs[family] = "customer"
        refs.update(dict.fromkeys(OPENED_FIRST[family], "account"))
    return refs


def _open_the_books(api: httpx.Client, rng: random.Random) -> dict[str, list[str]]:
    for ref in MEMBERS:
        call(api.put, f"/customers/{ref}", json={"currency": "ZAR", "name": f"Member {ref}"})
        _charges(api, rng, "customer", ref)
    families = {f"F{number}": [f"F{number}-A", f"F{number}-B"] for number in range(2)}
    for family in families:
        call(api.put, f"/customers/{family}", json={"currency": "ZAR", "balance_model": "accounts"})
        for account in OPENED_FIRST[family]:  # F0: two new accounts of a new customer in one push run
            call(api.put, f"/accounts/{account}", json={"customer_ref": family, "currency": "ZAR"})
            _charges(api, rng, "account", account)
    return families


def _charges(api: httpx.Client, rng: random.Random, kind: str, ref: str, count: int | None = None) -> None:
    for _ in range(count if count is not None else rng.randint(1, 3)):
        charge_id = f"C{rng.randrange(10**9)}"
        call(
            api.post, f"/{kind}s/{ref}/charges", json={"id": charge_id, "amount": rng.randint(1_000, 60_000)}
        )


def _wait_until_on_moment(
    moment: httpx.Client, month: Month, expected: dict[str, str], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        state = moment.get("/_sandbox/state").json()
        for kind in ("customer", "account"):
            for item in state[f"{kind}s"]:
                month.on_moment[item["external_reference"]] = kind
        if set(expected) <= set(month.on_moment):
            return
        assert time.monotonic() < deadline, f"never created on Moment: {set(expected) - set(month.on_moment)}"
        time.sleep(0.2)


def _play_the_month(
    api: httpx.Client,
    moment: httpx.Client,
    rng: random.Random,
    month: Month,
    families: dict[str, list[str]],
) -> None:
    for family, accounts in families.items():  # a family opens another account, while all else goes on
        for account in accounts[len(OPENED_FIRST[family]) :]:
            call(api.put, f"/accounts/{account}", json={"customer_ref": family, "currency": "ZAR"})
            _charges(api, rng, "account", account)
    paid: list[dict[str, Any]] = []
    for step in range(22):
        state = moment.get("/_sandbox/state").json()
        payable = [
            (kind, item["external_reference"])
            for kind in ("customer", "account")
            for item in state[f"{kind}s"]
            if item["balance"] is not None
        ]
        roll = rng.random()
        if roll < 0.6 or not paid:
            kind, ref = rng.choice(payable)
            amount = rng.randint(100, 30_000)
            order = {kind: ref, "amount": amount, "duplicates": rng.choice([0, 0, 1, 2])}
            response = moment.post("/_sandbox/payments", json=order)
            response.raise_for_status()
            payment = response.json()
            paid.append(payment)
            month.payments[payment["application_id"]] = (kind, ref, amount)
            month.webhooks_of[payment["application_id"]].append(payment["webhook_id"])
            month.sent_bodies[payment["webhook_id"]] = json.dumps(payment["event"]).encode()
        elif roll < 0.72:  # Moment sends a payment again under a new message id
            payment = rng.choice(paid)
            webhook_id = f"msg_again_{step}"
            body = json.dumps(payment["event"]).encode()
            assert send_signed(api, webhook_id, body) == 200
            month.webhooks_of[payment["application_id"]].append(webhook_id)
            month.sent_bodies[webhook_id] = body
        elif roll < 0.84:
            kind, ref = rng.choice(payable)
            _charges(api, rng, kind, ref, count=1)
        elif roll < 0.9:  # someone Moment knows and the merchant never opened
            response = moment.post(
                "/_sandbox/payments", json={"unknown_customer_id": f"bcus_stranger{step}", "amount": 500}
            )
            response.raise_for_status()
            payment = response.json()
            month.unknown_payments.add(payment["application_id"])
            month.webhooks_of[payment["application_id"]].append(payment["webhook_id"])
            month.sent_bodies[payment["webhook_id"]] = json.dumps(payment["event"]).encode()
        elif roll < 0.95:
            webhook_id, body = f"msg_forged_{step}", json.dumps(rng.choice(paid)["event"]).encode()
            assert send_signed(api, webhook_id, body, FORGER_WEBHOOK_SECRET) == 401
            month.forged.add(webhook_id)
        else:
            webhook_id = f"msg_other_{step}"
            body = json.dumps({"id": f"evt_other_{step}", "type": "bill.updated", "data": {}}).encode()
            assert send_signed(api, webhook_id, body) == 200
            month.ignored.add(webhook_id)
            month.sent_bodies[webhook_id] = body
        time.sleep(rng.random() * 0.05)  # let the pushes, the deliveries and the stream interleave


def _settle(stack: RunningStack) -> None:
    """Quiet: every delivery made and the stream drained; then the re-drive and the pusher run, as their
    schedules would, until neither has anything left to do."""
    assert stack.wait_until_quiet(30), "the sandbox or the stream never went quiet"
    stack.scheduler.stop()  # from here the test runs the schedules itself, so nothing moves while it looks
    for _ in range(10):
        redrive = stack.redrive_now(grace_seconds=0)
        assert not redrive.failed, redrive.error
        assert stack.wait_until_quiet(10)
        push = stack.push_now()
        assert not push.failed, push.error
        assert stack.wait_until_quiet(10)
        if not push.response["results"] and set(redrive.response["outcomes"]) <= {"parked:unmatched"}:
            return
    raise AssertionError("the re-drive and the pusher never ran out of work")


def _scan(stack: RunningStack, table: str) -> list[dict[str, Any]]:
    from moment_sync.adapters.dynamo_items import from_item

    client = stack.client("dynamodb")
    items: list[dict[str, Any]] = []
    for page in client.get_paginator("scan").paginate(TableName=stack.names[table], ConsistentRead=True):
        items.extend(from_item(item) for item in page["Items"])
    return items


def _assert_invariants(stack: RunningStack, month: Month) -> None:  # noqa: C901, PLR0912 -- five invariants, in order
    events = {item["webhook_id"]: item for item in _scan(stack, "WebhookEventsTable")}
    ledger = _scan(stack, "LedgerTable")
    state = stack.sandbox.state()

    # 1. Every valid webhook is stored, once, verbatim; every delivery was acknowledged; forged ones
    #    changed nothing.
    assert all(delivery["outcome"] == "delivered" for delivery in state["deliveries"]), state["deliveries"]
    assert set(events) == set(month.sent_bodies)
    for webhook_id, body in month.sent_bodies.items():
        assert bytes(events[webhook_id]["body"]) == body, webhook_id
    assert not month.forged & set(events)

    # 2. Each Moment application changed one balance, once.
    entries_by_application: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for item in ledger:
        if item["sk"].startswith("ENTRY#payment:"):
            entries_by_application[item["sk"].removeprefix("ENTRY#payment:")].append(
                (item["pk"], item["amount"])
            )
    for application_id, (kind, ref, amount) in month.payments.items():
        assert entries_by_application[application_id] == [(f"{kind.upper()}#{ref}", -amount)], application_id
    assert set(entries_by_application) == set(month.payments)

    # 3. balance = the sum of its entries.
    sums: Counter[str] = Counter()
    heads = {item["pk"]: item for item in ledger if item["sk"] == "HEAD"}
    for item in ledger:
        if item["sk"].startswith("ENTRY#"):
            sums[item["pk"]] += item["amount"]
    for pk, head in heads.items():
        if "balance" in head:
            assert head["balance"] == sums[pk], pk

    # 4. Once quiet, Moment's balance is the ledger's, for every balance (all pushed, none pending).
    at_moment = {
        (kind, item["external_reference"]): item["balance"]
        for kind in ("customer", "account")
        for item in state[f"{kind}s"]
    }
    for pk, head in heads.items():
        if "balance" not in head:
            continue
        kind = head["kind"]
        assert "push_shard" not in head, f"{pk} still pending: {head}"
        assert at_moment.get((kind, head["ref"])) == head["balance"], (
            f"{pk}: Moment {at_moment.get((kind, head['ref']))}"
        )

    # 5. Every event is final: one application applied, its other webhooks duplicates, strangers parked.
    for event in events.values():
        assert event["status"] in FINAL, event
        if event["status"] == "parked":
            assert event.get("reason"), event
    for application_id, webhook_ids in month.webhooks_of.items():
        statuses = sorted(events[webhook_id]["status"] for webhook_id in webhook_ids)
        if application_id in month.unknown_payments:
            assert {events[w].get("reason") for w in webhook_ids} == {"unmatched"}
        else:
            assert statuses == ["applied"] + ["duplicate"] * (len(webhook_ids) - 1), (
                application_id,
                statuses,
            )
    for webhook_id in month.ignored:
        assert events[webhook_id]["status"] == "ignored"


# --- the pusher's races, one at a time ---------------------------------------------------------------


def test_two_new_accounts_of_a_new_customer_are_created_in_one_push() -> None:
    settings = quick_settings(sandbox=replace(quick_settings().sandbox, faults=Faults(latency_ms=20)))
    with running_stack(settings) as stack, httpx.Client(base_url=stack.api_url, trust_env=False) as api:
        call(api.put, "/customers/F9", json={"currency": "ZAR", "balance_model": "accounts"})
        for ref in ("F9-A", "F9-B"):
            call(api.put, f"/accounts/{ref}", json={"customer_ref": "F9", "currency": "ZAR"})
            call(api.post, f"/accounts/{ref}/charges", json={"id": "C1", "amount": 1000})
        report = stack.push_now().response
        assert report["results"] == {"created": 2}, report


def test_a_payment_moment_applies_during_a_push_is_restored_by_the_next_push() -> None:
    with (
        running_stack(quick_settings()) as stack,
        httpx.Client(base_url=stack.api_url, trust_env=False) as api,
    ):
        call(api.put, "/customers/UCR5", json={"currency": "ZAR"})
        call(api.post, "/customers/UCR5/charges", json={"id": "C1", "amount": 10_000})
        assert stack.push_now().response["results"] == {"created": 1}
        call(api.post, "/customers/UCR5/charges", json={"id": "C2", "amount": 5_000})
        # Moment applies a payment after the pusher read its balance, just before the PATCH lands.
        store = stack.sandbox.moment.store
        patch = store.update_customer
        paid: list[dict[str, Any]] = []

        def payment_first(key: str, fields: dict[str, Any]) -> dict[str, Any]:
            if not paid:
                paid.append(stack.sandbox.pay(customer="UCR5", amount=2_000))
            return patch(key, fields)

        store.update_customer = payment_first  # type: ignore[method-assign]
        assert stack.push_now().response["results"] == {"pushed": 1}
        store.update_customer = patch  # type: ignore[method-assign]
        stack.sandbox.pay(customer="UCR5", amount=3_000)  # and another one, after the push
        assert stack.wait_until_quiet(10)  # both webhooks are reconciled after that push
        for _ in range(3):
            stack.push_now()
        ledger = api.get("/customers/UCR5").json()["balance"]
        assert ledger == 10_000
        assert stack.sandbox.state()["customers"][0]["balance"] == ledger


def test_an_object_adopted_after_a_failed_booking_keeps_the_payments_moment_applied() -> None:
    with (
        running_stack(quick_settings()) as stack,
        httpx.Client(base_url=stack.api_url, trust_env=False) as api,
    ):
        from moment_sync import runtime

        call(api.put, "/customers/UCR6", json={"currency": "ZAR"})
        call(api.post, "/customers/UCR6/charges", json={"id": "C1", "amount": 10_000})
        failed: list[str] = []

        def fail_the_first_link(params: dict[str, Any], **_: Any) -> None:
            put = params["TransactItems"][0].get("Put", {}).get("Item", {})
            if not failed and put.get("pk", {}).get("S", "").startswith("MOMENT#"):
                failed.append(put["pk"]["S"])
                raise ClientError(
                    {"Error": {"Code": "ProvisionedThroughputExceededException"}}, "TransactWriteItems"
                )

        runtime.aws_client("dynamodb").meta.events.register(
            "before-parameter-build.dynamodb.TransactWriteItems", fail_the_first_link
        )
        assert stack.push_now().response["results"] == {"failed": 1}  # created on Moment, not booked
        stack.sandbox.pay(customer="UCR6", amount=3_000)  # Moment applies a payment before the next run
        assert stack.wait_until_quiet(10)
        stack.push_now()  # adopts UCR6 and pushes
        stack.sandbox.pay(customer="UCR6", amount=2_000)
        assert stack.wait_until_quiet(10)
        stack.redrive_now(grace_seconds=0)  # whatever was parked unmatched meanwhile
        for _ in range(3):
            stack.push_now()
        ledger = api.get("/customers/UCR6").json()["balance"]
        assert ledger == 5_000
        assert stack.sandbox.state()["customers"][0]["balance"] == ledger


# --- the stream event source, scripted --------------------------------------------------------------


class ScriptedReader:
    stream_arn = "arn:aws:dynamodb:af-south-1:123456789012:table/WebhookEvents/stream/2026-01-01T00:00:00.000"

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self._records = records

    def new_records_by_shard(self, limit: int = 1000) -> list[tuple[str, list[dict[str, Any]]]]:
        records, self._records = self._records, []
        return [("shardId-1", records)]


def stream_record(sequence: int, event_name: str = "INSERT", age_seconds: float = 0) -> dict[str, Any]:
    return {
        "eventName": event_name,
        "dynamodb": {
            "SequenceNumber": str(1000 + sequence),
            "ApproximateCreationDateTime": time.time() - age_seconds,
            "NewImage": {"webhook_id": {"S": f"msg_{sequence}"}},
        },
    }


class ScriptedFunction:
    """Answers each invocation from a script: "ok", "error", "garbled", or the records to report failed."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.batches: list[list[int]] = []

    def __call__(self, event: dict[str, Any]) -> Invocation:
        records = event["Records"]
        self.batches.append([int(r["dynamodb"]["SequenceNumber"]) - 1000 for r in records])
        answer = self.script.pop(0) if self.script else "ok"
        if answer == "error":
            return Invocation("Reconciler", error="TimeoutError: Task timed out")
        if answer == "ok":
            return Invocation("Reconciler", response={"batchItemFailures": []})
        if answer == "garbled":
            return Invocation("Reconciler", response={"batchItemFailures": [{"itemIdentifier": ""}]})
        failures = [
            {"itemIdentifier": record["dynamodb"]["SequenceNumber"]}
            for record in records
            if int(record["dynamodb"]["SequenceNumber"]) - 1000 in answer
        ]
        return Invocation("Reconciler", response={"batchItemFailures": failures})


def run_source(
    records: list[dict[str, Any]], script: list[Any], **mapping: Any
) -> tuple[ScriptedFunction, list[dict[str, Any]], StreamEventSource]:
    settings = MappingSettings(
        "ReconcilerFunction",
        **{
            "batch_size": 100,
            "bisect_on_function_error": True,
            "maximum_retry_attempts": 3,
            "report_batch_item_failures": True,
            "filters": ({"eventName": ["INSERT"]},),
            "on_failure_destination": "arn:aws:sqs:af-south-1:123456789012:ReconcilerFailureQueue",
            **mapping,
        },
    )
    function = ScriptedFunction(script)
    sent: list[dict[str, Any]] = []
    source = StreamEventSource(
        settings,
        ScriptedReader(records),  # type: ignore[arg-type]
        function,
        sent.append,
        function_arn="arn:aws:lambda:af-south-1:123456789012:function:ReconcilerFunction",
        retry_delay_seconds=0,
    )
    source._flush_until = 10**9  # no batching window in a scripted run
    source.poll_once()
    return function, sent, source


def test_only_records_that_pass_the_filter_are_sent_in_batches_of_the_batch_size() -> None:
    records = [stream_record(n, "MODIFY" if n % 3 == 0 else "INSERT") for n in range(1, 10)]
    function, sent, source = run_source(records, [], batch_size=4)
    assert function.batches == [[1, 2, 4, 5], [7, 8]]
    assert source.stats.records_filtered_out == 3 and not sent


def test_a_partial_failure_is_retried_from_the_lowest_failed_record() -> None:
    function, sent, _ = run_source([stream_record(n) for n in range(1, 6)], [[4, 2], "ok"])
    assert function.batches == [[1, 2, 3, 4, 5], [2, 3, 4, 5]]
    assert not sent


def test_a_function_error_bisects_the_batch_and_retries_each_half() -> None:
    function, sent, source = run_source(
        [stream_record(n) for n in range(1, 5)], ["error", "error", "ok", "ok"]
    )
    assert function.batches == [[1, 2, 3, 4], [1, 2], [1], [2], [3, 4]]
    assert source.stats.bisections == 2 and not sent


def test_an_unusable_failure_report_fails_the_whole_batch() -> None:
    function, _, _ = run_source(
        [stream_record(n) for n in range(1, 3)], ["garbled", "ok", "ok"], bisect_on_function_error=False
    )
    assert function.batches == [[1, 2], [1, 2]]


def test_when_the_retries_are_spent_the_batch_metadata_goes_to_the_failure_destination() -> None:
    function, sent, _ = run_source([stream_record(n) for n in range(1, 4)], [[2]] * 10)
    assert function.batches == [[1, 2, 3], [2, 3], [2, 3], [2, 3]]  # the first try and three retries
    [message] = sent
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["approximateInvokeCount"] == 4
    info = message["DDBStreamBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == ("1002", "1003", 2)
    assert info["streamArn"] == ScriptedReader.stream_arn and info["shardId"] == "shardId-1"


def test_records_older_than_the_maximum_age_go_to_the_failure_destination_unsent() -> None:
    records = [stream_record(1, age_seconds=120), stream_record(2)]
    function, sent, _ = run_source(records, [], maximum_record_age_seconds=60)
    assert function.batches == [[2]]
    assert [message["requestContext"]["condition"] for message in sent] == ["RecordAgeExceeded"]


def test_a_record_that_keeps_failing_ends_in_the_failure_queue_and_the_redrive_applies_it() -> None:
    settings = quick_settings(parameter_overrides={"ReconcilerMaximumRetryAttempts": "2"})
    with (
        running_stack(settings) as stack,
        httpx.Client(base_url=stack.api_url, trust_env=False) as api,
        httpx.Client(base_url=stack.sandbox_url, trust_env=False) as moment,
    ):
        from moment_sync import runtime

        call(api.put, "/customers/UCR7", json={"currency": "ZAR"})
        call(api.post, "/customers/UCR7/charges", json={"id": "C1", "amount": 5000})
        assert stack.push_now().response["results"] == {"created": 1}
        blocked = {"on": True}

        def throttle_payments(model: Any, params: dict[str, Any], **_: Any) -> None:
            if blocked["on"] and _is_payment(params):
                reasons = [{"Code": "ThrottlingError"}, {"Code": "None"}, {"Code": "None"}]
                raise ClientError(
                    {"Error": {"Code": "TransactionCanceledException"}, "CancellationReasons": reasons},
                    "TransactWriteItems",
                )

        runtime.aws_client("dynamodb").meta.events.register(
            "before-parameter-build.dynamodb.TransactWriteItems", throttle_payments
        )
        paid = moment.post("/_sandbox/payments", json={"customer": "UCR7", "amount": 1500}).json()
        assert stack.wait_until_quiet(20)
        [message] = stack.failure_queue_messages()
        assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
        assert message["requestContext"]["approximateInvokeCount"] == 3
        assert message["DDBStreamBatchInfo"]["batchSize"] == 1
        assert stack.stream.stats.records_filtered_out == 0  # nothing was reconciled, so nothing MODIFYed
        assert api.get(f"/events/{paid['webhook_id']}").json()["status"] == "received"

        blocked["on"] = False
        report = stack.redrive_now(grace_seconds=0).response
        assert report["outcomes"] == {"applied": 1}
        assert api.get(f"/events/{paid['webhook_id']}").json()["status"] == "applied"
        assert api.get("/customers/UCR7").json()["balance"] == 3500


# --- events/ and env.json -------------------------------------------------------------------------


def load_event(path: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / path).read_text())
    return event


def test_every_events_file_drives_its_handler() -> None:
    import webhook_receiver_handler
    from local_stack.lambda_context import LocalLambdaContext
    from moment_sync import runtime
    from moment_sync.adapters.ledger_table import LedgerTable
    from moment_sync.ledger.model import BalanceKind, BalanceRef

    with running_stack(quick_settings()) as stack:
        stack.stream.stop()  # the stream batch in events/ is what this test sends the reconciler
        functions = stack.functions
        # The ledger API request creates UCR1001; with a charge, the scheduled push creates it on Moment.
        answer = functions.invoke("LedgerApiFunction", load_event("ledger_api/put-customer.json"))
        assert answer.response["statusCode"] == 201, answer
        call(httpx.post, f"{stack.api_url}/customers/UCR1001/charges", json={"id": "C1", "amount": 5000})
        pushed = functions.invoke("BalancePusherFunction", load_event("balance_pusher/scheduled.json"))
        assert pushed.response["results"] == {"created": 1}, pushed
        assert stack.sandbox.state()["customers"][0]["external_reference"] == "UCR1001"

        # The sample webhook pays the customer Moment calls bcus_H4jp…: the ledger's UCR2000.
        webhook = load_event("webhook_receiver/moment-webhook.json")
        moment_id = json.loads(webhook["body"])["data"]["customer_id"]
        call(httpx.put, f"{stack.api_url}/customers/UCR2000", json={"currency": "ZAR"})
        ledger = LedgerTable(stack.client("dynamodb"), stack.names["LedgerTable"])
        ledger.link_moment_id(BalanceRef(BalanceKind.CUSTOMER, "UCR2000"), moment_id)

        # The signed webhook, at the time it was signed (make sign-webhook-event signs it afresh).
        with functions.environment_of("WebhookReceiverFunction"):
            signed_at = int(webhook["headers"]["webhook-timestamp"])
            dependencies = replace(runtime.receiver_dependencies(), clock=lambda: signed_at + 2)
            received = webhook_receiver_handler.lambda_handler(
                webhook, LocalLambdaContext("WebhookReceiverFunction"), dependencies
            )
        assert json.loads(received["body"])["status"] == "accepted"

        # The stream record that storing it made, as Lambda sends it.
        batch = load_event("reconciler/stream-batch.json")
        image = batch["Records"][0]["dynamodb"]["NewImage"]
        assert image["webhook_id"]["S"] == webhook["headers"]["webhook-id"]
        assert base64.b64decode(image["body"]["B"]) == webhook["body"].encode()
        reconciled = functions.invoke("ReconcilerFunction", batch)
        assert reconciled.response == {"batchItemFailures": []}, reconciled
        view = httpx.get(f"{stack.api_url}/customers/UCR2000", trust_env=False).json()
        assert view["balance"] == -2000 and view["entries"][0]["kind"] == "payment"

        redriven = functions.invoke("RedriveFunction", load_event("redrive/scheduled.json"))
        assert redriven.response["examined"] == 0, redriven
        for logical_id in set(scheduled_functions()) - {"BalancePusherFunction", "RedriveFunction"}:
            if functions.has(logical_id):  # any other scheduled function takes its file too
                event = load_event(f"{function_folder(logical_id)}/scheduled.json")
                invocation = functions.invoke(logical_id, event)
                assert not invocation.failed, invocation


def test_env_json_is_what_make_local_gives_each_function() -> None:
    env_json = json.loads((EVENTS / "env.json").read_text())
    assert env_json == env_file(), "run: python -m local_stack.sample_events"
    settings = quick_settings()
    with running_stack(settings) as stack:
        for logical_id, given in stack.functions.environments.items():
            variables, expected = dict(given), dict(env_json[logical_id])
            assert expected.pop("AWS_ENDPOINT_URL") == "http://host.docker.internal:5000"
            if "MOMENT_BASE_URL" in expected:  # make local's sandbox port, and this stack's
                assert expected.pop("MOMENT_BASE_URL") == "http://127.0.0.1:4010"
                assert variables.pop("MOMENT_BASE_URL") == stack.sandbox_url
            assert set(variables) == set(expected), logical_id
            for name, value in expected.items():
                if name.endswith("_SECRET_ARN"):  # env.json names the secret; the stack passes its ARN
                    assert f":secret:{value}-" in variables[name], name
                else:
                    assert variables[name] == value, (logical_id, name)


# --- make local -------------------------------------------------------------------------------------


def test_python_m_local_stack_says_where_it_is_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "shared"), str(ROOT / "local")]),
        "LOCAL_API_PORT": "0",
        "LOCAL_SANDBOX_PORT": "0",
        "LOCAL_AWS_PORT": "0",
        "LOCAL_FUNCTION_LOG": str(tmp_path / "functions.jsonl"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "local_stack"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    lines = list(_lines_until(process, "Ready.", timeout=30))
    api = next(line.removeprefix("API: ") for line in lines if line.startswith("API: "))
    assert api.startswith("http://127.0.0.1:")
    assert any(line.startswith("Moment sandbox: http://127.0.0.1:") for line in lines), lines
    status = httpx.get(f"{api}/_local/status", trust_env=False).json()
    assert status["schedules"]["BalancePusherFunction"]["interval_seconds"] == 5.0
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    assert out.rstrip().endswith("stopped")


def _lines_until(process: subprocess.Popen[str], marker: str, timeout: float) -> Iterator[str]:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"python -m local_stack exited with {process.wait()}")
        yield line.rstrip("\n")
        if line.startswith(marker):
            return
    process.kill()
    raise AssertionError("python -m local_stack never said it was ready")
