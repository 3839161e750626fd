"""The operator's command line: `python -m moment_sync --help`.

Reads the same tables the functions use, with the operator's own AWS credentials. Table names come
from `--stack` (the CloudFormation stack's outputs), or `--events-table`/`--ledger-table`, or the
WEBHOOK_EVENTS_TABLE/LEDGER_TABLE environment variables. Exit codes: 0 done, 1 a check failed or
something was not found, 2 the command was wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, TextIO

from moment_sync.adapters.ledger_table import ENTRY_PREFIX, HEAD, LedgerTable
from moment_sync.adapters.webhook_events_table import WebhookEventsTable
from moment_sync.ledger.model import BalanceKind, BalanceRef
from moment_sync.observability import metrics
from moment_sync.reconciliation import ParkReason
from moment_sync.redrive import redrive, redrive_stuck

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# What `event` shows of a stored webhook, in this order (the raw body only with --body).
EVENT_FIELDS = (
    "webhook_id",
    "status",
    "reason",
    "reason_detail",
    "event_type",
    "event_id",
    "application_id",
    "amount",
    "currency",
    "payment_id",
    "customer_id",
    "account_id",
    "bill_id",
    "entry_id",
    "balance_key",
    "duplicate_of",
    "ignored_type",
    "received_at",
    "resolved_at",
    "redrive_attempts",
    "envelope_problem",
)


class CommandError(Exception):
    """A plain message for the operator; exit code 2 (usage) or 1 (not found)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moment-sync", description="Operate Moment Balance Sync.")
    parser.add_argument("--stack", help="read table names from this CloudFormation stack's outputs")
    parser.add_argument("--events-table", default=os.environ.get("WEBHOOK_EVENTS_TABLE"))
    parser.add_argument("--ledger-table", default=os.environ.get("LEDGER_TABLE"))
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    event = commands.add_parser("event", help="show one stored webhook and what became of it")
    event.add_argument("webhook_id")
    event.add_argument("--body", action="store_true", help="also print the raw body")

    balance = commands.add_parser("balance", help="show a balance with its newest entries")
    balance.add_argument("kind", choices=[kind.value for kind in BalanceKind])
    balance.add_argument("ref")
    balance.add_argument("--entries", type=int, default=20, help="how many entries (default 20)")

    again = commands.add_parser("redrive", help="reconcile events again after fixing their cause")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("--webhook-id", action="append", help="this event (repeatable)")
    which.add_argument("--stuck", action="store_true", help="every event still received or unmatched")
    which.add_argument(
        "--reason", choices=[reason.value for reason in ParkReason], help="every event parked for this reason"
    )
    again.add_argument(
        "--grace-minutes",
        type=int,
        default=0,
        help="with --stuck: only events older than this (default 0: all)",
    )

    commands.add_parser("verify", help="check that every balance equals the sum of its entries")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, aws: Any = None) -> int:
    arguments = build_parser().parse_args(argv)
    try:
        events, ledger = _tables(arguments, aws)
        handler = {"event": _event, "balance": _balance, "redrive": _redrive, "verify": _verify}
        return handler[arguments.command](arguments, events, ledger, out)
    except CommandError as error:
        print(f"moment-sync: {error}", file=sys.stderr)
        return error.exit_code
    finally:
        metrics.clear_metrics()  # the use cases count for CloudWatch; an operator's run is not counted


def _tables(arguments: argparse.Namespace, aws: Any) -> tuple[WebhookEventsTable, LedgerTable]:
    import boto3  # noqa: PLC0415 -- not needed for --help

    session = aws or boto3
    if arguments.stack:
        outputs = session.client("cloudformation").describe_stacks(StackName=arguments.stack)["Stacks"][0]
        values = {output["OutputKey"]: output["OutputValue"] for output in outputs.get("Outputs", [])}
        arguments.events_table = values.get("WebhookEventsTableName", arguments.events_table)
        arguments.ledger_table = values.get("LedgerTableName", arguments.ledger_table)
    if not arguments.events_table or not arguments.ledger_table:
        raise CommandError(
            "name the tables: --stack NAME, or --events-table and --ledger-table "
            "(or WEBHOOK_EVENTS_TABLE and LEDGER_TABLE)"
        )
    dynamodb = session.client("dynamodb")
    events = WebhookEventsTable(dynamodb, arguments.events_table)
    return events, LedgerTable(dynamodb, arguments.ledger_table, events)


def _event(arguments: argparse.Namespace, events: WebhookEventsTable, _: LedgerTable, out: TextIO) -> int:
    event = events.get(arguments.webhook_id)
    if event is None:
        raise CommandError(f"no webhook {arguments.webhook_id!r} is stored", EXIT_FAILED)
    shown = {name: event[name] for name in EVENT_FIELDS if name in event}
    if arguments.body:
        shown["body"] = bytes(event.get("body") or b"").decode("utf-8", "replace")
    _print(shown, arguments.json, out)
    return EXIT_OK


def _balance(arguments: argparse.Namespace, _: WebhookEventsTable, ledger: LedgerTable, out: TextIO) -> int:
    balance = BalanceRef(BalanceKind(arguments.kind), arguments.ref)
    head = ledger.get_head(balance)
    if head is None:
        raise CommandError(f"no {balance} in the ledger", EXIT_FAILED)
    entries, _cursor = ledger.entries(balance, limit=max(1, arguments.entries))
    if arguments.json:
        _print({"head": _public(head), "entries": [_public(entry) for entry in entries]}, True, out)
        return EXIT_OK
    _print(_public(head), False, out)
    print(f"\n{'created_at':<25} {'kind':<12} {'amount':>12}  entry", file=out)
    for entry in entries:
        print(
            f"{entry['created_at']:<25} {entry['kind']:<12} {entry['amount']:>12}  {entry['entry_id']}",
            file=out,
        )
    return EXIT_OK


def _redrive(
    arguments: argparse.Namespace, events: WebhookEventsTable, ledger: LedgerTable, out: TextIO
) -> int:
    if arguments.stuck:
        report = redrive_stuck(
            events=events,
            ledger=ledger,
            directory=None,
            now=time.time,
            grace_seconds=arguments.grace_minutes * 60,
        )
    elif arguments.reason:
        report = redrive(
            list(events.parked_ids(ParkReason(arguments.reason))),
            events=events,
            ledger=ledger,
            directory=None,
            now=time.time,
        )
    else:
        report = redrive(arguments.webhook_id, events=events, ledger=ledger, directory=None, now=time.time)
    _print(asdict(report), arguments.json, out)
    return EXIT_FAILED if report.errors else EXIT_OK


def _verify(arguments: argparse.Namespace, _: WebhookEventsTable, ledger: LedgerTable, out: TextIO) -> int:
    """Invariant 3: every balance equals the sum of its entries."""
    heads: dict[str, int] = {}
    sums: dict[str, int] = {}
    for item in ledger.scan_all():
        if item["sk"] == HEAD and "balance" in item:
            heads[item["pk"]] = item["balance"]
        elif item["sk"].startswith(ENTRY_PREFIX):
            sums[item["pk"]] = sums.get(item["pk"], 0) + item["amount"]
    mismatches = {
        pk: (balance, sums.get(pk, 0)) for pk, balance in heads.items() if balance != sums.get(pk, 0)
    }
    orphans = sorted(set(sums) - set(heads))
    if arguments.json:
        _print(
            {"balances": len(heads), "mismatches": mismatches, "entries_without_balance": orphans}, True, out
        )
    else:
        for pk, (balance, total) in sorted(mismatches.items()):
            print(f"MISMATCH {pk}: balance {balance}, entries sum to {total}", file=out)
        for pk in orphans:
            print(f"MISMATCH {pk}: entries with no balance", file=out)
        verdict = (
            "all agree" if not mismatches and not orphans else f"{len(mismatches) + len(orphans)} disagree"
        )
        print(f"verify: {len(heads)} balances checked, {verdict}", file=out)
    return EXIT_FAILED if mismatches or orphans else EXIT_OK


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key not in {"pk", "sk", "entry_order"}}


def _print(values: dict[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(values, indent=2, sort_keys=True, default=str), file=out)
        return
    width = max((len(name) for name in values), default=0)
    for name, value in values.items():
        print(f"{name:<{width}}  {value}", file=out)
