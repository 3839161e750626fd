"""The event pipes' state (docs/events.md, docs/operations.md#event-pipe-not-running): a pipe Pipes
stopped emits no metrics, so the re-drive's run asks DescribePipe of each pipe (moto's Pipes here)
and counts those not RUNNING as EventPipeNotRunning, which the template alarms on."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

import redrive_handler
from integration.test_lease import counted, timeout_of
from local_stack.event_pipe import pipe_logical_ids
from local_stack.lambda_context import LocalLambdaContext
from local_stack.template import load_template, resource_properties
from moment_sync.pipe_health import check_event_pipes, pipe_names
from moment_sync.runtime import LedgerDependencies
from support.ledger import LedgerHarness
from support.webhooks import NOW

ROLE = "arn:aws:iam::123456789012:role/event-pipes"


@pytest.fixture
def pipes(aws: None) -> Any:
    client = boto3.client("pipes")
    for name in ("payments", "changes", "bills"):
        client.create_pipe(
            Name=name,
            Source="arn:aws:dynamodb:af-south-1:123456789012:table/Ledger/stream/2026-01-01T00:00:00.000",
            Target="arn:aws:events:af-south-1:123456789012:event-bus/events",
            RoleArn=ROLE,
        )
        client.describe_pipe(Name=name)  # moto: CREATING, then RUNNING
    return client


def not_running(output: str) -> list[float]:
    """Each flushed EventPipeNotRunning value (Powertools writes a list when it holds several)."""
    found: list[float] = []
    for blob in counted(output):
        value = blob.get("EventPipeNotRunning")
        if value is not None:
            found.extend(value if isinstance(value, list) else [value])
    return found


def test_all_running_counts_zero_and_a_stopped_or_deleted_pipe_counts(
    pipes: Any, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from moment_sync.observability import metrics

    capsys.readouterr()
    states = check_event_pipes(pipes, ["payments", "changes", "bills"])
    assert [state.running for state in states] == [True, True, True]
    metrics.flush_metrics()
    assert not_running(capsys.readouterr().out) == [0]

    pipes.stop_pipe(Name="changes")  # as Pipes does after repeated 4xx
    states = check_event_pipes(pipes, ["payments", "changes", "bills", "deleted-by-hand"])
    assert [(state.name, state.running) for state in states] == [
        ("payments", True),
        ("changes", False),
        ("bills", True),
        ("deleted-by-hand", False),
    ]
    assert states[3].state == "NotFoundException"
    metrics.flush_metrics()
    output = capsys.readouterr().out
    assert not_running(output) == [2]
    logged = [(record.getMessage(), getattr(record, "pipe", None)) for record in caplog.records]
    assert logged == [("event pipe not running", "changes"), ("event pipe not running", "deleted-by-hand")]


def test_every_redrive_run_checks_the_pipes_it_is_given_even_without_the_lease(
    pipes: Any, dynamodb: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    harness = LedgerHarness(dynamodb, clock=lambda: float(NOW))
    dependencies = LedgerDependencies(events=harness.events, ledger=harness.ledger, clock=harness.clock)
    monkeypatch.setattr(redrive_handler, "moment_directory", lambda: None)
    monkeypatch.setenv("EVENT_PIPE_NAMES", "payments changes bills")
    pipes.stop_pipe(Name="bills")
    context = LocalLambdaContext("redrive", timeout_seconds=timeout_of("RedriveFunction"))
    capsys.readouterr()
    redrive_handler.lambda_handler({}, context, dependencies, pipes=pipes)
    assert not_running(capsys.readouterr().out) == [1]
    leases = harness.ledger.leases()
    assert leases.acquire("redrive", "someone-else", now=NOW, expires_at=NOW + 600) is not None
    answer = redrive_handler.lambda_handler({}, context, dependencies, pipes=pipes)
    assert "skipped" in answer
    assert not_running(capsys.readouterr().out) == [1]


def test_the_template_gives_the_redrive_every_pipes_name_and_describe_on_those_pipes_only() -> None:
    template = load_template()
    assert pipe_names(" a  b ") == ["a", "b"] and pipe_names(None) == []
    variables = resource_properties("RedriveFunction", template)["Environment"]["Variables"]
    named = pipe_names(variables["EVENT_PIPE_NAMES"]["Fn::Sub"])
    assert sorted(name.strip("${}") for name in named) == pipe_logical_ids()
    role = template["Resources"]["RedriveFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    [statement] = [item for item in role["Statement"] if "pipes:" in json.dumps(item)]
    assert statement["Action"] == "pipes:DescribePipe"
    assert sorted(item["Fn::GetAtt"][0] for item in statement["Resource"]) == pipe_logical_ids()
    assert all(item["Fn::GetAtt"][1] == "Arn" for item in statement["Resource"])
    alarm = template["Resources"]["EventPipeNotRunningAlarm"]["Properties"]
    assert (alarm["MetricName"], alarm["Threshold"]) == ("EventPipeNotRunning", 1)
