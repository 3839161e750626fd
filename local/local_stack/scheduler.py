"""EventBridge Scheduler for the local stack: each scheduled function invoked at its interval, and on
demand. A function's runs never overlap (both scheduled functions have a reserved concurrency of 1);
an on-demand run waits for a scheduled one under way, and counts as that interval's run.

A scheduled run is an asynchronous invocation, so when it fails (an error, or killed at its timeout)
Lambda retries it: up to the function's EventInvokeConfig MaximumRetryAttempts (2 when the template
sets none), one minute after the first failure and two after the second ("Asynchronous invocation",
AWS Lambda Developer Guide); `retry_delays_seconds` shortens the waits locally. An on-demand run is a
synchronous invocation: its caller gets the error, and nothing retries it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from local_stack.functions import Invocation

# The schedules in template.yaml set no Input and the handlers read nothing from the event.
SCHEDULED_EVENT: dict[str, Any] = {}


@dataclass
class Job:
    name: str
    run: Callable[[dict[str, str]], Invocation]  # environment overrides -> the invocation
    interval_seconds: float | None  # None: on demand only
    report: Callable[[Invocation], str | None] = lambda _invocation: None  # a terminal line, if notable
    maximum_retry_attempts: int = 2  # of a failed scheduled (asynchronous) run
    retry_delays_seconds: tuple[float, ...] = (60.0, 120.0)
    next_at: float = 0.0
    retry_at: float | None = None  # a failed scheduled run's retry, when one is due
    retry_number: int = 0
    async_retries: int = 0
    runs: int = 0
    last: Invocation | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class Scheduler:
    def __init__(self, notify: Callable[[str], None] = lambda _line: None) -> None:
        self._jobs: dict[str, Job] = {}
        self._notify = notify
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="local-scheduler", daemon=True)

    def add(self, job: Job) -> None:
        if job.interval_seconds is not None:
            job.next_at = time.monotonic() + job.interval_seconds
        self._jobs[job.name] = job

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=300)  # a run under way finishes (the pusher's timeout is 240 s)

    def run_now(self, name: str, overrides: dict[str, str] | None = None) -> Invocation:
        job = self._jobs[name]
        with job.lock:
            invocation = job.run(overrides or {})
            job.runs += 1
            job.last = invocation
            if job.interval_seconds is not None:
                job.next_at = time.monotonic() + job.interval_seconds
        line = job.report(invocation)
        if line:
            self._notify(line)
        return invocation

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            name: {
                "interval_seconds": job.interval_seconds,
                "runs": job.runs,
                "async_retries": job.async_retries,
                "next_in_seconds": round(max(0.0, job.next_at - now), 1)
                if job.interval_seconds is not None
                else None,
            }
            for name, job in self._jobs.items()
        }

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            for job in list(self._jobs.values()):
                if job.retry_at is not None and time.monotonic() >= job.retry_at:
                    job.retry_at = None
                    job.async_retries += 1
                    self._run_scheduled(job, job.retry_number)
                if job.interval_seconds is not None and time.monotonic() >= job.next_at:
                    self._run_scheduled(job, 0)

    def _run_scheduled(self, job: Job, retry: int) -> None:
        """An asynchronous invocation (`retry` of them already made for this event), retried on failure."""
        invocation = self.run_now(job.name)
        if not invocation.failed or retry >= job.maximum_retry_attempts:
            return
        delays = job.retry_delays_seconds or (0.0,)
        delay = delays[min(retry, len(delays) - 1)]
        job.retry_number, job.retry_at = retry + 1, time.monotonic() + delay
        self._notify(
            f"{job.name}: Lambda retries the failed scheduled run in {delay:g} s "
            f"(retry {retry + 1} of {job.maximum_retry_attempts})"
        )
