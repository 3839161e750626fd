"""The simulation's DynamoDB: moto in-process, behind botocore hooks that enforce DynamoDB's documented
limits and inject what storage does under load (a throttle past the SDK's retries, a transaction
conflict) and the function's death between two calls (before a request is sent, or after it committed
and before its answer is read).

Every fault is planned per function invocation by the state machine (`arm`): "the k-th call of this
invocation" is a number hypothesis draws and shrinks, so a failing run names the exact call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from botocore.exceptions import ClientError

# DynamoDB's documented limits (Service, account, and table quotas in Amazon DynamoDB).
MAX_EXPRESSION_BYTES = 4096
MAX_OPERATORS_PER_EXPRESSION = 300
MAX_ITEM_BYTES = 400 * 1024
MAX_TRANSACTION_ITEMS = 100
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024
MAX_NUMBER_DIGITS = 38
EXPRESSIONS = (
    "UpdateExpression",
    "ConditionExpression",
    "KeyConditionExpression",
    "FilterExpression",
    "ProjectionExpression",
)
_OPERATORS = re.compile(
    r"<>|<=|>=|=|<|>|\bAND\b|\bOR\b|\bNOT\b|\bIN\b|\bBETWEEN\b|\w+\s*\(|(?<=\s)[+-](?=\s)", re.IGNORECASE
)


class Crash(BaseException):
    """The execution environment dying (a timeout, out of memory): no `except Exception` catches it,
    so it unwinds the whole invocation, as Lambda ending it would."""


@dataclass
class LimitBreach:
    operation: str
    what: str


def limit_breaches(operation: str, params: dict[str, Any]) -> list[LimitBreach]:
    """What in this request DynamoDB would refuse as over its documented limits."""
    found: list[LimitBreach] = []
    actions = [params]
    items = params.get("TransactItems")
    if items is not None:
        if len(items) > MAX_TRANSACTION_ITEMS:
            found.append(LimitBreach(operation, f"{len(items)} transaction items > {MAX_TRANSACTION_ITEMS}"))
        actions = [action for item in items for action in item.values() if isinstance(action, dict)]
        size = sum(_size(action.get("Item", {})) + _size(action.get("Key", {})) for action in actions)
        if size > MAX_TRANSACTION_BYTES:
            found.append(LimitBreach(operation, f"transaction of {size} bytes > {MAX_TRANSACTION_BYTES}"))
    for action in actions:
        found.extend(LimitBreach(operation, what) for what in _action_breaches(action))
    return found


def _action_breaches(action: dict[str, Any]) -> Iterator[str]:
    for name in EXPRESSIONS:
        expression = action.get(name)
        if not isinstance(expression, str):
            continue
        length = len(expression.encode())
        if length > MAX_EXPRESSION_BYTES:
            yield f"{name} of {length} bytes > {MAX_EXPRESSION_BYTES}"
        operators = len(_OPERATORS.findall(expression))
        if operators > MAX_OPERATORS_PER_EXPRESSION:
            yield f"{name} with {operators} operators > {MAX_OPERATORS_PER_EXPRESSION}"
    item = action.get("Item")
    if isinstance(item, dict) and _size(item) > MAX_ITEM_BYTES:
        yield f"item of {_size(item)} bytes > {MAX_ITEM_BYTES}"
    for container in (action.get("Item"), action.get("ExpressionAttributeValues"), action.get("Key")):
        for number in _numbers(container):
            if _digits(number) > MAX_NUMBER_DIGITS:
                yield f"number {number} has more than {MAX_NUMBER_DIGITS} digits"


def _size(value: Any) -> int:
    """DynamoDB's item size, closely enough: names plus values (numbers at about one byte per two digits)."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((kind, inner),) = value.items()
            if kind in {"S", "B"}:
                return len(inner.encode() if isinstance(inner, str) else inner)
            if kind == "N":
                return len(str(inner)) // 2 + 1
            if kind in {"BOOL", "NULL"}:
                return 1
            if kind in {"L", "M", "SS", "NS", "BS"}:
                return 3 + _size(inner)
        return sum(len(str(name)) + _size(inner) for name, inner in value.items())
    if isinstance(value, list):
        return sum(_size(inner) + 1 for inner in value)
    return len(str(value))


def _numbers(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for kind, inner in value.items():
            if kind == "N" and isinstance(inner, str):
                yield inner
            elif kind == "NS" and isinstance(inner, list):
                yield from (str(number) for number in inner)
            else:
                yield from _numbers(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _numbers(inner)


def _digits(number: str) -> int:
    """Significant digits, as DynamoDB counts them (no context: normalize() would round to 28)."""
    try:
        digits = "".join(map(str, Decimal(number).as_tuple().digits)).strip("0")
    except InvalidOperation:
        return 0
    return len(digits)


@dataclass
class StoragePlan:
    """Faults for one function invocation: at the k-th DynamoDB call (1-based)."""

    crash_at: int | None = None  # odd: before that call is sent; even: after it committed
    throttle_at: int | None = None  # a throttle past the SDK's retries, or a transaction conflict
    calls: int = 0


@dataclass
class Storage:
    """Hooks on the functions' DynamoDB client (never on the checker's own client)."""

    on_breach: Callable[[LimitBreach], None]
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
        events.register("before-parameter-build.dynamodb", forward("_check_limits"))
        events.register("before-call.dynamodb", forward("_before_call"))
        events.register("after-call.dynamodb", forward("_after_call"))

    def arm(self, plan: StoragePlan) -> None:
        self.plan = plan

    def disarm(self) -> None:
        self.plan = StoragePlan()

    def _count(self, kind: str) -> None:
        self.faults_injected[kind] = self.faults_injected.get(kind, 0) + 1

    def _check_limits(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        breaches = limit_breaches(model.name, params)
        for breach in breaches:
            self.on_breach(breach)
        if breaches:  # as DynamoDB answers it
            raise ClientError(
                {"Error": {"Code": "ValidationException", "Message": breaches[0].what}}, model.name
            )

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
        if self.plan.throttle_at == call:
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
