"""The local stack's moto methods (`local_stack.moto_speedups`) against moto's own.

- TransactWriteItems: the same transactions, in the same order, on the same table, leave the same
  items, the same stream records and the same answers (success, or the error code, message and
  cancellation reasons);
- Table.all_items: the same items in the same order, for string and number keys, with and without a
  sort key."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends

from local_stack import moto_speedups

TABLE = "Things"
ACCOUNT, REGION = "123456789012", "af-south-1"


def run(
    transactions: list[list[dict[str, Any]]], ours: bool, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """What the transactions come to, under moto's method or ours."""
    method = moto_speedups.transact_write_items if ours else moto_speedups.MOTO_TRANSACT_WRITE_ITEMS
    with monkeypatch.context() as patch, mock_aws():
        patch.setattr(DynamoDBBackend, "transact_write_items", method)
        client = boto3.client("dynamodb", region_name=REGION)
        client.create_table(
            TableName=TABLE,
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        client.put_item(
            TableName=TABLE, Item={"pk": {"S": "k0"}, "sk": {"S": "a"}, "n": {"N": "1"}, "s": {"S": "x"}}
        )
        answers = [answer(client, transaction) for transaction in transactions]
        items = sorted(
            client.scan(TableName=TABLE)["Items"], key=lambda item: (item["pk"]["S"], item["sk"]["S"])
        )
        table = dynamodb_backends[ACCOUNT][REGION].tables[TABLE]
        stream = [
            (
                record["eventName"],
                record["dynamodb"].get("Keys"),
                record["dynamodb"].get("OldImage"),
                record["dynamodb"].get("NewImage"),
            )
            for record in (item.to_json() for item in table.stream_shard.items)
        ]
    return {"answers": answers, "items": items, "stream": stream}


def answer(client: Any, transaction: list[dict[str, Any]]) -> Any:
    try:
        client.transact_write_items(TransactItems=transaction)
    except ClientError as error:
        return (error.response["Error"], error.response.get("CancellationReasons"))
    return "ok"


def put(key: str, sk: str = "a", condition: str | None = None, n: int = 5) -> dict[str, Any]:
    action: dict[str, Any] = {
        "TableName": TABLE,
        "Item": {"pk": {"S": key}, "sk": {"S": sk}, "n": {"N": str(n)}},
    }
    if condition:
        action["ConditionExpression"] = condition
        action["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    return {"Put": action}


def update(
    key: str, expression: str, sk: str = "a", condition: str | None = None, **values: Any
) -> dict[str, Any]:
    action: dict[str, Any] = {
        "TableName": TABLE,
        "Key": {"pk": {"S": key}, "sk": {"S": sk}},
        "UpdateExpression": expression,
    }
    if values:
        action["ExpressionAttributeValues"] = values
    if condition:
        action["ConditionExpression"] = condition
    return {"Update": action}


def delete(key: str, sk: str = "a", condition: str | None = None, **values: Any) -> dict[str, Any]:
    action: dict[str, Any] = {"TableName": TABLE, "Key": {"pk": {"S": key}, "sk": {"S": sk}}}
    if condition:
        action["ConditionExpression"] = condition
    if values:
        action["ExpressionAttributeValues"] = values
    return {"Delete": action}


def check(key: str, condition: str, sk: str = "a") -> dict[str, Any]:
    return {
        "ConditionCheck": {
            "TableName": TABLE,
            "Key": {"pk": {"S": key}, "sk": {"S": sk}},
            "ConditionExpression": condition,
        }
    }


ONE = {":one": {"N": "1"}}
CASES = {
    "a put and an update": [
        [put("k1", condition="attribute_not_exists(pk)"), update("k0", "ADD n :one", **ONE)]
    ],
    "a condition fails: nothing written": [[put("k1"), put("k0", condition="attribute_not_exists(pk)")]],
    "a condition check fails": [[update("k0", "ADD n :one", **ONE), check("k2", "attribute_exists(pk)")]],
    "the same item twice": [[put("k1"), update("k1", "ADD n :one", **ONE)]],
    "an update that cannot apply, after a write": [
        [put("k1"), update("k0", "SET n = missing + :one", **ONE)]
    ],
    "a type mismatch, after a write": [[put("k1"), update("k0", "ADD s :one", **ONE)]],
    "an unknown table": [
        [put("k1"), {"Put": {"TableName": "Nope", "Item": {"pk": {"S": "k"}, "sk": {"S": "a"}}}}]
    ],
    "a delete with a condition": [
        [delete("k0", condition="n = :one", **ONE)],
        [delete("k0", condition="n = :one", **ONE)],
    ],
    "an update that creates the item": [
        [update("k3", "SET n = :one", **ONE)],
        [update("k3", "ADD n :one", **ONE)],
    ],
}


@pytest.mark.parametrize("transactions", list(CASES.values()), ids=list(CASES))
def test_each_case_comes_to_what_moto_makes_of_it(
    transactions: list[list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = run(transactions, ours=False, monkeypatch=monkeypatch)
    assert run(transactions, ours=True, monkeypatch=monkeypatch) == theirs


KEYS = st.sampled_from(["k0", "k1", "k2"])
SKS = st.sampled_from(["a", "b"])
PUT_CONDITIONS = st.sampled_from([None, "attribute_not_exists(pk)", "attribute_exists(pk)"])
ACTIONS = st.one_of(
    st.builds(put, KEYS, SKS, PUT_CONDITIONS, st.integers(0, 3)),
    st.builds(
        lambda k, sk, e: update(k, e, sk, **ONE),
        KEYS,
        SKS,
        st.sampled_from(["ADD n :one", "SET n = n + :one", "SET s = :one", "REMOVE s"]),
    ),
    st.builds(lambda k, sk: update(k, "ADD n :one", sk, "n = :one", **ONE), KEYS, SKS),
    st.builds(lambda k, sk: delete(k, sk, "attribute_exists(pk)"), KEYS, SKS),
    st.builds(
        lambda k, sk: {
            "ConditionCheck": {
                "TableName": TABLE,
                "Key": {"pk": {"S": k}, "sk": {"S": sk}},
                "ConditionExpression": "n > :one",
                "ExpressionAttributeValues": ONE,
            }
        },
        KEYS,
        SKS,
    ),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(transactions=st.lists(st.lists(ACTIONS, min_size=1, max_size=4), min_size=1, max_size=5))
@pytest.mark.long_running
def test_any_transactions_come_to_what_moto_makes_of_them(
    transactions: list[list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(transactions, ours=True, monkeypatch=monkeypatch) == run(
        transactions, ours=False, monkeypatch=monkeypatch
    )


def test_a_transaction_costs_the_same_however_big_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a timing: ours never copies a table (moto's does, on every transaction)."""
    import copy

    copied: list[type] = []
    deepcopy = copy.deepcopy

    def watching(value: Any, *args: Any) -> Any:
        copied.append(type(value))
        return deepcopy(value, *args)

    monkeypatch.setattr(moto_speedups.copy, "deepcopy", watching)
    transactions = [
        [put("k1"), update("k0", "ADD n :one", **ONE)],
        [put("k1", condition="attribute_not_exists(pk)")],
    ]
    run(transactions, ours=False, monkeypatch=monkeypatch)
    assert "Table" in {kind.__name__ for kind in copied}  # the watch works: moto's own copies tables
    copied.clear()
    run(transactions, ours=True, monkeypatch=monkeypatch)
    assert copied and "Table" not in {kind.__name__ for kind in copied}


@settings(max_examples=60, deadline=None)
@given(
    key_type=st.sampled_from(["S", "N"]),
    keys=st.lists(st.tuples(st.integers(0, 30), st.integers(-50, 50)), max_size=40, unique=True),
    range_key=st.booleans(),
)
def test_all_items_comes_in_moto_s_order(key_type: str, keys: list[tuple[int, int]], range_key: bool) -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType, Item
    from moto.dynamodb.models.table import Table

    table = Table.__new__(Table)  # only what all_items reads: the items and whether there is a sort key
    table.range_key_attr = "sk" if range_key else None
    table.items = {}  # type: ignore[assignment]

    def value(number: int) -> DynamoType:
        return DynamoType({key_type: str(number) if key_type == "N" else f"v{number:+04d}"})

    for hash_number, range_number in keys:
        hash_value, range_value = value(hash_number), value(range_number)
        if range_key:
            table.items.setdefault(hash_value, {})[range_value] = Item(hash_value, range_value, {})  # type: ignore[attr-defined]
        else:
            table.items[hash_value] = Item(hash_value, None, {})  # type: ignore[assignment]
    expected = moto_speedups.MOTO_ALL_ITEMS(table)
    assert [id(item) for item in moto_speedups.all_items(table)] == [id(item) for item in expected]
