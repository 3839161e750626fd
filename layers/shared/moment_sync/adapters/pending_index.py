"""The sparse `PendingPush` index of the Ledger table, read forward a page at a time: the balance
pusher's `push#N` shards and the bill pusher's `billpush#N` ones (docs/pusher.md#what-it-pushes).

An item stays in the index after a push looks at it whenever no backoff is set (a balance deferred or
waiting for its payments, a bill waiting for its owner, a push skipped, a change during the push).
Reading again from the start would meet those first, page after page, and never reach what is
behind them; each shard is therefore read on from its own cursor (DynamoDB's `LastEvaluatedKey`).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterator
from itertools import islice
from typing import Any, TypeVar

from moment_sync.adapters.webhook_events_table import iso_time
from moment_sync.ledger.model import PUSH_SHARDS

PENDING_INDEX = "PendingPush"

Ref = TypeVar("Ref")


def pending_pages(
    client: Any,
    table_name: str,
    *,
    shard_prefix: str,
    shards: Collection[int] | None,
    now: float,
    page_size: int,
    ref_of: Callable[[str], Ref],
) -> Iterator[list[tuple[str, Ref]]]:
    """Every (pending_since, ref) due a push at `now` (not backing off), oldest first across the shards
    `<shard_prefix>N` (every shard, or only `shards`: a fanned-out worker's one), `page_size` at a time.
    Each page reads on where the last ended, never from the start again. A shard is queried only when
    the merge needs its next item, at most `page_size` items a query: a run that stops early does not
    read the index to its end."""
    streams = [
        _pending_in_shard(client, table_name, f"{shard_prefix}{number}", now, page_size, ref_of)
        for number in (range(PUSH_SHARDS) if shards is None else sorted(shards))
    ]
    merged = heapq.merge(*streams, key=lambda pending: pending[0])
    while page := list(islice(merged, page_size)):
        yield page


def _pending_in_shard(
    client: Any, table_name: str, shard: str, now: float, page_size: int, ref_of: Callable[[str], Ref]
) -> Iterator[tuple[str, Ref]]:
    paginator = client.get_paginator("query")
    for page in paginator.paginate(
        TableName=table_name,
        IndexName=PENDING_INDEX,
        KeyConditionExpression="push_shard = :shard",
        FilterExpression="attribute_not_exists(next_push_at) OR next_push_at <= :now",
        ExpressionAttributeValues={":shard": {"S": shard}, ":now": {"S": iso_time(now)}},
        PaginationConfig={"PageSize": page_size},
    ):
        for item in page.get("Items", []):
            yield item["pending_since"]["S"], ref_of(item["pk"]["S"])
