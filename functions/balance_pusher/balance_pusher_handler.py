"""On a schedule: push balances whose version is ahead of Moment's, then bills, within this run's time
budget (bills get what the balances left: a bill's owner is created at Moment by the balance push).
One run at a time: a run that finds the `pusher` lease held does nothing
(docs/pusher.md#one-run-at-a-time)."""

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from moment_sync.bill_pusher import BillPusher, BillPushResult
from moment_sync.leases import Leases, exclusive_run
from moment_sync.observability import MetricUnit, logger, metrics
from moment_sync.pusher import PUSHER_LEASE, BalancePusher
from moment_sync.runtime import balance_pusher


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(
    event: dict[str, Any],
    context: LambdaContext,
    pusher: BalancePusher | None = None,
    leases: Leases | None = None,
    bills: BillPusher | None = None,
) -> dict[str, Any]:
    pusher = pusher or balance_pusher()
    # The same ledger, Moment client and concurrency as the balances'.
    bills = bills or BillPusher(
        ledger=pusher.ledger, moment=pusher.moment, now=pusher.now, concurrency=pusher.concurrency
    )

    def time_left() -> float:
        return context.get_remaining_time_in_millis() / 1000

    with exclusive_run(
        leases or pusher.ledger.leases(),
        PUSHER_LEASE,
        now=pusher.now,
        time_left=time_left,
        invocation_id=context.aws_request_id,
    ) as lease:
        if lease is None:
            metrics.add_metric(name="PushRunSkipped", unit=MetricUnit.Count, value=1)
            return {"skipped": "another push run holds the lease"}
        report = pusher.push_pending(time_left=time_left)
        bill_report = bills.push_pending(time_left=time_left)
        if bill_report.results.get(BillPushResult.WAITING.value):
            # Bills whose owners Moment lacked asked for them: create those owners, then those bills, now.
            report = pusher.push_pending(time_left=time_left)
            bill_report = bills.push_pending(time_left=time_left)
    result = {**asdict(report), "bills": asdict(bill_report)}
    logger.info("push run finished", extra=result)
    return result
