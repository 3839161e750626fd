"""One push run's loop, shared by the balance pusher and the bill pusher: up to `concurrency` pushes at
once, and none started once the run's time left cannot hold a push's worst case."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from moment_sync.ledger.sync import SYNC_FIELDS
from moment_sync.observability import logger

Ref = TypeVar("Ref")
Result = TypeVar("Result")

# Moment's 429 without a readable Retry-After: how long every worker holds off.
RATE_LIMITED_SECONDS = 60.0


class SharedBackoff(Protocol):
    """One until-time every pusher worker reads before each push: a 429 one worker meets (after its
    client's own retries) holds off all of them, not only the one that met it (adapters/lease.py)."""

    def until(self) -> float:
        """Unix seconds before which no push starts (0: none)."""
        ...

    def hold_off(self, until: float) -> None:
        """Push `until` later (never earlier)."""
        ...


def push_pages(
    pages: Iterable[Sequence[tuple[Any, Ref]]], push_one: Callable[[Ref], Result], **each: Any
) -> int:
    """`push_each` over the pending index a page at a time, read on while the run's time is left;
    what is not reached is the rest of the page the run stopped in (`each`: push_each's options)."""
    for page in pages:
        not_reached = push_each(page, push_one, **each)
        if not_reached:
            return not_reached
    return 0


def push_each(
    pending: Sequence[tuple[Any, Ref]],
    push_one: Callable[[Ref], Result],
    *,
    concurrency: int,
    time_left: Callable[[], float],
    seconds_per_push: float,
    collect: Callable[[set[Future[Result]]], None],
    thread_name_prefix: str,
    held_off: Callable[[], bool] = lambda: False,
) -> int:
    """Push each pending (since, ref) in order; `collect` is given the finished pushes as they end.
    Returns how many were not reached for lack of time, or because Moment asked every worker to back
    off (`held_off`, read before each push): the next run takes them."""
    running: set[Future[Result]] = set()
    not_reached = 0
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=thread_name_prefix) as pool:
        for position, (_since, ref) in enumerate(pending):
            if time_left() < seconds_per_push or held_off():
                not_reached = len(pending) - position
                break
            if len(running) >= concurrency:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                collect(done)
            running.add(pool.submit(push_one, ref))
        collect(wait(running).done)
    return not_reached


@dataclass(frozen=True)
class Booked(Generic[Result]):
    """A push's result with what its booking wrote: `synced` when the booking made the head `synced`
    and announced it in the same write (`Booking.SYNCED`), so there is nothing left to announce. Each
    push returns its own (pushes run in threads: no shared state)."""

    result: Result
    synced: bool


def push_announced(
    ref: Ref,
    head: dict[str, Any],
    push: Callable[[Ref, dict[str, Any]], Result | Booked[Result]],
    *,
    settle: Callable[[Ref, dict[str, Any] | None, float], dict[str, Any] | None],
    now: Callable[[], float],
    log: dict[str, Any],
    not_announced: str = "sync state not announced yet",
    announced_by_push: Callable[[dict[str, Any]], bool] = lambda head: False,
) -> Result:
    """One push between two announcements of its sync state (`settle`: the ledger's
    `settle_sync_state`): what changed since the last look first (a payment, a charge, an outside
    payment: synced -> pending), then what this push did (deferred, blocked, failing, conflict, pending
    again); booking `synced` announces itself. A crash in between only delays an announcement to the
    next look (docs/events.md). The head is read again after the push unless its booking wrote
    `synced` with nothing come since the read (`Booked.synced`): that read would find nothing to write
    (one DynamoDB request less per push). Every other end (booked but still pending, deferred, blocked,
    failed, conflict, skipped, an exception) reads it again, since it may have changed the state.
    A head `announced_by_push` accepts goes to the push unannounced: the push writes what it owes in
    its own first write (a steady balance push: in its intent's, one DynamoDB request less)."""
    if not announced_by_push(head):
        head = _announce(ref, head, settle, now, log, not_announced) or head
    announced = False
    try:
        pushed = push(ref, head)
        if isinstance(pushed, Booked):
            announced = pushed.synced
            return pushed.result
        return pushed
    finally:
        if not announced:
            _announce(ref, None, settle, now, log, not_announced)


def announced_now(
    ref: Ref,
    head: dict[str, Any] | None,
    *,
    settle: Callable[[Ref, dict[str, Any] | None, float], dict[str, Any] | None],
    now: Callable[[], float],
    log: dict[str, Any],
) -> dict[str, Any] | None:
    """What a look `announced_by_push` owes, written on its own before a write that is not an intent
    (a deferral, a booking with no PATCH, a failure, a conflict): `head` with the sync state as it now
    is, the rest as read (what the look decided on, never a fresh head's). None: read the head."""
    settled = _announce(ref, head, settle, now, log, "sync state not announced yet")
    if head is None or settled is None:
        return settled if head is None else head
    return {**head, **{name: settled[name] for name in SYNC_FIELDS if name in settled}}


def _announce(
    ref: Ref,
    head: dict[str, Any] | None,
    settle: Callable[[Ref, dict[str, Any] | None, float], dict[str, Any] | None],
    now: Callable[[], float],
    log: dict[str, Any],
    not_announced: str,
) -> dict[str, Any] | None:
    try:
        return settle(ref, head, now())
    except Exception:  # the next look announces it; a push must not fail for want of an announcement
        logger.exception(not_announced, extra=log)
        return None
