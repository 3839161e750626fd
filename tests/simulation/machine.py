"""The simulation as a hypothesis state machine: each rule is one thing that happens to the system
(Moment takes a payment, a webhook is delivered, the stream is polled, the pusher runs, the merchant
posts a charge, an operator erases a customer, the clock moves, Moment's mood changes...), with the
faults of that step drawn by hypothesis so a failure shrinks to the fewest steps and the exact call.

Invariants run after every step; `teardown` drives the world quiet (faults off, everything delivered,
re-driven and pushed, the clock past every backoff) and checks what must hold then.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import (
    RULE_MARKER,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from moment_sync.ledger.model import BalanceKind, BalanceRef
from simulation import checks
from simulation.bills import BillSteps, BillWorld, bills_settling
from simulation.moment import MODES, MomentPlan
from simulation.storage import StoragePlan
from simulation.world import World

# Few, round amounts, so that sums of payments and charges collide (the push rule must hold anyway).
AMOUNTS = (500, 1000, 1500)
BALANCE_SETS = (0, 500, 1000, 2000)
CUSTOMERS = {"C1": "customer", "C2": "customer", "C3": "accounts", "C4": "customer"}
ACCOUNTS = {"A1": "C3", "A2": "C3"}
# The books each program opens with (each with a charge, so the first push creates it at Moment);
# C4 and A2 are left for a program to open, or to meet at Moment first.
OPENED = (("/customers/C1", 1000), ("/customers/C2", 1500), ("/customers/C3", None), ("/accounts/A1", 500))
# Payments between two pushes in a burst: the fewest that took a booking expression growing with the
# list past DynamoDB's 4 KB (issue 11, item 4: 195 with `payments_list[i]` per payment read).
BURST = 195
# Bursts per program (each is ~200 webhooks through moto: seconds, not milliseconds).
MAX_BURSTS = int(os.environ.get("SIM_BURSTS") or 1)
QUIET_ROUNDS = 12
TRACE = bool(os.environ.get("SIM_TRACE"))  # print each step as it starts, with the seconds so far
TRACE_START = time.perf_counter()
STEP_LOG: list[str] = []  # every step taken since the runner last cleared it (steps/s, replay checks)

# The sequence rules (below): each one is a defect's five or more steps in a row, which the search
# draws only by chance. Each program has one as its focus, played once at a drawn step with drawn
# arguments (the program's other steps drawn as ever), so that every short run plays every one.
SEQUENCES = (
    "a_payment_unsettled_when_its_customer_is_erased",
    "moment_loses_a_push_then_refuses_the_next",
    "moment_takes_a_burst_of_payments",
    "moment_takes_a_payment_before_a_push_reads",
    "customer_made_and_paid_at_moment_then_adopted",
    "deliver_a_webhook_while_storage_fails",
    "moment_sends_one_application_id_for_two_balances",
    "a_bill_paid_at_moment_and_outside_while_a_push_reads",
    "account_made_at_moment_under_another_customer_then_created",
    "storage_fails_as_a_push_books",
)
# The focus is played at one of the program's first FOCUS_BY steps (later if it has nothing to act on
# yet: no linked object, no webhook waiting), and at the latest before the world is driven quiet.
FOCUS_BY = 20
# One run's focus bookkeeping, reset by the runner: the sequences played so far (by focus or chance),
# the ones some program had as its focus, the programs started, and the focus of the program that
# failed (kept while hypothesis shrinks and replays it).
FOCUS_RUN: dict[str, Any] = {}


def reset_focus() -> None:
    FOCUS_RUN.update(played=set(), focused=set(), programs=0, failed=None)


reset_focus()


def next_focus(machine: type[RuleBasedStateMachine]) -> str:
    """The focus of the next program: the failed program's while a failure is shrunk or replayed;
    otherwise the first sequence this run has not played yet, in turn once all have been."""
    if FOCUS_RUN["failed"] is not None:
        return str(FOCUS_RUN["failed"])
    number = FOCUS_RUN["programs"]
    FOCUS_RUN["programs"] += 1
    sequences = [
        name
        for name in SEQUENCES
        if hasattr(getattr(machine, name), RULE_MARKER)  # not left out (SIM_WITHOUT)
        and (MAX_BURSTS or name != "moment_takes_a_burst_of_payments")
    ]
    unplayed = [name for name in sequences if name not in FOCUS_RUN["played"] | FOCUS_RUN["focused"]]
    focus = unplayed[0] if unplayed else sequences[number % len(sequences)]
    FOCUS_RUN["focused"].add(focus)
    return focus


# The k-th DynamoDB call (or Moment request) of one invocation; a push run's first 8 are its index reads.
crashes = st.one_of(st.none(), st.none(), st.integers(1, 40))
throttles = st.one_of(st.none(), st.none(), st.integers(1, 6))


def storage_plan(crash_at: int | None, throttle_at: int | None) -> StoragePlan:
    return StoragePlan(crash_at=crash_at, throttle_at=throttle_at)


class Simulation(BillSteps, RuleBasedStateMachine):
    world: World

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[str] = []
        self.failed = True  # until the invariants after a step pass
        self.bursts = 0
        self.focus = next_focus(type(self))
        self.focus_at = 0  # drawn by open_world
        self.focus_arguments: dict[str, Any] = {}
        self.focus_played = False

    def _step(self, text: str) -> None:
        name = text.split("(", 1)[0]
        if (
            not self.focus_played
            and name != "open_world"
            and len(self.steps) > self.focus_at
            and self._play_focus()
        ):
            self.invariants_hold()  # the focus is a step of its own, checked before this one runs
        if name == self.focus:
            self.focus_played = True
        if name in SEQUENCES:
            FOCUS_RUN["played"].add(name)
        if TRACE:
            print(f"  [{time.perf_counter() - TRACE_START:8.2f}] {text}", file=sys.stderr, flush=True)
        STEP_LOG.append(text)
        self.steps.append(text)
        self.failed = True

    @initialize(
        seed=st.integers(0, 2**32 - 1),
        lowers=st.booleans(),
        focus_at=st.integers(1, FOCUS_BY),
        data=st.data(),
    )
    def open_world(self, seed: int, lowers: bool, focus_at: int, data: st.DataObject) -> None:
        self._step(f"open_world(seed={seed}, lowers={lowers}, focus={self.focus} at step {focus_at})")
        self.focus_at = focus_at
        # The focus's arguments, drawn (and shrunk) as hypothesis would draw them for the rule.
        focus_rule = getattr(getattr(type(self), self.focus), RULE_MARKER)
        self.focus_arguments = {
            name: data.draw(strategy, label=name) for name, strategy in focus_rule.arguments.items()
        }
        if self.focus == "moment_takes_a_burst_of_payments":
            self.focus_arguments["now"] = 0  # the burst's own dice say "not now" three times in four
        self.world = BillWorld(seed, moment_lowers_balances=lowers)
        for path, amount in OPENED:
            ref = path.rsplit("/", 1)[-1]
            body: dict[str, Any] = {"currency": "ZAR"}
            if path.startswith("/accounts/"):
                body["customer_ref"] = ACCOUNTS[ref]
            elif CUSTOMERS[ref] == "accounts":
                body["balance_model"] = "accounts"
            self.world.api("PUT", path, body)
            if amount is not None:
                self.world.charge(path, amount)

    # --- the merchant (the ledger API) ---------------------------------------------------------------

    @rule(ref=st.sampled_from(sorted(CUSTOMERS)), crash=crashes)
    def open_customer(self, ref: str, crash: int | None) -> None:
        self._step(f"open_customer({ref})")
        body: dict[str, Any] = {"currency": "ZAR", "name": f"Customer {ref}"}
        if CUSTOMERS[ref] == "accounts":
            body["balance_model"] = "accounts"
        self.world.api("PUT", f"/customers/{ref}", body, storage_plan(crash, None))

    @rule(ref=st.sampled_from(sorted(ACCOUNTS)), crash=crashes)
    def open_account(self, ref: str, crash: int | None) -> None:
        self._step(f"open_account({ref})")
        body = {"currency": "ZAR", "customer_ref": ACCOUNTS[ref], "name": f"Account {ref}"}
        self.world.api("PUT", f"/accounts/{ref}", body, storage_plan(crash, None))

    @rule(pick=st.integers(0, 50), amount=st.sampled_from(AMOUNTS), credit=st.booleans(), crash=crashes)
    def charge(self, pick: int, amount: int, credit: bool, crash: int | None) -> None:
        path = self._balance_path(pick)
        self._step(f"charge({path}, {-amount if credit else amount})")
        self.world.charge(path, -amount if credit else amount, storage_plan(crash, None))

    # The merchant's charges are the everyday traffic: drawn twice as often, so pushes carry something
    # under every Moment mood (a lost answer, then a refused write, needs a change before each).
    @rule(pick=st.integers(0, 50), amount=st.sampled_from(AMOUNTS), credit=st.booleans(), crash=crashes)
    def charge_again(self, pick: int, amount: int, credit: bool, crash: int | None) -> None:
        self.charge(pick, amount, credit, crash)

    @rule(pick=st.integers(0, 50), value=st.sampled_from(BALANCE_SETS), crash=crashes)
    def set_balance(self, pick: int, value: int, crash: int | None) -> None:
        path = self._balance_path(pick)
        self._step(f"set_balance({path}, {value})")
        status, view = self.world.api("GET", path)
        if status == 200 and "version" in view:
            body = {"balance": value, "expected_version": view["version"]}
            self.world.api("PUT", f"{path}/balance", body, storage_plan(crash, None))

    @rule()
    def merchant_retries(self) -> None:
        self._step("merchant_retries()")
        self.world.retry_merchant()

    @rule(pick=st.integers(0, 50))
    def customer_named_like_a_moment_id(self, pick: int) -> None:
        """A merchant reference that is another customer's Moment id (Moment's paths take either)."""
        customers = [item for kind, item in self.world.moment.objects() if kind == "customer"]
        if not customers:
            return
        moment_id = customers[pick % len(customers)]["id"]
        self._step(f"customer_named_like_a_moment_id({moment_id})")
        self.world.api("PUT", f"/customers/{moment_id}", {"currency": "ZAR", "balance_model": "accounts"})
        self.world.api("PUT", f"/accounts/acc-{moment_id}", {"currency": "ZAR", "customer_ref": moment_id})

    # --- Moment -------------------------------------------------------------------------------------

    @rule(pick=st.integers(0, 50), amount=st.sampled_from(AMOUNTS))
    def moment_takes_a_payment(self, pick: int, amount: int) -> None:
        objects = [
            (kind, item) for kind, item in self.world.moment.objects() if item.get("balance") is not None
        ]
        if not objects:
            return
        kind, item = objects[pick % len(objects)]
        self._step(f"moment_takes_a_payment({kind} {item['external_reference']}, {amount})")
        payment, event = self.world.moment.pay(kind, item["id"], amount)
        body = json.dumps(event).encode()
        self.world.bodies[payment.application_id] = body
        self.world.new_message(body)

    @rule(pick=st.integers(0, 50), amount=st.sampled_from(AMOUNTS))
    def moment_takes_another_payment(self, pick: int, amount: int) -> None:
        self.moment_takes_a_payment(pick, amount)

    @precondition(lambda self: self.bursts < MAX_BURSTS)
    @rule(pick=st.integers(0, 50), now=st.integers(0, 3))
    def moment_takes_a_burst_of_payments(self, pick: int, now: int) -> None:
        """Many payments to one linked object between two pushes (an outage, a long deferral): all
        delivered and reconciled, then one push reads and books them all. Drawn a quarter as often as
        a rule (`now`): a burst is seconds of moto."""
        linked = self._linked_objects()
        if now or not linked:
            return
        kind, moment_id, _balance_pk, _owner = linked[pick % len(linked)]
        self._step(f"moment_takes_a_burst_of_payments({kind} {moment_id}, {BURST})")
        self.bursts += 1
        messages = []
        for number in range(BURST):
            payment, event = self.world.moment.pay(kind, moment_id, AMOUNTS[number % len(AMOUNTS)])
            body = json.dumps(event).encode()
            self.world.bodies[payment.application_id] = body
            messages.append(self.world.new_message(body))
        self._deliver(messages)
        for _ in range(3):
            self.world.poll_stream()
        self.world.push_when_due()

    @rule(mode=st.sampled_from(MODES))
    def moment_mood(self, mode: str) -> None:
        self._step(f"moment_mood({mode})")
        self.world.moment.mode = mode

    @rule(ref=st.sampled_from(sorted(CUSTOMERS)), balance=st.sampled_from(AMOUNTS))
    def customer_already_at_moment(self, ref: str, balance: int) -> None:
        """The merchant made this customer at Moment before the ledger (a migration, a dashboard)."""
        self._step(f"customer_already_at_moment({ref}, {balance})")
        self.world.moment.create_outside("customer", ref, balance)

    @rule(ref=st.sampled_from(sorted(ACCOUNTS)), balance=st.sampled_from(AMOUNTS))
    def account_at_moment_under_another_customer(self, ref: str, balance: int) -> None:
        self._step(f"account_at_moment_under_another_customer({ref}, {balance})")
        self.world.moment.create_outside("account", ref, balance, owner=f"other-{ref}")

    @rule(pick=st.integers(0, 50), other_target=st.booleans())
    def moment_reuses_an_application_id(self, pick: int, other_target: bool) -> None:
        """The same data.id again, for another balance or with another amount: never a second application."""
        applied = [
            event
            for event in self.world.scan(self.world.events_table)
            if event.get("status") == "applied" and event.get("application_id") in self.world.bodies
        ]
        if not applied:
            return
        event = json.loads(self.world.bodies[applied[pick % len(applied)]["application_id"]])
        data = event["data"]
        if other_target:
            others = [
                item
                for kind, item in self.world.moment.objects()
                if kind == "customer"
                and item["id"] != data.get("customer_id")
                and item.get("balance") is not None
            ]
            if not others:
                return
            data.pop("account_id", None)
            data["customer_id"] = others[pick % len(others)]["id"]
        else:
            data["amount"] += 500
        event["id"] = f"{event['id']}-again"
        self._step(f"moment_reuses_an_application_id({data['id']}, other_target={other_target})")
        self.world.new_message(json.dumps(event).encode())

    @rule(pick=st.integers(0, 50))
    def moment_sends_an_amount_too_long_for_dynamodb(self, pick: int) -> None:
        customers = [item for kind, item in self.world.moment.objects() if kind == "customer"]
        if not customers:
            return
        target = customers[pick % len(customers)]["id"]
        self._step(f"moment_sends_an_amount_too_long_for_dynamodb({target})")
        number = self.world.messages_made + 1
        event = {
            "id": f"evt_poison{number}",
            "type": "obligation.amount_applied",
            "data": {
                "id": f"ob_poison{number}",
                "amount": 10**38 + 7,
                "currency": "ZAR",
                "customer_id": target,
            },
        }
        self.world.new_message(json.dumps(event).encode())

    # --- sequences the search does not draw by chance (each one rule, checked like any other) ---------

    @rule(pick=st.integers(0, 50), amount=st.sampled_from(AMOUNTS))
    def a_payment_unsettled_when_its_customer_is_erased(self, pick: int, amount: int) -> None:
        """Moment takes a payment on a linked object; its webhook is stored, but the reconciler dies on
        every try until the stream gives the record up (it stays `received` for the re-drive); then
        the customer is erased. The payment must still be applied, once (issue 11, item 1)."""
        linked = [item for item in self._linked_objects() if item[3]]
        if not linked:
            return
        kind, moment_id, _balance_pk, owner = linked[pick % len(linked)]
        self._step(f"a_payment_unsettled_when_its_customer_is_erased({kind} {moment_id}, {amount}, {owner})")
        payment, event = self.world.moment.pay(kind, moment_id, amount)
        body = json.dumps(event).encode()
        self.world.bodies[payment.application_id] = body
        self._deliver([self.world.new_message(body)])
        self.world.poll_stream_failing()
        self.world.forget(owner)

    @rule(pick=st.integers(0, 50), first=st.sampled_from(AMOUNTS), second=st.sampled_from(AMOUNTS))
    def moment_loses_a_push_then_refuses_the_next(self, pick: int, first: int, second: int) -> None:
        """A PATCH whose answer is lost on every attempt, then a run whose PATCH Moment refuses (503),
        then a healthy run, each after a charge (issue 11, item 2): every PATCH that may have reached
        Moment explains its balance until one is booked."""
        path = self._balance_path(pick)
        self._step(f"moment_loses_a_push_then_refuses_the_next({path}, {first}, {second})")
        mode = self.world.moment.mode
        self.world.charge(path, first)
        self.world.moment.mode = "lose_answers"
        self.world.push_when_due()
        self.world.charge(path, second)
        self.world.moment.mode = "refuses_writes"
        self.world.push_when_due()
        self.world.moment.mode = "healthy"
        self.world.push_when_due()
        self.world.moment.mode = mode

    @rule(pick=st.integers(0, 50), amount=st.sampled_from(AMOUNTS), charged=st.sampled_from(AMOUNTS))
    def moment_takes_a_payment_before_a_push_reads(self, pick: int, amount: int, charged: int) -> None:
        """A charge waits to be pushed; Moment takes a payment on the object; the push reads Moment's
        balance before the payment's webhook arrives. Moment's balance is not explained yet: the push
        must wait (defer), never overwrite the payment."""
        linked = self._linked_objects()
        if not linked:
            return
        kind, moment_id, balance_pk, _owner = linked[pick % len(linked)]
        path = f"/{kind}s/{balance_pk.split('#', 1)[1]}"
        self._step(f"moment_takes_a_payment_before_a_push_reads({path}, {amount}, charged {charged})")
        self.world.charge(path, charged)
        payment, event = self.world.moment.pay(kind, moment_id, amount)
        body = json.dumps(event).encode()
        self.world.bodies[payment.application_id] = body
        self.world.new_message(body)
        self.world.push_when_due()

    @rule(
        pick=st.integers(0, 50),
        balance=st.sampled_from(AMOUNTS),
        amount=st.sampled_from(AMOUNTS),
        moment_wins=st.booleans(),
    )
    def customer_made_and_paid_at_moment_then_adopted(
        self, pick: int, balance: int, amount: int, moment_wins: bool
    ) -> None:
        """The merchant made a customer at Moment first (a migration) and it was paid there: the
        webhook parks `unmatched`. The ledger then opens the customer with the same balance and the
        pusher adopts it; if held, an operator says which side wins (issue 11, item 8: a link
        re-drives what names it, and the first push waits while any remain)."""
        known = {item["ref"] for item in self.world.scan(self.world.ledger_table) if item["sk"] == "HEAD"}
        at_moment = {item["external_reference"] for _kind, item in self.world.moment.objects()}
        free = [ref for ref, model in sorted(CUSTOMERS.items()) if model == "customer"]
        free = [ref for ref in free if ref not in known and ref not in at_moment]
        if not free:
            return
        ref = free[pick % len(free)]
        self._step(f"customer_made_and_paid_at_moment_then_adopted({ref}, {balance}, paid {amount})")
        moment_id = self.world.moment.create_outside("customer", ref, balance)
        if moment_id is None:
            return
        payment, event = self.world.moment.pay("customer", moment_id, amount)
        body = json.dumps(event).encode()
        self.world.bodies[payment.application_id] = body
        self._deliver([self.world.new_message(body)])
        for _ in range(2):  # read, then sent after the batching window: the payment parks `unmatched`
            self.world.poll_stream()
        self.world.api("PUT", f"/customers/{ref}", {"currency": "ZAR", "name": f"Customer {ref}"})
        self.world.charge(f"/customers/{ref}", balance)
        self.world.push_when_due()
        head = self.world.ledger.get_head(BalanceRef(BalanceKind.CUSTOMER, ref)) or {}
        if "adoption_held" in head:
            self.world.adopt("customer", ref, moment_wins)
            self.world.push_when_due()

    @rule(
        pick=st.integers(0, 50),
        other=st.integers(1, 50),
        amount=st.sampled_from(AMOUNTS),
        another_amount=st.booleans(),
    )
    def moment_sends_one_application_id_for_two_balances(
        self, pick: int, other: int, amount: int, another_amount: bool
    ) -> None:
        """Moment takes a payment on a linked object and its webhook is reconciled; then a webhook with
        the same application id names another linked balance (and maybe another amount). One
        application changes at most one balance, once (issue 11, item 7): the second is never applied."""
        linked = self._linked_objects()
        if len(linked) < 2:
            return
        first = pick % len(linked)
        kind, moment_id, _balance_pk, _owner = linked[first]
        second_kind, second_id, _second_pk, _second_owner = linked[(first + other) % len(linked)]
        if second_id == moment_id:
            return
        self._step(
            f"moment_sends_one_application_id_for_two_balances({kind} {moment_id}, {second_kind} "
            f"{second_id}, {amount}, another_amount={another_amount})"
        )
        payment, event = self.world.moment.pay(kind, moment_id, amount)
        body = json.dumps(event).encode()
        self.world.bodies[payment.application_id] = body
        self._deliver([self.world.new_message(body)])
        for _ in range(2):  # read, then sent after the batching window
            self.world.poll_stream()
        target = self.world.moment.find(second_kind, second_id) or {}
        data = {**event["data"], "customer_id": target.get("customer_id", second_id)}
        data.pop("account_id", None)
        if second_kind == "account":
            data["account_id"] = second_id
        else:
            data["customer_id"] = second_id
        if another_amount:
            data["amount"] += 500
        again = {**event, "id": f"{event['id']}-elsewhere", "data": data}
        self._deliver([self.world.new_message(json.dumps(again).encode())])
        for _ in range(2):
            self.world.poll_stream()

    @precondition(lambda self: bool(self.world.outbox))
    @rule(pick=st.integers(0, 10_000), faults=st.permutations(("throttle", "crash before", "crash after")))
    def deliver_a_webhook_while_storage_fails(self, pick: int, faults: list[str]) -> None:
        """The receiver's write throttled past the SDK's retries, the function dying just before it,
        and just after it, in a drawn order, each on a waiting webhook: a 2xx only for a webhook that
        is stored (invariant 1). All three each time: one drawn fault in three missed a receiver
        that acknowledges a throttled write."""
        self._step(f"deliver_a_webhook_while_storage_fails({', '.join(faults)})")
        for fault in faults:
            if not self.world.outbox:
                return
            message = self.world.outbox[pick % len(self.world.outbox)]
            plan = {
                "throttle": StoragePlan(throttle_at=1),
                "crash before": StoragePlan(crash_at=1),
                "crash after": StoragePlan(crash_at=2),
            }[fault]
            status = self.world.deliver(message, plan)
            if status is not None and status < 300:
                self.world.outbox.remove(message)
            problems = checks.every_step(self.world)
            assert not problems, _report(self, [f"after the {fault} of {message.webhook_id}:", *problems])

    @rule(pick=st.integers(0, 50), balance=st.sampled_from(AMOUNTS), charged=st.sampled_from(AMOUNTS))
    def account_made_at_moment_under_another_customer_then_created(
        self, pick: int, balance: int, charged: int
    ) -> None:
        """Moment holds an account with a reference the ledger has not pushed yet, under another
        customer (a migration, a dashboard); the merchant opens that account for C3 and charges it, and
        the pusher's create meets Moment's (issue 11, item 3). Adopted only if it is C3's: otherwise a
        conflict, never a link to another customer's account (whose payments would change this
        balance, and whose customer would become C3's)."""
        known = {item["ref"] for item in self.world.scan(self.world.ledger_table) if item["sk"] == "HEAD"}
        at_moment = {item["external_reference"] for _kind, item in self.world.moment.objects()}
        # A1 and A2 while free, then references of this rule's own, so it always has one to act on.
        free = [ref for ref in [*sorted(ACCOUNTS), *(f"A{n}" for n in range(3, 10))] if ref not in known]
        free = [ref for ref in free if ref not in at_moment]
        if not free:
            return
        ref = free[pick % min(len(free), 2)]
        self._step(
            f"account_made_at_moment_under_another_customer_then_created({ref}, {balance}, charged {charged})"
        )
        if self.world.moment.create_outside("account", ref, balance, owner=f"other-{ref}") is None:
            return
        mode, self.world.moment.mode = self.world.moment.mode, "healthy"
        self.world.api("PUT", f"/accounts/{ref}", {"currency": "ZAR", "customer_ref": "C3"})
        self.world.charge(f"/accounts/{ref}", charged)
        self.world.push_when_due()
        self.world.moment.mode = mode

    @rule(pick=st.integers(0, 50), amount=st.sampled_from(AMOUNTS))
    def storage_fails_as_a_push_books(self, pick: int, amount: int) -> None:
        """A charge waits to be pushed on a linked object; Moment (healthy) takes the run's PATCH, and
        the write after it, the push's booking, is throttled past the SDK's retries. Not a Moment
        fault, yet that balance's failed push (issue 11, item 5): counted by `PushFailed`, with its
        attempt and backoff on the balance, never only a log line that leaves it due as it was. Then
        a healthy run."""
        linked = self._linked_objects()
        if linked:
            kind, _moment_id, balance_pk, _owner = linked[pick % len(linked)]
            path = f"/{kind}s/{balance_pk.split('#', 1)[1]}"
        else:
            path = self._balance_path(pick)  # nothing linked yet: a create, no PATCH, no fault
        self._step(f"storage_fails_as_a_push_books({path}, {amount})")
        self.world.charge(path, amount)
        moment = self.world.moment
        due = checks.due_for_a_push(self.world)
        mode, moment.mode = moment.mode, "healthy"
        invoked = self.world.push_when_due(storage=StoragePlan(throttle_when=lambda: moment.plan.patches > 0))
        self.world.violations.extend(checks.pushes_left_no_trace(self.world, due, invoked.result))
        # The next run, once its backoff is over, books it (the open intent explains Moment's balance).
        # Without it, drawn again and again, failed bookings pile up to the open intents' cap: `deferred`
        # for an operator by design (docs/pusher.md, "The cap"), not what this rule is about.
        self.world.push_when_due()
        moment.mode = mode

    # --- deliveries and the stream --------------------------------------------------------------------

    @precondition(lambda self: bool(self.world.outbox))
    @rule(pick=st.integers(0, 10_000), again=st.booleans(), crash=crashes, throttle=throttles)
    def deliver_a_webhook(self, pick: int, again: bool, crash: int | None, throttle: int | None) -> None:
        message = self.world.outbox[pick % len(self.world.outbox)]
        self._step(f"deliver_a_webhook({message.webhook_id}, again={again})")
        status = self.world.deliver(message, storage_plan(crash, throttle))
        if status is not None and status < 300 and not again:
            self.world.outbox.remove(message)

    @precondition(lambda self: bool(self.world.outbox))
    @rule()
    def deliver_every_webhook(self) -> None:
        self._step("deliver_every_webhook()")
        for message in list(self.world.outbox):
            status = self.world.deliver(message)
            if status is not None and status < 300:
                self.world.outbox.remove(message)

    @precondition(lambda self: bool(self.world.bodies))
    @rule(pick=st.integers(0, 10_000))
    def moment_sends_an_event_again_under_a_new_id(self, pick: int) -> None:
        bodies = sorted(self.world.bodies)
        application_id = bodies[pick % len(bodies)]
        self._step(f"moment_sends_an_event_again_under_a_new_id({application_id})")
        self.world.new_message(self.world.bodies[application_id])

    @rule()
    def forged_webhook(self) -> None:
        self._step("forged_webhook()")
        body = json.dumps(
            {
                "id": "evt_forged",
                "type": "obligation.amount_applied",
                "data": {"id": "ob_forged", "amount": 1000, "currency": "ZAR", "customer_id": "bcus_forged"},
            }
        ).encode()
        self.world.deliver_forged(body)

    def _tick(self) -> None:
        """A minute of the schedules: Moment delivers its oldest webhook, the stream is polled, the
        pusher runs (no faults)."""
        self.world.clock.advance(60)
        if self.world.outbox:
            message = self.world.outbox[0]
            status = self.world.deliver(message)
            if status is not None and status < 300:
                self.world.outbox.remove(message)
        self.world.poll_stream()
        self.world.push()

    # Rules are drawn evenly: the schedules' minute is two rules, so programs move on as a day would.
    @rule()
    def a_minute_passes(self) -> None:
        self._step("a_minute_passes()")
        self._tick()

    @rule()
    def another_minute_passes(self) -> None:
        self._step("another_minute_passes()")
        self._tick()

    @rule(crash=crashes, throttle=throttles)
    def stream_poll(self, crash: int | None, throttle: int | None) -> None:
        self._step(f"stream_poll(crash={crash}, throttle={throttle})")
        self.world.poll_stream(storage_plan(crash, throttle))

    @rule(pick=st.integers(0, 100))
    def stream_record_delivered_again(self, pick: int) -> None:
        self._step("stream_record_delivered_again()")
        self.world.redeliver_record(pick)

    # --- the scheduled functions, the operator -----------------------------------------------------------

    @rule(crash=crashes, throttle=throttles, moment_crash=crashes)
    def push(self, crash: int | None, throttle: int | None, moment_crash: int | None) -> None:
        self._step(f"push(crash={crash}, throttle={throttle}, moment_crash={moment_crash})")
        self.world.push(storage_plan(crash, throttle), MomentPlan(crash_at=moment_crash))

    @rule(operator=st.booleans(), crash=crashes, throttle=throttles)
    def redrive(self, operator: bool, crash: int | None, throttle: int | None) -> None:
        self._step(f"redrive(operator={operator})")
        self.world.redrive(operator, storage_plan(crash, throttle))

    @rule(pick=st.integers(0, 50), crash=crashes)
    def forget(self, pick: int, crash: int | None) -> None:
        refs = [
            item["ref"]
            for item in self.world.scan(self.world.ledger_table)
            if item["pk"].startswith("CUSTOMER#") and item["sk"] == "HEAD"
        ]
        if not refs:
            return
        ref = sorted(refs)[pick % len(refs)]
        self._step(f"forget({ref})")
        self.world.forget(ref, storage_plan(crash, None))

    @rule(seconds=st.sampled_from((1, 30, 700, 4000, 22_000)))
    def time_passes(self, seconds: int) -> None:
        self._step(f"time_passes({seconds})")
        self.world.clock.advance(seconds)

    # --- checks ------------------------------------------------------------------------------------

    @invariant()
    def invariants_hold(self) -> None:
        if not hasattr(self, "world"):
            return
        problems = checks.every_step(self.world)
        assert not problems, _report(self, problems)
        self.failed = False

    def teardown(self) -> None:
        if not hasattr(self, "world"):
            return
        try:
            if not self.failed and not self.focus_played and self._play_focus():
                self.invariants_hold()  # a program that ended before its focus had anything to act on
            if not self.failed:
                quiesce(self.world)
                problems = checks.every_step(self.world) + checks.at_quiescence(self.world)
                assert not problems, _report(self, problems, quiet=True)
        except BaseException:
            self.failed = True
            raise
        finally:
            if self.failed:
                FOCUS_RUN["failed"] = self.focus  # shrinking replays this program: the same focus
            self.world.close()

    def _play_focus(self) -> bool:
        """Play this program's focus now, if it has something to act on; whether it was played."""
        method = getattr(type(self), self.focus)
        if not all(check(self) for check in getattr(method, RULE_MARKER).preconditions):
            return False
        played = len(self.steps)
        self.focus_played = True  # its own _step must not play it again
        method(self, **self.focus_arguments)
        self.focus_played = len(self.steps) > played  # it returned early: nothing to act on yet
        return self.focus_played

    def _deliver(self, messages: list[Any]) -> None:
        """Moment delivers these webhooks now (no faults); each answered 2xx leaves its outbox."""
        for message in messages:
            status = self.world.deliver(message)
            if status is not None and status < 300 and message in self.world.outbox:
                self.world.outbox.remove(message)

    def _linked_objects(self) -> list[tuple[str, str, str, str | None]]:
        """(kind, Moment id, balance key, owning customer's reference) of every Moment object with a
        balance that the ledger has linked, in a stable order."""
        ledger = self.world.scan(self.world.ledger_table)
        heads = {item["pk"]: item for item in ledger if item["sk"] == "HEAD"}
        found = []
        for item in sorted(ledger, key=lambda item: item["pk"]):
            if item["sk"] != "MOMENT" or "bill_pk" in item:  # a bill's link: no balance
                continue
            moment_id = item["pk"].removeprefix("MOMENT#")
            at_moment = self.world.moment.find(item["kind"], moment_id)
            head = heads.get(item["balance_pk"])
            if at_moment is None or at_moment.get("balance") is None or head is None:
                continue
            owner = head.get("customer_ref") if item["kind"] == "account" else head.get("ref")
            found.append((item["kind"], moment_id, item["balance_pk"], owner))
        return found

    def _balance_path(self, pick: int) -> str:
        heads = [
            item
            for item in self.world.scan(self.world.ledger_table)
            if item["sk"] == "HEAD" and "version" in item and not item["pk"].startswith("BILL#")
        ]
        if not heads:
            return "/customers/C1"
        head = sorted(heads, key=lambda item: item["pk"])[pick % len(heads)]
        return f"/{head['kind']}s/{head['ref']}"


def quiesce(world: World) -> None:
    """Faults off; deliver everything, drain the stream, re-drive, push until nothing is due, with the
    clock moved past every backoff, as the schedules would over the next hours."""
    world.moment.mode = "healthy"
    for _ in range(QUIET_ROUNDS):
        for message in list(world.outbox):
            status = world.deliver(message)
            if status is not None and status < 300:
                world.outbox.remove(message)
        world.retry_merchant()
        for _ in range(3):
            world.poll_stream()
        world.clock.advance(3700)  # past the re-drive's grace and the pusher's longest backoff
        world.redrive()
        world.redrive(operator=True)
        for _ in range(3):
            world.poll_stream()
        world.push()
        if (
            not world.outbox
            and not world.merchant_retries
            and not world.ledger.pending_pushes(world.clock() + 7 * 3600)
            and not bills_settling(world)
        ):
            return


def _report(machine: Simulation, problems: list[str], quiet: bool = False) -> str:
    world = machine.world
    lines = [f"{len(problems)} invariant(s) broken{' once quiet' if quiet else ''}:", *problems]
    if world.function_errors:
        lines += ["function errors (last 5):", *world.function_errors[-5:]]
    lines += ["steps:", *(f"  {number}. {step}" for number, step in enumerate(machine.steps, 1))]
    return "\n".join(lines)
