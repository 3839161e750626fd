"""Two of moto's DynamoDB methods, made fast enough for a soak of 10,000 webhooks, each doing what
moto's own does.

TransactWriteItems. moto (5.2) backs up each table a transaction names with `copy.deepcopy` (every
item and every stream record) before it starts, and puts the copy back if the transaction is
cancelled. So one transaction costs time in proportion to the whole table, and a cancelled one
swaps the table object. `transact_write_items` below is moto's own, step for step (the same checks
in the same order, the same writes through moto's put/update/delete, the same errors), with an undo
log instead of the copies: before each write it keeps a copy of the one item it is about to change
and, the first time it writes to a table, the length of that table's stream; a cancelled
transaction puts those items back and cuts the streams back. One deliberate difference: moto leaves
the writes before an action that names two operations in place; this undoes them, as DynamoDB
writes nothing.

Table.all_items, which every Query and Scan starts from, sorts the whole table by its keys on each
call, comparing moto's DynamoType objects in Python (0.28 s for 20,000 items here). `all_items`
below sorts on the keys' plain values instead, which is the same order (a table's keys are all of
one type, and DynamoType compares by that value).

`tests/integration/test_moto_speedups.py` runs the same requests through moto's methods and these,
and compares the items, the stream records, the orders and the answers.
"""

from __future__ import annotations

import copy
from typing import Any

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import Item
from moto.dynamodb.models.table import Table

MOTO_TRANSACT_WRITE_ITEMS = DynamoDBBackend.transact_write_items
MOTO_ALL_ITEMS = Table.all_items
Error = tuple[str | None, str | None, Any]
NO_ERROR: Error = (None, None, None)


def install() -> None:
    """Use these methods in every moto DynamoDB backend of this process (idempotent)."""
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    Table.all_items = all_items  # type: ignore[method-assign]


def all_items(self: Table) -> list[Item]:
    if self.range_key_attr:
        items = [item for by_range in self.items.values() for item in by_range.values()]
        return sorted(items, key=lambda item: (item.hash_key.cast_value, item.range_key.cast_value))
    return sorted(self.items.values(), key=lambda item: item.hash_key.cast_value)  # type: ignore[arg-type]


def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    undo = _Undo()
    targets: set[tuple[str, str]] = set()
    errors: list[Error] = []
    try:
        for item in transact_items:
            if len(item) > 1:
                raise TransactWriteSingleOpException
            errors.append(_carry_out(self, item, targets, undo))
    except BaseException:
        undo()
        raise
    if any(code is not None for code, _, _ in errors):
        undo()
        raise TransactionCanceledException(errors)


def _carry_out(
    backend: DynamoDBBackend, item: dict[str, Any], targets: set[tuple[str, str]], undo: _Undo
) -> Error:
    """One action, as moto's loop does it: its cancellation reason, or NO_ERROR once it is written."""
    op_type, op = next(iter(item.items()))
    found: dict[str, Any] | None = None
    try:
        if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
            raise ValueError("Unsupported transaction operation")
        table_name = op["TableName"]
        condition = op.get("ConditionExpression")
        names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
        key = _key(backend, op_type, op)
        target = (str(table_name), str(dict(sorted(key.items()))))
        if target in targets:
            raise MultipleTransactionsException()
        targets.add(target)
        current = backend.get_item(table_name, key)
        if condition is not None and not get_filter_expression(condition, names, values).expr(current):
            if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                found = current.to_json()["Attributes"]
            raise ConditionalCheckFailed(item=found)
        if op_type != "ConditionCheck":
            undo.keep(backend, table_name, key)
            _write(backend, op_type, op, key)
    except (MultipleTransactionsException, MockValidationException):
        raise
    except ConditionalCheckFailed as error:
        return ("ConditionalCheckFailed", str(error.message), found)
    except Exception as error:  # as moto does: any other failure is this action's reason
        return (type(error).__name__, str(error), found)
    return NO_ERROR


def _key(backend: DynamoDBBackend, op_type: str, op: dict[str, Any]) -> dict[str, Any]:
    if op_type != "Put":
        key: dict[str, Any] = op["Key"]
        return key
    table = backend.get_table(op["TableName"])
    key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = op["Item"][table.range_key_attr]
    return key


def _write(backend: DynamoDBBackend, op_type: str, op: dict[str, Any], key: dict[str, Any]) -> None:
    """Through moto's own methods, with the arguments moto's loop gives them."""
    condition = op.get("ConditionExpression")
    names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
    if op_type == "Put":
        backend.put_item(
            op["TableName"],
            op["Item"],
            condition_expression=condition,
            expression_attribute_names=names,
            expression_attribute_values=values,
        )
    elif op_type == "Delete":
        backend.delete_item(
            op["TableName"],
            key,
            condition_expression=condition,
            expression_attribute_names=names,
            expression_attribute_values=values,
        )
    else:
        backend.update_item(
            op["TableName"],
            key,
            update_expression=op["UpdateExpression"],
            condition_expression=condition,
            expression_attribute_names=names,  # type: ignore[arg-type]  # moto's own loop passes None too
            expression_attribute_values=values,  # type: ignore[arg-type]
        )


class _Undo:
    """The items a transaction wrote and its tables' stream lengths, as they were before it wrote."""

    def __init__(self) -> None:
        self._items: list[tuple[Any, Any, Any, Any]] = []
        self._streams: dict[int, tuple[Any, int]] = {}

    def keep(self, backend: DynamoDBBackend, table_name: str, key: dict[str, Any]) -> None:
        table = backend.get_table(table_name)
        hash_value, range_value = backend.get_keys_value(table, key)
        before = copy.deepcopy(table.get_item(hash_value, range_value))
        self._items.append((table, hash_value, range_value, before))
        if table.stream_shard is not None and id(table) not in self._streams:
            self._streams[id(table)] = (table.stream_shard, len(table.stream_shard.items))

    def __call__(self) -> None:
        for table, hash_value, range_value, item in reversed(self._items):
            if range_value is not None:
                if item is None:
                    table.items.get(hash_value, {}).pop(range_value, None)
                else:
                    table.items[hash_value][range_value] = item
            elif item is None:
                table.items.pop(hash_value, None)
            else:
                table.items[hash_value] = item
        for shard, length in self._streams.values():
            del shard.items[length:]
