"""The reconciler's stream batches: each INSERT record reconciled on its own, failures reported per record.

Failure policy (decided, and why the balance arithmetic is safe either way): a record that hits a
transient fault (throttling, a transaction conflict, a timeout) is reported as a batch item
failure; the records after it are still processed. Lambda then retries from the lowest failed
sequence number, so later records may be delivered again. That is harmless: a payment already
applied fails its entry's condition and changes nothing, and a status already final is left as it
is. Processing the rest of the batch keeps one throttled record from delaying every payment behind
it. Records that cannot be processed at all (bad data) are never failures: they are parked. That
includes a record with a number boto3 refuses to read: it is read leniently and parked invalid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from moment_sync.adapters.ledger_table import LedgerTable
from moment_sync.adapters.webhook_events_table import WebhookEventsTable, event_from_item
from moment_sync.observability import MetricUnit, logger, metrics
from moment_sync.reconciler import reconcile_event


def reconcile_stream_batch(
    event: dict[str, Any],
    context: Any,
    *,
    ledger: LedgerTable,
    events: WebhookEventsTable,
    now: Callable[[], float],
) -> dict[str, Any]:
    """Answer a DynamoDB stream batch with `{"batchItemFailures": [...]}` (ReportBatchItemFailures)."""
    processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)

    def handle(record: DynamoDBRecord) -> None:
        if record.raw_event.get("eventName") != "INSERT":
            return  # the event source filter lets only INSERTs through; a status update is not news
        # A value boto3 cannot read (a 39-digit amount) comes back as text and parks the event invalid.
        image = event_from_item(record.raw_event["dynamodb"]["NewImage"])
        logger.set_correlation_id(str(image.get("webhook_id")))
        try:
            reconcile_event(image, ledger=ledger, events=events, now=now)
            metrics.add_metric(name="RecordsReconciled", unit=MetricUnit.Count, value=1)
        except Exception:
            logger.exception("record not reconciled; Lambda will retry it")
            metrics.add_metric(name="ReconcileRetried", unit=MetricUnit.Count, value=1)
            raise
        finally:
            logger.set_correlation_id(None)

    response = process_partial_response(
        event=event, record_handler=handle, processor=processor, context=context
    )
    return dict(response)
