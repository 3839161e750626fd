"""The whole system through the local stack, over real HTTP on loopback: moto's server, the Moment
sandbox, the HTTP front, the stream event source and the scheduler, with the handlers unchanged.

- the demo's month (`make demo` plays it both ways Moment may treat a balance; here the default);
  the soak (test_soak.py) is the random month with faults on every side;
- the pusher's races, each forced deterministically (they were bugs this file found);
- the stream event source's semantics (filter, batch size, partial failures, bisection, retries, the
  on-failure destination), against scripted responses;
- every file in events/ drives its handler, and events/env.json is what `make local` sets;
- `python -m local_stack` (what `make local` runs) starts, says where it is, and stops on Ctrl-C.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from local_stack import demo
from local_stack.event_source import MappingSettings, StreamEventSource
from local_stack.functions import Invocation
from local_stack.sample_events import EVENTS, env_file, function_folder
from local_stack.stack import LocalSettings, running_stack, scheduled_functions
from local_stack.template import ROOT
from moment_sandbox import Faults, SandboxSettings


def quick_settings(**changes: Any) -> LocalSettings:
    """Free ports, nothing on a timer unless asked, fast retries."""
    settings = LocalSettings(
        api_port=0,
        sandbox_port=0,
        aws_port=0,
        push_interval_seconds=None,
        redrive_interval_seconds=None,
        stream_retry_delay_seconds=0.01,
        stream_batching_window_seconds=0.2,
        sandbox=SandboxSettings(webhook_base_delay_seconds=0.05, webhook_max_attempts=10),
    )
    return replace(settings, **changes)


def call(request: Any, *args: Any, **kwargs: Any) -> httpx.Response:
    """A merchant's call to the ledger API: retried on 503 (a throttled table), as its client would."""
    for _ in range(20):
        response: httpx.Response = request(*args, **kwargs)
        if response.status_code < 500:
            response.raise_for_status()
            return response
        time.sleep(0.05)
    raise AssertionError(f"still {response.status_code} after 20 tries: {response.text}")


# --- the demo -------------------------------------------------------------------------------------


@pytest.mark.long_running
def test_the_demo_month_ends_with_the_ledger_and_moment_agreeing() -> None:
    """`make demo` plays it both ways; here the default way (the random month below plays both)."""
    lines: list[str] = []
    with running_stack(demo.demo_settings(applies_payments=True, environ={})) as stack:
        result = demo.play(stack, lines.append)
    assert result.ok, "\n".join(lines)
    assert Counter(status.split(":")[0] for status in result.statuses.values()) == {
        "applied": 6,  # 4 balance payments, 2 bill payments
        "duplicate": 1,
        "ignored": 1,
        "parked": 2,
    }
    assert result.forged_ids and not set(result.forged_ids) & set(result.statuses)
    assert {row["ref"]: row["ledger"] for row in result.rows} == {
        "UCR1001": 36500,
        "UCR1002": 0,
        "UCR1003": 120000,
        "UCR2001": None,
        "UCR2001-GYM": 25000,
        "UCR2001-POOL": 0,
    }
    # The member on the bill model: the annual fee paid off (Moment 2 payments + cash), the locker voided.
    assert {row["ref"]: (row["ledger"], row["moment"], row["status"]) for row in result.bill_rows} == {
        "FEE-UCR3001-2026": (240000, 240000, "paid"),
        "LOCKER-UCR3001-2026": (0, 0, "voided"),
    }


# --- the pusher's races, one at a time ---------------------------------------------------------------


def test_two_new_accounts_of_a_new_customer_are_created_in_one_push() -> None:
    settings = quick_settings(sandbox=replace(quick_settings().sandbox, faults=Faults(latency_ms=20)))
    with running_stack(settings) as stack, httpx.Client(base_url=stack.api_url, trust_env=False) as api:
        call(api.put, "/customers/F9", json={"currency": "ZAR", "balance_model": "accounts"})
        for ref in ("F9-A", "F9-B"):
            call(api.put, f"/accounts/{ref}", json={"customer_ref": "F9", "currency": "ZAR"})
            call(api.post, f"/accounts/{ref}/charges", json={"id": "C1", "amount": 1000})
        report = stack.push_now().response
        assert report["results"] == {"created": 2}, report


def test_a_payment_moment_applies_during_a_push_is_restored_by_the_next_push() -> None:
    with (
        running_stack(quick_settings()) as stack,
        httpx.Client(base_url=stack.api_url, trust_env=False) as api,
    ):
        call(api.put, "/customers/UCR5", json={"currency": "ZAR"})
        call(api.post, "/customers/UCR5/charges", json={"id": "C1", "amount": 10_000})
        assert stack.push_now().response["results"] == {"created": 1}
        call(api.post, "/customers/UCR5/charges", json={"id": "C2", "amount": 5_000})
        # Moment applies a payment after the pusher read its balance, just before the PATCH lands.
        store = stack.sandbox.moment.store
        patch = store.update_customer
        paid: list[dict[str, Any]] = []

        def payment_first(key: str, fields: dict[str, Any]) -> dict[str, Any]:
            if not paid:
                paid.append(stack.sandbox.pay(customer="UCR5", amount=2_000))
            return patch(key, fields)

        store.update_customer = payment_first  # type: ignore[method-assign]
        assert stack.push_now().response["results"] == {"pushed": 1}
        store.update_customer = patch  # type: ignore[method-assign]
        stack.sandbox.pay(customer="UCR5", amount=3_000)  # and another one, after the push
        assert stack.wait_until_quiet(10)  # both webhooks are reconciled after that push
        for _ in range(3):
            stack.push_now()
        ledger = api.get("/customers/UCR5").json()["balance"]
        assert ledger == 10_000
        assert stack.sandbox.state()["customers"][0]["balance"] == ledger


def test_an_object_adopted_after_a_failed_booking_keeps_the_payments_moment_applied() -> None:
    # In this process (one invocation at a time): the test hooks the functions' own DynamoDB client.
    with (
        running_stack(quick_settings(in_process=True)) as stack,
        httpx.Client(base_url=stack.api_url, trust_env=False) as api,
    ):
        from moment_sync import runtime

        call(api.put, "/customers/UCR6", json={"currency": "ZAR"})
        call(api.post, "/customers/UCR6/charges", json={"id": "C1", "amount": 10_000})
        failed: list[str] = []

        def fail_the_first_link(params: dict[str, Any], **_: Any) -> None:
            put = params["TransactItems"][0].get("Put", {}).get("Item", {})
            if not failed and put.get("pk", {}).get("S", "").startswith("MOMENT#"):
                failed.append(put["pk"]["S"])
                raise ClientError(
                    {"Error": {"Code": "ProvisionedThroughputExceededException"}}, "TransactWriteItems"
                )

        runtime.aws_client("dynamodb").meta.events.register(
            "before-parameter-build.dynamodb.TransactWriteItems", fail_the_first_link
        )
        assert stack.push_now().response["results"] == {"failed": 1}  # created on Moment, not booked
        stack.sandbox.pay(customer="UCR6", amount=3_000)  # Moment applies a payment before the next run
        assert stack.wait_until_quiet(10)
        stack.push_now()  # adopts UCR6 and pushes
        stack.sandbox.pay(customer="UCR6", amount=2_000)
        assert stack.wait_until_quiet(10)
        stack.redrive_now(grace_seconds=0)  # whatever was parked unmatched meanwhile
        for _ in range(3):
            stack.push_now()
        ledger = api.get("/customers/UCR6").json()["balance"]
        assert ledger == 5_000
        assert stack.sandbox.state()["customers"][0]["balance"] == ledger


# --- the stream event source, scripted --------------------------------------------------------------


class ScriptedReader:
    stream_arn = "arn:aws:dynamodb:af-south-1:123456789012:table/WebhookEvents/stream/2026-01-01T00:00:00.000"

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self._records = records

    def new_records_by_shard(self, limit: int = 1000) -> list[tuple[str, list[dict[str, Any]]]]:
        records, self._records = self._records, []
        return [("shardId-1", records)]


def stream_record(sequence: int, event_name: str = "INSERT", age_seconds: float = 0) -> dict[str, Any]:
    return {
        "eventName": event_name,
        "dynamodb": {
            "SequenceNumber": str(1000 + sequence),
            "ApproximateCreationDateTime": time.time() - age_seconds,
            "NewImage": {"webhook_id": {"S": f"msg_{sequence}"}},
        },
    }


class ScriptedFunction:
    """Answers each invocation from a script: "ok", "error", "garbled", or the records to report failed."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.batches: list[list[int]] = []

    def __call__(self, event: dict[str, Any]) -> Invocation:
        records = event["Records"]
        self.batches.append([int(r["dynamodb"]["SequenceNumber"]) - 1000 for r in records])
        answer = self.script.pop(0) if self.script else "ok"
        if answer == "error":
            return Invocation("Reconciler", error="TimeoutError: Task timed out")
        if answer == "ok":
            return Invocation("Reconciler", response={"batchItemFailures": []})
        if answer == "garbled":
            return Invocation("Reconciler", response={"batchItemFailures": [{"itemIdentifier": ""}]})
        failures = [
            {"itemIdentifier": record["dynamodb"]["SequenceNumber"]}
            for record in records
            if int(record["dynamodb"]["SequenceNumber"]) - 1000 in answer
        ]
        return Invocation("Reconciler", response={"batchItemFailures": failures})


def run_source(
    records: list[dict[str, Any]], script: list[Any], **mapping: Any
) -> tuple[ScriptedFunction, list[dict[str, Any]], StreamEventSource]:
    settings = MappingSettings(
        "ReconcilerFunction",
        **{
            "batch_size": 100,
            "bisect_on_function_error": True,
            "maximum_retry_attempts": 3,
            "report_batch_item_failures": True,
            "filters": ({"eventName": ["INSERT"]},),
            "on_failure_destination": "arn:aws:sqs:af-south-1:123456789012:ReconcilerFailureQueue",
            **mapping,
        },
    )
    function = ScriptedFunction(script)
    sent: list[dict[str, Any]] = []
    source = StreamEventSource(
        settings,
        ScriptedReader(records),  # type: ignore[arg-type]
        function,
        sent.append,
        function_arn="arn:aws:lambda:af-south-1:123456789012:function:ReconcilerFunction",
        retry_delay_seconds=0,
    )
    source._flush_until = 10**9  # no batching window in a scripted run
    source.poll_once()
    return function, sent, source


def test_only_records_that_pass_the_filter_are_sent_in_batches_of_the_batch_size() -> None:
    records = [stream_record(n, "MODIFY" if n % 3 == 0 else "INSERT") for n in range(1, 10)]
    function, sent, source = run_source(records, [], batch_size=4)
    assert function.batches == [[1, 2, 4, 5], [7, 8]]
    assert source.stats.records_filtered_out == 3 and not sent


def test_a_partial_failure_is_retried_from_the_lowest_failed_record() -> None:
    function, sent, _ = run_source([stream_record(n) for n in range(1, 6)], [[4, 2], "ok"])
    assert function.batches == [[1, 2, 3, 4, 5], [2, 3, 4, 5]]
    assert not sent


def test_a_function_error_bisects_the_batch_and_retries_each_half() -> None:
    function, sent, source = run_source(
        [stream_record(n) for n in range(1, 5)], ["error", "error", "ok", "ok"]
    )
    assert function.batches == [[1, 2, 3, 4], [1, 2], [1], [2], [3, 4]]
    assert source.stats.bisections == 2 and not sent


def test_an_unusable_failure_report_fails_the_whole_batch() -> None:
    function, _, _ = run_source(
        [stream_record(n) for n in range(1, 3)], ["garbled", "ok", "ok"], bisect_on_function_error=False
    )
    assert function.batches == [[1, 2], [1, 2]]


def test_when_the_retries_are_spent_the_batch_metadata_goes_to_the_failure_destination() -> None:
    function, sent, _ = run_source([stream_record(n) for n in range(1, 4)], [[2]] * 10)
    assert function.batches == [[1, 2, 3], [2, 3], [2, 3], [2, 3]]  # the first try and three retries
    [message] = sent
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["approximateInvokeCount"] == 4
    info = message["DDBStreamBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == ("1002", "1003", 2)
    assert info["streamArn"] == ScriptedReader.stream_arn and info["shardId"] == "shardId-1"


def test_records_older_than_the_maximum_age_go_to_the_failure_destination_unsent() -> None:
    records = [stream_record(1, age_seconds=120), stream_record(2)]
    function, sent, _ = run_source(records, [], maximum_record_age_seconds=60)
    assert function.batches == [[2]]
    assert [message["requestContext"]["condition"] for message in sent] == ["RecordAgeExceeded"]


def test_a_record_that_keeps_failing_ends_in_the_failure_queue_and_the_redrive_applies_it() -> None:
    # In this process (one invocation at a time): the test hooks the functions' own DynamoDB client.
    settings = quick_settings(parameter_overrides={"ReconcilerMaximumRetryAttempts": "2"}, in_process=True)
    with (
        running_stack(settings) as stack,
        httpx.Client(base_url=stack.api_url, trust_env=False) as api,
        httpx.Client(base_url=stack.sandbox_url, trust_env=False) as moment,
    ):
        from moment_sync import runtime

        call(api.put, "/customers/UCR7", json={"currency": "ZAR"})
        call(api.post, "/customers/UCR7/charges", json={"id": "C1", "amount": 5000})
        assert stack.push_now().response["results"] == {"created": 1}
        blocked = {"on": True}

        def throttle_payments(model: Any, params: dict[str, Any], **_: Any) -> None:
            if blocked["on"] and _is_payment(params):
                reasons = [{"Code": "ThrottlingError"}, {"Code": "None"}, {"Code": "None"}]
                raise ClientError(
                    {"Error": {"Code": "TransactionCanceledException"}, "CancellationReasons": reasons},
                    "TransactWriteItems",
                )

        runtime.aws_client("dynamodb").meta.events.register(
            "before-parameter-build.dynamodb.TransactWriteItems", throttle_payments
        )
        paid = moment.post("/_sandbox/payments", json={"customer": "UCR7", "amount": 1500}).json()
        assert stack.wait_until_quiet(20)
        [message] = stack.failure_queue_messages()
        assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
        assert message["requestContext"]["approximateInvokeCount"] == 3
        assert message["DDBStreamBatchInfo"]["batchSize"] == 1
        assert stack.stream.stats.records_filtered_out == 0  # nothing was reconciled, so nothing MODIFYed
        assert api.get(f"/events/{paid['webhook_id']}").json()["status"] == "received"

        blocked["on"] = False
        report = stack.redrive_now(grace_seconds=0).response
        assert report["outcomes"] == {"applied": 1}
        assert api.get(f"/events/{paid['webhook_id']}").json()["status"] == "applied"
        assert api.get("/customers/UCR7").json()["balance"] == 3500


def _is_payment(params: dict[str, Any]) -> bool:
    first = params.get("TransactItems", [{}])[0]
    return str(first.get("Put", {}).get("Item", {}).get("entry_id", {}).get("S", "")).startswith("payment:")


# --- events/ and env.json -------------------------------------------------------------------------


def load_event(path: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / path).read_text())
    return event


def test_every_events_file_drives_its_handler() -> None:
    import webhook_receiver_handler
    from local_stack.lambda_context import LocalLambdaContext
    from moment_sync import runtime
    from moment_sync.adapters.ledger_table import LedgerTable
    from moment_sync.ledger.model import BalanceKind, BalanceRef

    with running_stack(quick_settings()) as stack:
        stack.stream.stop()  # the stream batch in events/ is what this test sends the reconciler
        functions = stack.functions
        # The ledger API request creates UCR1001; with a charge, the scheduled push creates it on Moment.
        answer = functions.invoke("LedgerApiFunction", load_event("ledger_api/put-customer.json"))
        assert answer.response["statusCode"] == 201, answer
        call(httpx.post, f"{stack.api_url}/customers/UCR1001/charges", json={"id": "C1", "amount": 5000})
        pushed = functions.invoke("BalancePusherFunction", load_event("balance_pusher/scheduled.json"))
        assert pushed.response["results"] == {"created": 1}, pushed
        assert stack.sandbox.state()["customers"][0]["external_reference"] == "UCR1001"

        # The sample webhook pays the customer Moment calls bcus_H4jp…: the ledger's UCR2000.
        webhook = load_event("webhook_receiver/moment-webhook.json")
        moment_id = json.loads(webhook["body"])["data"]["customer_id"]
        call(httpx.put, f"{stack.api_url}/customers/UCR2000", json={"currency": "ZAR"})
        ledger = LedgerTable(stack.client("dynamodb"), stack.names["LedgerTable"])
        ledger.link_moment_id(BalanceRef(BalanceKind.CUSTOMER, "UCR2000"), moment_id)

        # The signed webhook, at the time it was signed (make sign-webhook-event signs it afresh).
        with functions.environment_of("WebhookReceiverFunction"):
            signed_at = int(webhook["headers"]["webhook-timestamp"])
            dependencies = replace(runtime.receiver_dependencies(), clock=lambda: signed_at + 2)
            received = webhook_receiver_handler.lambda_handler(
                webhook, LocalLambdaContext("WebhookReceiverFunction"), dependencies
            )
        assert json.loads(received["body"])["status"] == "accepted"

        # The stream record that storing it made, as Lambda sends it.
        batch = load_event("reconciler/stream-batch.json")
        image = batch["Records"][0]["dynamodb"]["NewImage"]
        assert image["webhook_id"]["S"] == webhook["headers"]["webhook-id"]
        assert base64.b64decode(image["body"]["B"]) == webhook["body"].encode()
        reconciled = functions.invoke("ReconcilerFunction", batch)
        assert reconciled.response == {"batchItemFailures": []}, reconciled
        view = httpx.get(f"{stack.api_url}/customers/UCR2000", trust_env=False).json()
        assert view["balance"] == -2000 and view["entries"][0]["kind"] == "payment"

        redriven = functions.invoke("RedriveFunction", load_event("redrive/scheduled.json"))
        assert redriven.response["examined"] == 0, redriven
        for logical_id in set(scheduled_functions()) - {"BalancePusherFunction", "RedriveFunction"}:
            if functions.has(logical_id):  # any other scheduled function takes its file too
                event = load_event(f"{function_folder(logical_id)}/scheduled.json")
                invocation = functions.invoke(logical_id, event)
                assert not invocation.failed, invocation


def test_env_json_is_what_make_local_gives_each_function() -> None:
    env_json = json.loads((EVENTS / "env.json").read_text())
    assert env_json == env_file(), "run: python -m local_stack.sample_events"
    settings = quick_settings()
    with running_stack(settings) as stack:
        for logical_id, given in stack.functions.environments.items():
            variables, expected = dict(given), dict(env_json[logical_id])
            assert expected.pop("AWS_ENDPOINT_URL") == "http://host.docker.internal:5000"
            # The template declares it empty for sam local; the stack's functions must get moto.
            assert variables.pop("AWS_ENDPOINT_URL") == stack.aws_endpoint
            if logical_id == "PushDispatcherFunction":  # its workers start through the stack's Lambda API
                assert variables.pop("AWS_ENDPOINT_URL_LAMBDA").startswith("http://127.0.0.1:")
            if "MOMENT_BASE_URL" in expected:  # make local's sandbox port, and this stack's
                assert expected.pop("MOMENT_BASE_URL") == "http://host.docker.internal:4010"
                assert variables.pop("MOMENT_BASE_URL") == stack.sandbox_url
            assert set(variables) == set(expected), logical_id
            for name, value in expected.items():
                if name.endswith("_SECRET_ARN"):  # env.json names the secret; the stack passes its ARN
                    assert f":secret:{value}-" in variables[name], name
                else:
                    assert variables[name] == value, (logical_id, name)


# --- make local -------------------------------------------------------------------------------------


def test_python_m_local_stack_says_where_it_is_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "shared"), str(ROOT / "local")]),
        "LOCAL_API_PORT": "0",
        "LOCAL_SANDBOX_PORT": "0",
        "LOCAL_AWS_PORT": "0",
        "LOCAL_FUNCTION_LOG": str(tmp_path / "functions.jsonl"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "local_stack"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    try:
        lines = list(_lines_until(process, "Ready.", timeout=30))
        api = next(line.removeprefix("API: ") for line in lines if line.startswith("API: "))
        assert api.startswith("http://127.0.0.1:")
        assert any(line.startswith("Moment sandbox: http://127.0.0.1:") for line in lines), lines
        assert any("moment-sync --local" in line for line in lines), lines  # how to point the CLI at it
        status = httpx.get(f"{api}/_local/status", trust_env=False).json()
        assert status["schedules"]["PushDispatcherFunction"]["interval_seconds"] == 5.0
    except BaseException:
        process.kill()  # a failed check must not leave the stack running
        process.communicate(timeout=30)
        raise
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    assert out.rstrip().endswith("stopped")


def _lines_until(process: subprocess.Popen[str], marker: str, timeout: float) -> Iterator[str]:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"python -m local_stack exited with {process.wait()}")
        yield line.rstrip("\n")
        if line.startswith(marker):
            return
    process.kill()
    raise AssertionError("python -m local_stack never said it was ready")
