"""A worker plugin (local_stack.workers) that makes a function's first invocations run long, so that a
test can watch the local stack kill them at the function's timeout as Lambda would.

The count lives in a file, not in the worker: a killed worker is replaced by a new process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any], Any], Any]


class _SlowFirst:
    def __init__(self, counter: Path, slow: int, seconds: float) -> None:
        self._counter = counter
        self._slow = slow
        self._seconds = seconds

    def wrap(self, handler: Handler) -> Handler:
        def invoke(event: dict[str, Any], context: Any) -> Any:
            started = int(self._counter.read_text() or 0) if self._counter.exists() else 0
            self._counter.write_text(str(started + 1))
            if started < self._slow:
                time.sleep(self._seconds)  # past the timeout: the stack kills the worker here
            return handler(event, context)

        return invoke

    def before(self, state: Mapping[str, Any]) -> None:
        pass

    def after(self) -> dict[str, Any]:
        return {}


def slow_first(logical_id: str, number: int, directory: str, slow: int, seconds: float) -> _SlowFirst:
    """The first `slow` invocations of the function (over all its workers) sleep `seconds` first."""
    return _SlowFirst(Path(directory) / f"{logical_id}.count", slow, seconds)
