"""One push run's loop, shared by the balance pusher and the bill pusher: up to `concurrency` pushes at
once, and none started once the run's time left cannot hold a push's worst case."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

Ref = TypeVar("Ref")
Result = TypeVar("Result")


def push_each(
    pending: Sequence[tuple[Any, Ref]],
    push_one: Callable[[Ref], Result],
    *,
    concurrency: int,
    time_left: Callable[[], float],
    seconds_per_push: float,
    collect: Callable[[set[Future[Result]]], None],
    thread_name_prefix: str,
) -> int:
    """Push each pending (since, ref) in order; `collect` is given the finished pushes as they end.
    Returns how many were not reached for lack of time (the next run takes them)."""
    running: set[Future[Result]] = set()
    not_reached = 0
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=thread_name_prefix) as pool:
        for position, (_since, ref) in enumerate(pending):
            if time_left() < seconds_per_push:
                not_reached = len(pending) - position
                break
            if len(running) >= concurrency:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                collect(done)
            running.add(pool.submit(push_one, ref))
        collect(wait(running).done)
    return not_reached
