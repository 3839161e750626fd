"""The balance pusher's use case: bring Moment's balances up to the ledger's, oldest change first.

Per run: read the sparse, sharded PendingPush index a page at a time (reading on while time is left),
and push each balance with bounded concurrency until the run's time budget is nearly spent (what is
not reached waits for the next run).
Per balance: create it on Moment if it has no Moment id yet (adopting an existing object only when it
is this balance's: its external_reference, and for an account its customer), otherwise read Moment's
balance and push only what `push_plan` allows. A failure is counted on that balance, with a backoff; it
never blocks the others. An object that is not this balance's, or an adopted one whose balance differs
from the ledger's, puts the balance in `conflict` for an operator (docs/pusher.md#conflicts).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from moment_sync.adapters.ledger_table import LedgerTable, MappingConflict
from moment_sync.adapters.webhook_events_table import WebhookEventsTable
from moment_sync.leases import LEASE_MARGIN_SECONDS, Leases, new_holder
from moment_sync.ledger.model import BalanceKind, BalanceRef
from moment_sync.ledger.sync import (
    ATTEMPTS_BEFORE_FAILING,
    DEFERRALS_BEFORE_ALERT,
    Booking,
    sync_state,
)
from moment_sync.moment_client import (
    CreateOutcome,
    MomentClient,
    NewAccount,
    NewCustomer,
    worst_call_seconds,
)
from moment_sync.moment_errors import MomentApiError, MomentError, MomentNotOurs, MomentRateLimited
from moment_sync.observability import MetricUnit, logger, metrics, push_line
from moment_sync.push_plan import (
    MAX_OPEN_INTENTS,
    AlreadyEqual,
    Defer,
    Intent,
    Push,
    PushSnapshot,
    plan_push,
)
from moment_sync.push_run import (
    RATE_LIMITED_SECONDS,
    Booked,
    SharedBackoff,
    announced_now,
    push_announced,
    push_pages,
)

# A push starts only while the run has time for the worst case of a steady push: a GET and a PATCH,
# each as long as the client's timeouts, tries and pauses allow (moment_client.worst_call_seconds),
# then the booking. A create makes more calls: the run's bounded client (MomentClient.within) stops
# before the time runs out (MomentOutOfTime, a failed push retried after its backoff).
CALLS_PER_PUSH = 2
# DynamoDB's part after the last Moment call (the booking, a few writes): milliseconds, with room
# for botocore's own retries of a throttle.
BOOKING_SECONDS = 5.0
# The reserve at the client's default settings: 2 x 76 + 5 = 157 s.
SECONDS_RESERVED_PER_PUSH = CALLS_PER_PUSH * worst_call_seconds() + BOOKING_SECONDS
# The lease a push run holds (leases.py): one per shard of the PendingPush index (`pusher#shard-3`),
# so the fanned-out workers of one run, and a late duplicate of any of them, never push a shard twice.
PUSHER_LEASE = "pusher"


def shard_lease(shard: int) -> str:
    return f"{PUSHER_LEASE}#shard-{shard}"


# A customer's accounts hash to different shards: the first push of an account whose customer Moment
# lacks holds this claim (a lease) across workers, so the customer is created once. A worker that finds
# it held waits this long for it, then leaves the account pending for the next run (no attempt counted).
CUSTOMER_CLAIM_WAIT_SECONDS = 10.0


def customer_claim(customer_ref: str) -> str:
    return f"create#customer#{customer_ref}"


BACKOFF_BASE_SECONDS = 60.0
BACKOFF_MAX_SECONDS = 3600.0
# Written on every object the pusher creates, so an adoption can tell its own lost create from an
# object the merchant made at Moment before (whose balance an operator must choose: `adopt`).
CREATED_BY: dict[str, str] = {"created_by": "moment-balance-sync"}


class CurrencyDisagrees(MomentError):
    """Moment holds the object in another currency: no push can be right; an operator must decide."""


class PushResult(StrEnum):
    PUSHED = "pushed"
    CREATED = "created"
    IN_SYNC = "in_sync"
    DEFERRED = "deferred"
    FAILED = "failed"
    SKIPPED = "skipped"  # no longer pending, or its state changed under us
    CONFLICT = "conflict"  # Moment's object is not this balance's, or an adoption awaits an operator


# What one look at a balance ends with: a booked push also says whether its booking announced `synced`.
Looked = PushResult | Booked[PushResult]


@dataclass
class PushReport:
    results: dict[str, int] = field(default_factory=dict)
    not_reached: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, result: PushResult) -> None:
        self.results[result.value] = self.results.get(result.value, 0) + 1


@dataclass
class BalancePusher:
    ledger: LedgerTable
    moment: MomentClient
    now: Callable[[], float]
    concurrency: int = 8
    jitter: Callable[[], float] = random.random
    # To re-drive the payments parked unmatched that name an id it links (None: tests without them).
    events: WebhookEventsTable | None = None
    # Shared across the fanned-out workers (None: one process only, as in most tests): the per-customer
    # create claim, and Moment's 429 back-off read before each push.
    leases: Leases | None = None
    backoff: SharedBackoff | None = None
    claim_wait_seconds: float = CUSTOMER_CLAIM_WAIT_SECONDS
    batch: int = 1000  # balances read from the index at a time; a run reads on while time is left
    time_left: Callable[[], float] = lambda: 900.0  # the run's, set by push_pending
    _lanes: dict[str, threading.Lock] = field(default_factory=dict, init=False, repr=False)
    _lanes_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def seconds_per_push(self) -> float:
        """The time a push is started with: its worst case at this client's settings."""
        return CALLS_PER_PUSH * self.moment.worst_call_seconds + BOOKING_SECONDS

    def push_pending(
        self, time_left: Callable[[], float], shards: Collection[int] | None = None
    ) -> PushReport:
        """Push what is pending: every shard, or only `shards` (a fanned-out worker's one)."""
        report = PushReport()
        # This run's pushes use a client that stops before the run's time is up.
        run = replace(
            self, moment=self.moment.within(time_left, keep_seconds=BOOKING_SECONDS), time_left=time_left
        )
        # The index a page at a time (a billing run leaves far more than one pending), read on from where
        # the last page ended while time is left: a balance looked at and still pending with no backoff
        # (deferred, waiting, skipped, changed while pushed) is behind the cursor, never read again in
        # this run, so a page of those cannot hide the balances after them. What is not reached is the
        # rest of the page the run stopped in.
        report.not_reached = push_pages(
            self.ledger.pending_push_pages(self.now(), self.batch, shards=shards),
            run.push_one,
            concurrency=self.concurrency,
            time_left=time_left,
            seconds_per_push=self.seconds_per_push,
            collect=lambda done: self._collect(done, report),
            thread_name_prefix="push",
            held_off=self.held_off,
        )
        for result, count in report.results.items():
            _count(f"Balances{result.title().replace('_', '')}", count)
        _count("BalancesNotReached", report.not_reached)
        return report

    def held_off(self) -> bool:
        """Moment asked for a pause (a 429 any worker met): start no push until it is over."""
        if self.backoff is None or self.backoff.until() <= self.now():
            return False
        logger.info("Moment is rate limiting: no push starts until its back-off is over")
        return True

    @staticmethod
    def _collect(done: set[Future[PushResult]], report: PushReport) -> None:
        for future in done:
            error = future.exception()
            if error is not None:  # push_one books every failure; this one could not even be booked
                logger.error("push of one balance failed and could not be recorded", exc_info=error)
                report.errors.append(f"{type(error).__name__}: {error}")
                report.add(PushResult.FAILED)
                _count("PushFailed")
            else:
                report.add(future.result())

    def push_one(self, balance: BalanceRef) -> PushResult:
        head = self.ledger.get_head(balance)
        if head is None or "push_shard" not in head or "version" not in head:
            return PushResult.SKIPPED
        return push_announced(
            balance,
            head,
            self._push_one,
            settle=self.ledger.settle_sync_state,
            now=self.now,
            log={"reference": balance.ref},
            announced_by_push=announces_with_intent,
        )

    def _push_one(self, balance: BalanceRef, head: dict[str, Any]) -> Looked:
        log = {
            "reference": balance.ref,
            "balance_kind": balance.kind.value,
            "moment_id": head.get("moment_id"),
        }
        try:
            if "adoption_held" in head:  # an operator chooses which balance wins: `adopt`
                return self._conflict(balance, head, str(head.get("push_conflict", "adoption held")), log)
            if not head.get("moment_id"):
                created = self._create_claimed(balance, head)
                if created is not None:
                    return created
                head = self.ledger.get_head(balance) or head  # adopted: it now has its Moment id
                log["moment_id"] = head.get("moment_id")
            return self._push_existing(balance, head, log)
        except (MomentNotOurs, MappingConflict) as error:
            self._owed_first(balance, head)
            return self._conflict(balance, head, str(error), log)
        except Exception as error:  # any other fault of one push is that balance's failed push
            if not isinstance(error, MomentError):
                logger.exception("push of one balance failed", extra=log)
            self._owed_first(balance, head)
            return self._failed(balance, head, error, log)

    def _owed_first(self, balance: BalanceRef, head: dict[str, Any]) -> None:
        """A steady look that ends in a failure or a conflict announces `synced -> pending` first, so the
        bus sees the states in order (the head read again: its intent may have announced it already)."""
        if announces_with_intent(head):
            self._announced(balance, None)

    def _announced(self, balance: BalanceRef, head: dict[str, Any] | None) -> dict[str, Any] | None:
        """What a steady look owes, on its own (push_run.announced_now)."""
        return announced_now(
            balance, head, settle=self.ledger.settle_sync_state, now=self.now, log={"reference": balance.ref}
        )

    def _push_existing(self, balance: BalanceRef, head: dict[str, Any], log: dict[str, Any]) -> Looked:
        moment_id = head["moment_id"]
        current = (
            self.moment.get_account(moment_id)
            if balance.kind is BalanceKind.ACCOUNT
            else self.moment.get_customer(moment_id)
        )
        if current.currency is not None and current.currency != head["currency"]:
            raise CurrencyDisagrees(
                f"Moment keeps {balance} in {current.currency}, the ledger in {head['currency']}"
            )
        # A create whose object Moment already had made nothing: its intent (left open when the write
        # dropping it failed) explains no balance of an object the pusher did not make.
        ours = _ours(current.raw)
        if head.get("pushed_balance") is None and current.balance not in (None, int(head["balance"])):
            # Never pushed to this object: any Moment balance counts as explained, so a payment whose
            # webhook is parked unmatched would be erased. Re-drive them; wait while any remain.
            head, waiting = self._settle_unmatched(balance, head, moment_id)
            if waiting:
                return self._wait_for_payments(balance, head, current.balance, waiting, log)
            if (
                current.balance != int(head["balance"])
                and not _explaining_intents(head, creates_explain=ours)
                and "adoption_decision" not in head
                and not ours
            ):
                # Linked without the pusher's adoption (the re-drive, an operator): the same hold.
                self._hold_adoption(balance, moment_id, current.balance, head)
                return PushResult.CONFLICT
        if head.get("push_waiting"):
            self.ledger.flag_push_waiting(balance, None)
        decision = plan_push(_snapshot(head, creates_explain=ours), current.balance)
        if isinstance(decision, Defer):
            return self._defer(balance, self._announced(balance, head) or head, decision, log)
        if isinstance(decision, AlreadyEqual):
            head = self._announced(balance, head) or head
            booked = self._book(balance, head, current.balance, log, PushResult.IN_SYNC)
            return Booked(PushResult.IN_SYNC, booked.synced)
        assert isinstance(decision, Push)  # noqa: S101 -- the three decisions are exhaustive
        currency = head["currency"]
        # A steady look's `synced -> pending` goes in the intent's write (docs/events.md).
        intent, head = self.ledger.record_intent_announced(balance, head, decision.balance, self.now())
        with self._dropped_if_never_sent(balance, head, intent):
            if balance.kind is BalanceKind.ACCOUNT:
                pushed = self.moment.set_account_balance(moment_id, decision.balance, currency).balance
            else:
                pushed = self.moment.set_customer_balance(moment_id, decision.balance, currency).balance
        # One short line written directly (docs/operations.md): a Powertools record cost ~100 µs per push.
        push_line("balance pushed", **log, balance=decision.balance, was=current.balance)
        return self._book(balance, head, pushed, log, PushResult.PUSHED)

    def _defer(
        self, balance: BalanceRef, head: dict[str, Any], decision: Defer, log: dict[str, Any]
    ) -> PushResult:
        # Too many open intents is not a missing webhook: the balance shows `deferred` at once.
        at_least = DEFERRALS_BEFORE_ALERT if decision.too_many_intents else 1
        deferrals = self.ledger.record_deferral(
            balance, head, decision.moment_balance, self.now(), at_least=at_least
        )
        logger.warning("push deferred", extra={**log, "reason": decision.reason, "deferrals": deferrals})
        _count("PushDeferred")
        if deferrals >= DEFERRALS_BEFORE_ALERT > int(head.get("defer_count", 0)):
            _count("DriftDetected")
        return PushResult.DEFERRED

    @contextmanager
    def _dropped_if_never_sent(
        self, balance: BalanceRef, head: dict[str, Any], intent: int | None
    ) -> Iterator[None]:
        """An intent stays open unless the request certainly never reached Moment (it failed before it
        was sent, or Moment refused it) or a create found another's object: a lost answer, a timeout
        or a 5xx may have been applied. None: a create sent at the cap, with no intent of its own."""
        try:
            yield
        except MomentNotOurs:
            # Moment already held another object under the reference: this create made nothing.
            if intent is not None:
                self.ledger.drop_intent(balance, head, intent)
            raise
        except MomentApiError as error:
            if not error.may_have_reached and intent is not None:
                self.ledger.drop_intent(balance, head, intent)
            raise

    def _create_on_moment(self, balance: BalanceRef, head: dict[str, Any]) -> Looked | None:
        """Create the object on Moment with the ledger's balance; None when an existing one was adopted
        (then its balance is Moment's, and the normal push follows). The create is an intent like a
        PATCH: if its answer is lost, the balance it was created with explains Moment's on the next run."""
        # At the open intents' cap a create is still sent, but not recorded as one more intent: with no
        # object linked, deferring would never look at Moment again (stuck `deferred` for good after a
        # long enough outage). A create erases nothing (Moment makes a new object or answers that it has
        # one, which is then adopted and compared), and an intent left out only narrows what counts as
        # explained: the next run defers rather than overwrites.
        at_cap = len(_snapshot(head).intents) >= MAX_OPEN_INTENTS  # creates count one by one here
        intent = (
            None if at_cap else self.ledger.record_intent(balance, head, int(head["balance"]), create=True)
        )
        with self._dropped_if_never_sent(balance, head, intent):
            if balance.kind is BalanceKind.CUSTOMER:
                moment_id, moment_balance, outcome, ours = self._create_customer(balance, head)
            else:
                moment_id, moment_balance, outcome, ours = self._create_account(balance, head)
        if head.get("push_conflict"):
            self.ledger.clear_conflict(balance)  # resolved at Moment: the object is ours after all
        if outcome is CreateOutcome.ADOPTED:
            # This run's create made nothing (Moment had the object already): its intent explains
            # nothing. An earlier run's create whose answer was lost stays open and explains it.
            if intent is not None:
                self.ledger.drop_intent(balance, head, intent)
            logger.info("adopted the object Moment already had", extra={"reference": balance.ref})
            # Linking re-drove the payments naming the object: compare with the ledger as it is now.
            current = self.ledger.get_head(balance) or head
            if not ours and moment_balance not in (None, int(current["balance"])):
                self._hold_adoption(balance, moment_id, moment_balance, current)
                return PushResult.CONFLICT
            return None
        _count("BalancesCreatedOnMoment")
        log = {"reference": balance.ref, "balance_kind": balance.kind.value, "moment_id": moment_id}
        push_line("balance created on Moment", **log, balance=moment_balance)
        return self._book(balance, head, moment_balance, log, PushResult.CREATED)

    def _create_claimed(self, balance: BalanceRef, head: dict[str, Any]) -> Looked | None:
        """The first push of an account whose customer Moment lacks runs under the customer's claim:
        another shard's worker may be creating the same customer for a sibling account right now."""
        if balance.kind is not BalanceKind.ACCOUNT or self.leases is None:
            return self._create_on_moment(balance, head)
        customer = self.ledger.get_head(BalanceRef(BalanceKind.CUSTOMER, head["customer_ref"])) or {}
        if customer.get("moment_id"):
            return self._create_on_moment(balance, head)
        name = customer_claim(head["customer_ref"])
        holder = new_holder()
        waited_until = time.monotonic() + self.claim_wait_seconds
        while True:
            now = self.now()
            held = self.leases.acquire(
                name, holder, now=now, expires_at=now + self.time_left() + LEASE_MARGIN_SECONDS
            )
            if held is not None:
                break
            if time.monotonic() >= waited_until:
                logger.info(
                    "customer being created by another worker; left for the next run",
                    extra={"reference": balance.ref, "customer_ref": head["customer_ref"]},
                )
                return PushResult.SKIPPED
            time.sleep(0.1)
        try:
            # Read again inside the claim: the other worker may have linked the customer meanwhile.
            return self._create_on_moment(balance, self.ledger.get_head(balance) or head)
        finally:
            held.release()

    def _create_customer(
        self, balance: BalanceRef, head: dict[str, Any]
    ) -> tuple[str, int | None, CreateOutcome, bool]:
        created = self.moment.create_or_adopt_customer(
            NewCustomer(
                balance.ref,
                name=head.get("name"),
                email=head.get("email"),
                phone=head.get("phone"),
                balance=head["balance"],
                currency=head["currency"],
                metadata=CREATED_BY,
            )
        )
        self._link(balance, created.value.id)
        return created.value.id, created.value.balance, created.outcome, _ours(created.value.raw)

    def _create_account(
        self, balance: BalanceRef, head: dict[str, Any]
    ) -> tuple[str, int | None, CreateOutcome, bool]:
        customer_ref = head["customer_ref"]
        # One account of a customer at a time: the first creates the customer, the others use its id
        # (two composite creates of one new customer would conflict on its reference).
        with self._customer_lane(customer_ref):
            customer = self.ledger.get_head(BalanceRef(BalanceKind.CUSTOMER, customer_ref)) or {}
            customer_id = customer.get("moment_id") or self._customer_already_on_moment(customer_ref)
            # A customer Moment does not have yet is created in the same request (composite create).
            owner: str | NewCustomer = customer_id or NewCustomer(
                customer_ref,
                name=customer.get("name"),
                email=customer.get("email"),
                phone=customer.get("phone"),
                metadata=CREATED_BY,
            )
            # Adopted only if it is this account's: MomentNotOurs when it belongs to another customer.
            created = self.moment.create_or_adopt_account(
                NewAccount(
                    owner,
                    balance.ref,
                    name=head.get("name"),
                    balance=head["balance"],
                    currency=head["currency"],
                    metadata=CREATED_BY,
                )
            )
            if not customer_id:
                self._link(BalanceRef(BalanceKind.CUSTOMER, customer_ref), created.value.customer_id)
        self._link(balance, created.value.id)
        return created.value.id, created.value.balance, created.outcome, _ours(created.value.raw)

    def _customer_already_on_moment(self, customer_ref: str) -> str | None:
        """An unlinked customer Moment has anyway (an earlier run created it and stopped before linking
        it): adopt and link it, rather than composite-create it again and conflict. The lookup insists
        on the reference (MomentNotOurs if the path was read as another customer's Moment id)."""
        customer = self.moment.find_customer(customer_ref)
        if customer is None:
            return None
        self._link(BalanceRef(BalanceKind.CUSTOMER, customer_ref), customer.id)
        return customer.id

    def _customer_lane(self, customer_ref: str) -> threading.Lock:
        with self._lanes_lock:
            return self._lanes.setdefault(customer_ref, threading.Lock())

    def _link(self, balance: BalanceRef, moment_id: str) -> None:
        try:
            self.ledger.link_moment_id(balance, moment_id)
        except MappingConflict:
            logger.error(
                "Moment id conflicts with the ledger's link",
                extra={"reference": balance.ref, "moment_id": moment_id},
            )
            raise
        self._redrive_linked(moment_id)

    def _redrive_linked(self, moment_id: str) -> int:
        """Reconcile at once the payments parked unmatched that name a just-linked id; how many remain."""
        if self.events is None:
            return 0
        from moment_sync.redrive import redrive_linked  # noqa: PLC0415 -- only when an id is linked

        with _metrics_lock:  # the reconciler counts metrics; pushes run on worker threads
            report = redrive_linked(moment_id, events=self.events, ledger=self.ledger, now=self.now)
        if report.examined:
            logger.info(
                "re-drove the payments naming a linked id",
                extra={"moment_id": moment_id, "outcomes": report.outcomes, "errors": len(report.errors)},
            )
        return sum(1 for _ in self.events.unmatched_naming(moment_id))

    def _settle_unmatched(
        self, balance: BalanceRef, head: dict[str, Any], moment_id: str
    ) -> tuple[dict[str, Any], int]:
        """Before a first push: re-drive what names the object, then count what is still unmatched
        (with the head read again if a payment was applied meanwhile)."""
        if self.events is None or next(iter(self.events.unmatched_naming(moment_id)), None) is None:
            return head, 0
        remaining = self._redrive_linked(moment_id)
        return self.ledger.get_head(balance) or head, remaining

    def _wait_for_payments(
        self,
        balance: BalanceRef,
        head: dict[str, Any],
        moment_balance: int,
        waiting: int,
        log: dict[str, Any],
    ) -> PushResult:
        reason = (
            f"{waiting} payment(s) parked unmatched name {head['moment_id']}: the first push waits for them"
        )
        self.ledger.flag_push_waiting(balance, reason)
        # A deferral: counted, and after DEFERRALS_BEFORE_ALERT in a row the balance shows `deferred`.
        deferrals = self.ledger.record_deferral(balance, head, moment_balance, self.now())
        logger.warning("first push waits for unmatched payments", extra={**log, "waiting": waiting})
        _count("PushWaitingForPayments")
        _count("PushDeferred")
        if deferrals == DEFERRALS_BEFORE_ALERT:
            _count("DriftDetected")
        return PushResult.DEFERRED

    def _hold_adoption(
        self, balance: BalanceRef, moment_id: str, moment_balance: int, head: dict[str, Any]
    ) -> None:
        """An object the merchant made at Moment, with another balance: neither side wins by surprise."""
        detail = (
            f"adopted Moment's {balance.kind.value} {moment_id} showing {moment_balance}, the ledger has "
            f"{head['balance']}: choose with `adopt {balance.kind.value} {balance.ref} "
            "--ledger-wins|--moment-wins`"
        )
        self.ledger.record_conflict(
            balance, detail, self.now(), self.now() + self._backoff(head), adoption_balance=moment_balance
        )
        _count("BalanceConflict")
        logger.warning(
            "adoption held for an operator",
            extra={"reference": balance.ref, "moment_id": moment_id, "conflict": detail},
        )

    def _conflict(
        self, balance: BalanceRef, head: dict[str, Any], detail: str, log: dict[str, Any]
    ) -> PushResult:
        """Not this balance's object (or an adoption held): no push until an operator links, unlinks or
        adopts; retried with the failures' backoff, counted each time."""
        attempts = self.ledger.record_conflict(balance, detail, self.now(), self.now() + self._backoff(head))
        logger.error("push conflict", extra={**log, "conflict": detail, "attempts": attempts})
        _count("BalanceConflict")
        return PushResult.CONFLICT

    def _backoff(self, head: dict[str, Any]) -> float:
        attempts = int(head.get("push_attempts", 0)) + 1
        return float(min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempts - 1))) * (
            0.5 + self.jitter() / 2
        )

    def _book(
        self,
        balance: BalanceRef,
        head: dict[str, Any],
        moment_balance: int | None,
        log: dict[str, Any],
        result: PushResult,
    ) -> Booked[PushResult]:
        booking = self.ledger.record_push(balance, head, moment_balance, self.now())
        if not booking:
            logger.warning("push state changed while pushing; left for the next run", extra=log)
            return Booked(PushResult.SKIPPED, synced=False)
        return Booked(result, synced=booking is Booking.SYNCED)

    def _failed(
        self, balance: BalanceRef, head: dict[str, Any], error: Exception, log: dict[str, Any]
    ) -> PushResult:
        attempts = int(head.get("push_attempts", 0)) + 1
        delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempts - 1)) * (
            0.5 + self.jitter() / 2
        )
        reason = str(error) if isinstance(error, MomentError) else f"{type(error).__name__}: {error}"
        if isinstance(error, MomentRateLimited):
            self._hold_off_everyone(error)
        attempts = self.ledger.record_failure(balance, reason, self.now(), self.now() + delay)
        logger.warning("push failed", extra={**log, "error": str(error), "attempts": attempts})
        _count("PushFailed")
        if attempts == ATTEMPTS_BEFORE_FAILING:
            _count("BalanceFailing")
        return PushResult.FAILED

    def _hold_off_everyone(self, error: MomentRateLimited) -> None:
        if self.backoff is None:
            return
        pause = error.retry_after if error.retry_after is not None else RATE_LIMITED_SECONDS
        self.backoff.hold_off(self.now() + pause)
        logger.warning("Moment rate limited: every worker holds off", extra={"seconds": pause})
        _count("MomentRateLimited")


_metrics_lock = threading.Lock()


def _count(name: str, value: int = 1) -> None:
    # Pushes run on worker threads; Powertools' metric set is not meant for concurrent writers.
    with _metrics_lock:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def announces_with_intent(head: dict[str, Any]) -> bool:
    """A steady push's head (docs/pusher.md#calls-per-pushed-balance): last announced `synced`, made pending
    by a payment or a charge, its Moment object linked and pushed to before. Its look announces
    `synced -> pending` in its first write, not before the push: the intent's when it PATCHes, a write
    of its own just before any other. Every other look announces first (push_run.push_announced)."""
    return (
        head.get("sync_state", "synced") == "synced"
        and sync_state(head) == "pending"
        and bool(head.get("moment_id"))
        and head.get("pushed_balance") is not None
        and "adoption_held" not in head
        and not head.get("push_waiting")
    )


def _ours(document: Any) -> bool:
    metadata = document.get("metadata") if hasattr(document, "get") else None
    return isinstance(metadata, dict) and all(metadata.get(key) == value for key, value in CREATED_BY.items())


def _explaining_intents(head: dict[str, Any], *, creates_explain: bool) -> list[dict[str, Any]]:
    """The open intents that may explain Moment's balance: a create's only on an object the pusher made."""
    return [item for item in head.get("push_intents", []) if creates_explain or not item.get("create")]


def _snapshot(head: dict[str, Any], *, creates_explain: bool = True) -> PushSnapshot:
    # The list's first `payments_pushed` entries are behind the last booked push (a watermark).
    behind = int(head.get("payments_pushed", 0))
    intents = [
        Intent(
            int(item["balance"]),
            int(item["listed"]) - behind,
            int(item.get("merged", 0)),
            create=bool(item.get("create")),
        )
        for item in _explaining_intents(head, creates_explain=creates_explain)
    ]
    if head.get("push_intent") is not None:  # a head written before intents were a list
        intents.append(Intent(int(head["push_intent"]), int(head.get("push_intent_payments", 0))))
    return PushSnapshot(
        balance=int(head["balance"]),
        version=int(head["version"]),
        pushed_balance=head.get("pushed_balance"),
        payments=tuple(int(amount) for amount in head.get("payments_list", [])[behind:]),
        merged=int(head.get("payments_merged", 0)),
        intents=tuple(intents),
    )
