"""`make bench`'s pusher ledger (benchmarks/fake_aws.SnapshotLedger) answers as DynamoDB would: a read
after the run's own write sees it, a write whose condition fails is refused, and moto, given the same
writes in the same order, agrees on each one and ends with the same items."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from moto.core.models import botocore_stubber

from benchmarks.dynamodb_expressions import same
from benchmarks.fake_aws import SnapshotLedger
from local_stack.template import create_table
from moment_sync.adapters.ledger_table import LedgerTable
from moment_sync.adapters.webhook_events_table import iso_time
from moment_sync.leases import LEASE_MARGIN_SECONDS
from moment_sync.ledger.model import BalanceKind, BalanceRef, Entry, EntryKind
from moment_sync.ledger.sync import Booking

NOW = 1_790_000_000.0
BALANCE = BalanceRef(BalanceKind.CUSTOMER, "SNAP0001")


def _charged_ledger(dynamodb: Any) -> LedgerTable:
    """On moto: a customer Moment has (linked), one charge ahead of it, so pending a push."""
    ledger = LedgerTable(dynamodb, create_table(dynamodb, "LedgerTable", "Ledger"))
    ledger.open_balance(BALANCE, "ZAR", NOW, moment_id="cus_snap_0001")
    entry = Entry(EntryKind.CHARGE, 500, "charge-1", {"charge_id": "charge-1"}, iso_time(NOW))
    assert ledger.apply_entry(BALANCE, entry, "ZAR").outcome.value == "applied"
    return ledger


def _items(dynamodb: Any, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    items = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    return {(item["pk"]["S"], item["sk"]["S"]): item for item in items}


def _on_snapshot(dynamodb: Any, table: str) -> tuple[LedgerTable, SnapshotLedger]:
    """A second client of the same ledger, answered by the snapshot ledger only (as benchmarks/pusher.py
    makes it: moto's own hook taken off, so moto never sees its calls)."""
    snapshot = SnapshotLedger(list(_items(dynamodb, table).values()))
    client = boto3.client("dynamodb")
    client.meta.events.unregister("before-send", botocore_stubber)
    snapshot.attach(client.meta.events)
    return LedgerTable(client, table), snapshot


def _push_bookkeeping(ledger: LedgerTable) -> dict[str, Any]:
    """What BalancePusher.push_one writes for a steady push: the intent with `synced -> pending`, the
    booking with `pending -> synced`; then a look at the head (it finds nothing to announce)."""
    read = ledger.get_head(BALANCE)
    assert read is not None
    index, head = ledger.record_intent_announced(BALANCE, read, 500, NOW)
    assert index == 0 and head["sync_state"] == "pending"
    assert ledger.record_push(BALANCE, head, 500, NOW + 1) is Booking.SYNCED
    after = ledger.settle_sync_state(BALANCE, None, NOW + 2)
    assert after is not None
    # The same stale read again (a late duplicate worker): every conditional write refuses it.
    assert not ledger.record_push(BALANCE, head, 500, NOW + 3)
    return after


def test_a_read_after_the_runs_own_write_sees_it(dynamodb: Any) -> None:
    ledger = _charged_ledger(dynamodb)
    on_snapshot, snapshot = _on_snapshot(dynamodb, ledger.table_name)
    assert [balance for _since, balance in on_snapshot.pending_pushes(NOW)] == [BALANCE]

    after = _push_bookkeeping(on_snapshot)

    # The head re-read after the push is the booked one: synced, out of the pending index. A stale
    # head would announce `synced -> pending` again (the write moto refused in the old bench).
    assert after["sync_state"] == "synced"
    assert after["pushed_balance"] == after["balance"] == 500
    assert "push_shard" not in after
    assert on_snapshot.pending_pushes(NOW + 10) == []
    outcomes = [accepted for _write, accepted in snapshot.writes]
    assert outcomes == [
        True,
        True,
        False,
        False,
    ]  # the look wrote nothing; the stale push refused (both tries)
    # Reset: the next timed run meets the snapshot again.
    snapshot.reset()
    assert [balance for _since, balance in on_snapshot.pending_pushes(NOW)] == [BALANCE]
    assert on_snapshot.get_head(BALANCE) == ledger.get_head(BALANCE)


def test_moto_agrees_with_every_write_and_ends_with_the_same_items(dynamodb: Any) -> None:
    ledger = _charged_ledger(dynamodb)
    on_snapshot, snapshot = _on_snapshot(dynamodb, ledger.table_name)
    _push_bookkeeping(on_snapshot)
    leases = on_snapshot.leases()
    expires = NOW + 240 + LEASE_MARGIN_SECONDS
    held = leases.acquire("pusher#shard-3", "run-a", now=NOW, expires_at=expires)
    assert held is not None
    assert leases.acquire("pusher#shard-3", "run-b", now=NOW + 1, expires_at=expires) is None
    assert held.save({"finished_at": int(NOW)})
    assert held.release()

    for write, accepted in snapshot.writes:
        try:
            dynamodb.update_item(**write)
            took = True
        except dynamodb.exceptions.ConditionalCheckFailedException:
            took = False
        assert took == accepted, write
    on_moto = _items(dynamodb, ledger.table_name)
    assert on_moto.keys() == snapshot.items.keys()
    for key, item in on_moto.items():
        assert same({"M": item}, {"M": snapshot.items[key]}), key


def test_what_it_cannot_judge_it_refuses_to_answer(dynamodb: Any) -> None:
    ledger = _charged_ledger(dynamodb)
    _on_ledger, snapshot = _on_snapshot(dynamodb, ledger.table_name)
    client = boto3.client("dynamodb")
    client.meta.events.unregister("before-send", botocore_stubber)
    snapshot.attach(client.meta.events)
    with pytest.raises(NotImplementedError, match="contains"):
        client.update_item(
            TableName=ledger.table_name,
            Key={"pk": {"S": BALANCE.partition_key}, "sk": {"S": "HEAD"}},
            UpdateExpression="SET balance = :zero",
            ConditionExpression="contains(ref, :part)",
            ExpressionAttributeValues={":zero": {"N": "0"}, ":part": {"S": "SNAP"}},
        )


def test_a_query_in_pages_reads_on_from_each_pages_last_key_as_moto_does(dynamodb: Any) -> None:
    """The pending bills are read a page at a time (`Limit`, `ExclusiveStartKey`): the snapshot pages
    the PendingPush index as moto does."""
    ledger = LedgerTable(dynamodb, create_table(dynamodb, "LedgerTable", "Ledger"))
    for number in range(24):
        balance = BalanceRef(BalanceKind.CUSTOMER, f"SNAP{number:04}")
        ledger.open_balance(balance, "ZAR", NOW, moment_id=f"cus_snap_{number:04}")
        at = iso_time(NOW + number)
        entry = Entry(EntryKind.CHARGE, 500, f"charge-{number}", {"charge_id": f"charge-{number}"}, at)
        assert ledger.apply_entry(balance, entry, "ZAR").outcome.value == "applied"
    on_snapshot, _snapshot = _on_snapshot(dynamodb, ledger.table_name)

    def pages(client: Any, shard: int) -> list[list[str]]:
        paginator = client.get_paginator("query")
        return [
            [item["pk"]["S"] for item in page["Items"]]
            for page in paginator.paginate(
                TableName=ledger.table_name,
                IndexName="PendingPush",
                KeyConditionExpression="push_shard = :shard",
                ExpressionAttributeValues={":shard": {"S": f"push#{shard}"}},
                PaginationConfig={"PageSize": 2},
            )
        ]

    on_moto = [pages(dynamodb, shard) for shard in range(8)]
    on_snap = [pages(on_snapshot._client, shard) for shard in range(8)]
    assert sum(len(page) for shard in on_moto for page in shard) == 24
    assert max(len(shard) for shard in on_snap) > 1  # some shard took more than one page
    assert [[pk for page in shard for pk in page] for shard in on_snap] == [
        [pk for page in shard for pk in page] for shard in on_moto
    ]
