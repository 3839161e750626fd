"""`python -m moment_sandbox`: the Moment sandbox on loopback until Ctrl-C or SIGTERM.

Settings come from the environment (see `settings.py`), then from these options.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from dataclasses import replace

from moment_sandbox.server import MomentSandbox
from moment_sandbox.settings import SandboxSettings


def parse_settings(argv: list[str] | None = None) -> SandboxSettings:
    defaults = SandboxSettings.from_environment()
    parser = argparse.ArgumentParser(prog="python -m moment_sandbox", description=__doc__)
    parser.add_argument(
        "--port", type=int, default=defaults.port, help="default: $LOCAL_SANDBOX_PORT or 4010"
    )
    parser.add_argument(
        "--webhook-url",
        default=defaults.webhook_url or "",
        help="where webhooks go, '' for nowhere (default: $SANDBOX_WEBHOOK_URL or the local receiver)",
    )
    parser.add_argument(
        "--applies-payments",
        action=argparse.BooleanOptionalAction,
        default=defaults.applies_payments,
        help="whether a payment lowers the balance (default: $SANDBOX_APPLIES_PAYMENTS or yes)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)
    return replace(
        defaults,
        port=args.port,
        webhook_url=args.webhook_url or None,
        applies_payments=args.applies_payments,
        log_requests=not args.quiet,
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    with MomentSandbox(settings) as sandbox:
        print(f"Moment sandbox on {sandbox.url} (control routes under {sandbox.url}/_sandbox/)", flush=True)
        print(f"  webhooks to {settings.webhook_url or 'nowhere'}", flush=True)
        print(f"  a payment lowers the balance: {settings.applies_payments}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stopping.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
