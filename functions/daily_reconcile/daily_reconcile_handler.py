"""On a schedule: continue the pass that compares every balance and bill linked to Moment with
Moment's own (rate-limited, within this run's time budget; the cursor lives in the `daily-check`
lease), count the unexplained differences in `ReconcileDifferences`, which an alarm watches (blocked bills
also in `ReconcileBillsBlocked`, alarmed on their own), and
`ReconcilePassCompleted` when the pass ends. One run at a time: a run that finds the lease held does
nothing."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from moment_sync.bill_report import BillComparison
from moment_sync.leases import Leases, exclusive_run
from moment_sync.observability import MetricUnit, logger, metrics
from moment_sync.reconcile_report import DAILY_CHECK_LEASE, DailyCheck
from moment_sync.runtime import daily_check


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(
    event: dict[str, Any],
    context: LambdaContext,
    check: DailyCheck | None = None,
    leases: Leases | None = None,
) -> dict[str, Any]:
    check = check or daily_check()

    def time_left() -> float:
        return context.get_remaining_time_in_millis() / 1000

    with exclusive_run(
        leases or check.ledger.leases(),
        DAILY_CHECK_LEASE,
        now=check.now,
        time_left=time_left,
        invocation_id=context.aws_request_id,
    ) as lease:
        if lease is None:
            metrics.add_metric(name="ReconcileRunSkipped", unit=MetricUnit.Count, value=1)
            return {"skipped": "another run of the daily check holds the lease"}
        run = check.run(lease, time_left)
    for comparison in run.unexplained:
        if isinstance(comparison, BillComparison):
            logger.warning(
                "ledger and Moment disagree on a bill",
                extra={
                    "reference": comparison.bill.ref,
                    "balance_kind": "bill",
                    "ledger_amount_paid": comparison.ledger_paid,
                    "moment_amount_paid": comparison.moment_paid,
                    "ledger_status": comparison.ledger_status,
                    "moment_status": comparison.moment_status,
                    "sync": comparison.sync,
                    "note": comparison.note,
                },
            )
            continue
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
    return {
        "checked": len(run.comparisons),
        "unexplained": len(run.unexplained),
        "blocked_bills": len(run.blocked_bills),
        "pass_started": run.pass_started,
        "pass_completed": run.pass_completed,
        "stopped_early": run.stopped_early,
        "not_due": run.not_due,
    }
