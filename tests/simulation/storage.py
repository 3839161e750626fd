"""The simulation's DynamoDB: moto in-process, with DynamoDB's documented limits enforced by the
tests' shared hook (`support/dynamodb_limits.py`, installed on every client: a breach is refused
with DynamoDB's `ValidationException` and recorded), and these hooks on the functions' client: what
storage does under load (a throttle past the SDK's retries, a transaction conflict) and the
function's death between two calls (before a request is sent, or after it committed and before its
answer is read).

Every fault is planned per function invocation by the state machine (`arm`): "the k-th call of this
invocation" is a number hypothesis draws and shrinks, so a failing run names the exact call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"})


class Crash(BaseException):
    """The execution environment dying (a timeout, out of memory): no `except Exception` catches it,
    so it unwinds the whole invocation, as Lambda ending it would."""


@dataclass
class StoragePlan:
    """Faults for one function invocation: at the k-th DynamoDB call (1-based)."""

    crash_at: int | None = None  # odd: before that call is sent; even: after it committed
    # The k-th *write* (where contention is): throttled past the SDK's retries, or a transaction
    # cancelled by a conflicting one.
    throttle_at: int | None = None
    # Or the first write once this says so (a fault placed by what happened before it, e.g. the
    # first write after Moment answered: a push's booking).
    throttle_when: Callable[[], bool] | None = None
    calls: int = 0
    writes: int = 0


@dataclass
class Storage:
    """Hooks on the functions' DynamoDB client (never on the checker's own client)."""

    plan: StoragePlan = field(default_factory=StoragePlan)
    faults_injected: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def attach_dispatch(client: Any, current: Callable[[], Storage | None]) -> None:
        """Hook `client` once; each call goes to whichever Storage is current (none: no hooks)."""

        def forward(method: str) -> Callable[..., None]:
            def hook(**kwargs: Any) -> None:
                storage = current()
                if storage is not None:
                    getattr(storage, method)(**kwargs)

            return hook

        events = client.meta.events
        events.register("before-call.dynamodb", forward("_before_call"))
        events.register("after-call.dynamodb", forward("_after_call"))

    def arm(self, plan: StoragePlan) -> None:
        self.plan = plan

    def disarm(self) -> None:
        self.plan = StoragePlan()

    def _count(self, kind: str) -> None:
        self.faults_injected[kind] = self.faults_injected.get(kind, 0) + 1

    def _before_call(self, model: Any, **_: Any) -> None:
        self.plan.calls += 1
        call = self.plan.calls
        if (
            self.plan.crash_at is not None
            and (self.plan.crash_at + 1) // 2 == call
            and self.plan.crash_at % 2
        ):
            self._count("crash before a DynamoDB call")
            raise Crash(f"before DynamoDB call {call} ({model.name})")
        if model.name in WRITES:
            self.plan.writes += 1
            if self.plan.throttle_at is None and self.plan.throttle_when and self.plan.throttle_when():
                self.plan.throttle_at = self.plan.writes
        if self.plan.throttle_at == self.plan.writes and model.name in WRITES:
            if model.name == "TransactWriteItems":
                self._count("transaction conflict")
                raise ClientError(
                    {
                        "Error": {"Code": "TransactionCanceledException", "Message": "injected conflict"},
                        "CancellationReasons": [{"Code": "TransactionConflict"}],
                    },
                    model.name,
                )
            self._count("throttle past the SDK's retries")
            code = (
                "ThrottlingException"
                if model.name.startswith("Transact")
                else ("ProvisionedThroughputExceededException")
            )
            raise ClientError({"Error": {"Code": code, "Message": "injected throttle"}}, model.name)

    def _after_call(self, model: Any, http_response: Any = None, **_: Any) -> None:
        call = self.plan.calls
        crash_at = self.plan.crash_at
        committed = http_response is not None and getattr(http_response, "status_code", 200) == 200
        if crash_at is not None and crash_at % 2 == 0 and crash_at // 2 == call and committed:
            self._count("crash after a DynamoDB call committed")
            raise Crash(f"after DynamoDB call {call} ({model.name}) committed")
