"""What SyncStateEventsPipe publishes from the Ledger table's stream in moto (in process, no local
stack): the stream read through the DynamoDB Streams API, each record put through the template's own
filter and transformation, as the local stack's pipes run them (local_stack/event_pipe.py)."""

from __future__ import annotations

from typing import Any

import boto3

from local_stack.event_pipe import PipeSettings, matches, transform
from local_stack.streams import StreamReader

SYNC_STATE_PIPE = PipeSettings.from_template("SyncStateEventsPipe")


def ledger_stream(dynamodb: Any, ledger_table: str) -> StreamReader:
    """A reader from the trim horizon: its first read returns every record so far."""
    return StreamReader(boto3.client("dynamodbstreams"), dynamodb, ledger_table)


def sync_state_changed(stream: StreamReader) -> list[tuple[str, str, str]]:
    """The `Sync State Changed` events the pipe publishes from the records after the last read:
    (event_id, old_state, new_state), in stream order."""
    return [
        (detail["event_id"], detail["old_state"], detail["new_state"])
        for detail in (
            transform(SYNC_STATE_PIPE.input_template, record)
            for record in stream.new_records()
            if matches(record, SYNC_STATE_PIPE.filters)
        )
    ]
