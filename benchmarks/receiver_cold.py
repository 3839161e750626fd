"""First-call hooks for the receivers' cold starts, run inside a cold child once its import is timed.

Each returns `(call, check)`: `call()` serves one freshly signed webhook against the in-memory
backend (the child times it), `check(answer)` proves it was accepted with exactly the requests it
should make. Imports only what the timed part has loaded already, plus `benchmarks.fake_aws`, so
nothing the first call would import on its own is loaded early and left out of its time.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks.fake_aws import (
    BenchLambdaContext,
    InMemoryDynamoDB,
    InMemorySecretsManager,
    signed_event,
    signing_key,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_EVENT = os.path.join(ROOT, "events", "webhook_receiver", "moment-webhook.json")

Hook = tuple[Callable[[], Any], Callable[[Any], None]]


def _first_event() -> tuple[dict[str, Any], str]:
    secret = os.environ["BASELINE_WEBHOOK_SECRETS"].split()[0]
    with open(SAMPLE_EVENT) as sample:
        template = json.load(sample)
    event = signed_event(
        template,
        template["body"].encode(),
        webhook_id="msg_bench_cold_first_call",
        timestamp=int(time.time()),
        key=signing_key(secret),
    )
    return event, secret


def _check(answer: Any, *backends: Any) -> None:
    status = json.loads(answer["body"]).get("status")
    if answer["statusCode"] != 200 or status != "accepted":
        raise RuntimeError(f"the first call was not accepted: {answer}")
    if any(backend.requests != 1 for backend in backends):
        raise RuntimeError("the first call did not make exactly one request to each backend")


def real_first_call() -> Hook:
    """webhook_receiver as deployed: `lambda_handler(event, context)`, adapters from runtime.py."""
    from moment_sync import runtime  # noqa: PLC0415 -- loaded already by the timed import

    event, secret = _first_event()
    dynamodb = InMemoryDynamoDB()
    dynamodb.attach(runtime.aws_client("dynamodb").meta.events)
    secrets = InMemorySecretsManager(os.environ["WEBHOOK_SIGNING_SECRET_ARN"], json.dumps([secret]))
    secrets.attach(runtime.aws_client("secretsmanager").meta.events)
    handler = sys.modules[os.environ["BENCH_HANDLER_MODULE"]].lambda_handler
    context = BenchLambdaContext("webhook_receiver", 1)
    return (lambda: handler(event, context)), (lambda answer: _check(answer, dynamodb, secrets))


def baseline_first_call() -> Hook:
    event, _ = _first_event()
    baseline = sys.modules["baseline_receiver"]
    dynamodb = InMemoryDynamoDB()
    dynamodb.attach(baseline.dynamodb.meta.events)
    context = BenchLambdaContext("baseline_receiver", 1)
    return (lambda: baseline.lambda_handler(event, context)), (lambda answer: _check(answer, dynamodb))
