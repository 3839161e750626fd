"""What the soak does, drawn from its seed before anything runs, so a seed replays the same workload.

The books: customers on the customer-balance model (`S0001`), and customers on the account-balance
model (`F0001`) with one to three accounts (`F0001-A`), some opened while the traffic runs; and
members on the bill model (`M0001`), each with a bill paid at Moment and by cash (`M0001-FEE`, never
voided) and half of them with a second bill paid only in cash, which the merchant may void
(`M0001-KIT`).

The traffic is a list of steps in the order they are started. Of the `webhooks` deliveries, about
60% are first deliveries of a message (nearly all payments; a few for someone the merchant never
opened, a few of an event type this product ignores), 30% duplicates (the same message again, or
the same event under a new message id, up to 40 messages later: out of order), 5% forged and 5%
stale (a replayed message, or a valid signature on a payment never made, outside the ±180 s
window). Merchant requests (charges, credits, a charge sent twice, balance sets, new accounts) are
spread among them, about one per four messages. About one payment in six is a bill payment at
Moment (`data.bill_id`); about one merchant request in five is cash taken for a bill (some sent
twice) and now and then the merchant voids a second bill.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["customer", "account"]

DUPLICATE_SHARE = 0.30
FORGED_SHARE = 0.05
STALE_SHARE = 0.05
STRANGER_SHARE = 0.03  # of the first deliveries: a payment for someone the merchant never opened
IGNORED_SHARE = 0.02  # of the first deliveries: an event type this product does not act on
MERCHANT_REQUESTS_PER_MESSAGE = 0.25
OUT_OF_ORDER_SPAN = 40  # a duplicate arrives up to this many messages after its original
BILL_PAYMENT_SHARE = 0.15  # of the payments: to a bill at Moment
BILL_CASH_SHARE = 0.2  # of the merchant's requests: cash taken for a bill
BILL_MEMBERS_PER_BALANCES = 6  # one member on the bill model per this many balances
# Large enough that no bill is settled in a soak: cash on a paid bill would rightly be blocked.
BILL_AMOUNT_DUE = 90_000_000


@dataclass(frozen=True)
class Balance:
    kind: Kind
    ref: str
    customer_ref: str  # the account's customer; the customer itself otherwise


@dataclass(frozen=True)
class Bill:
    ref: str
    customer_ref: str
    amount_due: int
    paid_at_moment: bool  # Moment's payments go to it (never voided); else cash only, maybe voided


@dataclass(frozen=True)
class Books:
    """Who the merchant has: opened before the traffic (`opened`), or during it (`late`)."""

    customers: dict[str, str]  # ref -> balance model ("customer" or "accounts")
    opened: list[Balance]
    late: list[Balance]
    bills: list[Bill] = field(default_factory=list)  # raised before the traffic


# --- steps -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pay:
    """Message `number`: Moment applies a payment to `target` and sends its webhook. The target must
    be on Moment by then; if it is not yet, `fallback` (opened before the traffic) is paid."""

    number: int
    target: Balance
    fallback: Balance
    amount: int


@dataclass(frozen=True)
class PayBill:
    """Message `number`: Moment applies a payment to `bill` (its webhook has `data.bill_id`). If the bill
    is not on Moment yet, `fallback` (a balance opened before the traffic) is paid."""

    number: int
    bill: Bill
    fallback: Balance
    amount: int


@dataclass(frozen=True)
class PayStranger:
    """Message `number`: a payment for a Moment customer the merchant never opened (parked unmatched)."""

    number: int
    amount: int


@dataclass(frozen=True)
class OtherEvent:
    """Message `number`: an event of a type this product ignores."""

    number: int


@dataclass(frozen=True)
class Again:
    """Message `number` delivered again: the same message id, or the same event under a new one."""

    number: int
    same_message: bool


@dataclass(frozen=True)
class Forged:
    """Not from Moment: message `number`'s event signed with another secret under a new id, its id with
    a body changed after signing, or a made-up signature."""

    number: int
    how: Literal["wrong-secret", "tampered-body", "made-up-signature"]


@dataclass(frozen=True)
class Stale:
    """Correctly signed but outside the tolerance: message `number` replayed as it was sent
    `seconds_off` ago, or a payment never made, signed `seconds_off` away from now."""

    number: int
    how: Literal["replayed", "never-made"]
    seconds_off: int


@dataclass(frozen=True)
class Charge:
    target: Balance
    charge_id: str
    amount: int  # negative: a credit
    sent_twice: bool  # the merchant's client retries a request that succeeded


@dataclass(frozen=True)
class SetBalance:
    target: Balance
    balance: int


@dataclass(frozen=True)
class OpenAccount:
    account: Balance
    first_charge: int


@dataclass(frozen=True)
class BillCash:
    """Cash at the counter for `bill` (POST /bills/{ref}/payments); refused once the bill is voided."""

    bill: Bill
    payment_id: str
    amount: int
    sent_twice: bool


@dataclass(frozen=True)
class VoidBill:
    bill: Bill


Message = Pay | PayBill | PayStranger | OtherEvent
WebhookStep = Message | Again | Forged | Stale
MerchantStep = Charge | SetBalance | OpenAccount | BillCash | VoidBill
Step = WebhookStep | MerchantStep


@dataclass(frozen=True)
class Workload:
    seed: int
    webhooks: int
    books: Books
    opening_charges: list[Charge]
    steps: list[Step]
    counts: dict[str, int] = field(default_factory=dict)  # messages, duplicates, forged, stale, merchant


def default_balances(webhooks: int) -> int:
    """A few hundred balances for the full run (10,000 webhooks: 333), a dozen for a short one."""
    return max(12, min(400, webhooks // 30))


def draw_workload(seed: int, webhooks: int, balances: int | None = None) -> Workload:
    if webhooks < 20:
        raise ValueError("a soak needs at least 20 webhooks")
    rng = random.Random(f"soak-workload:{seed}")  # noqa: S311 -- a reproducible test workload
    books = _draw_books(rng, balances or default_balances(webhooks))
    duplicates = round(webhooks * DUPLICATE_SHARE)
    forged = round(webhooks * FORGED_SHARE)
    stale = round(webhooks * STALE_SHARE)
    messages = webhooks - duplicates - forged - stale

    timeline: list[tuple[float, Step]] = []
    for number in range(messages):
        timeline.append((number, _draw_message(rng, number, books)))
    for _ in range(duplicates):
        number = rng.randrange(messages)
        timeline.append((number + rng.uniform(0.5, OUT_OF_ORDER_SPAN), Again(number, rng.random() < 0.67)))
    for _ in range(forged):
        number = rng.randrange(messages)
        forgery: Literal["wrong-secret", "tampered-body", "made-up-signature"] = rng.choice(
            ["wrong-secret", "tampered-body", "made-up-signature"]
        )
        timeline.append((number + rng.uniform(0.5, 10), Forged(number, forgery)))
    for _ in range(stale):
        number = rng.randrange(messages)
        seconds_off = rng.choice([-1, 1]) * rng.randint(181, 3600)
        staleness: Literal["replayed", "never-made"] = rng.choice(["replayed", "never-made"])
        if staleness == "replayed":
            seconds_off = -abs(seconds_off)  # a replay was signed in the past
        timeline.append((number + rng.uniform(0.5, 10), Stale(number, staleness, seconds_off)))
    merchant = round(messages * MERCHANT_REQUESTS_PER_MESSAGE)
    late = list(books.late)
    for index in range(merchant):
        position = rng.uniform(0, messages)
        if late and index % max(1, merchant // (len(books.late) + 1)) == 0:
            account = late.pop(0)
            timeline.append((position, OpenAccount(account, rng.randint(1_000, 60_000))))
        else:
            timeline.append((position, _draw_merchant_request(rng, books)))
    timeline += _draw_voids(rng, books, messages)
    timeline.sort(key=lambda item: item[0])  # stable: an Again never precedes its original
    return Workload(
        seed=seed,
        webhooks=webhooks,
        books=books,
        opening_charges=[
            Charge(balance, f"open-{balance.ref}", rng.randint(5_000, 90_000), sent_twice=False)
            for balance in books.opened
        ],
        steps=[step for _, step in timeline],
        counts={
            "messages": messages,
            "duplicates": duplicates,
            "forged": forged,
            "stale": stale,
            "merchant": merchant,
        },
    )


def _draw_voids(rng: random.Random, books: Books, messages: int) -> list[tuple[float, Step]]:
    """Half the cash-only bills are voided by the merchant at some point of the traffic."""
    return [
        (rng.uniform(0, messages), VoidBill(bill))
        for bill in books.bills
        if not bill.paid_at_moment and rng.random() < 0.5
    ]


def _draw_books(rng: random.Random, balances: int) -> Books:
    customers: dict[str, str] = {}
    opened: list[Balance] = []
    late: list[Balance] = []
    number = 0
    bills: list[Bill] = []
    for member in range(1, max(2, balances // BILL_MEMBERS_PER_BALANCES) + 1):
        ref = f"M{member:04d}"
        customers[ref] = "customer"
        bills.append(Bill(f"{ref}-FEE", ref, BILL_AMOUNT_DUE, paid_at_moment=True))
        if rng.random() < 0.5:
            bills.append(Bill(f"{ref}-KIT", ref, BILL_AMOUNT_DUE, paid_at_moment=False))
    while len(opened) + len(late) < balances:
        number += 1
        if rng.random() < 0.6:
            ref = f"S{number:04d}"
            customers[ref] = "customer"
            opened.append(Balance("customer", ref, ref))
            continue
        ref = f"F{number:04d}"
        customers[ref] = "accounts"
        for letter in "ABC"[: rng.randint(1, 3)]:
            account = Balance("account", f"{ref}-{letter}", ref)
            # A family's first account is opened before the traffic; a later one, now and then, during it.
            (late if letter != "A" and rng.random() < 0.3 else opened).append(account)
    return Books(customers, opened, late, bills)


def _draw_message(rng: random.Random, number: int, books: Books) -> Message:
    roll = rng.random()
    if roll < STRANGER_SHARE:
        return PayStranger(number, rng.randint(100, 30_000))
    if roll < STRANGER_SHARE + IGNORED_SHARE:
        return OtherEvent(number)
    payable = [bill for bill in books.bills if bill.paid_at_moment]
    if payable and rng.random() < BILL_PAYMENT_SHARE:
        return PayBill(number, rng.choice(payable), rng.choice(books.opened), rng.randint(100, 30_000))
    everyone = books.opened + books.late
    return Pay(number, rng.choice(everyone), rng.choice(books.opened), rng.randint(100, 30_000))


def _draw_merchant_request(rng: random.Random, books: Books) -> MerchantStep:
    if books.bills and rng.random() < BILL_CASH_SHARE:
        bill = rng.choice(books.bills)
        payment_id = f"CASH{rng.randrange(10**12):012d}"
        return BillCash(bill, payment_id, rng.randint(1_000, 60_000), sent_twice=rng.random() < 0.1)
    target = rng.choice(books.opened)
    if rng.random() < 0.2:
        return SetBalance(target, rng.randint(0, 100_000))
    amount = rng.randint(1_000, 60_000) * (-1 if rng.random() < 0.1 else 1)
    return Charge(target, f"C{rng.randrange(10**12):012d}", amount, sent_twice=rng.random() < 0.1)
