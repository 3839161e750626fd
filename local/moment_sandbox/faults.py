"""Fault injection for the Billing API routes: a share of requests answered 429 or 500, a share
answered too late (a timeout), and latency.

Owns the fault settings, the seeded draw that decides each request's fate (so the same seed and the
same order of requests fail the same requests), and the count of faults injected. A 429 or 500
answers before the request is looked at (no change is made and no idempotency key is spent), the
way a rate limiter or a failing front end would. A timeout is the other way round, and the harder
case for a client: the request is carried out, then its answer is held back `timeout_ms`, past the
client's read timeout, so the client must retry with the same Idempotency-Key to learn what happened.
Control routes are never faulted; `server.py` decides which routes are.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from moment_sandbox.messages import Problem, invalid

MAX_LATENCY_MS = 60_000
DEFAULT_TIMEOUT_MS = 11_000  # just past the Moment client's default read timeout (10 s)


@dataclass(frozen=True)
class Faults:
    fail_429_rate: float = 0.0  # share of API requests answered 429, 0.0-1.0
    fail_500_rate: float = 0.0  # share answered 500 (drawn after the 429 share)
    latency_ms: int = 0  # added before every API answer
    timeout_rate: float = 0.0  # share carried out and then answered `timeout_ms` late (drawn last)
    timeout_ms: int = DEFAULT_TIMEOUT_MS

    def __post_init__(self) -> None:
        for name in ("fail_429_rate", "fail_500_rate", "timeout_rate"):
            rate = getattr(self, name)
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be a number from 0.0 to 1.0")
        if self.fail_429_rate + self.fail_500_rate + self.timeout_rate > 1.0:
            raise ValueError("fail_429_rate, fail_500_rate and timeout_rate add up to more than 1.0")
        for name in ("latency_ms", "timeout_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LATENCY_MS:
                raise ValueError(f"{name} must be an integer from 0 to {MAX_LATENCY_MS}")

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


@dataclass(frozen=True)
class LateAnswer:
    """The request is carried out; its answer waits `seconds` (the client has given up by then)."""

    seconds: float

    def wait(self) -> None:
        time.sleep(self.seconds)


class FaultInjector:
    def __init__(self, faults: Faults | None = None, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._faults = faults or Faults()
        self._seed = seed
        self._random = random.Random(seed)  # noqa: S311 -- reproducible test faults, not cryptography
        self._injected: Counter[str] = Counter()

    @property
    def faults(self) -> Faults:
        return self._faults

    @property
    def seed(self) -> int:
        return self._seed

    def injected(self) -> dict[str, int]:
        """How many of each fault were injected since the sandbox started: "429", "500", "timeout"."""
        with self._lock:
            return {kind: self._injected[kind] for kind in ("429", "500", "timeout")}

    def configure(self, faults: Faults, seed: int | None = None) -> None:
        """Use `faults` from now on; a new `seed` restarts the sequence of draws."""
        with self._lock:
            self._faults = faults
            if seed is not None:
                self._seed = seed
                self._random.seed(seed)

    def draw(self) -> Problem | LateAnswer | None:
        """The fault this request gets, if any: a problem to answer at once, or a late answer."""
        with self._lock:
            roll = self._random.random()
            faults = self._faults
            fault: Problem | LateAnswer | None = None
            if roll < faults.fail_429_rate:
                fault = Problem(429, "too-many-requests", "the sandbox injected a rate-limit fault")
            elif roll < faults.fail_429_rate + faults.fail_500_rate:
                fault = Problem(500, "internal-server-error", "the sandbox injected a server fault")
            elif roll < faults.fail_429_rate + faults.fail_500_rate + faults.timeout_rate:
                fault = LateAnswer(faults.timeout_ms / 1000)
            if fault is not None:
                self._injected["timeout" if isinstance(fault, LateAnswer) else str(fault.status)] += 1
        return fault

    def delay(self) -> None:
        latency_ms = self._faults.latency_ms
        if latency_ms:
            time.sleep(latency_ms / 1000)
