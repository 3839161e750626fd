"""Daily: compare every balance linked to Moment with Moment's own (rate-limited), count the
unexplained differences in `ReconcileDifferences`, which an alarm watches."""

import os
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from moment_sync.observability import logger, metrics
from moment_sync.reconcile_report import compare
from moment_sync.runtime import ledger_dependencies, moment_client


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext, comparisons: Any = None) -> dict[str, Any]:
    if comparisons is None:
        comparisons = compare(
            ledger_dependencies().ledger,
            moment_client(),
            calls_per_second=float(os.environ.get("RECONCILE_CALLS_PER_SECOND", "5")),
        )
    unexplained = [comparison for comparison in comparisons if not comparison.explained]
    for comparison in unexplained:
        logger.warning(
            "ledger and Moment disagree",
            extra={
                "reference": comparison.balance.ref,
                "balance_kind": comparison.balance.kind.value,
                "ledger_balance": comparison.ledger_balance,
                "moment_balance": comparison.moment_balance,
                "sync": comparison.sync,
                "note": comparison.note,
            },
        )
    return {"checked": len(comparisons), "unexplained": len(unexplained)}
