"""DynamoDB item sizes and write units, from the Developer Guide's rules (1 KB = 1,024 bytes).

Item size: the UTF-8 bytes of every attribute name plus its value's size: strings by UTF-8 bytes,
binary by raw bytes (not base64), numbers about 1 byte per two significant digits plus 1, BOOL/NULL 1,
lists and maps 3 bytes plus their elements and 1 byte per element.

Write units (WCU on provisioned tables, WRU on on-demand ones like WebhookEvents): a PutItem costs
its item size rounded up to the next KB, at least 1; a PutItem whose condition fails still costs the
size of the item it found (we count the larger of that and the item sent, the conservative reading);
`ReturnValuesOnConditionCheckFailure` consumes no read units. A write that puts an item into a
secondary index (the item has the index's key attributes; sparse indexes skip items without them)
also writes the index: its projected item (table key, index key, projected attributes) rounded up to
the next KB. A failed conditional write changes no index.

Updates (UpdateItem, or an Update inside a transaction) cost the larger of the item's size before
and after, rounded up to the next KB. Their index writes follow the Developer Guide's rules for
secondary indexes: an item entering an index costs one write of its projection; leaving it, one
write (a delete of the old projection); changing an index key, two (delete and put); changing only
projected attributes, one; changing nothing the index holds, none.

Transactions (TransactWriteItems): every item costs 2 write units per KB (a prepare and a commit).
A cancelled transaction is modelled as consuming the same 2 units per KB for every item it named
(the conservative reading; DynamoDB does not document a discount for cancelled transactions) and
writing no index. Index writes caused by a transaction are counted once, at 1 unit per KB: the
Developer Guide doubles the table writes of transactions and says nothing of their index writes,
so this is the lower reading; `TRANSACTION_INDEX_FACTOR` makes the other one a one-line change.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping
from typing import Any

KB = 1024
TRANSACTION_FACTOR = 2
TRANSACTION_INDEX_FACTOR = 1


def _number_size(text: str) -> int:
    digits = text.lstrip("+-").replace(".", "").split("e")[0].split("E")[0]
    significant = digits.strip("0") or "0"
    return math.ceil(len(significant) / 2) + 1


def _binary_size(value: bytes | bytearray | str) -> int:
    # boto3 hands back bytes; a request body as sent holds base64 text.
    return len(base64.b64decode(value)) if isinstance(value, str) else len(value)


def value_size(value: Mapping[str, Any]) -> int:
    [(kind, content)] = value.items()
    size: Callable[[Any], int] = _SIZES[kind]
    return size(content)


_SIZES: dict[str, Callable[[Any], int]] = {
    "S": lambda text: len(text.encode()),
    "N": _number_size,
    "B": _binary_size,
    "BOOL": lambda _: 1,
    "NULL": lambda _: 1,
    "SS": lambda texts: sum(len(text.encode()) for text in texts),
    "NS": lambda numbers: sum(_number_size(number) for number in numbers),
    "BS": lambda blobs: sum(_binary_size(blob) for blob in blobs),
    "L": lambda elements: 3 + sum(value_size(element) + 1 for element in elements),
    "M": lambda members: (
        3 + sum(len(name.encode()) + value_size(value) + 1 for name, value in members.items())
    ),
}


def item_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    """Bytes of an item in DynamoDB's low-level format ({"name": {"S": "..."}})."""
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def write_units(size: int) -> int:
    return max(1, math.ceil(size / KB))


def index_write_units(item: Mapping[str, Mapping[str, Any]], table: Mapping[str, Any]) -> dict[str, int]:
    """Write units a new `item` costs in each secondary index of `table` (DescribeTable's "Table")."""
    table_keys = {key["AttributeName"] for key in table["KeySchema"]}
    units: dict[str, int] = {}
    for index in [*table.get("GlobalSecondaryIndexes", []), *table.get("LocalSecondaryIndexes", [])]:
        index_keys = {key["AttributeName"] for key in index["KeySchema"]}
        if not index_keys <= item.keys():
            continue  # sparse: the item is not in this index
        projection = index.get("Projection", {})
        if projection.get("ProjectionType") == "ALL":
            projected = dict(item)
        else:
            names = table_keys | index_keys | set(projection.get("NonKeyAttributes", []))
            projected = {name: value for name, value in item.items() if name in names}
        units[index["IndexName"]] = write_units(item_size(projected))
    return units


def _projection(
    item: Mapping[str, Mapping[str, Any]], index: Mapping[str, Any], table_keys: set[str]
) -> dict[str, Any] | None:
    """The item as `index` holds it, or None when the item is not in it (sparse)."""
    index_keys = {key["AttributeName"] for key in index["KeySchema"]}
    if not index_keys <= item.keys():
        return None
    projection = index.get("Projection", {})
    if projection.get("ProjectionType") == "ALL":
        return dict(item)
    names = table_keys | index_keys | set(projection.get("NonKeyAttributes", []))
    return {name: value for name, value in item.items() if name in names}


def update_index_write_units(
    before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]], table: Mapping[str, Any]
) -> dict[str, int]:
    """Write units an update from `before` to `after` costs in each secondary index it touches."""
    table_keys = {key["AttributeName"] for key in table["KeySchema"]}
    units: dict[str, int] = {}
    for index in [*table.get("GlobalSecondaryIndexes", []), *table.get("LocalSecondaryIndexes", [])]:
        old, new = _projection(before, index, table_keys), _projection(after, index, table_keys)
        if old == new:
            continue  # not in the index before or after, or nothing it holds changed
        index_keys = {key["AttributeName"] for key in index["KeySchema"]}
        if old is None and new is not None:
            cost = write_units(item_size(new))  # enters the index
        elif new is None and old is not None:
            cost = write_units(item_size(old))  # leaves it
        elif old is not None and new is not None and any(old[k] != new[k] for k in index_keys):
            cost = write_units(item_size(old)) + write_units(item_size(new))  # key changed: delete + put
        else:
            cost = write_units(max(item_size(old or {}), item_size(new or {})))  # projected values only
        units[index["IndexName"]] = cost
    return units


def update_write_units(
    before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]
) -> int:
    """Table write units of an update: the larger of the item before and after, per KB."""
    return write_units(max(item_size(before), item_size(after)))
