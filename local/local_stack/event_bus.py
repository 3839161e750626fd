"""The local stand-in for MomentEventBus (docs/events.md): what the pipes put, kept and forwarded.

- `put_events` takes at most 10 entries, as PutEvents does, and gives each the envelope EventBridge
  gives it (`version`, `id`, `time`, `account`, `region`, `resources`).
- The last `KEEP` events are kept in order, readable at `GET /_local/events` (`detail-type`, `since`).
- Each event is POSTed as JSON to every URL of `LOCAL_EVENT_TARGETS` (space-separated) by a thread
  of its own, retried 3 times, then reported: a slow or dead target never holds back the bus.
- `fail_next(n)` makes the next n calls of `put_events` fail as a throttled or failing bus would
  (the tests' way to see the pipes retry, bisect and give up to their dead-letter queue).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from local_stack.api_gateway import Route

KEEP = 1000
MAX_ENTRIES = 10  # PutEvents' limit, and so the pipes' BatchSize
FORWARD_ATTEMPTS = 4
Notify = Callable[[str], None]


class BusUnavailable(Exception):
    """The bus refused a PutEvents call (what `fail_next` simulates)."""


class LocalEventBus:
    def __init__(
        self,
        name: str,
        *,
        region: str,
        account: str,
        targets: tuple[str, ...] = (),
        notify: Notify | None = None,
    ) -> None:
        self.name = name
        self.arn = f"arn:aws:events:{region}:{account}:event-bus/{name}"
        self._region, self._account = region, account
        self._events: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self._lock = threading.Lock()
        self._failures_left = 0
        self._say: Notify = notify or (lambda _line: None)
        self.targets = targets
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []
        self.forward_failures = 0
        self._outbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._forwarder = threading.Thread(target=self._forward_all, name="event-bus-forwarder", daemon=True)
        self._forwarder.start()

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call `callback` with every event published from now on (in the publishing thread)."""
        self._subscribers.append(callback)

    def fail_next(self, calls: int) -> None:
        with self._lock:
            self._failures_left = calls

    def put_events(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each entry: `Source`, `DetailType`, `Detail` (JSON text). Returns the events as published."""
        if not 1 <= len(entries) <= MAX_ENTRIES:
            raise ValueError(f"PutEvents takes 1 to {MAX_ENTRIES} entries, not {len(entries)}")
        with self._lock:
            if self._failures_left:
                self._failures_left -= 1
                raise BusUnavailable("the local bus was told to fail this call")
            published = []
            for entry in entries:
                event = {
                    "version": "0",
                    "id": str(uuid.uuid4()),
                    "detail-type": entry["DetailType"],
                    "source": entry["Source"],
                    "account": self._account,
                    "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "region": self._region,
                    "resources": [],
                    "detail": json.loads(entry["Detail"]),
                    # Not EventBridge's: when the local bus took it, for `since` (sub-second).
                    "published_at": datetime.now(UTC).isoformat(timespec="microseconds"),
                }
                self._events.append(event)
                published.append(event)
        for event in published:
            self._say(_line(event))
            for callback in self._subscribers:
                callback(event)
            if self.targets:
                self._outbox.put(event)
        return published

    def events(self, detail_type: str | None = None, since: str | None = None) -> list[dict[str, Any]]:
        """The kept events, oldest first; `since` an RFC 3339 time (events published after it)."""
        after = _parse_time(since) if since else None
        with self._lock:
            kept = list(self._events)
        return [
            event
            for event in kept
            if (detail_type is None or event["detail-type"] == detail_type)
            and (after is None or _parse_time(event["published_at"]) > after)
        ]

    def stop(self) -> None:
        self._outbox.put(None)
        self._forwarder.join(timeout=5)

    def routes(self) -> list[Route]:
        def read(event: dict[str, Any]) -> dict[str, Any]:
            # API Gateway decodes the query string; the local front passes it as sent.
            query = {
                name: unquote_plus(value)
                for name, value in (event.get("queryStringParameters") or {}).items()
            }
            since = query.get("since")
            if since is not None:
                try:
                    _parse_time(since)
                except ValueError:
                    return _problem(400, "since must be an RFC 3339 time, e.g. 2026-06-03T08:00:00Z")
            found = self.events(query.get("detail-type"), since)
            return {
                "statusCode": 200,
                "headers": {"content-type": "application/json"},
                "body": json.dumps({"bus": self.name, "events": found}),
            }

        def put(event: dict[str, Any]) -> dict[str, Any]:
            """PutEvents' shape, for `moment-sync --local republish-events`."""
            try:
                entries = json.loads(event.get("body") or "{}")["Entries"]
                published = self.put_events(entries)
            except BusUnavailable:
                failed = [{"ErrorCode": "InternalFailure"} for _ in entries]
                return _json(200, {"FailedEntryCount": len(entries), "Entries": failed})
            except (ValueError, KeyError, TypeError) as error:
                return _problem(400, f"expected {{'Entries': [1 to 10 PutEvents entries]}}: {error}")
            return _json(200, {"FailedEntryCount": 0, "Entries": [{"EventId": e["id"]} for e in published]})

        return [Route("GET", "/_local/events", "local", read), Route("POST", "/_local/events", "local", put)]

    def _forward_all(self) -> None:
        import httpx  # noqa: PLC0415 -- only when forwarding

        with httpx.Client(timeout=5.0) as client:
            while (event := self._outbox.get()) is not None:
                for url in self.targets:
                    self._forward(client, url, event)

    def _forward(self, client: Any, url: str, event: dict[str, Any]) -> None:
        body = {key: value for key, value in event.items() if key != "published_at"}
        error = ""
        for attempt in range(FORWARD_ATTEMPTS):
            try:
                response = client.post(url, json=body)
                if response.status_code < 300:
                    return
                error = f"HTTP {response.status_code}"
            except Exception as failure:  # a target being down must never stop the bus
                error = f"{type(failure).__name__}: {failure}"
            time.sleep(0.2 * 2**attempt)
        self.forward_failures += 1
        self._say(f"event {event['detail']['event_id']} not forwarded to {url}: {error}")


def _line(event: dict[str, Any]) -> str:
    detail = event["detail"]
    what = " ".join(
        str(detail[name])
        for name in ("balance_kind", "balance_ref", "amount", "currency", "old_state", "new_state", "reason")
        if name in detail
    )
    return f"event {event['detail-type']}: {what} ({detail['event_id']})"


def _parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("a time zone is required")
    return parsed


def _json(status: int, body: Any) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


def _problem(status: int, detail: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/problem+json"},
        "body": json.dumps(
            {"type": "about:blank", "title": "Bad request", "status": status, "detail": detail}
        ),
    }
