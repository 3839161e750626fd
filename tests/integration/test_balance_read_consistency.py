"""Reading a balance lists its entries with a strongly consistent read.

The API answers a balance with its newest entries, and the merchant may check that the balance is the
sum of the entries listed (when they fit on one page) or pick up every entry the balance includes.
The head is read strongly consistent; if the entries came from an eventually consistent read, a
charge committed a moment earlier could be in the balance but missing from the list. DynamoDB
supports strongly consistent reads on a local secondary index (never on a global one), which is why
`EntriesNewestFirst` is local.

moto answers every read from the latest state whatever the request says, so no outcome can show
the lag. What is checked instead is what DynamoDB is asked: a botocore hook records every Query's
parameters, and the index they name must be a local one in template.yaml.
"""

from __future__ import annotations

from typing import Any

import pytest

from local_stack.template import load_template
from moment_sync.adapters.ledger_table import ENTRIES_INDEX
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
    return [query for query in queries if query.get("IndexName") == ENTRIES_INDEX]


def test_the_entries_index_is_local_so_it_can_be_read_strongly_consistent() -> None:
    table = load_template()["Resources"]["LedgerTable"]["Properties"]
    local = [index["IndexName"] for index in table.get("LocalSecondaryIndexes", [])]
    global_ = [index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])]
    assert ENTRIES_INDEX in local
    assert ENTRIES_INDEX not in global_


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
    # And what is listed adds up to the balance read beside it.
    listed = first.body["entries"] + second.body["entries"]
    assert sum(entry["amount"] for entry in listed) == first.body["balance"] == 300


def test_the_operators_balance_command_reads_entries_the_same_way(
    harness: LedgerHarness, queries: list[dict[str, Any]]
) -> None:
    balance = harness.open_customer("UCR2")
    harness.ledger.entries(balance, limit=5)
    assert [query.get("ConsistentRead") for query in entry_queries(queries)] == [True]
