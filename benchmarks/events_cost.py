"""Events out: what the pipes and the bus cost per million webhooks (modelled; docs/events.md).

Which webhook makes which events (each event is one pipe request after filtering, $0.40 per million,
and one custom event on the bus, $1.00 per million; records a filter drops are not billed):
- a payment applied to a balance: one `Payment Applied` (PaymentEventsPipe); and the balance's sync
  state, which the pusher announces once per push cycle of that balance, however many payments landed
  in it: `synced -> pending` (inside the intent's write when the look PATCHes Moment; one more
  conditional write of the head, `settle_sync_state`, when it does not: Moment already shows the
  balance, which the model keeps as its worst case) and `pending -> synced` inside the booked push's
  own write (SyncStateEventsPipe);
- a payment applied to a bill: one `Bill Paid` (BillEventsPipe) and no sync-state change (a bill
  becomes pending only when it has outside payments: docs/events.md);
- a redelivery, an ignored type or a parked event: no ledger entry (a parking is one `Event Parked`).

The sync-state part per payment is 2 events and 1 head write per push cycle that saw a payment, over
the payments in it. With a balance's payments spread at random over push cycles (Poisson, λ payments
per cycle), cycles with a payment per payment = (1 - e^-λ) / λ: 1 when payments are rare (the worst
case, each payment its own cycle), lower only for a balance paid several times within one
`PushSchedule` interval. The worst case is the headline; the typical case uses the stated traffic.
Not in the model: a push deferred or failing (each further look adds up to two transitions and one
head write, per look, not per webhook); LedgerChangeEventsPipe (charges, balance sets and adjustments
are the merchant's requests, not webhooks).

The baseline is the least an announcement can cost: one PutEvents entry per webhook straight from
the reconciler (which would lose the event whenever the function died between its ledger write and
the PutEvents: the reason for the outbox). Prices and assumptions are stated below.
"""

from __future__ import annotations

import math

from benchmarks.registry import Context, Row

TITLE = "events out: pipes + bus per million webhooks vs PutEvents from the handler (modelled)"
AREA = "events_cost"

# AWS list prices, us-east-1, in USD (not re-checked against the live pages: no network here).
PRICES = {
    "pipes_per_million_requests": 0.40,  # after filtering; a 64 KB chunk of a batch is one request
    "eventbridge_custom_events_per_million": 1.00,  # PutEvents to a custom bus, per 64 KB chunk
    "dynamodb_per_million_write_request_units": 0.625,  # on-demand, Standard table class
}
ASSUMPTIONS = {
    "sync_events_per_push_cycle": 2,  # synced -> pending, pending -> synced (a push booked at the first look)
    # synced -> pending (worst case: a look with no PATCH; a PATCH's intent carries it, no extra write);
    # -> synced is inside the booked push's write
    "settle_writes_per_push_cycle": 1,
    "head_write_units": 2,  # a head of up to 2 KB (its payments list grows between pushes)
    "push_cycles_per_month": 30 * 24 * 12,  # PushSchedule rate(5 minutes), template.yaml's default
    # The typical merchant: a million payment webhooks a month over 500,000 balances (each paid twice a
    # month), none of them on bills. Unmeasured: a merchant's own figures replace these.
    "webhooks_per_month": 1_000_000,
    "balances_paid_per_month": 500_000,
    "bill_payment_share": 0.0,
    # A balance paid this often within one push cycle shares its sync-state events (shown for scale).
    "busy_balance_payments_per_cycle": 10,
}


def cycles_per_payment(payments_per_cycle: float) -> float:
    """Push cycles with at least one payment, per payment, for Poisson arrivals at `payments_per_cycle`."""
    if payments_per_cycle <= 0:
        return 1.0
    return -math.expm1(-payments_per_cycle) / payments_per_cycle


def per_million(bill_share: float, cycles_per_balance_payment: float) -> dict[str, float]:
    """USD per million webhooks, by item, for a share of bill payments and a cycles-per-payment factor."""
    event_usd = PRICES["pipes_per_million_requests"] + PRICES["eventbridge_custom_events_per_million"]
    balance = 1 - bill_share
    sync_events = balance * ASSUMPTIONS["sync_events_per_push_cycle"] * cycles_per_balance_payment
    settle_units = (
        balance
        * ASSUMPTIONS["settle_writes_per_push_cycle"]
        * ASSUMPTIONS["head_write_units"]
        * cycles_per_balance_payment
    )
    return {
        "payment_applied": balance * event_usd,  # PaymentEventsPipe
        "bill_paid": bill_share * event_usd,  # BillEventsPipe
        "sync_state_events": sync_events * event_usd,  # SyncStateEventsPipe
        "sync_state_writes": settle_units * PRICES["dynamodb_per_million_write_request_units"],
    }


def _explained(items: dict[str, float]) -> str:
    return ", ".join(f"{name} ${value:.2f}" for name, value in items.items())


def run(context: Context) -> list[Row]:
    worst = per_million(bill_share=0.0, cycles_per_balance_payment=1.0)
    rate = ASSUMPTIONS["webhooks_per_month"] * (1 - ASSUMPTIONS["bill_payment_share"])
    per_cycle = rate / ASSUMPTIONS["balances_paid_per_month"] / ASSUMPTIONS["push_cycles_per_month"]
    typical_factor = cycles_per_payment(per_cycle)
    typical = per_million(ASSUMPTIONS["bill_payment_share"], typical_factor)
    busy_factor = cycles_per_payment(ASSUMPTIONS["busy_balance_payments_per_cycle"])
    busy = per_million(0.0, busy_factor)
    bills = per_million(1.0, 1.0)
    baseline = PRICES["eventbridge_custom_events_per_million"]  # one PutEvents entry per webhook
    context.progress(
        f"events_cost: worst {sum(worst.values()):.2f}, typical {sum(typical.values()):.2f} USD "
        f"per million webhooks ({_explained(worst)})"
    )
    assumed = "assumptions: " + ", ".join(f"{name} {value:g}" for name, value in ASSUMPTIONS.items())
    modelled = "modelled from list prices and the stated assumptions, nothing measured"
    details = {"prices": PRICES, "assumptions": ASSUMPTIONS}
    return [
        Row(
            area=AREA,
            name="events_cost.per_million_webhooks",
            title="pipes and bus per million webhooks, worst case, USD",
            measured=round(sum(worst.values()), 2),
            baseline=baseline,
            unit="USD",
            measured_label="every webhook a balance payment in a push cycle of its own: 3 pipe requests + "
            "3 bus events (Payment Applied, synced -> pending, pending -> synced) + 1 head write (2 WU)",
            baseline_label="1 PutEvents entry per webhook from the handler (loses events on a crash)",
            notes=[
                _explained(worst) + " per million webhooks",
                f"a bill payment instead: 1 pipe request (BillEventsPipe) + 1 bus event, "
                f"${sum(bills.values()):.2f} per million; a balance paid "
                f"{ASSUMPTIONS['busy_balance_payments_per_cycle']} times per push cycle: "
                f"${sum(busy.values()):.2f} (its sync-state events shared, {busy_factor:.3f} cycles "
                "per payment)",
                "not bounded per webhook: a deferred or failing push adds up to 2 events and 1 head write "
                "per look of the pusher",
                modelled,
            ],
            details={**details, "items": worst},
        ),
        Row(
            area=AREA,
            name="events_cost.per_million_webhooks_typical",
            title="pipes and bus per million webhooks, typical traffic, USD",
            measured=round(sum(typical.values()), 2),
            baseline=baseline,
            unit="USD",
            measured_label=f"{ASSUMPTIONS['webhooks_per_month']:,} webhooks a month over "
            f"{ASSUMPTIONS['balances_paid_per_month']:,} balances, "
            f"{ASSUMPTIONS['bill_payment_share']:.0%} on bills: {per_cycle:.2g} payments per balance "
            f"per push cycle, {typical_factor:.4f} cycles per payment",
            baseline_label="1 PutEvents entry per webhook from the handler (loses events on a crash)",
            notes=[_explained(typical) + " per million webhooks", assumed, modelled],
            details={**details, "items": typical, "cycles_per_payment": typical_factor},
        ),
    ]
