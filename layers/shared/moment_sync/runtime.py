"""Builds each function's adapters from the environment template.yaml sets, once per execution environment.

Handlers call these; tests call the use cases with their own adapters instead. Imports are local to
each builder so a function loads only what it uses (cold start).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from moment_sync.receiver import ReceiverSettings, SigningKeys
from moment_sync.webhook_store import WebhookStore

if TYPE_CHECKING:
    from moment_sync.adapters.lambda_workers import LambdaWorkers
    from moment_sync.adapters.lease import DynamoLeases
    from moment_sync.adapters.ledger_table import LedgerTable
    from moment_sync.adapters.webhook_events_table import WebhookEventsTable
    from moment_sync.moment_client import MomentClient
    from moment_sync.pusher import BalancePusher
    from moment_sync.reconcile_report import DailyCheck
    from moment_sync.redrive import MomentDirectory


@cache
def aws_client(service: str) -> Any:
    import platform  # noqa: PLC0415

    import boto3  # noqa: PLC0415 -- loaded on first use, not at import
    import botocore  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    # Requests are built by this package's adapters, and DynamoDB validates them again server-side:
    # botocore's client-side parameter validation would cost ~50 µs per webhook for nothing.
    # A User-Agent given here is sent as it is: otherwise botocore rebuilds it from some twenty
    # sanitised parts twice per request, about a fifth of a PutItem's CPU (docs/performance.md).
    user_agent = (
        f"Boto3/{boto3.__version__} botocore/{botocore.__version__} Python/{platform.python_version()} "
        "moment-balance-sync"
    )
    return boto3.client(service, config=Config(parameter_validation=False, user_agent=user_agent))


@dataclass(frozen=True, slots=True)
class ReceiverDependencies:
    keys: SigningKeys
    store: WebhookStore
    settings: ReceiverSettings
    clock: Callable[[], float] = field(default=time.time)


@cache
def receiver_dependencies() -> ReceiverDependencies:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415

    from moment_sync.adapters.signing_secrets import SecretsManagerSigningKeys  # noqa: PLC0415
    from moment_sync.adapters.webhook_events_table import WebhookEventsTable  # noqa: PLC0415

    return ReceiverDependencies(
        keys=SecretsManagerSigningKeys(
            SecretsProvider(boto3_client=aws_client("secretsmanager")),
            secret_id=os.environ["WEBHOOK_SIGNING_SECRET_ARN"],
            max_age_seconds=int(os.environ.get("SIGNING_SECRETS_MAX_AGE_SECONDS", "60")),
        ),
        store=WebhookEventsTable(aws_client("dynamodb"), os.environ["WEBHOOK_EVENTS_TABLE"]),
        settings=ReceiverSettings.from_environment(),
    )


@dataclass(frozen=True, slots=True)
class LedgerDependencies:
    events: WebhookEventsTable
    ledger: LedgerTable
    clock: Callable[[], float] = field(default=time.time)


@cache
def ledger_dependencies() -> LedgerDependencies:
    from moment_sync.adapters.ledger_table import LedgerTable  # noqa: PLC0415
    from moment_sync.adapters.webhook_events_table import WebhookEventsTable  # noqa: PLC0415

    events = WebhookEventsTable(aws_client("dynamodb"), os.environ["WEBHOOK_EVENTS_TABLE"])
    return LedgerDependencies(
        events=events, ledger=LedgerTable(aws_client("dynamodb"), os.environ["LEDGER_TABLE"], events)
    )


_moment_clients: dict[str, MomentClient] = {}


def moment_client() -> MomentClient:
    """The Moment client, reused across invocations; a new one only when the API key was rotated.
    The key is read through Powertools' cache (MOMENT_API_KEY_MAX_AGE_SECONDS, default 300)."""
    from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415

    from moment_sync.moment_client import DEFAULT_BASE_URL, MomentClient  # noqa: PLC0415

    provider = _secrets_provider(SecretsProvider)
    api_key = str(
        provider.get(
            os.environ["MOMENT_API_KEY_SECRET_ARN"],
            max_age=int(os.environ.get("MOMENT_API_KEY_MAX_AGE_SECONDS", "300")),
        )
    ).strip()
    if api_key not in _moment_clients:
        for stale in _moment_clients.values():
            stale.close()
        _moment_clients.clear()
        _moment_clients[api_key] = MomentClient(
            api_key,
            environment=os.environ.get("ENVIRONMENT", "dev"),
            base_url=os.environ.get("MOMENT_BASE_URL", DEFAULT_BASE_URL),
            read_timeout_seconds=float(os.environ.get("MOMENT_READ_TIMEOUT_SECONDS", "10")),
        )
    return _moment_clients[api_key]


def moment_worst_call_seconds() -> float:
    """The longest one Moment call can take with this function's settings (no API key needed)."""
    from moment_sync.moment_client import worst_call_seconds  # noqa: PLC0415

    return worst_call_seconds(read_timeout_seconds=float(os.environ.get("MOMENT_READ_TIMEOUT_SECONDS", "10")))


@cache
def _secrets_provider(provider_class: Any) -> Any:
    return provider_class(boto3_client=aws_client("secretsmanager"))


def moment_directory() -> MomentDirectory | None:
    """Moment's own record of a Moment id, for re-driving unmatched payments (None: not configured)."""
    if not os.environ.get("MOMENT_API_KEY_SECRET_ARN"):
        return None
    from moment_sync.adapters.moment_directory import MomentClientDirectory  # noqa: PLC0415

    return MomentClientDirectory(moment_client)


def balance_pusher() -> BalancePusher:
    from moment_sync.adapters.dynamo_retry import ConflictRetryingClient  # noqa: PLC0415
    from moment_sync.adapters.lease import DynamoBackoff  # noqa: PLC0415
    from moment_sync.adapters.ledger_table import LedgerTable  # noqa: PLC0415
    from moment_sync.pusher import BalancePusher  # noqa: PLC0415

    dependencies = ledger_dependencies()
    # The pusher's writes meet the reconciler's transactions on the same heads: a conflict is tried
    # again here (botocore does not), and only what still conflicts is a failed push.
    ledger = LedgerTable(
        ConflictRetryingClient(aws_client("dynamodb")), os.environ["LEDGER_TABLE"], dependencies.events
    )
    return BalancePusher(
        ledger=ledger,
        moment=moment_client(),
        now=dependencies.clock,
        concurrency=int(os.environ.get("PUSH_CONCURRENCY", "8")),
        events=dependencies.events,
        # Shared by the fanned-out workers: the per-customer create claim and Moment's 429 back-off.
        leases=ledger.leases(),
        backoff=DynamoBackoff(aws_client("dynamodb"), os.environ["LEDGER_TABLE"]),
    )


@dataclass(frozen=True, slots=True)
class PushDispatcher:
    leases: DynamoLeases
    workers: LambdaWorkers
    clock: Callable[[], float] = field(default=time.time)


def push_dispatcher() -> PushDispatcher:
    from moment_sync.adapters.lambda_workers import LambdaWorkers  # noqa: PLC0415
    from moment_sync.adapters.lease import DynamoLeases  # noqa: PLC0415

    return PushDispatcher(
        leases=DynamoLeases(aws_client("dynamodb"), os.environ["LEDGER_TABLE"]),
        workers=LambdaWorkers(aws_client("lambda"), os.environ["PUSH_WORKER_FUNCTION"]),
    )


def daily_check() -> DailyCheck:
    from moment_sync.reconcile_report import DailyCheck  # noqa: PLC0415

    return DailyCheck(
        ledger=ledger_dependencies().ledger,
        moment=moment_client(),
        calls_per_second=float(os.environ.get("RECONCILE_CALLS_PER_SECOND", "5")),
        pass_every_seconds=float(os.environ.get("RECONCILE_PASS_EVERY_SECONDS", "86400")),
    )


def reset() -> None:
    """Forget every built adapter (tests, and the local stack after it changes the environment)."""
    aws_client.cache_clear()
    receiver_dependencies.cache_clear()
    ledger_dependencies.cache_clear()
    _secrets_provider.cache_clear()
    for client in _moment_clients.values():
        client.close()
    _moment_clients.clear()
