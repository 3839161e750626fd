"""WebhookEvents stream (INSERTs only) → each payment applied to the ledger exactly once."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from moment_sync.observability import logger, metrics
from moment_sync.runtime import LedgerDependencies, ledger_dependencies
from moment_sync.stream_batch import reconcile_stream_batch


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(
    event: dict[str, Any], context: LambdaContext, dependencies: LedgerDependencies | None = None
) -> dict[str, Any]:
    dependencies = dependencies or ledger_dependencies()
    return reconcile_stream_batch(
        event, context, ledger=dependencies.ledger, events=dependencies.events, now=dependencies.clock
    )
