"""Adoption, ownership and late links (issue 11, items 3 and 8): the pusher against the Moment sandbox
over real HTTP on loopback, the ledger in moto, the ledger API and the operator CLI as they run.

- An object Moment holds under the ledger's reference is adopted only if it is the balance's own (its
  external_reference, and for an account its customer); anything else is a `conflict`, shown, counted
  and backed off, with a way out (`link`, `unlink`, `adopt`).
- Linking a Moment id re-drives at once the payments parked unmatched that name it, and the first push
  to a linked object waits while any remain: it would erase them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from integration.test_balance_pusher import answer_lost_for
from moment_sandbox import MomentSandbox
from moment_sync import redrive as redrive_module
from moment_sync.adapters.ledger_table import LedgerTable, TransientLedgerError
from moment_sync.cli import main
from moment_sync.ledger.model import BalanceKind, BalanceRef, Entry, EntryKind
from moment_sync.ledger.sync import SYNC_STATES, sync_state
from moment_sync.moment_client import MomentClient, NewAccount, NewCustomer
from moment_sync.observability import metrics
from moment_sync.pusher import BalancePusher
from moment_sync.runtime import LedgerDependencies
from support.ledger import LedgerHarness
from support.ledger_api import LedgerApi
from support.pushers import InFlight, balance_pusher
from support.webhooks import NOW


# sandbox, transport, moment, clock, harness, leases: tests/integration/conftest.py (support/pushers.py)
@pytest.fixture
def pusher(harness: LedgerHarness, moment: MomentClient) -> BalancePusher:
    # With the events table: a link it makes re-drives the payments parked unmatched that name it.
    return balance_pusher(harness, moment, concurrency=2, events=harness.events)


@pytest.fixture(autouse=True)
def counted() -> Iterator[dict[str, Any]]:
    """The metrics the pusher counted (Powertools' metric set, as the handler would flush it)."""
    metrics.clear_metrics()
    yield metrics.metric_set
    metrics.clear_metrics()


def count(counted: dict[str, Any], name: str) -> float:
    return float(sum(counted.get(name, {}).get("Value", [])))


def run(pusher: BalancePusher) -> dict[str, int]:
    return pusher.push_pending(time_left=lambda: 300.0).results


def charge(harness: LedgerHarness, balance: BalanceRef, charge_id: str, amount: int) -> None:
    entry = Entry(EntryKind.CHARGE, amount, charge_id, {"charge_id": charge_id}, "2026-09-21T00:00:00.000Z")
    head = harness.head(balance)
    assert harness.ledger.apply_entry(balance, entry, head["currency"]).outcome.value == "applied"


def on_moment(sandbox: MomentSandbox, kind: str, ref: str) -> dict[str, Any]:
    objects = sandbox.state()["customers" if kind == "customer" else "accounts"]
    return next(item for item in objects if item["external_reference"] == ref)


def paid_at_moment(sandbox: MomentSandbox, harness: LedgerHarness, webhook_id: str, **order: Any) -> None:
    """A payment Moment applies, whose webhook is stored and reconciled (parked unmatched when its
    Moment id is not linked yet)."""
    paid = sandbox.pay(**order)
    harness.receive(webhook_id, json.dumps(paid["event"]).encode())
    harness.invoke(harness.next_batch())


def cli(harness: LedgerHarness, moment: MomentClient, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(
        ["--events-table", harness.events_name, "--ledger-table", harness.ledger_name, *argv],
        out=out,
        moment=moment,
    )
    return code, out.getvalue()


# --- ownership -----------------------------------------------------------------------------------


def test_an_account_moment_holds_under_another_customer_is_not_adopted(
    harness: LedgerHarness,
    pusher: BalancePusher,
    sandbox: MomentSandbox,
    moment: MomentClient,
    clock: list[float],
    counted: dict[str, Any],
) -> None:
    # GIVEN Moment holds account WATER1 under another customer
    other = moment.create_customer(NewCustomer("SOMEONE-ELSE"))
    moment.create_account(NewAccount(other.id, "WATER1", balance=100, currency="ZAR"))
    # AND the ledger's WATER1 belongs to HOUSE1, which Moment does not have yet
    harness.open_customer("HOUSE1", balance_model="accounts")
    water = harness.open_account("WATER1", "HOUSE1")
    charge(harness, water, "w-1", 700)
    # WHEN the pusher runs
    assert run(pusher) == {"conflict": 1}
    # THEN nothing is adopted or linked, and Moment's account is untouched
    house = harness.head(BalanceRef(BalanceKind.CUSTOMER, "HOUSE1"))
    assert "moment_id" not in house and "moment_id" not in harness.head(water)
    assert harness.ledger.resolve_moment_id(other.id) is None
    assert on_moment(sandbox, "account", "WATER1")["balance"] == 100
    # AND the balance shows `conflict`, counted, with an attempt and a backoff
    head = harness.head(water)
    assert sync_state(head) == "conflict" and "conflict" in SYNC_STATES
    assert "belongs to customer 'SOMEONE-ELSE'" in head["push_conflict"]
    assert (head["push_attempts"], bool(head["next_push_at"])) == (1, True)
    assert count(counted, "BalanceConflict") == 1
    assert run(pusher) == {}  # backing off
    clock[0] += 2 * 3600
    assert run(pusher) == {"conflict": 1}
    assert harness.head(water)["push_attempts"] == 2
    assert count(counted, "BalanceConflict") == 2


def test_an_account_under_a_linked_customer_is_adopted_only_from_that_customer(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, moment: MomentClient
) -> None:
    other = moment.create_customer(NewCustomer("SOMEONE-ELSE"))
    moment.create_account(NewAccount(other.id, "RATES1", balance=100, currency="ZAR"))
    mine = moment.create_customer(NewCustomer("HOUSE2"))
    harness.open_customer("HOUSE2", moment_id=mine.id, balance_model="accounts")
    rates = harness.open_account("RATES1", "HOUSE2")
    charge(harness, rates, "r-1", 900)
    assert run(pusher) == {"conflict": 1}
    assert f"belongs to {other.id}, not to {mine.id}" in harness.head(rates)["push_conflict"]
    assert "moment_id" not in harness.head(rates)


def test_a_customer_reference_equal_to_another_customers_moment_id_is_never_adopted(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, moment: MomentClient
) -> None:
    # GIVEN (from before the API refused such references) a ledger customer whose reference is another
    # customer's Moment id: Moment's GET /billing/customers/{that} answers with the other customer
    other = moment.create_customer(NewCustomer("SOMEONE-ELSE"))
    harness.open_customer(other.id, balance_model="accounts")
    account = harness.open_account("ACC-LOOKALIKE", other.id)
    charge(harness, account, "c-1", 300)
    assert run(pusher) == {"conflict": 1}
    # THEN the other customer is not linked to it, and no account was created under it
    assert harness.ledger.resolve_moment_id(other.id) is None
    assert "not ours to adopt" in harness.head(account)["push_conflict"]
    assert sandbox.state()["accounts"] == []


def test_the_api_refuses_references_shaped_like_moment_ids(harness: LedgerHarness) -> None:
    api = LedgerApi(LedgerDependencies(events=harness.events, ledger=harness.ledger, clock=harness.clock))
    for ref in ("bcus_H4jp6KnU5cPw263v1jyz4", "bacc_9dkS0aLq1", "bill_1"):
        refused = api.put(f"/customers/{ref}", {"currency": "ZAR"})
        assert (refused.status, refused.problem) == (422, "reference-reserved")
    assert api.put("/customers/GROUP1", {"currency": "ZAR", "balance_model": "accounts"}).status == 201
    account = api.put("/accounts/bacc_x", {"customer_ref": "GROUP1", "currency": "ZAR"})
    owner = api.put("/accounts/ACC1", {"customer_ref": "bcus_x", "currency": "ZAR"})
    assert (account.status, account.problem) == (422, "reference-reserved")
    assert (owner.status, owner.problem) == (422, "reference-reserved")
    # a reference merely containing the prefix is fine
    assert api.put("/customers/UCR-bcus_1", {"currency": "ZAR"}).status == 201
    assert harness.ledger.get_head(BalanceRef(BalanceKind.CUSTOMER, "bcus_x")) is None


def test_the_conflict_is_shown_by_the_api_and_the_cli(
    harness: LedgerHarness, pusher: BalancePusher, moment: MomentClient
) -> None:
    other = moment.create_customer(NewCustomer("SOMEONE-ELSE"))
    moment.create_account(NewAccount(other.id, "ACC9", balance=1, currency="ZAR"))
    harness.open_customer("GROUP9", balance_model="accounts")
    charge(harness, harness.open_account("ACC9", "GROUP9"), "c-1", 50)
    run(pusher)
    api = LedgerApi(LedgerDependencies(events=harness.events, ledger=harness.ledger, clock=harness.clock))
    view = api.get("/accounts/ACC9")  # checked against docs/api/openapi.yaml by the harness
    assert view.status == 200
    assert view.body["sync"]["state"] == "conflict"
    assert "SOMEONE-ELSE" in view.body["sync"]["conflict"]
    code, shown = cli(harness, moment, "balance", "account", "ACC9")
    assert code == 0 and "push_conflict" in shown and "SOMEONE-ELSE" in shown
    code, shown = cli(harness, moment, "--json", "balance", "account", "ACC9")
    assert json.loads(shown)["head"]["sync_state"] == "conflict"


def test_the_real_owner_blocked_by_a_wrong_link_is_a_conflict_with_a_way_out(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, moment: MomentClient
) -> None:
    # GIVEN (the old adoption bug) UCRA linked to UCRB's Moment object, and UCRB not linked
    theirs = moment.create_customer(NewCustomer("UCRB", balance=40, currency="ZAR"))
    wrong = harness.open_customer("UCRA", moment_id=theirs.id)
    owner = harness.open_customer("UCRB")
    charge(harness, owner, "c-1", 40)
    # WHEN the pusher adopts UCRB's object for UCRB: the link is taken, so a conflict, not a failure
    assert run(pusher) == {"conflict": 1}
    head = harness.head(owner)
    assert sync_state(head) == "conflict" and "already linked" in head["push_conflict"]
    # THEN the operator unlinks the wrong one and links the right one (checked at Moment)
    assert cli(harness, moment, "unlink", "customer", "UCRA")[0] == 0
    code, out = cli(harness, moment, "link", "customer", "UCRB", theirs.id)
    assert code == 0, out
    # AND the next run pushes UCRB, and recreates UCRA's own object at Moment
    assert run(pusher) == {"in_sync": 1, "created": 1}
    assert harness.head(wrong)["moment_id"] not in (None, theirs.id)
    assert on_moment(sandbox, "customer", "UCRA")["balance"] == 0
    assert sync_state(harness.head(owner)) == "synced"


def test_a_payment_whose_webhook_comes_after_the_first_push_is_restored_by_the_next(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, moment: MomentClient
) -> None:
    """The window that remains (docs/pusher.md#windows): a payment Moment applied whose webhook the
    ledger has not even stored when the first push goes. It is overwritten on Moment for a cycle;
    once its webhook is reconciled, the next push puts it back. Nothing is lost."""
    moment.create_customer(
        NewCustomer("LATE5", balance=5000, currency="ZAR", metadata={"created_by": "moment-balance-sync"})
    )
    customer = harness.open_customer("LATE5")
    charge(harness, customer, "c-1", 5000)
    paid = sandbox.pay(customer="LATE5", amount=2000)  # Moment shows 3000; no webhook stored yet
    charge(harness, customer, "c-2", 100)
    assert run(pusher) == {"pushed": 1}
    assert on_moment(sandbox, "customer", "LATE5")["balance"] == 5100  # overwritten for one cycle
    harness.receive("msg_late5", json.dumps(paid["event"]).encode())
    harness.invoke(harness.next_batch())
    assert run(pusher) == {"pushed": 1}
    assert on_moment(sandbox, "customer", "LATE5")["balance"] == harness.head(customer)["balance"] == 3100


# --- ways out ----------------------------------------------------------------------------------


def test_link_checks_the_object_at_moment_then_clears_the_conflict(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, moment: MomentClient
) -> None:
    other = moment.create_customer(NewCustomer("SOMEONE-ELSE"))
    held = moment.create_account(NewAccount(other.id, "ACC5", balance=1, currency="ZAR"))
    harness.open_customer("GROUP5", balance_model="accounts")
    account = harness.open_account("ACC5", "GROUP5")
    charge(harness, account, "c-1", 50)
    assert run(pusher) == {"conflict": 1}
    # the other customer's account, or an object with another reference, is refused
    code, _ = cli(harness, moment, "link", "account", "ACC5", held.id)
    assert code == 1 and "moment_id" not in harness.head(account)
    assert cli(harness, moment, "link", "account", "ACC5", "bcus_nope")[0] == 2
    # Moment's side is put right: the account moves to GROUP5's customer (here: a new one made for it)
    mine = moment.create_customer(NewCustomer("GROUP5"))
    sandbox.moment.store._accounts.get(held.id).customer_id = mine.id  # as Moment's support would
    code, out = cli(harness, moment, "link", "account", "ACC5", held.id)
    assert code == 0, out
    assert harness.head(BalanceRef(BalanceKind.CUSTOMER, "GROUP5"))["moment_id"] == mine.id
    head = harness.head(account)
    assert head["moment_id"] == held.id and sync_state(head) == "pending" and "next_push_at" not in head
    assert run(pusher) == {"pushed": 1}
    assert on_moment(sandbox, "account", "ACC5")["balance"] == 50


def test_unlink_forgets_a_wrong_link_and_the_next_run_recreates(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, moment: MomentClient
) -> None:
    # GIVEN a customer linked (by the old adoption) to another customer's object
    other = moment.create_customer(NewCustomer("SOMEONE-ELSE", balance=10, currency="ZAR"))
    customer = harness.open_customer("UCR7", moment_id=other.id)
    charge(harness, customer, "c-1", 400)
    code, out = cli(harness, moment, "unlink", "customer", "UCR7")
    assert code == 0, out
    # (read afresh: a warm reconciler's cache forgets the link within LINK_CACHE_SECONDS)
    assert LedgerTable(harness.dynamodb, harness.ledger_name).resolve_moment_id(other.id) is None
    assert "moment_id" not in harness.head(customer)
    assert run(pusher) == {"created": 1}
    assert on_moment(sandbox, "customer", "UCR7")["balance"] == 400
    assert on_moment(sandbox, "customer", "SOMEONE-ELSE")["balance"] == 10
    assert cli(harness, moment, "unlink", "customer", "NOBODY")[0] == 1


# --- bulk adoption policy ------------------------------------------------------------------------


def test_a_merchants_own_object_with_another_balance_is_held_until_an_operator_says_which_wins(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, moment: MomentClient
) -> None:
    # GIVEN two customers the merchant made at Moment before, with balances other than the ledger's
    moment.create_customer(NewCustomer("MIG1", balance=999, currency="ZAR"))
    moment.create_customer(NewCustomer("MIG2", balance=888, currency="ZAR"))
    moment.create_customer(NewCustomer("MIG3", balance=700, currency="ZAR"))
    for ref, amount in (("MIG1", 2000), ("MIG2", 3000), ("MIG3", 700)):
        charge(harness, harness.open_customer(ref), f"c-{ref}", amount)
    # WHEN the pusher meets them: the equal one is adopted, the others held (nothing pushed)
    assert run(pusher) == {"conflict": 2, "in_sync": 1}
    assert on_moment(sandbox, "customer", "MIG1")["balance"] == 999
    first = harness.head(BalanceRef(BalanceKind.CUSTOMER, "MIG1"))
    assert sync_state(first) == "conflict" and first["adoption_held"] == 999
    assert "--ledger-wins|--moment-wins" in first["push_conflict"]
    # THEN an operator says which side wins: the ledger's for one, Moment's for the other
    assert cli(harness, moment, "adopt", "customer", "MIG1", "--ledger-wins")[0] == 0
    assert cli(harness, moment, "adopt", "customer", "MIG2", "--moment-wins")[0] == 0
    assert cli(harness, moment, "adopt", "customer", "MIG1", "--ledger-wins")[0] == 1  # no longer held
    assert run(pusher) == {"pushed": 1, "in_sync": 1}
    assert on_moment(sandbox, "customer", "MIG1")["balance"] == 2000
    assert harness.head(BalanceRef(BalanceKind.CUSTOMER, "MIG2"))["balance"] == 888
    assert on_moment(sandbox, "customer", "MIG2")["balance"] == 888
    harness.assert_balances_equal_their_entries()


def test_adopt_all_held_decides_every_held_balance_at_once(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, moment: MomentClient
) -> None:
    for number in range(3):
        moment.create_customer(NewCustomer(f"BULK{number}", balance=5, currency="ZAR"))
        charge(harness, harness.open_customer(f"BULK{number}"), f"c-{number}", 100 + number)
    assert run(pusher) == {"conflict": 3}
    code, out = cli(harness, moment, "adopt", "--all-held", "--ledger-wins")
    assert code == 0 and out.count("the ledger's balance wins") == 3
    assert run(pusher) == {"pushed": 3}
    assert [on_moment(sandbox, "customer", f"BULK{n}")["balance"] for n in range(3)] == [100, 101, 102]
    assert cli(harness, moment, "adopt", "--all-held", "--ledger-wins")[1].startswith("no balance is held")
    assert cli(harness, moment, "adopt", "--ledger-wins")[0] == 2


def test_the_pushers_own_lost_create_is_adopted_without_a_hold(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, moment: MomentClient
) -> None:
    # GIVEN an object this service created (its answer lost), lowered since by a payment
    moment.create_customer(
        NewCustomer("OWN1", balance=500, currency="ZAR", metadata={"created_by": "moment-balance-sync"})
    )
    charge(harness, harness.open_customer("OWN1"), "c-1", 800)
    assert run(pusher) == {"pushed": 1}
    assert on_moment(sandbox, "customer", "OWN1")["balance"] == 800


# --- item 8: a link re-drives, and the first push waits ----------------------------------------


def test_an_adoption_re_drives_the_unmatched_payments_naming_it_before_any_push(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, moment: MomentClient
) -> None:
    # GIVEN a customer the merchant made at Moment, paid R20 there; its webhook parked unmatched
    existing = moment.create_customer(NewCustomer("LATE1", balance=5000, currency="ZAR"))
    paid_at_moment(sandbox, harness, "msg_late", customer="LATE1", amount=2000)
    assert harness.event("msg_late")["reason"] == "unmatched"
    customer = harness.open_customer("LATE1")
    charge(harness, customer, "c-1", 5000)
    # WHEN the pusher creates it: Moment has it, so it is adopted and linked
    assert run(pusher) == {"in_sync": 1}
    # THEN the link re-drove the payment at once, so the ledger agrees with Moment: nothing erased
    assert harness.event("msg_late")["status"] == "applied"
    assert harness.head(customer)["moment_id"] == existing.id
    assert on_moment(sandbox, "customer", "LATE1")["balance"] == harness.head(customer)["balance"] == 3000


def test_an_operators_link_re_drives_the_unmatched_payments_naming_it(
    harness: LedgerHarness, sandbox: MomentSandbox, moment: MomentClient
) -> None:
    existing = moment.create_customer(NewCustomer("LATE2", balance=900, currency="ZAR"))
    paid_at_moment(sandbox, harness, "msg_a", customer="LATE2", amount=100)
    paid_at_moment(sandbox, harness, "msg_b", customer="LATE2", amount=200)
    customer = harness.open_customer("LATE2")
    charge(harness, customer, "c-1", 900)
    code, out = cli(harness, moment, "link", "customer", "LATE2", existing.id)
    assert code == 0 and "re-drove 2 unmatched payment(s)" in out
    assert {harness.event(name)["status"] for name in ("msg_a", "msg_b")} == {"applied"}
    assert harness.head(customer)["balance"] == 600


def test_the_redrives_own_link_re_drives_the_other_payments_naming_it(
    harness: LedgerHarness, sandbox: MomentSandbox, moment: MomentClient, clock: list[float]
) -> None:
    from moment_sync.adapters.moment_directory import MomentClientDirectory
    from moment_sync.redrive import redrive

    existing = moment.create_customer(NewCustomer("LATE3", balance=900, currency="ZAR"))
    paid_at_moment(sandbox, harness, "msg_a", customer="LATE3", amount=100)
    paid_at_moment(sandbox, harness, "msg_b", customer="LATE3", amount=200)
    customer = harness.open_customer("LATE3")
    # WHEN the re-drive is asked about one of them only, it links the id from Moment's record
    report = redrive(
        ["msg_a"],
        events=harness.events,
        ledger=harness.ledger,
        directory=MomentClientDirectory(lambda: moment),
        now=harness.clock,
    )
    # THEN the other payment naming that id is applied at once too
    assert report.linked == [f"{existing.id} -> customer LATE3"]
    assert harness.event("msg_b")["status"] == "applied"
    assert harness.head(customer)["balance"] == -300


def test_the_first_push_after_a_link_waits_while_unmatched_payments_name_it(
    harness: LedgerHarness,
    pusher: BalancePusher,
    sandbox: MomentSandbox,
    moment: MomentClient,
    monkeypatch: pytest.MonkeyPatch,
    counted: dict[str, Any],
    clock: list[float],
) -> None:
    # GIVEN Moment's customer was paid R20; its webhook parked unmatched before the id was linked
    existing = moment.create_customer(NewCustomer("LATE4", balance=5000, currency="ZAR"))
    paid_at_moment(sandbox, harness, "msg_late", customer="LATE4", amount=2000)
    customer = harness.open_customer("LATE4")
    charge(harness, customer, "c-1", 5000)
    charge(harness, customer, "c-2", 100)
    # AND the id was linked by a process that stopped before re-driving (here: the re-drive fails)
    harness.ledger.link_moment_id(customer, existing.id)

    def throttled(*_args: Any, **_kwargs: Any) -> Any:
        raise TransientLedgerError("ThrottlingException")

    monkeypatch.setattr(redrive_module, "reconcile_event", throttled)
    # WHEN the pusher runs: the first push to that object waits, flagged and counted
    assert run(pusher) == {"deferred": 1}
    head = harness.head(customer)
    assert "1 payment(s) parked unmatched" in head["push_waiting"]
    assert sync_state(head) == "pending" and head["defer_count"] == 1
    assert count(counted, "PushWaitingForPayments") == 1
    assert on_moment(sandbox, "customer", "LATE4")["balance"] == 3000  # the payment is not erased
    # THEN once the payment can be applied, the next run applies it; the object is the merchant's own
    # with another balance, so it is held for an operator like any adoption (the bulk policy)
    monkeypatch.undo()
    assert run(pusher) == {"conflict": 1}
    assert harness.event("msg_late")["status"] == "applied"
    assert on_moment(sandbox, "customer", "LATE4")["balance"] == 3000
    # AND once the operator says the ledger wins, its balance is pushed
    assert cli(harness, moment, "adopt", "customer", "LATE4", "--ledger-wins")[0] == 0
    clock[0] += 7200
    assert run(pusher) == {"pushed": 1}
    assert on_moment(sandbox, "customer", "LATE4")["balance"] == harness.head(customer)["balance"] == 3100
    assert "push_waiting" not in harness.head(customer)


def test_the_redrive_never_links_an_account_moment_holds_under_another_customer(
    harness: LedgerHarness, sandbox: MomentSandbox, moment: MomentClient
) -> None:
    from moment_sync.adapters.moment_directory import MomentClientDirectory
    from moment_sync.redrive import redrive

    # GIVEN Moment's account ACC6 belongs to another customer, and is paid there
    other = moment.create_customer(NewCustomer("SOMEONE-ELSE"))
    theirs = moment.create_account(NewAccount(other.id, "ACC6", balance=500, currency="ZAR"))
    paid_at_moment(sandbox, harness, "msg_theirs", account="ACC6", amount=100)
    # AND the ledger's ACC6 belongs to GROUP6
    harness.open_customer("GROUP6", balance_model="accounts")
    account = harness.open_account("ACC6", "GROUP6")
    # WHEN the re-drive asks Moment whose the id is: the reference matches, the owner does not
    redrive(
        ["msg_theirs"],
        events=harness.events,
        ledger=harness.ledger,
        directory=MomentClientDirectory(lambda: moment),
        now=harness.clock,
    )
    # THEN it is not linked, and the payment stays unmatched for an operator
    assert harness.ledger.resolve_moment_id(theirs.id) is None
    assert harness.event("msg_theirs")["reason"] == "unmatched"
    assert harness.head(account)["balance"] == 0


def test_a_grouping_customer_linked_to_the_wrong_moment_customer_is_unlinked_with_its_accounts(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, moment: MomentClient
) -> None:
    # GIVEN (the old adoption bug) HOUSE7 linked to another Moment customer, its account created there
    other = moment.create_customer(NewCustomer("SOMEONE-ELSE"))
    wrong_account = moment.create_account(NewAccount(other.id, "WATER7", balance=0, currency="ZAR"))
    house = harness.open_customer("HOUSE7", moment_id=other.id, balance_model="accounts")
    water = harness.open_account("WATER7-L", "HOUSE7")
    harness.ledger.link_moment_id(water, wrong_account.id)
    charge(harness, water, "w-1", 250)
    # WHEN the operator unlinks the customer with its accounts
    code, out = cli(harness, moment, "unlink", "customer", "HOUSE7", "--with-accounts")
    assert code == 0, out
    assert "moment_id" not in harness.head(house) and "moment_id" not in harness.head(water)
    assert "push_shard" not in harness.head(house)  # a grouping customer holds no balance to push
    # THEN the next run creates HOUSE7 and its account at Moment, under the right customer
    assert run(pusher) == {"created": 1}
    mine = on_moment(sandbox, "customer", "HOUSE7")
    assert on_moment(sandbox, "account", "WATER7-L")["customer_id"] == mine["id"]
    assert on_moment(sandbox, "account", "WATER7-L")["balance"] == 250


def test_a_link_made_by_the_redrive_is_held_like_the_pushers_own_adoption(
    harness: LedgerHarness,
    pusher: BalancePusher,
    sandbox: MomentSandbox,
    moment: MomentClient,
    clock: list[float],
) -> None:
    """The bulk adoption policy does not depend on which scheduled function runs first: a merchant's
    own object that the re-drive links (its customer paid before the pusher's first run) is held for
    an operator too, not overwritten by the first push."""
    from moment_sync.adapters.moment_directory import MomentClientDirectory
    from moment_sync.redrive import redrive_stuck

    sandbox.configure(applies_payments=True)
    moment.create_customer(NewCustomer("MIG1", balance=999, currency="ZAR"))
    customer = harness.open_customer("MIG1")
    charge(harness, customer, "c-MIG1", 2000)
    paid_at_moment(sandbox, harness, "msg_pay1", customer="MIG1", amount=100)
    assert harness.event("msg_pay1")["reason"] == "unmatched"
    # WHEN the scheduled re-drive runs before the pusher: it links MIG1 from Moment's record
    clock[0] += 700
    redrive_stuck(
        events=harness.events,
        ledger=harness.ledger,
        directory=MomentClientDirectory(lambda: moment),
        now=harness.clock,
        grace_seconds=0,
        back_off=False,
    )
    assert harness.event("msg_pay1")["status"] == "applied"
    # THEN the pusher holds the merchant's object, as its own adoption does
    assert run(pusher) == {"conflict": 1}
    assert on_moment(sandbox, "customer", "MIG1")["balance"] == 899
    assert sync_state(harness.head(customer)) == "conflict"


def test_an_object_the_redrive_links_with_nothing_charged_is_compared_not_left_synced(
    harness: LedgerHarness,
    pusher: BalancePusher,
    moment: MomentClient,
    clock: list[float],
) -> None:
    """Found by the simulation: a customer Moment already had (R10), opened in the ledger with nothing
    charged, linked by the re-drive from a payment naming it that then applied nothing (its
    application id was already applied elsewhere). Nothing had made the balance pending, so no push
    run ever compared it with Moment: `synced`, Moment R10, the ledger 0. The link now makes a
    never-pushed balance pending, and the pusher holds the differing object for an operator."""
    from moment_sync.adapters.moment_directory import MomentClientDirectory
    from moment_sync.redrive import redrive_stuck
    from support.ledger import payment

    existing = moment.create_customer(NewCustomer("C4", balance=1000, currency="ZAR"))
    customer = harness.open_customer("C4")
    harness.open_customer("C5", moment_id="bcus_c5")
    harness.receive("msg_c5", payment("ob_x", 100, customer_id="bcus_c5"))
    harness.receive("msg_c4", payment("ob_x", 100, customer_id=existing.id))
    harness.invoke(harness.next_batch())
    assert harness.event("msg_c4")["reason"] == "unmatched"
    clock[0] += 700
    redrive_stuck(
        events=harness.events,
        ledger=harness.ledger,
        directory=MomentClientDirectory(lambda: moment),
        now=harness.clock,
        grace_seconds=0,
        back_off=False,
    )
    assert harness.event("msg_c4")["reason"] == "application_conflict"
    assert harness.head(customer)["moment_id"] == existing.id
    assert sync_state(harness.head(customer)) == "pending"
    assert run(pusher)["conflict"] == 1  # C4 (C5's made-up Moment id fails on its own)
    assert sync_state(harness.head(customer)) == "conflict"


def test_an_event_parked_again_for_another_reason_leaves_the_unmatched_index(harness: LedgerHarness) -> None:
    """Parked `unmatched`, then (once its id was linked) parked for another reason: it must leave the
    `UnmatchedByMomentId` index, or a first push to that object would wait for it for ever."""
    from moment_sync.reconciliation import ParkReason

    harness.receive("msg_1", b'{"type": "obligation.amount_applied"}')
    harness.events.park("msg_1", ParkReason.UNMATCHED, "no customer", NOW, moment_id="bcus_9")
    assert list(harness.events.unmatched_naming("bcus_9")) == ["msg_1"]
    harness.events.park("msg_1", ParkReason.APPLICATION_CONFLICT, "applied elsewhere", NOW + 1)
    assert list(harness.events.unmatched_naming("bcus_9")) == []


# --- a create's intent that could not be dropped ----------------------------------------------------


class RefuseIntentDrops:
    """Throttles, past the SDK's tries, every write that drops an open intent (DynamoDB's 400 answer at
    botocore's `before-call`, as tests/integration/test_push_conflicts.py gives it)."""

    def __init__(self) -> None:
        self.armed = True
        self.refused = 0

    def __call__(self, params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if not self.armed or not str(json.loads(params["body"]).get("UpdateExpression", "")).startswith(
            "REMOVE push_intents["
        ):
            return None
        self.refused += 1
        refused = {
            "Error": {"Code": "ProvisionedThroughputExceededException", "Message": "throttled"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }
        return AWSResponse("https://dynamodb.af-south-1.amazonaws.com/", 400, {}, None), refused


def merchants_customer_at_moment(harness: LedgerHarness, moment: MomentClient) -> BalanceRef:
    """MIG1, made by the merchant at Moment with 500 (no `created_by`); the ledger's owes 3000."""
    moment.create_customer(NewCustomer("MIG1", balance=500, currency="ZAR"))
    customer = harness.open_customer("MIG1")
    charge(harness, customer, "c-1", 3000)
    return customer


def the_ledger_wins(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, moment: MomentClient
) -> None:
    """The operator's `adopt --ledger-wins` on MIG1, held: the next run pushes the ledger's 3000."""
    assert cli(harness, moment, "adopt", "customer", "MIG1", "--ledger-wins")[0] == 0
    assert run(pusher) == {"pushed": 1}
    assert on_moment(sandbox, "customer", "MIG1")["balance"] == 3000


def test_a_create_that_met_the_merchants_object_never_explains_it_even_if_its_intent_stayed_open(
    harness: LedgerHarness,
    pusher: BalancePusher,
    sandbox: MomentSandbox,
    moment: MomentClient,
    clock: list[float],
) -> None:
    # GIVEN a customer the merchant made at Moment with 500, and the ledger's with 3000
    customer = merchants_customer_at_moment(harness, moment)
    # AND the write that drops the create's intent (Moment made nothing: it had the object) throttled
    throttle = RefuseIntentDrops()
    harness.ledger._client.meta.events.register("before-call.dynamodb.UpdateItem", throttle)
    assert run(pusher) == {"failed": 1}
    assert throttle.refused and harness.head(customer)["push_intents"]  # the create's intent is open
    throttle.armed = False
    # WHEN the next run meets the object, linked and never pushed
    clock[0] += 2 * 3600  # past the failed push's backoff
    assert run(pusher) == {"conflict": 1}
    # THEN it is held for an operator (the alarmed `conflict`), never `deferred` with drift: that
    # create changed nothing at Moment, so it explains nothing
    head = harness.head(customer)
    assert sync_state(head) == "conflict" and head["adoption_held"] == 500
    assert on_moment(sandbox, "customer", "MIG1")["balance"] == 500
    # AND the operator's choice goes through
    the_ledger_wins(harness, pusher, sandbox, moment)
    harness.assert_balances_equal_their_entries()


def test_a_create_whose_lost_answer_met_the_merchants_object_does_not_defeat_the_operators_choice(
    harness: LedgerHarness,
    pusher: BalancePusher,
    sandbox: MomentSandbox,
    moment: MomentClient,
    transport: InFlight,
    clock: list[float],
) -> None:
    # GIVEN a customer the merchant made at Moment with 500, and the ledger's with 3000
    customer = merchants_customer_at_moment(harness, moment)
    # AND Moment answers the create's POST (a 409: it has the object), but the answer is lost
    transport.after_send = answer_lost_for("POST")
    assert run(pusher) == {"failed": 1}
    assert harness.head(customer)["push_intents"]  # the create may have reached Moment: kept open
    transport.after_send = None
    # WHEN the next run meets the merchant's object, it is held, and the operator says the ledger wins
    clock[0] += 2 * 3600  # past the failed push's backoff
    assert run(pusher) == {"conflict": 1}
    # THEN the ledger's balance is pushed: that create made nothing, so it explains nothing (it left the
    # balance `deferred` for good, `DriftDetected` counted, Moment 500 and the ledger 3000)
    the_ledger_wins(harness, pusher, sandbox, moment)
    assert sync_state(harness.head(customer)) == "synced"
