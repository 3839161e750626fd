"""Push balances whose version is ahead of Moment's, then bills, within this run's time budget (bills
get what the balances left: a bill's owner is created at Moment by the balance push).

Two modes (docs/pusher.md#fan-out):
- `{"shard": N}`, a worker started by the dispatcher (push_dispatcher_handler): only shard N of
  PendingPush, under the lease `pusher#shard-N`; a worker that finds it held does nothing.
- anything else (an operator's invoke, the local stack's schedule): every shard whose lease is free,
  under the `pusher` lease as well, so two such runs never overlap.
"""

from contextlib import ExitStack
from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from moment_sync.bill_pusher import BillPusher, BillPushResult
from moment_sync.leases import HeldLease, Leases, exclusive_run
from moment_sync.ledger.model import PUSH_SHARDS
from moment_sync.observability import MetricUnit, logger, metrics
from moment_sync.push_fanout import FINISHED_AT
from moment_sync.pusher import PUSHER_LEASE, BalancePusher, shard_lease
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
    shard = _shard_of(event)
    pusher = pusher or balance_pusher()
    # The same ledger, Moment client, concurrency and shared 429 back-off as the balances'.
    bills = bills or BillPusher(
        ledger=pusher.ledger,
        moment=pusher.moment,
        now=pusher.now,
        concurrency=pusher.concurrency,
        events=pusher.events,
        backoff=pusher.backoff,
    )
    leases = leases or pusher.ledger.leases()

    def time_left() -> float:
        return context.get_remaining_time_in_millis() / 1000

    def hold(name: str) -> Any:
        return exclusive_run(
            leases, name, now=pusher.now, time_left=time_left, invocation_id=context.aws_request_id
        )

    with ExitStack() as held:
        run_lease = held.enter_context(hold(shard_lease(shard) if shard is not None else PUSHER_LEASE))
        if run_lease is None:
            metrics.add_metric(name="PushRunSkipped", unit=MetricUnit.Count, value=1)
            skipped: dict[str, Any] = {"skipped": "another push run holds the lease"}
            return skipped if shard is None else {**skipped, "shard": shard}
        if shard is not None:
            shard_leases = {shard: run_lease}
        else:  # every shard no worker is pushing right now
            shard_leases = {
                number: lease
                for number in range(PUSH_SHARDS)
                if (lease := held.enter_context(hold(shard_lease(number))))
            }
        shards = sorted(shard_leases)
        report = pusher.push_pending(time_left=time_left, shards=shards)
        bill_report = bills.push_pending(time_left=time_left, shards=shards)
        if bill_report.results.get(BillPushResult.WAITING.value):
            # Bills whose owners Moment lacked asked for them: create those owners, then those bills, now
            # (an owner in a shard this run does not hold is created by that shard's worker, next run).
            report = pusher.push_pending(time_left=time_left, shards=shards)
            bill_report = bills.push_pending(time_left=time_left, shards=shards)
        _finished(shard_leases.values(), pusher.now())
    result = {**asdict(report), "bills": asdict(bill_report), "shards": shards}
    logger.info("push run finished", extra=result)
    return result


def _shard_of(event: Any) -> int | None:
    shard = event.get("shard") if isinstance(event, dict) else None
    if shard is None:
        return None
    if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < PUSH_SHARDS:
        raise ValueError(f"shard must be a whole number from 0 to {PUSH_SHARDS - 1}, got {shard!r}")
    return shard


def _finished(leases: Any, now: float) -> None:
    """Each shard's heartbeat for the dispatcher's `PushShardsBehind` (best effort: a lease taken over
    meanwhile only makes its shard look behind until its next run)."""
    for lease in leases:
        lease_held: HeldLease = lease
        try:
            lease_held.save({**lease_held.state, FINISHED_AT: int(now)})
        except Exception:
            logger.exception("shard heartbeat not saved", extra={"lease": lease_held.name})
