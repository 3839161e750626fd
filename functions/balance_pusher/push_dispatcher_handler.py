"""On the push schedule: start one balance pusher worker per shard of PendingPush (asynchronously, so
the shards push in parallel), and count the shards whose worker has not finished a run for a while
(`PushShardsBehind`, alarmed). docs/pusher.md#fan-out."""

import os
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from moment_sync.observability import MetricUnit, logger, metrics
from moment_sync.push_fanout import SHARD_STALE_SECONDS, dispatch, shards_behind
from moment_sync.runtime import push_dispatcher


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    dispatcher = push_dispatcher()
    behind = shards_behind(
        dispatcher.leases,
        dispatcher.clock(),
        float(os.environ.get("PUSH_SHARD_STALE_SECONDS", SHARD_STALE_SECONDS)),
    )
    # Counted every run, 0 included: its absence is the dispatcher not running (PusherNotRunning).
    metrics.add_metric(name="PushShardsBehind", unit=MetricUnit.Count, value=len(behind))
    if behind:
        logger.warning("push shards behind", extra={"shards": behind})
    started = dispatch(dispatcher.workers.start)
    logger.info("push workers started", extra={"shards": started})
    return {"started": started, "behind": behind}
