"""How far a balance is from Moment, as the ledger API, the CLI and the pusher all describe it."""

from __future__ import annotations

from typing import Any

# Consecutive pushes deferred because Moment's balance is unexplained, before an operator is told.
DEFERRALS_BEFORE_ALERT = 3
# Consecutive failed pushes before a balance counts as failing.
ATTEMPTS_BEFORE_FAILING = 5


def sync_state(head: dict[str, Any]) -> str:
    if "push_shard" not in head:
        return "synced"
    if head.get("defer_count", 0) >= DEFERRALS_BEFORE_ALERT:
        return "deferred"
    if head.get("push_attempts", 0) >= ATTEMPTS_BEFORE_FAILING:
        return "failing"
    return "pending"


def sync_view(head: dict[str, Any]) -> dict[str, Any]:
    return {
        "state": sync_state(head),
        "pushed_balance": head.get("pushed_balance"),
        "pushed_at": head.get("pushed_at"),
        "attempts": head.get("push_attempts", 0),
        "last_error": head.get("last_push_error"),
    }
