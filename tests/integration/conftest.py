"""The pusher tests' shared harness (tests/support/pushers.py) for every integration test: the Moment
sandbox over loopback HTTP, the real MomentClient through a transport that counts requests and can
lose answers, the ledger in moto on a clock a test moves. A module that needs other settings defines
its own fixture of the same name, which pytest prefers."""

from __future__ import annotations

from support import pushers

sandbox = pushers.sandbox
transport = pushers.transport
moment = pushers.moment
clock = pushers.clock
harness = pushers.harness
leases = pushers.leases
