"""`make mutants`: apply each patch in tests/simulation/mutants/ (made with `git diff`) to a scratch copy
of the tree, run the short simulation there, and print mutant / found / seconds. A mutant the
simulation does not find is a hole in the simulation. Exits 1 if any mutant was not found.

Found means: with the same seeds, the simulation breaks an invariant on the mutant that it does not
break on the tree as it is (runs are deterministic, so a patch that changes nothing changes no line
of the verdict; and the tree itself may still have holes the simulation finds).

Never a switch in shipped code: the patch is applied with `git apply` to the copy only."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
MUTANTS = Path(__file__).resolve().parent
COPIED = ("layers", "functions", "local", "tests", "template.yaml", "pyproject.toml", "docs", "events")


def python_path(tree: Path) -> str:
    functions = sorted(str(path) for path in (tree / "functions").iterdir() if path.is_dir())
    return os.pathsep.join(
        [str(tree / "layers" / "shared"), str(tree / "local"), str(tree / "tests"), *functions]
    )


def copy_tree(patch: Path | None, scratch: Path) -> str | None:
    """The tree in `scratch`, with `patch` applied; why not, if it does not apply."""
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, scratch / name, ignore=shutil.ignore_patterns("__pycache__", ".hypothesis")
            )
        else:
            shutil.copy2(source, scratch / name)
    if patch is None:
        return None
    applied = subprocess.run(  # noqa: S603 -- git on our own patch files
        ["git", "apply", str(patch)],  # noqa: S607 -- git from PATH, as make finds it
        cwd=scratch,
        capture_output=True,
        text=True,
        check=False,
    )
    return f"does not apply: {applied.stderr.strip()}" if applied.returncode else None


def simulate(tree: Path, seed: int, seeds: int, steps: int, examples: int) -> tuple[set[str], float]:
    """The invariant lines the simulation broke in `tree` (empty: none), and the seconds it took."""
    command = [sys.executable, "-W", "ignore", "-m", "simulation", "--seed", str(seed), "--seeds", str(seeds)]
    command += ["--steps", str(steps), "--examples", str(examples), "--no-shrink", "--stop"]
    started = time.perf_counter()
    result = subprocess.run(  # noqa: S603 -- our interpreter, our code
        command,
        cwd=tree,
        env={**os.environ, "PYTHONPATH": python_path(tree)},
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    # Numbers (ids, amounts, counts) left out: the same breach met by another id is not a new one.
    broken = {
        re.sub(r"\d+", "N", line) for line in result.stdout.splitlines() if line.startswith("invariant ")
    }
    if result.returncode not in (0, 1) or (result.returncode == 1 and not broken):
        broken.add(f"the simulation itself failed: {(result.stderr or result.stdout)[-300:]}")
    return broken, seconds


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m simulation.mutants", description=__doc__)
    parser.add_argument("names", nargs="*", help="only these mutants (file names without .patch)")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SIM_SEED") or 20261203))
    # Defaults: make test's short run (tests/simulation/test_simulation.py), the burst included.
    parser.add_argument("--seeds", type=int, default=int(os.environ.get("SIM_SEEDS") or 1))
    parser.add_argument("--steps", type=int, default=int(os.environ.get("SIM_STEPS") or 50))
    parser.add_argument("--examples", type=int, default=int(os.environ.get("SIM_EXAMPLES") or 10))
    arguments = parser.parse_args()
    os.environ.setdefault("SIM_BURSTS", "1")
    patches = sorted(MUTANTS.glob("*.patch"))
    if arguments.names:
        patches = [patch for patch in patches if patch.stem in arguments.names]
    settings = (arguments.seed, arguments.seeds, arguments.steps, arguments.examples)
    with tempfile.TemporaryDirectory(prefix="mutant-baseline-") as scratch:
        copy_tree(None, Path(scratch))
        baseline, seconds = simulate(Path(scratch), *settings)
    print(f"baseline (the tree as it is): {len(baseline)} invariant line(s) broken, {seconds:.1f} s")
    print(
        f"{'mutant':<48} {'result':<10} {'seconds':>8}  first invariant broken that the tree does not break"
    )
    missed = 0
    for patch in patches:
        with tempfile.TemporaryDirectory(prefix="mutant-") as scratch:
            problem = copy_tree(patch, Path(scratch))
            broken, seconds = (set(), 0.0) if problem else simulate(Path(scratch), *settings)
        new = sorted(broken - baseline)
        found = bool(new)
        detail = problem or (new[0] if new else "")
        missed += not found
        print(
            f"{patch.stem:<48} {'found' if found else 'NOT FOUND':<10} {seconds:>8.1f}  {detail[:140]}",
            flush=True,
        )
    print(f"mutants: {len(patches)}, found {len(patches) - missed}, not found {missed}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
