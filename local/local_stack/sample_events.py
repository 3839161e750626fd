"""`python -m local_stack.sample_events`: write the events/ files `sam local invoke -e` takes (all but the
signed webhook, which tools/sign_webhook_event.py writes with a fresh timestamp), and events/env.json.

- events/env.json: every function's variables as template.yaml sets them, resolved for `make local`
  (its fixed ports and names), plus AWS_ENDPOINT_URL for the container to reach its moto.
- events/ledger_api/put-customer.json: an HTTP API (payload 2.0) request with an IAM caller.
- events/reconciler/stream-batch.json: the DynamoDB stream record that storing
  events/webhook_receiver/moment-webhook.json makes, read back from moto's stream as Lambda sends it.
- events/<function>/scheduled.json for each scheduled function (the pusher, the re-drive, …): what
  its schedule sends.

`--check` writes nothing and exits 1 if env.json is not what the template says today.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

from local_stack.api_gateway import Route, build_event
from local_stack.event_pipe import LOCAL_STACK_NAME, pipe_logical_ids
from local_stack.functions import function_environment
from local_stack.scheduler import SCHEDULED_EVENT
from local_stack.stack import SECRETS, TABLES, LocalSettings, scheduled_functions
from local_stack.template import ROOT, Intrinsics, function_logical_ids, resource_properties

EVENTS = ROOT / "events"
WEBHOOK_EVENT = EVENTS / "webhook_receiver" / "moment-webhook.json"
# Inside sam local's container, the host (where `make local` runs moto) is host.docker.internal.
CONTAINER_AWS_ENDPOINT = "http://host.docker.internal:{port}"
# The sandbox, seen from sam local's container. The Moment client sends its key over plain http to
# loopback only, and to host.docker.internal only under sam local (docs/deploy.md).
SANDBOX_URL = "http://host.docker.internal:{port}"
# A made-up IAM caller, as API Gateway describes one for an AWS_IAM route.
IAM_CALLER = {
    "accessKey": "ASIAEXAMPLEEXAMPLE00",
    "accountId": "123456789012",
    "callerId": "AROAEXAMPLEEXAMPLE001:billing-service",
    "principalOrgId": None,
    "userArn": "arn:aws:sts::123456789012:assumed-role/merchant-billing/billing-service",
    "userId": "AROAEXAMPLEEXAMPLE001:billing-service",
}


def env_file(settings: LocalSettings | None = None) -> dict[str, dict[str, str]]:
    """events/env.json: what `make local` gives each function, seen from sam local's container."""
    settings = settings or LocalSettings()
    # The secrets by name (their ARNs end in a random suffix); a function by its logical id.
    names = {**TABLES, **SECRETS, **{logical_id: logical_id for logical_id in function_logical_ids()}}
    names |= {logical_id: f"{LOCAL_STACK_NAME}-{logical_id}" for logical_id in pipe_logical_ids()}
    intrinsics = Intrinsics(
        names,
        {},
        {
            "Environment": settings.environment,
            "MomentBaseUrl": SANDBOX_URL.format(port=settings.sandbox_port),
            **settings.parameter_overrides,
        },
    )
    variables = {}
    for logical_id in function_logical_ids():
        environment = function_environment(logical_id, intrinsics)
        environment["AWS_ENDPOINT_URL"] = CONTAINER_AWS_ENDPOINT.format(port=settings.aws_port)
        variables[logical_id] = dict(sorted(environment.items()))
    return variables


def put_customer_event(now: float) -> dict[str, Any]:
    body = {"currency": "ZAR", "name": "Thandi Nkosi", "email": "thandi@example.com", "phone": "+27821234567"}
    text = json.dumps(body)
    domain = "abcdef1234.execute-api.af-south-1.amazonaws.com"
    headers = {
        "accept": "application/json",
        "authorization": "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLEEXAMPLE00/20260921/af-south-1/execute-api/"
        "aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature=made-up",
        "content-length": str(len(text)),
        "content-type": "application/json",
        "host": domain,
        "user-agent": "merchant-billing/1.0",
        "x-amz-date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)),
        "x-amz-security-token": "made-up-session-token",
        "x-amzn-trace-id": "Root=1-6742f0c2-0a1b2c3d4e5f60718293a4b5",
        "x-forwarded-for": "198.51.100.7",
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    }
    route = Route("PUT", "/customers/{ref}", "ledger_api", lambda event: event)
    event = build_event(
        route, "PUT", "/customers/UCR1001", "", headers, text.encode(), {"ref": "UCR1001"}, "198.51.100.7"
    )
    context = event["requestContext"]
    context.update(
        {
            "apiId": "abcdef1234",
            "domainName": domain,
            "domainPrefix": "abcdef1234",
            "requestId": "bM5tLhEXAMPLE=",
            "authorizer": {"iam": {**IAM_CALLER, "cognitoIdentity": None}},
        }
    )
    context["time"] = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))
    context["timeEpoch"] = int(now * 1000)
    return event


def stream_batch_event() -> dict[str, Any]:
    """The receiver handler receives events/webhook_receiver/moment-webhook.json (its clock pinned to
    the webhook's timestamp) into moto; its stream record is read back as Lambda would deliver it."""
    import boto3  # noqa: PLC0415
    from moto import mock_aws  # noqa: PLC0415

    from local_stack.functions import load_handler  # noqa: PLC0415
    from local_stack.lambda_context import LocalLambdaContext  # noqa: PLC0415
    from local_stack.made_up_values import LOCAL_WEBHOOK_SECRET  # noqa: PLC0415
    from local_stack.stack import aws_environment  # noqa: PLC0415
    from local_stack.streams import StreamReader  # noqa: PLC0415
    from local_stack.template import create_table  # noqa: PLC0415

    webhook = json.loads(WEBHOOK_EVENT.read_text())
    timestamp = int(webhook["headers"]["webhook-timestamp"])
    environment = {name: value for name, value in aws_environment("").items() if name != "AWS_ENDPOINT_URL"}
    environment.update(env_file()["WebhookReceiverFunction"])
    del environment["AWS_ENDPOINT_URL"]
    with _environment(environment), mock_aws(), contextlib.redirect_stdout(io.StringIO()):
        from moment_sync.adapters.webhook_events_table import WebhookEventsTable  # noqa: PLC0415
        from moment_sync.receiver import ReceiverSettings  # noqa: PLC0415
        from moment_sync.runtime import ReceiverDependencies  # noqa: PLC0415
        from moment_sync.signature import decode_signing_key  # noqa: PLC0415

        dynamodb = boto3.client("dynamodb")
        name = create_table(dynamodb, "WebhookEventsTable", TABLES["WebhookEventsTable"])
        receiver = load_handler("WebhookReceiverFunction")
        dependencies = ReceiverDependencies(
            keys=lambda: [decode_signing_key(LOCAL_WEBHOOK_SECRET)],
            store=WebhookEventsTable(dynamodb, name),
            settings=ReceiverSettings(),
            clock=lambda: timestamp + 1,
        )
        response = receiver(webhook, LocalLambdaContext("WebhookReceiverFunction"), dependencies)
        if response["statusCode"] != 200:
            raise RuntimeError(f"the receiver refused {WEBHOOK_EVENT.name}: {response['body']}")
        records = list(StreamReader(boto3.client("dynamodbstreams"), dynamodb, name).new_records())
    for record in records:  # written when the receiver stored it, on the webhook's pinned clock
        record["dynamodb"]["ApproximateCreationDateTime"] = float(timestamp + 1)
    return {"Records": records}


class _environment:
    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        import os  # noqa: PLC0415

        for name, value in self._values.items():
            self._saved[name] = os.environ.get(name)
            os.environ[name] = value

    def __exit__(self, *exc: object) -> None:
        import os  # noqa: PLC0415

        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def function_folder(logical_id: str) -> str:
    """events/<folder>: the function's CodeUri folder name (functions/balance_pusher/ -> balance_pusher)."""
    return Path(resource_properties(logical_id)["CodeUri"]).name


def write(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_stack.sample_events", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only check that events/env.json is current")
    arguments = parser.parse_args(argv)
    expected = env_file()
    if arguments.check:
        current = json.loads((EVENTS / "env.json").read_text())
        if current != expected:
            print("events/env.json differs from template.yaml: run python -m local_stack.sample_events")
            return 1
        print("events/env.json is current")
        return 0
    now = int(json.loads(WEBHOOK_EVENT.read_text())["headers"]["webhook-timestamp"])
    write(EVENTS / "env.json", expected)
    write(EVENTS / "ledger_api" / "put-customer.json", put_customer_event(now))
    write(EVENTS / "reconciler" / "stream-batch.json", stream_batch_event())
    for logical_id in scheduled_functions():
        write(EVENTS / function_folder(logical_id) / "scheduled.json", SCHEDULED_EVENT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
