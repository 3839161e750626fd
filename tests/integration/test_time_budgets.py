"""Every loop that calls Moment stops while its worst single call still fits in the run, whatever Moment
does, and the next run continues where it stopped. Time is an injected clock that Moment's answers
(and the client's pauses) move forward; each run's Lambda context counts down on that clock from the
template's timeout, as Lambda's would."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

import balance_pusher_handler
import daily_reconcile_handler
import redrive_handler
from integration.test_balance_pusher import InFlight, charge
from local_stack.made_up_values import LOCAL_MOMENT_API_KEY
from local_stack.template import resource_properties
from moment_sandbox import MomentSandbox, SandboxSettings
from moment_sync.ledger.model import BalanceKind, BalanceRef
from moment_sync.moment_client import MomentClient, NewCustomer, RetryPolicy, worst_call_seconds
from moment_sync.moment_errors import MomentOutOfTime
from moment_sync.pusher import SECONDS_RESERVED_PER_PUSH, BalancePusher
from moment_sync.reconcile_report import DailyCheck
from moment_sync.runtime import LedgerDependencies
from support.ledger import LedgerHarness, payment
from support.webhooks import NOW

# The tests' client: 2 tries, no pauses, the default timeouts: its worst call is 2 x (3 + 10) = 26 s.
TWO_TRIES = RetryPolicy(max_attempts=2, base_delay_seconds=0, max_delay_seconds=0)
ATTEMPT_SECONDS = 13.0


@dataclass
class ClockedContext:
    """A Lambda context whose remaining time runs on the test's clock."""

    clock: list[float]
    timeout_seconds: float
    function_name: str = "function"
    aws_request_id: str = "request"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:af-south-1:123456789012:function:function"
    started_at: float = field(init=False)

    def __post_init__(self) -> None:
        self.started_at = self.clock[0]

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (self.clock[0] - self.started_at)) * 1000))

    def ended_in_time(self) -> bool:
        return self.clock[0] - self.started_at <= self.timeout_seconds


def timeout_of(function: str) -> float:
    return float(resource_properties(function)["Timeout"])


@pytest.fixture
def clock() -> list[float]:
    return [float(NOW)]


@pytest.fixture
def harness(dynamodb: Any, clock: list[float]) -> LedgerHarness:
    return LedgerHarness(dynamodb, clock=lambda: clock[0])


@pytest.fixture
def sandbox() -> Iterator[MomentSandbox]:
    with MomentSandbox(SandboxSettings(webhook_url=None)) as running:
        yield running


@pytest.fixture
def transport() -> InFlight:
    return InFlight()


@pytest.fixture
def moment(sandbox: MomentSandbox, transport: InFlight, clock: list[float]) -> Iterator[MomentClient]:
    def sleep(seconds: float) -> None:
        clock[0] += seconds

    client = MomentClient(
        LOCAL_MOMENT_API_KEY,
        environment="dev",
        base_url=sandbox.url,
        transport=transport,
        retry=TWO_TRIES,
        sleep=sleep,
        clock=lambda: clock[0],
    )
    yield client
    client.close()


# --- the worst single call, derived ----------------------------------------------------------------------


def test_the_worst_call_is_derived_from_the_clients_timeouts_tries_and_pauses() -> None:
    # 4 tries of 3 s connect + 10 s read, and 3 pauses of at most 8 s (a Retry-After is capped there too)
    assert worst_call_seconds() == 4 * (3 + 10) + 3 * 8 == 76
    slower = RetryPolicy(max_attempts=3, base_delay_seconds=1, max_delay_seconds=5)
    assert worst_call_seconds(read_timeout_seconds=20, retry=slower) == 3 * 23 + 2 * 5
    client = MomentClient(LOCAL_MOMENT_API_KEY, environment="dev", retry=TWO_TRIES)
    assert client.worst_call_seconds == 26
    client.close()
    # A push is a GET and a PATCH, then its booking: the pusher keeps that much in reserve
    assert SECONDS_RESERVED_PER_PUSH == 2 * 76 + 5


def test_a_client_bounded_by_a_runs_time_stops_before_the_time_is_up(clock: list[float]) -> None:
    def times_out(request: httpx.Request) -> httpx.Response:
        clock[0] += ATTEMPT_SECONDS  # Moment never answers: connect, then read to its timeout
        raise httpx.ReadTimeout("timed out", request=request)

    client = MomentClient(
        LOCAL_MOMENT_API_KEY,
        environment="dev",
        base_url="http://127.0.0.1:9",
        transport=httpx.MockTransport(times_out),
        sleep=lambda seconds: clock.__setitem__(0, clock[0] + seconds),
        jitter=lambda: 0.5,
        clock=lambda: clock[0],
    )
    deadline = clock[0] + 40
    bounded = client.within(lambda: deadline - clock[0])
    with pytest.raises(MomentOutOfTime) as raised:
        bounded.get_customer("bcus_slow")
    # two attempts and their pauses fitted; the third would have passed the deadline, so was not sent
    assert raised.value.attempts == 3 and raised.value.may_have_reached
    assert clock[0] <= deadline
    client.close()


# --- the pusher ----------------------------------------------------------------------------------------


def test_a_push_run_stops_before_its_timeout_when_moment_is_slow_and_the_next_run_continues(
    harness: LedgerHarness, moment: MomentClient, transport: InFlight, clock: list[float]
) -> None:
    customers = [harness.open_customer(f"UCR{number:02}") for number in range(12)]
    for number, customer in enumerate(customers):
        charge(harness, customer, f"inv-{number}", 100)
    answered: set[str] = set()

    def slow_moment(request: httpx.Request) -> httpx.Response | None:
        # Every request's first try times out (13 s); its retry is answered just inside the timeout.
        clock[0] += ATTEMPT_SECONDS
        key = f"{request.method} {request.url.path} {request.content!r}"
        if key not in answered:
            answered.add(key)
            raise httpx.ReadTimeout("timed out", request=request)
        return None

    transport.before_send = slow_moment
    pusher = BalancePusher(ledger=harness.ledger, moment=moment, now=harness.clock, concurrency=1)
    created: list[int] = []
    for _ in range(3):
        context = ClockedContext(clock, timeout_of("BalancePusherFunction"))
        report = balance_pusher_handler.lambda_handler({}, context, pusher)  # type: ignore[arg-type]
        # THEN no run is still inside a Moment call when its timeout comes
        assert context.ended_in_time(), f"the run took {clock[0] - context.started_at} s"
        created.append(report["results"].get("created", 0))
        if not report["not_reached"]:
            break
        clock[0] += 300  # the next scheduled run
    # AND each run left the rest to the next, which continued with them: every balance once
    assert created[0] < 12 and sum(created) == 12, created
    assert all("push_shard" not in harness.head(customer) for customer in customers)


# --- the re-drive --------------------------------------------------------------------------------------


class SlowDirectory:
    """Moment's record of a Moment id, answering after `seconds` on the test's clock."""

    def __init__(self, clock: list[float], seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds
        self.asked: list[str] = []

    def external_reference(self, kind: BalanceKind, moment_id: str) -> str | None:
        self.clock[0] += self.seconds
        self.asked.append(moment_id)
        return "UCR" + moment_id.removeprefix("bcus_")

    def account_owner(self, account_id: str) -> tuple[str, str | None]:
        raise AssertionError("no accounts here")


def test_a_redrive_run_asks_moment_only_while_the_worst_case_fits_and_the_next_run_continues(
    harness: LedgerHarness, clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    for number in range(15):
        harness.open_customer(f"UCR{number:02}")
        harness.receive(f"msg_{number:02}", payment(f"ob_{number:02}", 100, customer_id=f"bcus_{number:02}"))
    assert harness.invoke(harness.next_batch()) == []  # all parked unmatched
    clock[0] += 3600
    # Moment answers each lookup in 26 s: slow, but within one call's worst case at the defaults (76 s)
    directory = SlowDirectory(clock, 26)
    monkeypatch.setattr(redrive_handler, "moment_directory", lambda: directory)
    dependencies = LedgerDependencies(events=harness.events, ledger=harness.ledger, clock=harness.clock)
    examined: list[int] = []
    for _ in range(10):
        context = ClockedContext(clock, timeout_of("RedriveFunction"))
        report = redrive_handler.lambda_handler({"ignore_backoff": True}, context, dependencies)  # type: ignore[arg-type]
        assert context.ended_in_time(), f"the run took {clock[0] - context.started_at} s"
        examined.append(report["examined"])
        if not report["stopped_early"]:
            break
        clock[0] += 300
    assert examined[0] < 15 and sum(examined) == 15, examined
    assert sorted(directory.asked) == sorted(f"bcus_{number:02}" for number in range(15))  # each once
    assert all(harness.event(f"msg_{number:02}")["status"] == "applied" for number in range(15))


# --- the daily check -----------------------------------------------------------------------------------


def test_the_daily_check_stops_before_its_timeout_and_the_next_run_continues_the_pass(
    harness: LedgerHarness,
    moment: MomentClient,
    transport: InFlight,
    clock: list[float],
    capsys: pytest.CaptureFixture[str],
) -> None:
    refs = [f"UCR{number:02}" for number in range(10)]
    for ref in refs:
        created = moment.create_customer(NewCustomer(ref, balance=0, currency="ZAR"))
        harness.open_customer(ref, moment_id=created.id)

    def slow_moment(request: httpx.Request) -> None:
        clock[0] += 5.0  # Moment answers each GET in 5 s

    transport.before_send = slow_moment
    check = DailyCheck(
        harness.ledger,
        moment,
        now=harness.clock,
        sleep=lambda seconds: clock.__setitem__(0, clock[0] + seconds),
    )
    checked: list[str] = []
    results: list[dict[str, Any]] = []
    timeout = 60.0  # a short run, so that ten balances do not fit in one (the template's is 900 s)
    before = len(transport.requests)
    for _ in range(4):
        context = ClockedContext(clock, timeout)
        result = daily_reconcile_handler.lambda_handler({}, context, check)  # type: ignore[arg-type]
        assert context.ended_in_time(), f"the run took {clock[0] - context.started_at} s"
        results.append(result)
        clock[0] += 900
    checked = [request.rsplit("/", 1)[1] for request in transport.requests[before:]]
    # THEN the first run stopped early, the second continued the pass and completed it
    assert [(r["stopped_early"], r["pass_completed"]) for r in results[:2]] == [(True, False), (False, True)]
    assert results[0]["checked"] + results[1]["checked"] == 10
    assert len(checked) == len(set(checked)) == 10  # every linked balance once
    # AND the next runs that day have nothing due, but still report (the not-running alarm's heartbeat)
    assert [(r["checked"], r["not_due"]) for r in results[2:]] == [(0, True), (0, True)]
    blobs = [line for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert sum('"ReconcileChecked"' in blob for blob in blobs) == 4
    assert sum('"ReconcilePassCompleted"' in blob for blob in blobs) == 1
    # AND a day after the pass started, the next run starts a new one
    clock[0] = NOW + 86400 + 1
    again = daily_reconcile_handler.lambda_handler({}, ClockedContext(clock, timeout), check)  # type: ignore[arg-type]
    assert again["pass_started"] and again["checked"] > 0
    assert BalanceRef(BalanceKind.CUSTOMER, refs[0])  # the refs are the ledger's own
