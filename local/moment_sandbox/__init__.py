"""A local stand-in for Moment's Billing API and its webhooks, for tests and demos (dev tooling only).

    with MomentSandbox(SandboxSettings(webhook_url=receiver_url)) as sandbox:
        httpx.post(f"{sandbox.url}/billing/customers", ...)            # as the balance pusher would
        httpx.post(f"{sandbox.url}/_sandbox/payments", json={...})     # a customer pays at Moment
        sandbox.wait_for_deliveries()

Or standalone: `python -m moment_sandbox --port 4010`.

Modules, each owning one thing:
- `server.py`: `MomentSandbox`, the HTTP server in a thread, and the Python handle on it;
- `billing_api.py`: the `/billing/…` routes, and the order of Moment's checks on them;
- `control.py`: the `/_sandbox/…` routes (payments, state, reset, faults, settings, wait);
- `moment.py`: `FakeMoment`, the parts wired together: payments end to end, state, reset, runtime settings;
- `store.py`: customers, accounts and bills, and the rules that need them;
- `bills.py`: a bill's status and shape, and what a PATCH, a void and a payment do to it;
- `validation.py`: the field rules of a request body;
- `idempotency.py`: `Idempotency-Key` storage and replay;
- `payments.py`: the payment control request and the `obligation.amount_applied` event;
- `webhooks.py`: Standard Webhooks signing and delivery with retries;
- `faults.py`: injected 429s, 500s and latency;
- `settings.py`: every setting, and the environment variables that set them;
- `messages.py`: requests, responses and RFC 9457 problems; `ids.py`: Moment-style ids.
"""

from moment_sandbox.faults import Faults
from moment_sandbox.moment import FakeMoment
from moment_sandbox.server import MomentSandbox
from moment_sandbox.settings import SandboxSettings

__all__ = ["FakeMoment", "Faults", "MomentSandbox", "SandboxSettings"]
