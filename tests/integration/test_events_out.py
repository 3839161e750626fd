"""Events out (docs/events.md) through the local stack, over real HTTP: the template's pipes read the
tables' streams into the local bus, which keeps them at GET /_local/events and forwards them.

- the demo's month: every emitted event valid against its JSON Schema (schemas/), one per change
  (each entry once, none for a duplicate delivery, each parking once, each sync state change once,
  chained), the pipes' details equal to what `moment_sync.events_out` builds from the stored items
  (what `republish-events` puts again), no personal field, every event forwarded;
- a pipe stopped between the ledger write and publishing (a crash) publishes when it starts again;
- a bus that keeps refusing: the batch is retried, then its positions go to the dead-letter queue.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from local_stack import demo
from local_stack.stack import RunningStack, running_stack
from local_stack.template import ROOT
from moment_sync.adapters.dynamo_items import from_item
from moment_sync.events_out import (
    DETAIL_TYPES,
    PERSONAL_FIELDS,
    bill_entry_event,
    entry_event,
    parking_event,
    sync_transition_event,
)
from moment_sync.ledger.sync import sync_state

SCHEMAS = {
    json.loads(path.read_text())["title"]: json.loads(path.read_text())
    for path in sorted((ROOT / "schemas").glob("*.json"))
}


class Receiver:
    """A merchant's service on loopback, the target of LOCAL_EVENT_TARGETS."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["content-length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def bus_events(stack: RunningStack, **query: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{stack.api_url}/_local/events", params=query, timeout=10)
    response.raise_for_status()
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def wait_for(stack: RunningStack, count: int, timeout: float = 20.0, **query: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = bus_events(stack, **query)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    return bus_events(stack, **query)


def scan(stack: RunningStack, table: str) -> list[dict[str, Any]]:
    client = stack.client("dynamodb")
    items: list[dict[str, Any]] = []
    for page in client.get_paginator("scan").paginate(TableName=stack.names[table]):
        items.extend(from_item(item) for item in page["Items"])
    return items


@pytest.fixture(scope="module")
def month() -> Iterator[tuple[RunningStack, demo.DemoResult, Receiver]]:
    receiver = Receiver()
    saved = dict(os.environ)
    os.environ["LOCAL_EVENT_TARGETS"] = receiver.url
    try:
        with running_stack(demo.demo_settings(applies_payments=True, environ={})) as stack:
            result = demo.play(stack, lambda _line: None, verbose=False)
            assert result.ok, result.problems
            assert stack.events is not None and stack.events.wait_until_idle(20)
            yield stack, result, receiver
    finally:
        os.environ.clear()
        os.environ.update(saved)
        receiver.server.shutdown()


def test_every_emitted_event_is_valid_against_its_json_schema(month: Any) -> None:
    stack, _result, _receiver = month
    events = bus_events(stack)
    assert set(SCHEMAS) == set(DETAIL_TYPES)
    assert {event["detail-type"] for event in events} == set(DETAIL_TYPES) - {
        "Balance Set",
        "Adjustment Made",
    }
    for published in events:
        event = {key: value for key, value in published.items() if key != "published_at"}
        jsonschema.Draft4Validator(SCHEMAS[event["detail-type"]]).validate(event)


def test_each_entry_is_announced_once_and_a_duplicate_delivery_not_at_all(month: Any) -> None:
    stack, result, _receiver = month
    events = bus_events(stack)
    ids = Counter(event["detail"]["event_id"] for event in events)
    assert max(ids.values()) == 1, [event_id for event_id, count in ids.items() if count > 1]
    entries = [item for item in scan(stack, "LedgerTable") if str(item["sk"]).startswith("ENTRY#")]
    by_id = {event["detail"]["event_id"]: event for event in events}
    # The demo's bill member pays a bill at Moment and in cash, and a second bill is voided: each
    # bill entry once, as BillEventsPipe announces it, never as a balance's `Payment Applied`.
    bills = [entry for entry in entries if str(entry["pk"]).startswith("BILL#")]
    assert {entry["kind"] for entry in bills} == {"payment", "outside_payment", "void"}
    for entry in bills:
        announcement = bill_entry_event(entry)
        assert announcement is not None, entry
        announced = by_id[announcement[1]["event_id"]]
        assert (announced["detail-type"], announced["detail"]) == announcement
    for entry in (entry for entry in entries if entry not in bills):
        detail_type, detail = entry_event(entry)
        announced = by_id[detail["event_id"]]
        assert (announced["detail-type"], announced["detail"]) == (detail_type, detail)
    payments = [event["detail"] for event in events if event["detail-type"] == "Payment Applied"]
    on_bills = {entry.get("webhook_id") for entry in bills}
    applied = [
        webhook
        for webhook, status in result.statuses.items()
        if status == "applied" and webhook not in on_bills
    ]
    assert on_bills & set(result.statuses), "the demo pays a bill at Moment"
    assert sorted(detail["webhook_id"] for detail in payments) == sorted(applied)
    duplicates = [webhook for webhook, status in result.statuses.items() if status == "duplicate"]
    assert duplicates and not {detail["webhook_id"] for detail in payments} & set(duplicates)
    bill_paid = [event["detail"] for event in events if event["detail-type"] == "Bill Paid"]
    at_moment = sorted(detail["webhook_id"] for detail in bill_paid if detail["entry_kind"] == "payment")
    assert at_moment == sorted(webhook for webhook in on_bills if webhook)
    assert len([event for event in events if event["detail-type"] == "Bill Voided"]) == 1


def test_each_parking_is_announced_once(month: Any) -> None:
    stack, result, _receiver = month
    parked = [event["detail"] for event in bus_events(stack, **{"detail-type": "Event Parked"})]
    expected = sorted(webhook for webhook, status in result.statuses.items() if status.startswith("parked"))
    assert sorted(detail["webhook_id"] for detail in parked) == expected
    stored = {item["webhook_id"]: item for item in scan(stack, "WebhookEventsTable")}
    for detail in parked:
        assert parking_event(stored[detail["webhook_id"]]) == ("Event Parked", detail)


def test_each_sync_state_change_is_announced_once_in_order(month: Any) -> None:
    stack, _result, _receiver = month
    changes: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for event in bus_events(stack, **{"detail-type": "Sync State Changed"}):
        detail = event["detail"]
        changes[(detail["balance_kind"], detail["balance_ref"])].append(detail)
    heads = {
        (item["kind"], item["ref"]): item
        for item in scan(stack, "LedgerTable")
        if item["sk"] == "HEAD" and "version" in item
    }
    assert set(changes) == set(heads), "every balance and bill was pushed, so each changed state"
    assert "bill" in {kind for kind, _ref in changes}, "a bill's push states are announced too"
    for balance, details in changes.items():
        states = ["synced", *(detail["new_state"] for detail in details)]
        assert [detail["old_state"] for detail in details] == states[:-1], balance
        assert all(old != new for old, new in itertools.pairwise(states)), balance
        prefix = f"{balance[0].upper()}#{balance[1]}|sync|"
        assert [detail["event_id"] for detail in details] == [
            f"{prefix}{n}" for n in range(1, len(details) + 1)
        ]
        head = heads[balance]
        assert states[-1] == head["sync_state"] == sync_state(head), balance
        assert sync_transition_event(head) == ("Sync State Changed", details[-1])


def test_no_event_carries_personal_data(month: Any) -> None:
    stack, _result, _receiver = month
    text = json.dumps(bus_events(stack))
    heads = [item for item in scan(stack, "LedgerTable") if item["sk"] == "HEAD"]
    personal_values = {
        str(head[name]) for head in heads for name in ("name", "email", "phone") if head.get(name)
    }
    assert personal_values, "the month's customers have names"
    for value in personal_values:
        assert value not in text, value
    for event in bus_events(stack):
        assert not PERSONAL_FIELDS & set(event["detail"]), event


def test_the_bus_filters_by_detail_type_and_since_and_forwards_every_event(month: Any) -> None:
    stack, _result, receiver = month
    everything = bus_events(stack)
    payments = bus_events(stack, **{"detail-type": "Payment Applied"})
    assert payments == [event for event in everything if event["detail-type"] == "Payment Applied"]
    middle = everything[len(everything) // 2]
    later = bus_events(stack, since=middle["published_at"])
    assert later == everything[len(everything) // 2 + 1 :]
    refused = httpx.get(f"{stack.api_url}/_local/events", params={"since": "yesterday"}, timeout=10)
    assert refused.status_code == 400
    assert refused.headers["content-type"] == "application/problem+json"
    deadline = time.monotonic() + 10
    while len(receiver.received) < len(everything) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(event["detail"]["event_id"] for event in receiver.received) == sorted(
        event["detail"]["event_id"] for event in everything
    )
    assert all("published_at" not in event for event in receiver.received)


# --- crashes and a refusing bus -----------------------------------------------------------------------


@pytest.fixture
def stack() -> Iterator[RunningStack]:
    from tests.integration.test_local_stack import quick_settings

    with running_stack(quick_settings()) as running:
        assert running.events is not None
        yield running


def _open_customer(stack: RunningStack, ref: str) -> None:
    response = httpx.put(f"{stack.api_url}/customers/{ref}", json={"currency": "ZAR"}, timeout=30)
    assert response.status_code in {200, 201}, response.text


def _charge(stack: RunningStack, ref: str, charge_id: str, amount: int) -> None:
    response = httpx.post(
        f"{stack.api_url}/customers/{ref}/charges", json={"id": charge_id, "amount": amount}, timeout=30
    )
    assert response.status_code in {200, 201}, response.text


def test_a_crash_between_the_ledger_write_and_publishing_still_publishes(stack: RunningStack) -> None:
    assert stack.events is not None
    _open_customer(stack, "UCR9001")
    pipe = stack.events.pipes["LedgerChangeEventsPipe"]
    pipe.stop()  # the poller dies: the ledger write below happens with nothing publishing it
    _charge(stack, "UCR9001", "crash-1", 12300)
    time.sleep(0.5)
    assert not bus_events(stack, **{"detail-type": "Charge Posted"})
    stack.events.restart("LedgerChangeEventsPipe")  # from the checkpoints it had
    [event] = wait_for(stack, 1, **{"detail-type": "Charge Posted"})
    assert event["detail"]["source_id"] == "crash-1" and event["detail"]["amount"] == "12300"
    _charge(stack, "UCR9001", "crash-1", 12300)  # the merchant retries: the same charge, no new event
    _charge(stack, "UCR9001", "crash-2", 100)
    events = wait_for(stack, 2, **{"detail-type": "Charge Posted"})
    assert [event["detail"]["source_id"] for event in events] == ["crash-1", "crash-2"]


def test_a_bus_that_keeps_refusing_sends_the_batch_positions_to_the_dead_letter_queue(
    stack: RunningStack,
) -> None:
    assert stack.events is not None
    _open_customer(stack, "UCR9002")
    stack.events.bus.fail_next(1000)
    _charge(stack, "UCR9002", "refused-1", 500)
    sqs = stack.client("sqs")
    deadline = time.monotonic() + 20
    messages: list[dict[str, Any]] = []
    while not messages and time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=stack.events.dead_letter_queue_url).get("Messages", [])
        time.sleep(0.1)
    stack.events.bus.fail_next(0)
    [message] = messages
    body = json.loads(message["Body"])
    assert body["context"]["pipeName"] == "LedgerChangeEventsPipe"
    assert body["context"]["retryAttempts"] == 10  # the template's MaximumRetryAttempts
    assert body["dynamoDbStreamBatchInfo"]["batchSize"] == 1
    assert "refused-1" not in message["Body"], "positions only, never the data"
    _charge(stack, "UCR9002", "after-1", 600)  # the shard carries on past the batch it gave up
    [event] = wait_for(stack, 1, **{"detail-type": "Charge Posted"})
    assert event["detail"]["source_id"] == "after-1"
    assert Path(ROOT / "schemas").is_dir()


def test_republishing_puts_the_same_events_again_except_an_erased_customers(stack: RunningStack) -> None:
    from moment_sync.cli import main  # imported after the stack set the environment

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
    for ref in ("UCR9101", "UCR9102"):
        response = httpx.put(
            f"{stack.api_url}/customers/{ref}",
            json={"currency": "ZAR", "name": f"Member {ref}", "email": f"{ref.lower()}@example.com"},
            timeout=30,
        )
        assert response.status_code in {200, 201}, response.text
        _charge(stack, ref, f"rp-{ref}", 2500)
    first = wait_for(stack, 2, **{"detail-type": "Charge Posted"})
    assert len(first) == 2
    environment = {
        "LOCAL_AWS_PORT": stack.aws_endpoint.rsplit(":", 1)[1],
        "LOCAL_API_PORT": stack.api_url.rsplit(":", 1)[1],
    }
    saved = dict(os.environ)
    os.environ.update(environment)
    try:
        out, err = io.StringIO(), io.StringIO()
        assert main(["--local", "forget", "UCR9101"], out=out, err=err) == 0, err.getvalue()
        out, err = io.StringIO(), io.StringIO()
        code = main(["--local", "--json", "republish-events", "--since", started], out=out, err=err)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert code == 0, err.getvalue()
    report = json.loads(out.getvalue())
    assert report["found"] == {"Charge Posted": 1}
    assert (report["published"], report["refused"], report["skipped_erased_customers"]) == (1, 0, 1)
    again = wait_for(stack, 3, **{"detail-type": "Charge Posted"})
    assert len(again) == 3
    [republished] = again[2:]
    [original] = [event for event in first if event["detail"]["balance_ref"] == "UCR9102"]
    assert republished["detail"] == original["detail"]  # the same event_id: consumers drop it
    assert republished["id"] != original["id"]


def test_a_bill_announces_each_payment_once_its_void_once_and_each_sync_state_change_once(
    stack: RunningStack,
) -> None:
    """Over real HTTP: a Moment payment delivered twice and a cash payment are one `Bill Paid` each, the
    void one `Bill Voided`, each valid against its schema and equal to what `republish-events` builds;
    never a balance's `Payment Applied`, never the cash payment's description; the bill's push states
    announced once each, chained (docs/events.md#bills)."""

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
    httpx.put(
        f"{stack.api_url}/customers/UCR9201",
        json={"currency": "ZAR", "name": "Member UCR9201", "email": "ucr9201@example.com"},
        timeout=30,
    ).raise_for_status()
    for ref in ("FEE-9201", "FEE-9202"):
        bill = {"customer": "UCR9201", "currency": "ZAR", "amount_due": 90000, "description": "Annual fee"}
        assert httpx.put(f"{stack.api_url}/bills/{ref}", json=bill, timeout=30).status_code == 201
    assert stack.push_now().error is None  # the customer and both bills created at Moment
    paid_at_moment = httpx.post(
        f"{stack.sandbox_url}/_sandbox/payments", json={"bill": "FEE-9201", "amount": 50000, "duplicates": 1}
    )
    assert paid_at_moment.status_code in {200, 201}, paid_at_moment.text
    assert stack.wait_until_quiet(30)
    cash = {"id": "cash-9201", "amount": 40000, "description": "Cash from Thandi at the desk"}
    for _ in range(2):  # the merchant retries: the same payment, no new event
        paid = httpx.post(f"{stack.api_url}/bills/FEE-9201/payments", json=cash, timeout=30)
        assert paid.status_code in {200, 201}, paid.text
    for _ in range(2):
        voided = httpx.post(f"{stack.api_url}/bills/FEE-9202/void", timeout=30)
        assert voided.status_code == 200, voided.text
    assert stack.push_now().error is None  # Moment hears of the cash and the void: synced again
    assert stack.events is not None and stack.events.wait_until_idle(20)
    wait_for(stack, 2, **{"detail-type": "Bill Paid"})
    events = bus_events(stack)
    for published in events:
        event = {key: value for key, value in published.items() if key != "published_at"}
        jsonschema.Draft4Validator(SCHEMAS[event["detail-type"]]).validate(event)
    ids = Counter(event["detail"]["event_id"] for event in events)
    assert max(ids.values()) == 1, ids
    bill_paid = [event["detail"] for event in events if event["detail-type"] == "Bill Paid"]
    assert [
        (detail["entry_kind"], detail["amount"], detail["amount_paid"], detail["status"])
        for detail in bill_paid
    ] == [
        ("payment", "50000", "50000", "unpaid"),
        ("outside_payment", "40000", "90000", "paid"),
    ]
    assert bill_paid[0]["application_id"] and bill_paid[0]["moment_id"].startswith("bill_")
    assert bill_paid[1]["amount_remaining"] == "0" and bill_paid[1]["source_id"] == "cash-9201"
    [void] = [event["detail"] for event in events if event["detail-type"] == "Bill Voided"]
    assert (void["bill_ref"], void["amount"], void["amount_paid"], void["amount_remaining"]) == (
        "FEE-9202",
        "0",
        "0",
        "90000",
    )
    assert not [event for event in events if event["detail-type"] == "Payment Applied"]
    assert "Thandi" not in json.dumps(events) and "Annual fee" not in json.dumps(events)
    items = scan(stack, "LedgerTable")
    # (a bill's SOURCE# items are its outside payments' guards: no announcement of their own)
    bill_entries = [
        item for item in items if str(item["pk"]).startswith("BILL#") and item["sk"].startswith("ENTRY#")
    ]
    for entry in bill_entries:
        announcement = bill_entry_event(entry)
        assert announcement is not None
        [published] = [
            event for event in events if event["detail"]["event_id"] == announcement[1]["event_id"]
        ]
        assert (published["detail-type"], published["detail"]) == announcement
    for ref in ("FEE-9201", "FEE-9202"):
        details = [
            event["detail"]
            for event in events
            if event["detail-type"] == "Sync State Changed" and event["detail"]["balance_ref"] == ref
        ]
        states = ["synced", *(detail["new_state"] for detail in details)]
        assert states == ["synced", "pending", "synced", "pending", "synced"], (ref, states)
        assert [detail["old_state"] for detail in details] == states[:-1]
        assert [detail["event_id"] for detail in details] == [f"BILL#{ref}|sync|{n}" for n in range(1, 5)]
        [head] = [item for item in items if item["pk"] == f"BILL#{ref}" and item["sk"] == "HEAD"]
        assert head["sync_state"] == sync_state(head) == "synced"
    _republished_and_verified(stack, started)


def _republished_and_verified(stack: RunningStack, started: str) -> None:
    """`republish-events` finds the bill's events; the void entry leaves `verify`'s sums as they were."""
    from moment_sync.cli import main  # imported after the stack set the environment

    environment = {
        "LOCAL_AWS_PORT": stack.aws_endpoint.rsplit(":", 1)[1],
        "LOCAL_API_PORT": stack.api_url.rsplit(":", 1)[1],
    }
    saved = dict(os.environ)
    os.environ.update(environment)
    try:
        out, err = io.StringIO(), io.StringIO()
        code = main(
            ["--local", "--json", "republish-events", "--since", started, "--dry-run"], out=out, err=err
        )
        verify_out, verify_err = io.StringIO(), io.StringIO()
        verified = main(["--local", "--json", "verify"], out=verify_out, err=verify_err)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert code == 0, err.getvalue()
    found = json.loads(out.getvalue())["found"]
    assert (found["Bill Paid"], found["Bill Voided"]) == (2, 1)
    # the void entry adds nothing to a bill's payments: amount_paid is still the sum of its payments
    assert verified == 0, verify_out.getvalue() + verify_err.getvalue()
    assert json.loads(verify_out.getvalue())["mismatches"] == {}
