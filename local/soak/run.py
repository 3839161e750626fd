"""The soak's phases, against a local stack of its own (free ports):

1. open the books: the merchant creates every customer and first account with a charge each, and the
   scheduled pusher creates them on Moment;
2. traffic under faults: Moment's payments and webhooks (with duplicates, out of order, forged and
   stale ones) and the merchant's requests, at once, while the pusher and the re-drive run on their
   schedules and every fault is on;
3. quiet: the faults stop, every delivery and request finishes, the stream drains, and the re-drive
   and the pusher run until neither has anything left to do (what AWS's schedules would do next);
4. the verdict, and the summary line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from local_stack.made_up_values import FORGER_WEBHOOK_SECRET, LOCAL_WEBHOOK_SECRET
from local_stack.stack import PUSHER, RECONCILER, LocalSettings, RunningStack, running_stack
from local_stack.workers import WorkerPlugin
from moment_sandbox import SandboxSettings
from soak.faults import KINDS, FaultRates, InjectedFaults
from soak.traffic import Deliveries, Delivery, Merchant, Moment, Sent, event_body, made_up_signature
from soak.verdict import ANNOUNCED_PAYMENTS, Verdict, judge
from soak.workload import (
    Again,
    Forged,
    OtherEvent,
    Pay,
    PayBill,
    PayStranger,
    Stale,
    WebhookStep,
    Workload,
    draw_workload,
)

Say = Callable[[str], None]
MOMENT_TIMEOUT_MS = 1_500  # the sandbox's late answers, past the read timeout the soak gives the functions
MOMENT_READ_TIMEOUT_SECONDS = "1"
REFRESH_EVERY = 50  # webhooks between looks at which balances are on Moment
SETTLE_SECONDS = 600  # a pushed balance backs off at most BACKOFF_BASE_SECONDS (60) after a few failures


@dataclass(frozen=True)
class SoakSettings:
    seed: int
    webhooks: int = 10_000
    balances: int | None = None  # None: workload.default_balances(webhooks)
    applies_payments: bool = True  # how the sandbox treats a payment (both are Moment's behaviour)
    rates: FaultRates = field(default_factory=FaultRates)
    delivery_workers: int = 4
    push_interval_seconds: float = 2.0
    redrive_interval_seconds: float = 5.0
    progress_every: int = 1_000  # webhooks between progress lines


@dataclass
class SoakResult:
    settings: SoakSettings
    workload: Workload
    sent: Sent
    verdict: Verdict
    faults: dict[str, int]
    seconds: dict[str, float]

    @property
    def ok(self) -> bool:
        return self.verdict.ok and self.sent.deliveries == self.settings.webhooks

    @property
    def rejected(self) -> int:
        return sum(count for status, count in self.sent.rejected_answers.items() if 400 <= status < 500)

    def summary(self) -> str:
        verdict = self.verdict
        announced = "yes" if verdict.payments_announced_once else "no"
        return (
            f"soak: {self.sent.deliveries} webhooks, {self.sent.duplicates} duplicates, "
            f"{self.rejected} rejected, {sum(self.faults.values())} faults injected, "
            f"{verdict.lost} lost, {verdict.double_applied} double-applied, "
            f"balances agree: {'yes' if verdict.balances_agree else 'no'}, every applied payment "
            f"announced exactly once after dedup by event_id: {announced}"
        )


def stack_settings(settings: SoakSettings, faults: InjectedFaults | None = None) -> LocalSettings:
    """The soak's local stack; with `faults`, every worker injects the soak's faults and reports them."""
    plugins = (
        (WorkerPlugin("soak.faults:in_worker", (settings.seed, settings.rates)),)
        if faults is not None
        else ()
    )
    return LocalSettings(
        api_port=0,
        sandbox_port=0,
        aws_port=0,
        push_interval_seconds=settings.push_interval_seconds,
        redrive_interval_seconds=settings.redrive_interval_seconds,
        stream_retry_delay_seconds=0.02,
        stream_batching_window_seconds=0.2,
        # The functions give up on a Moment answer after 1 s, so an injected timeout costs 1 s, not 10.
        parameter_overrides={"MomentReadTimeoutSeconds": MOMENT_READ_TIMEOUT_SECONDS},
        sandbox=SandboxSettings(applies_payments=settings.applies_payments, seed=settings.seed),
        worker_plugins=plugins,
        on_worker_report=faults.receive if faults is not None else None,
    )


def run_soak(settings: SoakSettings, say: Say = print) -> SoakResult:
    workload = draw_workload(settings.seed, settings.webhooks, settings.balances)
    books = workload.books
    say(
        f"soak: seed {settings.seed}; {settings.webhooks} webhooks ({workload.counts}); "
        f"{len(books.customers)} customers, {len(books.opened) + len(books.late)} balances; "
        f"Moment {'lowers' if settings.applies_payments else 'keeps'} a balance when paid"
    )
    sent = Sent()
    seconds: dict[str, float] = {}
    started = time.monotonic()
    state: dict[str, Any] = {}
    faults = InjectedFaults(state)
    with running_stack(stack_settings(settings, faults)) as stack:
        # The soak delivers Moment's webhooks itself. Bills are never settled in a soak, and Moment's
        # payment rules allow overpayment, so whatever reaches a bill is Moment's to take.
        stack.sandbox.configure(webhook_url=None, bill_overpayment_allowed=True)
        stack.functions.state = state  # what the workers' faults read before each invocation
        # Every Payment Applied and Bill Paid the bus carries (docs/events.md), with its detail-type.
        announced: list[dict[str, Any]] = []
        if stack.events is not None:
            stack.events.bus.subscribe(
                lambda event: (
                    announced.append({**event["detail"], "detail_type": event["detail-type"]})
                    if event["detail-type"] in ANNOUNCED_PAYMENTS
                    else None
                )
            )
        moment = Moment(stack.sandbox_url)
        try:
            merchant = Merchant(stack.api_url, sent)
            merchant.open_books(books.customers, books.opened, workload.opening_charges, books.bills)
            _wait_until_on_moment(
                moment, {(b.kind, b.ref) for b in books.opened}, timeout=60 + len(books.opened)
            )
            seconds["open the books"] = time.monotonic() - started

            faults.start()
            rates = settings.rates
            moment.set_faults(
                fail_429_rate=rates.moment_429,
                fail_500_rate=rates.moment_500,
                timeout_rate=rates.moment_timeout,
                timeout_ms=MOMENT_TIMEOUT_MS,
                seed=settings.seed,
            )
            _traffic(stack, workload, moment, merchant, sent, settings, say)
            # The functions run at once, so the deliveries outrun the stream's one shard: the backlog
            # is reconciled under the same faults before they stop.
            _drain(stack)
            seconds["traffic"] = time.monotonic() - started - sum(seconds.values())

            faults.stop()
            moment.set_faults(fail_429_rate=0.0, fail_500_rate=0.0, timeout_rate=0.0)
            _settle(stack)
            seconds["quiet"] = time.monotonic() - started - sum(seconds.values())
            injected = {**{kind: faults.injected[kind] for kind in KINDS}, **_moment_faults(moment)}
            if stack.events is not None and not stack.events.wait_until_idle(60):
                raise RuntimeError("the event pipes never caught up")
            verdict = judge(
                _scan(stack, "WebhookEventsTable"),
                _scan(stack, "LedgerTable"),
                moment.refresh(),
                sent,
                announced if stack.events is not None else None,
            )
            seconds["verdict"] = time.monotonic() - started - sum(seconds.values())
        finally:
            moment.close()
    return SoakResult(settings, workload, sent, verdict, injected, seconds)


def _moment_faults(moment: Moment) -> dict[str, int]:
    injected = moment.faults()["injected"]
    return {
        "Moment 429": injected["429"],
        "Moment 500": injected["500"],
        "Moment timeout": injected["timeout"],
    }


def _wait_until_on_moment(moment: Moment, expected: set[tuple[str, str]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not expected <= moment.on_moment:
        if time.monotonic() > deadline:
            missing = sorted(expected - moment.on_moment)
            raise RuntimeError(f"the pusher never created {len(missing)} balances on Moment: {missing[:5]}")
        time.sleep(0.2)
        moment.refresh()


@dataclass
class _Message:
    webhook_id: str
    body: bytes
    application_id: str | None  # None: not a payment


class _Traffic:
    """Turns the workload's webhook steps into deliveries, remembering each message to repeat or imitate."""

    def __init__(self, moment: Moment, deliveries: Deliveries, sent: Sent) -> None:
        self.moment = moment
        self.deliveries = deliveries
        self.sent = sent
        self.messages: dict[int, _Message] = {}
        self.made_up = 0

    def deliver(self, step: WebhookStep) -> None:
        if isinstance(step, Pay | PayBill | PayStranger | OtherEvent):
            message = self._first(step)
            self.messages[step.number] = message
            self._send_valid(message.webhook_id, message.body, message.application_id)
        elif isinstance(step, Again):
            self._again(step)
        else:
            self._not_from_moment(step)

    def _first(self, step: Pay | PayBill | PayStranger | OtherEvent) -> _Message:
        if isinstance(step, OtherEvent):
            event = {
                "id": f"evt_soak_other_{step.number}",
                "type": "bill.updated",
                "data": {"id": f"bill_{step.number}"},
            }
            return _Message(f"msg_soak_other_{step.number}", event_body(event), None)
        if isinstance(step, PayBill) and step.bill.ref in self.moment.bills_on_moment:
            payment = self.moment.pay({"bill": step.bill.ref, "amount": step.amount})
            with self.sent.lock:
                self.sent.payments[payment["application_id"]] = ("bill", step.bill.ref, step.amount)
        elif isinstance(step, PayBill):  # not on Moment yet: a balance is paid instead
            target = step.fallback
            payment = self.moment.pay({target.kind: target.ref, "amount": step.amount})
            with self.sent.lock:
                self.sent.payments[payment["application_id"]] = (target.kind, target.ref, step.amount)
        elif isinstance(step, PayStranger):
            payment = self.moment.pay(
                {"unknown_customer_id": f"bcus_soakstranger{step.number:07d}", "amount": step.amount}
            )
            with self.sent.lock:
                self.sent.strangers.add(payment["application_id"])
        else:
            target = (
                step.target if (step.target.kind, step.target.ref) in self.moment.on_moment else step.fallback
            )
            payment = self.moment.pay({target.kind: target.ref, "amount": step.amount})
            with self.sent.lock:
                self.sent.payments[payment["application_id"]] = (target.kind, target.ref, step.amount)
        return _Message(payment["webhook_id"], event_body(payment["event"]), payment["application_id"])

    def _send_valid(self, webhook_id: str, body: bytes, application_id: str | None) -> None:
        with self.sent.lock:
            self.sent.deliveries += 1
            self.sent.bodies[webhook_id] = body
            if application_id is None:
                self.sent.ignored.add(webhook_id)
            elif webhook_id not in self.sent.messages_of[application_id]:
                self.sent.messages_of[application_id].append(webhook_id)
        self.deliveries.send(Delivery(webhook_id, body, LOCAL_WEBHOOK_SECRET, valid=True))

    def _again(self, step: Again) -> None:
        original = self.messages[step.number]
        with self.sent.lock:
            self.sent.duplicates += 1
        if step.same_message:
            self._send_valid(original.webhook_id, original.body, original.application_id)
        else:  # Moment sends the same event under a new message id
            self.made_up += 1
            self._send_valid(
                f"{original.webhook_id}_re{self.made_up}", original.body, original.application_id
            )

    def _not_from_moment(self, step: Forged | Stale) -> None:
        original = self.messages[step.number]
        self.made_up += 1
        fresh_id = f"msg_soak_{type(step).__name__.lower()}_{self.made_up}"
        if isinstance(step, Forged) and step.how == "wrong-secret":
            delivery = Delivery(fresh_id, original.body, FORGER_WEBHOOK_SECRET, valid=False)
        elif isinstance(step, Forged) and step.how == "tampered-body":
            tampered = _tampered(original.body)
            delivery = Delivery(
                original.webhook_id, original.body, LOCAL_WEBHOOK_SECRET, False, body_sent=tampered
            )
        elif isinstance(step, Forged):
            delivery = Delivery(
                fresh_id, original.body, LOCAL_WEBHOOK_SECRET, False, signature=made_up_signature()
            )
        elif step.how == "replayed":
            delivery = Delivery(
                original.webhook_id, original.body, LOCAL_WEBHOOK_SECRET, False, step.seconds_off
            )
        else:  # a payment never made (the verdict finds any entry for it), signed outside the window
            body = _never_made(original.body, self.made_up)
            delivery = Delivery(fresh_id, body, LOCAL_WEBHOOK_SECRET, False, step.seconds_off)
        with self.sent.lock:
            self.sent.deliveries += 1
            if delivery.webhook_id == fresh_id:
                self.sent.rejected_ids.add(fresh_id)
        self.deliveries.send(delivery)


def _tampered(body: bytes) -> bytes:
    event = json.loads(body)
    data = event.setdefault("data", {})
    data["amount"] = int(data.get("amount") or 1) * 10
    return json.dumps(event).encode()


def _never_made(body: bytes, number: int) -> bytes:
    """A genuine payment's event as a payment no one made (a new application id); others as they are."""
    event = json.loads(body)
    if not isinstance(event.get("data"), dict) or "amount" not in event["data"]:
        return body
    event["id"] = f"evt_soaknevermade{number:08d}"
    event["data"]["id"] = f"ob_soaknevermade{number:08d}"
    return json.dumps(event).encode()


def _traffic(
    stack: RunningStack,
    workload: Workload,
    moment: Moment,
    merchant: Merchant,
    sent: Sent,
    settings: SoakSettings,
    say: Say,
) -> None:
    deliveries = Deliveries(stack.api_url, sent, workers=settings.delivery_workers)
    traffic = _Traffic(moment, deliveries, sent)
    started = time.monotonic()
    next_progress, next_refresh = settings.progress_every, REFRESH_EVERY
    try:
        for step in workload.steps:
            if isinstance(step, Pay | PayBill | PayStranger | OtherEvent | Again | Forged | Stale):
                traffic.deliver(step)
            else:
                merchant.ask(step)
            if sent.deliveries >= next_refresh:
                next_refresh += REFRESH_EVERY
                moment.refresh()  # late accounts become payable once the pusher has created them
            if sent.deliveries >= next_progress:
                next_progress += settings.progress_every
                say(_progress(stack, sent, time.monotonic() - started))
    finally:
        deliveries.close()
        merchant.close()


def _progress(stack: RunningStack, sent: Sent, elapsed: float) -> str:
    stats = stack.stream.stats
    return (
        f"soak: {sent.deliveries} webhooks sent in {elapsed:.0f} s; reconciler invoked "
        f"{stack.functions.counts.get(RECONCILER, 0)} times "
        f"({stats.batch_item_failures} batch item failures); "
        f"pusher runs {stack.functions.counts.get(PUSHER, 0)}"
    )


def _settle(stack: RunningStack) -> None:
    """Every delivery made and the stream drained; then the re-drive and the pusher run, as their
    schedules would, until neither has anything left to do. A balance still pending but backing off
    (its last push failed, or was deferred) is waited for, as the next scheduled run would be."""
    _drain(stack)
    stack.scheduler.stop()  # from here the soak runs the schedules itself, so nothing moves while it looks
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        redrive = stack.redrive_now(grace_seconds=0)
        if redrive.failed:
            raise RuntimeError(f"the re-drive failed with every fault off: {redrive.error}")
        stack.wait_until_quiet(60)
        push = stack.push_now()
        if push.failed:
            raise RuntimeError(f"the pusher failed with every fault off: {push.error}")
        stack.wait_until_quiet(60)
        if "skipped" in push.response or "skipped" in redrive.response:
            # A run the faults cut short left its lease behind (its release throttled, or the
            # run killed): it frees at its expiry, as on AWS.
            time.sleep(1.0)
            continue
        bills = push.response.get("bills", {}).get("results")
        if push.response["results"] or bills or set(redrive.response["outcomes"]) - {"parked:unmatched"}:
            continue
        backing_off = [
            head.get("next_push_at") for head in _scan(stack, "LedgerTable") if "push_shard" in head
        ]
        if not backing_off:
            return
        # A retry that came due between the push run and this scan is already in the past.
        time.sleep(max(0.0, min(max(_seconds_until(when) for when in backing_off), 5.0)) + 0.1)
    raise RuntimeError(f"the re-drive and the pusher still had work after {SETTLE_SECONDS} s of quiet")


def _drain(stack: RunningStack, window: float = 120.0) -> None:
    """Until every delivery is made and the stream is drained. With the functions running at once, the
    traffic outruns the stream's one shard and the backlog is reconciled here: wait as long as
    records keep being sent to the reconciler, and give up only after `window` seconds without any."""
    sent = -1
    while not stack.wait_until_quiet(window):
        if stack.stream.stats.records_sent == sent:
            raise RuntimeError("the stream never drained")
        sent = stack.stream.stats.records_sent


def _seconds_until(iso: Any) -> float:
    if not iso:
        return 0.0
    return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp() - time.time()


def _scan(stack: RunningStack, table: str) -> list[dict[str, Any]]:
    from moment_sync.adapters.dynamo_items import from_item  # noqa: PLC0415

    client = stack.client("dynamodb")
    items: list[dict[str, Any]] = []
    for page in client.get_paginator("scan").paginate(TableName=stack.names[table], ConsistentRead=True):
        items.extend(from_item(item) for item in page["Items"])
    return items
