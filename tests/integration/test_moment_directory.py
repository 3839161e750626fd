"""The re-drive's view of Moment: a Moment id → its external_reference, read from the sandbox over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local_stack.made_up_values import LOCAL_MOMENT_API_KEY
from moment_sandbox import MomentSandbox, SandboxSettings
from moment_sync.adapters.moment_directory import MomentClientDirectory
from moment_sync.ledger.model import BalanceKind
from moment_sync.moment_client import MomentClient, NewAccount, NewCustomer


@pytest.fixture
def moment() -> Iterator[MomentClient]:
    with MomentSandbox(SandboxSettings(webhook_url=None)) as sandbox:
        client = MomentClient(LOCAL_MOMENT_API_KEY, environment="dev", base_url=sandbox.url)
        yield client
        client.close()


def test_known_ids_resolve_to_their_reference_and_unknown_ones_to_none(moment: MomentClient) -> None:
    customer = moment.create_customer(NewCustomer("UCR7", balance=100, currency="ZAR"))
    account = moment.create_account(NewAccount(customer.id, "ACC7", balance=5, currency="ZAR"))
    directory = MomentClientDirectory(lambda: moment)
    assert directory.external_reference(BalanceKind.CUSTOMER, customer.id) == "UCR7"
    assert directory.external_reference(BalanceKind.ACCOUNT, account.id) == "ACC7"
    assert directory.external_reference(BalanceKind.CUSTOMER, "bcus_nobodyknowsthisone") is None


def test_the_client_is_made_only_when_a_lookup_needs_it() -> None:
    made: list[str] = []

    def client() -> MomentClient:
        made.append("client")
        raise RuntimeError("no API key configured")

    directory = MomentClientDirectory(client)
    assert made == []
    with pytest.raises(RuntimeError):
        directory.external_reference(BalanceKind.CUSTOMER, "bcus_1")
    assert made == ["client"]
