"""On a schedule: reconcile events still unfinished after the grace period (stream misses, unmatched).
Invoked with `{"ignore_backoff": true}` (an operator), it tries every unmatched event now."""

import os
from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from moment_sync.observability import logger, metrics
from moment_sync.redrive import redrive_stuck
from moment_sync.runtime import LedgerDependencies, ledger_dependencies, moment_directory


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(
    event: dict[str, Any], context: LambdaContext, dependencies: LedgerDependencies | None = None
) -> dict[str, Any]:
    dependencies = dependencies or ledger_dependencies()
    report = redrive_stuck(
        events=dependencies.events,
        ledger=dependencies.ledger,
        directory=moment_directory(),
        now=dependencies.clock,
        grace_seconds=int(os.environ.get("REDRIVE_GRACE_SECONDS", "600")),
        time_left=lambda: context.get_remaining_time_in_millis() / 1000,
        back_off=event.get("ignore_backoff") is not True,
    )
    logger.info("re-drive finished", extra=asdict(report))
    return asdict(report)
