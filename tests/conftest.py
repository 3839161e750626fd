"""Shared fixtures: a fake AWS account (moto, in-process), tables built from template.yaml."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local_stack import moto_speedups
from local_stack.made_up_values import LOCAL_AWS_ACCESS_KEY_ID, LOCAL_AWS_SECRET_ACCESS_KEY
from local_stack.template import create_table
from local_stack.workers import DEFAULT_PLUGINS, WorkerPlugin
from support import dynamodb_limits

# The local stack's moto copies only what a transaction touches; every test sees the same moto, in
# whatever order the tests run (test_moto_speedups.py compares it with moto's own).
moto_speedups.install()
# Every DynamoDB client refuses what DynamoDB refuses (moto does not): see support/dynamodb_limits.py.
dynamodb_limits.install()
# The local stack's functions run in worker processes of their own: the limits go there too.
DEFAULT_PLUGINS.append(
    (WorkerPlugin("support.dynamodb_limits:in_worker"), dynamodb_limits.receive_from_worker)
)

# Set before any client exists: moto needs these, and nothing must ever reach a real account.
os.environ.update(
    {
        "AWS_DEFAULT_REGION": "af-south-1",
        "AWS_ACCESS_KEY_ID": LOCAL_AWS_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": LOCAL_AWS_SECRET_ACCESS_KEY,
        # moto's DynamoDB Streams fail with "Not yet implemented" without this.
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
        "POWERTOOLS_SERVICE_NAME": "moment-balance-sync",
        "POWERTOOLS_METRICS_NAMESPACE": "MomentBalanceSync",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
)
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_ENDPOINT_URL", None)


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def dynamodb(aws: None) -> Any:
    return boto3.client("dynamodb")


@pytest.fixture
def events_table(dynamodb: Any) -> str:
    return create_table(dynamodb, "WebhookEventsTable", "WebhookEvents")


@pytest.fixture(autouse=True)
def _fresh_runtime() -> Iterator[None]:
    from moment_sync import runtime
    from moment_sync.observability import metrics

    runtime.reset()
    metrics.clear_metrics()
    yield
    runtime.reset()
    metrics.clear_metrics()


@pytest.fixture(autouse=True)
def _dynamodb_limits() -> Iterator[None]:
    """Fail any test whose code asked DynamoDB for something past its documented limits, even if the
    code caught the refusal."""
    dynamodb_limits.BREACHES.take()
    yield
    breaches = dynamodb_limits.BREACHES.take()
    if breaches:
        pytest.fail("DynamoDB would refuse: " + "; ".join(breaches[:5]), pytrace=False)


@pytest.fixture
def dynamodb_limit_breaches() -> Iterator[dynamodb_limits.Breaches]:
    """For a test that breaks a DynamoDB limit on purpose."""
    with dynamodb_limits.breaches_expected() as breaches:
        yield breaches


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that take minutes first (a stable sort): `make unit` spreads the suite over every
    core, and a simulation started last would leave one core working alone for its whole run."""
    items.sort(key=lambda item: item.get_closest_marker("long_running") is None)


_STARTED = time.monotonic()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """`make test`'s closing line says what pytest ran: its counts go to PYTEST_SUMMARY_FILE."""
    path = os.environ.get("PYTEST_SUMMARY_FILE")
    if not path:
        return
    counts = {
        outcome: len(terminalreporter.stats.get(outcome, []))
        for outcome in ("passed", "failed", "error", "skipped", "xfailed")
    }
    seconds = time.monotonic() - _STARTED
    shown = ", ".join(f"{count} {outcome}" for outcome, count in counts.items() if count)
    with open(path, "w", encoding="utf-8") as summary:
        summary.write(f"{shown or 'nothing run'} in {seconds / 60:.1f} min")
