"""Lambda functions as template.yaml declares them: handler import path, environment, HTTP API routes."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

from local_stack.template import ROOT, load_template, resource_properties

Resolver = Callable[[str], str]


def load_handler(logical_id: str) -> Callable[..., Any]:
    """Import the handler the way Lambda does: CodeUri on the path, then module.function."""
    properties = resource_properties(logical_id)
    code_dir = str(ROOT / properties["CodeUri"])
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    module_name, function_name = properties["Handler"].rsplit(".", 1)
    handler: Callable[..., Any] = getattr(importlib.import_module(module_name), function_name)
    return handler


def function_environment(logical_id: str, resolve_ref: Resolver) -> dict[str, str]:
    """Globals' and the function's own variables, with every !Ref resolved by `resolve_ref`."""
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


def _resolve(value: Any, resolve_ref: Resolver) -> str:
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return resolve_ref(value["Ref"])
    if isinstance(value, dict):
        raise ValueError(f"the local stack cannot resolve {value!r}")
    return str(value)
