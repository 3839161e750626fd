"""Lambda functions as template.yaml declares them: handler import path, environment, HTTP API routes,
and `LocalFunctions`, which invokes them in this process the way Lambda would.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
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

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class LocalFunctions:
    """The template's functions, invoked in this process one invocation at a time.

    One at a time because they share one process, as they would share one execution environment:
    Powertools' Logger and Metrics keep their state per process, and two handlers running at once
    would flush each other's metrics. Each invocation sees exactly the environment template.yaml
    gives its own function (`environments`), so a handler that reads a variable its function does
    not get fails here as it would on AWS."""

    environments: dict[str, dict[str, str]]
    names: dict[str, str] = field(default_factory=dict)  # logical id -> the local function name
    handlers: dict[str, Callable[..., Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def load(self) -> LocalFunctions:
        """Import every handler that exists (the ledger API may not have landed yet)."""
        for logical_id in self.environments:
            if handler_exists(logical_id):
                with self.environment_of(logical_id):
                    self.handlers[logical_id] = load_handler(logical_id)
        return self

    def has(self, logical_id: str) -> bool:
        return logical_id in self.handlers

    def invoke(
        self, logical_id: str, event: dict[str, Any], overrides: Mapping[str, str] | None = None
    ) -> Invocation:
        """Invoke `logical_id` with `event` under its own environment (plus `overrides`). A handler
        that raises is a function error, reported in the result, never raised to the caller."""
        handler = self.handlers[logical_id]
        name = self.names.get(logical_id, logical_id)
        with self._lock, self.environment_of(logical_id, overrides):
            self.counts[logical_id] = self.counts.get(logical_id, 0) + 1
            context = LocalLambdaContext(name, timeout_seconds=function_timeout_seconds(logical_id))
            started = time.monotonic()
            try:
                response = handler(event, context)
            except Exception as error:  # Lambda reports it as the invocation's error
                self.errors[logical_id] = self.errors.get(logical_id, 0) + 1
                traceback.print_exc(file=sys.stdout)  # to the function log, as Lambda logs it
                return Invocation(
                    name, error=f"{type(error).__name__}: {error}", seconds=time.monotonic() - started
                )
            return Invocation(name, response=response, seconds=time.monotonic() - started)

    def environment_of(
        self, logical_id: str, overrides: Mapping[str, str] | None = None
    ) -> _FunctionEnvironment:
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
