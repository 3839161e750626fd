"""Events out: what the pipes and the bus cost per million webhooks (modelled; docs/events.md).

Per applied webhook the bus carries one `Payment Applied`, and the balance's sync state changes
twice at most (synced -> pending when the payment lands, pending -> synced when the next push books
it): three events, each a pipe request after filtering and a custom event on the bus. The first
change costs one more conditional write of the head (`settle_sync_state`); the second rides in the
booked push's own write. Filtered-out records are not billed by Pipes.

The baseline is the least an announcement can cost: one PutEvents entry per webhook straight from
the reconciler (which would lose the event whenever the function died between its ledger write and
the PutEvents: the reason for the outbox). Prices and assumptions are stated below.
"""

from __future__ import annotations

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
    "events_per_webhook": 3,  # Payment Applied + synced->pending + pending->synced (the worst case)
    "settle_writes_per_webhook": 1,  # synced->pending; ->synced is inside the booked push's write
    "head_write_units": 2,  # a head of up to 2 KB (its payments list grows between pushes)
}


def run(context: Context) -> list[Row]:
    million = 1_000_000
    events = ASSUMPTIONS["events_per_webhook"] * million
    pipes = events / million * PRICES["pipes_per_million_requests"]
    bus = events / million * PRICES["eventbridge_custom_events_per_million"]
    writes = (
        ASSUMPTIONS["settle_writes_per_webhook"]
        * ASSUMPTIONS["head_write_units"]
        * PRICES["dynamodb_per_million_write_request_units"]
    )
    measured = pipes + bus + writes
    baseline = PRICES["eventbridge_custom_events_per_million"]  # one PutEvents entry per webhook
    context.progress(f"events_cost: pipes {pipes:.2f} + bus {bus:.2f} + head writes {writes:.2f} USD")
    return [
        Row(
            area=AREA,
            name="events_cost.per_million_webhooks",
            title="pipes and bus per million webhooks, USD",
            measured=round(measured, 2),
            baseline=baseline,
            unit="USD",
            measured_label="3 pipe requests + 3 bus events + 1 head write (2 WU) per webhook",
            baseline_label="1 PutEvents entry per webhook from the handler (loses events on a crash)",
            notes=[
                f"pipes {pipes:.2f}, bus {bus:.2f}, sync-state writes {writes:.2f} USD per million webhooks",
                "modelled from list prices and the stated assumptions, nothing measured",
            ],
            details={"prices": PRICES, "assumptions": ASSUMPTIONS},
        )
    ]
