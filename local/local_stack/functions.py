"""Lambda functions as template.yaml declares them: handler import path, environment, HTTP API routes,
and `LocalFunctions`, which invokes them the way Lambda would (in worker processes: workers.py).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from local_stack.lambda_context import LocalLambdaContext
from local_stack.template import (
    ROOT,
    Intrinsics,
    function_timeout_seconds,
    load_template,
    resource_properties,
)
from local_stack.workers import WorkerPlugin, WorkerPool, WorkerSpec

Resolver = Callable[[str], str]


def handler_path(logical_id: str) -> tuple[str, str, str]:
    """(code folder, module, function) of a function's Handler."""
    properties = resource_properties(logical_id)
    module_name, function_name = properties["Handler"].rsplit(".", 1)
    return str(ROOT / properties["CodeUri"]), module_name, function_name


def handler_exists(logical_id: str) -> bool:
    """Whether the function's handler module is in the repository yet."""
    code_dir, module_name, _ = handler_path(logical_id)
    return os.path.isfile(os.path.join(code_dir, *module_name.split(".")) + ".py")


def load_handler(logical_id: str) -> Callable[..., Any]:
    """Import the handler the way Lambda does: CodeUri on the path, then module.function."""
    code_dir, module_name, function_name = handler_path(logical_id)
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    handler: Callable[..., Any] = getattr(importlib.import_module(module_name), function_name)
    return handler


def function_environment(logical_id: str, resolve_ref: Resolver | Intrinsics) -> dict[str, str]:
    """Globals' and the function's own variables, with every intrinsic resolved by `resolve_ref`
    (an `Intrinsics`, or a function of a `!Ref` name for templates that use nothing else)."""
    template = load_template()
    variables: dict[str, Any] = {}
    for source in (template.get("Globals", {}).get("Function", {}), resource_properties(logical_id)):
        variables.update(source.get("Environment", {}).get("Variables", {}))
    return {name: _resolve(value, resolve_ref) for name, value in variables.items()}


def http_routes(logical_id: str) -> list[tuple[str, str]]:
    """(method, path) of every HttpApi event of the function."""
    events: Mapping[str, Any] = resource_properties(logical_id).get("Events", {})
    return [
        (event["Properties"]["Method"].upper(), event["Properties"]["Path"])
        for event in events.values()
        if event.get("Type") == "HttpApi"
    ]


def iam_routes(logical_id: str) -> list[tuple[str, str]]:
    """(method, path) of the function's HttpApi events that the template puts behind AWS_IAM."""
    events: Mapping[str, Any] = resource_properties(logical_id).get("Events", {})
    return [
        (event["Properties"]["Method"].upper(), event["Properties"]["Path"])
        for event in events.values()
        if event.get("Type") == "HttpApi"
        and (event["Properties"].get("Auth") or {}).get("Authorizer") == "AWS_IAM"
    ]


def _resolve(value: Any, resolve_ref: Resolver | Intrinsics) -> str:
    if isinstance(resolve_ref, Intrinsics):
        return str(resolve_ref.resolve(value))
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return resolve_ref(value["Ref"])
    if isinstance(value, dict):
        raise ValueError(f"the local stack cannot resolve {value!r}")
    return str(value)


# --- invoking ------------------------------------------------------------------------------------


@dataclass
class Invocation:
    """What one invocation came to: the handler's response, or the error Lambda would report."""

    function: str
    response: Any = None
    error: str | None = None  # "ErrorType: message", as Lambda's errorType/errorMessage
    seconds: float = 0.0
    timed_out: bool = False  # killed at the function's Timeout

    @property
    def failed(self) -> bool:
        return self.error is not None


DEFAULT_CONCURRENCY = 4  # workers per function when the template reserves no concurrency


def template_concurrency(logical_id: str, default: int = DEFAULT_CONCURRENCY) -> int:
    """How many invocations of the function may run at once: its ReservedConcurrentExecutions when the
    template sets one (a number; anything else, such as a parameter, is left to the default), else
    `default`. Locally never more than `default`: a few workers already make every race possible."""
    reserved = resource_properties(logical_id).get("ReservedConcurrentExecutions")
    if isinstance(reserved, int) and not isinstance(reserved, bool) and reserved > 0:
        return min(reserved, default)
    return default


@dataclass
class LocalFunctions:
    """The template's functions, each invoked in worker processes of its own (`workers.py`), at most
    `concurrency[logical_id]` at once, killed past `timeouts[logical_id]` (the template's Timeout
    unless a test shortens it). Each sees exactly the environment template.yaml gives its function
    (`environments`), so a handler that reads a variable its function does not get fails here as it
    would on AWS.

    `in_process=True` runs them the old way instead, in this process one at a time under one lock,
    with no timeout enforced: only for a test that must reach into a function's own process (hooks
    on its boto3 client, its runtime's adapters)."""

    environments: dict[str, dict[str, str]]
    names: dict[str, str] = field(default_factory=dict)  # logical id -> the local function name
    concurrency: dict[str, int] = field(default_factory=dict)  # default: template_concurrency()
    timeouts: dict[str, float] = field(default_factory=dict)  # default: the template's Timeout
    in_process: bool = False
    output_path: str = os.devnull  # where the workers write their logs and metrics
    plugins: tuple[WorkerPlugin, ...] = ()
    on_report: Callable[[str, dict[str, Any]], None] = lambda _logical_id, _report: None
    state: dict[str, Any] = field(default_factory=dict)  # given to the plugins before each invocation
    handlers: dict[str, Callable[..., Any]] = field(default_factory=dict)  # in_process only
    counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    timed_out: dict[str, int] = field(default_factory=dict)
    _available: set[str] = field(default_factory=set)
    _pools: dict[str, WorkerPool] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _counting: threading.Lock = field(default_factory=threading.Lock)

    def load(self) -> LocalFunctions:
        """Every function whose handler exists (the ledger API may not have landed yet): imported here
        (in_process), or given a pool of workers that start when first invoked."""
        for logical_id in self.environments:
            if not handler_exists(logical_id):
                continue
            self._available.add(logical_id)
            if self.in_process:
                with self.environment_of(logical_id):
                    self.handlers[logical_id] = load_handler(logical_id)
            else:
                self._pools[logical_id] = WorkerPool(
                    self._spec(logical_id),
                    self.concurrency.get(logical_id) or template_concurrency(logical_id),
                )
        return self

    def warm(self, logical_ids: Iterable[str]) -> None:
        """One worker of each of `logical_ids` started, all at once, before their first invocation: the
        cold start happens here rather than inside an HTTP caller's timeout (the first webhook). The
        other functions' first workers start at their first invocation, as on Lambda."""
        failures: list[BaseException] = []

        def start(pool: WorkerPool) -> None:
            try:
                pool.warm()
            except BaseException as error:
                failures.append(error)

        pools = [self._pools[logical_id] for logical_id in logical_ids if logical_id in self._pools]
        threads = [threading.Thread(target=start, args=(pool,), daemon=True) for pool in pools]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()

    def has(self, logical_id: str) -> bool:
        return logical_id in self._available

    def timeout_of(self, logical_id: str) -> float:
        return self.timeouts.get(logical_id) or function_timeout_seconds(logical_id)

    def workers(self) -> dict[str, dict[str, int]]:
        return {
            logical_id: {"size": pool.size, "started": pool.started, "killed_at_timeout": pool.killed}
            for logical_id, pool in self._pools.items()
        }

    def invoke(
        self, logical_id: str, event: dict[str, Any], overrides: Mapping[str, str] | None = None
    ) -> Invocation:
        """Invoke `logical_id` with `event` under its own environment (plus `overrides`). A handler
        that raises, or runs past its timeout, is a function error, reported in the result, never
        raised to the caller."""
        name = self.names.get(logical_id, logical_id)
        self._count(self.counts, logical_id)
        started = time.monotonic()
        if self.in_process:
            return self._invoke_here(logical_id, name, event, overrides)
        outcome = self._pools[logical_id].invoke(event, overrides or {}, self.state)
        for report in outcome.reports:
            self.on_report(logical_id, report)
        seconds = time.monotonic() - started
        if outcome.error is not None:
            self._count(self.errors, logical_id)
            if outcome.timed_out:
                self._count(self.timed_out, logical_id)
            return Invocation(name, error=outcome.error, seconds=seconds, timed_out=outcome.timed_out)
        return Invocation(name, response=outcome.response, seconds=seconds)

    def _invoke_here(
        self, logical_id: str, name: str, event: dict[str, Any], overrides: Mapping[str, str] | None
    ) -> Invocation:
        handler = self.handlers[logical_id]
        with self._lock, self.environment_of(logical_id, overrides):
            context = LocalLambdaContext(name, timeout_seconds=self.timeout_of(logical_id))
            started = time.monotonic()
            try:
                response = handler(event, context)
            except Exception as error:  # Lambda reports it as the invocation's error
                self._count(self.errors, logical_id)
                traceback.print_exc(file=sys.stdout)  # to the function log, as Lambda logs it
                return Invocation(
                    name, error=f"{type(error).__name__}: {error}", seconds=time.monotonic() - started
                )
            return Invocation(name, response=response, seconds=time.monotonic() - started)

    def _count(self, counter: dict[str, int], logical_id: str) -> None:
        with self._counting:
            counter[logical_id] = counter.get(logical_id, 0) + 1

    def _spec(self, logical_id: str) -> WorkerSpec:
        code_dir, module_name, function_name = handler_path(logical_id)
        others = {name for variables in self.environments.values() for name in variables}
        base = {name: value for name, value in os.environ.items() if name not in others}
        return WorkerSpec(
            logical_id=logical_id,
            function_name=self.names.get(logical_id, logical_id),
            environment={**base, **self.environments[logical_id]},
            code_dir=code_dir,
            module=module_name,
            function=function_name,
            timeout_seconds=self.timeout_of(logical_id),
            output_path=self.output_path,
            plugins=self.plugins,
        )

    def environment_of(
        self, logical_id: str, overrides: Mapping[str, str] | None = None
    ) -> _FunctionEnvironment:
        """Within it, this process's os.environ is the function's (for a test calling a handler itself)."""
        return _FunctionEnvironment(self, logical_id, dict(overrides or {}))


class _FunctionEnvironment:
    """Within it, os.environ holds exactly `logical_id`'s variables of all the functions' variables."""

    def __init__(self, functions: LocalFunctions, logical_id: str, overrides: dict[str, str]) -> None:
        self._functions = functions
        self._logical_id = logical_id
        self._overrides = overrides

    def __enter__(self) -> None:
        self._functions._lock.acquire()
        mine = {**self._functions.environments[self._logical_id], **self._overrides}
        for variables in self._functions.environments.values():
            for name in variables:
                if name not in mine:
                    os.environ.pop(name, None)
        os.environ.update(mine)

    def __exit__(self, *exc: object) -> None:
        for name in self._overrides:
            if name in self._functions.environments[self._logical_id]:
                os.environ[name] = self._functions.environments[self._logical_id][name]
            else:
                os.environ.pop(name, None)
        self._functions._lock.release()
