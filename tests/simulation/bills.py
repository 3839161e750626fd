"""Bills in the simulation (issue 13): the merchant raising, paying outside Moment and voiding bills
through the ledger API, Moment taking payments on them (webhooks with `data.bill_id`), and the bill
pusher's runs inside the scheduled push (`balance_pusher_handler`), under the same faults as balances.

`BillWorld` is the World with the merchant's bill requests and their bookkeeping; `BillSteps` are the
state machine's bill rules (mixed into `machine.Simulation`); the invariants are `bill_checks.py`'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st
from hypothesis.stateful import rule

import balance_pusher_handler
from moment_sync.adapters import ledger_bills, ledger_table
from moment_sync.bill_pusher import BillPusher, BillPushReport
from moment_sync.ledger.sync import sync_state
from moment_sync.observability import metrics
from simulation.moment import MomentPlan
from simulation.storage import StoragePlan
from simulation.world import Invoked, SimContext, World

# Bill references, owners (C3 is on the account-balance model: a bill on it is refused, 422), and
# amounts that collide with payments of 500, 1000 and 1500 (partial, exact and refused overpayments).
BILLS = ("B1", "B2", "B3", "B4")
OWNERS = (("customer", "C1"), ("customer", "C2"), ("account", "A1"), ("account", "A2"), ("customer", "C3"))
AMOUNTS_DUE = (1000, 1500, 2000)
OUTSIDE_AMOUNTS = (500, 1000)
PAYMENTS = (500, 1000, 1500)
# The merchant's requests that got no answer, kept in `World.merchant_retries` beside the charges.
OUTSIDE_PAYMENT, VOID = "BILL_PAYMENT", "BILL_VOID"

_crashes = st.one_of(st.none(), st.none(), st.integers(1, 40))
_throttles = st.one_of(st.none(), st.none(), st.integers(1, 6))


class _SimMonotonic:
    """`time` as the ledger's link caches use it, on the simulated clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.monotonic = clock


class BillWorld(World):
    """The World, plus the merchant's bill requests and what the merchant was told of them."""

    def __init__(self, seed: int, moment_lowers_balances: bool) -> None:
        super().__init__(seed, moment_lowers_balances)
        self.outside_acknowledged: dict[str, tuple[str, int]] = {}  # payment id -> (bill ref, amount)
        self.voids_acknowledged: set[str] = set()
        self.outside_made = 0
        # The handler makes its BillPusher; its backoff jitter must come from the seed, not `random`.
        self._patch(balance_pusher_handler, "BillPusher", self._bill_pusher)
        # The ledger's caches of Moment links expire on `time.monotonic()`: on the wall clock, a loaded
        # machine changed which DynamoDB call a drawn crash hit, and a seed no longer replayed.
        for module in (ledger_table, ledger_bills):
            self._patch(module, "time", _SimMonotonic(self.clock))

    def _bill_pusher(self, **arguments: Any) -> BillPusher:
        return BillPusher(**{**arguments, "jitter": self.random.random})

    def push(self, storage: StoragePlan | None = None, moment: MomentPlan | None = None) -> Invoked:
        """The push run (balances, then bills): a failed bill push it reports must be counted by
        `BillPushFailed` too, or the alarm never sees it (invariant 6)."""
        invoked = super().push(storage, moment)
        report = invoked.result
        bills = report.get("bills") if isinstance(report, dict) else None
        if isinstance(bills, dict):
            failed = int(bills.get("results", {}).get("failed", 0))
            counted = invoked.metrics.get("BillPushFailed", 0)
            if failed > counted:
                self.violate(
                    6,
                    f"a push run reported {failed} failed bill push(es) but counted {counted} "
                    f"BillPushFailed: {bills.get('errors')}",
                )
        return invoked

    def push_bills_when_due(self, moment: MomentPlan | None = None) -> Invoked:
        """The bill pusher alone (the push run's second half) once every bill backing off is due: the
        bill sequence's pushes under a mood, which would otherwise reach every balance too."""
        due = [
            datetime.fromisoformat(str(head["next_push_at"]).replace("Z", "+00:00")).timestamp()
            for head in self.bill_heads().values()
            if head.get("next_push_at") and "push_shard" in head
        ]
        self.clock.advance(max(due, default=0.0) - self.clock() + 1)
        pusher = self._bill_pusher(
            ledger=self.ledger, moment=self.moment_client, now=self.clock, concurrency=1, events=self.events
        )
        context = SimContext("balance_pusher", self.clock)

        def run() -> BillPushReport:
            try:
                return pusher.push_pending(lambda: context.get_remaining_time_in_millis() / 1000)
            finally:
                metrics.flush_metrics()  # as the handler's decorator does, so `invoke` counts them

        invoked = self.invoke("balance_pusher", run, None, moment)
        if isinstance(invoked.result, BillPushReport):
            failed = invoked.result.results.get("failed", 0)
            if failed > invoked.metrics.get("BillPushFailed", 0):
                self.violate(6, f"a bill push run reported {failed} failed, BillPushFailed did not count it")
        return invoked

    def raise_bill(
        self, ref: str, owner: tuple[str, str], amount_due: int, storage: StoragePlan | None = None
    ) -> int | None:
        kind, owner_ref = owner
        body = {kind: owner_ref, "currency": "ZAR", "amount_due": amount_due, "description": "simulated"}
        status, _ = self.api("PUT", f"/bills/{ref}", body, storage)
        return status

    def pay_outside(self, ref: str, amount: int, storage: StoragePlan | None = None) -> None:
        """Cash at the counter, recorded by the merchant (POST /bills/{ref}/payments)."""
        self.outside_made += 1
        payment = {"id": f"cash-{self.outside_made}", "amount": amount, "description": "at the counter"}
        self._send_outside_payment(ref, payment, storage)

    def _send_outside_payment(
        self, ref: str, payment: dict[str, Any], storage: StoragePlan | None = None
    ) -> None:
        status, _ = self.api("POST", f"/bills/{ref}/payments", payment, storage)
        if status in (200, 201):
            self.outside_acknowledged[payment["id"]] = (ref, payment["amount"])
        elif status is None or status >= 500:  # no answer: the merchant sends it again later
            self.merchant_retries.append((OUTSIDE_PAYMENT, ref, payment))

    def void(self, ref: str, storage: StoragePlan | None = None) -> None:
        status, _ = self.api("POST", f"/bills/{ref}/void", None, storage)
        if status == 200:
            self.voids_acknowledged.add(ref)
        elif status is None or status >= 500:
            self.merchant_retries.append((VOID, ref, {}))

    def retry_merchant(self) -> None:
        bills = [retry for retry in self.merchant_retries if retry[0] in (OUTSIDE_PAYMENT, VOID)]
        self.merchant_retries = [retry for retry in self.merchant_retries if retry not in bills]
        super().retry_merchant()
        for method, ref, body in bills:
            if method == VOID:
                self.void(ref)
            else:
                self._send_outside_payment(ref, body)

    def bill_heads(self) -> dict[str, dict[str, Any]]:
        """The ledger's bill heads by reference (the checks' reads)."""
        return {
            item["ref"]: item
            for item in self.scan(self.ledger_table)
            if item["pk"].startswith("BILL#") and item["sk"] == "HEAD"
        }

    def moment_pays_bill(self, bill_id: str, amount: int, parent_ids: bool) -> bytes | None:
        """A payer pays the bill at Moment (no more than remains); its webhook waits in the outbox."""
        at_moment = self.moment.find("bill", bill_id) or {}
        amount = min(amount, int(at_moment.get("amount_remaining", 0)))
        paid = self.moment.pay_bill(bill_id, amount, parent_ids) if amount > 0 else None
        if paid is None:
            return None
        payment, event = paid
        body = json.dumps(event).encode()
        self.bodies[payment.application_id] = body  # Moment may send it again under a new id
        self.new_message(body)
        return body


class BillSteps:
    """The bill rules of `machine.Simulation` (a mixin: hypothesis collects inherited rules)."""

    world: BillWorld

    if TYPE_CHECKING:

        def _step(self, text: str) -> None: ...

        def _deliver(self, messages: list[Any]) -> None: ...

    def _bill_ref(self, pick: int) -> str | None:
        refs = sorted(self.world.bill_heads())
        return refs[pick % len(refs)] if refs else None

    def _bills_at_moment(self) -> list[dict[str, Any]]:
        return sorted(self.world.moment.bills(), key=lambda bill: str(bill["id"]))

    @rule(
        ref=st.sampled_from(BILLS),
        owner=st.sampled_from(OWNERS),
        amount_due=st.sampled_from(AMOUNTS_DUE),
        crash=_crashes,
    )
    def raise_bill(self, ref: str, owner: tuple[str, str], amount_due: int, crash: int | None) -> None:
        """PUT /bills/{ref}: created, the same again (200), or another amount or owner (409)."""
        self._step(f"raise_bill({ref} on {owner[0]} {owner[1]}, {amount_due})")
        self.world.raise_bill(ref, owner, amount_due, StoragePlan(crash_at=crash))

    @rule(pick=st.integers(0, 50), amount=st.sampled_from(OUTSIDE_AMOUNTS), crash=_crashes)
    def bill_paid_outside_moment(self, pick: int, amount: int, crash: int | None) -> None:
        ref = self._bill_ref(pick)
        if ref is None:
            return
        self._step(f"bill_paid_outside_moment({ref}, {amount})")
        self.world.pay_outside(ref, amount, StoragePlan(crash_at=crash))

    @rule(pick=st.integers(0, 50), crash=_crashes, throttle=_throttles)
    def void_bill(self, pick: int, crash: int | None, throttle: int | None) -> None:
        ref = self._bill_ref(pick)
        if ref is None:
            return
        self._step(f"void_bill({ref})")
        self.world.void(ref, StoragePlan(crash_at=crash, throttle_at=throttle))

    @rule(pick=st.integers(0, 50), amount=st.sampled_from(PAYMENTS), parent_ids=st.booleans())
    def moment_takes_a_bill_payment(self, pick: int, amount: int, parent_ids: bool) -> None:
        """A payer pays a bill at Moment: amount_paid rises there, its webhook waits to be delivered
        (in any order, again, lost to the stream and re-driven, as a balance's)."""
        bills = [bill for bill in self._bills_at_moment() if bill["status"] == "unpaid"]
        if not bills:
            return
        bill = bills[pick % len(bills)]
        self._step(f"moment_takes_a_bill_payment({bill['external_reference']}, {amount}, {parent_ids=})")
        self.world.moment_pays_bill(str(bill["id"]), amount, parent_ids)

    @rule(
        pick=st.integers(0, 50),
        amount_due=st.sampled_from(AMOUNTS_DUE),
        paid=st.sampled_from(PAYMENTS),
        outside=st.sampled_from(OUTSIDE_AMOUNTS),
        lose_the_patch=st.booleans(),
        void=st.booleans(),
    )
    def a_bill_paid_at_moment_and_outside_while_a_push_reads(
        self, pick: int, amount_due: int, paid: int, outside: int, lose_the_patch: bool, void: bool
    ) -> None:
        """A bill raised on a linked owner and created at Moment; a payer pays part of it at Moment and
        the merchant records cash at the counter; a push reads Moment's amount_paid before the payment's
        webhook arrives and PATCHes (its answer lost, or not); the webhook is reconciled; maybe the bill
        is voided; a healthy push. Moment's payment must never be erased or counted twice, nor the cash
        (the amount sent is the larger of Moment's and the ledger's count, plus the cash not there yet)."""
        ledger = self.world.scan(self.world.ledger_table)
        heads = {item["ref"]: item for item in ledger if item["sk"] == "HEAD"}
        owners = [
            owner
            for owner in OWNERS
            if heads.get(owner[1], {}).get("moment_id") and heads[owner[1]].get("balance_model") != "accounts"
        ]
        free = [ref for ref in BILLS if ref not in self.world.bill_heads()]
        if not owners or not free:
            return
        owner, ref = owners[pick % len(owners)], free[pick % len(free)]
        self._step(
            f"a_bill_paid_at_moment_and_outside_while_a_push_reads({ref} on {owner[1]}, {amount_due}, "
            f"Moment {paid}, cash {outside}, lose_the_patch={lose_the_patch}, void={void})"
        )
        mode, self.world.moment.mode = self.world.moment.mode, "healthy"
        try:
            self.world.raise_bill(ref, owner, amount_due)
            self.world.push_bills_when_due()  # created at Moment
            at_moment = self.world.moment.find("bill", ref)
            if at_moment is None:
                return
            body = self.world.moment_pays_bill(str(at_moment["id"]), paid, parent_ids=pick % 2 == 0)
            self.world.pay_outside(ref, outside)
            if lose_the_patch:
                self.world.moment.mode = "lose_answers"
            self.world.push_bills_when_due()  # reads Moment's amount_paid before the payment's webhook
            self.world.moment.mode = "healthy"
            if body is not None:
                self._deliver([message for message in self.world.outbox if message.body == body])
                for _ in range(2):  # read, then sent after the batching window
                    self.world.poll_stream()
            if void:
                self.world.void(ref)
            self.world.push_bills_when_due()
        finally:
            self.world.moment.mode = mode


def bills_settling(world: World) -> bool:
    """Bills still due a push over the next hours that are not held for an operator (blocked or in
    conflict): driving the world quiet goes on for them (at most QUIET_ROUNDS rounds)."""
    for _since, bill in world.ledger.pending_bill_pushes(world.clock() + 7 * 3600):
        head = world.ledger.get_bill(bill) or {}
        if sync_state(head) not in ("blocked", "conflict"):
            return True
    return False
