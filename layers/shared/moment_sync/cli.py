"""The operator's command line: `python -m moment_sync --help`.

Reads the same tables the functions use, with the operator's own AWS credentials. Table names come
from `--stack` (the CloudFormation stack's outputs), or `--events-table`/`--ledger-table`, or the
WEBHOOK_EVENTS_TABLE/LEDGER_TABLE environment variables. Exit codes: 0 done, 1 a check failed or
something was not found or the ledger refused the change, 2 the command was wrong.

The commands that change the ledger (`put-customer`, `put-account`, `charge`, `set-balance`, `adjust`)
check their arguments with the ledger API's own rules and call the same use cases it does.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any, TextIO

from moment_sync import cli_bills, cli_shell, operator_links
from moment_sync.adapters.entry_keys import ENTRY_PREFIX, is_entry_key
from moment_sync.adapters.ledger_table import HEAD, LedgerTable
from moment_sync.adapters.webhook_events_table import WebhookEventsTable, iso_time
from moment_sync.cli_local import (
    LOCAL_EVENTS_TABLE,
    LOCAL_LEDGER_TABLE,
    LOCAL_MOMENT_KEY_SECRET,
    AwsClients,
    LocalProfile,
    aws_clients,
    local_clients,
)
from moment_sync.events_out import DETAIL_TYPES, is_bill_void_entry
from moment_sync.ledger import requests, service
from moment_sync.ledger.model import BalanceKind, BalanceRef, EntryKind
from moment_sync.ledger.requests import RequestInvalid
from moment_sync.ledger.service import LedgerProblem
from moment_sync.ledger.sync import sync_state
from moment_sync.observability import metrics
from moment_sync.reconciliation import ParkReason
from moment_sync.redrive import REDRIVE_LEASE, RedriveReport, redrive, redrive_stuck
from moment_sync.republish import recorded_between, republish

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
    "conflicts_with",
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
    parser.add_argument(
        "--local",
        action="store_true",
        help="use the running `make local` stack (its moto, tables, Moment sandbox and key)",
    )
    parser.add_argument("--region", help="the AWS region (default: AWS_REGION or the profile's)")
    parser.add_argument("--debug", action="store_true", help="show log lines and tracebacks")
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
    commands.add_parser(
        "backfill-application-guards",
        help="give payments applied before application guards existed theirs; exit 1 on a conflict",
    )

    report = commands.add_parser(
        "reconcile-report",
        help="compare the ledger with Moment's balances; exit 1 on an unexplained difference",
    )
    report.add_argument("kind", nargs="?", choices=[kind.value for kind in BalanceKind])
    report.add_argument("ref", nargs="?", help="one balance (default: every balance linked to Moment)")
    report.add_argument(
        "--calls-per-second", type=float, default=5.0, help="Moment calls per second (default 5)"
    )
    report.add_argument("--moment-base-url", default=os.environ.get("MOMENT_BASE_URL"))
    report.add_argument(
        "--environment", default=os.environ.get("ENVIRONMENT", "dev"), choices=["dev", "prod"]
    )

    parked = commands.add_parser("parked", help="list parked events by reason; --redrive them after a fix")
    parked.add_argument(
        "--reason", choices=[reason.value for reason in ParkReason], help="default: every reason"
    )
    parked.add_argument("--redrive", action="store_true", help="reconcile the listed events again")

    forget = commands.add_parser(
        "forget",
        help="erase a customer's personal data (POPIA/GDPR request), keeping amounts, entries and each "
        "webhook's summary, so unsettled payments still settle",
    )
    forget.add_argument("ref", help="the customer's reference")
    republishing = commands.add_parser(
        "republish-events",
        help="put again on the event bus what the ledger recorded in a time range (same event_id; "
        "an erased customer's events are skipped)",
    )
    republishing.add_argument("--since", required=True, help="an RFC 3339 time, e.g. 2026-06-03T08:00:00Z")
    republishing.add_argument("--until", help="an RFC 3339 time (default: now)")
    republishing.add_argument(
        "--detail-type", action="append", choices=list(DETAIL_TYPES), help="only these (repeatable)"
    )
    republishing.add_argument(
        "--event-bus", default=os.environ.get("EVENT_BUS_NAME"), help="default: EVENT_BUS_NAME or --stack's"
    )
    republishing.add_argument("--dry-run", action="store_true", help="count what would be put, put nothing")
    _add_change_commands(commands)
    cli_bills.add_commands(commands)
    operator_links.add_commands(commands)
    return parser


def _add_change_commands(commands: Any) -> None:
    kinds = [kind.value for kind in BalanceKind]

    customer = commands.add_parser("put-customer", help="create or update a customer (as PUT /customers/REF)")
    customer.add_argument("ref")
    customer.add_argument("--currency", required=True)
    customer.add_argument("--balance-model", default="customer", help="customer (default) or accounts")
    for name in ("name", "email", "phone"):
        customer.add_argument(f"--{name}", help="left out: removed, as a PUT does")

    account = commands.add_parser("put-account", help="create or update an account (as PUT /accounts/REF)")
    account.add_argument("ref")
    account.add_argument("--customer-ref", required=True)
    account.add_argument("--currency", required=True)
    account.add_argument("--name")

    charge = commands.add_parser("charge", help="post a charge, or a credit if negative, once per --id")
    charge.add_argument("kind", choices=kinds)
    charge.add_argument("ref")
    charge.add_argument("--id", required=True, dest="charge_id", help="the charge id (idempotency key)")
    charge.add_argument("--amount", required=True, type=int, help="minor units; negative is a credit")
    charge.add_argument("--description")

    absolute = commands.add_parser("set-balance", help="set an absolute balance at the version it was read")
    absolute.add_argument("kind", choices=kinds)
    absolute.add_argument("ref")
    absolute.add_argument("--balance", required=True, type=int, help="minor units")
    absolute.add_argument("--expected-version", required=True, type=int, help="the version read with it")

    adjust = commands.add_parser("adjust", help="an audited correction: an entry saying who and why")
    adjust.add_argument("kind", choices=kinds)
    adjust.add_argument("ref")
    adjust.add_argument("--amount", required=True, type=int, help="minor units added (negative lowers)")
    adjust.add_argument("--reason", required=True)
    adjust.add_argument("--operator", default=os.environ.get("USER"), help="default: $USER")
    adjust.add_argument("--id", dest="adjustment_id", help="the adjustment id (default: a new uuid)")


def main(
    argv: Sequence[str] | None = None,
    out: TextIO | None = None,
    aws: Any = None,
    moment: Any = None,
    err: TextIO | None = None,
) -> int:
    """`aws` (a boto3 session or module) and `moment` (a MomentClient) replace the real ones in tests.

    Every command runs inside `cli_shell.run`: a fault it does not handle itself is one line on stderr
    and exit 1, never a traceback (unless --debug)."""
    arguments = build_parser().parse_args(argv)
    arguments.moment = moment
    arguments.err = err or sys.stderr
    return cli_shell.run(
        lambda: _run_command(arguments, aws, out or sys.stdout),
        debug=arguments.debug,
        err=arguments.err,
        local=arguments.local,
    )


def _run_command(arguments: argparse.Namespace, aws: Any, out: TextIO) -> int:
    try:
        events, ledger = _tables(arguments, aws)
        handler = {
            "event": _event,
            "balance": _balance,
            "redrive": _redrive,
            "verify": _verify,
            "backfill-application-guards": _backfill_application_guards,
            "put-customer": _put_customer,
            "put-account": _put_account,
            "charge": _charge,
            "set-balance": _set_balance,
            "adjust": _adjust,
            "reconcile-report": _reconcile_report,
            "parked": _parked,
            "forget": _forget,
            "link": _operator_link,
            "unlink": _operator_link,
            "adopt": _operator_link,
            "republish-events": _republish_events,
            **cli_bills.HANDLERS,
        }
        return handler[arguments.command](arguments, events, ledger, out)
    except CommandError as error:
        print(f"moment-sync: {error}", file=arguments.err)
        return error.exit_code
    except RequestInvalid as error:
        problems = "; ".join(f"{problem.field} {problem.message}" for problem in error.errors)
        print(f"moment-sync: {problems or error.detail}", file=arguments.err)
        return EXIT_USAGE
    except LedgerProblem as error:
        print(f"moment-sync: {error.detail} ({error.problem})", file=arguments.err)
        return EXIT_FAILED
    finally:
        metrics.clear_metrics()  # the use cases count for CloudWatch; an operator's run is not counted


def _tables(arguments: argparse.Namespace, aws: Any) -> tuple[WebhookEventsTable, LedgerTable]:
    if arguments.local:
        profile = LocalProfile.from_environment()
        clients = AwsClients(aws) if aws is not None else local_clients(profile)
        arguments.events_table, arguments.ledger_table = LOCAL_EVENTS_TABLE, LOCAL_LEDGER_TABLE
        arguments.moment_key_secret = LOCAL_MOMENT_KEY_SECRET
        if getattr(arguments, "moment_base_url", None) is None:
            arguments.moment_base_url = profile.moment_base_url
    else:
        clients = AwsClients(aws) if aws is not None else aws_clients(arguments.region)
    arguments.clients = clients
    if arguments.stack:
        outputs = clients.client("cloudformation").describe_stacks(StackName=arguments.stack)["Stacks"][0]
        values = {output["OutputKey"]: output["OutputValue"] for output in outputs.get("Outputs", [])}
        arguments.events_table = values.get("WebhookEventsTableName", arguments.events_table)
        arguments.ledger_table = values.get("LedgerTableName", arguments.ledger_table)
        arguments.moment_key_secret = values.get("MomentApiKeySecretArn")
        arguments.event_bus = values.get("EventBusName", getattr(arguments, "event_bus", None))
    if not arguments.events_table or not arguments.ledger_table:
        raise CommandError(
            "name the tables: --stack NAME, or --events-table and --ledger-table "
            "(or WEBHOOK_EVENTS_TABLE and LEDGER_TABLE)"
        )
    dynamodb = clients.client("dynamodb")
    events = WebhookEventsTable(dynamodb, arguments.events_table)
    # The operator's shell is no Lambda: no timeout ends its attempts, and its clock is its own.
    return events, LedgerTable(dynamodb, arguments.ledger_table, events, attempts_bounded=False)


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
        shown = {**_public(head), "sync_state": sync_state(head)}
        _print({"head": shown, "entries": [_public(entry) for entry in entries]}, True, out)
        return EXIT_OK
    _print({**_public(head), "sync_state": sync_state(head)}, False, out)
    print(file=out)
    cli_shell.table(
        ["created at", "kind", "amount", "entry"],
        [[entry["created_at"], entry["kind"], entry["amount"], entry["entry_id"]] for entry in entries],
        out,
        right=frozenset({2}),
    )
    return EXIT_OK


def _redrive(
    arguments: argparse.Namespace, events: WebhookEventsTable, ledger: LedgerTable, out: TextIO
) -> int:
    if arguments.stuck:
        progress = cli_shell.Progress("redrive", arguments.err)
        progress.update(0, what="events (every stuck one)")
        report = redrive_stuck(
            events=events,
            ledger=ledger,
            directory=None,
            now=time.time,
            grace_seconds=arguments.grace_minutes * 60,
            back_off=False,  # an operator asked for it now
            # A full pass over every shard from the start of retention, whatever the cursors say (an
            # event may have reached the index behind one); the scheduled run's state, read-only,
            # gives its retry list and tells which events lay behind a cursor (docs/ledger.md#re-drive).
            state=(ledger.leases().current(REDRIVE_LEASE) or {}).get("state"),
        )
        progress.finish()
    elif arguments.reason:
        report = _redrive_with_progress(
            list(events.parked_ids(ParkReason(arguments.reason))), events, ledger, arguments.err
        )
    else:
        report = _redrive_with_progress(arguments.webhook_id, events, ledger, arguments.err)
    if arguments.json:
        _print(asdict(report), True, out)
    else:
        print(_redrive_sentence(report), file=out)
    return EXIT_FAILED if report.errors else EXIT_OK


_REDRIVE_CHUNK = 25  # events re-driven between two progress updates


def _redrive_with_progress(
    webhook_ids: list[str], events: WebhookEventsTable, ledger: LedgerTable, err: TextIO
) -> RedriveReport:
    total = RedriveReport()
    progress = cli_shell.Progress("redrive", err)
    for start in range(0, len(webhook_ids), _REDRIVE_CHUNK):
        part = redrive(
            webhook_ids[start : start + _REDRIVE_CHUNK],
            events=events,
            ledger=ledger,
            directory=None,
            now=time.time,
        )
        total.examined += part.examined
        total.found_received += part.found_received
        total.not_due += part.not_due
        total.stopped_early = total.stopped_early or part.stopped_early
        total.linked.extend(part.linked)
        total.errors.extend(part.errors)
        for outcome, count in part.outcomes.items():
            total.outcomes[outcome] = total.outcomes.get(outcome, 0) + count
        progress.update(min(start + _REDRIVE_CHUNK, len(webhook_ids)), len(webhook_ids), "events")
    progress.finish()
    return total


def _redrive_sentence(report: RedriveReport) -> str:
    """e.g. `redrive: 3 events examined: 2 applied, 1 parked (unmatched); 1 linked to Moment; no errors`"""
    outcomes = ", ".join(
        f"{count} {outcome.replace(':', ' (')}{')' if ':' in outcome else ''}"
        for outcome, count in sorted(report.outcomes.items())
    )
    parts = [f"redrive: {report.examined} events examined" + (f": {outcomes}" if outcomes else "")]
    if report.linked:
        parts.append(f"{len(report.linked)} linked to Moment")
    if report.not_due:
        parts.append(f"{report.not_due} not due yet")
    if report.stopped_early:
        parts.append("stopped early (run it again)")
    parts.append(f"{len(report.errors)} errors: {'; '.join(report.errors)}" if report.errors else "no errors")
    return "; ".join(parts)


def _verify(arguments: argparse.Namespace, _: WebhookEventsTable, ledger: LedgerTable, out: TextIO) -> int:
    """Invariant 3: every balance equals the sum of its entries (and every bill's amount_paid the sum
    of its payments)."""
    heads: dict[str, int] = {}
    bills = 0
    sums: dict[str, int] = {}
    keyed: Counter[tuple[str, str]] = Counter()
    progress = cli_shell.Progress("verify", arguments.err)
    for number, item in enumerate(ledger.scan_all(), start=1):
        progress.update(number, what="items read")
        if item["sk"] == HEAD and "balance" in item:
            heads[item["pk"]] = item["balance"]
        elif item["sk"] == HEAD and item.get("kind") == "bill":
            heads[item["pk"]] = item.get("amount_paid", 0)
            bills += 1
        elif item["sk"].startswith(ENTRY_PREFIX) and not is_bill_void_entry(item):
            # a bill's void entry (`Bill Voided`) is no payment
            sums[item["pk"]] = sums.get(item["pk"], 0) + item["amount"]
            keyed[(str(item["pk"]), str(item.get("entry_id", item["sk"])))] += 1
    progress.finish()
    mismatches = {
        pk: (balance, sums.get(pk, 0)) for pk, balance in heads.items() if balance != sums.get(pk, 0)
    }
    orphans = sorted(set(sums) - set(heads))
    # Entries are keyed by time: one source under two times is one change applied twice (its claim or
    # source guard was lost: docs/ledger.md#entries-keyed-by-time). The sums may still agree.
    twice = sorted(f"{pk} {entry_id}" for (pk, entry_id), count in keyed.items() if count > 1)
    if arguments.json:
        _print(
            {
                "balances": len(heads) - bills,
                "bills": bills,
                "mismatches": mismatches,
                "entries_without_balance": orphans,
                "entries_applied_twice": twice,
            },
            True,
            out,
        )
    else:
        for pk, (balance, total) in sorted(mismatches.items()):
            print(f"MISMATCH {pk}: balance {balance}, entries sum to {total}", file=out)
        for pk in orphans:
            print(f"MISMATCH {pk}: entries with no balance", file=out)
        for named in twice:
            print(f"TWICE {named}: one source, two entries", file=out)
        bad = len(mismatches) + len(orphans) + len(twice)
        verdict = "all agree" if not bad else f"{bad} disagree"
        checked = f"{len(heads) - bills} balances" + (f" and {bills} bills" if bills else "")
        print(f"verify: {checked} checked, {verdict}", file=out)
    return EXIT_FAILED if mismatches or orphans or twice else EXIT_OK


def _backfill_application_guards(
    arguments: argparse.Namespace, _: WebhookEventsTable, ledger: LedgerTable, out: TextIO
) -> int:
    """Invariant 2 for payments applied before the ledger-wide guard: write each one's guard (once;
    safe to run again), and name any application id already applied to two balances or amounts."""
    checked, conflicts = 0, []
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for item in ledger.scan_all():
        if not is_entry_key(str(item["sk"])):
            continue
        if not str(item.get("entry_id", "")).startswith(f"{EntryKind.PAYMENT.value}:"):
            continue
        first = seen.setdefault((str(item["pk"]), str(item["entry_id"])), item)
        if first is not item:  # one application, two entries on one balance (its claim was lost)
            conflicts.append(
                {
                    "application_id": str(item["entry_id"]).partition(":")[2],
                    "entry": _entry_named(item),
                    "guard": _entry_named(first),
                }
            )
        if str(item["pk"]).startswith("BILL#"):
            continue  # bill payments were guarded from the first (docs/ledger.md#bills)
        checked += 1
        applied = ledger.guard_applied_entry(item)
        if applied is not None:
            balance = BalanceRef.from_partition_key(item["pk"])
            conflicts.append(
                {
                    "application_id": str(item["entry_id"]).partition(":")[2],
                    "entry": f"{balance}: {-item['amount']} {item['currency']}",
                    "guard": f"{applied.balance}: {applied.amount} {applied.currency}",
                }
            )
    if arguments.json:
        _print({"payments_checked": checked, "conflicts": conflicts}, True, out)
    else:
        for conflict in conflicts:
            print(
                f"CONFLICT {conflict['application_id']}: applied as {conflict['guard']} and as "
                f"{conflict['entry']}",
                file=out,
            )
        print(
            f"backfill-application-guards: {checked} payments checked, {len(conflicts)} conflicts", file=out
        )
    return EXIT_FAILED if conflicts else EXIT_OK


def _entry_named(item: dict[str, Any]) -> str:
    return f"{item['pk']}: {-item['amount']} {item['currency']} at {item['created_at']}"


# --- changes (the ledger API's use cases) -----------------------------------------------------------


def _put_customer(
    arguments: argparse.Namespace, _: WebhookEventsTable, ledger: LedgerTable, out: TextIO
) -> int:
    fields = {"currency": arguments.currency, "balance_model": arguments.balance_model}
    fields |= {name: getattr(arguments, name) for name in ("name", "email", "phone")}
    change = requests.customer_change({name: value for name, value in fields.items() if value is not None})
    reference = requests.reference(arguments.ref)
    created, view = service.put_customer(ledger, reference, change, time.time())
    _show_change("created" if created else "updated", "customer", view, arguments.json, out)
    return EXIT_OK


def _put_account(
    arguments: argparse.Namespace, _: WebhookEventsTable, ledger: LedgerTable, out: TextIO
) -> int:
    fields = {"customer_ref": arguments.customer_ref, "currency": arguments.currency, "name": arguments.name}
    change = requests.account_change({name: value for name, value in fields.items() if value is not None})
    reference = requests.reference(arguments.ref)
    created, view = service.put_account(ledger, reference, change, time.time())
    _show_change("created" if created else "updated", "account", view, arguments.json, out)
    return EXIT_OK


def _charge(arguments: argparse.Namespace, _: WebhookEventsTable, ledger: LedgerTable, out: TextIO) -> int:
    fields = {"id": arguments.charge_id, "amount": arguments.amount, "description": arguments.description}
    charge = requests.charge({name: value for name, value in fields.items() if value is not None})
    created, entry = service.post_charge(ledger, _balance_ref(arguments), charge, time.time())
    _show_change("posted" if created else "already posted", "entry", entry, arguments.json, out)
    return EXIT_OK


def _set_balance(
    arguments: argparse.Namespace, _: WebhookEventsTable, ledger: LedgerTable, out: TextIO
) -> int:
    new_balance, expected_version = requests.balance_change(
        {"balance": arguments.balance, "expected_version": arguments.expected_version}
    )
    view = service.set_balance(ledger, _balance_ref(arguments), new_balance, expected_version, time.time())
    _show_change("set", arguments.kind, view, arguments.json, out)
    return EXIT_OK


def _adjust(arguments: argparse.Namespace, _: WebhookEventsTable, ledger: LedgerTable, out: TextIO) -> int:
    if not arguments.operator:
        raise CommandError("say who you are: --operator NAME ($USER is not set)")
    adjustment_id = arguments.adjustment_id or str(uuid.uuid4())
    requests.adjustment(arguments.amount, arguments.reason, arguments.operator, adjustment_id)
    entry = service.adjust(
        ledger,
        _balance_ref(arguments),
        arguments.amount,
        reason=arguments.reason,
        operator=arguments.operator,
        adjustment_id=adjustment_id,
        now=time.time(),
    )
    _show_change("adjusted", "entry", entry, arguments.json, out)
    return EXIT_OK


def _reconcile_report(
    arguments: argparse.Namespace, _: WebhookEventsTable, ledger: LedgerTable, out: TextIO
) -> int:
    from moment_sync.reconcile_report import compare  # noqa: PLC0415 -- loads httpx only when used

    if bool(arguments.kind) != bool(arguments.ref):
        raise CommandError("name both the kind and the reference, or neither")
    only = [BalanceRef(BalanceKind(arguments.kind), arguments.ref)] if arguments.ref else None
    progress = cli_shell.Progress("reconcile-report", arguments.err)
    comparisons = compare(
        ledger,
        _moment_client(arguments),
        only,
        calls_per_second=arguments.calls_per_second,
        on_each=lambda done: progress.update(done, what="balances compared"),
    )
    progress.finish()
    unexplained = [comparison for comparison in comparisons if not comparison.explained]
    if arguments.json:
        rows = [
            {
                "kind": c.balance.kind.value,
                "ref": c.balance.ref,
                "ledger": c.ledger_balance,
                "moment": c.moment_balance,
                "sync": c.sync,
                "explained": c.explained,
                "note": c.note,
            }
            for c in comparisons
        ]
        if only is not None:
            _print({"balances": rows, "unexplained": len(unexplained)}, True, out)
        else:  # one document: the bills are added to it below
            arguments.report_document = {"balances": rows, "unexplained": len(unexplained)}
    else:
        table = [
            [
                c.balance.kind.value,
                c.balance.ref,
                c.ledger_balance,
                c.moment_balance,
                c.sync,
                c.note + ("" if c.explained else "  <-- unexplained"),
            ]
            for c in comparisons
        ]
        if table:
            cli_shell.table(
                ["kind", "reference", "ledger", "moment", "sync", "note"], table, out, right=frozenset({2, 3})
            )
        print(f"reconcile-report: {len(comparisons)} balances, {len(unexplained)} unexplained", file=out)
    if only is None:  # the whole ledger: its bills too, in the same document (docs/ledger.md#bills)
        bills = cli_bills.compare_bills_for_report(arguments, ledger, _moment_client(arguments))
        if arguments.json:
            _print(arguments.report_document, True, out)
        else:
            cli_bills.show_bill_comparisons(bills, out)
        return EXIT_FAILED if unexplained or any(not bill.explained for bill in bills) else EXIT_OK
    return EXIT_FAILED if unexplained else EXIT_OK


def _operator_link(
    arguments: argparse.Namespace, events: WebhookEventsTable, ledger: LedgerTable, out: TextIO
) -> int:
    """`link`, `unlink` and `adopt`: the ways out of a balance's `conflict` (moment_sync.operator_links)."""
    from moment_sync.moment_errors import MomentError  # noqa: PLC0415

    captured = io.StringIO()  # --json: what it did, as one document
    said: TextIO = captured if arguments.json else out
    try:
        if arguments.command == "unlink":
            operator_links.unlink(arguments, ledger, said)
        elif arguments.command == "link":
            operator_links.link(arguments, events, ledger, _moment_client(arguments), said)
        else:
            moment = _moment_client(arguments) if arguments.moment_wins else None
            operator_links.adopt(arguments, ledger, moment, said)
    except operator_links.LinkRefused as error:
        raise CommandError(str(error), EXIT_USAGE if error.usage else EXIT_FAILED) from None
    except MomentError as error:
        raise CommandError(f"Moment: {error}", EXIT_FAILED) from None
    if arguments.json:
        _print({"command": arguments.command, "done": captured.getvalue().splitlines()}, True, out)
    return EXIT_OK


def _moment_client(arguments: argparse.Namespace) -> Any:
    """The operator's Moment client: MOMENT_API_KEY, or the stack's MomentApiKeySecret."""
    if arguments.moment is not None:
        return arguments.moment
    from moment_sync.moment_client import DEFAULT_BASE_URL, MomentClient  # noqa: PLC0415
    from moment_sync.moment_errors import MomentKeyRefused  # noqa: PLC0415

    secret = getattr(arguments, "moment_key_secret", None)
    key = None if arguments.local else os.environ.get("MOMENT_API_KEY")
    if not key and secret:
        key = (
            arguments.clients.client("secretsmanager")
            .get_secret_value(SecretId=secret)["SecretString"]
            .strip()
        )
    if not key:
        raise CommandError("give the Moment API key: MOMENT_API_KEY, or --stack to read the stack's secret")
    try:
        return MomentClient(
            key,
            environment="dev" if arguments.local else arguments.environment,
            base_url=arguments.moment_base_url or DEFAULT_BASE_URL,
        )
    except MomentKeyRefused as error:
        raise CommandError(str(error)) from None


def _parked(
    arguments: argparse.Namespace, events: WebhookEventsTable, ledger: LedgerTable, out: TextIO
) -> int:
    reasons = [ParkReason(arguments.reason)] if arguments.reason else list(ParkReason)
    listed = [(reason, webhook_id) for reason in reasons for webhook_id in events.parked_ids(reason)]
    rows: list[dict[str, Any]] = []
    for reason, webhook_id in listed:
        event = events.get(webhook_id) or {}
        rows.append(
            {
                "webhook_id": webhook_id,
                "reason": reason.value,
                "received_at": event.get("received_at"),
                "detail": event.get("reason_detail"),
                "amount": event.get("amount"),
                "currency": event.get("currency"),
            }
        )
    result: dict[str, Any] = {"parked": rows}
    report = None
    if arguments.redrive:
        report = _redrive_with_progress(
            [webhook_id for _, webhook_id in listed], events, ledger, arguments.err
        )
        result["redrive"] = asdict(report)
    if arguments.json:
        _print(result, True, out)
    else:
        if rows:
            cli_shell.table(
                ["reason", "webhook id", "received at", "amount", "currency", "detail"],
                [
                    [
                        row["reason"],
                        row["webhook_id"],
                        row["received_at"],
                        row["amount"],
                        row["currency"],
                        row["detail"] or "",
                    ]
                    for row in rows
                ],
                out,
                right=frozenset({3}),
            )
        print(f"parked: {len(rows)} events", file=out)
        if report is not None:
            print(_redrive_sentence(report), file=out)
    return EXIT_FAILED if result.get("redrive", {}).get("errors") else EXIT_OK


def _forget(
    arguments: argparse.Namespace, events: WebhookEventsTable, ledger: LedgerTable, out: TextIO
) -> int:
    from moment_sync.forget import forget_customer  # noqa: PLC0415

    erasure = forget_customer(ledger, events, arguments.ref, time.time())
    if arguments.json:
        _print(asdict(erasure), True, out)
        return EXIT_OK
    for balance, fields in erasure.fields_erased.items():
        print(f"erased {', '.join(fields)} from {balance}", file=out)
    for bill, entry_ids in erasure.bill_entries_erased.items():
        print(f"erased the description of {len(entry_ids)} outside payments on {bill}", file=out)
    print(f"erased the raw body of {len(erasure.webhook_bodies_erased)} stored webhooks", file=out)
    for webhook_id in erasure.webhook_bodies_erased:
        print(f"  {webhook_id}", file=out)
    print(
        "kept: amounts, references, entries, event statuses, and each webhook's summary (amount, "
        "currency, Moment ids, event type): what settling a payment needs, which the law allows keeping",
        file=out,
    )
    if erasure.unsettled_webhooks:
        print(
            f"not settled yet: {len(erasure.unsettled_webhooks)} of those webhooks; "
            "they are still reconciled, from the kept summary",
            file=out,
        )
        for webhook_id in erasure.unsettled_webhooks:
            print(f"  {webhook_id}", file=out)
    print("Moment's own copy of the personal data is not changed here (ask Moment, or PATCH it)", file=out)
    return EXIT_OK


def _balance_ref(arguments: argparse.Namespace) -> BalanceRef:
    return BalanceRef(BalanceKind(arguments.kind), requests.reference(arguments.ref))


def _show_change(result: str, what: str, view: dict[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        _print({"result": result, what: view}, True, out)
        return
    print(f"{result}: {what} {view.get('ref', view.get('id'))}", file=out)
    _print({name: value for name, value in view.items() if name != "entries"}, False, out)


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key not in {"pk", "sk"}}


def _print(values: dict[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(values, indent=2, sort_keys=True, default=str), file=out)
        return
    width = max((len(name) for name in values), default=0)
    for name, value in values.items():
        print(f"{name:<{width}}  {cli_shell.plain(value)}", file=out)


def _republish_events(
    arguments: argparse.Namespace, events: WebhookEventsTable, ledger: LedgerTable, out: TextIO
) -> int:
    since = _ledger_time(arguments.since, "--since")
    until = _ledger_time(arguments.until, "--until") if arguments.until else iso_time(time.time())
    if since >= until:
        raise CommandError("--since must be before --until")
    put = None if arguments.dry_run else _event_bus(arguments)
    announcements, skipped = recorded_between(
        ledger, events, since, until, set(arguments.detail_type) if arguments.detail_type else None
    )
    report = republish(announcements, put)
    report.skipped_erased = skipped
    shown = {
        "since": since,
        "until": until,
        "found": dict(sorted(report.found.items())),
        "published": report.published,
        "refused": report.refused,
        "skipped_erased_customers": report.skipped_erased,
        "dry_run": bool(arguments.dry_run),
    }
    if arguments.json:
        _print(shown, True, out)
    else:
        found = ", ".join(f"{kind} {count}" for kind, count in sorted(report.found.items())) or "nothing"
        print(f"found {sum(report.found.values())} event(s) from {since} to {until}: {found}", file=out)
        if not arguments.dry_run:
            print(f"published {report.published}, refused {report.refused}", file=out)
        print(f"skipped {skipped} event(s) of erased customers", file=out)
    if report.refused:
        print(f"moment-sync: the bus refused {report.refused} event(s); run it again", file=arguments.err)
        return EXIT_FAILED
    return EXIT_OK


def _ledger_time(text: str, option: str) -> str:
    """An RFC 3339 time with a zone, as the ledger writes times (so they compare as text)."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise CommandError(f"{option} must be an RFC 3339 time with a zone, e.g. 2026-06-03T08:00:00Z")
    return iso_time(parsed.timestamp())


def _event_bus(arguments: argparse.Namespace) -> Any:
    """PutEvents of the bus: `make local`'s over its API (--local), else EventBridge's."""
    if arguments.local:
        url = f"http://127.0.0.1:{os.environ.get('LOCAL_API_PORT') or '3000'}/_local/events"

        def put_local(entries: list[dict[str, Any]]) -> int:
            import httpx  # noqa: PLC0415

            answer = httpx.post(url, json={"Entries": entries}, timeout=30, trust_env=False)
            answer.raise_for_status()
            return int(answer.json()["FailedEntryCount"])

        return put_local
    if not getattr(arguments, "event_bus", None):
        raise CommandError("name the event bus: --stack NAME, --event-bus or EVENT_BUS_NAME")
    client = arguments.clients.client("events")

    def put(entries: list[dict[str, Any]]) -> int:
        answer = client.put_events(
            Entries=[{**entry, "EventBusName": arguments.event_bus} for entry in entries]
        )
        return int(answer.get("FailedEntryCount", 0))

    return put
