"""The local stack honest about concurrency, time and retries (issue 17, "What the local stack must stop
hiding"): each function in worker processes of its own, killed at its timeout, the stream's retry quota
and malformed responses as AWS counts them, scheduled runs retried as Lambda retries an asynchronous
invocation, and repeated query parameters joined as API Gateway joins them.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import httpx

from local_stack.api_gateway import query_string_parameters
from local_stack.functions import Invocation
from local_stack.made_up_values import LOCAL_WEBHOOK_SECRET
from local_stack.scheduler import Job, Scheduler
from local_stack.stack import LocalSettings, running_stack
from local_stack.workers import WorkerPlugin
from moment_sandbox import Faults
from moment_sandbox.webhooks import signature_header

from .test_local_stack import call, quick_settings, run_source, stream_record

# --- concurrency -----------------------------------------------------------------------------------


def test_the_receiver_answers_while_a_slow_pusher_run_is_in_moment() -> None:
    """On AWS the pusher and the receiver run in separate execution environments. Under one lock the
    webhook would wait for the whole push run (Moment answering in 2 s here)."""
    settings = quick_settings(sandbox=replace(quick_settings().sandbox, faults=Faults(latency_ms=2000)))
    with running_stack(settings) as stack, httpx.Client(base_url=stack.api_url, trust_env=False) as api:
        call(api.put, "/customers/UCR8", json={"currency": "ZAR"})
        call(api.post, "/customers/UCR8/charges", json={"id": "C1", "amount": 1000})
        _signed_webhook(api, "msg_warm_receiver")  # the receiver's worker started and warm
        push: list[Invocation] = []
        pushing = threading.Thread(target=lambda: push.append(stack.push_now()))
        pushing.start()
        time.sleep(0.5)  # the pusher is now waiting on Moment
        started = time.monotonic()
        answer = _signed_webhook(api, "msg_while_pushing")
        answered_in = time.monotonic() - started
        still_pushing = pushing.is_alive()
        pushing.join(timeout=60)
    assert answer.status_code == 200, answer.text
    assert still_pushing, "the push run ended before the webhook was answered: nothing overlapped"
    assert answered_in < 1.5, f"the webhook waited {answered_in:.1f} s for the push run"
    assert push and push[0].response["results"] == {"created": 1}, push


def _signed_webhook(api: httpx.Client, webhook_id: str) -> httpx.Response:
    body = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "type": "bill.updated", "data": {"id": "bill_1"}})
    timestamp = int(time.time())
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header([LOCAL_WEBHOOK_SECRET], webhook_id, timestamp, body.encode()),
        "content-type": "application/json",
    }
    return api.post("/webhooks/moment", content=body, headers=headers)


# --- timeouts --------------------------------------------------------------------------------------


# Long enough for a healthy invocation on a fresh worker of a loaded 2-core machine running the suite
# on both cores (5 s timed out there); the slow ones sleep 30 s, well past it.
TIMEOUT = 12.0


def slow_first(
    tmp_path: Path, functions: tuple[str, ...], slow: int = 1, seconds: float = 30.0
) -> WorkerPlugin:
    return WorkerPlugin("support.slow_functions:slow_first", (str(tmp_path), slow, seconds), functions)


def test_a_reconciler_past_its_timeout_is_killed_and_the_stream_retries_the_batch(tmp_path: Path) -> None:
    settings = quick_settings(
        function_timeouts={"ReconcilerFunction": TIMEOUT},
        worker_plugins=(slow_first(tmp_path, ("ReconcilerFunction",)),),
    )
    with running_stack(settings) as stack, httpx.Client(base_url=stack.api_url, trust_env=False) as api:
        call(api.put, "/customers/UCR9", json={"currency": "ZAR"})
        call(api.post, "/customers/UCR9/charges", json={"id": "C1", "amount": 5000})
        assert stack.push_now().response["results"] == {"created": 1}
        paid = stack.sandbox.pay(customer="UCR9", amount=1500)
        assert stack.wait_until_quiet(60)
        status = stack.status()
        event = api.get(f"/events/{paid['webhook_id']}").json()
        balance = api.get("/customers/UCR9").json()["balance"]
    assert status["timed_out"] == {"ReconcilerFunction": 1}, status
    assert status["workers"]["ReconcilerFunction"]["killed_at_timeout"] == 1
    assert status["stream"]["function_errors"] == 1 and status["stream"]["batches_to_destination"] == 0
    assert event["status"] == "applied" and balance == 3500


def test_a_timed_out_invocation_is_reported_as_lambda_reports_it(tmp_path: Path) -> None:
    settings = quick_settings(
        function_timeouts={"RedriveFunction": TIMEOUT},
        worker_plugins=(slow_first(tmp_path, ("RedriveFunction",)),),
    )
    with running_stack(settings) as stack:
        started = time.monotonic()
        first = stack.redrive_now()  # on demand: synchronous, the caller gets the error, no retry
        seconds = time.monotonic() - started
        second = stack.redrive_now()
        scheduled = stack.scheduler.status()["RedriveFunction"]
    assert first.timed_out and first.error is not None
    assert "Sandbox.Timedout" in first.error and f"Task timed out after {TIMEOUT:.2f} seconds" in first.error
    assert seconds < TIMEOUT + 5, f"the invocation ran {seconds:.1f} s past a {TIMEOUT:g} s timeout"
    assert not second.failed, second  # a new worker serves the next invocation
    assert scheduled["async_retries"] == 0


def test_a_scheduled_run_killed_at_its_timeout_is_retried_as_an_asynchronous_invocation(
    tmp_path: Path,
) -> None:
    # The daily check: the template gives it MaximumRetryAttempts 2 (the pusher and the re-drive have 0:
    # their next scheduled run is the retry).
    daily = "DailyReconcileFunction"
    settings = quick_settings(
        function_timeouts={daily: TIMEOUT},
        async_retry_delays_seconds=(0.2, 0.2),
        worker_plugins=(slow_first(tmp_path, (daily,), slow=2),),
    )
    with running_stack(settings) as stack:
        job = stack.scheduler._jobs[daily]  # on demand locally: give it a (daily) schedule firing now
        job.interval_seconds, job.next_at = 86400.0, time.monotonic()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and stack.scheduler.status()[daily]["runs"] < 3:
            time.sleep(0.1)
        status = stack.status()
    # The scheduled run and its first retry killed; the second retry (Lambda's last) ran.
    assert status["timed_out"] == {daily: 2}, status
    assert status["schedules"][daily]["async_retries"] == 2
    assert status["function_errors"] == {daily: 2}


def test_lambda_retries_a_failed_asynchronous_invocation_at_most_its_maximum_retry_attempts() -> None:
    outcomes: list[str] = []

    def failing(_overrides: dict[str, str]) -> Invocation:
        outcomes.append("failed")
        return Invocation("F", error="RuntimeError: no")

    scheduler = Scheduler()
    never_retried = Job("Pusher", failing, 0.05, maximum_retry_attempts=0, retry_delays_seconds=(0.0,))
    retried = Job("Redrive", failing, 3600.0, retry_delays_seconds=(0.05, 0.1))
    scheduler.add(never_retried)
    scheduler.add(retried)
    retried.next_at = time.monotonic()
    scheduler.start()
    try:
        time.sleep(1.0)
    finally:
        scheduler.stop()
    assert retried.runs == 3 and retried.async_retries == 2  # the event and Lambda's two retries
    assert never_retried.async_retries == 0 and never_retried.runs >= 2  # only its own schedule
    scheduler.run_now("Redrive")  # on demand: synchronous, never retried
    assert retried.retry_at is None


# --- the stream's retries as AWS counts them ------------------------------------------------------------


def test_splitting_a_batch_does_not_count_toward_the_retry_quota() -> None:
    """A record that always fails (record 1) is isolated by bisection and retried its full quota; its
    neighbours are applied, not given up with it (each split used to count as a retry)."""
    function, sent, source = run_source(
        [stream_record(n) for n in range(1, 5)],
        ["error", "error", "error", "error", "ok", "ok"],
        maximum_retry_attempts=1,
    )
    assert function.batches == [[1, 2, 3, 4], [1, 2], [1], [1], [2], [3, 4]]
    [message] = sent
    info = message["DDBStreamBatchInfo"]
    assert (info["startSequenceNumber"], info["batchSize"]) == ("1001", 1)
    assert message["requestContext"]["approximateInvokeCount"] == 2  # the first try and one retry
    assert source.stats.bisections == 2 and source.stats.retries == 1


def test_a_malformed_failure_report_is_a_complete_failure_never_bisected() -> None:
    function, sent, source = run_source(
        [stream_record(n) for n in range(1, 5)], ["garbled", "garbled", "ok"], maximum_retry_attempts=3
    )
    assert function.batches == [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]
    assert source.stats.bisections == 0 and source.stats.retries == 2 and not sent


# --- API Gateway's query parameters ------------------------------------------------------------------


def test_repeated_query_parameters_are_joined_with_commas_as_an_http_api_sends_them() -> None:
    assert query_string_parameters("limit=5&cursor=a&limit=7") == {"limit": "5,7", "cursor": "a"}
    assert query_string_parameters("a&b=&a=1") == {"a": ",1", "b": ""}


def test_a_repeated_limit_reaches_the_ledger_api_joined_and_is_refused() -> None:
    with (
        running_stack(quick_settings()) as stack,
        httpx.Client(base_url=stack.api_url, trust_env=False) as api,
    ):
        call(api.put, "/customers/UCR10", json={"currency": "ZAR"})
        answer = api.get("/customers/UCR10", params=[("limit", "5"), ("limit", "7")])
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert "limit" in answer.text


# --- settings ----------------------------------------------------------------------------------------


def test_the_concurrency_is_the_templates_reserved_value_or_the_default() -> None:
    from local_stack.functions import template_concurrency
    from local_stack.template import resource_properties

    for logical_id in ("WebhookReceiverFunction", "BalancePusherFunction", "RedriveFunction"):
        reserved = resource_properties(logical_id).get("ReservedConcurrentExecutions")
        assert template_concurrency(logical_id, 4) == (min(reserved, 4) if reserved else 4)
    assert LocalSettings.from_environment({"LOCAL_FUNCTION_CONCURRENCY": "2"}).function_concurrency == 2
    try:
        LocalSettings.from_environment({"LOCAL_FUNCTION_CONCURRENCY": "none"})
    except ValueError as error:
        assert "LOCAL_FUNCTION_CONCURRENCY" in str(error)
    else:
        raise AssertionError("a bad LOCAL_FUNCTION_CONCURRENCY was taken")
