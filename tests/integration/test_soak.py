"""The soak, shortened: the code `make soak` runs, with a few hundred webhooks instead of 10,000 and
the fault rates raised so that every kind of fault happens in so short a run. The seed is printed;
SOAK_SEED=<seed> replays it."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from soak.faults import FaultRates
from soak.run import SoakSettings, run_soak

from local_stack.made_up_values import LOCAL_MOMENT_API_KEY, LOCAL_WEBHOOK_SECRET
from local_stack.template import ROOT

SEED = int(os.environ.get("SOAK_SEED") or random.SystemRandom().randrange(1_000_000))
SHORT_RUN_RATES = FaultRates(
    throttle_answered=0.03,
    throttle_surfaced=0.01,
    transaction_conflict=0.06,
    reconciler_crash=0.4,
    pusher_cut_off=0.4,
    moment_429=0.08,
    moment_500=0.06,
    moment_timeout=0.05,
    every_kind_at_least_once=True,
)
SUMMARY = re.compile(
    r"soak: (\d+) webhooks, (\d+) duplicates, (\d+) rejected, (\d+) faults injected, "
    r"0 lost, 0 double-applied, balances agree: yes, "
    r"every applied payment announced exactly once after dedup by event_id: yes"
)


@pytest.mark.long_running
def test_a_short_soak_under_every_fault_loses_nothing_and_applies_nothing_twice() -> None:
    print(f"seed {SEED} (SOAK_SEED={SEED} replays it)")
    lines: list[str] = []
    # Pushes every 0.5 s: enough calls to Moment (a few hundred) that each of its faults is all but
    # certain to happen (the function faults are forced at least once).
    settings = SoakSettings(
        seed=SEED, webhooks=300, rates=SHORT_RUN_RATES, progress_every=100, push_interval_seconds=0.5
    )
    result = run_soak(settings, lines.append)
    report = "\n".join([*lines, *result.verdict.problems, str(result.faults), result.summary()])
    print(report)
    assert result.ok, report
    assert SUMMARY.fullmatch(result.summary()), report
    counts = result.workload.counts
    assert result.sent.deliveries == 300 and result.sent.duplicates == counts["duplicates"]
    assert result.rejected == counts["forged"] + counts["stale"]
    assert all(count > 0 for count in result.faults.values()), result.faults  # every kind happened
    assert len(result.faults) == 8, result.faults


@pytest.mark.long_running
def test_make_soak_s_command_prints_the_summary_line_and_exits_0(tmp_path: Path) -> None:
    """`python -m soak`, the other way Moment may treat a paid balance (it keeps it as it was). What
    the functions logged under all those faults holds no secret they were given."""
    seed = SEED + 1
    log = tmp_path / "function-output.jsonl"
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "shared"), str(ROOT / "local")]),
        "SOAK_FUNCTION_LOG": str(log),
    }
    finished = subprocess.run(  # noqa: S603 -- this repository's own module, fixed arguments
        [sys.executable, "-m", "soak", "--webhooks", "200", "--seed", str(seed), "--moment-keeps-balances"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
        check=False,
    )
    lines = finished.stdout.strip().splitlines()
    print(finished.stdout, finished.stderr[-3000:])
    assert finished.returncode == 0, finished.stdout
    assert lines[0].startswith(f"soak: seed {seed}; 200 webhooks"), lines[0]
    assert "Moment keeps a balance when paid" in lines[0]
    match = SUMMARY.fullmatch(lines[-1])
    assert match and match.group(1) == "200", lines[-1]
    logged = log.read_text()
    assert '"webhook accepted"' in logged and '"push run finished"' in logged
    secrets = [LOCAL_WEBHOOK_SECRET, LOCAL_WEBHOOK_SECRET.removeprefix("whsec_"), LOCAL_MOMENT_API_KEY]
    assert not [secret for secret in secrets if secret in logged]
