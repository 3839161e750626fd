"""On a schedule: reconcile events still unfinished after the grace period (stream misses, unmatched),
reading the `Unfinished` index forward from the cursors kept in the `redrive` lease's state.
Invoked with `{"ignore_backoff": true}` (an operator), it does the same, tries every unmatched event
now, and starts a full pass over the whole index from the start of retention (for events that reached
it behind a cursor) that the scheduled runs carry on until it is through. One run at a time: a run
that finds the `redrive` lease held does nothing."""

import os
from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from moment_sync.leases import Leases, exclusive_run
from moment_sync.observability import MetricUnit, logger, metrics
from moment_sync.pipe_health import check_event_pipes, pipe_names
from moment_sync.redrive import LOOKUPS_PER_EVENT, REDRIVE_LEASE, redrive_stuck
from moment_sync.runtime import (
    LedgerDependencies,
    aws_client,
    ledger_dependencies,
    moment_directory,
    moment_worst_call_seconds,
)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(
    event: dict[str, Any],
    context: LambdaContext,
    dependencies: LedgerDependencies | None = None,
    leases: Leases | None = None,
    pipes: Any = None,
) -> dict[str, Any]:
    dependencies = dependencies or ledger_dependencies()
    # Every run, lease or not: a stopped event pipe emits no metrics of its own (docs/events.md).
    names = pipe_names(os.environ.get("EVENT_PIPE_NAMES"))
    if names:
        check_event_pipes(pipes or aws_client("pipes"), names)

    def time_left() -> float:
        return context.get_remaining_time_in_millis() / 1000

    with exclusive_run(
        leases or dependencies.ledger.leases(),
        REDRIVE_LEASE,
        now=dependencies.clock,
        time_left=time_left,
        invocation_id=context.aws_request_id,
    ) as lease:
        if lease is None:
            metrics.add_metric(name="RedriveRunSkipped", unit=MetricUnit.Count, value=1)
            return {"skipped": "another re-drive run holds the lease"}
        report = redrive_stuck(
            events=dependencies.events,
            ledger=dependencies.ledger,
            directory=moment_directory(),
            now=dependencies.clock,
            grace_seconds=int(os.environ.get("REDRIVE_GRACE_SECONDS", "600")),
            time_left=time_left,
            back_off=event.get("ignore_backoff") is not True,
            full_pass=event.get("ignore_backoff") is True,
            # An unmatched event's questions to Moment are asked only with time for their worst case.
            lookup_seconds=LOOKUPS_PER_EVENT * moment_worst_call_seconds(),
            # The cursors and the retry list live in the lease's state (docs/ledger.md#re-drive).
            lease=lease,
        )
    logger.info("re-drive finished", extra=asdict(report))
    return asdict(report)
