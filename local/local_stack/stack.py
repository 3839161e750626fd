"""The whole system on one machine: moto's server on loopback with every resource made from
template.yaml, the Moment sandbox, an HTTP front for the HTTP API's routes, the reconciler's stream
event source, and a scheduler for the pusher and the re-drive. The handlers run unchanged, each
function in worker processes of its own (`workers.py`) with the environment template.yaml gives it.

boto3 in this process reaches moto through AWS_ENDPOINT_URL; the Moment client reaches the sandbox
through MOMENT_BASE_URL; the sandbox delivers its webhooks to the HTTP front.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TextIO, TypeVar

from local_stack import made_up_values
from local_stack.api_gateway import LocalHttpApi, Route
from local_stack.event_pipe import LOCAL_STACK_NAME, LocalEventsOut, pipe_logical_ids, start_events_out
from local_stack.event_source import MappingSettings, StreamEventSource
from local_stack.functions import (
    DEFAULT_CONCURRENCY,
    Invocation,
    LocalFunctions,
    function_environment,
    http_routes,
    iam_routes,
)
from local_stack.lambda_api import LocalLambdaApi
from local_stack.moto_server import SerialMotoServer
from local_stack.scheduler import SCHEDULED_EVENT, Job, Scheduler
from local_stack.sigv4_check import SigV4Check
from local_stack.streams import StreamReader
from local_stack.template import ROOT, Intrinsics, create_table, function_logical_ids, resource_properties
from local_stack.workers import DEFAULT_PLUGINS, WorkerPlugin, start_fork_server
from moment_sandbox import MomentSandbox, SandboxSettings

REGION = "af-south-1"
ACCOUNT = "123456789012"
FUNCTION_LOG = ROOT / "build" / "local" / "function-output.jsonl"

# Logical ids of template.yaml's resources, and the names the local stack gives them.
TABLES = {"WebhookEventsTable": "WebhookEvents", "LedgerTable": "Ledger"}
SECRETS = {
    "WebhookSigningSecret": "local/moment/webhook-signing-secrets",
    "MomentApiKeySecret": "local/moment/api-key",
}
QUEUES = {"ReconcilerFailureQueue": "ReconcilerFailureQueue"}
HTTP_FUNCTIONS = {"WebhookReceiverFunction": "webhook_receiver", "LedgerApiFunction": "ledger_api"}
STREAM_MAPPING = ("ReconcilerFunction", "WebhookStream")
PUSHER, REDRIVE, RECEIVER, RECONCILER = (
    "BalancePusherFunction",
    "RedriveFunction",
    "WebhookReceiverFunction",
    "ReconcilerFunction",
)
# On the push schedule it starts one PUSHER worker per shard through the local Lambda API
# (lambda_api.py); `push_now` runs PUSHER itself over every shard, as an operator's invoke would.
PUSH_DISPATCHER = "PushDispatcherFunction"

Notify = Callable[[str], None]


@dataclass
class LocalSettings:
    """Every setting of the local stack; `from_environment` reads the variables the README lists."""

    api_port: int = 3000
    sandbox_port: int = 4010
    aws_port: int = 5000
    host: str = "127.0.0.1"
    webhook_secrets: list[str] = field(default_factory=lambda: [made_up_values.LOCAL_WEBHOOK_SECRET])
    moment_api_key: str = field(default=made_up_values.LOCAL_MOMENT_API_KEY, repr=False)
    environment: str = "dev"
    push_interval_seconds: float | None = 5.0  # None: only on demand (POST /_local/push)
    redrive_interval_seconds: float | None = 30.0
    redrive_grace_seconds: int | None = None  # None: what template.yaml sets (RedriveGraceSeconds)
    parameter_overrides: dict[str, str] = field(default_factory=dict)  # template parameters, by name
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)  # faults, delivery, switches
    stream_retry_delay_seconds: float = 0.1
    stream_batching_window_seconds: float | None = None  # None: the template's (1 s)
    require_sigv4: bool = False  # LOCAL_REQUIRE_SIGV4: check the ledger API's signatures as AWS would
    # Workers per function (LOCAL_FUNCTION_CONCURRENCY), fewer where the template reserves fewer.
    function_concurrency: int = DEFAULT_CONCURRENCY
    function_timeouts: dict[str, float] = field(default_factory=dict)  # shorter Timeouts, by logical id
    # Lambda's retries of a failed asynchronous (scheduled) invocation: 1 min, then 2 min on AWS.
    async_retry_delays_seconds: tuple[float, ...] = (60.0, 120.0)
    worker_plugins: tuple[WorkerPlugin, ...] = ()  # code run inside every worker (the soak's faults)
    on_worker_report: Callable[[str, dict[str, Any]], None] | None = None  # what the plugins report
    # The old way: every function in this process, one invocation at a time, no timeout enforced. Only
    # for tests that reach into a function's own process (hooks on its boto3 client).
    in_process: bool = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> LocalSettings:
        secrets = environ.get("MOMENT_WEBHOOK_SECRET", "").split()
        overrides = dict(
            item.split("=", 1) for item in environ.get("LOCAL_PARAMETER_OVERRIDES", "").split() if "=" in item
        )
        grace = environ.get("LOCAL_REDRIVE_GRACE_SECONDS", "")
        return cls(
            api_port=int(environ.get("LOCAL_API_PORT", "3000")),
            sandbox_port=int(environ.get("LOCAL_SANDBOX_PORT", "4010")),
            aws_port=int(environ.get("LOCAL_AWS_PORT", "5000")),
            host=environ.get("LOCAL_AWS_HOST", "127.0.0.1"),
            webhook_secrets=secrets or [made_up_values.LOCAL_WEBHOOK_SECRET],
            moment_api_key=environ.get("MOMENT_API_KEY", "") or made_up_values.LOCAL_MOMENT_API_KEY,
            push_interval_seconds=_interval(environ.get("LOCAL_PUSH_INTERVAL_SECONDS", "5")),
            redrive_interval_seconds=_interval(environ.get("LOCAL_REDRIVE_INTERVAL_SECONDS", "30")),
            redrive_grace_seconds=int(grace) if grace else None,
            parameter_overrides=overrides,
            sandbox=SandboxSettings.from_environment(environ),
            require_sigv4=environ.get("LOCAL_REQUIRE_SIGV4", "").lower() in {"1", "true", "yes", "on"},
            function_concurrency=_positive(
                "LOCAL_FUNCTION_CONCURRENCY", environ.get("LOCAL_FUNCTION_CONCURRENCY", "")
            )
            or DEFAULT_CONCURRENCY,
        )


def _positive(name: str, value: str) -> int | None:
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
    return int(value)


def _interval(value: str) -> float | None:
    seconds = float(value)
    return seconds if seconds > 0 else None


@dataclass
class RunningStack:
    settings: LocalSettings
    api: LocalHttpApi
    sandbox: MomentSandbox
    aws_endpoint: str
    names: dict[str, str]  # logical id -> local name (tables, secrets) or URL (queues)
    functions: LocalFunctions
    stream: StreamEventSource
    scheduler: Scheduler
    events: LocalEventsOut | None = None  # the event bus and its pipes (docs/events.md)

    @property
    def api_url(self) -> str:
        return self.api.url

    @property
    def sandbox_url(self) -> str:
        return _loopback(self.sandbox.url)

    def client(self, service: str) -> Any:
        """A boto3 client of moto (this process's own, not the one the functions use)."""
        import boto3  # noqa: PLC0415

        return boto3.client(service, endpoint_url=self.aws_endpoint, region_name=REGION)

    def push_now(self) -> Invocation:
        """Run the balance pusher now (as its schedule would) and wait for it."""
        return self.scheduler.run_now(PUSHER)

    def redrive_now(self, grace_seconds: int | None = None) -> Invocation:
        overrides = {"REDRIVE_GRACE_SECONDS": str(grace_seconds)} if grace_seconds is not None else None
        return self.scheduler.run_now(REDRIVE, overrides)

    def wait_until_quiet(self, timeout: float = 30.0) -> bool:
        """Until every webhook the sandbox sent is delivered or given up and the stream is drained."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            remaining = deadline - time.monotonic()
            if not self.sandbox.wait_for_deliveries(timeout=remaining):
                return False
            if not self.stream.wait_until_idle(timeout=max(0.1, deadline - time.monotonic())):
                return False
            if self.sandbox.wait_for_deliveries(timeout=0):  # none started meanwhile
                return True
        return False

    def failure_queue_messages(self) -> list[dict[str, Any]]:
        """What the stream event source sent to ReconcilerFailureQueue (received, not deleted)."""
        sqs = self.client("sqs")
        found: list[dict[str, Any]] = []
        while True:
            batch = sqs.receive_message(
                QueueUrl=self.names["ReconcilerFailureQueue"], MaxNumberOfMessages=10, VisibilityTimeout=0
            ).get("Messages", [])
            fresh = [json.loads(message["Body"]) for message in batch]
            known = {json.dumps(item, sort_keys=True) for item in found}
            new = [item for item in fresh if json.dumps(item, sort_keys=True) not in known]
            if not new:
                return found
            found.extend(new)

    def status(self) -> dict[str, Any]:
        return {
            "api": self.api_url,
            "moment_sandbox": self.sandbox_url,
            "aws_endpoint": self.aws_endpoint,
            "invocations": dict(self.functions.counts),
            "function_errors": dict(self.functions.errors),
            "timed_out": dict(self.functions.timed_out),
            "workers": self.functions.workers(),
            "stream": vars(self.stream.stats),
            "schedules": self.scheduler.status(),
        }


def aws_environment(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": made_up_values.LOCAL_AWS_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": made_up_values.LOCAL_AWS_SECRET_ACCESS_KEY,
        # moto's DynamoDB Streams fail with "Not yet implemented" without this.
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    }


_function_output: list[Path] = []  # function_output_to's file, which the workers append to


@contextmanager
def function_output_to(path: Path) -> Iterator[TextIO]:
    """Send what the functions print (JSON logs, EMF metrics) to a file, as Lambda sends it to
    CloudWatch, and hand back the terminal for the caller's own output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    terminal = sys.stdout
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    path.write_text("", encoding="utf-8")
    # Appending, as the workers do, so that no writer overwrites another's lines.
    with path.open("a", encoding="utf-8", buffering=1) as log_file:
        sys.stdout = log_file
        _function_output.append(path)
        try:
            yield terminal
        finally:
            _function_output.remove(path)
            sys.stdout = terminal


def _before_moto(settings: LocalSettings) -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    if not settings.in_process:  # the fork server's imports overlap moto's start
        threading.Thread(target=start_fork_server, daemon=True).start()


def _start_events_out(
    stack: RunningStack, intrinsics: Intrinsics, names: dict[str, str], endpoint: str, say: Notify
) -> LocalEventsOut:
    """The event pipes read the tables' streams from moto's server, as the workers write them."""
    stack.events = start_events_out(intrinsics, names, endpoint, region=REGION, account=ACCOUNT, notify=say)
    stack.api.routes = [*stack.api.routes, *stack.events.bus.routes()]
    return stack.events


@contextmanager
def running_stack(
    settings: LocalSettings | None = None, notify: Notify | None = None
) -> Iterator[RunningStack]:
    """Start everything, set the environment; stop it all and restore the environment on exit.

    Import what the functions import only inside this (or `function_output_to`): Powertools' Logger
    binds to the stdout of the moment it is created."""
    settings = settings or LocalSettings()
    say: Notify = notify or (lambda _line: None)
    _before_moto(settings)
    moto = SerialMotoServer(settings.host, settings.aws_port)
    moto.start()
    saved = dict(os.environ)
    started: list[Any] = []
    functions: LocalFunctions | None = None
    scratch_log = None if _function_output else _scratch_log()
    try:
        moto.reset()  # moto keeps resources per process: start from nothing
        os.environ.update(aws_environment(moto.endpoint))
        names, attributes = _create_resources(settings, moto.endpoint)
        api = _listening("the API", lambda: LocalHttpApi([], port=settings.api_port), settings.api_port)
        if settings.require_sigv4:
            api.sigv4 = SigV4Check(
                REGION, {made_up_values.LOCAL_AWS_ACCESS_KEY_ID: made_up_values.LOCAL_AWS_SECRET_ACCESS_KEY}
            )
        sandbox_settings = replace(
            settings.sandbox,
            host=settings.host,  # beside moto: sam local's containers reach both, or neither
            port=settings.sandbox_port,
            api_key=settings.moment_api_key,
            webhook_url=f"{api.url}/webhooks/moment",
            webhook_secrets=tuple(settings.webhook_secrets),
        )
        sandbox = _listening(
            "the Moment sandbox", lambda: MomentSandbox(sandbox_settings), settings.sandbox_port
        )
        # A function's !Ref is its name (the push dispatcher names its workers' function).
        intrinsics = _intrinsics(settings, names | _function_names(), attributes, _loopback(sandbox.url))
        started.append(
            lambda_api := _lambda_api(environments := _environments(settings, intrinsics, moto.endpoint), say)
        )
        lambda_api.functions = functions = LocalFunctions(
            environments,
            names=_function_names(),
            concurrency=_concurrency(settings),
            timeouts=dict(settings.function_timeouts),
            in_process=settings.in_process,
            output_path=str(_function_output[-1] if _function_output else scratch_log),
            plugins=(*(plugin for plugin, _ in DEFAULT_PLUGINS), *settings.worker_plugins),
            on_report=_reports_to(settings),
        )
        functions.load()  # in_process: imports the handlers; otherwise a pool of workers per function
        functions.warm(HTTP_FUNCTIONS)  # the API's first callers do not wait for a cold start
        from moment_sync import runtime  # noqa: PLC0415 -- imported by the handlers just now

        runtime.reset()
        api.routes = _http_routes(functions, say) + _local_routes(lambda: stack)
        stream = _stream_event_source(settings, intrinsics, names, attributes, functions, say)
        scheduler = _scheduler(settings, functions, say)
        stack = RunningStack(settings, api, sandbox, moto.endpoint, names, functions, stream, scheduler)
        for part in (api, sandbox, stream, scheduler):
            part.start()
            started.append(part)
        started.append(_start_events_out(stack, intrinsics, names, moto.endpoint, say))
        yield stack
    finally:
        for part in reversed(started):
            try:
                part.stop()
            except Exception as error:
                say(f"stopping {type(part).__name__} failed: {error}")
        _close(functions, scratch_log)
        os.environ.clear()
        os.environ.update(saved)
        try:
            moto.reset()
        finally:
            moto.stop()
        from moment_sync import runtime  # noqa: PLC0415

        runtime.reset()


T = TypeVar("T")


def _close(functions: LocalFunctions | None, scratch_log: Path | None) -> None:
    if functions is not None:
        functions.close()  # every worker stopped
    if scratch_log is not None:
        scratch_log.unlink(missing_ok=True)


def _scratch_log() -> Path:
    """Where the workers write when no function log was asked for (`function_output_to`)."""
    handle, name = tempfile.mkstemp(prefix="local-stack-functions-", suffix=".jsonl")
    os.close(handle)
    return Path(name)


def _concurrency(settings: LocalSettings) -> dict[str, int]:
    from local_stack.functions import template_concurrency  # noqa: PLC0415

    return {
        logical_id: template_concurrency(logical_id, settings.function_concurrency)
        for logical_id in function_logical_ids()
    }


def _reports_to(settings: LocalSettings) -> Callable[[str, dict[str, Any]], None]:
    receivers = [receive for _, receive in DEFAULT_PLUGINS]
    if settings.on_worker_report is not None:
        receivers.append(settings.on_worker_report)

    def receive(logical_id: str, report: dict[str, Any]) -> None:
        for receiver in receivers:
            receiver(logical_id, report)

    return receive


def _listening(what: str, make: Callable[[], T], port: int) -> T:
    try:
        return make()
    except OSError as error:
        raise OSError(f"{what} cannot listen on 127.0.0.1:{port}: {error.strerror or error}") from error


# --- resources -----------------------------------------------------------------------------------


def _create_resources(
    settings: LocalSettings, endpoint: str
) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    import boto3  # noqa: PLC0415

    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint)
    names: dict[str, str] = {}
    attributes: dict[tuple[str, str], str] = {}
    for logical_id, name in TABLES.items():
        create_table(dynamodb, logical_id, name)
        table = dynamodb.describe_table(TableName=name)["Table"]
        names[logical_id] = name
        attributes[(logical_id, "Arn")] = table["TableArn"]
        if "LatestStreamArn" in table:
            attributes[(logical_id, "StreamArn")] = table["LatestStreamArn"]
    secrets = boto3.client("secretsmanager", endpoint_url=endpoint)
    values = {
        "WebhookSigningSecret": json.dumps(settings.webhook_secrets),
        "MomentApiKeySecret": settings.moment_api_key,
    }
    for logical_id, name in SECRETS.items():
        # !Ref of a secret is its ARN, which is what the functions get.
        names[logical_id] = secrets.create_secret(Name=name, SecretString=values[logical_id])["ARN"]
    sqs = boto3.client("sqs", endpoint_url=endpoint)
    for logical_id, name in QUEUES.items():
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        names[logical_id] = url  # !Ref of a queue is its URL
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attributes[(logical_id, "Arn")] = arn
        attributes[(logical_id, "QueueName")] = name
    # The event pipes, known to moto's Pipes by name, so the re-drive's check of their state
    # (EVENT_PIPE_NAMES, moment_sync/pipe_health.py) reads RUNNING, as it would in AWS.
    pipes = boto3.client("pipes", endpoint_url=endpoint)
    for logical_id in pipe_logical_ids():
        name = f"{LOCAL_STACK_NAME}-{logical_id}"
        arn = pipes.create_pipe(
            Name=name,
            Source=attributes[("LedgerTable", "StreamArn")],
            Target=f"arn:aws:events:{REGION}:123456789012:event-bus/{LOCAL_STACK_NAME}-events",
            RoleArn="arn:aws:iam::123456789012:role/local-event-pipes",
        )["Arn"]
        names[logical_id] = name  # !Ref of a pipe is its name
        attributes[(logical_id, "Arn")] = arn
    return names, attributes


def _intrinsics(
    settings: LocalSettings, names: dict[str, str], attributes: dict[tuple[str, str], str], sandbox_url: str
) -> Intrinsics:
    # The template's MomentBaseUrl allows https only; the Moment client allows plain http to loopback.
    overrides = {
        "Environment": settings.environment,
        "MomentBaseUrl": sandbox_url,
        **settings.parameter_overrides,
    }
    return Intrinsics(names, attributes, overrides)


def _loopback(url: str) -> str:
    """A server's URL as this machine calls it: one listening on every address (0.0.0.0, for sam
    local's containers) is still called on loopback, the only plain-http host the Moment client takes."""
    return url.replace("://0.0.0.0:", "://127.0.0.1:", 1)


def _environments(
    settings: LocalSettings, intrinsics: Intrinsics, aws_endpoint: str
) -> dict[str, dict[str, str]]:
    environments = {
        logical_id: function_environment(logical_id, intrinsics) for logical_id in function_logical_ids()
    }
    for environment in environments.values():
        # The template declares it empty (so that sam local can set it); here it is moto.
        if "AWS_ENDPOINT_URL" in environment:
            environment["AWS_ENDPOINT_URL"] = aws_endpoint
    if settings.redrive_grace_seconds is not None:
        environments[REDRIVE]["REDRIVE_GRACE_SECONDS"] = str(settings.redrive_grace_seconds)
    return environments


# --- the HTTP front ------------------------------------------------------------------------------

INTERNAL_SERVER_ERROR = {  # what an HTTP API answers when its Lambda integration fails
    "statusCode": 500,
    "headers": {"content-type": "application/json"},
    "body": json.dumps({"message": "Internal Server Error"}),
}


def _http_routes(functions: LocalFunctions, say: Notify) -> list[Route]:
    routes = []
    for logical_id, short_name in HTTP_FUNCTIONS.items():
        if not functions.has(logical_id):
            continue  # not built yet: its routes answer 404, as an API without them would
        iam = set(iam_routes(logical_id))
        for method, path in http_routes(logical_id):
            routes.append(
                Route(
                    method, path, short_name, _integration(functions, logical_id, say), (method, path) in iam
                )
            )
    return routes


def _integration(
    functions: LocalFunctions, logical_id: str, say: Notify
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        invocation = functions.invoke(logical_id, event)
        if invocation.failed:
            say(f"{logical_id} FAILED: {invocation.error} (answered 500)")
            return INTERNAL_SERVER_ERROR
        response: dict[str, Any] = invocation.response
        say(_http_line(logical_id, event, response))
        return response

    return invoke


def _http_line(logical_id: str, event: dict[str, Any], response: dict[str, Any]) -> str:
    status = response.get("statusCode")
    try:
        body = json.loads(response.get("body") or "{}")
    except ValueError:
        body = {}
    if logical_id == RECEIVER:
        webhook_id = (event.get("headers") or {}).get("webhook-id", "?")
        outcome = body.get("status") if status == 200 else str(body.get("type", "")).rsplit("/", 1)[-1]
        return f"webhook {webhook_id} -> {status} {outcome}"
    method = event["requestContext"]["http"]["method"]
    return f"ledger API {method} {event.get('rawPath', '')} -> {status}"


def _local_routes(stack: Callable[[], RunningStack]) -> list[Route]:
    """`/_local/…`: what a developer asks of the stack itself (never part of the deployed API)."""

    def push(_event: dict[str, Any]) -> dict[str, Any]:
        return _invocation_response(stack().push_now())

    def redrive(event: dict[str, Any]) -> dict[str, Any]:
        body = _json_body(event)
        grace = body.get("grace_seconds")
        if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int) or grace < 0):
            return _json_response(400, {"error": "grace_seconds must be a whole number of seconds >= 0"})
        return _invocation_response(stack().redrive_now(grace))

    def wait(event: dict[str, Any]) -> dict[str, Any]:
        timeout = _json_body(event).get("timeout_seconds", 30)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 300:
            return _json_response(400, {"error": "timeout_seconds must be a number from 0 to 300"})
        return _json_response(200, {"quiet": stack().wait_until_quiet(float(timeout))})

    def run(event: dict[str, Any]) -> dict[str, Any]:
        name = event["pathParameters"]["function"]
        if name not in stack().scheduler.status():
            known = ", ".join(stack().scheduler.status())
            return _json_response(404, {"error": f"no scheduled function {name}; these are: {known}"})
        return _invocation_response(stack().scheduler.run_now(name))

    def status(_event: dict[str, Any]) -> dict[str, Any]:
        return _json_response(200, stack().status())

    return [
        Route("POST", "/_local/push", "local", push),
        Route("POST", "/_local/redrive", "local", redrive),
        Route("POST", "/_local/run/{function}", "local", run),
        Route("POST", "/_local/wait", "local", wait),
        Route("GET", "/_local/status", "local", status),
    ]


def _json_body(event: dict[str, Any]) -> dict[str, Any]:
    try:
        body = json.loads(event.get("body") or "{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _json_response(status: int, body: Any) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


def _invocation_response(invocation: Invocation) -> dict[str, Any]:
    if invocation.failed:
        return _json_response(502, {"function": invocation.function, "error": invocation.error})
    return _json_response(
        200,
        {
            "function": invocation.function,
            "seconds": round(invocation.seconds, 3),
            "result": invocation.response,
        },
    )


# --- the stream and the schedules ------------------------------------------------------------------


def _stream_event_source(
    settings: LocalSettings,
    intrinsics: Intrinsics,
    names: dict[str, str],
    attributes: dict[tuple[str, str], str],
    functions: LocalFunctions,
    say: Notify,
) -> StreamEventSource:
    import boto3  # noqa: PLC0415

    function_id, event_name = STREAM_MAPPING
    mapping = MappingSettings.from_template(function_id, event_name, intrinsics)
    if settings.stream_batching_window_seconds is not None:
        mapping = replace(mapping, batching_window_seconds=settings.stream_batching_window_seconds)
    dynamodb = boto3.client("dynamodb")
    reader = StreamReader(boto3.client("dynamodbstreams"), dynamodb, names["WebhookEventsTable"])
    sqs = boto3.client("sqs")
    queue_url = _queue_url(names, attributes, mapping.on_failure_destination)

    def invoke(event: dict[str, Any]) -> Invocation:
        invocation = functions.invoke(function_id, event)
        if not invocation.failed and not (invocation.response or {}).get("batchItemFailures"):
            count = len(event["Records"])
            say(f"reconciler: {count} new webhook{'s' if count != 1 else ''} reconciled")
        return invocation

    def send(message: dict[str, Any]) -> None:
        if queue_url is not None:
            sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(message))

    return StreamEventSource(
        mapping,
        reader,
        invoke,
        send,
        function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_id}",
        notify=say,
        retry_delay_seconds=settings.stream_retry_delay_seconds,
    )


def _queue_url(names: dict[str, str], attributes: dict[tuple[str, str], str], arn: str | None) -> str | None:
    for (logical_id, attribute), value in attributes.items():
        if attribute == "Arn" and value == arn:
            return names[logical_id]
    return None


def scheduled_functions() -> list[str]:
    """The functions template.yaml runs on a schedule (EventBridge Scheduler or a rule)."""
    return [
        logical_id
        for logical_id in function_logical_ids()
        if any(
            event.get("Type") in {"ScheduleV2", "Schedule"}
            for event in resource_properties(logical_id).get("Events", {}).values()
        )
    ]


def _scheduler(settings: LocalSettings, functions: LocalFunctions, say: Notify) -> Scheduler:
    """The pusher and the re-drive at the local intervals; any other scheduled function on demand."""
    scheduler = Scheduler(say)
    intervals = {PUSH_DISPATCHER: settings.push_interval_seconds, REDRIVE: settings.redrive_interval_seconds}
    reports = {PUSHER: _push_line, REDRIVE: _redrive_line, PUSH_DISPATCHER: _dispatch_line}
    # The worker has no schedule of its own; on demand (`push_now`, POST /_local/push) it pushes every shard.
    for logical_id in [*scheduled_functions(), PUSHER]:
        if not functions.has(logical_id):
            continue

        def run(overrides: dict[str, str], logical_id: str = logical_id) -> Invocation:
            return functions.invoke(logical_id, dict(SCHEDULED_EVENT), overrides)

        invoke_config = resource_properties(logical_id).get("EventInvokeConfig") or {}
        scheduler.add(
            Job(
                logical_id,
                run,
                intervals.get(logical_id),
                report=reports.get(logical_id, partial(_other_line, logical_id)),
                maximum_retry_attempts=int(invoke_config.get("MaximumRetryAttempts", 2)),
                retry_delays_seconds=settings.async_retry_delays_seconds,
            )
        )
    return scheduler


def _other_line(logical_id: str, invocation: Invocation) -> str:
    if invocation.failed:
        return f"{logical_id} FAILED: {invocation.error}"
    return f"{logical_id}: {json.dumps(invocation.response)[:200]}"


def _function_names() -> dict[str, str]:
    return {logical_id: logical_id for logical_id in function_logical_ids()}


def _lambda_api(environments: dict[str, dict[str, str]], say: Notify) -> LocalLambdaApi:
    """Lambda's Invoke API for the push dispatcher's boto3 client (moto answers every other service)."""
    lambda_api = LocalLambdaApi(on_done=_worker_done(say)).start()
    if PUSH_DISPATCHER in environments:
        environments[PUSH_DISPATCHER]["AWS_ENDPOINT_URL_LAMBDA"] = lambda_api.url
    return lambda_api


def _dispatch_line(invocation: Invocation) -> str | None:
    if invocation.failed:
        return f"push dispatcher FAILED: {invocation.error}"
    return None  # each worker reports its own line


def _worker_done(say: Notify) -> Callable[[str, Invocation], None]:
    def done(_name: str, invocation: Invocation) -> None:
        line = _push_line(invocation)
        if line:
            say(line)

    return done


def _push_line(invocation: Invocation) -> str | None:
    if invocation.failed:
        return f"pusher FAILED: {invocation.error}"
    report = invocation.response or {}
    if not report.get("results") and not report.get("errors"):
        return None  # nothing was pending
    counts = ", ".join(f"{result} {count}" for result, count in sorted(report["results"].items()))
    return f"pusher: {counts}" + (f"; {len(report['errors'])} error(s)" if report.get("errors") else "")


def _redrive_line(invocation: Invocation) -> str | None:
    if invocation.failed:
        return f"re-drive FAILED: {invocation.error}"
    report = invocation.response or {}
    if not report.get("examined"):
        return None
    outcomes = ", ".join(
        f"{outcome} {count}" for outcome, count in sorted(report.get("outcomes", {}).items())
    )
    return f"re-drive: examined {report['examined']} -> {outcomes or 'nothing new'}"
