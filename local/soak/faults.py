"""Faults the soak injects into the functions, each drawn from its own seeded stream and counted.

- DynamoDB (botocore event hooks on the one client every function uses, `runtime.aws_client`):
  - a throttle *answer* (`before-send` returns DynamoDB's 400 ProvisionedThroughputExceededException
    instead of sending): botocore's own retry policy sees it and retries, as it would on AWS;
  - a throttle that outlasted the SDK's retries (`before-call` raises it): the function's own
    handling is what is tested (503 to the caller, a batch item failure, a push left for later);
  - a transaction conflict (`before-send` answers TransactionCanceledException with a
    TransactionConflict reason), which botocore does not retry.
- The reconciler dies in the middle of a batch: after its k-th transaction commits (the answer is
  lost) or just before it is sent, the invocation fails as a whole, as a timeout or an out-of-memory
  would end it. The event source then retries the batch (bisecting it), so records already applied
  arrive again.
- The pusher is cut off by its time budget: invoked with a context whose remaining time runs out
  after a push or two, so the rest of the pending balances wait for the next run.

Moment's 429s, 500s and timeouts are the sandbox's own faults (`moment_sandbox.faults`).

The functions run in worker processes (local_stack.workers), so the faults are injected there: each
worker makes its own `FunctionFaults` (`in_worker`, a worker plugin, seeded by the soak's seed, the
function and the worker's number), switched on and off with the stack's `state`, and reports what it
injected after each invocation; `InjectedFaults` adds the reports up in the soak's process.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.awsrequest import AWSResponse, HeadersDict
from botocore.exceptions import ClientError

from local_stack.lambda_context import LocalLambdaContext

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass(frozen=True)
class FaultRates:
    throttle_answered: float = 0.02  # of DynamoDB requests: answered throttled, retried by botocore
    throttle_surfaced: float = 0.004  # of DynamoDB requests: throttled past the SDK's retries
    transaction_conflict: float = 0.03  # of TransactWriteItems: cancelled by a conflicting transaction
    reconciler_crash: float = 0.15  # of reconciler invocations with two records or more
    pusher_cut_off: float = 0.3  # of pusher runs
    moment_429: float = 0.03  # of Moment API requests (the sandbox's)
    moment_500: float = 0.02
    moment_timeout: float = 0.01
    every_kind_at_least_once: bool = False  # the DynamoDB, reconciler and pusher faults (not Moment's)


THROTTLE_SURFACED = "dynamodb throttle past the SDK's retries"
THROTTLE_ANSWERED = "dynamodb throttle retried by the SDK"
TRANSACTION_CONFLICT = "dynamodb transaction conflict"
RECONCILER_CRASH = "reconciler died mid-batch"
PUSHER_CUT_OFF = "pusher cut off by its time budget"
KINDS = (THROTTLE_ANSWERED, THROTTLE_SURFACED, TRANSACTION_CONFLICT, RECONCILER_CRASH, PUSHER_CUT_OFF)


class InjectedCrash(BaseException):
    """The execution environment dying: no `except Exception` in the function may catch it."""


class FunctionFaults:
    """Every fault injected into the functions, from `start()` until `stop()` (the quiet phase)."""

    def __init__(self, seed: int | str, rates: FaultRates) -> None:
        self.rates = rates
        self.injected: Counter[str] = Counter()
        self._random = random.Random(f"soak-faults:{seed}")  # noqa: S311 -- reproducible test faults
        self._lock = threading.Lock()
        self._on = False
        self._crash_after: int | None = None  # transactions left before the armed crash
        self._crash_before_send = False

    def start(self) -> None:
        with self._lock:
            self._on = True

    def stop(self) -> None:
        with self._lock:
            self._on = False

    def _draw(self, rate: float, kind: str) -> bool:
        """Whether to inject a fault of `kind` now; the first chance always does if
        `every_kind_at_least_once` (a short run could otherwise miss a kind by chance)."""
        with self._lock:
            if not self._on:
                return False
            first = self.rates.every_kind_at_least_once and not self.injected[kind]
            return self._random.random() < rate or first

    def _count(self, kind: str) -> None:
        with self._lock:
            self.injected[kind] += 1

    # --- DynamoDB ------------------------------------------------------------------------------------

    def attach_to_dynamodb(self, client: Any) -> None:
        events = client.meta.events
        events.register("before-call.dynamodb", self._surface_a_throttle)
        events.register("before-send.dynamodb", self._answer_with_a_fault)
        events.register("before-send.dynamodb.TransactWriteItems", self._crash_before_the_transaction)
        events.register("after-call.dynamodb.TransactWriteItems", self._crash_after_the_transaction)

    def _surface_a_throttle(self, model: Any, **_: Any) -> None:
        if self._draw(self.rates.throttle_surfaced, THROTTLE_SURFACED):
            self._count(THROTTLE_SURFACED)
            transact = model.name.startswith("Transact")
            code = "ThrottlingException" if transact else "ProvisionedThroughputExceededException"
            raise ClientError({"Error": {"Code": code, "Message": "injected throttle"}}, model.name)

    def _answer_with_a_fault(self, request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        operation = event_name.rsplit(".", 1)[-1]
        if operation == "TransactWriteItems" and self._draw(
            self.rates.transaction_conflict, TRANSACTION_CONFLICT
        ):
            self._count(TRANSACTION_CONFLICT)
            count = len(json.loads(request.body or b"{}").get("TransactItems", [])) or 1
            conflicted = self._random_index(count)
            reasons = [{"Code": "TransactionConflict" if i == conflicted else "None"} for i in range(count)]
            return _dynamodb_error(
                request,
                "TransactionCanceledException",
                "Transaction cancelled, please refer cancellation reasons for specific reasons",
                CancellationReasons=reasons,
            )
        if self._draw(self.rates.throttle_answered, THROTTLE_ANSWERED):
            self._count(THROTTLE_ANSWERED)
            return _dynamodb_error(
                request,
                "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded.",
            )
        return None

    def _random_index(self, count: int) -> int:
        with self._lock:
            return self._random.randrange(count)

    # --- the reconciler dies mid-batch ------------------------------------------------------------------

    def crashing_reconciler(self, handler: Handler) -> Handler:
        def invoke(event: dict[str, Any], context: Any) -> Any:
            records = len(event.get("Records", []))
            if records >= 2 and self._draw(self.rates.reconciler_crash, RECONCILER_CRASH):
                with self._lock:
                    self._crash_after = self._random.randrange(1, records)
                    self._crash_before_send = self._random.random() < 0.5
            try:
                return handler(event, context)
            except InjectedCrash as crash:
                self._count(RECONCILER_CRASH)
                raise RuntimeError(f"injected: the execution environment died ({crash})") from None
            finally:
                with self._lock:
                    self._crash_after = None

        return invoke

    def _crash_before_the_transaction(self, **_: Any) -> None:
        self._maybe_crash(before_send=True)

    def _crash_after_the_transaction(self, http_response: Any, **_: Any) -> None:
        if http_response is not None and http_response.status_code == 200:
            self._maybe_crash(before_send=False)

    def _maybe_crash(self, before_send: bool) -> None:
        with self._lock:
            if self._crash_after is None or self._crash_before_send != before_send:
                return
            self._crash_after -= 1
            if self._crash_after > 0:
                return
            self._crash_after = None
        where = "before its next transaction was sent" if before_send else "after a transaction committed"
        raise InjectedCrash(where)

    # --- the pusher runs out of time ----------------------------------------------------------------

    def budget_cut_pusher(self, handler: Handler, function_name: str) -> Handler:
        def invoke(event: dict[str, Any], context: Any) -> Any:
            if not self._draw(self.rates.pusher_cut_off, PUSHER_CUT_OFF):
                return handler(event, context)
            from moment_sync.moment_client import worst_call_seconds  # noqa: PLC0415 -- the functions' import
            from moment_sync.pusher import BOOKING_SECONDS, CALLS_PER_PUSH  # noqa: PLC0415
            from soak.run import MOMENT_READ_TIMEOUT_SECONDS  # noqa: PLC0415 -- run imports this module

            # What the pusher keeps in reserve with the soak's read timeout (pusher.seconds_per_push).
            worst = worst_call_seconds(read_timeout_seconds=float(MOMENT_READ_TIMEOUT_SECONDS))
            reserve = CALLS_PER_PUSH * worst + BOOKING_SECONDS
            with self._lock:
                spare = self._random.uniform(0.02, 0.6)
            # Left with a little more than the pusher keeps in reserve: it starts a push or two, then stops.
            short = LocalLambdaContext(function_name, timeout_seconds=reserve + spare)
            report = handler(event, short)
            if isinstance(report, dict) and report.get("not_reached"):
                self._count(PUSHER_CUT_OFF)
            return report

        return invoke


STATE_KEY = "soak_faults_on"  # in the local stack's `functions.state`: whether the faults are on
REPORT_KEY = "soak_faults_injected"


class _InWorker:
    """The faults inside one worker process of one function (a local_stack.workers plugin)."""

    def __init__(self, logical_id: str, faults: FunctionFaults) -> None:
        self.logical_id = logical_id
        self.faults = faults
        self._reported: Counter[str] = Counter()

    def wrap(self, handler: Handler) -> Handler:
        from moment_sync import runtime  # noqa: PLC0415 -- the worker's own, as its handler uses it

        self.faults.attach_to_dynamodb(runtime.aws_client("dynamodb"))  # the client every function uses
        if self.logical_id == "ReconcilerFunction":
            return self.faults.crashing_reconciler(handler)
        if self.logical_id == "BalancePusherFunction":
            return self.faults.budget_cut_pusher(handler, self.logical_id)
        return handler

    def before(self, state: dict[str, Any]) -> None:
        if state.get(STATE_KEY):
            self.faults.start()
        else:
            self.faults.stop()

    def after(self) -> dict[str, Any]:
        with self.faults._lock:
            injected = Counter(self.faults.injected)
        new, self._reported = injected - self._reported, injected
        return {REPORT_KEY: dict(new)}


def in_worker(logical_id: str, number: int, seed: int, rates: FaultRates) -> _InWorker:
    """The worker plugin's factory: its own stream of draws per function and worker."""
    return _InWorker(logical_id, FunctionFaults(f"{seed}:{logical_id}:{number}", rates))


class InjectedFaults:
    """In the soak's process: the workers' reports added up, and the switch they read."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.injected: Counter[str] = Counter()
        self._state = state
        self._lock = threading.Lock()

    def receive(self, _logical_id: str, report: dict[str, Any]) -> None:
        with self._lock:
            self.injected.update(report.get(REPORT_KEY, {}))

    def start(self) -> None:
        self._state[STATE_KEY] = True

    def stop(self) -> None:
        self._state[STATE_KEY] = False


def _dynamodb_error(request: Any, code: str, message: str, **extra: Any) -> AWSResponse:
    body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message, **extra})
    headers = HeadersDict({"content-type": "application/x-amz-json-1.0", "x-amzn-requestid": "soak-fault"})
    return AWSResponse(request.url, 400, headers, _Body(body.encode()))


class _Body:
    """What AWSResponse reads a body from (urllib3's response, otherwise)."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    def stream(self, **_: Any) -> Any:
        yield self._content
