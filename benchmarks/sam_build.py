"""`sam build` once per benchmark run, into a scratch folder, and a Lambda-like Python path from it.

`.venv-sam/bin/sam build` (no container) with pyenv's python3.13 on PATH, as `make build` does,
but with `--build-dir` in a temporary folder removed when the run ends: the repository's own
`.aws-sam` is never touched. The areas that need the build (sizes, cold_imports) share it; if SAM CLI
or python3.13 is missing, or the build fails, they say so and skip what needs it.

`lambda_path` lays out what an execution environment has on its Python path: the function's code
(`/var/task`), the built layer (`/opt/python`), and the runtime's own packages (boto3 and what it
needs; Lambda's python3.13 runtime provides them, the layer does not bundle them), taken from the
benchmark's interpreter by symlink. A child started with `python -S` then sees only those, not the
development packages of `.venv` (click, rich and pygments would otherwise be imported by httpx).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

from benchmarks.registry import ROOT

SAM = ROOT / ".venv-sam" / "bin" / "sam"
# What Lambda's python3.13 runtime provides beside the standard library.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "urllib3", "dateutil", "six")


@dataclass(frozen=True)
class Build:
    root: Path  # the --build-dir
    seconds: float
    # Logical id -> built folder (functions' code, and SharedLayer's content).
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def layer_python(self) -> Path:
        return self.artifacts["SharedLayer"] / "python"


_result: Build | str | None = None


def build() -> Build | str:
    """The run's build, made on first use; a string saying why when there is none."""
    global _result  # noqa: PLW0603 -- one build per benchmark run, shared by the areas
    if _result is None:
        _result = _build()
    return _result


def _python313_bin() -> str | None:
    """The folder of a python3.13 that runs: pyenv's 3.13.0 first (as `make build`), else one on PATH
    that is not a pyenv shim (a shim fails when 3.13 is not the selected version)."""
    pyenv = shutil.which("pyenv")
    if pyenv:
        answer = subprocess.run(  # noqa: S603 -- pyenv, asked where 3.13.0 lives
            [pyenv, "prefix", "3.13.0"], capture_output=True, text=True, check=False, timeout=30
        )
        prefix = answer.stdout.strip()
        if answer.returncode == 0 and prefix and (Path(prefix) / "bin" / "python3.13").exists():
            return str(Path(prefix) / "bin")
    found = shutil.which("python3.13")
    if found and "shims" not in Path(found).parts:
        return str(Path(found).parent)
    return None


def _build() -> Build | str:
    if not SAM.exists():
        return f"SAM CLI is not installed ({SAM.relative_to(ROOT)}; `make build` installs it)"
    python_bin = _python313_bin()
    if python_bin is None:
        return "python3.13 is neither on PATH nor known to pyenv (`pyenv prefix 3.13.0`)"
    scratch = Path(tempfile.mkdtemp(prefix="bench-sam-build-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    build_dir = scratch / "build"
    environment = dict(os.environ, PATH=f"{python_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    environment["SAM_CLI_TELEMETRY"] = "0"
    started = time.perf_counter()
    try:
        completed = subprocess.run(  # noqa: S603 -- the project's own SAM CLI
            [str(SAM), "build", "--template", str(ROOT / "template.yaml"), "--build-dir", str(build_dir)],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "sam build took more than 300 s"
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        return f"sam build failed (exit {completed.returncode}): {' / '.join(tail)}"
    artifacts = {path.name: path for path in build_dir.iterdir() if path.is_dir()}
    if "SharedLayer" not in artifacts:
        return "sam build produced no SharedLayer folder"
    return Build(root=build_dir, seconds=seconds, artifacts=artifacts)


def runtime_packages(scratch: Path) -> Path:
    """A folder holding (symlinks to) the packages Lambda's runtime provides, from this interpreter."""
    folder = scratch / "lambda-runtime"
    folder.mkdir(exist_ok=True)
    for name in RUNTIME_PACKAGES:
        spec = find_spec(name)
        assert spec is not None and spec.origin is not None, f"{name} is not installed"
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        target = folder / source.name
        if not target.exists():
            target.symlink_to(source, target_is_directory=source.is_dir())
    return folder
