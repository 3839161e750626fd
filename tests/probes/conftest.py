"""The bill pusher's harness (tests/support/pushers.py, as tests/integration/test_bill_pusher.py has it):
the sandbox over loopback HTTP, the real MomentClient with a transport that can lose answers, the ledger
in moto."""

from __future__ import annotations

import pytest

from moment_sync.bill_pusher import BillPusher
from moment_sync.moment_client import MomentClient
from support import pushers as base
from support.ledger import LedgerHarness

sandbox = base.sandbox
transport = base.transport
moment = base.moment
clock = base.clock
harness = base.harness
pusher = base.pusher
member = base.member


@pytest.fixture
def bill_pusher(harness: LedgerHarness, moment: MomentClient) -> BillPusher:
    """As the scheduled function builds it: with the events table (a link re-drives what names it)."""
    return BillPusher(
        ledger=harness.ledger,
        moment=moment,
        now=harness.clock,
        concurrency=4,
        jitter=lambda: 0.5,
        events=harness.events,
    )
