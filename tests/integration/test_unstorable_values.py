"""Values DynamoDB or boto3 cannot hold never poison the money path.

A validly signed webhook may carry anything. What the receiver copies into the stored summary must
be writable by DynamoDB and readable by boto3, and the summary alone decides: an amount of 39 digits,
or a lone surrogate in an id, is stored and parked `invalid`, never refused with a 5xx (Moment would
retry it for days, then drop it) and never a record that raises on every read. One bad event never
stops a re-drive run or a stream batch.

moto does not enforce DynamoDB's number limits, so `dynamodb_limits` refuses here what DynamoDB
refuses: more than 38 significant digits, a magnitude outside 1E-130..9.99…E+125, and text that is
not UTF-8.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import webhook_receiver_handler as webhook_receiver
from local_stack.lambda_context import LocalLambdaContext
from moment_sync.adapters.webhook_events_table import envelope_of, event_from_item, webhook_item
from moment_sync.envelope import read_envelope
from moment_sync.receiver import ReceiverSettings
from moment_sync.reconciliation import ParkReason, decide
from moment_sync.redrive import redrive
from moment_sync.runtime import ReceiverDependencies
from moment_sync.webhook_store import ReceivedWebhook
from support import dynamodb_limits
from support.ledger import LedgerHarness, payment
from support.webhooks import NOW, TEST_SECRET, key_bytes, webhook_event

THIRTY_NINE_DIGITS = 123_456_789_012_345_678_901_234_567_890_123_456_789
_LARGEST = Decimal("9.9999999999999999999999999999999999999E+125")
_SMALLEST = Decimal("1E-130")


def dynamodb_refuses(value: Any) -> str | None:
    """Why DynamoDB (or boto3 on the way to it) would refuse an attribute value, or None."""
    if isinstance(value, dict):
        if set(value) == {"N"} and isinstance(value["N"], str):
            return _number_problem(value["N"])
        if set(value) == {"NS"}:
            return next(filter(None, map(_number_problem, value["NS"])), None)
        if set(value) == {"S"} and isinstance(value["S"], str):
            return _text_problem(value["S"])
        return next(filter(None, map(dynamodb_refuses, value.values())), None)
    if isinstance(value, list):
        return next(filter(None, map(dynamodb_refuses, value)), None)
    return None


def _number_problem(text: str) -> str | None:
    try:
        number = Decimal(text)  # the constructor is exact: no context, no rounding
    except InvalidOperation:
        return f"{text!r} is not a number"
    if not number.is_finite():
        return f"{text!r} is not a number"
    if number == 0:
        return None
    significant = "".join(map(str, number.as_tuple().digits)).strip("0")
    if len(significant) > 38:
        return "Attempting to store more than 38 significant digits in a Number"
    if not _SMALLEST <= abs(number) <= _LARGEST:
        return "Number overflow. Attempting to store a number with magnitude outside the supported range"
    return None


def _text_problem(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "text that is not UTF-8"
    return None


def refuse_what_dynamodb_refuses(client: Any) -> None:
    def check(params: dict[str, Any], model: Any, **_: Any) -> None:
        problem = dynamodb_refuses(params)
        if problem is not None:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": problem}}, model.name)

    client.meta.events.register("before-parameter-build.dynamodb", check)


def test_the_limits_check_refuses_what_dynamodb_refuses() -> None:
    assert dynamodb_refuses({"N": "1" * 38}) is None
    assert dynamodb_refuses({"N": "1" + "0" * 100}) is None  # one significant digit
    assert dynamodb_refuses({"N": "1" * 39}) is not None
    assert dynamodb_refuses({"N": "1E+126"}) is not None
    assert dynamodb_refuses({"N": "1E-131"}) is not None
    assert dynamodb_refuses({"Item": {"a": {"M": {"b": {"N": "2" * 40}}}}}) is not None
    assert dynamodb_refuses({"S": "x\ud800"}) is not None


@pytest.fixture
def harness(dynamodb: Any) -> LedgerHarness:
    return LedgerHarness(dynamodb)


@pytest.fixture
def strict_harness(harness: LedgerHarness) -> LedgerHarness:
    refuse_what_dynamodb_refuses(harness.dynamodb)
    return harness


def deliver(harness: LedgerHarness, webhook_id: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """A validly signed delivery through the real receiver handler, into the harness's table."""
    dependencies = ReceiverDependencies(
        keys=lambda: [key_bytes(TEST_SECRET)],
        store=harness.events,
        settings=ReceiverSettings(),
        clock=lambda: NOW + 0.25,
    )
    response = webhook_receiver.lambda_handler(
        webhook_event(body, webhook_id=webhook_id), LocalLambdaContext("webhook_receiver"), dependencies
    )
    return response["statusCode"], json.loads(response["body"])


def amount_applied(data: dict[str, Any]) -> bytes:
    return json.dumps({"id": "evt_1", "type": "obligation.amount_applied", "data": data}).encode()


def test_a_39_digit_amount_is_stored_and_parked_invalid(strict_harness: LedgerHarness) -> None:
    harness = strict_harness
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    body = amount_applied(
        {"id": "ob_1", "amount": THIRTY_NINE_DIGITS, "currency": "ZAR", "customer_id": "bcus_1"}
    )

    assert deliver(harness, "msg_huge", body) == (200, {"status": "accepted", "webhook_id": "msg_huge"})
    assert harness.invoke(harness.next_batch()) == []

    event = harness.event("msg_huge")
    assert (event["status"], event["reason"]) == ("parked", ParkReason.INVALID)
    assert "data.amount" in event["reason_detail"] and "amount" not in event
    assert event["body"] == body  # the body is kept verbatim; only the summary leaves the amount out
    assert harness.head(customer)["balance"] == 0


def test_a_lone_surrogate_in_an_id_is_stored_and_parked_invalid(strict_harness: LedgerHarness) -> None:
    harness = strict_harness
    body = b'{"id":"evt_1","type":"obligation.amount_applied","data":{"id":"ob_\\ud800","amount":100,'
    body += b'"currency":"ZAR","customer_id":"bcus_1"}}'
    assert deliver(harness, "msg_surrogate", body)[0] == 200
    assert harness.invoke(harness.next_batch()) == []
    event = harness.event("msg_surrogate")
    assert (event["status"], event["reason"], event["reason_detail"]) == (
        "parked",
        ParkReason.INVALID,
        "data.id is missing",
    )


def store_unreadable(harness: LedgerHarness, webhook_id: str, customer_id: str) -> None:
    """An item as the receiver wrote it before amounts were checked, into a store that did not refuse
    it (moto, the local stack): its amount has 39 digits, and boto3 raises on reading it."""
    body = payment("ob_poison", 100, customer_id=customer_id)
    item = webhook_item(ReceivedWebhook(webhook_id, NOW, NOW, body, read_envelope(body), NOW + 86400))
    item["amount"] = {"N": str(THIRTY_NINE_DIGITS)}
    with dynamodb_limits.not_enforced():
        harness.dynamodb.put_item(TableName=harness.events_name, Item=item)


def test_an_unreadable_amount_in_a_stream_batch_is_parked_and_the_rest_applied(
    harness: LedgerHarness,
) -> None:
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_before", payment("ob_1", 100, customer_id="bcus_1"))
    store_unreadable(harness, "msg_poison", "bcus_1")
    harness.receive("msg_after", payment("ob_2", 200, customer_id="bcus_1"))

    # nothing reported: a failure would be retried, then dropped to the on-failure queue
    assert harness.invoke(harness.next_batch()) == []

    poison = harness.event("msg_poison")
    assert (poison["status"], poison["reason"]) == ("parked", ParkReason.INVALID)
    assert poison["amount"] == str(THIRTY_NINE_DIGITS)  # readable again, as text
    assert harness.head(customer)["balance"] == -300
    harness.assert_balances_equal_their_entries()


def test_an_unreadable_amount_does_not_stop_the_redrive(harness: LedgerHarness) -> None:
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    store_unreadable(harness, "msg_poison", "bcus_1")
    harness.receive("msg_missed", payment("ob_2", 200, customer_id="bcus_1"))
    harness.next_batch()  # both stream records lost: the events stay received

    # by id, as an operator re-drives (moto's own index query cannot read such an item either)
    report = redrive(
        ["msg_poison", "msg_missed"],
        events=harness.events,
        ledger=harness.ledger,
        directory=None,
        now=lambda: NOW + 601,
    )
    assert report.errors == []
    assert report.outcomes == {"applied": 1, "parked:invalid": 1}
    assert harness.event("msg_poison")["reason"] == ParkReason.INVALID
    assert harness.head(customer)["balance"] == -200


def test_an_event_that_cannot_be_read_is_an_error_of_its_own_and_the_run_goes_on(
    harness: LedgerHarness,
) -> None:
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    for number in (1, 2, 3):
        harness.receive(f"msg_{number}", payment(f"ob_{number}", number * 100, customer_id="bcus_1"))

    def throttle_msg_2(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key", {}).get("webhook_id", {}).get("S") == "msg_2":
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                "GetItem",
            )

    harness.dynamodb.meta.events.register("before-parameter-build.dynamodb.GetItem", throttle_msg_2)
    report = redrive(
        ["msg_1", "msg_2", "msg_3"],
        events=harness.events,
        ledger=harness.ledger,
        directory=None,
        now=lambda: NOW,
    )
    assert report.outcomes == {"applied": 2}
    assert len(report.errors) == 1 and report.errors[0].startswith("msg_2: ClientError")
    assert harness.head(customer)["balance"] == -400


def test_an_operator_redrive_of_an_invalid_event_reads_its_body_again(harness: LedgerHarness) -> None:
    """A summary written by older code (here: without the amount it could not read) is stated again
    from the stored body when an operator re-drives the event; then the summary decides."""
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    body = payment("ob_1", 300, customer_id="bcus_1")
    item = webhook_item(ReceivedWebhook("msg_1", NOW, NOW, body, read_envelope(body), NOW + 86400))
    del item["amount"]
    harness.dynamodb.put_item(TableName=harness.events_name, Item=item)
    harness.invoke(harness.next_batch())
    assert harness.event("msg_1")["reason"] == ParkReason.INVALID

    report = redrive(["msg_1"], events=harness.events, ledger=harness.ledger, directory=None, now=lambda: NOW)
    assert report.outcomes == {"applied": 1}
    assert harness.event("msg_1")["amount"] == 300 and harness.head(customer)["balance"] == -300

    # a body that is still unreadable stays parked invalid, its summary untouched
    harness.receive("msg_2", b"not json")
    harness.invoke(harness.next_batch())
    report = redrive(["msg_2"], events=harness.events, ledger=harness.ledger, directory=None, now=lambda: NOW)
    assert report.outcomes == {"parked:invalid": 1}
    assert harness.event("msg_2")["envelope_problem"] == "body is not JSON"


_ids = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), min_size=0, max_size=6),
    st.integers(),
    st.none(),
)
_amounts = st.one_of(
    st.integers(min_value=-(10**45), max_value=10**45),
    st.integers(min_value=1, max_value=99_999_999),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.fixed_dictionaries(
        {},
        optional={
            "id": _ids,
            "amount": _amounts,
            "currency": st.sampled_from(["ZAR", "USD", "EUR", "", 7]),
            "customer_id": _ids,
            "account_id": _ids,
            "bill_id": _ids,
            "payment_id": _ids,
        },
    ),
    event_type=st.sampled_from(["obligation.amount_applied", "customer.updated", None, 3]),
)
def test_every_stored_summary_fits_dynamodb_and_decides_as_its_body(
    data: dict[str, Any], event_type: Any
) -> None:
    body = json.dumps({"id": "evt_1", "type": event_type, "data": data}).encode()
    envelope = read_envelope(body)
    item = webhook_item(ReceivedWebhook("msg_1", NOW, NOW, body, envelope, NOW + 86400))
    assert dynamodb_refuses(item) is None
    stored = event_from_item(item)
    assert decide(envelope_of(stored)) == decide(envelope)
    # and after `forget`, without the body, the same
    del stored["body"]
    assert decide(envelope_of(stored)) == decide(envelope)


def test_an_application_id_too_long_for_a_sort_key_is_parked_not_retried(harness: LedgerHarness) -> None:
    """255 characters of 4-byte UTF-8 are 1,020 bytes: the entry's sort key (`ENTRY#<time>#payment:<id>`)
    would pass DynamoDB's 1,024-byte limit and every try of its transaction be refused."""
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_long_id", payment("\U0001f4b0" * 255, 100, customer_id="bcus_1"))
    harness.receive("msg_after", payment("ob_2", 200, customer_id="bcus_1"))

    assert harness.invoke(harness.next_batch()) == []

    long_id = harness.event("msg_long_id")
    assert (long_id["status"], long_id["reason"]) == ("parked", ParkReason.INVALID)
    assert harness.head(customer)["balance"] == -200
