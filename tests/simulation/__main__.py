"""`make simulate`: SIM_SEEDS seeds (from SIM_SEED, or drawn), each SIM_EXAMPLES programs of up to
SIM_STEPS steps; prints each seed's steps per second, and on a failure the steps and the replay command.
Exits 1 if any seed failed."""

from __future__ import annotations

import argparse
import os
import random
import sys


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m simulation", description=__doc__)
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SIM_SEED") or 0) or None)
    parser.add_argument("--seeds", type=int, default=int(os.environ.get("SIM_SEEDS") or 5))
    parser.add_argument("--steps", type=int, default=int(os.environ.get("SIM_STEPS") or 60))
    parser.add_argument("--examples", type=int, default=int(os.environ.get("SIM_EXAMPLES") or 10))
    parser.add_argument(
        "--without",
        default=os.environ.get("SIM_WITHOUT", ""),
        help="rules to leave out, comma-separated (to look past a known breach)",
    )
    parser.add_argument("--stop", action="store_true", help="stop at the first seed that fails")
    parser.add_argument("--no-shrink", action="store_true", help="report the first failure unshrunk")
    arguments = parser.parse_args()

    from simulation.runner import run_seed, setup_environment

    setup_environment()
    first = arguments.seed if arguments.seed is not None else random.SystemRandom().randrange(1, 2**31)
    failed = 0
    total_steps = 0
    total_seconds = 0.0
    for seed in range(first, first + arguments.seeds):
        without = tuple(name for name in arguments.without.split(",") if name)
        outcome = run_seed(
            seed, arguments.steps, arguments.examples, shrink=not arguments.no_shrink, without=without
        )
        total_steps += outcome.steps
        total_seconds += outcome.seconds
        verdict = "FAILED" if outcome.failure else "ok"
        print(
            f"simulate: seed {seed}: {verdict}, {outcome.steps} steps in {outcome.seconds:.1f} s "
            f"({outcome.steps_per_second:.1f} steps/s)",
            flush=True,
        )
        if outcome.failure:
            failed += 1
            print(outcome.failure, flush=True)
            if arguments.stop:
                break
    rate = total_steps / total_seconds if total_seconds else 0.0
    print(f"simulate: {arguments.seeds} seed(s), {failed} failed, {total_steps} steps, {rate:.1f} steps/s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
