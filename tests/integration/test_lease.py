"""One run at a time without reserved concurrency: the lease in the Ledger table (moto), and the
scheduled functions' handlers invoked twice at once (the second starting while the first is inside a
Moment call), as Lambda's asynchronous queue or an operator can do."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

import daily_reconcile_handler
import redrive_handler
from integration.test_balance_pusher import InFlight, charge
from local_stack.lambda_context import LocalLambdaContext
from local_stack.template import load_template
from moment_sync.adapters.lease import DynamoLeases
from moment_sync.leases import LEASE_MARGIN_SECONDS
from moment_sync.ledger.model import BalanceKind
from moment_sync.moment_client import MomentClient
from moment_sync.pusher import PUSHER_LEASE, BalancePusher
from moment_sync.reconcile_report import DAILY_CHECK_LEASE, DailyCheck
from moment_sync.redrive import REDRIVE_LEASE
from moment_sync.runtime import LedgerDependencies
from support.ledger import LedgerHarness, payment
from support.pushers import invoke_pusher, timeout_of
from support.webhooks import NOW


def emf_blobs(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{") and '"_aws"' in line]


def counted(output: str) -> list[dict[str, Any]]:
    """Each invocation's blob of counts, in the order they were flushed (the cold start's left out)."""
    return [blob for blob in emf_blobs(output) if "ColdStart" not in blob]


def metric_names(blob: dict[str, Any]) -> set[str]:
    return {metric["Name"] for metric in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]}


# --- the lease itself ----------------------------------------------------------------------------------


def test_a_lease_has_one_holder_until_it_is_released_or_expires(leases: DynamoLeases) -> None:
    first = leases.acquire("pusher", "run-1", now=NOW, expires_at=NOW + 270)
    assert first is not None and first.holder == "run-1"
    # WHEN another run asks while it is held, up to its last second
    assert leases.acquire("pusher", "run-2", now=NOW + 269.9, expires_at=NOW + 539) is None
    # a lease of another name (a shard's) is independent
    assert leases.acquire("pusher#shard-3", "run-2", now=NOW, expires_at=NOW + 270) is not None
    # THEN once released, the next run takes it at once
    assert first.release() is True
    second = leases.acquire("pusher", "run-2", now=NOW + 1, expires_at=NOW + 271)
    assert second is not None
    # AND a lease never released (a run killed by its timeout) is taken over once it expires
    assert leases.acquire("pusher", "run-3", now=NOW + 270, expires_at=NOW + 540) is None
    third = leases.acquire("pusher", "run-3", now=NOW + 271, expires_at=NOW + 541)
    assert third is not None
    assert (leases.current("pusher") or {})["holder"] == "run-3"


def test_a_run_whose_lease_was_taken_over_can_neither_release_it_nor_write_its_state(
    leases: DynamoLeases,
) -> None:
    late = leases.acquire("daily-check", "run-1", now=NOW, expires_at=NOW + 930)
    assert late is not None and late.save({"cursor": "a"})
    now_holder = leases.acquire("daily-check", "run-2", now=NOW + 931, expires_at=NOW + 1861)
    assert now_holder is not None and now_holder.state == {"cursor": "a"}
    assert late.save({"cursor": "stale"}) is False
    assert late.release() is False
    stored = leases.current("daily-check") or {}
    assert (stored["holder"], stored["state"]) == ("run-2", {"cursor": "a"})
    # the state outlives the holder: the next run continues from it
    assert now_holder.save({"cursor": "b"}) and now_holder.release()
    following = leases.acquire("daily-check", "run-3", now=NOW + 932, expires_at=NOW + 1862)
    assert following is not None and following.state == {"cursor": "b"}


def test_the_lease_item_is_in_no_index_and_not_a_balance(
    harness: LedgerHarness, leases: DynamoLeases
) -> None:
    assert leases.acquire("redrive", "run-1", now=NOW, expires_at=NOW + 150) is not None
    assert harness.ledger.pending_pushes(NOW + 10**6) == []
    assert list(harness.ledger.linked_balances()) == []
    [item] = list(harness.ledger.scan_all())
    assert (item["pk"], item["sk"]) == ("LEASE#redrive", "LEASE")


def test_no_scheduled_function_uses_reserved_concurrency() -> None:
    # A new account's concurrency quota of 10 leaves nothing to reserve: the stack would not create.
    for name, resource in load_template()["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            assert "ReservedConcurrentExecutions" not in resource["Properties"], name
    assert "ReservedConcurrentExecutions" not in load_template()["Globals"]["Function"]


# --- the pusher, invoked twice at once -----------------------------------------------------------------


# sandbox, transport, moment, clock, harness, leases: tests/integration/conftest.py (support/pushers.py)
@pytest.fixture
def pusher(harness: LedgerHarness, moment: MomentClient) -> BalancePusher:
    return BalancePusher(ledger=harness.ledger, moment=moment, now=harness.clock, concurrency=1)


def test_a_second_push_run_while_the_first_is_inside_a_moment_call_does_nothing(
    harness: LedgerHarness,
    pusher: BalancePusher,
    transport: InFlight,
    leases: DynamoLeases,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for number in range(3):
        charge(harness, harness.open_customer(f"UCR{number}"), f"inv-{number}", 100)
    second: list[dict[str, Any]] = []
    moment_calls_by_the_second: list[int] = []
    held: list[dict[str, Any]] = []
    once = threading.Lock()

    def second_run_starts(request: httpx.Request) -> None:
        if once.acquire(blocking=False):  # GIVEN the first run is inside its first Moment call
            held.append(leases.current(PUSHER_LEASE) or {})
            before = len(transport.requests)
            second.append(invoke_pusher(pusher))  # WHEN a second invocation runs meanwhile
            moment_calls_by_the_second.append(len(transport.requests) - before)

    transport.before_send = second_run_starts
    capsys.readouterr()
    first = invoke_pusher(pusher)
    # THEN the second did nothing: no Moment call, no balance touched, no heartbeat, a skip counted
    assert second == [{"skipped": "another push run holds the lease"}]
    assert moment_calls_by_the_second == [0]
    skipped_blob, first_blob = counted(capsys.readouterr().out)
    assert "PushRunSkipped" in metric_names(skipped_blob)
    assert "BalancesNotReached" not in metric_names(skipped_blob)  # PusherNotRunning still sees it
    assert "BalancesNotReached" in metric_names(first_blob)
    # AND the first pushed every balance once, then gave the lease back
    assert first["results"] == {"created": 3}
    assert [request.split()[0] for request in transport.requests].count("POST") == 3
    assert "holder" not in (leases.current(PUSHER_LEASE) or {})
    # AND the lease outlived the function's timeout from the moment it was taken
    assert held[0]["expires_at"] >= NOW + timeout_of("BalancePusherFunction") + LEASE_MARGIN_SECONDS - 1


def test_a_push_run_killed_leaves_a_lease_that_expires_and_the_next_run_takes_over(
    harness: LedgerHarness, pusher: BalancePusher, leases: DynamoLeases, clock: list[float]
) -> None:
    charge(harness, harness.open_customer("UCR1"), "inv-1", 100)
    # GIVEN a run that took the lease as the handler does and was then killed (no release)
    timeout = timeout_of("BalancePusherFunction")
    killed = leases.acquire(PUSHER_LEASE, "killed", now=NOW, expires_at=NOW + timeout + LEASE_MARGIN_SECONDS)
    assert killed is not None
    # WHEN the next runs come: one still inside the killed run's lease does nothing
    clock[0] = NOW + timeout
    assert invoke_pusher(pusher) == {"skipped": "another push run holds the lease"}
    # THEN the first after it expired takes it over and pushes
    clock[0] = NOW + timeout + LEASE_MARGIN_SECONDS
    assert invoke_pusher(pusher)["results"] == {"created": 1}


# --- the re-drive, invoked twice at once ---------------------------------------------------------------


class SlowDirectory:
    """Moment's record of an id; while the first run asks, a second re-drive run is invoked."""

    def __init__(self, during_lookup: Any) -> None:
        self.during_lookup = during_lookup
        self.lookups = 0

    def external_reference(self, kind: BalanceKind, moment_id: str) -> str | None:
        self.lookups += 1
        if self.lookups == 1:
            self.during_lookup()
        return "UCR1"

    def account_owner(self, account_id: str) -> tuple[str, str | None]:
        raise AssertionError("no accounts here")


def test_a_second_redrive_run_while_the_first_asks_moment_does_nothing(
    harness: LedgerHarness,
    leases: DynamoLeases,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    clock: list[float],
) -> None:
    harness.open_customer("UCR1")
    harness.receive("msg_1", payment("ob_1", 500, customer_id="bcus_new"))
    assert harness.invoke(harness.next_batch()) == []  # parked unmatched
    clock[0] += 3600
    dependencies = LedgerDependencies(events=harness.events, ledger=harness.ledger, clock=harness.clock)
    context = LocalLambdaContext("redrive", timeout_seconds=timeout_of("RedriveFunction"))
    second: list[dict[str, Any]] = []
    directory = SlowDirectory(
        lambda: second.append(redrive_handler.lambda_handler({}, context, dependencies))
    )
    monkeypatch.setattr(redrive_handler, "moment_directory", lambda: directory)
    capsys.readouterr()
    first = redrive_handler.lambda_handler({}, context, dependencies)
    assert second == [{"skipped": "another re-drive run holds the lease"}]
    assert directory.lookups == 1  # the second asked Moment nothing
    skipped_blob, first_blob = counted(capsys.readouterr().out)
    assert "RedriveRunSkipped" in metric_names(skipped_blob)
    assert "RedriveExamined" not in metric_names(skipped_blob)  # RedriveNotRunning still sees it
    assert "RedriveExamined" in metric_names(first_blob)
    assert first["outcomes"] == {"applied": 1}
    assert harness.ledger.resolve_moment_id("bcus_new") is not None  # linked from Moment's record
    assert "holder" not in (leases.current(REDRIVE_LEASE) or {})


# --- the daily check, invoked twice at once ------------------------------------------------------------


def test_a_second_daily_check_while_the_first_is_inside_a_moment_call_does_nothing(
    harness: LedgerHarness,
    pusher: BalancePusher,
    transport: InFlight,
    leases: DynamoLeases,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for number in range(3):
        charge(harness, harness.open_customer(f"UCR{number}"), f"inv-{number}", 100)
    assert invoke_pusher(pusher)["results"] == {"created": 3}  # linked to Moment
    check = DailyCheck(harness.ledger, pusher.moment, now=harness.clock, sleep=lambda _: None)
    context = LocalLambdaContext("daily", timeout_seconds=timeout_of("DailyReconcileFunction"))
    second: list[dict[str, Any]] = []
    once = threading.Lock()
    before = len(transport.requests)

    def second_run_starts(request: httpx.Request) -> None:
        if once.acquire(blocking=False):
            second.append(daily_reconcile_handler.lambda_handler({}, context, check))

    transport.before_send = second_run_starts
    capsys.readouterr()
    first = daily_reconcile_handler.lambda_handler({}, context, check)
    assert second == [{"skipped": "another run of the daily check holds the lease"}]
    assert len(transport.requests) - before == 3  # the first's three GETs, none by the second
    skipped_blob, first_blob = counted(capsys.readouterr().out)
    assert "ReconcileRunSkipped" in metric_names(skipped_blob)
    assert "ReconcileChecked" not in metric_names(skipped_blob)  # DailyReconcileNotRunning still sees it
    assert "ReconcileChecked" in metric_names(first_blob)
    assert (first["checked"], first["pass_completed"]) == (3, True)
    assert "holder" not in (leases.current(DAILY_CHECK_LEASE) or {})
