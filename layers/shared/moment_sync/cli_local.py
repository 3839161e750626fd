"""`moment-sync --local`: every command pointed at the running `make local` stack, with no other setup.

The local stack serves moto on 127.0.0.1:LOCAL_AWS_PORT (5000) and the Moment sandbox on
127.0.0.1:LOCAL_SANDBOX_PORT (4010), with the fixed names below (local_stack.stack's own; a test
keeps the two in step). moto takes any credentials, so made-up ones are passed and the operator's
real AWS credentials are never read. The Moment API key is the one the stack put in its local
Secrets Manager, so it is never written here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LOCAL_REGION = "af-south-1"
LOCAL_EVENTS_TABLE = "WebhookEvents"
LOCAL_LEDGER_TABLE = "Ledger"
LOCAL_MOMENT_KEY_SECRET = "local/moment/api-key"  # noqa: S105 -- the secret's name, not a secret
_MADE_UP_CREDENTIALS = "local-stack"  # moto checks nothing; AWS would refuse it


@dataclass(frozen=True, slots=True)
class LocalProfile:
    aws_endpoint: str
    moment_base_url: str

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> LocalProfile:
        aws_port = environ.get("LOCAL_AWS_PORT") or "5000"
        sandbox_port = environ.get("LOCAL_SANDBOX_PORT") or "4010"
        return cls(f"http://127.0.0.1:{aws_port}", f"http://127.0.0.1:{sandbox_port}")


class AwsClients:
    """boto3 clients of one session, all at one endpoint (None: AWS itself)."""

    def __init__(self, session: Any, endpoint_url: str | None = None) -> None:
        self._session = session
        self._endpoint_url = endpoint_url

    def client(self, service: str) -> Any:
        if self._endpoint_url is None:
            return self._session.client(service)
        return self._session.client(service, endpoint_url=self._endpoint_url)


def local_clients(profile: LocalProfile) -> AwsClients:
    import boto3  # noqa: PLC0415 -- not needed for --help

    session = boto3.session.Session(
        aws_access_key_id=_MADE_UP_CREDENTIALS,
        aws_secret_access_key=_MADE_UP_CREDENTIALS,
        region_name=LOCAL_REGION,
    )
    return AwsClients(session, profile.aws_endpoint)


def aws_clients(region: str | None) -> AwsClients:
    import boto3  # noqa: PLC0415

    return AwsClients(boto3.session.Session(region_name=region))
