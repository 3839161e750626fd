"""The simulation's short run inside `make test`: a few seeds of short programs through the whole
system, every invariant checked after every step and once quiet. SIM_SEED=<seed> replays a seed
(`make simulate` runs as long as asked)."""

from __future__ import annotations

import os
import random

import pytest

from simulation.runner import run_seed

# Fixed seeds keep `make test` reproducible; SIM_SEED picks another (the printed replay command).
FIRST_SEED = int(os.environ.get("SIM_SEED") or 20261203)
SEEDS = int(os.environ.get("SIM_TEST_SEEDS") or 1)
# The budget the mutants are found in (`make mutants` runs the same): under 2 minutes on 2 idle cores.
STEPS = int(os.environ.get("SIM_TEST_STEPS") or 50)
EXAMPLES = int(os.environ.get("SIM_TEST_EXAMPLES") or 10)  # one program per sequence rule (machine.SEQUENCES)


@pytest.mark.long_running
def test_the_simulation_keeps_every_invariant() -> None:
    from simulation import machine  # after conftest's environment: Powertools reads it at import

    failures = []
    for seed in range(FIRST_SEED, FIRST_SEED + SEEDS):
        # Unshrunk, to stay in make test's budget even when it fails; the printed replay shrinks. With
        # at most one burst of payments per program (drawn a quarter as often as another rule).
        outcome = run_seed(seed, STEPS, EXAMPLES, shrink=False, bursts=1)
        print(f"simulation seed {seed}: {outcome.steps} steps, {outcome.steps_per_second:.1f} steps/s")
        if outcome.failure:
            failures.append(outcome.failure)
        # Each sequence rule is some program's focus: played in every short run, not by luck.
        played = {step.split("(", 1)[0] for step in outcome.trace}
        unplayed = [name for name in machine.SEQUENCES if name not in played]
        assert not unplayed, f"seed {seed}: sequence rules never played: {unplayed}"
    assert not failures, "\n\n".join(failures)


@pytest.mark.long_running
def test_a_seed_replays_the_same_steps() -> None:
    """Determinism is what makes a printed seed worth anything: the same seed, the same steps."""
    seed = random.Random(FIRST_SEED).randrange(1, 2**31)
    first = run_seed(seed, 10, 1, bursts=0)
    again = run_seed(seed, 10, 1, bursts=0)
    assert first.trace == again.trace
    assert first.failure == again.failure


def test_a_lost_patch_answer_then_a_refused_patch_ends_synced() -> None:
    """The sequence of the issue's item 2, played on the simulation's world step by step: the checks
    that run once quiet must see every balance synced and Moment agreeing."""
    from simulation import checks, machine
    from simulation.world import World

    world = World(1, moment_lowers_balances=True)
    try:
        world.api("PUT", "/customers/C1", {"currency": "ZAR"})
        world.charge("/customers/C1", 1000)
        world.push()
        world.charge("/customers/C1", 500)
        world.moment.mode = "lose_answers"  # the PATCH reaches Moment; every answer is lost
        world.clock.advance(60)
        world.push()
        world.charge("/customers/C1", 500)
        world.moment.mode = "refuses_writes"  # the next PATCH really fails
        world.clock.advance(120)
        world.push()
        assert world.moment.faults_injected == {"Moment answer lost": 4, "Moment 503": 4}
        machine.quiesce(world)
        assert checks.every_step(world) + checks.at_quiescence(world) == []
    finally:
        world.close()
