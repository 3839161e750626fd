"""Reading a balance lists its entries with a strongly consistent read.

The API answers a balance with its newest entries, and the merchant may check that the balance is the
sum of the entries listed (when they fit on one page) or pick up every entry the balance includes.
The head is read strongly consistent; if the entries came from an eventually consistent read, a
charge committed a moment earlier could be in the balance but missing from the list. Entries are
keyed `ENTRY#<created_at>#<entry id>`, so the base table itself lists them newest first, strongly
consistent, with no index (a global one could not be read strongly consistent at all).

moto answers every read from the latest state whatever the request says, so no outcome can show
the lag. What is checked instead is what DynamoDB is asked: a botocore hook records every Query's
parameters: the entries' must name no index and ask for a consistent read.
"""

from __future__ import annotations

from typing import Any

import pytest

from local_stack.template import load_template
from moment_sync.adapters.entry_keys import ENTRY_RANGE
from moment_sync.runtime import LedgerDependencies
from support.ledger import LedgerHarness
from support.ledger_api import LedgerApi


@pytest.fixture
def harness(dynamodb: Any) -> LedgerHarness:
    return LedgerHarness(dynamodb)


@pytest.fixture
def queries(harness: LedgerHarness) -> list[dict[str, Any]]:
    """The parameters of every Query the ledger's client sends, as the code passed them."""
    seen: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append(dict(params))

    harness.dynamodb.meta.events.register("provide-client-params.dynamodb.Query", record)
    return seen


def entry_queries(queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        query
        for query in queries
        if ENTRY_RANGE[0] in str(query.get("ExpressionAttributeValues", {}))
        and query.get("ScanIndexForward") is False
    ]


def test_entries_are_read_from_the_base_table_and_the_ledger_has_no_local_index() -> None:
    """No local index: one write unit less per entry (docs/ledger.md#entries-keyed-by-time)."""
    table = load_template()["Resources"]["LedgerTable"]["Properties"]
    assert not table.get("LocalSecondaryIndexes")
    names = {definition["AttributeName"] for definition in table["AttributeDefinitions"]}
    assert "entry_order" not in names


def test_get_balance_reads_its_entries_strongly_consistent_on_every_page(
    harness: LedgerHarness, queries: list[dict[str, Any]]
) -> None:
    api = LedgerApi(LedgerDependencies(events=harness.events, ledger=harness.ledger, clock=harness.clock))
    assert api.put("/customers/UCR1", {"currency": "ZAR"}).status == 201
    for number in range(3):
        assert api.post("/customers/UCR1/charges", {"id": f"c{number}", "amount": 100}).status == 201
    queries.clear()

    first = api.get("/customers/UCR1", "limit=2")
    assert first.status == 200 and "next_cursor" in first.body
    second = api.get("/customers/UCR1", f"limit=2&cursor={first.body['next_cursor']}")
    assert second.status == 200

    read = entry_queries(queries)
    assert len(read) == 2, queries
    assert all(query.get("ConsistentRead") is True for query in read), read
    assert all("IndexName" not in query for query in read), read
    # And what is listed adds up to the balance read beside it.
    listed = first.body["entries"] + second.body["entries"]
    assert sum(entry["amount"] for entry in listed) == first.body["balance"] == 300


def test_the_operators_balance_command_reads_entries_the_same_way(
    harness: LedgerHarness, queries: list[dict[str, Any]]
) -> None:
    balance = harness.open_customer("UCR2")
    harness.ledger.entries(balance, limit=5)
    assert [query.get("ConsistentRead") for query in entry_queries(queries)] == [True]
