"""Whether the event pipes are running (docs/events.md, docs/operations.md#event-pipe-not-running).

Pipes stops a pipe itself on repeated 4xx (a deleted bus, a broken role), and a stopped pipe emits
no metrics at all, so its `ExecutionFailed` alarm goes quiet exactly when it matters. CloudWatch has
no metric of a pipe's state, so the re-drive's scheduled run asks `pipes:DescribePipe` of each pipe
the template names (EVENT_PIPE_NAMES) and emits `EventPipeNotRunning`: how many are not RUNNING.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from moment_sync.observability import MetricUnit, logger, metrics

RUNNING: Final = "RUNNING"


@dataclass(frozen=True, slots=True)
class PipeState:
    name: str
    state: str  # CurrentState, or the error that kept us from reading it
    reason: str = ""  # StateReason, or the error's message

    @property
    def running(self) -> bool:
        return self.state == RUNNING


def pipe_names(setting: str | None) -> list[str]:
    return [name for name in (setting or "").split() if name]


def check_event_pipes(client: Any, names: list[str]) -> list[PipeState]:
    """Each pipe's state; one not found, or not readable, counts as not running (a deleted pipe
    announces nothing either). Emits EventPipeNotRunning (0 when all run) and logs each stopped one."""
    states: list[PipeState] = []
    for name in names:
        try:
            described = client.describe_pipe(Name=name)
        except Exception as error:
            states.append(PipeState(name, type(error).__name__, str(error)[:300]))
            continue
        states.append(
            PipeState(name, str(described.get("CurrentState")), str(described.get("StateReason", "")))
        )
    stopped = [state for state in states if not state.running]
    for state in stopped:
        logger.error(
            "event pipe not running",
            extra={"pipe": state.name, "state": state.state, "state_reason": state.reason},
        )
    if names:
        metrics.add_metric(name="EventPipeNotRunning", unit=MetricUnit.Count, value=len(stopped))
    return states
