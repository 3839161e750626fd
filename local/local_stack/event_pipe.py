"""template.yaml's event pipes (AWS::Pipes::Pipe), run on the local stack into the local bus.

Each pipe is read from the template as it is declared (docs/events.md) and run with Pipes'
semantics for a DynamoDB stream source and an event-bus target:

- Filtering: a record that matches none of the FilterCriteria patterns is dropped. The patterns are
  EventBridge's: literal values, `prefix`, `exists`, `anything-but`, nested objects.
- Batching: up to BatchSize records of one shard, in order; the next batch of a shard waits until
  this one is done, so a failing batch holds back the records behind it.
- Transformation: InputTemplate's `<$.path>` placeholders, each replaced by the value at that path of
  the record (inside quotes: the text, escaped for JSON); DetailType is a constant or a `$.` path.
- Failures: a PutEvents the bus refuses fails the batch; it is retried, halved each time
  (AUTOMATIC_BISECT), each try counting one attempt, up to MaximumRetryAttempts; then the batch's
  stream positions (never the data) go to the DeadLetterConfig queue and the shard carries on.
- The checkpoint of a shard moves only after the bus took the batch, and it lives beyond one run of
  the pipe (`Checkpoints`): a pipe stopped between reading and publishing (a crash) reads the same
  records again when it starts, so an event is delayed, never lost (and at worst published twice,
  which consumers drop by `event_id`).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from local_stack.event_bus import BusUnavailable, LocalEventBus
from local_stack.streams import StreamReader
from local_stack.template import Intrinsics, load_template, resource_properties

PIPE_TYPE = "AWS::Pipes::Pipe"
LOCAL_STACK_NAME = "moment-balance-sync-local"
PLACEHOLDER = re.compile(r"<(\$\.[A-Za-z0-9_.\-]+)>")
Notify = Callable[[str], None]


def pipe_logical_ids() -> list[str]:
    return sorted(
        logical_id for logical_id, item in load_template()["Resources"].items() if item["Type"] == PIPE_TYPE
    )


@dataclass(frozen=True)
class PipeSettings:
    logical_id: str
    source_table: str  # the logical id of the table whose stream it reads
    filters: tuple[dict[str, Any], ...]
    batch_size: int
    maximum_retry_attempts: int  # -1: until the record expires
    bisect: bool
    dead_letter_queue: str | None  # logical id
    detail_type: str
    event_source: str
    input_template: str

    @classmethod
    def from_template(cls, logical_id: str) -> PipeSettings:
        properties = resource_properties(logical_id)
        source = properties["Source"]["Fn::GetAtt"]
        table = source[0] if isinstance(source, list) else source.split(".")[0]
        stream = properties["SourceParameters"]["DynamoDBStreamParameters"]
        criteria = properties["SourceParameters"].get("FilterCriteria", {}).get("Filters", [])
        target = properties["TargetParameters"]
        bus = target["EventBridgeEventBusParameters"]
        dead_letter = stream.get("DeadLetterConfig", {}).get("Arn", {}).get("Fn::GetAtt")
        return cls(
            logical_id=logical_id,
            source_table=table,
            filters=tuple(json.loads(entry["Pattern"]) for entry in criteria),
            batch_size=int(stream.get("BatchSize", 100)),
            maximum_retry_attempts=int(stream.get("MaximumRetryAttempts", -1)),
            bisect=stream.get("OnPartialBatchItemFailure") == "AUTOMATIC_BISECT",
            dead_letter_queue=(dead_letter[0] if isinstance(dead_letter, list) else dead_letter.split(".")[0])
            if dead_letter
            else None,
            detail_type=str(bus["DetailType"]),
            event_source=str(bus["Source"]),
            input_template=str(target["InputTemplate"]),
        )


# --- filter patterns and transformations (EventBridge's rules, the subset the template uses) --------


def matches(record: Any, patterns: tuple[dict[str, Any], ...]) -> bool:
    """A record passes if any pattern matches it (no patterns: every record)."""
    return not patterns or any(_matches(record, pattern) for pattern in patterns)


def _matches(value: Any, pattern: dict[str, Any]) -> bool:
    for key, inner in pattern.items():
        present = isinstance(value, dict) and key in value
        if isinstance(inner, dict):
            if not present or not _matches(value[key], inner):
                return False
        elif not any(_rule(present, value[key] if present else None, rule) for rule in inner):
            return False
    return True


def _rule(present: bool, field_value: Any, rule: Any) -> bool:
    if not isinstance(rule, dict):
        return present and field_value == rule
    [(operator, argument)] = rule.items()
    if operator == "exists":
        return present is bool(argument)
    if not present:
        return False  # every other operator needs the field
    if operator == "prefix":
        return isinstance(field_value, str) and field_value.startswith(argument)
    if operator == "anything-but":
        return field_value not in (argument if isinstance(argument, list) else [argument])
    raise ValueError(f"the local pipe does not know the filter operator {operator!r}")


def path_value(record: Any, path: str) -> Any:
    value = record
    for part in path.removeprefix("$.").split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"{path} is not in the record")
        value = value[part]
    return value


def transform(template: str, record: dict[str, Any]) -> dict[str, Any]:
    """Apply an InputTemplate to a record: the detail it produces."""
    out: list[str] = []
    position = 0
    in_string = False
    for match in PLACEHOLDER.finditer(template):
        literal = template[position : match.start()]
        in_string = _inside_string(literal, in_string)
        out.append(literal)
        value = path_value(record, match.group(1))
        if in_string:  # the text, escaped as it must be inside a JSON string
            out.append(json.dumps(value if isinstance(value, str) else json.dumps(value))[1:-1])
        else:
            out.append(json.dumps(value))
        position = match.end()
    out.append(template[position:])
    detail: dict[str, Any] = json.loads("".join(out))
    return detail


def _inside_string(literal: str, in_string: bool) -> bool:
    escaped = False
    for character in literal:
        if escaped:
            escaped = False
        elif character == "\\":
            escaped = True
        elif character == '"':
            in_string = not in_string
    return in_string


# --- running a pipe --------------------------------------------------------------------------------


@dataclass
class PipeStats:
    records_read: int = 0
    records_filtered_out: int = 0
    events_published: int = 0
    batches_failed: int = 0
    batches_to_dead_letter_queue: int = 0


@dataclass
class Checkpoints:
    """Where each pipe got to in each shard; Pipes keeps this outside the poller, so it survives one."""

    by_pipe: dict[str, dict[str, str]] = field(default_factory=dict)


class LocalEventPipe:
    def __init__(
        self,
        settings: PipeSettings,
        reader: StreamReader,
        bus: LocalEventBus,
        *,
        send_to_dead_letter_queue: Callable[[dict[str, Any]], None],
        checkpoints: Checkpoints,
        poll_seconds: float = 0.2,
        retry_delay_seconds: float = 0.05,
        notify: Notify | None = None,
    ) -> None:
        self.settings = settings
        self._reader = reader
        self._bus = bus
        self._dead_letter = send_to_dead_letter_queue
        self._checkpoints = checkpoints.by_pipe.setdefault(settings.logical_id, {})
        self._reader.checkpoints = dict(self._checkpoints)
        self._poll_seconds = poll_seconds
        self._retry_delay = retry_delay_seconds
        self._say: Notify = notify or (lambda _line: None)
        self.stats = PipeStats()
        self._stopping = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name=settings.logical_id, daemon=True)

    def start(self) -> LocalEventPipe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def wait_until_idle(self, timeout: float = 30.0) -> bool:
        """Until a whole poll found nothing new to publish."""
        self._idle.clear()
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                found = self.poll_once()
            except Exception as error:  # moto restarting, a bug: say it, keep the checkpoint, poll again
                self._say(f"{self.settings.logical_id}: {type(error).__name__}: {error}")
                found = True
            if not found:
                self._idle.set()
            self._stopping.wait(self._poll_seconds)

    def poll_once(self) -> bool:
        """Read every shard from its checkpoint and publish what passes the filter. True if any record."""
        any_record = False
        for shard_id, records in self._reader.new_records_by_shard(limit=1000):
            self._reader.checkpoints = dict(self._checkpoints)  # moves only as batches are published
            if not records:
                continue
            any_record = True
            self.stats.records_read += len(records)
            for start in range(0, len(records), self.settings.batch_size):
                if self._stopping.is_set():
                    return True  # stopped between reading and publishing: read again on the next start
                batch = records[start : start + self.settings.batch_size]
                kept = [record for record in batch if matches(record, self.settings.filters)]
                self.stats.records_filtered_out += len(batch) - len(kept)
                if kept:
                    self._deliver(shard_id, kept, attempts_so_far=0)
                self._checkpoints[shard_id] = batch[-1]["dynamodb"]["SequenceNumber"]
                self._reader.checkpoints = dict(self._checkpoints)
        return any_record

    def _deliver(self, shard_id: str, batch: list[dict[str, Any]], attempts_so_far: int) -> int:
        """Publish a batch, retrying and bisecting; returns the attempts it used."""
        attempts = attempts_so_far
        while True:
            try:
                entries = [self._entry(record) for record in batch]
                self._bus.put_events(entries)
                self.stats.events_published += len(entries)
                return attempts
            except (BusUnavailable, KeyError, ValueError) as error:
                self.stats.batches_failed += 1
                limit = self.settings.maximum_retry_attempts
                if limit >= 0 and attempts >= limit:
                    self._give_up(shard_id, batch, attempts, error)
                    return attempts
                attempts += 1
                time.sleep(self._retry_delay)
                if self.settings.bisect and len(batch) > 1:
                    half = len(batch) // 2
                    attempts = self._deliver(shard_id, batch[:half], attempts)
                    return self._deliver(shard_id, batch[half:], attempts)

    def _entry(self, record: dict[str, Any]) -> dict[str, Any]:
        detail_type = self.settings.detail_type
        if detail_type.startswith("$."):
            detail_type = str(path_value(record, detail_type))
        detail = transform(self.settings.input_template, record)
        return {"Source": self.settings.event_source, "DetailType": detail_type, "Detail": json.dumps(detail)}

    def _give_up(self, shard_id: str, batch: list[dict[str, Any]], attempts: int, error: Exception) -> None:
        self.stats.batches_to_dead_letter_queue += 1
        first, last = batch[0]["dynamodb"], batch[-1]["dynamodb"]
        self._dead_letter(
            {
                "context": {
                    "pipeName": self.settings.logical_id,
                    "errorMessage": str(error),
                    "retryAttempts": attempts,
                },
                "dynamoDbStreamBatchInfo": {
                    "shardId": shard_id,
                    "startSequenceNumber": first["SequenceNumber"],
                    "endSequenceNumber": last["SequenceNumber"],
                    "approximateArrivalOfFirstRecord": first.get("ApproximateCreationDateTime"),
                    "approximateArrivalOfLastRecord": last.get("ApproximateCreationDateTime"),
                    "batchSize": len(batch),
                    "streamArn": self._reader.stream_arn,
                },
            }
        )
        self._say(
            f"{self.settings.logical_id}: gave up on {len(batch)} record(s) after {attempts} "
            f"attempt(s) ({error}); their positions are in the dead-letter queue"
        )


# --- the whole of it on the local stack ------------------------------------------------------------


@dataclass
class LocalEventsOut:
    """The bus and every pipe of the template, as the local stack runs them."""

    bus: LocalEventBus
    pipes: dict[str, LocalEventPipe]
    dead_letter_queue_url: str
    checkpoints: Checkpoints
    make_pipe: Callable[[str], LocalEventPipe]

    def restart(self, logical_id: str) -> LocalEventPipe:
        """Stop a pipe and start a new one from its checkpoints (what a crashed poller does)."""
        self.pipes[logical_id].stop()
        self.pipes[logical_id] = self.make_pipe(logical_id).start()
        return self.pipes[logical_id]

    def wait_until_idle(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        return all(
            pipe.wait_until_idle(max(0.1, deadline - time.monotonic())) for pipe in self.pipes.values()
        )

    def stop(self) -> None:
        for pipe in self.pipes.values():
            pipe.stop()
        self.bus.stop()

    def status(self) -> dict[str, Any]:
        return {name: vars(pipe.stats) for name, pipe in self.pipes.items()}


def event_targets(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """LOCAL_EVENT_TARGETS: space-separated http(s) URLs each event is POSTed to."""
    urls = tuple(environ.get("LOCAL_EVENT_TARGETS", "").split())
    for url in urls:
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
            raise ValueError(f"LOCAL_EVENT_TARGETS: {url!r} is not an http(s) URL")
    return urls


def start_events_out(
    intrinsics: Intrinsics,
    tables: dict[str, str],
    aws_endpoint: str,
    *,
    region: str,
    account: str,
    targets: tuple[str, ...] | None = None,
    notify: Notify | None = None,
) -> LocalEventsOut:
    """Create the bus and the pipes' dead-letter queue, and start every pipe of template.yaml."""
    import boto3  # noqa: PLC0415

    targets = event_targets() if targets is None else targets

    dynamodb = boto3.client("dynamodb", endpoint_url=aws_endpoint, region_name=region)
    streams = boto3.client("dynamodbstreams", endpoint_url=aws_endpoint, region_name=region)
    sqs = boto3.client("sqs", endpoint_url=aws_endpoint, region_name=region)
    # The template names it after the stack; the local stack's is LOCAL_STACK_NAME.
    bus_name = str(resource_properties("MomentEventBus")["Name"]["Fn::Sub"]).replace(
        "${AWS::StackName}", LOCAL_STACK_NAME
    )
    bus = LocalEventBus(bus_name, region=region, account=account, targets=targets, notify=notify)
    queue_url = sqs.create_queue(QueueName="EventPipeDeadLetterQueue")["QueueUrl"]
    checkpoints = Checkpoints()

    def send(message: dict[str, Any]) -> None:
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(message))

    def make(logical_id: str) -> LocalEventPipe:
        settings = PipeSettings.from_template(logical_id)
        reader = StreamReader(streams, dynamodb, tables[settings.source_table])
        return LocalEventPipe(
            settings, reader, bus, send_to_dead_letter_queue=send, checkpoints=checkpoints, notify=notify
        )

    pipes = {logical_id: make(logical_id).start() for logical_id in pipe_logical_ids()}
    return LocalEventsOut(bus, pipes, queue_url, checkpoints, make)


def show_events(events_out: LocalEventsOut, say: Notify) -> None:
    """The events the bus carried, by detail-type (the end of `make demo`)."""
    events_out.wait_until_idle(timeout=10)
    published = events_out.bus.events()
    counts: dict[str, int] = {}
    for event in published:
        counts[event["detail-type"]] = counts.get(event["detail-type"], 0) + 1
    say(f"\nEvents on the bus {events_out.bus.name} (GET /_local/events)")
    for detail_type, count in sorted(counts.items()):
        say(f"   {detail_type:<20} {count}")
    payments = [event["detail"] for event in published if event["detail-type"] == "Payment Applied"]
    for detail in payments:
        say(
            f"   Payment Applied: {detail['balance_kind']} {detail['balance_ref']} {detail['amount']} "
            f"{detail['currency']} (application {detail['application_id']})"
        )
