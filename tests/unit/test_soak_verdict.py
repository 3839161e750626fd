"""The soak's verdict finds each way money can go wrong: a test of the checker, so a green soak means
something. Each case starts from a quiet, correct end state and breaks one thing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from soak.traffic import Sent
from soak.verdict import judge

BODY = b'{"id": "evt_1", "type": "obligation.amount_applied"}'


def correct_end() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any], Sent]:
    """S1 was charged 5000 and paid 1200 (two deliveries of one application); Moment agrees."""
    sent = Sent()
    sent.bodies = {"msg_1": BODY, "msg_1_re": BODY}
    sent.payments = {"ob_1": ("customer", "S1", 1200)}
    sent.messages_of["ob_1"] = ["msg_1", "msg_1_re"]
    sent.charges[("customer", "S1")]["C1"] = 5000
    sent.rejected_ids = {"msg_forged"}
    sent.rejected_answers[401] = 1
    events = [
        {"webhook_id": "msg_1", "body": BODY, "status": "applied"},
        {"webhook_id": "msg_1_re", "body": BODY, "status": "duplicate"},
    ]
    ledger = [
        {"pk": "CUSTOMER#S1", "sk": "HEAD", "kind": "customer", "ref": "S1", "balance": 3800, "version": 2},
        {"pk": "CUSTOMER#S1", "sk": "ENTRY#charge:C1", "amount": 5000},
        {"pk": "CUSTOMER#S1", "sk": "ENTRY#payment:ob_1", "amount": -1200},
    ]
    moment = {"customers": [{"external_reference": "S1", "balance": 3800}], "accounts": []}
    return events, ledger, moment, sent


Breakage = Callable[[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any], Sent], None]


def test_the_correct_end_passes() -> None:
    verdict = judge(*correct_end())
    assert verdict.ok and verdict.problems == [] and verdict.balances_agree


def _lose_the_payment(events: Any, ledger: list[dict[str, Any]], moment: Any, sent: Sent) -> None:
    ledger[:] = [item for item in ledger if "payment" not in item["sk"]]
    ledger[0]["balance"] = 5000
    moment["customers"][0]["balance"] = 5000


def _apply_it_twice(events: Any, ledger: list[dict[str, Any]], moment: Any, sent: Sent) -> None:
    ledger.append({"pk": "CUSTOMER#S2", "sk": "ENTRY#payment:ob_1", "amount": -1200})


def _apply_a_forgery(events: Any, ledger: list[dict[str, Any]], moment: Any, sent: Sent) -> None:
    ledger.append({"pk": "CUSTOMER#S1", "sk": "ENTRY#payment:ob_forged", "amount": -99})
    ledger[0]["balance"] -= 99
    moment["customers"][0]["balance"] -= 99


def _store_a_forgery(events: list[dict[str, Any]], *_: Any) -> None:
    events.append({"webhook_id": "msg_forged", "body": b"{}", "status": "parked", "reason": "invalid"})


def _drop_a_webhook(events: list[dict[str, Any]], *_: Any) -> None:
    del events[1]


def _lose_a_charge(events: Any, ledger: list[dict[str, Any]], moment: Any, sent: Sent) -> None:
    sent.charges[("customer", "S1")]["C2"] = 700


def _disagree_with_moment(events: Any, ledger: Any, moment: dict[str, Any], sent: Sent) -> None:
    moment["customers"][0]["balance"] = 5000


def _leave_it_pending(events: Any, ledger: list[dict[str, Any]], *_: Any) -> None:
    ledger[0]["push_shard"] = "push#3"


def _break_the_sum(events: Any, ledger: list[dict[str, Any]], moment: dict[str, Any], sent: Sent) -> None:
    ledger[0]["balance"] = 3000
    moment["customers"][0]["balance"] = 3000


def _leave_an_event_unfinished(events: list[dict[str, Any]], *_: Any) -> None:
    events[1]["status"] = "received"


def _let_a_forgery_in(events: Any, ledger: Any, moment: Any, sent: Sent) -> None:
    sent.rejected_answers[200] = 1


@pytest.mark.parametrize(
    ("breakage", "lost", "double_applied", "balances_agree"),
    [
        (_lose_the_payment, 1, 0, True),
        (_apply_it_twice, 0, 1, True),
        (_apply_a_forgery, 0, 1, True),
        (_store_a_forgery, 0, 0, True),
        (_drop_a_webhook, 1, 0, True),
        (_lose_a_charge, 1, 0, True),
        (_disagree_with_moment, 0, 0, False),
        (_leave_it_pending, 0, 0, False),
        (_break_the_sum, 0, 0, False),
        (_leave_an_event_unfinished, 0, 0, True),
        (_let_a_forgery_in, 0, 0, True),
    ],
)
def test_each_breakage_fails_the_verdict(
    breakage: Breakage, lost: int, double_applied: int, balances_agree: bool
) -> None:
    events, ledger, moment, sent = correct_end()  # a new one each time
    breakage(events, ledger, moment, sent)
    verdict = judge(events, ledger, moment, sent)
    assert not verdict.ok and verdict.problems, verdict
    assert (verdict.lost, verdict.double_applied, verdict.balances_agree) == (
        lost,
        double_applied,
        balances_agree,
    )


def correct_bill_end() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any], Sent]:
    """M1's bill FEE: paid 700 at Moment and 300 in cash; Moment shows 1000 paid. KIT voided."""
    events, ledger, moment, sent = correct_end()
    sent.bodies["msg_2"] = BODY
    sent.payments["ob_2"] = ("bill", "FEE", 700)
    sent.messages_of["ob_2"] = ["msg_2"]
    sent.outside_payments["FEE"]["CASH1"] = 300
    sent.voided_bills.add("KIT")
    events.append({"webhook_id": "msg_2", "body": BODY, "status": "applied"})
    ledger += [
        {
            "pk": "BILL#FEE",
            "sk": "HEAD",
            "kind": "bill",
            "ref": "FEE",
            "amount_paid": 1000,
            "status": "unpaid",
        },
        {"pk": "BILL#FEE", "sk": "ENTRY#payment:ob_2", "amount": 700},
        {"pk": "BILL#FEE", "sk": "ENTRY#outside_payment:CASH1", "amount": 300},
        {"pk": "BILL#KIT", "sk": "HEAD", "kind": "bill", "ref": "KIT", "amount_paid": 0, "status": "voided"},
    ]
    moment["bills"] = [
        {"external_reference": "FEE", "amount_paid": 1000, "status": "unpaid"},
        {"external_reference": "KIT", "amount_paid": 0, "status": "voided"},
    ]
    return events, ledger, moment, sent


def test_the_correct_end_with_bills_passes() -> None:
    verdict = judge(*correct_bill_end())
    assert verdict.ok, verdict.problems


def _cash_counted_twice_at_moment(events: Any, ledger: Any, moment: dict[str, Any], sent: Sent) -> None:
    moment["bills"][0]["amount_paid"] = 1300


def _cash_lost(events: Any, ledger: list[dict[str, Any]], moment: Any, sent: Sent) -> None:
    ledger[:] = [item for item in ledger if "CASH1" not in item["sk"]]
    next(item for item in ledger if item["pk"] == "BILL#FEE" and item["sk"] == "HEAD")["amount_paid"] = 700


def _bill_payment_on_a_balance(events: Any, ledger: list[dict[str, Any]], moment: Any, sent: Sent) -> None:
    entry = next(item for item in ledger if item["sk"] == "ENTRY#payment:ob_2")
    entry["pk"], entry["amount"] = "CUSTOMER#S1", -700


def _void_not_at_moment(events: Any, ledger: Any, moment: dict[str, Any], sent: Sent) -> None:
    moment["bills"][1]["status"] = "unpaid"


def _bill_left_pending(events: Any, ledger: list[dict[str, Any]], moment: Any, sent: Sent) -> None:
    next(item for item in ledger if item["pk"] == "BILL#FEE" and item["sk"] == "HEAD")["push_shard"] = (
        "billpush#1"
    )


@pytest.mark.parametrize(
    ("breakage", "lost", "twice", "agree"),
    [
        (_cash_counted_twice_at_moment, 0, 0, False),
        (_cash_lost, 1, 0, False),
        (_bill_payment_on_a_balance, 0, 0, False),
        (_void_not_at_moment, 0, 0, False),
        (_bill_left_pending, 0, 0, False),
    ],
)
def test_the_verdict_finds_each_way_a_bill_goes_wrong(
    breakage: Breakage, lost: int, twice: int, agree: bool
) -> None:
    events, ledger, moment, sent = correct_bill_end()
    breakage(events, ledger, moment, sent)
    verdict = judge(events, ledger, moment, sent)
    assert not verdict.ok
    assert (verdict.lost, verdict.double_applied, verdict.balances_agree) == (lost, twice, agree), (
        verdict.problems
    )


def _payment_applied(event_id: str, application_id: str, amount: int) -> dict[str, Any]:
    return {"event_id": event_id, "application_id": application_id, "amount": str(amount)}


def test_a_bill_payment_is_owed_one_bill_paid_and_one_announced_as_a_balances_is_wrong() -> None:
    """A Moment payment on a bill (sk `ENTRY#payment:…` too) is announced as `Bill Paid`
    (docs/events.md#bills): without it, it was never announced; as a `Payment Applied`, it is wrong."""
    balance_payment = _payment_applied("CUSTOMER#S1|ENTRY#payment:ob_1", "ob_1", -1200)
    on_a_bill = _payment_applied("BILL#FEE|ENTRY#payment:ob_2", "ob_2", 700)
    bill_paid = {**on_a_bill, "detail_type": "Bill Paid", "entry_kind": "payment"}
    cash = {
        "event_id": "BILL#FEE|ENTRY#outside_payment:C1",
        "detail_type": "Bill Paid",
        "entry_kind": "outside_payment",
    }
    verdict = judge(
        *correct_bill_end(), announced=[balance_payment, bill_paid, cash, balance_payment, bill_paid]
    )
    assert verdict.ok and verdict.payments_announced_once, verdict.problems
    verdict = judge(*correct_bill_end(), announced=[balance_payment])
    assert not verdict.payments_announced_once and not verdict.ok
    assert verdict.problems == ["applied payments never announced: 1: BILL#FEE|ENTRY#payment:ob_2"]
    verdict = judge(*correct_bill_end(), announced=[balance_payment, on_a_bill])
    assert not verdict.payments_announced_once and not verdict.ok
    assert verdict.problems == [
        "payments announced as another application or amount: 1: BILL#FEE|ENTRY#payment:ob_2"
    ]


def test_entries_keyed_by_time_are_judged_by_their_entry_id_and_announced_by_their_real_key() -> None:
    """Entries are keyed `ENTRY#<created_at>#<entry id>` (docs/ledger.md#entries-keyed-by-time): the
    verdict reads them by `entry_id`, and an event's id is `<pk>|<the real sk>`."""
    events, ledger, moment, sent = correct_end()
    at = "2026-12-03T23:40:14.123Z"
    for item in ledger[1:]:
        item["entry_id"] = item["sk"].removeprefix("ENTRY#")
        item["sk"] = f"ENTRY#{at}#{item['entry_id']}"
    ledger.append({"pk": "CUSTOMER#S1", "sk": "SOURCE#charge:C1", "entry_id": "charge:C1", "created_at": at})
    announced = [_payment_applied(f"CUSTOMER#S1|ENTRY#{at}#payment:ob_1", "ob_1", -1200)]
    verdict = judge(events, ledger, moment, sent, announced=announced)
    assert verdict.ok and verdict.payments_announced_once, verdict.problems
    # one application under two times is applied twice
    ledger.append({**ledger[2], "sk": "ENTRY#2026-12-04T00:00:00.000Z#payment:ob_1"})
    assert judge(events, ledger, moment, sent).double_applied == 1
