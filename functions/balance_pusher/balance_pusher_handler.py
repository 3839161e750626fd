"""On a schedule: push balances whose version is ahead of Moment's, within this run's time budget.
One run at a time: a run that finds the `pusher` lease held does nothing
(docs/pusher.md#one-run-at-a-time)."""

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

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
) -> dict[str, Any]:
    pusher = pusher or balance_pusher()

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
    logger.info("push run finished", extra=asdict(report))
    return asdict(report)
