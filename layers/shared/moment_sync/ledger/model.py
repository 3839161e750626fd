"""The ledger's vocabulary: which balance, which change, and the rules every change obeys. Pure.

Money is an int of minor units with its currency beside it; balances may go negative (a credit),
as in Moment. A balance's currency is fixed once it has entries.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeGuard

CURRENCIES = frozenset({"ZAR", "USD"})
# Moment's own bound on an amount (bills' amount_due is 1..99,999,999 minor units).
MAX_AMOUNT = 99_999_999
# Moment documents that bound for bills only; the ledger assumes it holds for balances too, both ways
# (docs/moment.md), and refuses a charge or adjustment that would take a balance past it.
MOMENT_MAX_BALANCE = MAX_AMOUNT
REFERENCE_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,255}")
# Moment's paths take either its own id or the merchant's reference: a reference shaped like an id
# (customer, account, bill) could name another object at Moment, so the ledger refuses them.
MOMENT_ID_PREFIXES = ("bcus_", "bacc_", "bill_")


def reserved_reference(reference: str) -> bool:
    return reference.startswith(MOMENT_ID_PREFIXES)


# The pending-push index is sharded so the pusher never reads one hot partition.
PUSH_SHARDS = 8
PUSH_SHARD_PREFIX = "push#"  # a balance's shard of the PendingPush index: push#0 .. push#7


class BalanceKind(StrEnum):
    CUSTOMER = "customer"
    ACCOUNT = "account"


class EntryKind(StrEnum):
    PAYMENT = "payment"
    CHARGE = "charge"
    BALANCE_SET = "balance_set"
    ADJUSTMENT = "adjustment"


@dataclass(frozen=True, slots=True, order=True)
class BalanceRef:
    """A customer or an account, named by the merchant's external_reference."""

    kind: BalanceKind
    ref: str

    @property
    def partition_key(self) -> str:
        return f"{self.kind.value.upper()}#{self.ref}"

    @classmethod
    def from_partition_key(cls, partition_key: str) -> BalanceRef:
        kind, _, ref = partition_key.partition("#")
        return cls(BalanceKind(kind.lower()), ref)

    @property
    def push_shard(self) -> str:
        digest = hashlib.sha256(self.partition_key.encode()).digest()
        return f"{PUSH_SHARD_PREFIX}{digest[0] % PUSH_SHARDS}"

    def __str__(self) -> str:
        return f"{self.kind.value} {self.ref}"


@dataclass(frozen=True, slots=True)
class Entry:
    """One change to one balance. `source_id` makes it idempotent: a second entry with the same
    kind and source on the same balance is refused, so a redelivered payment changes nothing."""

    kind: EntryKind
    amount: int  # signed: positive raises what the customer owes, negative lowers it
    source_id: str
    source: dict[str, str]  # where it came from: webhook id, payment id, charge id, operator, reason
    created_at: str

    @property
    def entry_id(self) -> str:
        return f"{self.kind.value}:{self.source_id}"


def is_valid_reference(ref: str) -> bool:
    return bool(REFERENCE_PATTERN.fullmatch(ref))


def is_valid_amount(amount: object) -> TypeGuard[int]:
    return isinstance(amount, int) and not isinstance(amount, bool) and 1 <= amount <= MAX_AMOUNT
