"""The operator CLI's bill commands against moto's tables: raise, pay outside Moment, void, show and
list, with the API's own rules and refusals as one line (docs/ledger.md#bills)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from moment_sync.cli import main
from support.ledger import LedgerHarness


@pytest.fixture
def harness(dynamodb: Any) -> LedgerHarness:
    harness = LedgerHarness(dynamodb)
    harness.open_customer("UCR1")
    return harness


def cli(harness: LedgerHarness, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["--events-table", harness.events_name, "--ledger-table", harness.ledger_name, *argv],
        out=out,
        err=err,
    )
    return code, out.getvalue(), err.getvalue()


RAISE = ("bill", "put", "FEE", "--customer", "UCR1", "--currency", "ZAR", "--amount-due", "1000")


def test_raise_pay_void_show_and_list(harness: LedgerHarness) -> None:
    assert cli(harness, *RAISE, "--due-date", "2026-09-30")[0] == 0
    code, text, _ = cli(harness, *RAISE, "--due-date", "2026-09-30")
    assert (code, text.splitlines()[0]) == (0, "already raised: bill FEE")

    code, text, _ = cli(harness, "bill", "pay", "FEE", "--id", "cash-1", "--amount", "400")
    assert (code, text.strip()) == (0, "recorded: outside_payment:cash-1 400 on bill FEE")
    code, text, _ = cli(harness, "bill", "pay", "FEE", "--id", "cash-1", "--amount", "400")
    assert text.startswith("already recorded")

    code, text, _ = cli(harness, "--json", "bill", "show", "FEE")
    shown = json.loads(text)
    assert (shown["amount_paid"], shown["amount_remaining"], shown["sync"]["outside_pending"]) == (
        400,
        600,
        400,
    )

    code, text, _ = cli(harness, "bills", "--customer", "UCR1", "--status", "unpaid")
    assert code == 0 and "customer UCR1: 1 bills" in text and "FEE" in text

    code, text, _ = cli(harness, "bill", "void", "FEE")
    assert code == 0 and "voided: bill FEE" in text
    code, text, err = cli(harness, "bill", "pay", "FEE", "--id", "cash-2", "--amount", "1")
    assert (code, err.strip()) == (
        1,
        "moment-sync: bill FEE is voided and takes no payment; raise a new bill if money is still owed "
        "(bill-voided)",
    )
    assert cli(harness, "verify")[1].strip() == "verify: 1 balances and 1 bills checked, all agree"


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        ((*RAISE[:-1], "0"), 2, "amount_due must be between 1 and 99999999"),
        ((*RAISE, "--due-date", "2026-02-30"), 2, "due_date must be a real calendar date"),
        (
            ("bill", "put", "FEE", "--customer", "NOBODY", "--currency", "ZAR", "--amount-due", "5"),
            1,
            "not-found",
        ),
        (("bill", "show", "NOPE"), 1, "bill NOPE does not exist"),
        (("bill", "pay", "FEE", "--id", "p", "--amount", "-5"), 2, "amount must be between 1 and 99999999"),
        (
            ("bills", "--customer", "UCR1", "--status", "open"),
            2,
            "status must be one of unpaid, paid, voided",
        ),
    ],
)
def test_wrong_arguments_and_refusals_are_one_line(
    harness: LedgerHarness, argv: tuple[str, ...], code: int, says: str
) -> None:
    got, _text, err = cli(harness, *argv)
    assert got == code and says in err and err.count("\n") == 1, err


def test_a_changed_bill_is_refused_with_the_reason(harness: LedgerHarness) -> None:
    assert cli(harness, *RAISE)[0] == 0
    code, _text, err = cli(harness, *RAISE[:-1], "2000")
    assert code == 1 and "(bill-immutable)" in err and "void it" in err
