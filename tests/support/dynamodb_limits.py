"""DynamoDB's documented limits, enforced on every DynamoDB client the tests create.

moto accepts what DynamoDB refuses: expressions past 4 KB or 300 operators, items past 400 KB,
transactions past 100 items or 4 MB, numbers past 38 significant digits. Code that only ever met
moto could write any of those and never know. This hook makes the test double as strict as the
service (from the DynamoDB developer guide, "Service, account, and table quotas" and "Expressions"):

- before a call: the request is refused the way DynamoDB refuses it (a `ValidationException`
  ClientError), so the code under test sees what it would see on AWS;
- after a write: the item it left is measured (moto in-process or moto's server in this process),
  since an update's result can only be sized once applied.

Every breach is also recorded; the `_dynamodb_limits` fixture in tests/conftest.py fails the test
that made one, so a breach the code swallows (a caught ClientError) still fails a test. A test that
provokes a breach on purpose says so with the `dynamodb_limit_breaches` fixture.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import Any

import botocore.session
from botocore.exceptions import ClientError

EXPRESSION_BYTES = 4 * 1024
EXPRESSION_OPERATORS = 300
SUBSTITUTIONS_BYTES = 2 * 1024 * 1024
ATTRIBUTE_NAME_PLACEHOLDER_BYTES = 255
ITEM_BYTES = 400 * 1024
TRANSACTION_ITEMS = 100
TRANSACTION_BYTES = 4 * 1024 * 1024
BATCH_WRITE_ITEMS = 25
BATCH_GET_KEYS = 100
IN_OPERANDS = 100
NUMBER_DIGITS = 38
NUMBER_MAX_EXPONENT = 125  # 9.99…E+125
NUMBER_MIN_EXPONENT = -130  # 1E-130
PARTITION_KEY_BYTES = 2048
SORT_KEY_BYTES = 1024

_EXPRESSION_PARAMETERS = (
    "KeyConditionExpression",
    "ConditionExpression",
    "FilterExpression",
    "UpdateExpression",
    "ProjectionExpression",
)
_WRITES = {"PutItem", "UpdateItem", "TransactWriteItems", "BatchWriteItem"}


class Breaches:
    """What the tests' DynamoDB calls did that DynamoDB would have refused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: list[str] = []
        self.expected = False
        self.enforcing = True

    def add(self, breach: str) -> None:
        with self._lock:
            self._found.append(breach)

    def take(self) -> list[str]:
        with self._lock:
            found, self._found = self._found, []
        return found


BREACHES = Breaches()


# --- the checks (pure: a request in, the first limit it breaks out) ---------------------------------


def request_breach(operation: str, params: dict[str, Any]) -> str | None:
    """The first documented limit `params` breaks, or None."""
    if operation == "TransactWriteItems":
        return _transaction_breach(params.get("TransactItems", []))
    if operation == "TransactGetItems" and len(params.get("TransactItems", [])) > TRANSACTION_ITEMS:
        return f"a transaction holds {len(params['TransactItems'])} items (at most {TRANSACTION_ITEMS})"
    if operation == "BatchWriteItem":
        writes = sum(len(requests) for requests in params.get("RequestItems", {}).values())
        if writes > BATCH_WRITE_ITEMS:
            return f"a batch write holds {writes} requests (at most {BATCH_WRITE_ITEMS})"
    if operation == "BatchGetItem":
        keys = sum(len(table.get("Keys", [])) for table in params.get("RequestItems", {}).values())
        if keys > BATCH_GET_KEYS:
            return f"a batch get holds {keys} keys (at most {BATCH_GET_KEYS})"
    return _single_request_breach(params)


def _transaction_breach(actions: list[dict[str, Any]]) -> str | None:
    if len(actions) > TRANSACTION_ITEMS:
        return f"a transaction holds {len(actions)} items (at most {TRANSACTION_ITEMS})"
    total = 0
    for action in actions:
        for request in action.values():
            breach = _single_request_breach(request)
            if breach:
                return breach
            total += sum(attribute_value_size(value) for value in request.get("Item", {}).values())
            total += sum(
                attribute_value_size(value) for value in request.get("ExpressionAttributeValues", {}).values()
            )
    if total > TRANSACTION_BYTES:
        return f"a transaction carries {total} bytes (at most {TRANSACTION_BYTES})"
    return None


def _single_request_breach(params: dict[str, Any]) -> str | None:
    checks = (_expressions_breach, _substitutions_breach, _item_and_key_breach, _numbers_breach)
    return next((breach for check in checks if (breach := check(params))), None)


def _expressions_breach(params: dict[str, Any]) -> str | None:
    for name in _EXPRESSION_PARAMETERS:
        expression = params.get(name)
        if expression is None:
            continue
        size = len(expression.encode())
        if size > EXPRESSION_BYTES:
            return f"{name} is {size} bytes (at most {EXPRESSION_BYTES})"
        operators = count_operators(expression, update=name == "UpdateExpression")
        if operators > EXPRESSION_OPERATORS:
            return f"{name} has {operators} operators (at most {EXPRESSION_OPERATORS})"
        for operands in re.findall(r"\bIN\s*\(([^)]*)\)", expression, flags=re.IGNORECASE):
            if operands.count(",") + 1 > IN_OPERANDS:
                return f"{name} has an IN with more than {IN_OPERANDS} operands"
    return None


def _substitutions_breach(params: dict[str, Any]) -> str | None:
    names = params.get("ExpressionAttributeNames", {})
    for placeholder in names:
        if len(placeholder.encode()) > ATTRIBUTE_NAME_PLACEHOLDER_BYTES:
            return f"a placeholder is longer than {ATTRIBUTE_NAME_PLACEHOLDER_BYTES} bytes"
    values = params.get("ExpressionAttributeValues", {})
    size = sum(len(name.encode()) + len(value.encode()) for name, value in names.items())
    size += sum(len(name.encode()) + attribute_value_size(value) for name, value in values.items())
    if size > SUBSTITUTIONS_BYTES:
        return f"the expression substitutions are {size} bytes (at most {SUBSTITUTIONS_BYTES})"
    return None


def _item_and_key_breach(params: dict[str, Any]) -> str | None:
    item = params.get("Item")
    if item is not None and (size := item_size(item)) > ITEM_BYTES:
        return f"an item of {size} bytes (at most {ITEM_BYTES})"
    return next(
        (breach for name, value in (params.get("Key") or {}).items() if (breach := _key_breach(name, value))),
        None,
    )


def _numbers_breach(params: dict[str, Any]) -> str | None:
    values = [
        *(params.get("Item") or {}).values(),
        *(params.get("ExpressionAttributeValues") or {}).values(),
        *(params.get("Key") or {}).values(),
    ]
    return next((breach for value in values if (breach := number_breach(value))), None)


def _key_breach(name: str, value: dict[str, Any]) -> str | None:
    size = attribute_value_size(value)
    # Which key is the sort key is the table's business; the tighter limit is checked on `sk`.
    limit = SORT_KEY_BYTES if name == "sk" else PARTITION_KEY_BYTES
    if size > limit:
        return f"the key attribute {name} is {size} bytes (at most {limit})"
    return None


def count_operators(expression: str, *, update: bool = False) -> int:
    """Operators and functions in an expression, counted as DynamoDB's 300 cap counts them: each
    comparator, logical operator, BETWEEN/IN, function call, arithmetic sign and, in an update
    expression, each action of its clauses."""
    text = re.sub(r"[:#][A-Za-z0-9_]+", "x", expression)  # placeholders hold no operators
    count = len(re.findall(r"<>|<=|>=|=|<|>", text))
    count += len(re.findall(r"\b(?:AND|OR|NOT|BETWEEN|IN)\b", text, flags=re.IGNORECASE))
    count += len(re.findall(r"[A-Za-z_][A-Za-z0-9_]*\s*\(", text))
    count += len(re.findall(r"[+-]", text))
    if update:
        clauses = re.split(r"\b(?:SET|REMOVE|ADD|DELETE)\b", text, flags=re.IGNORECASE)[1:]
        count += sum(_top_level_commas(clause) + 1 for clause in clauses)
    return count


def _top_level_commas(text: str) -> int:
    depth = commas = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            commas += 1
    return commas


def number_breach(value: Any) -> str | None:
    """A number (anywhere inside an attribute value) that DynamoDB cannot store."""
    if not isinstance(value, dict):
        return None
    for kind, inner in value.items():
        if kind == "N":
            breach = _one_number_breach(inner)
        elif kind == "NS":
            breach = next((b for b in map(_one_number_breach, inner) if b), None)
        elif kind == "L":
            breach = next((b for b in map(number_breach, inner) if b), None)
        elif kind == "M":
            breach = next((b for b in map(number_breach, inner.values()) if b), None)
        else:
            breach = None
        if breach:
            return breach
    return None


def _one_number_breach(text: str) -> str | None:
    try:
        number = Decimal(text)
    except InvalidOperation:
        return f"{text[:40]!r} is not a number"
    if not number.is_finite():
        return f"{text[:40]!r} is not a finite number"
    if number == 0:
        return None
    digits = _significant_digits(number)
    if digits > NUMBER_DIGITS:
        return f"a number of {digits} significant digits (at most {NUMBER_DIGITS})"
    if not NUMBER_MIN_EXPONENT <= number.adjusted() <= NUMBER_MAX_EXPONENT:
        return f"a number of magnitude 1E{number.adjusted()} (1E-130 to 9.9…E+125)"
    return None


# --- sizes, as DynamoDB counts them ("Item sizes and formats") ------------------------------------


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + attribute_value_size(value) for name, value in item.items())


def attribute_value_size(value: Any) -> int:
    if not isinstance(value, dict) or len(value) != 1:
        return 0  # not in DynamoDB's wire form: nothing this hook can size
    (kind, inner), *_ = value.items()
    if kind in _SCALAR_SIZES:
        return _SCALAR_SIZES[kind](inner)
    if kind in _SET_SIZES:
        return sum(_SET_SIZES[kind](member) for member in inner)
    if kind == "L":
        return 3 + sum(1 + attribute_value_size(member) for member in inner)
    if kind == "M":
        return 3 + sum(1 + len(name.encode()) + attribute_value_size(v) for name, v in inner.items())
    return 0


def _binary_size(inner: Any) -> int:
    return len(inner) if isinstance(inner, bytes | bytearray) else len(str(inner))


def _significant_digits(number: Decimal) -> int:
    # Not normalize(): it rounds to the context's 28 digits.
    return len(str(int("".join(map(str, number.as_tuple().digits)))).rstrip("0")) or 1


def _number_size(text: str) -> int:
    try:
        digits = _significant_digits(Decimal(text))
    except (InvalidOperation, ValueError):
        digits = len(text)
    return (digits + 1) // 2 + 1


_SCALAR_SIZES: dict[str, Any] = {
    "S": lambda inner: len(inner.encode()),
    "N": _number_size,
    "B": _binary_size,
    "BOOL": lambda _: 1,
    "NULL": lambda _: 1,
}
_SET_SIZES: dict[str, Any] = {
    "SS": lambda member: len(member.encode()),
    "NS": _number_size,
    "BS": _binary_size,
}


# --- the hook --------------------------------------------------------------------------------------


def _refuse(model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    context["dynamodb_limits_params"] = params  # after-call is not given the request's parameters
    if not BREACHES.enforcing:
        return
    breach = request_breach(model.name, params)
    if breach is None:
        return
    BREACHES.add(f"{model.name}: {breach}")
    raise ClientError(
        {"Error": {"Code": "ValidationException", "Message": f"(DynamoDB's limit) {breach}"}},
        model.name,
    )


def _measure_written_items(
    model: Any, context: dict[str, Any], http_response: Any, region: str, **_: Any
) -> None:
    params = context.get("dynamodb_limits_params")
    if model.name not in _WRITES or params is None or http_response.status_code >= 300:
        return
    for table_name, key in _written_keys(model.name, params):
        size = _stored_item_size(region, table_name, key)
        if size is not None and size > ITEM_BYTES:
            BREACHES.add(f"{model.name}: left an item of {size} bytes in {table_name} (at most {ITEM_BYTES})")


def _written_keys(operation: str, params: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    if operation == "UpdateItem":
        yield params["TableName"], params["Key"]
    elif operation == "TransactWriteItems":
        for action in params.get("TransactItems", []):
            request = action.get("Update")
            if request:
                yield request["TableName"], request["Key"]


def _stored_item_size(region: str, table_name: str, key: dict[str, Any]) -> int | None:
    """The item's size in moto's backend (in-process mock or moto's server in this process)."""
    try:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends

        table = dynamodb_backends[DEFAULT_ACCOUNT_ID][region].get_table(table_name)
        hash_key = key.get(table.hash_key_attr)
        range_key = key.get(table.range_key_attr) if table.range_key_attr else None
        item = table.get_item(hash_key and _moto_value(hash_key), range_key and _moto_value(range_key))
    except Exception:  # a table moto does not hold here (another account or region): nothing to measure
        return None
    return None if item is None else item_size(item.to_json()["Attributes"])


def _moto_value(value: dict[str, Any]) -> Any:
    from moto.dynamodb.models.dynamo_type import DynamoType

    return DynamoType(value)


def _register(client: Any) -> None:
    region = client.meta.region_name
    # Last, so that boto3's own parameter transformations (Table resources) have run.
    client.meta.events.register_last("before-parameter-build.dynamodb", _refuse)

    def after_call(model: Any, context: dict[str, Any], **kwargs: Any) -> None:
        _measure_written_items(model, context, region=region, **kwargs)

    client.meta.events.register("after-call.dynamodb", after_call)
    client.__dict__["_dynamodb_limits"] = after_call  # keep the closure alive with the client


_original_create_client = botocore.session.Session.create_client


def _create_client(self: botocore.session.Session, service_name: str, *args: Any, **kwargs: Any) -> Any:
    client = _original_create_client(self, service_name, *args, **kwargs)
    if service_name == "dynamodb":
        _register(client)
    return client


def install() -> None:
    """Every DynamoDB client created from now on, by any session, enforces the limits."""
    botocore.session.Session.create_client = _create_client  # type: ignore[method-assign]


@contextmanager
def breaches_expected() -> Iterator[Breaches]:
    """For a test that breaks a limit on purpose (to prove the hook, or the code's answer to it): the
    breaches made inside are not held against the test."""
    BREACHES.expected = True
    try:
        yield BREACHES
    finally:
        BREACHES.expected = False
        BREACHES.take()


@contextmanager
def not_enforced() -> Iterator[None]:
    """For seeding an item as a more lenient store (moto, an older release's test double) once held it,
    to test how the code reads it back. Never around the code under test."""
    BREACHES.enforcing = False
    try:
        yield
    finally:
        BREACHES.enforcing = True


# --- inside the local stack's worker processes ------------------------------------------------------


class _InWorker:
    """The limits in a local-stack worker (a local_stack.workers plugin): its clients refuse what
    DynamoDB refuses, and its breaches come back to this process's BREACHES after each invocation.
    (An item left too large by an update is not measured there: moto's tables are in this process.)"""

    def wrap(self, handler: Any) -> Any:
        return handler

    def before(self, state: Any) -> None:
        pass

    def after(self) -> dict[str, Any]:
        return {"dynamodb_limit_breaches": BREACHES.take()}


def in_worker(logical_id: str, number: int) -> _InWorker:
    install()  # before the handler is imported, so that every client it makes carries the hook
    return _InWorker()


def receive_from_worker(logical_id: str, report: dict[str, Any]) -> None:
    for breach in report.get("dynamodb_limit_breaches", []):
        BREACHES.add(f"{logical_id}: {breach}")
