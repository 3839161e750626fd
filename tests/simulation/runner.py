"""Running the simulation: one seed is one hypothesis run of `examples` programs of up to `steps` steps;
a failure prints the seed, the shrunk steps and the one command that replays it."""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test


def setup_environment() -> None:
    """What tests/conftest.py sets for pytest, for `python -m simulation` (moto, Powertools)."""
    os.environ.update(
        {
            "AWS_DEFAULT_REGION": "af-south-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
            "POWERTOOLS_SERVICE_NAME": "moment-balance-sync",
            "POWERTOOLS_METRICS_NAMESPACE": "MomentBalanceSync",
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
    )
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    # A crashed invocation flushes no metrics, and Powertools warns about each such flush.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    from local_stack import moto_speedups
    from support import dynamodb_limits

    moto_speedups.install()
    dynamodb_limits.install()  # every DynamoDB client refuses what DynamoDB refuses, as in the tests


@dataclass
class Outcome:
    seed: int
    steps: int
    seconds: float
    failure: str | None = None
    trace: list[str] = field(default_factory=list)  # every step of every program run, in order

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0


def replay_command(
    seed: int, steps: int, examples: int, without: tuple[str, ...] = (), bursts: int = 1
) -> str:
    left_out = f" SIM_WITHOUT={','.join(without)}" if without else ""
    return (
        f"make simulate SIM_SEED={seed} SIM_SEEDS=1 SIM_STEPS={steps} SIM_EXAMPLES={examples} "
        f"SIM_BURSTS={bursts}{left_out}"
    )


def run_seed(
    seed: int,
    steps: int,
    examples: int,
    shrink: bool = True,
    without: tuple[str, ...] = (),
    bursts: int | None = None,
) -> Outcome:
    """Run one seed; the failure text (with its replay command) when an invariant broke. `without`
    names rules left out (to look past one known breach for the next)."""
    from simulation import machine  # after setup_environment: Powertools reads it at import

    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    machine.STEP_LOG.clear()
    machine.reset_focus()
    if bursts is not None:
        machine.MAX_BURSTS = bursts
    # A plain method shadowing a rule is not a rule: hypothesis never draws it.
    simulation = type("Simulation", (machine.Simulation,), {name: lambda self: None for name in without})
    simulation._hypothesis_internal_use_seed = seed  # type: ignore[attr-defined]  # hypothesis.seed()
    started = time.perf_counter()
    failure = None
    try:
        run_state_machine_as_test(
            simulation,
            settings=settings(
                max_examples=examples,
                stateful_step_count=steps,
                deadline=None,
                database=None,
                phases=phases,
                suppress_health_check=list(HealthCheck),
                print_blob=False,
                report_multiple_bugs=False,
            ),
        )
    except Exception as error:  # an invariant broke (AssertionError) or the simulation itself failed
        failure = (
            f"simulation: seed {seed} failed\n{type(error).__name__}: {error}\n"
            f"replay: {replay_command(seed, steps, examples, without, machine.MAX_BURSTS)}"
        )
    steps = list(machine.STEP_LOG)
    return Outcome(seed, len(steps), time.perf_counter() - started, failure, steps)
