"""push_run.push_announced, the wrapper both pushers put around one push (docs/pusher.md#bills): the
sync state announced before the push (the push sees the head that announcement wrote) and after it,
and an announcement that fails never fails the push."""

from __future__ import annotations

from typing import Any

import pytest

from moment_sync.push_run import Booked, push_announced


def test_a_push_runs_between_two_announcements_and_sees_the_head_the_first_wrote() -> None:
    calls: list[tuple[str, Any]] = []

    def settle(ref: str, head: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
        calls.append(("settle", head))
        return {**head, "sync_state": "pending"} if head is not None else None

    def push(ref: str, head: dict[str, Any]) -> str:
        calls.append(("push", head))
        return "pushed"

    result = push_announced("FEE-1", {"v": 1}, push, settle=settle, now=lambda: 0.0, log={"bill": "FEE-1"})
    assert result == "pushed"
    assert calls == [
        ("settle", {"v": 1}),
        ("push", {"v": 1, "sync_state": "pending"}),
        ("settle", None),  # read again: what the push did
    ]


def test_an_announcement_that_fails_neither_fails_the_push_nor_hides_its_error() -> None:
    def settle(ref: str, head: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
        raise RuntimeError("throttled")

    pushed: list[dict[str, Any]] = []
    result = push_announced(
        "UCR1",
        {"v": 1},
        lambda ref, head: pushed.append(head) or "in_sync",
        settle=settle,
        now=lambda: 0.0,
        log={"reference": "UCR1"},
    )
    assert (result, pushed) == ("in_sync", [{"v": 1}])  # the head as read, since none was announced

    def failing_push(ref: str, head: dict[str, Any]) -> str:
        raise ValueError("a bug in one push")

    with pytest.raises(ValueError, match="a bug in one push"):
        push_announced("UCR1", {"v": 1}, failing_push, settle=settle, now=lambda: 0.0, log={})


@pytest.mark.parametrize(("synced", "settles"), [(True, 1), (False, 2)])
def test_the_head_is_read_again_after_the_push_unless_its_booking_announced_synced(
    synced: bool, settles: int
) -> None:
    """`Booked.synced`: the booking wrote `synced` with its transition, nothing came since the read, so
    the read after the push would find nothing to write; any other booking is read again."""
    settled: list[dict[str, Any] | None] = []

    def settle(ref: str, head: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
        settled.append(head)
        return head

    result = push_announced(
        "UCR1",
        {"v": 1},
        lambda ref, head: Booked("pushed", synced),
        settle=settle,
        now=lambda: 0.0,
        log={"reference": "UCR1"},
    )
    assert result == "pushed"  # the push's own result, unwrapped
    assert settled == [{"v": 1}, None][:settles]
