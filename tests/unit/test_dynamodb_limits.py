"""The test double's DynamoDB limits (support/dynamodb_limits.py): each documented limit is refused
as DynamoDB refuses it, what stays inside the limits passes, and a breach the code swallows is still
held against the test."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from local_stack.template import create_table
from support import dynamodb_limits
from support.dynamodb_limits import count_operators, item_size, request_breach


@pytest.fixture
def ledger(dynamodb: Any) -> str:
    return create_table(dynamodb, "LedgerTable", "Ledger")


def _key(pk: str = "CUSTOMER#C1") -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": "HEAD"}}


def test_an_expression_past_4_kb_is_refused(dynamodb: Any, ledger: str, dynamodb_limit_breaches: Any) -> None:
    removes = ", ".join(f"payments_list[{index}]" for index in range(250))
    assert len(removes) > 4096
    with pytest.raises(ClientError) as refused:
        dynamodb.update_item(TableName=ledger, Key=_key(), UpdateExpression=f"REMOVE {removes}")
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "UpdateExpression is" in refused.value.response["Error"]["Message"]
    assert dynamodb.get_item(TableName=ledger, Key=_key()).get("Item") is None


def test_more_than_300_operators_are_refused_under_4_kb(dynamodb: Any, ledger: str) -> None:
    expression = "REMOVE " + ", ".join(f"a[{index}]" for index in range(301))
    assert len(expression) < 4096
    assert request_breach("UpdateItem", {"UpdateExpression": expression}) == (
        "UpdateExpression has 301 operators (at most 300)"
    )
    assert request_breach("UpdateItem", {"UpdateExpression": "REMOVE " + ", ".join(["a"] * 300)}) is None


def test_operators_are_counted_as_dynamodb_counts_them() -> None:
    assert count_operators("attribute_not_exists(pk)") == 1
    assert count_operators("attribute_exists(version) AND currency = :currency") == 3
    assert count_operators("SET a = :a, b = if_not_exists(b, :zero) + :one", update=True) == 6
    assert count_operators("ADD balance :delta, version :one REMOVE x", update=True) == 3


def test_a_transaction_of_101_items_is_refused(
    dynamodb: Any, ledger: str, dynamodb_limit_breaches: Any
) -> None:
    puts = [{"Put": {"TableName": ledger, "Item": _key(f"C#{index}")}} for index in range(101)]
    with pytest.raises(ClientError, match="101 items"):
        dynamodb.transact_write_items(TransactItems=puts)
    dynamodb.transact_write_items(TransactItems=puts[:100])  # the limit itself is allowed


@pytest.mark.parametrize(
    ("number", "refused"),
    [
        ("1" * 38, False),
        ("1" * 39, True),
        ("1" + "0" * 60, False),  # one significant digit, trailing zeros trimmed
        ("9.9999999999999999999999999999999999999E+125", False),
        ("1E+126", True),
        ("1E-130", False),
        ("1E-131", True),
        ("-" + "9" * 38, False),
    ],
)
def test_numbers_past_38_digits_or_out_of_range_are_refused(number: str, refused: bool) -> None:
    breach = request_breach("PutItem", {"Item": {**_key(), "amount": {"N": number}}})
    assert (breach is not None) == refused


def test_a_number_hidden_in_a_list_or_map_is_found() -> None:
    nested = {"L": [{"M": {"amount": {"N": "1" * 39}}}]}
    assert request_breach("UpdateItem", {"ExpressionAttributeValues": {":v": nested}}) is not None


def test_an_item_past_400_kb_is_refused(dynamodb: Any, ledger: str, dynamodb_limit_breaches: Any) -> None:
    item = {**_key(), "body": {"S": "x" * (400 * 1024)}}
    assert item_size(item) > 400 * 1024
    with pytest.raises(ClientError, match="an item of"):
        dynamodb.put_item(TableName=ledger, Item=item)


@pytest.mark.parametrize("through", ["UpdateItem", "TransactWriteItems"])
def test_an_update_that_grows_an_item_past_400_kb_is_refused_or_caught(
    dynamodb: Any, ledger: str, dynamodb_limit_breaches: dynamodb_limits.Breaches, through: str
) -> None:
    dynamodb.put_item(TableName=ledger, Item={**_key(), "body": {"S": "x" * (300 * 1024)}})
    update = {
        "TableName": ledger,
        "Key": _key(),
        "UpdateExpression": "SET more = :more",
        "ExpressionAttributeValues": {":more": {"S": "y" * (200 * 1024)}},
    }
    try:
        if through == "UpdateItem":
            dynamodb.update_item(**update)
        else:
            dynamodb.transact_write_items(TransactItems=[{"Update": update}])
    except ClientError as refused:  # moto refuses some of these itself
        assert refused.response["Error"]["Code"] == "ValidationException"
    else:  # what moto let through, the hook measured after the write
        assert any("left an item of" in breach for breach in dynamodb_limit_breaches.take())


def test_a_swallowed_refusal_still_fails_the_test(dynamodb: Any, ledger: str) -> None:
    with pytest.raises(ClientError):
        dynamodb.put_item(TableName=ledger, Item={**_key(), "n": {"N": "1" * 39}})
    # What the autouse fixture will see at teardown; taken here so this test itself passes.
    assert dynamodb_limits.BREACHES.take() == ["PutItem: a number of 39 significant digits (at most 38)"]


def test_ordinary_writes_pass(dynamodb: Any, ledger: str) -> None:
    dynamodb.put_item(TableName=ledger, Item={**_key(), "balance": {"N": "45000"}})
    dynamodb.update_item(
        TableName=ledger,
        Key=_key(),
        UpdateExpression="ADD balance :d SET updated_at = :now",
        ConditionExpression="attribute_exists(balance)",
        ExpressionAttributeValues={":d": {"N": "-100"}, ":now": {"S": "2026-12-03T00:00:00Z"}},
    )
    assert dynamodb.get_item(TableName=ledger, Key=_key())["Item"]["balance"] == {"N": "44900"}
