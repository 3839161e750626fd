"""The webhook receiver's use case: verify a delivery from Moment, store it once, acknowledge it.

Order of checks: size, signature headers, timestamp window, signature. Once the signature is valid
the message is authentic and is stored whatever its content (the reconciler parks what it cannot
read): refusing it would make Moment retry for days and then drop a genuine event. Only a failed
durable write, or signing secrets that cannot be read, answers 5xx, so that Moment retries.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moment_sync.envelope import read_envelope
from moment_sync.http_responses import json_response, problem_response
from moment_sync.observability import Invocation, MetricUnit, logger, metrics
from moment_sync.signature import (
    Rejection,
    WebhookRejected,
    check_timestamp,
    parse_signed_headers,
    verify_signature,
)
from moment_sync.webhook_store import ReceivedWebhook, StorageUnavailable, WebhookStore

SECONDS_PER_DAY = 86_400
# The body is stored in the webhook's DynamoDB item, which holds at most 400 KB (409,600 bytes) in
# all. The rest of the item at its largest is under 7 KB (255-byte webhook id and summary values,
# then the reconciler's status, reason, detail and entry id: docs/webhooks.md adds it up); 16 KiB
# is left for it. A larger body would pass the size check and then fail the write on every retry.
MAX_STORABLE_BODY_BYTES = 393_216


class SigningKeysUnavailable(Exception):
    """The active signing secrets could not be read, or none is configured."""


# Returns the decoded keys of every active signing secret (two during a rotation).
SigningKeys = Callable[[], Sequence[bytes]]


@dataclass(frozen=True)
class ReceiverSettings:
    tolerance_seconds: int = 180
    max_body_bytes: int = 64 * 1024
    retention_days: int = 400

    def __post_init__(self) -> None:
        if not 0 < self.max_body_bytes <= MAX_STORABLE_BODY_BYTES:
            raise ValueError(
                f"WEBHOOK_MAX_BODY_BYTES must be 1 to {MAX_STORABLE_BODY_BYTES}: a larger body does not fit "
                f"the webhook's DynamoDB item (400 KB with its other attributes); got {self.max_body_bytes}"
            )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> ReceiverSettings:
        return cls(
            tolerance_seconds=int(environ.get("WEBHOOK_TOLERANCE_SECONDS", cls.tolerance_seconds)),
            max_body_bytes=int(environ.get("WEBHOOK_MAX_BODY_BYTES", cls.max_body_bytes)),
            retention_days=int(environ.get("WEBHOOK_RETENTION_DAYS", cls.retention_days)),
        )


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    headers: Mapping[str, str]
    body: str | None
    is_base64_encoded: bool


_REJECTION_STATUS = {
    Rejection.BODY_TOO_LARGE: 413,
    Rejection.MALFORMED_BODY: 400,
    Rejection.MISSING_HEADER: 400,
    Rejection.MALFORMED_HEADER: 400,
    Rejection.TIMESTAMP_OUT_OF_WINDOW: 401,
    Rejection.SIGNATURE_MISMATCH: 401,
}
_REJECTION_TITLE = {
    Rejection.BODY_TOO_LARGE: "Webhook body too large",
    Rejection.MALFORMED_BODY: "Webhook body malformed",
    Rejection.MISSING_HEADER: "Webhook signature header missing",
    Rejection.MALFORMED_HEADER: "Webhook signature header malformed",
    Rejection.TIMESTAMP_OUT_OF_WINDOW: "Webhook timestamp outside the allowed window",
    Rejection.SIGNATURE_MISMATCH: "Webhook signature does not match",
}


def receive_webhook(
    request: WebhookRequest,
    *,
    keys: SigningKeys,
    store: WebhookStore,
    settings: ReceiverSettings,
    now: Callable[[], float] = time.time,
    invocation: Invocation | None = None,
) -> dict[str, Any]:
    """Answer one delivery as an API Gateway (payload 2.0) response. An accepted webhook is one log
    line with its metric inside (`invocation`: the Lambda context it names); anything else is logged
    and counted through Powertools, which the handler flushes (`Invocation.finish`)."""
    invocation = invocation or Invocation()
    try:
        return _receive(request, keys=keys, store=store, settings=settings, now=now, invocation=invocation)
    except WebhookRejected as rejected:
        invocation.through_powertools()
        logger.warning("webhook rejected", extra={"reason": rejected.reason.value, "detail": rejected.detail})
        metrics.add_dimension(name="Reason", value=rejected.reason.value)
        metrics.add_metric(name="WebhookRejected", unit=MetricUnit.Count, value=1)
        return problem_response(
            _REJECTION_STATUS[rejected.reason],
            rejected.reason.value.replace("_", "-"),
            _REJECTION_TITLE[rejected.reason],
            rejected.detail,
        )
    except SigningKeysUnavailable as error:
        invocation.through_powertools()
        logger.error("signing secrets unavailable", extra={"error": str(error)})
        metrics.add_metric(name="WebhookSigningSecretsUnavailable", unit=MetricUnit.Count, value=1)
        return _retry_later("signing-secrets-unavailable", "The signing secrets could not be read.")
    except StorageUnavailable as error:
        invocation.through_powertools()
        logger.error("webhook not stored", extra={"error": str(error)})
        metrics.add_metric(name="WebhookStorageFailed", unit=MetricUnit.Count, value=1)
        return _retry_later("storage-unavailable", "The webhook could not be stored durably.")


def _receive(
    request: WebhookRequest,
    *,
    keys: SigningKeys,
    store: WebhookStore,
    settings: ReceiverSettings,
    now: Callable[[], float],
    invocation: Invocation,
) -> dict[str, Any]:
    body = _body_bytes(request, settings.max_body_bytes)
    signed = parse_signed_headers(request.headers)
    invocation.correlate(signed.webhook_id)
    received_at = now()
    check_timestamp(signed.timestamp, now=received_at, tolerance_seconds=settings.tolerance_seconds)
    verify_signature(signed, body, keys())

    envelope = read_envelope(body)
    result = store.store_once(
        ReceivedWebhook(
            webhook_id=signed.webhook_id,
            webhook_timestamp=signed.timestamp,
            received_at=received_at,
            body=body,
            envelope=envelope,
            expires_at=int(received_at) + settings.retention_days * SECONDS_PER_DAY,
        )
    )
    # payment_id too, so one Logs Insights query follows a payment from here to the ledger.
    log_fields = {
        "event_id": envelope.event_id,
        "event_type": envelope.event_type,
        "payment_id": envelope.summary.get("payment_id"),
    }
    if result.created:
        # The path every new webhook takes: one line, the WebhookAccepted count inside it.
        invocation.log_with_metric(
            "webhook accepted", "WebhookAccepted", **log_fields, envelope_problem=envelope.problem
        )
        return json_response(200, {"status": "accepted", "webhook_id": signed.webhook_id})

    invocation.through_powertools()
    metrics.add_metric(name="WebhookDuplicate", unit=MetricUnit.Count, value=1)
    if result.stored_body is not None and result.stored_body != body:
        # Same id, other content: Moment should never do this. Keep the first body, say so loudly.
        logger.warning(
            "duplicate webhook id with a different body; the stored body is kept", extra=log_fields
        )
        metrics.add_metric(name="WebhookDuplicateBodyMismatch", unit=MetricUnit.Count, value=1)
    else:
        logger.info("duplicate webhook acknowledged", extra=log_fields)
    return json_response(200, {"status": "duplicate", "webhook_id": signed.webhook_id})


def _body_bytes(request: WebhookRequest, max_bytes: int) -> bytes:
    """The exact bytes Moment signed, refusing anything over the cap before decoding it."""
    raw = request.body or ""
    too_large = WebhookRejected(Rejection.BODY_TOO_LARGE, f"the body is over {max_bytes} bytes")
    if not request.is_base64_encoded:
        body = raw.encode("utf-8", "surrogatepass")
        if len(body) > max_bytes:
            raise too_large
        return body
    if len(raw) > 4 * (max_bytes // 3 + 1):
        raise too_large
    try:
        body = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        # API Gateway never sends this; anything else claiming base64 is not a delivery we can verify.
        raise WebhookRejected(Rejection.MALFORMED_BODY, "the body is marked base64 but is not") from None
    if len(body) > max_bytes:
        raise too_large
    return body


def _retry_later(problem: str, detail: str) -> dict[str, Any]:
    return problem_response(
        503,
        problem,
        "Service unavailable",
        detail + " Retry later; nothing was stored.",
        headers={"retry-after": "5"},
    )
