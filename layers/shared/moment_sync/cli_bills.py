"""The operator CLI's bill commands (docs/ledger.md#bills): `bill show|put|void|pay` and `bills`.

Each checks its arguments with the ledger API's own rules and calls the same use case
(`moment_sync.ledger.bill_service`); what the ledger refuses is a plain line and exit 1.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from moment_sync import cli_shell
from moment_sync.adapters.ledger_table import LedgerTable
from moment_sync.adapters.webhook_events_table import WebhookEventsTable
from moment_sync.ledger import bill_service, requests
from moment_sync.ledger.bills import BillRef
from moment_sync.ledger.model import BalanceKind, BalanceRef

if TYPE_CHECKING:  # bill_report loads the Moment client (httpx): only reconcile-report needs it
    from moment_sync.bill_report import BillComparison

Handler = Callable[[argparse.Namespace, WebhookEventsTable, LedgerTable, TextIO], int]


def add_commands(commands: Any) -> None:
    bill = commands.add_parser(
        "bill", help="a bill: show, put (raise), void, pay (a payment taken outside Moment)"
    )
    actions = bill.add_subparsers(dest="bill_action", required=True, metavar="ACTION")

    show = actions.add_parser("show", help="a bill, its sync state and its newest payments")
    show.add_argument("ref")
    show.add_argument("--entries", type=int, default=20, help="how many payments (default 20)")

    put = actions.add_parser(
        "put", help="raise a bill (as PUT /bills/REF); the same bill again changes nothing"
    )
    put.add_argument("ref")
    owner = put.add_mutually_exclusive_group(required=True)
    owner.add_argument("--customer", help="the customer who owes it")
    owner.add_argument("--account", help="the account that owes it")
    put.add_argument("--currency", required=True)
    put.add_argument("--amount-due", required=True, type=int, help="minor units, 1 to 99,999,999")
    put.add_argument("--bill-date", help="YYYY-MM-DD")
    put.add_argument("--due-date", help="YYYY-MM-DD")
    put.add_argument("--description")

    void = actions.add_parser("void", help="void a bill (idempotent; Moment is told on the next push)")
    void.add_argument("ref")

    pay = actions.add_parser("pay", help="record a payment taken outside Moment, once per --id")
    pay.add_argument("ref")
    pay.add_argument(
        "--id", required=True, dest="payment_id", help="the merchant's payment id (idempotency key)"
    )
    pay.add_argument("--amount", required=True, type=int, help="minor units")
    pay.add_argument("--description")

    listing = commands.add_parser("bills", help="a customer's or an account's bills, open ones first")
    whose = listing.add_mutually_exclusive_group(required=True)
    whose.add_argument("--customer")
    whose.add_argument("--account")
    listing.add_argument("--status", help="unpaid, paid or voided")
    listing.add_argument("--limit", type=int, default=200, help="at most this many (default 200)")


def _bill(arguments: argparse.Namespace, _: WebhookEventsTable, ledger: LedgerTable, out: TextIO) -> int:
    reference = requests.reference(arguments.ref)
    now = time.time()
    if arguments.bill_action == "show":
        limit = max(1, min(arguments.entries, requests.MAX_PAGE))
        _show(bill_service.read_bill(ledger, BillRef(reference), limit=limit), arguments.json, out)
    elif arguments.bill_action == "put":
        fields = {
            "customer": arguments.customer,
            "account": arguments.account,
            "currency": arguments.currency,
            "amount_due": arguments.amount_due,
            "bill_date": arguments.bill_date,
            "due_date": arguments.due_date,
            "description": arguments.description,
        }
        change = requests.bill_change({name: value for name, value in fields.items() if value is not None})
        created, view = bill_service.put_bill(ledger, reference, change, now)
        _said("created" if created else "already raised", view, arguments.json, out)
    elif arguments.bill_action == "void":
        _said("voided", bill_service.void_bill(ledger, reference, now), arguments.json, out)
    else:
        fields = {
            "id": arguments.payment_id,
            "amount": arguments.amount,
            "description": arguments.description,
        }
        payment = requests.outside_payment(
            {name: value for name, value in fields.items() if value is not None}
        )
        created, entry = bill_service.pay_bill(ledger, reference, payment, now)
        if arguments.json:
            print(
                json.dumps(
                    {"result": "recorded" if created else "already recorded", "entry": entry}, indent=2
                ),
                file=out,
            )
        else:
            print(
                f"{'recorded' if created else 'already recorded'}: {entry['id']} "
                f"{entry['amount']} on bill {reference}",
                file=out,
            )
    return 0


def _bills(arguments: argparse.Namespace, _: WebhookEventsTable, ledger: LedgerTable, out: TextIO) -> int:
    kind = BalanceKind.CUSTOMER if arguments.customer else BalanceKind.ACCOUNT
    owner = BalanceRef(kind, requests.reference(arguments.customer or arguments.account))
    query = {"limit": str(max(1, min(arguments.limit, requests.MAX_PAGE)))}
    if arguments.status is not None:
        query["status"] = arguments.status
    limit, _cursor, status = requests.bill_page(query)
    listed = bill_service.list_bills(ledger, owner, status=status, limit=limit)
    if arguments.json:
        print(json.dumps(listed, indent=2, sort_keys=True), file=out)
        return 0
    bills = listed["bills"]
    print(
        f"{owner}: {len(bills)} bills"
        + (" (more: use --json and its next_cursor)" if "next_cursor" in listed else ""),
        file=out,
    )
    if bills:
        cli_shell.table(
            ["bill", "status", "due", "amount due", "paid", "remaining", "currency"],
            [
                [
                    bill["reference"],
                    bill["status"],
                    bill.get("due_date", "-"),
                    bill["amount_due"],
                    bill["amount_paid"],
                    bill["amount_remaining"],
                    bill["currency"],
                ]
                for bill in bills
            ],
            out,
            right=frozenset({3, 4, 5}),
        )
    return 0


def _said(result: str, view: dict[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps({"result": result, "bill": view}, indent=2, sort_keys=True), file=out)
        return
    print(f"{result}: bill {view['reference']}", file=out)
    _show(view, False, out)


def _show(view: dict[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(view, indent=2, sort_keys=True), file=out)
        return
    shown = {
        name: value for name, value in view.items() if name not in {"entries", "sync", "owner", "next_cursor"}
    }
    shown["owner"] = f"{view['owner']['kind']} {view['owner']['reference']}"
    shown["sync_state"] = view["sync"]["state"]
    shown["outside_pending"] = view["sync"]["outside_pending"]
    shown = {name: value for name, value in shown.items() if value is not None}
    width = max(len(name) for name in shown)
    for name, value in shown.items():
        print(f"{name:<{width}}  {cli_shell.plain(value)}", file=out)
    if view["entries"]:
        print(file=out)
        cli_shell.table(
            ["created at", "kind", "amount", "entry"],
            [[entry["created_at"], entry["kind"], entry["amount"], entry["id"]] for entry in view["entries"]],
            out,
            right=frozenset({2}),
        )


def compare_bills_for_report(
    arguments: argparse.Namespace, ledger: LedgerTable, moment: Any
) -> list[BillComparison]:
    """`reconcile-report`'s second half: every linked bill against Moment's, with progress on stderr."""
    from moment_sync.bill_report import compare_bills  # noqa: PLC0415 -- loads httpx only when used

    progress = cli_shell.Progress("reconcile-report", arguments.err)
    comparisons = compare_bills(
        ledger,
        moment,
        calls_per_second=arguments.calls_per_second,
        on_each=lambda done: progress.update(done, what="bills compared"),
    )
    progress.finish()
    if arguments.json:
        rows = [
            {
                "ref": c.bill.ref,
                "ledger_amount_paid": c.ledger_paid,
                "moment_amount_paid": c.moment_paid,
                "ledger_status": c.ledger_status,
                "moment_status": c.moment_status,
                "sync": c.sync,
                "explained": c.explained,
                "note": c.note,
            }
            for c in comparisons
        ]
        document = getattr(arguments, "report_document", {})
        arguments.report_document = document | {
            "bills": rows,
            "unexplained_bills": sum(not c.explained for c in comparisons),
        }
    return comparisons


def show_bill_comparisons(comparisons: list[BillComparison], out: TextIO) -> None:
    """A table and a line, only when the ledger links any bill (a ledger of balances reads as before)."""
    if not comparisons:
        return
    cli_shell.table(
        ["bill", "ledger paid", "moment paid", "ledger", "moment", "sync", "note"],
        [
            [
                c.bill.ref,
                c.ledger_paid,
                c.moment_paid,
                c.ledger_status,
                c.moment_status,
                c.sync,
                c.note + ("" if c.explained else "  <-- unexplained"),
            ]
            for c in comparisons
        ],
        out,
        right=frozenset({1, 2}),
    )
    unexplained = sum(not c.explained for c in comparisons)
    print(f"reconcile-report: {len(comparisons)} bills, {unexplained} unexplained", file=out)


HANDLERS: dict[str, Handler] = {"bill": _bill, "bills": _bills}
