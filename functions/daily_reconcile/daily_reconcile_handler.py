"""Daily: compare every balance linked to Moment with Moment's own (rate-limited), count the
unexplained differences in `ReconcileDifferences`, which an alarm watches."""

import os
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from moment_sync.bill_report import compare_bills
from moment_sync.observability import logger, metrics
from moment_sync.reconcile_report import compare
from moment_sync.runtime import ledger_dependencies, moment_client


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext, comparisons: Any = None) -> dict[str, Any]:
    bill_comparisons: list[Any] = []
    if comparisons is None:
        comparisons = compare(
            ledger_dependencies().ledger,
            moment_client(),
            calls_per_second=float(os.environ.get("RECONCILE_CALLS_PER_SECOND", "5")),
        )
        # Bills too (docs/ledger.md#bills): their unexplained differences count in the same metric.
        bill_comparisons = compare_bills(
            ledger_dependencies().ledger,
            moment_client(),
            calls_per_second=float(os.environ.get("RECONCILE_CALLS_PER_SECOND", "5")),
        )
    for bill in [comparison for comparison in bill_comparisons if not comparison.explained]:
        logger.warning(
            "ledger and Moment disagree on a bill",
            extra={
                "reference": bill.bill.ref,
                "balance_kind": "bill",
                "ledger_amount_paid": bill.ledger_paid,
                "moment_amount_paid": bill.moment_paid,
                "ledger_status": bill.ledger_status,
                "moment_status": bill.moment_status,
                "sync": bill.sync,
                "note": bill.note,
            },
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
