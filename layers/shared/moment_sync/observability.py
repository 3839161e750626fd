"""The one Logger and Metrics every function shares (Powertools: JSON logs, EMF metrics).

Service name and metric namespace come from POWERTOOLS_SERVICE_NAME and
POWERTOOLS_METRICS_NAMESPACE, set by template.yaml for every function.

`Invocation` is for the receiver, whose every new webhook would otherwise pay Powertools' per-call
work (the context decorators, a log record, a metric set flushed as a second line): its accepted
webhook is one JSON line written directly, the log record with the EMF block for its metric inside
(CloudWatch reads EMF from any JSON log line). Every other outcome goes through Powertools, set up
only when it happens.

`payment_line` is the reconciler's line per applied payment: one short JSON line written directly,
without the keys a Powertools record repeats on every line and CloudWatch already keeps (the metrics
stay in Powertools' one EMF blob per invocation, which a batch of records shares). `push_line` is the
same line for the pusher's pushed or created balance (a billing run pushes as many as payments come).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger()
metrics = Metrics()

__all__ = [
    "PAYMENT_LINE_KEYS",
    "Invocation",
    "MetricUnit",
    "logger",
    "metrics",
    "payment_line",
    "push_line",
]

_cold_start = [True]  # per execution environment, for the handlers that use Invocation
# Built once: json.dumps with options would build an encoder on every call.
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


class Invocation:
    """One invocation's log context: the Lambda context's keys, the cold start, the correlation id."""

    def __init__(self, context: Any = None) -> None:
        self.context = context
        self.cold_start = _cold_start[0] if context is not None else False
        if context is not None:
            _cold_start[0] = False
        self.correlation_id: str | None = None
        self._through_powertools = False

    def correlate(self, correlation_id: str) -> None:
        self.correlation_id = correlation_id
        if self._through_powertools:
            logger.set_correlation_id(correlation_id)

    def through_powertools(self) -> None:
        """Call before logging through `logger` or counting through `metrics`: the keys Powertools'
        `inject_lambda_context` would have set, and `finish` flushes the metrics."""
        if self._through_powertools:
            return
        self._through_powertools = True
        logger.structure_logs(cold_start=self.cold_start, **self._context_keys())
        logger.set_correlation_id(self.correlation_id)

    def finish(self) -> None:
        """After the handler's work, as `log_metrics(capture_cold_start_metric=True)` would."""
        if not self._through_powertools:
            return
        if self.cold_start:
            metrics.provider.add_cold_start_metric(context=self.context)
        metrics.flush_metrics()

    def log_with_metric(self, message: str, metric: str, **fields: Any) -> None:
        """One JSON line: an INFO record (when INFO is enabled) with the EMF block counting `metric`
        (and `ColdStart`, on a cold start) inside it; the same keys a Powertools record would have."""
        now = time.time()
        directives: list[dict[str, Any]] = [
            {
                "Namespace": metrics.namespace,
                "Dimensions": [["service"]],
                "Metrics": [{"Name": metric, "Unit": "Count"}],
            }
        ]
        # The EMF block first, as Powertools writes it: readers that find EMF by the line's start still do.
        line: dict[str, Any] = {"_aws": {"Timestamp": int(now * 1000), "CloudWatchMetrics": directives}}
        if logger.log_level <= logging.INFO:
            caller = sys._getframe(1)  # the caller's name and line, as logging finds them
            line |= {
                "level": "INFO",
                "location": f"{caller.f_code.co_name}:{caller.f_lineno}",  # as Powertools writes it
                "message": message,
                "timestamp": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now))
                + f",{int(now * 1000) % 1000:03d}+0000",
                "cold_start": self.cold_start,
                **self._context_keys(),
                "correlation_id": self.correlation_id,
                **{name: value for name, value in fields.items() if value is not None},
            }
        line["service"] = metrics.service
        line[metric] = [1.0]
        if self.cold_start:
            directives.append(
                {
                    "Namespace": metrics.namespace,
                    "Dimensions": [["function_name", "service"]],
                    "Metrics": [{"Name": "ColdStart", "Unit": "Count"}],
                }
            )
            line["function_name"] = self.context.function_name
            line["ColdStart"] = [1.0]
        stream = sys.stdout
        stream.write(_encode(line) + "\n")
        stream.flush()

    def _context_keys(self) -> dict[str, Any]:
        context = self.context
        if context is None:
            return {}
        return {
            "function_name": context.function_name,
            "function_memory_size": context.memory_limit_in_mb,
            "function_arn": context.invoked_function_arn,
            "function_request_id": context.aws_request_id,
        }


# What a payment's line carries besides the caller's fields: enough to follow it (the saved queries read
# level, message, function_name and correlation_id, the webhook id) and to find its invocation's REPORT
# line (function_request_id). Left out, against a Powertools record: timestamp (CloudWatch's @timestamp),
# function_arn and function_memory_size (the log group and the REPORT line say them), location, service
# and cold_start (the ColdStart metric and REPORT's Init Duration): the line goes from 640 to 390 bytes.
PAYMENT_LINE_KEYS = ("level", "message", "function_name", "function_request_id", "correlation_id")
# logging's handlers write under a lock; the lines written directly do too.
_write_lock = threading.Lock()


def payment_line(message: str, **fields: Any) -> None:
    """One INFO line per applied payment, written directly as compact JSON (when INFO is enabled):
    PAYMENT_LINE_KEYS from the logger's state (set by `inject_lambda_context` and the correlation id),
    then `fields`; keys whose value is None are left out."""
    if logger.log_level > logging.INFO:
        return
    state = logger.get_current_keys()
    line: dict[str, Any] = {"level": "INFO", "message": message}
    for key in PAYMENT_LINE_KEYS[2:]:
        if state.get(key) is not None:
            line[key] = state[key]
    line |= {name: value for name, value in fields.items() if value is not None}
    text = _encode(line) + "\n"
    with _write_lock:  # the pusher writes from its worker threads: one whole line at a time
        stream = sys.stdout
        stream.write(text)
        stream.flush()


def push_line(message: str, **fields: Any) -> None:
    """One INFO line per balance pushed or created on Moment: the same short line as `payment_line`
    (PAYMENT_LINE_KEYS, then `fields`; correlation_id is left out, as the pusher sets none)."""
    payment_line(message, **fields)
