"""The operator's way out of a `conflict` (docs/operations.md#balance-conflict), as CLI commands:

- `link KIND REF MOMENT_ID`: link the right Moment object to a balance, checked against Moment (its
  external_reference is REF and, for an account, it belongs to the ledger customer's Moment object);
- `unlink KIND REF`: forget a wrong link; the next push creates (or adopts) the right object;
- `adopt (KIND REF | --all-held) --ledger-wins|--moment-wins`: the bulk adoption policy, which side's
  balance wins for objects the merchant made at Moment before the ledger knew them.

Each link re-drives at once the payments parked unmatched that name the linked id.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, TextIO

from moment_sync.adapters.ledger_table import LedgerTable, MappingConflict
from moment_sync.adapters.webhook_events_table import WebhookEventsTable
from moment_sync.ledger import service
from moment_sync.ledger.model import BalanceKind, BalanceRef
from moment_sync.redrive import redrive_linked

MOMENT_ID_PREFIX = {BalanceKind.CUSTOMER: "bcus_", BalanceKind.ACCOUNT: "bacc_"}
LEDGER_WINS, MOMENT_WINS = "ledger-wins", "moment-wins"


class LinkRefused(Exception):
    """A plain message for the operator (exit 1: Moment or the ledger says no), or exit 2 with `usage`."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


def add_commands(commands: Any) -> None:
    kinds = [kind.value for kind in BalanceKind]

    link = commands.add_parser("link", help="link the right Moment object to a balance (checked at Moment)")
    link.add_argument("kind", choices=kinds)
    link.add_argument("ref")
    link.add_argument("moment_id", help="bcus_… for a customer, bacc_… for an account")
    _moment_arguments(link)

    unlink = commands.add_parser("unlink", help="forget a wrong link; the next push creates or adopts again")
    unlink.add_argument("kind", choices=kinds)
    unlink.add_argument("ref")
    unlink.add_argument(
        "--with-accounts", action="store_true", help="a customer: also unlink each of its linked accounts"
    )

    adopt = commands.add_parser(
        "adopt", help="say which balance wins for an adopted object (held in conflict)"
    )
    adopt.add_argument("kind", nargs="?", choices=kinds)
    adopt.add_argument("ref", nargs="?")
    adopt.add_argument("--all-held", action="store_true", help="every balance held after an adoption")
    side = adopt.add_mutually_exclusive_group(required=True)
    side.add_argument("--ledger-wins", action="store_true", help="push the ledger's balance to Moment")
    side.add_argument(
        "--moment-wins", action="store_true", help="set the ledger to Moment's balance (a balance_set entry)"
    )
    _moment_arguments(adopt)


def _moment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--moment-base-url", default=os.environ.get("MOMENT_BASE_URL"))
    parser.add_argument(
        "--environment", default=os.environ.get("ENVIRONMENT", "dev"), choices=["dev", "prod"]
    )


def link(
    arguments: argparse.Namespace, events: WebhookEventsTable, ledger: LedgerTable, moment: Any, out: TextIO
) -> None:
    balance = BalanceRef(BalanceKind(arguments.kind), arguments.ref)
    moment_id = arguments.moment_id
    if not moment_id.startswith(MOMENT_ID_PREFIX[balance.kind]):
        raise LinkRefused(
            f"a {balance.kind.value} is linked to a {MOMENT_ID_PREFIX[balance.kind]}… id", usage=True
        )
    head = _head(ledger, balance)
    if head.get("moment_id") not in (None, moment_id):
        raise LinkRefused(f"{balance} is linked to {head['moment_id']}: `unlink` it first")
    found = (
        moment.get_account(moment_id)
        if balance.kind is BalanceKind.ACCOUNT
        else moment.get_customer(moment_id)
    )
    if found.external_reference != balance.ref:
        raise LinkRefused(
            f"Moment's {moment_id} has external_reference {found.external_reference!r}, not {balance.ref!r}"
        )
    if balance.kind is BalanceKind.ACCOUNT:
        _link_owner(ledger, moment, head["customer_ref"], found.customer_id, events, out)
    _link(ledger, balance, moment_id)
    ledger.clear_conflict(balance, adoption_decision=LEDGER_WINS)  # an operator's link is a choice
    _report_redrive(moment_id, events, ledger, out)
    print(
        f"linked {balance} to {moment_id}; its conflict is cleared and the next push run retries it", file=out
    )


def _link_owner(
    ledger: LedgerTable,
    moment: Any,
    customer_ref: str,
    customer_id: str,
    events: WebhookEventsTable,
    out: TextIO,
) -> None:
    """An account belongs to the ledger customer's Moment object: the linked one, or (not yet linked) the
    one whose external_reference is the customer's reference, which is then linked too."""
    customer = BalanceRef(BalanceKind.CUSTOMER, customer_ref)
    linked = _head(ledger, customer).get("moment_id")
    if linked:
        if linked != customer_id:
            raise LinkRefused(f"Moment's account belongs to {customer_id}, but {customer} is {linked}")
        return
    holder = moment.get_customer(customer_id)
    if holder.external_reference != customer_ref:
        raise LinkRefused(
            f"Moment's account belongs to customer {holder.external_reference!r} ({customer_id}), "
            f"not to {customer_ref!r}"
        )
    _link(ledger, customer, customer_id)
    _report_redrive(customer_id, events, ledger, out)


def unlink(arguments: argparse.Namespace, ledger: LedgerTable, out: TextIO) -> None:
    balance = BalanceRef(BalanceKind(arguments.kind), arguments.ref)
    head = _head(ledger, balance)
    if not head.get("moment_id"):
        raise LinkRefused(f"{balance} is not linked to a Moment object")
    if arguments.with_accounts:
        if balance.kind is not BalanceKind.CUSTOMER:
            raise LinkRefused("--with-accounts is for a customer", usage=True)
        # Accounts created under a wrong customer are that customer's at Moment: they go too.
        for account in ledger.accounts_of(balance.ref):
            if account.get("moment_id"):
                _unlink_one(ledger, BalanceRef(BalanceKind.ACCOUNT, account["ref"]), account, out)
    _unlink_one(ledger, balance, head, out)


def _unlink_one(ledger: LedgerTable, balance: BalanceRef, head: dict[str, Any], out: TextIO) -> None:
    moment_id = head["moment_id"]
    try:
        ledger.unlink_moment_id(balance, moment_id, time.time(), tracked="version" in head)
    except MappingConflict as error:
        raise LinkRefused(str(error)) from None
    print(
        f"unlinked {balance} from {moment_id}; the next push run creates or adopts its Moment object. "
        f"Payments naming {moment_id} now park unmatched (a warm reconciler may still apply them to "
        "this balance for up to a minute)",
        file=out,
    )


def adopt(arguments: argparse.Namespace, ledger: LedgerTable, moment: Any, out: TextIO) -> int:
    """Returns how many balances were decided."""
    if arguments.all_held == bool(arguments.kind and arguments.ref):
        raise LinkRefused("name one balance (KIND REF) or --all-held", usage=True)
    if arguments.all_held:
        heads = ledger.held_adoptions()
    else:
        head = _head(ledger, BalanceRef(BalanceKind(arguments.kind), arguments.ref))
        if "adoption_held" not in head:
            raise LinkRefused(f"{arguments.kind} {arguments.ref} is not held after an adoption")
        heads = [head]
    for head in heads:
        balance = BalanceRef(BalanceKind(head["kind"]), head["ref"])
        if arguments.moment_wins:
            moment_id = head["moment_id"]
            found = (
                moment.get_account(moment_id)
                if balance.kind is BalanceKind.ACCOUNT
                else moment.get_customer(moment_id)
            )
            if found.balance is None:
                raise LinkRefused(f"Moment tracks no balance on {moment_id}: only --ledger-wins applies")
            # At the version read: a payment that lands meanwhile makes it stale (run it again).
            service.set_balance(ledger, balance, found.balance, int(head["version"]), time.time())
        ledger.clear_conflict(
            balance, adoption_decision=MOMENT_WINS if arguments.moment_wins else LEDGER_WINS
        )
        side = "Moment's" if arguments.moment_wins else "the ledger's"
        print(f"{balance}: {side} balance wins; the next push run books or pushes it", file=out)
    if not heads:
        print("no balance is held after an adoption", file=out)
    return len(heads)


def _head(ledger: LedgerTable, balance: BalanceRef) -> dict[str, Any]:
    head = ledger.get_head(balance)
    if head is None:
        raise LinkRefused(f"no {balance} in the ledger")
    return head


def _link(ledger: LedgerTable, balance: BalanceRef, moment_id: str) -> None:
    try:
        ledger.link_moment_id(balance, moment_id)
    except MappingConflict:
        raise LinkRefused(f"{moment_id} is linked to another balance (or {balance} to another id)") from None


def _report_redrive(moment_id: str, events: WebhookEventsTable, ledger: LedgerTable, out: TextIO) -> None:
    report = redrive_linked(moment_id, events=events, ledger=ledger, now=time.time)
    if report.examined or report.errors:
        outcomes = ", ".join(f"{count} {outcome}" for outcome, count in sorted(report.outcomes.items()))
        errors = f"; {len(report.errors)} failed, left for the scheduled re-drive" if report.errors else ""
        said = f"re-drove {report.examined} unmatched payment(s) naming {moment_id}: {outcomes or 'none'}"
        print(said + errors, file=out)
