"""`make soak` / `python -m soak`: the soak, with a summary line; exit 0 only if nothing was lost or
applied twice and Moment agrees with the ledger. The functions' logs go to
build/soak/function-output.jsonl ($SOAK_FUNCTION_LOG)."""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import warnings
from pathlib import Path

from local_stack.stack import function_output_to
from local_stack.template import ROOT
from soak.run import SoakSettings, run_soak

FUNCTION_LOG = ROOT / "build" / "soak" / "function-output.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__)
    parser.add_argument(
        "--webhooks", type=int, default=10_000, help="webhook deliveries in all (default 10000)"
    )
    parser.add_argument("--seed", type=int, help="replay a run: the seed it printed (default: a new one)")
    parser.add_argument(
        "--balances", type=int, help="customers' and accounts' balances (default: webhooks/30, 12-400)"
    )
    parser.add_argument(
        "--moment-keeps-balances",
        action="store_true",
        help="the sandbox leaves a balance as it is when paid (default: lowers it; Moment may do either)",
    )
    arguments = parser.parse_args(argv)
    if arguments.webhooks < 20:
        parser.error("--webhooks must be at least 20")
    seed = arguments.seed if arguments.seed is not None else random.SystemRandom().randrange(1_000_000)
    settings = SoakSettings(
        seed=seed,
        webhooks=arguments.webhooks,
        balances=arguments.balances,
        applies_payments=not arguments.moment_keeps_balances,
    )
    started = time.monotonic()
    # Powertools warns on stderr when an invocation (a crashed one, say) published no metric: noise here.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    log = Path(os.environ.get("SOAK_FUNCTION_LOG") or FUNCTION_LOG)
    with function_output_to(log) as terminal:

        def say(line: str) -> None:
            print(line, file=terminal, flush=True)

        try:
            result = run_soak(settings, say)
        except RuntimeError as error:  # the system never settled: that is a failed soak, said plainly
            say(f"soak: seed {seed}: {error}")
            say(f"soak: FAILED after {time.monotonic() - started:.0f} s; {_replay(settings)}")
            return 1
        say(
            "soak: faults injected: "
            + ", ".join(f"{kind} {count}" for kind, count in sorted(result.faults.items()))
        )
        say("soak: seconds: " + ", ".join(f"{phase} {value:.0f}" for phase, value in result.seconds.items()))
        for problem in result.verdict.problems:
            say(f"soak: PROBLEM: {problem}")
        if not result.ok:
            say(f"soak: {_replay(settings)}")
        say(result.summary())
    return 0 if result.ok else 1


def _replay(settings: SoakSettings) -> str:
    keeps = "" if settings.applies_payments else " --moment-keeps-balances"
    return f"replay: make soak SOAK_ARGS='--seed {settings.seed} --webhooks {settings.webhooks}{keeps}'"


if __name__ == "__main__":
    sys.exit(main())
