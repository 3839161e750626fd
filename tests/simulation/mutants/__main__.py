"""`make mutants`: apply each patch in tests/simulation/mutants/ (made with `git diff`) to a scratch copy
of the tree, run the short simulation there, and print mutant / found / seconds. A mutant the
simulation does not find is a hole in the simulation. Exits 1 if any mutant was not found.

Never a switch in shipped code: the patch is applied with `git apply` to the copy only."""

from __future__ import annotations

import argparse
import os
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


def run_mutant(patch: Path, seed: int, seeds: int, steps: int, examples: int) -> tuple[bool, float, str]:
    with tempfile.TemporaryDirectory(prefix="mutant-") as scratch:
        tree = Path(scratch)
        for name in COPIED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(
                    source, tree / name, ignore=shutil.ignore_patterns("__pycache__", ".hypothesis")
                )
            else:
                shutil.copy2(source, tree / name)
        applied = subprocess.run(  # noqa: S603 -- git on our own patch files
            ["git", "apply", str(patch)],  # noqa: S607 -- git from PATH, as make finds it
            cwd=tree,
            capture_output=True,
            text=True,
            check=False,
        )
        if applied.returncode:
            return False, 0.0, f"does not apply: {applied.stderr.strip()}"
        started = time.perf_counter()
        command = [
            sys.executable,
            "-W",
            "ignore",
            "-m",
            "simulation",
            "--seed",
            str(seed),
            "--seeds",
            str(seeds),
            "--steps",
            str(steps),
            "--examples",
            str(examples),
            "--no-shrink",
        ]
        result = subprocess.run(  # noqa: S603 -- our interpreter, our code
            command,
            cwd=tree,
            env={**os.environ, "PYTHONPATH": python_path(tree)},
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
        found = result.returncode == 1 and "simulation: seed" in result.stdout
        lines = result.stdout.splitlines()
        broken = [line for line in lines if line.startswith("invariant ")]
        return found, seconds, broken[0] if broken else (lines[-1] if lines else result.stderr[-200:])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m simulation.mutants", description=__doc__)
    parser.add_argument("names", nargs="*", help="only these mutants (file names without .patch)")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SIM_SEED") or 20261203))
    parser.add_argument("--seeds", type=int, default=int(os.environ.get("SIM_SEEDS") or 3))
    parser.add_argument("--steps", type=int, default=int(os.environ.get("SIM_STEPS") or 40))
    parser.add_argument("--examples", type=int, default=int(os.environ.get("SIM_EXAMPLES") or 6))
    arguments = parser.parse_args()
    patches = sorted(MUTANTS.glob("*.patch"))
    if arguments.names:
        patches = [patch for patch in patches if patch.stem in arguments.names]
    print(f"{'mutant':<40} {'result':<10} {'seconds':>8}  first invariant broken")
    missed = 0
    for patch in patches:
        found, seconds, detail = run_mutant(
            patch, arguments.seed, arguments.seeds, arguments.steps, arguments.examples
        )
        missed += not found
        print(
            f"{patch.stem:<40} {'found' if found else 'NOT FOUND':<10} {seconds:>8.1f}  {detail[:140]}",
            flush=True,
        )
    print(f"mutants: {len(patches)}, found {len(patches) - missed}, not found {missed}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
