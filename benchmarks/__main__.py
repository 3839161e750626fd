"""`python -m benchmarks [--only AREA ...] [--quick] [--runs N]`: run, print the table, save results.json.

Every timed area repeats its measurement `--runs` times (5, or BENCH_RUNS) and each timed goal is
judged on the median of those runs. Exit status: 0 when every area ran and every goal passed, 1 when a
row missed its goal (0 with --report-only), 2 when an area failed to run or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.registry import AREAS, PLANNED, RESULTS_PATH, ROOT, RUNS, Context, Row, machine, render, save

# Run from anywhere: the shared package and the local tooling importable as `make` sets them.
for folder in (ROOT / "layers" / "shared", ROOT / "local"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        action="append",
        metavar="AREA",
        help=f"run only this area (repeatable, or comma-separated): {', '.join(AREAS)}",
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations: a smoke run, noisier figures")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="where to write the JSON results")
    parser.add_argument(
        "--runs",
        type=_positive,
        default=None,
        help=f"times each timed area repeats (default {RUNS}, or BENCH_RUNS; a --quick run 3); goals are "
        "judged on the median",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="exit 0 even if a row misses its goal (gates are reported)"
    )
    parser.add_argument("--list", action="store_true", help="list the areas and exit")
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of runs, at least 1 (got {text!r})")
    return int(text)


def _runs(arguments: argparse.Namespace) -> int | None:
    """--runs, else BENCH_RUNS, else 3 for --quick and RUNS otherwise; None (after saying why) if bad."""
    if arguments.runs is not None:
        return int(arguments.runs)
    configured = os.environ.get("BENCH_RUNS", "")
    if not configured:
        return 3 if arguments.quick else RUNS
    try:
        return _positive(configured)
    except argparse.ArgumentTypeError as error:
        print(f"BENCH_RUNS: {error}", file=sys.stderr)
        return None


def _list() -> int:
    for name, module in AREAS.items():
        print(f"{name:14} {importlib.import_module(module).TITLE}")
    for name, description in PLANNED.items():
        print(f"{name:14} not built yet: {description}")
    return 0


def _selected(only: list[str] | None) -> list[str] | None:
    """The areas to run, in the order given; None (after saying why) if one is unknown."""
    selected = [name for option in only or [] for name in option.split(",") if name]
    unknown = [name for name in selected if name not in AREAS]
    if unknown:
        print(f"unknown area(s) {', '.join(unknown)}; built: {', '.join(AREAS)}", file=sys.stderr)
        planned = [name for name in unknown if name in PLANNED]
        if planned:
            print(f"not built yet: {', '.join(planned)}", file=sys.stderr)
        return None
    return selected or list(AREAS)


def _run(areas: list[str], context: Context) -> tuple[list[Row], list[str]]:
    """Run each area in turn; its rows join `context.rows`, where later areas (the cost model) find them."""
    failed: list[str] = []
    for name in areas:
        module = importlib.import_module(AREAS[name])
        print(f"==> {name}: {module.TITLE}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            context.rows.extend(module.run(context))
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"    {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return context.rows, failed


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    if arguments.list:
        return _list()
    areas, runs = _selected(arguments.only), _runs(arguments)
    if areas is None or runs is None:
        return 2
    started = time.perf_counter()
    context = Context(quick=arguments.quick, runs=runs)
    rows, failed = _run(areas, context)
    seconds = time.perf_counter() - started

    about = machine()
    header = (
        f"Moment Balance Sync benchmarks, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {about['cpus']} cores, "
        f"{about['implementation']} {about['python']}, {'quick' if arguments.quick else 'full'} run, "
        f"{seconds:.0f} s. The figure is the ratio (measured / baseline, same run). Timed goals: the "
        f"median of {runs} runs"
        + (f" (fewer than {RUNS}: a development run, not the issue's gate)." if runs < RUNS else ".")
    )
    skipped = [f"{name} ({description})" for name, description in PLANNED.items()]
    if rows:  # saved before printing, so a closed pipe cannot lose a run
        save(
            rows,
            path=arguments.output,
            areas=areas,
            quick=arguments.quick,
            seconds=seconds,
            skipped_rows=context.skipped,
            runs=runs,
        )
    print(render(rows, header=header, skipped=skipped, skipped_rows=context.skipped))
    if rows:
        print(f"\nwrote {arguments.output}")
    if failed:
        print(f"area(s) failed to run: {', '.join(failed)}", file=sys.stderr)
        return 2
    missed = [row.name for row in rows if row.status == "FAIL"]
    if missed:
        print(f"missed its goal: {', '.join(missed)}", file=sys.stderr)
        if not arguments.report_only:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
