"""A scheduled run that fails must land where an operator sees it.

EventBridge Scheduler invokes the pusher, the re-drive and the daily check asynchronously: its retry
policy and dead-letter queue cover only the Invoke call, which almost never fails. What does fail (a
crash, a timeout, a run throttled in Lambda's asynchronous queue until it is too old) follows
Lambda's own asynchronous retries and then goes to the function's on-failure destination, so each
scheduled function needs one: a queue of this template, which the function's role may send to (Lambda
sends the record with it), watched by an alarm with a runbook section. Checked on the template as
samtranslator expands it.
"""

from __future__ import annotations

import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from translate_template import translate  # noqa: E402

RUNBOOK = ROOT / "docs" / "operations.md"
# Lambda's own waits before its first and second asynchronous retry.
RETRY_WAITS_SECONDS = (60, 120)


@cache
def resources() -> dict[str, Any]:
    translated: dict[str, Any] = translate()["Resources"]
    return translated


def scheduled_functions() -> dict[str, dict[str, Any]]:
    """Function logical id -> its schedule's properties."""
    found = {}
    for resource in resources().values():
        if resource["Type"] == "AWS::Scheduler::Schedule":
            target = resource["Properties"]["Target"]["Arn"]["Fn::GetAtt"][0]
            found[target] = resource["Properties"]
    return found


def invoke_config(function: str) -> dict[str, Any]:
    configs = [
        resource["Properties"]
        for resource in resources().values()
        if resource["Type"] == "AWS::Lambda::EventInvokeConfig"
        and resource["Properties"]["FunctionName"] == {"Ref": function}
    ]
    assert len(configs) == 1, f"{function} has no asynchronous invocation config"
    return configs[0]


def on_failure_queue(function: str) -> str:
    destination = invoke_config(function).get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
    assert destination, f"{function}: a failed run goes nowhere"
    assert set(destination) == {"Fn::GetAtt"} and destination["Fn::GetAtt"][1] == "Arn", destination
    queue: str = destination["Fn::GetAtt"][0]
    assert resources()[queue]["Type"] == "AWS::SQS::Queue", queue
    return queue


def schedule_seconds(expression: Any) -> int | None:
    """A `rate(...)` expression in seconds (the template's default); None for a cron."""
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours)\)", str(expression))
    if not match:
        return None
    return int(match.group(1)) * (60 if match.group(2).startswith("minute") else 3600)


def parameter_default(value: Any) -> Any:
    if isinstance(value, dict) and "Ref" in value:
        return translate()["Parameters"][value["Ref"]]["Default"]
    return value


# Not scheduled but started asynchronously by a scheduled function: the push workers, one per shard,
# by the push dispatcher (docs/pusher.md#fan-out). A failed worker run is a failed push run too.
WORKERS = {"BalancePusherFunction": "PushDispatcherFunction"}


def asynchronous_functions() -> list[str]:
    return sorted([*scheduled_functions(), *WORKERS])


def test_the_template_has_the_three_scheduled_functions() -> None:
    assert set(scheduled_functions()) == {
        "PushDispatcherFunction",
        "RedriveFunction",
        "DailyReconcileFunction",
    }


@pytest.mark.parametrize("function", sorted(scheduled_functions()))
def test_each_scheduled_function_has_its_own_on_failure_queue(function: str) -> None:
    queue = on_failure_queue(function)
    schedule_dlq = scheduled_functions()[function]["Target"]["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    # Apart from the schedule's: the two say different things (no run started / a run failed).
    assert queue != schedule_dlq
    others = {on_failure_queue(other) for other in scheduled_functions() if other != function}
    assert queue not in others


@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_a_worker_fails_into_its_dispatchers_queue(worker: str) -> None:
    # Lambda's asynchronous queue retries or drops a worker's run like a scheduled one: it needs the
    # same on-failure destination, the push run's, which the runbook already explains.
    assert on_failure_queue(worker) == on_failure_queue(WORKERS[worker])


@pytest.mark.parametrize("function", asynchronous_functions())
def test_the_function_role_may_send_to_its_queue_and_only_there(function: str) -> None:
    role = resources()[resources()[function]["Properties"]["Role"]["Fn::GetAtt"][0]]
    sends = [
        statement
        for policy in role["Properties"]["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
        if isinstance(statement, dict) and statement.get("Action") == "sqs:SendMessage"
    ]
    assert [statement["Resource"] for statement in sends] == [
        {"Fn::GetAtt": [on_failure_queue(function), "Arn"]}
    ]


@pytest.mark.parametrize("function", asynchronous_functions())
def test_an_alarm_watches_the_queue_and_names_a_runbook_section(function: str) -> None:
    queue = on_failure_queue(function)
    alarms = [
        resource["Properties"]
        for resource in resources().values()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
        and resource["Properties"].get("Dimensions")
        == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}]
    ]
    assert len(alarms) == 1, f"no alarm on {queue}"
    alarm = alarms[0]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    [section] = re.findall(r"docs/operations\.md#([a-z0-9-]+)", alarm["AlarmDescription"])
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("#")
    }
    assert section in headings
    assert queue in RUNBOOK.read_text(), "the runbook names the queue it is about"


@pytest.mark.parametrize("function", ["PushDispatcherFunction", "BalancePusherFunction", "RedriveFunction"])
def test_a_sweep_on_a_rate_is_not_retried_and_ages_out_by_its_next_run(function: str) -> None:
    # The next scheduled run does what a retry would; a run older than one period is superseded.
    config = invoke_config(function)
    scheduled = WORKERS.get(function, function)
    period = schedule_seconds(parameter_default(scheduled_functions()[scheduled]["ScheduleExpression"]))
    assert period is not None
    assert config["MaximumRetryAttempts"] == 0
    assert 60 <= config["MaximumEventAgeInSeconds"] <= period


def test_the_daily_check_is_retried_and_its_age_limit_holds_every_attempt() -> None:
    # A day is too long to wait for the next run: Lambda retries twice, and the age limit (which
    # counts from the first queueing) must not cut the last retry of runs that each use their timeout.
    config = invoke_config("DailyReconcileFunction")
    timeout = resources()["DailyReconcileFunction"]["Properties"]["Timeout"]
    retries = config["MaximumRetryAttempts"]
    assert retries == 2
    needed = (retries + 1) * timeout + sum(RETRY_WAITS_SECONDS[:retries])
    assert needed <= config["MaximumEventAgeInSeconds"] <= 21600


def test_the_runbook_says_lambda_not_the_scheduler_retries_a_throttled_run() -> None:
    text = RUNBOOK.read_text()
    assert "The scheduler retries it" not in text
    assert "throttled throughout" not in text
    for section in (
        "Redrive function throttles",
        "Balance pusher function throttles",
        "Daily reconcile function throttles",
    ):
        body = text.split(f"#### {section}\n", 1)[1].split("\n#", 1)[0]
        assert "asynchronous queue" in body, section
