"""`make bench`'s gates: a timed goal is judged on the median of its repeated runs, printed with its
spread, saved with every run, and a missed goal makes the run exit non-zero (issue 16)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from benchmarks import __main__ as runner
from benchmarks.registry import RUNS, Context, Goal, Row, render


def _timed(runs: list[float], *, measured: float = 200.0, goal: Goal | None = None) -> Row:
    return Row(
        area="fake",
        name="fake.warm_median",
        title="a timed row",
        measured=measured,
        baseline=100.0,
        unit="µs",
        measured_label="ours",
        baseline_label="the floor",
        goal=goal or Goal.at_most(1.25),
        gate_label="CPU, median of runs",
        runs=runs,
    )


def test_a_timed_goal_is_judged_on_the_median_of_its_runs_not_on_one_run() -> None:
    # One disturbed run (9.9x) and a wall-time ratio of 2.0x: the median of the five CPU ratios rules.
    row = _timed([1.0, 1.1, 1.2, 1.3, 9.9])
    assert row.ratio == 2.0
    assert row.judged_ratio == 1.2
    assert row.status == "pass"
    assert _timed([1.1, 1.2, 1.3, 1.4, 1.5]).status == "FAIL"  # median 1.3 > 1.25


def test_a_timed_goal_measured_once_cannot_pass() -> None:
    row = _timed([], measured=100.0)  # ratio 1.0, well within 1.25x, but never repeated
    assert row.unrepeated
    assert row.status == "FAIL"
    assert "measured once" in render([row], header="h", skipped=[])


def test_counts_are_not_repeated_and_still_judged() -> None:
    row = Row("fake", "fake.requests", "requests", 1, 1, "requests", "ours", "ideal", goal=Goal.exactly(1))
    assert not row.timed
    assert row.status == "pass"
    assert row.spread() == "-"


def test_the_table_prints_median_min_and_max_of_every_repeated_row() -> None:
    text = render([_timed([1.21, 1.05, 1.39, 1.16, 1.24])], header="h", skipped=[])
    table_line = next(line for line in text.splitlines() if line.startswith("fake.warm_median"))
    assert "1.21x CPU" in table_line  # the median, the gate
    assert "1.05-1.39x (5)" in table_line  # the spread and the number of runs
    assert "median 1.21x, min 1.05x, max 1.39x" in text


def _area(rows: list[Row], seen: list[Context]) -> types.ModuleType:
    module = types.ModuleType("bench_gates_fake_area")
    module.TITLE = "a fake area"  # type: ignore[attr-defined]

    def run(context: Context) -> list[Row]:
        seen.append(context)
        return rows

    module.run = run  # type: ignore[attr-defined]
    return module


@pytest.fixture
def fake_area(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Install one area returning the given rows; returns the contexts it was run with."""
    monkeypatch.delenv("BENCH_RUNS", raising=False)

    def install(rows: list[Row]) -> list[Context]:
        seen: list[Context] = []
        monkeypatch.setitem(sys.modules, "bench_gates_fake_area", _area(rows, seen))
        monkeypatch.setattr(runner, "AREAS", {"fake": "bench_gates_fake_area"})
        return seen

    return install


def test_a_missed_goal_exits_non_zero_and_the_json_holds_every_run(
    fake_area: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = fake_area([_timed([1.1, 1.2, 1.3, 1.4, 1.5])])
    output = tmp_path / "results.json"
    assert runner.main(["--output", str(output)]) == 1
    assert "missed its goal: fake.warm_median" in capsys.readouterr().err
    assert seen[0].runs == RUNS == 5
    saved = json.loads(output.read_text())
    assert saved["runs"] == 5
    (row,) = saved["rows"]
    assert row["runs"] == [1.1, 1.2, 1.3, 1.4, 1.5]
    assert row["spread"] == {"median": 1.3, "min": 1.1, "max": 1.5, "runs": 5}
    assert row["status"] == "FAIL"
    # --report-only keeps the verdict in the table and the JSON but exits 0.
    assert runner.main(["--output", str(output), "--report-only"]) == 0


def test_a_run_whose_goals_pass_exits_zero(fake_area: Any, tmp_path: Path) -> None:
    fake_area([_timed([1.0, 1.1, 1.2, 1.3, 1.4])])
    assert runner.main(["--output", str(tmp_path / "results.json")]) == 0


def test_bench_runs_sets_the_repetitions_and_the_header_says_it_is_not_the_gate(
    fake_area: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = fake_area([_timed([1.0])])
    monkeypatch.setenv("BENCH_RUNS", "1")
    assert runner.main(["--output", str(tmp_path / "results.json")]) == 0
    assert seen[0].runs == 1
    assert "fewer than 5: a development run" in capsys.readouterr().out
    assert runner.main(["--output", str(tmp_path / "results.json"), "--quick"]) == 0
    assert seen[1].runs == 1  # BENCH_RUNS wins over --quick's 3
    monkeypatch.delenv("BENCH_RUNS")
    assert runner.main(["--output", str(tmp_path / "results.json"), "--quick"]) == 0
    assert seen[2].runs == 3


def test_a_bad_bench_runs_is_one_clear_line_and_exit_2(
    fake_area: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = fake_area([])
    monkeypatch.setenv("BENCH_RUNS", "five")
    assert runner.main(["--output", str(tmp_path / "results.json")]) == 2
    assert capsys.readouterr().err.strip() == "BENCH_RUNS: a whole number of runs, at least 1 (got 'five')"
    assert seen == []
