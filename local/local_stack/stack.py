"""The AWS side of the local stack: moto's server on loopback, resources made from template.yaml,
each function's environment as the template sets it, and the HTTP API front.

boto3 in this process reaches moto through AWS_ENDPOINT_URL, so the handlers run unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from local_stack import made_up_values
from local_stack.api_gateway import LocalHttpApi, Route
from local_stack.functions import function_environment, http_routes, load_handler
from local_stack.template import create_table, parameter_default

# Logical ids of template.yaml's resources, and the names the local stack gives them.
TABLES = {"WebhookEventsTable": "WebhookEvents"}
SECRETS = {"WebhookSigningSecret": "local/moment/webhook-signing-secrets"}
HTTP_FUNCTIONS = {"WebhookReceiverFunction": "webhook_receiver"}


@dataclass
class LocalSettings:
    api_port: int = 3000
    webhook_secrets: list[str] = field(default_factory=lambda: [made_up_values.LOCAL_WEBHOOK_SECRET])
    environment: str = "dev"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> LocalSettings:
        secrets = environ.get("MOMENT_WEBHOOK_SECRET", "").split()
        return cls(
            api_port=int(environ.get("LOCAL_API_PORT", "3000")),
            webhook_secrets=secrets or [made_up_values.LOCAL_WEBHOOK_SECRET],
        )


@dataclass
class RunningStack:
    api: LocalHttpApi
    aws_endpoint: str
    names: dict[str, str]

    @property
    def api_url(self) -> str:
        return self.api.url

    def client(self, service: str) -> Any:
        import boto3  # noqa: PLC0415

        return boto3.client(service, endpoint_url=self.aws_endpoint)


def _aws_environment(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "af-south-1",
        "AWS_ACCESS_KEY_ID": made_up_values.LOCAL_AWS_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": made_up_values.LOCAL_AWS_SECRET_ACCESS_KEY,
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    }


@contextmanager
def function_output_to(path: Path) -> Iterator[TextIO]:
    """Send what the functions print (JSON logs, EMF metrics) to a file, as Lambda sends it to
    CloudWatch, and hand back the terminal for the caller's own output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    terminal = sys.stdout
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    with path.open("w", encoding="utf-8") as log_file:
        sys.stdout = log_file
        try:
            yield terminal
        finally:
            sys.stdout = terminal


@contextmanager
def running_stack(settings: LocalSettings | None = None) -> Iterator[RunningStack]:
    """Start moto and the HTTP front, create everything, set the environment; undo it all on exit."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    settings = settings or LocalSettings()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = dict(os.environ)
    try:
        os.environ.update(_aws_environment(endpoint))
        names = _create_resources(settings, endpoint)
        for logical_id in HTTP_FUNCTIONS:
            os.environ.update(function_environment(logical_id, _resolver(names)))
        os.environ["ENVIRONMENT"] = settings.environment
        from moment_sync import runtime  # noqa: PLC0415

        runtime.reset()
        api = LocalHttpApi(_routes(), port=settings.api_port).start()
        try:
            yield RunningStack(api=api, aws_endpoint=endpoint, names=names)
        finally:
            api.stop()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        moto.stop()


def _create_resources(settings: LocalSettings, endpoint: str) -> dict[str, str]:
    import boto3  # noqa: PLC0415

    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint)
    names = {logical_id: create_table(dynamodb, logical_id, name) for logical_id, name in TABLES.items()}
    secrets = boto3.client("secretsmanager", endpoint_url=endpoint)
    for logical_id, name in SECRETS.items():
        arn = secrets.create_secret(Name=name, SecretString=json.dumps(settings.webhook_secrets))["ARN"]
        names[logical_id] = arn
    return names


def _resolver(names: dict[str, str]) -> Any:
    def resolve(reference: str) -> str:
        if reference in names:
            return names[reference]
        if reference == "Environment":
            return os.environ.get("ENVIRONMENT", "dev")
        return str(parameter_default(reference))

    return resolve


def _routes() -> list[Route]:
    return [
        Route(method, path, function_name, load_handler(logical_id))
        for logical_id, function_name in HTTP_FUNCTIONS.items()
        for method, path in http_routes(logical_id)
    ]
