"""A DynamoDB stream event source mapping, as Lambda runs one, for a function in this process.

moto keeps the stream but runs no event source mappings. This reads the stream (StreamReader, a
checkpoint per shard) and invokes the function with the mapping's settings from template.yaml,
following the AWS Lambda documentation for DynamoDB streams:

- Filtering: a record that matches no FilterCriteria pattern is dropped (never sent, never retried).
- Batching: up to BatchSize records of one shard, in order; a smaller batch waits up to
  MaximumBatchingWindowInSeconds for more. One batch per shard at a time, so a failing batch holds
  back the records behind it in its shard.
- ReportBatchItemFailures: the response's `batchItemFailures`. None or empty: the batch succeeded.
  Otherwise the lowest failed sequence number is the checkpoint, and the batch is retried from it
  (the records before it are done). An item without an `itemIdentifier`, or one that names no record
  of the batch, makes the response malformed: a complete failure of the batch, retried whole and
  never bisected (bisection is for function errors only).
- A function error (the handler raised, or it was killed at its timeout) fails the whole batch. With
  BisectBatchOnFunctionError, a failed batch of more than one record is split in two halves, retried
  separately, first half first; a partial failure is split at the returned sequence number instead,
  which is the retry above.
- MaximumRetryAttempts: each retry of the same records counts one attempt: a whole batch again, or
  its records from a partial failure's checkpoint. Splitting a batch on a function error does not
  count toward the quota ("Using AWS Lambda with Amazon DynamoDB", error handling): both halves keep
  the count of the batch they came from, so a record that always fails is isolated and retried its
  full quota without its neighbours being given up with it. When the attempts are spent, or a record
  is older than MaximumRecordAgeInSeconds, Lambda skips those records and sends the batch's metadata
  (not the records) to the OnFailure destination (`DDBStreamBatchInfo`), then carries on.

Retries here wait `retry_delay_seconds`, doubling, at most `max_retry_delay_seconds` (Lambda's own
backoff is not documented).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from local_stack.functions import Invocation
from local_stack.streams import StreamReader, matches
from local_stack.template import Intrinsics, resource_properties

Notify = Callable[[str], None]


@dataclass(frozen=True)
class MappingSettings:
    """A DynamoDB event of a function in template.yaml, resolved for the local stack."""

    function_logical_id: str
    batch_size: int = 100
    batching_window_seconds: float = 0.0
    bisect_on_function_error: bool = False
    maximum_retry_attempts: int = -1  # -1: until the record expires
    maximum_record_age_seconds: int = -1
    report_batch_item_failures: bool = False
    filters: tuple[dict[str, Any], ...] = ()
    on_failure_destination: str | None = None  # the queue's ARN

    @classmethod
    def from_template(
        cls, function_logical_id: str, event_name: str, intrinsics: Intrinsics
    ) -> MappingSettings:
        properties = resource_properties(function_logical_id)["Events"][event_name]["Properties"]

        def value(name: str, default: Any) -> Any:
            return intrinsics.resolve(properties[name]) if name in properties else default

        destination = properties.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        return cls(
            function_logical_id=function_logical_id,
            batch_size=int(value("BatchSize", 100)),
            batching_window_seconds=float(value("MaximumBatchingWindowInSeconds", 0)),
            bisect_on_function_error=str(value("BisectBatchOnFunctionError", False)).lower() == "true",
            maximum_retry_attempts=int(value("MaximumRetryAttempts", -1)),
            maximum_record_age_seconds=int(value("MaximumRecordAgeInSeconds", -1)),
            report_batch_item_failures="ReportBatchItemFailures"
            in properties.get("FunctionResponseTypes", []),
            filters=tuple(
                json.loads(entry["Pattern"])
                for entry in properties.get("FilterCriteria", {}).get("Filters", [])
            ),
            on_failure_destination=intrinsics.resolve(destination) if destination else None,
        )


@dataclass
class SourceStats:
    invocations: int = 0
    records_sent: int = 0
    records_filtered_out: int = 0
    batch_item_failures: int = 0
    function_errors: int = 0
    retries: int = 0
    bisections: int = 0
    batches_to_destination: int = 0


@dataclass
class _Pending:
    record: dict[str, Any]
    seen_at: float


@dataclass
class _Outcome:
    kind: str  # "ok", "partial", "failed" (a function error) or "malformed" (an unusable response)
    failed_from: int = 0  # "partial": the index of the lowest failed record
    function_error: str | None = None


@dataclass
class StreamEventSource:
    settings: MappingSettings
    reader: StreamReader
    invoke: Callable[[dict[str, Any]], Invocation]
    send_to_destination: Callable[[dict[str, Any]], None]
    function_arn: str
    notify: Notify = lambda _line: None
    poll_seconds: float = 0.25  # Lambda polls a shard four times a second
    retry_delay_seconds: float = 0.1
    max_retry_delay_seconds: float = 2.0
    clock: Callable[[], float] = time.time
    stats: SourceStats = field(default_factory=SourceStats)

    def __post_init__(self) -> None:
        self._pending: dict[str, deque[_Pending]] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._changed = threading.Condition()
        self._cycles = 0
        self._idle = False
        self._flush_until = 0  # cycles up to this one ignore the batching window
        self._thread = threading.Thread(target=self._run, name="stream-event-source", daemon=True)

    # --- running ------------------------------------------------------------------------------

    def start(self) -> StreamEventSource:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def wait_until_idle(self, timeout: float = 30.0) -> bool:
        """Wait for a full poll, begun after this call, that found nothing new and left nothing pending
        (the batching window is skipped meanwhile). False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            target = self._cycles + 2  # the cycle under way may have read before the caller's writes
            self._flush_until = max(self._flush_until, target)
            self._wake.set()
            while not (self._cycles >= target and self._idle):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                if self._cycles >= target:  # not idle yet: keep flushing
                    target = self._cycles + 1
                    self._flush_until = max(self._flush_until, target)
                    self._wake.set()
                self._changed.wait(min(remaining, 0.5))
            return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as error:  # a poller that dies silently would look like a quiet stream
                self.notify(f"stream poller error (retrying): {type(error).__name__}: {error}")
                self._stop.wait(1.0)
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def poll_once(self) -> None:
        """Read what is new on every shard, then send each shard's batches that are due."""
        cycle = self._cycles + 1
        flushing = cycle <= self._flush_until
        found_new = False
        for shard_id, records in self.reader.new_records_by_shard(limit=1000):
            queue = self._pending.setdefault(shard_id, deque())
            now = self.clock()
            for record in records:
                if matches(record, list(self.settings.filters)):
                    queue.append(_Pending(record, now))
                    found_new = True
                else:
                    self.stats.records_filtered_out += 1
        for shard_id, queue in self._pending.items():
            while queue and (flushing or self._due(queue)):
                batch = [queue.popleft().record for _ in range(min(self.settings.batch_size, len(queue)))]
                self._deliver(shard_id, batch)
                if self._stop.is_set():
                    return
        with self._changed:
            self._cycles = cycle
            self._idle = not found_new and not any(self._pending.values())
            self._changed.notify_all()

    def _due(self, queue: deque[_Pending]) -> bool:
        if len(queue) >= self.settings.batch_size:
            return True
        return self.clock() - queue[0].seen_at >= self.settings.batching_window_seconds

    # --- one batch, retried as the mapping says -----------------------------------------------

    def _deliver(self, shard_id: str, batch: list[dict[str, Any]]) -> None:
        work: deque[tuple[list[dict[str, Any]], int]] = deque([(batch, 0)])
        while work and not self._stop.is_set():
            records, retries = work.popleft()
            records = self._drop_expired(shard_id, records, retries)
            if not records:
                continue
            outcome = self._invoke(records)
            if outcome.kind == "ok":
                continue
            if outcome.kind == "failed" and self.settings.bisect_on_function_error and len(records) > 1:
                # A split is not a retry: both halves keep the count of the batch they came from.
                self.stats.bisections += 1
                self._stop.wait(min(self.max_retry_delay_seconds, self.retry_delay_seconds * 2**retries))
                half = len(records) // 2
                work.appendleft((records[half:], retries))
                work.appendleft((records[:half], retries))
                continue
            failed = records[outcome.failed_from :] if outcome.kind == "partial" else records
            if 0 <= self.settings.maximum_retry_attempts <= retries:
                self._discard(shard_id, failed, "RetryAttemptsExhausted", retries + 1, outcome.function_error)
                continue
            self.stats.retries += 1
            self._stop.wait(min(self.max_retry_delay_seconds, self.retry_delay_seconds * 2**retries))
            work.appendleft((failed, retries + 1))

    def _invoke(self, records: list[dict[str, Any]]) -> _Outcome:
        self.stats.invocations += 1
        self.stats.records_sent += len(records)
        invocation = self.invoke({"Records": records})
        if invocation.failed:
            self.stats.function_errors += 1
            self.notify(f"reconciler: batch of {len(records)} failed ({invocation.error}); retrying")
            return _Outcome("failed", function_error="Unhandled")
        if not self.settings.report_batch_item_failures:
            return _Outcome("ok")
        failures = (
            (invocation.response or {}).get("batchItemFailures")
            if isinstance(invocation.response, dict)
            else None
        )
        if not failures:
            return _Outcome("ok")
        sequence_numbers = [record["dynamodb"]["SequenceNumber"] for record in records]
        identifiers = [
            failure.get("itemIdentifier") if isinstance(failure, dict) else None for failure in failures
        ]
        if not all(identifier in sequence_numbers for identifier in identifiers):
            self.notify(f"reconciler: unusable batchItemFailures {identifiers!r}: the whole batch is retried")
            return _Outcome("malformed")
        lowest = min(sequence_numbers.index(identifier) for identifier in identifiers)
        self.stats.batch_item_failures += len(identifiers)
        self.notify(
            f"reconciler: {len(identifiers)} of {len(records)} records failed; "
            f"retrying from sequence number {sequence_numbers[lowest]}"
        )
        return _Outcome("partial", failed_from=lowest)

    def _drop_expired(
        self, shard_id: str, records: list[dict[str, Any]], retries: int
    ) -> list[dict[str, Any]]:
        if self.settings.maximum_record_age_seconds < 0:
            return records
        oldest_allowed = self.clock() - self.settings.maximum_record_age_seconds
        expired = [
            record
            for record in records
            if float(record["dynamodb"].get("ApproximateCreationDateTime", self.clock())) < oldest_allowed
        ]
        if expired:
            self._discard(shard_id, expired, "RecordAgeExceeded", retries, None)
        return [record for record in records if record not in expired]

    def _discard(
        self,
        shard_id: str,
        records: list[dict[str, Any]],
        condition: str,
        invoke_count: int,
        function_error: str | None,
    ) -> None:
        """Skip `records` and send their metadata to the on-failure destination, as Lambda does."""
        self.stats.batches_to_destination += 1
        arrivals = [float(r["dynamodb"].get("ApproximateCreationDateTime", 0)) for r in records]
        response_context: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
        if function_error:
            response_context["functionError"] = function_error
        message = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self.function_arn,
                "condition": condition,
                "approximateInvokeCount": invoke_count,
            },
            "responseContext": response_context,
            "version": "1.0",
            "timestamp": _iso(self.clock(), milliseconds=True),
            "DDBStreamBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": records[0]["dynamodb"]["SequenceNumber"],
                "endSequenceNumber": records[-1]["dynamodb"]["SequenceNumber"],
                "approximateArrivalOfFirstRecord": _iso(min(arrivals)),
                "approximateArrivalOfLastRecord": _iso(max(arrivals)),
                "batchSize": len(records),
                "streamArn": self.reader.stream_arn,
            },
        }
        self.send_to_destination(message)
        self.notify(
            f"reconciler: gave up on {len(records)} record(s) ({condition}); "
            "their metadata went to the failure queue, the re-drive will finish them"
        )


def _iso(unix_seconds: float, milliseconds: bool = False) -> str:
    moment = datetime.fromtimestamp(unix_seconds, UTC)
    if milliseconds:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
