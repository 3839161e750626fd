"""Fault injection for the Billing API routes: a share of requests answered 429 or 500, and latency.

Owns the fault settings and the seeded draw that decides each request's fate, so the same seed and
the same order of requests fail the same requests. An injected fault answers before the request is
looked at (no change is made and no idempotency key is spent), the way a rate limiter or a failing
front end would. Control routes are never faulted; `server.py` decides which routes are.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from moment_sandbox.messages import Problem, invalid

MAX_LATENCY_MS = 60_000


@dataclass(frozen=True)
class Faults:
    fail_429_rate: float = 0.0  # share of API requests answered 429, 0.0-1.0
    fail_500_rate: float = 0.0  # share answered 500 (drawn after the 429 share)
    latency_ms: int = 0  # added before every API answer

    def __post_init__(self) -> None:
        for name in ("fail_429_rate", "fail_500_rate"):
            rate = getattr(self, name)
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be a number from 0.0 to 1.0")
        latency = self.latency_ms
        if isinstance(latency, bool) or not isinstance(latency, int) or not 0 <= latency <= MAX_LATENCY_MS:
            raise ValueError(f"latency_ms must be an integer from 0 to {MAX_LATENCY_MS}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        """These faults with the fields in `changes` replaced; a 400 problem if any is wrong."""
        unknown = sorted(set(changes) - set(asdict(self)))
        if unknown:
            raise invalid(f"unknown fault setting {unknown[0]}")
        try:
            return replace(self, **changes)
        except ValueError as error:
            raise invalid(str(error)) from None


class FaultInjector:
    def __init__(self, faults: Faults | None = None, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._faults = faults or Faults()
        self._seed = seed
        self._random = random.Random(seed)  # noqa: S311 -- reproducible test faults, not cryptography

    @property
    def faults(self) -> Faults:
        return self._faults

    @property
    def seed(self) -> int:
        return self._seed

    def configure(self, faults: Faults, seed: int | None = None) -> None:
        """Use `faults` from now on; a new `seed` restarts the sequence of draws."""
        with self._lock:
            self._faults = faults
            if seed is not None:
                self._seed = seed
                self._random.seed(seed)

    def draw(self) -> Problem | None:
        """The fault this request gets, if any."""
        with self._lock:
            roll = self._random.random()
            faults = self._faults
        if roll < faults.fail_429_rate:
            return Problem(429, "too-many-requests", "the sandbox injected a rate-limit fault")
        if roll < faults.fail_429_rate + faults.fail_500_rate:
            return Problem(500, "internal-server-error", "the sandbox injected a server fault")
        return None

    def delay(self) -> None:
        latency_ms = self._faults.latency_ms
        if latency_ms:
            time.sleep(latency_ms / 1000)
