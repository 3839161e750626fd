"""Moment's `Idempotency-Key`: the first answer to a key is kept for 24 hours and replayed.

Owns the key's format (1-255 characters of `[a-zA-Z0-9-]`), what makes two requests "the same"
(method, path and body, JSON key order aside), the 24-hour memory, and what a reused key means:
the same request gets the stored status and body again with `Idempotent-Replayed: true`, error
answers included; a different request gets a 409 `idempotency-key-reused`. A request that arrives
while the first one with its key is still being answered waits for that answer.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from moment_sandbox.messages import Problem, Request, Response, invalid, missing

HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_FORMAT = re.compile(r"[a-zA-Z0-9-]{1,255}")
RETENTION_SECONDS = 24 * 60 * 60


def key_of(request: Request) -> str:
    """The request's Idempotency-Key, or a 400 problem if it is missing or malformed."""
    key = request.header(HEADER)
    if key is None:
        raise missing("the Idempotency-Key header is required on this request")
    if not KEY_FORMAT.fullmatch(key):
        raise invalid("the Idempotency-Key header must be 1-255 characters of letters, digits and '-'")
    return key


def fingerprint(request: Request) -> str:
    try:
        body = json.dumps(json.loads(request.body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        body = request.body
    return hashlib.sha256(f"{request.method} {request.path}\n".encode() + body).hexdigest()


@dataclass
class _Entry:
    fingerprint: str
    expires_at: float
    answered: threading.Event = field(default_factory=threading.Event)
    response: Response | None = None  # None once answered: the first attempt died without an answer


class IdempotencyKeys:
    def __init__(
        self,
        retention_seconds: float = RETENTION_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wait_seconds: float = 30.0,
    ) -> None:
        self._retention_seconds = retention_seconds
        self._clock = clock
        self._wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def answer(self, key: str, request: Request, produce: Callable[[], Response]) -> Response:
        """The stored answer for `key`, or `produce()`'s, which is then stored."""
        digest = fingerprint(request)
        while True:
            entry, is_first = self._claim(key, digest)
            if is_first:
                return self._produce(key, entry, produce)
            replay = self._replay(entry, digest)
            if replay is not None:
                return replay

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()

    def _claim(self, key: str, digest: str) -> tuple[_Entry, bool]:
        with self._lock:
            now = self._clock()
            entry = self._entries.get(key)
            if entry is not None and entry.expires_at > now:
                return entry, False
            entry = _Entry(digest, expires_at=now + self._retention_seconds)
            self._entries[key] = entry
            return entry, True

    def _produce(self, key: str, entry: _Entry, produce: Callable[[], Response]) -> Response:
        try:
            entry.response = produce()
        except BaseException:
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
            raise
        finally:
            entry.answered.set()
        return entry.response

    def _replay(self, entry: _Entry, digest: str) -> Response | None:
        if entry.fingerprint != digest:
            raise Problem(
                409,
                "idempotency-key-reused",
                "this Idempotency-Key was already used with a different request",
            )
        if not entry.answered.wait(self._wait_seconds):
            raise Problem(409, "idempotency-key-in-use", "a request with this Idempotency-Key is in progress")
        if entry.response is None:
            return None  # the first request failed without an answer, so the key is free again
        return entry.response.with_header(REPLAYED_HEADER, "true")
