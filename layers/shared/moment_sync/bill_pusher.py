"""The bill pusher's use case: bring Moment's bills in step with the ledger's, oldest change first.

Per run (after the balances, in the same function): read the `billpush#N` shards of the PendingPush
index a page at a time (reading on while time is left), and push each bill with bounded concurrency
until the run's time budget is nearly spent.
Per bill: create it on Moment if it has no Moment id yet (its owner must be at Moment already; an
existing bill under its reference is adopted only when its owner, amount and currency match), then
read Moment's bill and do what `bill_push_plan` decides: nothing, a PATCH of `amount_paid` (an
intent first; Moment re-read after it, and repaired in the same run), a void (after any outside
payments), or the `blocked` or `conflict` state for an operator. A failure is counted on that bill,
with a backoff; it never blocks the others. docs/pusher.md#bills.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from moment_sync.adapters.ledger_table import LedgerTable, MappingConflict
from moment_sync.adapters.webhook_events_table import WebhookEventsTable
from moment_sync.bill_push_plan import (
    BillLedgerView,
    Blocked,
    Book,
    Disagrees,
    SendAmountPaid,
    VoidAtMoment,
    plan_bill_push,
)
from moment_sync.ledger.bills import MAX_OPEN_BILL_INTENTS, BillRef
from moment_sync.ledger.model import BalanceKind, BalanceRef
from moment_sync.ledger.sync import ATTEMPTS_BEFORE_FAILING, Booking, sync_state
from moment_sync.moment_client import CreateOutcome, MomentBill, MomentClient, NewBill
from moment_sync.moment_errors import MomentApiError, MomentError, MomentNotOurs, MomentRateLimited
from moment_sync.observability import logger
from moment_sync.push_run import (
    RATE_LIMITED_SECONDS,
    Booked,
    SharedBackoff,
    announced_now,
    push_announced,
    push_pages,
)
from moment_sync.pusher import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_MAX_SECONDS,
    BOOKING_SECONDS,
    CALLS_PER_PUSH,
    CREATED_BY,
    _count,
    _metrics_lock,
)

# A PATCH, its re-read, and a repair if the re-read shows what the ledger must put back: a few rounds.
MAX_ROUNDS_PER_BILL = 3
# A blocked bill needs an operator; looked at again this often (it unblocks by itself if Moment's
# payment rules change, or its amount_paid does).
BLOCKED_RETRY_SECONDS = 3600.0


class BillPushResult(StrEnum):
    PUSHED = "pushed"  # amount_paid PATCHed and booked
    CREATED = "created"
    IN_SYNC = "in_sync"
    VOIDED = "voided"
    FAILED = "failed"
    SKIPPED = "skipped"  # no longer pending, or its state changed under us
    CONFLICT = "conflict"
    BLOCKED = "blocked"
    WAITING = "waiting"  # for its owner, which the balance pusher is now asked to create first


# What one look at a bill ends with: a booked push also says whether its booking announced `synced`.
BillLooked = BillPushResult | Booked[BillPushResult]


class OwnerNotAtMoment(MomentError):
    """The bill's customer or account is not linked to Moment yet: the balance pusher creates it first.
    `asked`: the owner is pending for the balance pusher (then the bill waits without a backoff)."""

    def __init__(self, message: str, *, asked: bool) -> None:
        super().__init__(message)
        self.asked = asked


class MomentLacksBill(MomentError):
    """The bill is linked to a Moment id Moment does not know."""


@dataclass
class BillPushReport:
    results: dict[str, int] = field(default_factory=dict)
    not_reached: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, result: BillPushResult) -> None:
        self.results[result.value] = self.results.get(result.value, 0) + 1


@dataclass
class BillPusher:
    ledger: LedgerTable
    moment: MomentClient
    now: Callable[[], float]
    concurrency: int = 8
    jitter: Callable[[], float] = random.random
    # To re-drive at once the payments parked unmatched that name a bill just linked (None: not done).
    events: WebhookEventsTable | None = None
    # Moment's 429 back-off shared by the fanned-out workers (push_run.SharedBackoff; None: not shared).
    backoff: SharedBackoff | None = None
    batch: int = 1000  # bills read from the index at a time; a run reads on while time is left

    @property
    def seconds_per_push(self) -> float:
        """The time a push is started with: a steady push's worst case at this client's settings."""
        return CALLS_PER_PUSH * self.moment.worst_call_seconds + BOOKING_SECONDS

    def push_pending(
        self, time_left: Callable[[], float], shards: Collection[int] | None = None
    ) -> BillPushReport:
        """Push what is pending: every `billpush#N` shard, or only `shards` (a fanned-out worker's one)."""
        report = BillPushReport()
        # As the balances': a client that starts no attempt the run's time cannot fit (a bill push makes
        # several calls: a create, up to 3 PATCHes each re-read, a void), so a run is never killed inside
        # a call, between a PATCH and its booking.
        run = replace(self, moment=self.moment.within(time_left, keep_seconds=BOOKING_SECONDS))
        # A page at a time (a merchant's month of bills is far more than one), read on from where the
        # last page ended while time is left: what is not reached is the rest of the page it stopped in.
        report.not_reached = push_pages(
            self.ledger.pending_bill_pages(self.now(), self.batch, shards=shards),
            run.push_one,
            concurrency=self.concurrency,
            time_left=time_left,
            seconds_per_push=self.seconds_per_push,
            collect=lambda done: self._collect(done, report),
            thread_name_prefix="bill-push",
            held_off=lambda: self.backoff is not None and self.backoff.until() > self.now(),
        )
        for result, count in report.results.items():
            _count(f"Bills{result.title().replace('_', '')}", count)
        _count("BillsNotReached", report.not_reached)
        return report

    @staticmethod
    def _collect(done: set[Future[BillPushResult]], report: BillPushReport) -> None:
        for future in done:
            error = future.exception()
            if error is not None:  # push_one books every failure; this one could not even be booked
                logger.error("push of one bill failed and could not be recorded", exc_info=error)
                report.errors.append(f"{type(error).__name__}: {error}")
                report.add(BillPushResult.FAILED)
                _count("BillPushFailed")
            else:
                report.add(future.result())

    def push_one(self, bill: BillRef) -> BillPushResult:
        head = self.ledger.get_bill(bill)
        if head is None or "push_shard" not in head:
            return BillPushResult.SKIPPED
        # As the balance pusher: announced before and after the look (push_run.push_announced).
        return push_announced(
            bill,
            head,
            self._push_one,
            settle=self.ledger.settle_sync_state,
            now=self.now,
            log={"bill": bill.ref},
            not_announced="bill sync state not announced yet",
            announced_by_push=bill_announces_with_intent,
        )

    def _push_one(self, bill: BillRef, head: dict[str, Any]) -> BillLooked:
        log: dict[str, Any] = {"bill": bill.ref, "moment_id": head.get("moment_id")}
        try:
            created = False
            if head.get("moment_id"):
                current = self._read(head["moment_id"])
            else:
                found = self._create_or_find(bill, head)
                if found is None:  # voided before Moment ever had it: nothing to tell Moment
                    return self._book(bill, head, Book(0), log, BillPushResult.VOIDED)
                current, created = found
                head = self.ledger.get_bill(bill) or head
                log["moment_id"] = current.id
            looked = self._settle(bill, head, current, log)
            settled = (BillPushResult.PUSHED, BillPushResult.IN_SYNC)
            if created and isinstance(looked, Booked) and looked.result in settled:
                return Booked(BillPushResult.CREATED, looked.synced)
            return BillPushResult.CREATED if created and looked in settled else looked
        except (MomentNotOurs, MappingConflict) as error:
            self._owed_first(bill, head)
            return self._conflict(bill, head, str(error), log)
        except OwnerNotAtMoment as waiting:
            if not waiting.asked:  # an owner the balance pusher will not create: a failure, shown
                return self._failed(bill, head, waiting, log)
            # Not counted as a failure: the owner's own push shows if it is stuck (failing, conflict).
            logger.info("bill waits for its owner to be created at Moment", extra=log)
            return BillPushResult.WAITING
        except Exception as error:  # any other fault of one push is that bill's failed push
            if not isinstance(error, MomentError):
                logger.exception("push of one bill failed", extra=log)
            self._owed_first(bill, head)
            return self._failed(bill, head, error, log)

    def _owed_first(self, bill: BillRef, head: dict[str, Any]) -> None:
        """A steady look that ends in a failure or a conflict announces `synced -> pending` first (the
        bill read again: its intent may have announced it already), as the balance pusher's does."""
        if bill_announces_with_intent(head):
            self._announced(bill, None)

    def _announced(self, bill: BillRef, head: dict[str, Any] | None) -> dict[str, Any] | None:
        """What a steady look owes, on its own (push_run.announced_now)."""
        return announced_now(
            bill, head, settle=self.ledger.settle_sync_state, now=self.now, log={"bill": bill.ref}
        )

    # --- creating ------------------------------------------------------------------------------

    def _create_or_find(self, bill: BillRef, head: dict[str, Any]) -> tuple[MomentBill, bool] | None:
        """Moment's bill for this one, linked: created (True) or adopted (False); None when the bill was
        voided before Moment had it (then it is not created just to be voided)."""
        if head.get("void_requested_at"):
            # Read first: a bill Moment never had needs nothing of its owner (which may never be there).
            existing = self.moment.get_bill(bill.ref)
            if existing is None:
                return None
            self.moment.check_bill_terms(self._new_bill(bill, head), existing)
            self._link(bill, existing.id)
            return existing, False
        result = self.moment.create_bill(self._new_bill(bill, head))
        self._link(bill, result.value.id)
        if result.outcome is CreateOutcome.CREATED:
            _count("BillsCreatedOnMoment")
            logger.info("bill created on Moment", extra={"bill": bill.ref, "moment_id": result.value.id})
        else:
            logger.info(
                "adopted the bill Moment already had", extra={"bill": bill.ref, "moment_id": result.value.id}
            )
        return result.value, result.outcome is CreateOutcome.CREATED

    def _new_bill(self, bill: BillRef, head: dict[str, Any]) -> NewBill:
        owner = BalanceRef(BalanceKind(str(head["owner_kind"])), str(head["owner_ref"]))
        owner_head = self.ledger.get_head(owner) or {}
        owner_id = owner_head.get("moment_id")
        if not owner_id:
            # One with no charges was never pending: ask the balance pusher for it.
            asked = self.ledger.request_first_push(owner, self.now()) or "push_shard" in owner_head
            raise OwnerNotAtMoment(
                f"{owner} is not at Moment yet: the bill waits for the balance pusher to create it",
                asked=asked,
            )
        on_account = owner.kind is BalanceKind.ACCOUNT
        return NewBill(
            bill.ref,
            amount_due=int(head["amount_due"]),
            currency=head["currency"],
            customer=None if on_account else owner_id,
            account=owner_id if on_account else None,
            bill_date=head.get("bill_date"),
            due_date=head.get("due_date"),
            metadata=CREATED_BY,
        )

    def _link(self, bill: BillRef, moment_id: str) -> None:
        try:
            self.ledger.link_bill(bill, moment_id)
        except MappingConflict:
            logger.error(
                "Moment bill id conflicts with the ledger's link",
                extra={"bill": bill.ref, "moment_id": moment_id},
            )
            raise
        self._redrive_linked(moment_id)

    def _redrive_linked(self, moment_id: str) -> None:
        """A payment whose webhook came before the link (a create whose answer was lost) is parked
        unmatched: applied now, not after the re-drive's backoff (up to hours)."""
        if self.events is None:
            return
        from moment_sync.redrive import redrive_linked  # noqa: PLC0415 -- only when an id is linked

        with _metrics_lock:  # the reconciler counts metrics; pushes run on worker threads
            report = redrive_linked(moment_id, events=self.events, ledger=self.ledger, now=self.now)
        if report.examined:
            logger.info(
                "re-drove the payments naming a linked bill",
                extra={"moment_id": moment_id, "outcomes": report.outcomes, "errors": len(report.errors)},
            )

    # --- pushing -------------------------------------------------------------------------------

    def _settle(
        self, bill: BillRef, head: dict[str, Any], current: MomentBill, log: dict[str, Any]
    ) -> BillLooked:
        """Decide, act, re-read both sides, and decide again until nothing is left to send (bounded)."""
        pushed = False
        for _ in range(MAX_ROUNDS_PER_BILL):
            decision = plan_bill_push(BillLedgerView.of(head), current)
            if not isinstance(decision, SendAmountPaid):
                # A steady look's `synced -> pending` before what it writes (a PATCH's intent carries it).
                head = self._announced(bill, head) or head
            if isinstance(decision, Disagrees):
                return self._conflict(bill, head, decision.detail, log)
            if isinstance(decision, Blocked):
                return self._blocked(bill, head, decision.detail, log)
            if isinstance(decision, Book):
                in_sync = BillPushResult.VOIDED if decision.voided_at_moment else BillPushResult.IN_SYNC
                return self._book(bill, head, decision, log, BillPushResult.PUSHED if pushed else in_sync)
            if isinstance(decision, VoidAtMoment):
                # A new key each attempt: Moment would replay an earlier refusal for 24 hours.
                voided = self.moment.void_bill(current.id, generation=int(head.get("push_attempts", 0)))
                logger.info("bill voided on Moment", extra=log)
                return self._book(
                    bill, head, Book(voided.amount_paid, voided_at_moment=True), log, BillPushResult.VOIDED
                )
            sent = self._send(bill, head, current, decision, log)
            if sent is None:
                return BillPushResult.BLOCKED
            head = sent
            pushed = True
            current = self._read(current.id)
        logger.warning("bill still moving after its rounds; left pending for the next run", extra=log)
        return BillPushResult.PUSHED

    def _send(
        self,
        bill: BillRef,
        head: dict[str, Any],
        current: MomentBill,
        decision: SendAmountPaid,
        log: dict[str, Any],
    ) -> dict[str, Any] | None:
        """The PATCH, recorded first as an intent (its landing may be unknown); returns the head read
        again, the intent on it, for the next round's decision and for booking. None when Moment
        answered without taking the amount_paid sent (the bill is then blocked)."""
        if len(head.get("push_intents", [])) >= MAX_OPEN_BILL_INTENTS:
            raise MomentError(
                f"{MAX_OPEN_BILL_INTENTS} PATCHes of {bill} with unknown landing are open: nothing more "
                "is sent until one is booked"
            )
        # A steady look's `synced -> pending` goes in the intent's write (docs/events.md).
        index = self.ledger.record_bill_intent_announced(bill, head, decision.amount_paid, self.now())
        with self._dropped_if_never_sent(bill, head, index):
            answer = self.moment.update_bill_amount_paid(
                current.id, decision.amount_paid, head["currency"], metadata=decision.metadata
            )
        if answer.amount_paid != decision.amount_paid:
            # A 200 that did not take the amount: the bill went paid since the read and Moment ignored
            # a PATCH of a paid bill (or capped it). Its metadata may now name these outside payments,
            # so a re-read would book them as at Moment: block instead.
            detail = (
                f"Moment answered the PATCH of amount_paid {decision.amount_paid} on its bill {current.id} "
                f"with amount_paid {answer.amount_paid} ({answer.status}): the outside payments were not "
                "taken"
            )
            now = self.now()
            self.ledger.record_bill_patch_ignored(bill, head, index, detail, now, now + BLOCKED_RETRY_SECONDS)
            logger.error("bill PATCH not taken by Moment", extra={**log, "blocked": detail})
            _count("BillPushBlocked")
            return None
        logger.info(
            "bill amount_paid pushed",
            extra={
                **log,
                "amount_paid": decision.amount_paid,
                "was": current.amount_paid,
                "outside_paid": decision.outside_paid,
            },
        )
        return self.ledger.get_bill(bill) or head

    @contextmanager
    def _dropped_if_never_sent(self, bill: BillRef, head: dict[str, Any], index: int) -> Iterator[None]:
        """An intent stays open unless the PATCH certainly never reached Moment."""
        try:
            yield
        except MomentApiError as error:
            if not error.may_have_reached:
                self.ledger.drop_bill_intent(bill, head, index)
            raise

    def _read(self, moment_id: str) -> MomentBill:
        current = self.moment.get_bill(moment_id)
        if current is None:
            raise MomentLacksBill(f"Moment has no bill {moment_id}, which the ledger links")
        return current

    # --- outcomes ------------------------------------------------------------------------------

    def _book(
        self, bill: BillRef, head: dict[str, Any], decision: Book, log: dict[str, Any], result: BillPushResult
    ) -> Booked[BillPushResult]:
        booking = self.ledger.record_bill_push(
            bill, head, decision.moment_amount_paid, self.now(), voided_at_moment=decision.voided_at_moment
        )
        if not booking:
            logger.warning("bill push state changed while pushing; left for the next run", extra=log)
            return Booked(BillPushResult.SKIPPED, synced=False)
        return Booked(result, synced=booking is Booking.SYNCED)

    def _blocked(
        self, bill: BillRef, head: dict[str, Any], detail: str, log: dict[str, Any]
    ) -> BillPushResult:
        self.ledger.record_bill_blocked(bill, detail, self.now(), self.now() + BLOCKED_RETRY_SECONDS)
        logger.error("bill push blocked", extra={**log, "blocked": detail})
        _count("BillPushBlocked")
        return BillPushResult.BLOCKED

    def _conflict(
        self, bill: BillRef, head: dict[str, Any], detail: str, log: dict[str, Any]
    ) -> BillPushResult:
        attempts = self.ledger.record_conflict(bill, detail, self.now(), self.now() + self._backoff(head))
        logger.error("bill push conflict", extra={**log, "conflict": detail, "attempts": attempts})
        _count("BillConflict")
        return BillPushResult.CONFLICT

    def _failed(
        self, bill: BillRef, head: dict[str, Any], error: Exception, log: dict[str, Any]
    ) -> BillPushResult:
        reason = str(error) if isinstance(error, MomentError) else f"{type(error).__name__}: {error}"
        if isinstance(error, MomentRateLimited) and self.backoff is not None:
            pause = error.retry_after if error.retry_after is not None else RATE_LIMITED_SECONDS
            self.backoff.hold_off(self.now() + pause)  # every worker holds off, not only this one
        attempts = self.ledger.record_failure(bill, reason, self.now(), self.now() + self._backoff(head))
        logger.warning("bill push failed", extra={**log, "error": reason, "attempts": attempts})
        _count("BillPushFailed")
        if attempts == ATTEMPTS_BEFORE_FAILING:
            _count("BillPushFailing")
        return BillPushResult.FAILED

    def _backoff(self, head: dict[str, Any]) -> float:
        attempts = int(head.get("push_attempts", 0)) + 1
        delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempts - 1))
        return float(delay) * (0.5 + self.jitter() / 2)


def bill_announces_with_intent(head: dict[str, Any]) -> bool:
    """A steady bill push's head: last announced `synced`, made pending (an outside payment), linked to
    Moment's bill. Its look announces `synced -> pending` in its first write, the PATCH's intent's
    when it sends one (as a balance's: pusher.announces_with_intent)."""
    return (
        head.get("sync_state", "synced") == "synced"
        and sync_state(head) == "pending"
        and bool(head.get("moment_id"))
    )
