"""DynamoDB stream records as Lambda receives them, read through the real DynamoDB Streams API.

moto keeps a table's stream but does not run event source mappings; this module reads the stream
(every shard, from the trim horizon, remembering where it got to), turns each record into the JSON
form Lambda delivers (binary attributes as base64 text, times as epoch seconds), and applies the
event source mapping's filter criteria exactly as template.yaml declares them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from local_stack.template import resource_properties


def lambda_record(record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """A GetRecords record → the record of a Lambda DynamoDB stream event."""
    converted = _lambda_json(record)
    converted["eventSourceARN"] = stream_arn
    # The table's region (moto's records always say us-east-1).
    converted["awsRegion"] = stream_arn.split(":")[3]
    return converted


def _lambda_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: _binary(key, inner) if key in {"B", "BS"} else _lambda_json(inner)
            for key, inner in value.items()
        }
    if isinstance(value, list):
        return [_lambda_json(inner) for inner in value]
    if isinstance(value, datetime):
        return value.timestamp()
    return value


def _binary(key: str, value: Any) -> Any:
    if key == "BS":
        return [base64.b64encode(bytes(item)).decode() for item in value]
    return base64.b64encode(bytes(value)).decode()


def filter_patterns(function_logical_id: str, event_name: str) -> list[dict[str, Any]]:
    """The FilterCriteria patterns of one event source of a function in template.yaml."""
    event = resource_properties(function_logical_id)["Events"][event_name]["Properties"]
    return [json.loads(entry["Pattern"]) for entry in event.get("FilterCriteria", {}).get("Filters", [])]


def matches(record: dict[str, Any], patterns: list[dict[str, Any]]) -> bool:
    """Lambda keeps a record if any pattern matches (no patterns: every record)."""
    return not patterns or any(_matches(record, pattern) for pattern in patterns)


def _matches(value: Any, pattern: Any) -> bool:
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            key in value and _matches(value[key], inner) for key, inner in pattern.items()
        )
    if isinstance(pattern, list):  # a list of allowed literal values
        return value in pattern
    return bool(value == pattern)


class StreamReader:
    """Reads new records from every shard of a table's stream, in order within each shard.

    It keeps a checkpoint (the last sequence number read) per shard and asks for a fresh iterator
    after it on every read, as Lambda's poller does. Holding on to iterators would lose records under
    moto's own TransactWriteItems: a cancelled transaction restores a deep copy of each table it
    touched, stream shard included, and an old iterator keeps reading the shard that was replaced
    (the local stack's `moto_speedups` no longer does, but nothing here depends on it).
    """

    def __init__(self, streams_client: Any, dynamodb_client: Any, table_name: str) -> None:
        self._streams = streams_client
        self.stream_arn: str = dynamodb_client.describe_table(TableName=table_name)["Table"][
            "LatestStreamArn"
        ]
        self.checkpoints: dict[str, str] = {}

    def new_records(self, limit: int = 1000) -> Iterator[dict[str, Any]]:
        for _shard_id, records in self.new_records_by_shard(limit):
            yield from records

    def new_records_by_shard(self, limit: int = 1000) -> list[tuple[str, list[dict[str, Any]]]]:
        """The records after each shard's checkpoint (at most `limit` per shard), moving it past them."""
        shards = self._streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        found = []
        for shard in shards:
            shard_id = shard["ShardId"]
            position: dict[str, str] = {"ShardIteratorType": "TRIM_HORIZON"}
            if shard_id in self.checkpoints:
                position = {
                    "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                    "SequenceNumber": self.checkpoints[shard_id],
                }
            iterator = self._streams.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard_id, **position
            )
            response = self._streams.get_records(ShardIterator=iterator["ShardIterator"], Limit=limit)
            records = response.get("Records", [])
            if records:
                self.checkpoints[shard_id] = records[-1]["dynamodb"]["SequenceNumber"]
            found.append((shard_id, [lambda_record(record, self.stream_arn) for record in records]))
        return found
