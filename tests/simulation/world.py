"""One simulated deployment: moto in-process, the real handlers and use cases, the Moment model, a
simulated clock, and the bookkeeping the invariants are checked against. No HTTP, no threads, no wall
clock: every function runs inline when the state machine says so.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import random
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3
import yaml
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID as MOTO_ACCOUNT
from moto.dynamodb.models import dynamodb_backends

import balance_pusher_handler
import ledger_api_handler
import reconciler_handler
import redrive_handler
import webhook_receiver_handler
from local_stack.api_gateway import build_event
from local_stack.event_source import MappingSettings, StreamEventSource
from local_stack.functions import Invocation
from local_stack.lambda_context import LocalLambdaContext
from local_stack.made_up_values import LOCAL_MOMENT_API_KEY
from local_stack.streams import StreamReader
from local_stack.template import TEMPLATE_PATH, Intrinsics, create_table
from moment_sync import operator_links, push_run, runtime
from moment_sync.adapters.dynamo_items import from_item
from moment_sync.adapters.ledger_table import LedgerTable
from moment_sync.adapters.moment_directory import MomentClientDirectory
from moment_sync.adapters.webhook_events_table import WebhookEventsTable
from moment_sync.forget import forget_customer
from moment_sync.ledger.service import LedgerProblem
from moment_sync.moment_client import MomentClient
from moment_sync.observability import logger, metrics
from moment_sync.pusher import BalancePusher
from moment_sync.receiver import ReceiverSettings
from moment_sync.runtime import LedgerDependencies, ReceiverDependencies
from simulation.moment import MomentModel, MomentPlan
from simulation.storage import Crash, Storage, StoragePlan
from support import dynamodb_limits
from support.ledger_api import template_routes
from support.webhooks import NOW, OTHER_SECRET, TEST_SECRET, key_bytes, webhook_event

FAILURE_QUEUE_ARN = "arn:aws:sqs:af-south-1:123456789012:ReconcilerFailureQueue"


class SimClock:
    """Simulated Unix seconds: moves only when the simulation (or a retry's sleep) moves it."""

    def __init__(self, start: float = NOW) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


@dataclass
class SimContext:
    """A Lambda context whose remaining time is measured on the simulated clock."""

    function_name: str
    clock: SimClock
    timeout_seconds: float = 900.0
    started_at: float = field(init=False)
    aws_request_id: str = "sim"
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/sim"
    log_stream_name: str = "sim"

    def __post_init__(self) -> None:
        self.started_at = self.clock()

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:af-south-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (self.clock() - self.started_at)) * 1000))


class InlineExecutor:
    """The pusher's pool, one push at a time on the caller's thread: a Crash unwinds the whole run."""

    def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "") -> None:
        del max_workers, thread_name_prefix

    def __enter__(self) -> InlineExecutor:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def submit(self, function: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(function(*args))
        except Exception as error:  # as a worker thread would hand it back
            future.set_exception(error)
        return future


@dataclass
class Message:
    """A webhook Moment still has to deliver (Moment retries until it gets a 2xx)."""

    webhook_id: str
    body: bytes
    deliveries: int = 0


@dataclass
class Invoked:
    result: Any = None
    crashed: str | None = None
    error: str | None = None  # an exception out of the handler: Lambda's function error
    metrics: Counter[str] = field(default_factory=Counter)


def alarmed_metrics() -> set[str]:
    """Every metric name an alarm in template.yaml watches."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template = yaml.load(TEMPLATE_PATH.read_text(), Loader=Loader)  # noqa: S506 -- SafeLoader subclass
    names = set()
    for resource in template["Resources"].values():
        if resource.get("Type") == "AWS::CloudWatch::Alarm":
            properties = resource.get("Properties") or {}
            if properties.get("MetricName"):
                names.add(properties["MetricName"])
            for query in properties.get("Metrics") or []:
                metric = (query.get("MetricStat") or {}).get("Metric") or {}
                if metric.get("MetricName"):
                    names.add(metric["MetricName"])
    return names


class World:
    def __init__(self, seed: int, moment_lowers_balances: bool) -> None:
        self.seed = seed
        self.random = random.Random(seed)
        self.clock = SimClock()
        self.violations: list[str] = []
        self.function_errors: list[str] = []
        self.metrics: Counter[str] = Counter()
        self.outbox: list[Message] = []
        self.messages_made = 0
        self.forged_made = 0
        self.recent_records: list[dict[str, Any]] = []
        self.failure_queue: list[dict[str, Any]] = []
        self.charges_acknowledged: dict[str, tuple[str, int]] = {}  # charge id -> (path, amount)
        self.merchant_retries: list[tuple[str, str, dict[str, Any]]] = []
        self.charges_made = 0
        self.bodies: dict[str, bytes] = {}  # application id -> the genuine webhook body
        self._patches: list[tuple[Any, str, Any]] = []

        self._mock = mock_aws()
        self._mock.start()
        runtime.reset()
        metrics.clear_metrics()
        self._log_level = logger.log_level
        logger.setLevel("CRITICAL")
        self.checker = _client("checker")  # the checks' own reads: no hooks, no faults
        self.client = _client("functions")
        self.storage = Storage()
        dynamodb_limits.BREACHES.take()
        _STORAGE[0] = self.storage
        self.events_table = create_table(self.checker, "WebhookEventsTable", "WebhookEvents")
        self.ledger_table = create_table(self.checker, "LedgerTable", "Ledger")
        self.events = WebhookEventsTable(self.client, self.events_table)
        self.ledger = LedgerTable(self.client, self.ledger_table, self.events)
        self.dependencies = LedgerDependencies(events=self.events, ledger=self.ledger, clock=self.clock)
        self.moment = MomentModel(
            api_key=LOCAL_MOMENT_API_KEY,
            random=self.random,
            lowers_balances=moment_lowers_balances,
            on_erased=lambda what: self.violate(4, what),
        )
        self.moment.ledger_has = self.ledger_has_payment
        self.moment_client = MomentClient(
            LOCAL_MOMENT_API_KEY,
            environment="dev",
            transport=self.moment.transport(),
            sleep=self.clock.advance,
            jitter=self.random.random,
            clock=self.clock,
        )
        self.pusher = BalancePusher(
            ledger=self.ledger,
            moment=self.moment_client,
            now=self.clock,
            concurrency=1,
            jitter=self.random.random,
            events=self.events,  # as deployed (runtime.balance_pusher): a link re-drives, a first push waits
        )
        self.receiver = ReceiverDependencies(
            keys=lambda: [key_bytes(TEST_SECRET)],
            store=self.events,
            settings=ReceiverSettings(),
            clock=self.clock,
        )
        self._patch(push_run, "ThreadPoolExecutor", InlineExecutor)  # the pushers' run loop, inline
        self._patch(operator_links, "time", _SimTime(self.clock))
        self._patch(
            redrive_handler, "moment_directory", lambda: MomentClientDirectory(lambda: self.moment_client)
        )
        intrinsics = Intrinsics({}, {("ReconcilerFailureQueue", "Arn"): FAILURE_QUEUE_ARN})
        self._reconciler_plan: StoragePlan | None = None
        self._reconciler_fails = False  # every invocation dies (poll_stream_failing)
        self.stream = StreamEventSource(
            settings=MappingSettings.from_template("ReconcilerFunction", "WebhookStream", intrinsics),
            reader=StreamReader(_client("streams"), self.checker, self.events_table),
            invoke=self._invoke_reconciler,
            send_to_destination=self.failure_queue.append,
            function_arn="arn:aws:lambda:af-south-1:123456789012:function:reconciler",
            retry_delay_seconds=0.0,
            max_retry_delay_seconds=0.0,
            clock=self.clock,
        )

    def close(self) -> None:
        for owner, name, original in reversed(self._patches):
            setattr(owner, name, original)
        self.moment_client.close()
        self.moment.close()
        logger.setLevel(self._log_level)
        metrics.clear_metrics()
        runtime.reset()
        _STORAGE[0] = None
        self._mock.stop()

    def _patch(self, owner: Any, name: str, value: Any) -> None:
        self._patches.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    # --- what went wrong ------------------------------------------------------------------------

    def violate(self, invariant: int, what: str) -> None:
        self.violations.append(f"invariant {invariant}: {what}")

    def _take_breaches(self) -> None:
        for breach in dynamodb_limits.BREACHES.take():
            self.violate(7, f"DynamoDB would refuse: {breach}")

    # --- running a function ---------------------------------------------------------------------

    def invoke(
        self,
        name: str,
        call: Callable[[], Any],
        storage: StoragePlan | None = None,
        moment: MomentPlan | None = None,
    ) -> Invoked:
        """One Lambda invocation: faults armed for it, its EMF metrics collected, a crash unwinding it."""
        self.storage.arm(storage or StoragePlan())
        self.moment.arm(moment or MomentPlan())
        printed = io.StringIO()
        invoked = Invoked()
        try:
            with contextlib.redirect_stdout(printed):
                invoked.result = call()
        except Crash as crash:
            invoked.crashed = str(crash)
            metrics.clear_metrics()  # a dead execution environment flushes nothing
        except Exception as error:
            invoked.error = f"{name}: {type(error).__name__}: {error}"
            self.function_errors.append(invoked.error)
        finally:
            self.storage.disarm()
            self.moment.disarm()
            self._take_breaches()
        for line in printed.getvalue().splitlines():
            if not line.startswith('{"_aws"'):
                continue
            document = json.loads(line)
            for directive in document["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    value = document.get(metric["Name"], 0)
                    total = sum(value) if isinstance(value, list) else value
                    invoked.metrics[metric["Name"]] += int(total)
        self.metrics.update(invoked.metrics)
        return invoked

    # --- the receiver -----------------------------------------------------------------------------

    def new_message(self, body: bytes) -> Message:
        self.messages_made += 1
        message = Message(f"msg_sim{self.messages_made:06d}", body)
        self.outbox.append(message)
        return message

    def deliver(self, message: Message, storage: StoragePlan | None = None) -> int | None:
        """Moment delivers a webhook (signed afresh, as each attempt is); the answer's status."""
        message.deliveries += 1
        event = webhook_event(message.body, webhook_id=message.webhook_id, timestamp=int(self.clock()))
        invoked = self.invoke(
            "webhook_receiver",
            lambda: webhook_receiver_handler.lambda_handler(
                event, SimContext("webhook_receiver", self.clock), self.receiver
            ),
            storage,
        )
        if invoked.result is None:
            return None
        status = int(invoked.result["statusCode"])
        if 200 <= status < 300:
            stored = self._stored_event(message.webhook_id)
            if stored is None:
                self.violate(1, f"{message.webhook_id} answered {status} but is not stored")
            elif "body" in stored and bytes(stored["body"]) != message.body:
                self.violate(1, f"{message.webhook_id}: the stored body is not the one signed")
        elif 400 <= status < 500:
            self.violate(1, f"a validly signed webhook {message.webhook_id} was refused with {status}")
        return status

    def deliver_forged(self, body: bytes) -> None:
        self.forged_made += 1
        webhook_id = f"msg_forged{self.forged_made:06d}"
        event = webhook_event(body, webhook_id=webhook_id, timestamp=int(self.clock()), secret=OTHER_SECRET)
        invoked = self.invoke(
            "webhook_receiver",
            lambda: webhook_receiver_handler.lambda_handler(
                event, SimContext("webhook_receiver", self.clock), self.receiver
            ),
        )
        if invoked.result is not None and int(invoked.result["statusCode"]) < 400:
            self.violate(1, f"a forged webhook was answered {invoked.result['statusCode']}")
        if self._stored_event(webhook_id) is not None:
            self.violate(1, "a forged webhook was stored")

    def _stored_event(self, webhook_id: str) -> dict[str, Any] | None:
        item = self.checker.get_item(
            TableName=self.events_table, Key={"webhook_id": {"S": webhook_id}}, ConsistentRead=True
        ).get("Item")
        return _plain(item) if item else None

    # --- the stream and the reconciler ------------------------------------------------------------

    def poll_stream(self, storage: StoragePlan | None = None) -> None:
        """Lambda polls the shard: what is new waits out the batching window, then goes in batches."""
        self._reconciler_plan = storage
        self.clock.advance(self.stream.settings.batching_window_seconds)
        self.stream.poll_once()
        self._reconciler_plan = None

    def poll_stream_failing(self) -> None:
        """Lambda polls the shard while every reconciler invocation dies before its first DynamoDB call
        (a broken deploy, an outage longer than the retries): the mapping retries, bisects, and gives the
        records up to the failure queue; their events stay `received` for the re-drive."""
        self._reconciler_fails = True
        try:
            for _ in range(2):  # a record read by one poll is sent after the batching window, by the next
                self.poll_stream()
        finally:
            self._reconciler_fails = False

    def _invoke_reconciler(self, event: dict[str, Any]) -> Invocation:
        plan, self._reconciler_plan = self._reconciler_plan, None  # the faults hit the first invocation
        if self._reconciler_fails:
            plan = StoragePlan(crash_at=1)
        invoked = self.invoke(
            "reconciler",
            lambda: reconciler_handler.lambda_handler(
                event, SimContext("reconciler", self.clock, 60.0), self.dependencies
            ),
            plan,
        )
        if invoked.crashed or invoked.error:
            return Invocation("reconciler", error=invoked.crashed or invoked.error)
        self.recent_records = (self.recent_records + list(event["Records"]))[-30:]
        return Invocation("reconciler", response=invoked.result)

    def redeliver_record(self, pick: int) -> None:
        """A stream record delivered again (Lambda's delivery is at least once)."""
        if self.recent_records:
            record = self.recent_records[pick % len(self.recent_records)]
            self._invoke_reconciler({"Records": [record]})

    # --- the scheduled functions ------------------------------------------------------------------

    def push(self, storage: StoragePlan | None = None, moment: MomentPlan | None = None) -> Invoked:
        invoked = self.invoke(
            "balance_pusher",
            lambda: balance_pusher_handler.lambda_handler(
                {}, SimContext("balance_pusher", self.clock), self.pusher
            ),
            storage,
            moment,
        )
        report = invoked.result
        if isinstance(report, dict):
            failed = int(report.get("results", {}).get("failed", 0))
            counted = invoked.metrics.get("PushFailed", 0)
            if failed > counted:
                self.violate(
                    6,
                    f"a push run reported {failed} failed push(es) but counted {counted} PushFailed "
                    f"(the alarm never sees them): {report.get('errors')}",
                )
        return invoked

    def push_when_due(self, moment: MomentPlan | None = None, storage: StoragePlan | None = None) -> Invoked:
        """The scheduled push run once every balance backing off is due again."""
        due = [
            datetime.fromisoformat(str(head["next_push_at"]).replace("Z", "+00:00")).timestamp()
            for head in self.scan(self.ledger_table)
            if head["sk"] == "HEAD" and head.get("next_push_at") and "push_shard" in head
        ]
        self.clock.advance(max(due, default=0.0) - self.clock() + 1)
        return self.push(storage, moment)

    def redrive(
        self, operator: bool = False, storage: StoragePlan | None = None, moment: MomentPlan | None = None
    ) -> Invoked:
        event = {"ignore_backoff": True} if operator else {}
        return self.invoke(
            "redrive",
            lambda: redrive_handler.lambda_handler(
                event, SimContext("redrive", self.clock), self.dependencies
            ),
            storage,
            moment,
        )

    # --- the merchant and the operator ----------------------------------------------------------------

    def api(
        self, method: str, path: str, body: dict[str, Any] | None = None, storage: StoragePlan | None = None
    ) -> tuple[int | None, dict[str, Any]]:
        payload = json.dumps(body).encode() if body is not None else b""
        route, parameters = _route_for(method, path)
        event = build_event(
            route,
            method,
            path,
            "",
            {"content-type": "application/json", "host": "ledger.sim", "user-agent": "simulation"},
            payload,
            parameters,
            "127.0.0.1",
        )
        invoked = self.invoke(
            "ledger_api",
            lambda: ledger_api_handler.lambda_handler(
                event, LocalLambdaContext("ledger_api"), self.dependencies
            ),
            storage,
        )
        if invoked.result is None:
            return None, {}
        return int(invoked.result["statusCode"]), json.loads(invoked.result["body"] or "{}")

    def charge(self, path: str, amount: int, storage: StoragePlan | None = None) -> None:
        self.charges_made += 1
        charge = {"id": f"ch-{self.charges_made}", "amount": amount, "description": "simulated"}
        self._send_charge(path, charge, storage)

    def _send_charge(self, path: str, charge: dict[str, Any], storage: StoragePlan | None = None) -> None:
        status, _ = self.api("POST", f"{path}/charges", charge, storage)
        if status in (200, 201):
            self.charges_acknowledged[charge["id"]] = (path, charge["amount"])
        elif status is None or status >= 500:  # no answer: the merchant sends it again later
            self.merchant_retries.append(("POST", path, charge))

    def retry_merchant(self) -> None:
        retries, self.merchant_retries = self.merchant_retries, []
        for _method, path, charge in retries:
            self._send_charge(path, charge)

    def forget(self, ref: str, storage: StoragePlan | None = None) -> Invoked:
        def erase() -> Any:
            try:
                return forget_customer(self.ledger, self.events, ref, self.clock())
            except LedgerProblem as refused:
                return refused

        return self.invoke("forget", erase, storage)

    def adopt(self, kind: str, ref: str, moment_wins: bool) -> Invoked:
        """The operator's `adopt KIND REF --ledger-wins|--moment-wins` on a held adoption."""
        arguments = argparse.Namespace(
            kind=kind, ref=ref, all_held=False, moment_wins=moment_wins, ledger_wins=not moment_wins
        )

        def decide() -> Any:
            try:
                return operator_links.adopt(arguments, self.ledger, self.moment_client, io.StringIO())
            except operator_links.LinkRefused as refused:
                return refused

        return self.invoke("operator", decide)

    # --- the ledger as it is (the checks' reads) -----------------------------------------------------

    def scan(self, table: str) -> list[dict[str, Any]]:
        """Every item of `table`, read from moto's in-process store: what a consistent Scan returns,
        without serialising every item to JSON and back (seconds per step once a burst is stored)."""
        stored = dynamodb_backends[MOTO_ACCOUNT]["af-south-1"].get_table(table)
        return [
            _plain({name: _wire(value) for name, value in item.attrs.items()}) for item in stored.all_items()
        ]

    def ledger_has_payment(self, application_id: str) -> bool:
        for payment in self.moment.payments:
            if payment.application_id == application_id:
                mapping = self.checker.get_item(
                    TableName=self.ledger_table,
                    Key={"pk": {"S": f"MOMENT#{payment.moment_id}"}, "sk": {"S": "MOMENT"}},
                    ConsistentRead=True,
                ).get("Item")
                if not mapping:
                    return False
                # Entries are keyed by time too (ENTRY#<created_at>#<entry id>): found by their id.
                found = self.checker.query(
                    TableName=self.ledger_table,
                    KeyConditionExpression="pk = :pk AND begins_with(sk, :entry)",
                    FilterExpression="entry_id = :id",
                    ExpressionAttributeValues={
                        ":pk": mapping["balance_pk"],
                        ":entry": {"S": "ENTRY#"},
                        ":id": {"S": f"payment:{application_id}"},
                    },
                    ConsistentRead=True,
                ).get("Items")
                return bool(found)
        return False


class _SimTime:
    """`time` as the operator's commands use it, on the simulated clock."""

    def __init__(self, clock: SimClock) -> None:
        self.time = clock


_CLIENTS: dict[str, Any] = {}
_STORAGE: list[Storage | None] = [None]  # the world running now: the functions' client's hooks go to it


def _client(role: str) -> Any:
    """boto3 clients made once per process (a new one costs ~0.2 s); moto's mock, started per world,
    intercepts them all and starts each world with empty tables."""
    if role not in _CLIENTS:
        _CLIENTS[role] = boto3.client("dynamodbstreams" if role == "streams" else "dynamodb")
        if role == "functions":
            Storage.attach_dispatch(_CLIENTS[role], lambda: _STORAGE[0])
    return _CLIENTS[role]


def _wire(value: Any) -> dict[str, Any]:
    """moto's stored attribute value (a DynamoType; binary kept as base64 text or bytes) as the
    low-level client returns it."""
    if isinstance(value, dict):  # already in the wire's form
        return value
    kind, inner = value.type, value.value
    if kind == "B":
        return {"B": inner if isinstance(inner, bytes) else base64.b64decode(inner)}
    if kind == "BS":
        return {"BS": [one if isinstance(one, bytes) else base64.b64decode(one) for one in inner]}
    if kind == "L":
        return {"L": [_wire(one) for one in inner]}
    if kind == "M":
        return {"M": {name: _wire(one) for name, one in inner.items()}}
    return {kind: inner}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    """An item as plain values, tolerating numbers no Decimal context can hold (kept as text)."""
    try:
        return from_item(item)
    except Exception:
        return {name: next(iter(value.values())) for name, value in item.items()}


def _route_for(method: str, path: str) -> tuple[Any, dict[str, str]]:
    for route in template_routes():
        parameters = route.match(method, path)
        if parameters is not None:
            return route, parameters
    raise ValueError(f"no ledger API route for {method} {path}")
