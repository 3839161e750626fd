"""On a schedule: push balances whose version is ahead of Moment's, within this run's time budget."""

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from moment_sync.observability import logger, metrics
from moment_sync.pusher import BalancePusher
from moment_sync.runtime import balance_pusher


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(
    event: dict[str, Any], context: LambdaContext, pusher: BalancePusher | None = None
) -> dict[str, Any]:
    pusher = pusher or balance_pusher()
    report = pusher.push_pending(time_left=lambda: context.get_remaining_time_in_millis() / 1000)
    logger.info("push run finished", extra=asdict(report))
    return asdict(report)
