"""Moment's side of webhooks: Standard Webhooks signing, and at-least-once delivery with retries.

Owns the signature (`v1,` + base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}` under
each active secret; made with the stdlib, so a test that checks it with the `standardwebhooks`
library checks it independently), the delivery of one message (the same `webhook-id` and body on
every attempt, a fresh timestamp and signature on each; a non-2xx answer or a network error is
retried after an exponential backoff, a bounded number of times), duplicates (the same message
delivered again, whole), and the record of every delivery that `/_sandbox/state` shows.
Deliveries run in the caller's thread or, in background mode, on one worker thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from moment_sandbox.ids import new_id

LOGGER = logging.getLogger(__name__)
SECRET_PREFIX = "whsec_"  # noqa: S105 -- a prefix, not a secret
Outcome = Literal["pending", "delivered", "failed", "skipped"]


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 after an optional `whsec_` prefix."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)


def signature_header(secrets: Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """`webhook-signature`: one `v1,` entry per active secret (two during a rotation)."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    entries = (
        base64.b64encode(hmac.new(signing_key(secret), signed, hashlib.sha256).digest()).decode()
        for secret in secrets
    )
    return " ".join(f"v1,{entry}" for entry in entries)


@dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int = 5
    base_delay_seconds: float = 1.0  # waits base, 2*base, 4*base... between attempts
    timeout_seconds: float = 10.0

    def delay_after(self, attempt: int) -> float:
        return float(self.base_delay_seconds * 2 ** (attempt - 1))


@dataclass(frozen=True)
class Attempt:
    timestamp: int  # the webhook-timestamp it was signed with
    status_code: int | None  # None: no answer (network error or timeout)
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class Delivery:
    """One delivery of a message: the original (copy 0) or a duplicate, with all its attempts."""

    webhook_id: str
    event_id: str
    event_type: str
    copy: int
    url: str | None
    attempts: list[Attempt] = field(default_factory=list)
    outcome: Outcome = "pending"

    def to_json(self) -> dict[str, Any]:
        return {
            "webhook_id": self.webhook_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "copy": self.copy,
            "url": self.url,
            "outcome": self.outcome,
            "attempts": len(self.attempts),
            "status_code": self.attempts[-1].status_code if self.attempts else None,
            "attempt_log": [
                {"timestamp": a.timestamp, "status_code": a.status_code, "error": a.error}
                for a in self.attempts
            ],
        }


@dataclass(frozen=True)
class _Message:
    webhook_id: str
    body: bytes
    url: str | None
    secrets: tuple[str, ...]
    deliveries: tuple[Delivery, ...]


class WebhookSender:
    def __init__(
        self,
        policy: DeliveryPolicy | None = None,
        background: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy or DeliveryPolicy()
        self._background = background
        self._clock = clock
        self._client = httpx.Client(trust_env=False, timeout=self._policy.timeout_seconds)
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._unsettled_messages = 0
        self._deliveries: list[Delivery] = []
        self._closing = threading.Event()
        self._queue: queue.Queue[_Message | None] = queue.Queue()
        self._worker: threading.Thread | None = None

    def send(
        self, event: dict[str, Any], url: str | None, secrets: Sequence[str], duplicates: int = 0
    ) -> str:
        """Deliver `event` once, then `duplicates` more times; returns the message's webhook-id."""
        webhook_id = new_id("msg_", 24)
        deliveries = tuple(
            Delivery(webhook_id, str(event["id"]), str(event["type"]), copy, url)
            for copy in range(1 + duplicates)
        )
        message = _Message(webhook_id, json.dumps(event).encode(), url, tuple(secrets), deliveries)
        with self._lock:
            self._deliveries.extend(deliveries)
            self._unsettled_messages += 1
        if self._background:
            self._start_worker()
            self._queue.put(message)
        else:
            self._run(message)
        return webhook_id

    def deliveries(self, webhook_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [d.to_json() for d in self._deliveries if webhook_id in (None, d.webhook_id)]

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every message sent so far is delivered or given up; False on timeout."""
        with self._settled:
            return self._settled.wait_for(lambda: self._unsettled_messages == 0, timeout)

    def forget(self) -> None:
        """Drop the record of past deliveries (those still running carry on, unlisted)."""
        with self._lock:
            self._deliveries.clear()

    def close(self) -> None:
        self._closing.set()
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout=5)
        self._client.close()

    def _start_worker(self) -> None:
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="sandbox-webhooks", daemon=True)
                self._worker.start()

    def _work(self) -> None:
        while (message := self._queue.get()) is not None:
            self._run(message)

    def _run(self, message: _Message) -> None:
        try:
            for delivery in message.deliveries:
                self._deliver(message, delivery)
        except Exception:
            LOGGER.exception("delivering webhook %s failed", message.webhook_id)
            for delivery in message.deliveries:
                if delivery.outcome == "pending":
                    self._settle(delivery, "failed")
        finally:
            with self._settled:
                self._unsettled_messages -= 1
                self._settled.notify_all()

    def _deliver(self, message: _Message, delivery: Delivery) -> None:
        if message.url is None:
            self._settle(delivery, "skipped")
            return
        for number in range(1, self._policy.max_attempts + 1):
            attempt = self._attempt(message, message.url)
            with self._lock:
                delivery.attempts.append(attempt)
            if attempt.succeeded:
                self._settle(delivery, "delivered")
                return
            last = number == self._policy.max_attempts
            if last or self._closing.wait(self._policy.delay_after(number)):
                break
        self._settle(delivery, "failed")

    def _attempt(self, message: _Message, url: str) -> Attempt:
        timestamp = int(self._clock())
        headers = {
            "content-type": "application/json",
            "user-agent": "moment-sandbox",
            "webhook-id": message.webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(
                message.secrets, message.webhook_id, timestamp, message.body
            ),
        }
        try:
            response = self._client.post(url, content=message.body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            return Attempt(timestamp, None, f"{type(error).__name__}: {error}")
        return Attempt(timestamp, response.status_code)

    def _settle(self, delivery: Delivery, outcome: Outcome) -> None:
        with self._lock:
            delivery.outcome = outcome
