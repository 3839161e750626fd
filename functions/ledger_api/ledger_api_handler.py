"""The merchant's ledger API (docs/api/openapi.yaml): customers, accounts, charges, balances, events."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from moment_sync.ledger_api import handle_request
from moment_sync.observability import logger, metrics
from moment_sync.runtime import LedgerDependencies, ledger_dependencies


@logger.inject_lambda_context(clear_state=True, correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(
    event: dict[str, Any], context: LambdaContext, dependencies: LedgerDependencies | None = None
) -> dict[str, Any]:
    return handle_request(event, context, dependencies or ledger_dependencies())
