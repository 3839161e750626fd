"""`python -m benchmarks [--only AREA ...] [--quick]`: run the benchmarks, print the table, save results.json.

Exit status: 0 when every area ran (a row missing its goal is reported, not fatal: timings are not
gates), 1 with --strict and a row that missed its goal, 2 when an area failed to run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.registry import AREAS, PLANNED, RESULTS_PATH, ROOT, Context, Row, machine, render, save

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
    parser.add_argument("--strict", action="store_true", help="exit 1 if a row misses its goal")
    parser.add_argument("--list", action="store_true", help="list the areas and exit")
    return parser.parse_args(argv)


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
    areas = _selected(arguments.only)
    if areas is None:
        return 2
    started = time.perf_counter()
    context = Context(quick=arguments.quick)
    rows, failed = _run(areas, context)
    seconds = time.perf_counter() - started

    about = machine()
    header = (
        f"Moment Balance Sync benchmarks, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {about['cpus']} cores, "
        f"{about['implementation']} {about['python']}, {'quick' if arguments.quick else 'full'} run, "
        f"{seconds:.0f} s. The figure is the ratio (measured / baseline, same run)."
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
        )
    print(render(rows, header=header, skipped=skipped, skipped_rows=context.skipped))
    if rows:
        print(f"\nwrote {arguments.output}")
    if failed:
        print(f"area(s) failed to run: {', '.join(failed)}", file=sys.stderr)
        return 2
    if arguments.strict and any(row.status == "FAIL" for row in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
