"""Each function in worker processes of its own, as Lambda runs each in execution environments of its own.

A worker is one execution environment: a process that imports its function's handler once, under
exactly the environment template.yaml gives that function, then serves one invocation at a time. A
function gets as many workers as its concurrency allows (started when first needed, kept warm), so
two functions, or two invocations of one function, really run at once and their DynamoDB calls
interleave. Processes, not threads: Powertools' Logger and Metrics, the runtime's cached clients and
os.environ are per process, as they are per execution environment on Lambda.

An invocation that runs past the function's Timeout is killed with its process, as Lambda ends it
(what it had not flushed, such as its metrics, is lost), and the next invocation gets a new worker.

Workers are forked from multiprocessing's fork server, which has imported the heavy libraries once
(`PRELOAD`), so a new worker costs an import of the handler rather than a fresh interpreter.

`WorkerPlugin`s run code inside every worker (the soak's faults, the tests' DynamoDB limits): a
factory ("module:function") called in the worker before the handler is imported; what it returns
wraps the handler, is given `state` before each invocation, and reports after it (to `on_report`).
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing import spawn
from multiprocessing.connection import Connection
from typing import Any, Protocol

# Imported once by the fork server; each worker is forked with them already loaded.
PRELOAD = [
    "boto3",
    "botocore.session",
    "botocore.client",
    "httpx",
    "aws_lambda_powertools",
    "aws_lambda_powertools.logging",
    "aws_lambda_powertools.metrics",
    "aws_lambda_powertools.event_handler.api_gateway",
    "concurrent.futures",
    "multiprocessing.managers",
    "local_stack.worker_preload",  # boto3's default session, warmed
]
# Lambda gives a function's initialisation 10 s; a loaded 2-core machine gets more before it is an error.
INIT_TIMEOUT_SECONDS = 60.0

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(PRELOAD)


@dataclass(frozen=True)
class WorkerPlugin:
    """Code run in every worker of `functions` (None: of every function); see the module's docstring."""

    factory: str  # "module:function", called as factory(logical_id, worker_number, *args)
    args: tuple[Any, ...] = ()
    functions: tuple[str, ...] | None = None


class Plugin(Protocol):
    def wrap(self, handler: Callable[..., Any]) -> Callable[..., Any]: ...

    def before(self, state: Mapping[str, Any]) -> None: ...

    def after(self) -> dict[str, Any]: ...


Receiver = Callable[[str, dict[str, Any]], None]  # (logical id, a plugin's report), in the stack's process

# Plugins every local stack of this process runs in its workers, each with what receives its reports
# (tests/conftest.py adds the DynamoDB limits here).
DEFAULT_PLUGINS: list[tuple[WorkerPlugin, Receiver]] = []


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, sent to it once (picklable)."""

    logical_id: str
    function_name: str
    environment: dict[str, str]  # the whole os.environ of the worker
    code_dir: str
    module: str
    function: str
    timeout_seconds: float
    output_path: str  # the function log: stdout and stderr, appended, as Lambda sends both to CloudWatch
    plugins: tuple[WorkerPlugin, ...] = ()


@dataclass
class Outcome:
    """What a worker answered: the response (JSON, as Lambda returns it), or the error Lambda reports."""

    response: Any = None
    error: str | None = None
    timed_out: bool = False
    reports: tuple[dict[str, Any], ...] = ()


class WorkerPool:
    """The workers of one function: at most `size` at once; an invocation waits for a free one."""

    def __init__(self, spec: WorkerSpec, size: int) -> None:
        self.spec = spec
        self.size = max(1, size)
        self._idle: list[_Worker] = []
        self._running = 0
        self._numbers = 0
        self._changed = threading.Condition()
        self._closed = False
        self.started = 0  # workers started so far (cold starts)
        self.killed = 0  # workers killed at the function's timeout

    def invoke(self, event: Any, overrides: Mapping[str, str], state: Mapping[str, Any]) -> Outcome:
        worker = self._acquire()
        alive = False
        try:
            outcome, alive = worker.invoke(event, dict(overrides), dict(state), self.spec.timeout_seconds)
            if outcome.timed_out:
                self.killed += 1
            return outcome
        finally:
            self._release(worker, alive)

    def warm(self) -> None:
        """Start a worker now (a cold start before the first invocation rather than during it)."""
        self._release(self._acquire(), alive=True)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()

    def _acquire(self) -> _Worker:
        with self._changed:
            while True:
                if self._closed:
                    raise RuntimeError(f"{self.spec.logical_id}: the local stack is stopping")
                if self._idle:
                    return self._idle.pop()
                if self._running < self.size:
                    self._running += 1
                    self._numbers += 1
                    number = self._numbers
                    break
                self._changed.wait()
        try:
            worker = _Worker.start(self.spec, number)
        except BaseException:
            with self._changed:
                self._running -= 1
                self._changed.notify()
            raise
        self.started += 1
        return worker

    def _release(self, worker: _Worker, alive: bool) -> None:
        with self._changed:
            if alive and not self._closed:
                self._idle.append(worker)
            else:
                self._running -= 1
        if not alive or self._closed:
            worker.stop()
        with self._changed:
            self._changed.notify()


_preparation_data = spawn.get_preparation_data
_starting = threading.Lock()


def _without_main(name: str) -> dict[str, Any]:
    """multiprocessing's preparation of a child, less the caller's main module: a worker needs only
    `worker_main`, and running the main module again in every worker (a script's, the demo's) would
    import the whole local stack each time."""
    data: dict[str, Any] = _preparation_data(name)
    data.pop("init_main_from_path", None)
    data.pop("init_main_from_name", None)
    return data


def start_fork_server() -> None:
    """Start the fork server (it imports PRELOAD once) if it is not running yet."""
    from multiprocessing import forkserver  # noqa: PLC0415

    forkserver.ensure_running()


class _Worker:
    def __init__(self, process: Any, connection: Connection) -> None:
        self.process = process
        self.connection = connection

    @classmethod
    def start(cls, spec: WorkerSpec, number: int) -> _Worker:
        parent_end, child_end = _CONTEXT.Pipe()
        process = _CONTEXT.Process(
            target=worker_main,
            args=(child_end, spec, number),
            name=f"{spec.logical_id}-{number}",
            daemon=True,
        )
        with _starting:
            spawn.get_preparation_data = _without_main
            try:
                process.start()
            finally:
                spawn.get_preparation_data = _preparation_data
        child_end.close()
        worker = cls(process, parent_end)
        if not parent_end.poll(INIT_TIMEOUT_SECONDS):
            worker.stop()
            raise RuntimeError(f"{spec.logical_id}: the worker did not start in {INIT_TIMEOUT_SECONDS:g} s")
        try:
            kind, detail = parent_end.recv()
        except (EOFError, OSError) as error:
            worker.stop()
            raise RuntimeError(f"{spec.logical_id}: the worker died while starting ({error})") from error
        if kind != "ready":
            worker.stop()
            raise RuntimeError(f"{spec.logical_id}: Runtime.ImportModuleError: {detail}")
        return worker

    def invoke(
        self, event: Any, overrides: dict[str, str], state: dict[str, Any], timeout: float
    ) -> tuple[Outcome, bool]:
        """The outcome, and whether this worker may serve again."""
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        try:
            self.connection.send((json.dumps(event), overrides, state, request_id))
            answered = self.connection.poll(timeout)
        except (OSError, EOFError) as error:
            return Outcome(error=f"Runtime.ExitError: RequestId: {request_id} Error: {error}"), False
        if not answered:  # past its Timeout: Lambda stops the invocation, and the environment with it
            self.kill()
            seconds = time.monotonic() - started
            return (
                Outcome(
                    error=f"Sandbox.Timedout: RequestId: {request_id} Error: Task timed out after "
                    f"{min(seconds, timeout):.2f} seconds",
                    timed_out=True,
                ),
                False,
            )
        try:
            kind, detail, reports = self.connection.recv()
        except (OSError, EOFError):
            self.kill()
            code = self.process.exitcode
            return (
                Outcome(
                    error=f"Runtime.ExitError: RequestId: {request_id} Error: Runtime exited "
                    f"with error: exit status {code}"
                ),
                False,
            )
        if kind == "ok":
            return Outcome(response=json.loads(detail), reports=tuple(reports)), True
        return Outcome(error=detail, reports=tuple(reports)), True

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=5)
        self.connection.close()

    def stop(self) -> None:
        try:
            self.connection.close()  # the worker's recv() ends, and so does the worker
        finally:
            self.process.join(timeout=2)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(timeout=5)


# --- inside the worker -------------------------------------------------------------------------------


def worker_main(connection: Connection, spec: WorkerSpec, number: int) -> None:
    """One execution environment: initialise (plugins, then the handler), then invocations until closed."""
    os.environ.clear()
    os.environ.update(spec.environment)
    output = open(spec.output_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 -- for the process's life
    sys.stdout = sys.stderr = output
    try:
        handler, plugins = _initialise(spec, number)
    except Exception as error:
        traceback.print_exc()
        connection.send(("error", f"{type(error).__name__}: {error}"))
        return
    connection.send(("ready", None))
    while True:
        try:
            event_json, overrides, state, request_id = connection.recv()
        except (EOFError, OSError):
            return
        for plugin in plugins:
            plugin.before(state)
        answer = _invoke(spec, handler, event_json, overrides, request_id)
        output.flush()
        connection.send((*answer, [plugin.after() for plugin in plugins]))


def _initialise(spec: WorkerSpec, number: int) -> tuple[Callable[..., Any], list[Plugin]]:
    plugins: list[Plugin] = []
    for entry in spec.plugins:
        if entry.functions is None or spec.logical_id in entry.functions:
            plugin = _resolve(entry.factory)(spec.logical_id, number, *entry.args)
            if plugin is not None:
                plugins.append(plugin)
    if spec.code_dir not in sys.path:
        sys.path.insert(0, spec.code_dir)
    handler: Callable[..., Any] = getattr(importlib.import_module(spec.module), spec.function)
    for plugin in plugins:
        handler = plugin.wrap(handler)
    return handler, plugins


def _invoke(
    spec: WorkerSpec, handler: Callable[..., Any], event_json: str, overrides: dict[str, str], request_id: str
) -> tuple[str, str]:
    """("ok", the response as JSON) or ("error", what Lambda reports), with `overrides` in os.environ."""
    from local_stack.lambda_context import LocalLambdaContext  # noqa: PLC0415

    saved = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    context = LocalLambdaContext(
        spec.function_name, timeout_seconds=spec.timeout_seconds, aws_request_id=request_id
    )
    try:
        response = handler(json.loads(event_json), context)
    except Exception as error:  # Lambda reports it as the invocation's error, and logs the traceback
        traceback.print_exc()
        return "error", f"{type(error).__name__}: {error}"
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        return "ok", json.dumps(response)
    except (TypeError, ValueError) as error:  # Lambda answers with JSON, or not at all
        return "error", f"Runtime.MarshalError: Unable to marshal response: {error}"


def _resolve(factory: str) -> Callable[..., Any]:
    module, name = factory.split(":", 1)
    found: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return found
