"""`make local` / `python -m local_stack`: the whole system on this machine until Ctrl-C.

Settings are environment variables (README.md, "Running it locally"). The functions' logs and
metrics go to build/local/function-output.jsonl; the terminal gets a line per notable thing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from local_stack.stack import FUNCTION_LOG, LocalSettings, function_output_to, running_stack
from local_stack.template import ROOT


def main() -> int:
    try:
        settings = LocalSettings.from_environment()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    log = Path(os.environ.get("LOCAL_FUNCTION_LOG") or FUNCTION_LOG).resolve()
    with function_output_to(log) as terminal:

        def say(line: str) -> None:
            print(f"{time.strftime('%H:%M:%S')} {line}", file=terminal, flush=True)

        try:
            with running_stack(settings, notify=say) as stack:
                show = _printer(terminal)
                show(f"API: {stack.api_url}")
                show(f"Moment sandbox: {stack.sandbox_url}")
                show(f"AWS (moto): {stack.aws_endpoint}")
                show(f"Function logs: {log.relative_to(ROOT) if log.is_relative_to(ROOT) else log}")
                show(_schedules(settings))
                show("Operator CLI against it: .venv/bin/moment-sync --local verify (--help: the commands)")
                show(
                    "Ledger API signatures: checked as API Gateway does (LOCAL_REQUIRE_SIGV4=1)"
                    if settings.require_sigv4
                    else "Ledger API signatures: not checked (LOCAL_REQUIRE_SIGV4=1 checks them)"
                )
                show("Ready. Ctrl-C stops.")
                stopping.wait()
                say("stopping...")
        except OSError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    print("stopped", flush=True)
    return 0


def _printer(terminal: Any) -> Any:
    def show(line: str) -> None:
        print(line, file=terminal, flush=True)

    return show


def _schedules(settings: LocalSettings) -> str:
    def every(seconds: float | None) -> str:
        return f"every {seconds:g} s" if seconds else "on demand only"

    return (
        f"Pusher {every(settings.push_interval_seconds)} (now: POST /_local/push); "
        f"re-drive {every(settings.redrive_interval_seconds)} (now: POST /_local/redrive)"
    )


if __name__ == "__main__":
    sys.exit(main())
