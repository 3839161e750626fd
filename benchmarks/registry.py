"""Benchmark rows, their goals, the areas that produce them, and how a run is printed and saved.

A row is one figure: a value measured on the system, the same quantity measured on a baseline in
the same run, and their ratio, which is the figure (absolute times vary by machine; ratios travel).
A goal, when the issue sets one, is a bound on the ratio; rows without a goal are information.

An area is a module with `TITLE` and `run(context) -> list[Row]`; add it to `AREAS`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = ROOT / "benchmarks" / "results.json"

# Area name -> module, in the order a full run takes them. The runner imports only the areas it runs.
# `cost` comes last: it models from the figures the areas before it measured in the same run.
AREAS: dict[str, str] = {
    "receiver": "benchmarks.receiver",
    "reconciler": "benchmarks.reconciler",
    "pusher": "benchmarks.pusher",
    "bills": "benchmarks.bills",
    "cold_imports": "benchmarks.cold_imports",
    "sizes": "benchmarks.sizes",
    "simulation": "benchmarks.simulation",
    "cost": "benchmarks.cost",
    "events_cost": "benchmarks.events_cost",
}

# Timed goals are judged on the median of this many runs (issue 16); `--runs N` or BENCH_RUNS=N for a
# shorter development run, whose gates the header then marks as not the issue's.
RUNS = 5

# Units of timed rows (anything per second is a rate): these are the rows repeated and judged on runs.
TIMED_UNITS = frozenset({"s", "ms", "µs"})

# Areas later issues add; listed so `--list`, the table and docs/performance.md agree on what is missing.
PLANNED: dict[str, str] = {}


@dataclass(frozen=True)
class Goal:
    """A bound on a row's ratio (measured / baseline)."""

    operator: str  # "<=", ">=" or "=="
    bound: float

    @classmethod
    def at_most(cls, bound: float) -> Goal:
        return cls("<=", bound)

    @classmethod
    def at_least(cls, bound: float) -> Goal:
        return cls(">=", bound)

    @classmethod
    def exactly(cls, bound: float) -> Goal:
        return cls("==", bound)

    def met_by(self, ratio: float) -> bool:
        if self.operator == "<=":
            return ratio <= self.bound
        if self.operator == ">=":
            return ratio >= self.bound
        return math.isclose(ratio, self.bound, rel_tol=1e-9)

    def __str__(self) -> str:
        symbol = {"<=": "≤", ">=": "≥", "==": "="}[self.operator]
        return f"{symbol} {self.bound:.2f}x"


@dataclass
class Row:
    area: str
    name: str  # stable id, "<area>.<what>", the key in results.json
    title: str  # what the figure is, in words
    measured: float
    baseline: float
    unit: str  # of `measured` and `baseline`: "ms", "µs", "requests", "write units", "bytes", ...
    measured_label: str  # what was measured ("webhook_receiver.lambda_handler")
    baseline_label: str  # what it was compared with ("baseline_receiver", "the ideal")
    goal: Goal | None = None
    notes: list[str] = field(default_factory=list)
    # Everything else worth keeping (samples' spread, iterations, backend), for results.json.
    details: dict[str, Any] = field(default_factory=dict)
    # For timed rows: the ratio the goal is judged on, when it is not `ratio` (the median over runs of
    # the CPU-time ratio, which the load of a shared machine distorts less than wall time), and what it is.
    # Set from `runs` when only they are given.
    gate: float | None = None
    gate_label: str = ""
    # For timed rows: the ratio of each repeated run (CPU time where the process works, the rate for a
    # throughput). The gate is their median, the spread their min and max; all of them go to results.json.
    runs: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.runs and self.gate is None:
            self.gate = statistics.median(self.runs)

    @property
    def ratio(self) -> float:
        if self.baseline == 0:
            return math.inf if self.measured else 1.0
        return self.measured / self.baseline

    @property
    def timed(self) -> bool:
        return self.unit in TIMED_UNITS or self.unit.endswith("/s")

    @property
    def judged_ratio(self) -> float:
        return self.ratio if self.gate is None else self.gate

    @property
    def unrepeated(self) -> bool:
        """A timed goal measured once: one run on a shared machine proves nothing, so it cannot pass."""
        return self.goal is not None and self.timed and not self.runs

    @property
    def status(self) -> str:
        if self.goal is None:
            return "info"
        if self.unrepeated:
            return "FAIL"
        return "pass" if self.goal.met_by(self.judged_ratio) else "FAIL"

    def spread(self) -> str:
        """`min-max (n runs)` of a repeated row, "-" otherwise."""
        if not self.runs:
            return "-"
        return f"{min(self.runs):.2f}-{max(self.runs):.2f}x ({len(self.runs)})"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["goal"] = (
            None if self.goal is None else {"operator": self.goal.operator, "bound": self.goal.bound}
        )
        data["ratio"] = round(self.ratio, 4)
        data["runs"] = [round(ratio, 4) for ratio in self.runs]
        if self.runs:
            data["spread"] = {
                "median": round(statistics.median(self.runs), 4),
                "min": round(min(self.runs), 4),
                "max": round(max(self.runs), 4),
                "runs": len(self.runs),
            }
        data["status"] = self.status
        return data


@dataclass(frozen=True)
class Skipped:
    """A row that could not be measured on this machine (a tool missing, a handler not written yet)."""

    name: str
    reason: str


@dataclass(frozen=True)
class Context:
    """What every area gets: the run's mode, a way to size its work, and the rows measured so far
    in this run (an area may model from another's figures: the cost model does)."""

    quick: bool
    # How many times an area repeats what it times (each timed goal is judged on their median).
    runs: int = RUNS
    python: str = sys.executable
    root: Path = ROOT
    progress: Callable[[str], None] = lambda message: print(f"  .. {message}", file=sys.stderr, flush=True)
    rows: list[Row] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def iterations(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def row(self, name: str) -> Row | None:
        """A row measured earlier in this run, if its area ran."""
        return next((row for row in self.rows if row.name == name), None)

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append(Skipped(name, reason))
        self.progress(f"skipped {name}: {reason}")


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


def format_value(value: float, unit: str) -> str:
    if unit in {"ms", "µs"}:
        text = f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"
    elif unit == "USD":
        text = f"{value:,.3f}"
    elif float(value).is_integer():
        text = f"{int(value):,}"
    else:
        text = f"{value:,.2f}"
    return f"{text} {unit}"


def render(
    rows: Sequence[Row], *, header: str, skipped: Sequence[str], skipped_rows: Sequence[Skipped] = ()
) -> str:
    columns = ("row", "measured", "baseline", "ratio", "gated on", "spread (runs)", "goal", "result")
    table = [
        (
            row.name,
            format_value(row.measured, row.unit),
            format_value(row.baseline, row.unit),
            f"{row.ratio:.2f}x",
            f"{row.gate:.2f}x {row.gate_label}" if row.gate is not None else "-",
            row.spread(),
            str(row.goal) if row.goal else "-",
            row.status,
        )
        for row in rows
    ]
    widths = [max([len(columns[i]), *(len(line[i]) for line in table)]) for i in range(len(columns))]

    def line(cells: Sequence[str]) -> str:
        first, *numbers = cells
        return "  ".join(
            [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(numbers, widths[1:], strict=True))]
        )

    out = [header, "", line(columns), line(["-" * w for w in widths])]
    out += [line(cells) for cells in table]
    out.append("")
    for row in rows:
        out.append(f"{row.name}: {row.title}")
        out.append(f"    measured: {row.measured_label}")
        out.append(f"    baseline: {row.baseline_label}")
        if row.gate is not None:
            out.append(f"    gated on: {row.gate:.2f}x, {row.gate_label} (the ratio column is wall time)")
        if row.runs:
            each = ", ".join(f"{ratio:.2f}" for ratio in row.runs)
            out.append(
                f"    runs: {each} (median {row.judged_ratio:.2f}x, "
                f"min {min(row.runs):.2f}x, max {max(row.runs):.2f}x)"
            )
        if row.unrepeated:
            out.append("    FAIL: a timed goal measured once; only the median of repeated runs can pass it")
        out += [f"    - {note}" for note in row.notes]
    if skipped_rows:
        out.append("")
        out += [f"skipped {row.name}: {row.reason}" for row in skipped_rows]
    if skipped:
        out.append("")
        out.append("Not built yet: " + "; ".join(skipped))
    counts = {status: sum(row.status == status for row in rows) for status in ("pass", "FAIL", "info")}
    out.append("")
    out.append(f"{counts['pass']} pass, {counts['FAIL']} FAIL, {counts['info']} info")
    return "\n".join(out)


def save(
    rows: Sequence[Row],
    *,
    path: Path,
    areas: Sequence[str],
    quick: bool,
    seconds: float,
    skipped_rows: Sequence[Skipped] = (),
    runs: int = RUNS,
) -> None:
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": quick,
        "areas": list(areas),
        "not_built_yet": PLANNED,
        "seconds": round(seconds, 1),
        "runs": runs,
        "rows": [row.as_json() for row in rows],
        "skipped": [asdict(row) for row in skipped_rows],
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
