"""A push run fans out: one worker per shard of the PendingPush index (docs/pusher.md#fan-out).

The scheduled dispatcher starts one asynchronous worker per shard (`{"shard": N}`), and says which
shards have not finished a run for a while (`PushShardsBehind`, alarmed): a shard whose worker keeps
failing, timing out or finding its lease held would otherwise hide behind the other shards' heartbeats.
Each worker holds its shard's lease (`pusher#shard-N`), so a late or duplicate delivery of a worker's
invocation finds it held, or finds its shard already pushed; the push state's sequence makes every
write of a stale worker fail its condition (adapters/ledger_table.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from moment_sync.ledger.model import PUSH_SHARDS
from moment_sync.observability import logger
from moment_sync.pusher import shard_lease

# A shard is behind when its worker has not finished a run for this long: 3 schedule periods.
SHARD_STALE_SECONDS = 900.0
# Kept in the shard lease's state by each worker that finished a run (the lease outlives it).
FINISHED_AT = "finished_at"


class FanOutFailed(Exception):
    """Some shards' workers could not be started; the others were (the next run starts them all)."""


class LeaseReader(Protocol):
    def current(self, name: str) -> Mapping[str, Any] | None: ...


def dispatch(start_worker: Callable[[int], None], shards: Iterable[int] = range(PUSH_SHARDS)) -> list[int]:
    """Start one worker per shard; every shard is tried even when one fails. Returns the shards started;
    FanOutFailed (after trying all) names those not started, so the run is a failed run an operator sees."""
    started: list[int] = []
    failed: list[str] = []
    for shard in shards:
        try:
            start_worker(shard)
        except Exception as error:  # one shard's failure must not keep the others from starting
            logger.exception("could not start the push worker of a shard", extra={"shard": shard})
            failed.append(f"{shard} ({type(error).__name__})")
        else:
            started.append(shard)
    if failed:
        raise FanOutFailed(f"push workers not started for shards {', '.join(failed)}")
    return started


def shards_behind(
    leases: LeaseReader, now: float, stale_seconds: float = SHARD_STALE_SECONDS, shards: int = PUSH_SHARDS
) -> list[int]:
    """The shards whose worker has not finished a run within `stale_seconds` (or ever)."""
    behind = []
    for shard in range(shards):
        lease = leases.current(shard_lease(shard)) or {}
        finished = (lease.get("state") or {}).get(FINISHED_AT)
        if finished is None or now - float(finished) > stale_seconds:
            behind.append(shard)
    return behind
