"""How an entry is keyed in the Ledger table (docs/ledger.md#entries-keyed-by-time), in one place.

An entry's sort key is `ENTRY#<created_at>#<entry_id>`: `created_at` is `iso_time`'s fixed-width UTC
text (`2026-12-03T23:40:14.123Z`), so the base table itself lists a partition's entries in time order
and a strongly consistent Query reads them newest first (no local index: one write unit less per
entry). `entry_id` is `<kind>:<source id>`, as before. A bill's void entry keeps `ENTRY#void`: it is
outside `ENTRY_RANGE` (a letter sorts after every digit), so it is never listed among the payments.

Because the time is part of the key, an entry's idempotency lives in another item that names the time
once and for all: a payment's ledger-wide claim (`APPLICATION#<id>`, its `created_at`), a merchant's or
an operator's entry's source guard (`SOURCE#<entry_id>` in the same partition, written in the entry's
own transaction). `claim_age_rule` says when a claim's time may still be used.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

ENTRY_PREFIX = "ENTRY#"
SOURCE_PREFIX = "SOURCE#"
APPLICATION_PREFIX = "APPLICATION#"
APPLICATION = "APPLICATION"
# `sk BETWEEN` these: every time-keyed entry (a created_at starts with a digit), and no `ENTRY#void`.
ENTRY_RANGE = (ENTRY_PREFIX + "0", ENTRY_PREFIX + ":")
_TIME_WIDTH = len("2026-12-03T23:40:14.123Z")

# A claim younger than this names the time its payment's entry is written at: a retry of an attempt
# that is still young (a stream retry, a redelivery seconds later) writes the very same key, so the
# entry's `attribute_not_exists` refuses the second one as it always did.
CLAIM_FRESH_SECONDS = 300.0
# The longest one attempt can live between reading a claim and its transaction landing: Lambda's
# 900 s maximum timeout, plus the SDK's retries of the last call (standard mode: 3 attempts with up to
# 20 s of backoff and the 10 s read timeout each) and a margin for clock differences between hosts.
# A claim at least CLAIM_FRESH_SECONDS + ATTEMPT_LIFETIME_SECONDS old has no attempt left that could
# still write at its time: only then may it be re-dated (docs/ledger.md#entries-keyed-by-time).
ATTEMPT_LIFETIME_SECONDS = 900.0 + 120.0


class ClaimAge(StrEnum):
    FRESH = "fresh"  # write at the claim's time
    UNSETTLED = "unsettled"  # an attempt may still be writing at the claim's time: write nothing now
    SETTLED = "settled"  # no attempt can still write at its time: read it; absent, re-date the claim


def claim_age_rule(claimed_at: str, now: float) -> ClaimAge:
    age = now - parse_time(claimed_at)
    if age < CLAIM_FRESH_SECONDS:
        return ClaimAge.FRESH
    if age < CLAIM_FRESH_SECONDS + ATTEMPT_LIFETIME_SECONDS:
        return ClaimAge.UNSETTLED
    return ClaimAge.SETTLED


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def entry_sort_key(created_at: str, entry_id: str) -> str:
    if len(created_at) != _TIME_WIDTH:
        raise ValueError(f"an entry's time must be iso_time's fixed-width form, not {created_at!r}")
    return f"{ENTRY_PREFIX}{created_at}#{entry_id}"


def entry_key(partition_key: str, created_at: str, entry_id: str) -> dict[str, Any]:
    return {"pk": {"S": partition_key}, "sk": {"S": entry_sort_key(created_at, entry_id)}}


def is_entry_key(sort_key: str) -> bool:
    """A time-keyed entry (a bill's `ENTRY#void` is not one)."""
    return ENTRY_RANGE[0] <= sort_key < ENTRY_RANGE[1]


def source_key(partition_key: str, entry_id: str) -> dict[str, Any]:
    return {"pk": {"S": partition_key}, "sk": {"S": SOURCE_PREFIX + entry_id}}


def source_item(partition_key: str, entry_id: str, created_at: str) -> dict[str, Any]:
    """A merchant's or an operator's entry's guard, written in the entry's transaction: a second entry
    from the same source is refused here, whatever time it would be keyed by."""
    return {
        **source_key(partition_key, entry_id),
        "entry_id": {"S": entry_id},
        "created_at": {"S": created_at},
    }


def application_key(application_id: str) -> dict[str, Any]:
    """A Moment application's ledger-wide claim (its guard)."""
    return {"pk": {"S": APPLICATION_PREFIX + application_id}, "sk": {"S": APPLICATION}}


def claim_still_dated(table_name: str, application_id: str, created_at: str) -> dict[str, Any]:
    """A transaction item for an attempt that is not bounded by Lambda's timeout and clock (the
    operator's CLI): the payment's claim must still name `created_at`, or the transaction is refused.
    An attempt that slept, or ran on a clock far behind, past a re-date can then write nothing.
    It costs a condition check's write units, on the operator's attempts only."""
    return {
        "ConditionCheck": {
            "TableName": table_name,
            "Key": application_key(application_id),
            "ConditionExpression": "created_at = :claimed_at",
            "ExpressionAttributeValues": {":claimed_at": {"S": created_at}},
        }
    }
