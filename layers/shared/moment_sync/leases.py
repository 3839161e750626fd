"""One run at a time, without reserved concurrency: a named lease that a run takes before it starts.

The scheduled functions (the pusher, the re-drive, the daily check) must never overlap: Lambda's
asynchronous queue can deliver an invocation twice or late, an operator can invoke one by hand, and a
new account cannot spare reserved concurrency. So each run takes the lease of its NAME ("pusher",
"redrive", "daily-check"; a fanned-out pusher will take "pusher#shard-3") for longer than the function
can run, does nothing if another holder has it, and gives it back at the end (only if still its own).
A run that crashes or is killed leaves a lease that expires by itself.

A lease also keeps a small state that only its holder may write: the daily check's cursor, so one pass
continues across runs. This module is the use cases' side (the port); adapters/lease.py keeps leases
in the Ledger table.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from moment_sync.observability import logger

# Added to the function's own remaining time: the lease outlives the run however it ends (a Lambda
# timeout included), with room for clock skew between two execution environments.
LEASE_MARGIN_SECONDS = 30.0


class HeldLease(Protocol):
    """A lease this run holds until `expires_at` (Unix seconds)."""

    name: str
    holder: str
    expires_at: float

    @property
    def state(self) -> Mapping[str, Any]:
        """What the holders of this lease keep between runs (empty at first)."""
        ...

    def save(self, state: Mapping[str, Any]) -> bool:
        """Replace the state, only while this run still holds the lease; False if it no longer does."""
        ...

    def release(self) -> bool:
        """Give the lease back, only if this run still holds it; False if another took it over."""
        ...


class Leases(Protocol):
    def acquire(self, name: str, holder: str, *, now: float, expires_at: float) -> HeldLease | None:
        """Take the lease if nobody holds it or its holder's time is up; None if another holds it."""
        ...


def new_holder(invocation_id: str | None = None) -> str:
    """A holder id unique to this invocation (Lambda's request id repeats on its own retries)."""
    suffix = uuid.uuid4().hex[:12]
    return f"{invocation_id}/{suffix}" if invocation_id else suffix


@contextmanager
def exclusive_run(
    leases: Leases,
    name: str,
    *,
    now: Callable[[], float],
    time_left: Callable[[], float],
    invocation_id: str | None = None,
) -> Iterator[HeldLease | None]:
    """Hold `name` for this run: yields the lease, or None when another run holds it. Then the caller
    counts its own `…RunSkipped` metric and does nothing else, emitting none of its per-run heartbeats,
    so a lease that never frees shows as the function not running."""
    started = now()
    held = leases.acquire(
        name, new_holder(invocation_id), now=started, expires_at=started + time_left() + LEASE_MARGIN_SECONDS
    )
    if held is None:
        logger.info("another run holds the lease: nothing to do", extra={"lease": name})
        yield None
        return
    try:
        yield held
    finally:
        _release(held)


def _release(held: HeldLease) -> None:
    """Best effort: a lease not given back (a fault here) only expires later by itself."""
    try:
        released = held.release()
    except Exception:
        logger.exception("could not give the lease back; it expires by itself", extra={"lease": held.name})
        return
    if not released:
        logger.warning("the lease was taken over before this run ended", extra={"lease": held.name})
