"""How the areas measure: statistics, a Lambda-like environment, and fresh interpreters.

Anything timed runs in a child interpreter started for it, never in the runner: a cold start needs a
fresh process by definition, and a warm loop must not share its process with moto (which hooks every
botocore client once imported), another area, or the other side of its comparison (Powertools hooks
every botocore session created after it is imported).
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.registry import ROOT

_COLD_CHILD = (Path(__file__).with_name("_cold_child.py")).read_text()
_CALL_CHILD = (
    "import importlib, json, sys\n"
    "module, _, function = sys.argv[1].partition(':')\n"
    "params = json.loads(open(sys.argv[2]).read())\n"
    "result = getattr(importlib.import_module(module), function)(params)\n"
    "open(sys.argv[3], 'w').write(json.dumps(result))\n"
)


def median(samples: Iterable[float]) -> float:
    return statistics.median(samples)


def percentile(samples: Iterable[float], fraction: float) -> float:
    """Nearest-rank percentile (p95: fraction=0.95)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@contextmanager
def captured_stdout() -> Iterator[bytearray]:
    """Everything written to file descriptor 1 (where Powertools' handler writes) meanwhile."""
    written = bytearray()
    sys.stdout.flush()
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(1)
        os.dup2(capture.fileno(), 1)
        try:
            yield written
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            capture.seek(0)
            written += capture.read()


def spread(samples: Sequence[float]) -> dict[str, float]:
    """n, median, min and max of a list of samples, for results.json."""
    return {
        "n": len(samples),
        "median": round(median(samples), 3),
        "min": round(min(samples), 3),
        "max": round(max(samples), 3),
    }


def cross_checks(
    ours: Sequence[float], theirs: Sequence[float], cpu: tuple[Sequence[float], Sequence[float]] | None = None
) -> dict[str, float]:
    """Other estimates of the same ratio, to judge its noise: the median of the ratios of starts made
    in the same round (next to each other in time), the ratio of the fastest starts (contention only
    ever slows a start down), and the ratio of median CPU times (which other processes inflate less)."""
    paired = [mine / other for mine, other in zip(ours, theirs, strict=True)]
    checks = {
        "paired_median_ratio": round(median(paired), 3),
        "min_ratio": round(min(ours) / min(theirs), 3),
    }
    if cpu:
        checks["cpu_time_ratio"] = round(median(cpu[0]) / median(cpu[1]), 3)
    return checks


def lambda_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the tests use (tests/conftest.py), plus what template.yaml sets for every function.

    Credentials are the made-up ones moto accepts and AWS refuses; nothing here reaches an account.
    """
    from local_stack.made_up_values import (  # noqa: PLC0415 -- only the runner needs local/ on its path
        LOCAL_AWS_ACCESS_KEY_ID,
        LOCAL_AWS_SECRET_ACCESS_KEY,
    )

    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "POWERTOOLS_", "PYTHON")) and name != "BOTO_CONFIG"
    }
    environment.update(
        {
            "AWS_DEFAULT_REGION": "af-south-1",
            "AWS_ACCESS_KEY_ID": LOCAL_AWS_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": LOCAL_AWS_SECRET_ACCESS_KEY,
            "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
            # No ~/.aws files: the Lambda runtime has none either, and reading them is not ours to time.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "POWERTOOLS_SERVICE_NAME": "moment-balance-sync",
            "POWERTOOLS_METRICS_NAMESPACE": "MomentBalanceSync",
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
    )
    environment.update(extra or {})
    return environment


def run_call(
    python: str,
    target: str,
    params: Mapping[str, Any],
    *,
    environment: Mapping[str, str],
    pythonpath: Sequence[Path],
    timeout: float = 120,
) -> Any:
    """Call `module:function(params)` in a fresh interpreter and return its JSON result.

    The child's stdout (the handlers' logs and metrics) goes to /dev/null; its result comes back
    through a file.
    """
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        params_path = Path(scratch, "params.json")
        result_path = Path(scratch, "result.json")
        params_path.write_text(json.dumps(params))
        child_env = dict(environment, PYTHONPATH=os.pathsep.join(map(str, pythonpath)))
        completed = subprocess.run(  # noqa: S603 -- our interpreter, our code
            [python, "-c", _CALL_CHILD, target, str(params_path), str(result_path)],
            env=child_env,
            cwd=scratch,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"{target} failed in its child process:\n{completed.stderr[-4000:]}")
        return json.loads(result_path.read_text())


_SERVE_CHILD = (
    "import importlib, json, os, sys\n"
    "module, _, function = sys.argv[1].partition(':')\n"
    "params = json.loads(open(sys.argv[2]).read())\n"
    "reply = os.fdopen(int(sys.argv[4]), 'w')\n"
    "step = getattr(importlib.import_module(module), function)(params)\n"
    "reply.write('ready\\n'); reply.flush()\n"
    "for line in sys.stdin:\n"
    "    answer = step(json.loads(line))\n"
    "    if answer is not None:\n"
    "        open(sys.argv[3], 'w').write(json.dumps(answer)); break\n"
    "    reply.write('ok\\n'); reply.flush()\n"
)


class Server:
    """A fresh interpreter running `module:function(params)`, which returns a `step(command)`; each
    command is run when sent, so several servers can take turns in small batches (both sides of a
    comparison then share whatever the machine does meanwhile). A step returning a value ends it."""

    def __init__(
        self,
        python: str,
        target: str,
        params: Mapping[str, Any],
        *,
        environment: Mapping[str, str],
        pythonpath: Sequence[Path],
    ) -> None:
        self._scratch = tempfile.TemporaryDirectory(prefix="bench-serve-")
        scratch = Path(self._scratch.name)
        Path(scratch, "params.json").write_text(json.dumps(params))
        self._result = Path(scratch, "result.json")
        self._stderr = Path(scratch, "stderr.txt").open("w+")  # noqa: SIM115 -- closed in finish()
        read, write = os.pipe()
        child_env = dict(environment, PYTHONPATH=os.pathsep.join(map(str, pythonpath)))
        self.target = target
        self._process = subprocess.Popen(  # noqa: S603 -- our interpreter, our code
            [python, "-c", _SERVE_CHILD, target, str(scratch / "params.json"), str(self._result), str(write)],
            env=child_env,
            cwd=scratch,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            text=True,
            pass_fds=(write,),
        )
        os.close(write)
        self._replies = os.fdopen(read)
        self._expect("ready")

    def _expect(self, word: str) -> None:
        if self._replies.readline().strip() != word:
            self._process.wait(timeout=30)
            self._stderr.seek(0)
            raise RuntimeError(f"{self.target} failed in its child process:\n{self._stderr.read()[-4000:]}")

    def send(self, command: Mapping[str, Any]) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(command) + "\n")
        self._process.stdin.flush()
        self._expect("ok")

    def finish(self, command: Mapping[str, Any]) -> Any:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(command) + "\n")
        self._process.stdin.close()
        if self._process.wait(timeout=120) != 0 or not self._result.exists():
            self._stderr.seek(0)
            raise RuntimeError(f"{self.target} failed in its child process:\n{self._stderr.read()[-4000:]}")
        answer = json.loads(self._result.read_text())
        self._replies.close()
        self._stderr.close()
        self._scratch.cleanup()
        return answer


@dataclass(frozen=True)
class ColdSubject:
    """One thing whose cold start is measured: what a fresh Lambda execution environment imports and builds.

    `ready` steps ("module:function=argument", called after the import, timed with it) build what
    the first request needs; `first_call` ("module:function", untimed, run with the repository on
    sys.path) returns a zero-argument callable that serves one request (timed) and a check of its answer.
    """

    name: str
    module: str
    pythonpath: tuple[Path, ...]
    ready: tuple[str, ...] = ()
    first_call: str = ""
    environment: Mapping[str, str] = field(default_factory=dict)
    write_bytecode: bool = True
    # Interpreter options, e.g. ("-S",): no site-packages, only `pythonpath` (a Lambda-like path).
    python_flags: tuple[str, ...] = ()


@dataclass
class ColdSamples:
    import_ms: list[float] = field(default_factory=list)
    # Per start: milliseconds from the import's start to the end of each ready step.
    steps_ms: list[list[float]] = field(default_factory=list)
    # Per start: to the end of the first call (when the subject has one).
    first_response_ms: list[float] = field(default_factory=list)
    # The same spans as import_ms and steps_ms in CPU time of the child process.
    cpu_import_ms: list[float] = field(default_factory=list)
    cpu_steps_ms: list[list[float]] = field(default_factory=list)
    modules: int = 0

    def through(self, steps: int, *, cpu: bool = False) -> list[float]:
        """Per start: the import plus its first `steps` ready steps (all of them when it has fewer)."""
        imports, runs = (self.cpu_import_ms, self.cpu_steps_ms) if cpu else (self.import_ms, self.steps_ms)
        return [
            run[min(steps, len(run)) - 1] if steps and run else imported
            for imported, run in zip(imports, runs, strict=True)
        ]


def cold_start(
    python: str, subjects: Sequence[ColdSubject], runs: int, environment: Mapping[str, str]
) -> dict[str, ColdSamples]:
    """Start each subject `runs` times in a fresh interpreter, interleaved (A B C, B C A, ...) so
    that drift on the machine falls on every subject alike. One untimed start per subject first compiles
    its bytecode where it may (what a deployment package with .pyc would hold)."""
    samples = {subject.name: ColdSamples() for subject in subjects}
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as scratch:
        for round_number in range(runs + 1):
            # Rotate who goes first, so no subject always follows the same one.
            shift = round_number % len(subjects)
            for subject in [*subjects[shift:], *subjects[:shift]]:
                timings = _cold_once(python, subject, environment, Path(scratch))
                if round_number == 0:
                    continue  # warms the page cache and writes .pyc files; not a sample
                result = samples[subject.name]
                result.import_ms.append(timings["import_s"] * 1000)
                result.steps_ms.append([seconds * 1000 for seconds in timings["steps_s"]])
                result.cpu_import_ms.append(timings["cpu_import_s"] * 1000)
                result.cpu_steps_ms.append([seconds * 1000 for seconds in timings["cpu_steps_s"]])
                if timings["first_call_s"] is not None:
                    result.first_response_ms.append((timings["ready_s"] + timings["first_call_s"]) * 1000)
                result.modules = timings["modules"]
    return samples


def _cold_once(
    python: str, subject: ColdSubject, environment: Mapping[str, str], scratch: Path
) -> dict[str, Any]:
    result_path = scratch / "cold.json"
    completed = _run_cold_child(python, subject, environment, scratch, result_path, subject.first_call)
    if completed.returncode != 0:
        raise RuntimeError(f"cold start of {subject.name} failed:\n{completed.stderr[-4000:]}")
    timings: dict[str, Any] = json.loads(result_path.read_text())
    return timings


def _run_cold_child(
    python: str,
    subject: ColdSubject,
    environment: Mapping[str, str],
    scratch: Path,
    result_path: Path,
    first_call: str,
    extra_flags: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """One fresh interpreter importing the subject, as Lambda's runtime would, in `scratch` (not the
    repository: its folders would be importable as namespace packages)."""
    child_env = dict(environment, **subject.environment)
    child_env["PYTHONPATH"] = os.pathsep.join(map(str, subject.pythonpath))
    if not subject.write_bytecode:
        child_env["PYTHONDONTWRITEBYTECODE"] = "1"
    arguments = [str(result_path), subject.module, ",".join(subject.ready), first_call, str(ROOT)]
    return subprocess.run(  # noqa: S603 -- our interpreter, our code
        [python, *subject.python_flags, *extra_flags, "-c", _COLD_CHILD, *arguments],
        env=child_env,
        cwd=scratch,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )


_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")


@dataclass
class ImportBreakdown:
    """Where a cold start's import time goes, from one `python -X importtime` start.

    Tracing inflates every figure; they say where the time goes, not how much there is.
    """

    # Self time summed by top-level package ("stdlib" for the standard library), largest first.
    by_package_ms: list[tuple[str, float]]
    # For each module the child imported itself: its total, and its largest direct imports.
    roots: dict[str, tuple[float, list[tuple[str, float]]]]

    def describe(self, top: int = 5) -> list[str]:
        if not self.by_package_ms:
            return []  # not measured (a quick run)
        lines = [
            "self time by package: "
            + ", ".join(f"{package} {ms:.0f} ms" for package, ms in self.by_package_ms[:top])
        ]
        for root, (total, children) in self.roots.items():
            if total >= 1:
                parts = ", ".join(f"{name} {ms:.0f}" for name, ms in children[:top] if ms >= 0.5)
                lines.append(f"{root} {total:.0f} ms, of which (cumulative ms) {parts}")
        return lines


def import_breakdown(python: str, subject: ColdSubject, environment: Mapping[str, str]) -> ImportBreakdown:
    """One `python -X importtime` start of the subject (its import and ready steps, no first call)."""
    with tempfile.TemporaryDirectory(prefix="bench-importtime-") as scratch:
        completed = _run_cold_child(
            python, subject, environment, Path(scratch), Path(scratch, "cold.json"), "", ("-X", "importtime")
        )
    if completed.returncode != 0:
        raise RuntimeError(f"importtime of {subject.name} failed:\n{completed.stderr[-4000:]}")
    by_package: dict[str, float] = {}
    roots: dict[str, tuple[float, list[tuple[str, float]]]] = {}
    children: list[tuple[str, float]] = []
    _, _, timed = completed.stderr.partition("bench: timed import starts\n")
    for line in timed.splitlines():
        match = _IMPORT_LINE.match(line)
        if not match:
            continue
        self_ms, cumulative_ms = int(match.group(1)) / 1000, int(match.group(2)) / 1000
        depth, name = len(match.group(3)) // 2, match.group(4)
        top_level = name.split(".")[0]
        package = "stdlib" if top_level.lstrip("_") in sys.stdlib_module_names else top_level
        by_package[package] = by_package.get(package, 0.0) + self_ms
        if depth == 1:
            children.append((name, cumulative_ms))
        elif depth == 0:
            roots[name] = (cumulative_ms, sorted(children, key=lambda child: -child[1]))
            children = []
    return ImportBreakdown(sorted(by_package.items(), key=lambda item: -item[1]), roots)
