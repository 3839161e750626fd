"""How fast the deterministic simulation runs (tests/simulation/, `make simulate`).

Measured: simulation steps per second (one seed, its programs run unshrunk, in a child process so
the run starts as `make simulate` does). Baseline, measured in the same run: raw moto `PutItem`s per
second in-process, the cheapest thing a step could do. The ratio is steps per raw write: how many
writes' worth of work one step of the whole system costs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import boto3
from moto import mock_aws

from benchmarks.registry import Context, Row

TITLE = "The simulation: steps per second"
AREA = "simulation"
SEED = 20261203


def _pythonpath(context: Context) -> str:
    functions = sorted(str(path) for path in (context.root / "functions").iterdir() if path.is_dir())
    paths = [context.root / "layers" / "shared", context.root / "local", context.root / "tests"]
    return os.pathsep.join([*map(str, paths), *functions])


def _moto_puts_per_second(count: int) -> float:
    environment = {
        "AWS_DEFAULT_REGION": "af-south-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    os.environ.update(environment)
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(
            TableName="bench",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        started = time.perf_counter()
        for number in range(count):
            client.put_item(TableName="bench", Item={"pk": {"S": f"item-{number}"}, "n": {"N": str(number)}})
        return count / (time.perf_counter() - started)


def run(context: Context) -> list[Row]:
    examples = context.iterations(full=6, quick=2)
    context.progress(f"simulation: seed {SEED}, {examples} programs of up to 40 steps, then raw moto puts")
    completed = subprocess.run(  # noqa: S603 -- our interpreter, our code
        [
            sys.executable,
            "-W",
            "ignore",
            "-m",
            "simulation",
            "--seed",
            str(SEED),
            "--seeds",
            "1",
            "--steps",
            "40",
            "--examples",
            str(examples),
            "--no-shrink",
        ],
        cwd=context.root,
        env={**os.environ, "PYTHONPATH": _pythonpath(context), "SIM_BURSTS": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"(\d+) steps in ([\d.]+) s", completed.stdout)
    if not found:
        context.skip(
            "simulation.steps_per_second", f"the simulation printed no rate: {completed.stdout[-300:]}"
        )
        return []
    steps, seconds = int(found[1]), float(found[2])
    puts = _moto_puts_per_second(context.iterations(full=2000, quick=500))
    return [
        Row(
            area=AREA,
            name="simulation.steps_per_second",
            title="Simulation steps per second (every invariant checked after each step)",
            measured=steps / seconds,
            baseline=puts,
            unit="/s",
            measured_label=f"python -m simulation --seed {SEED} (unshrunk, no bursts)",
            baseline_label="moto PutItem in-process",
            notes=[
                "a found invariant breach still counts its steps" if completed.returncode else "no breach"
            ],
            details={"steps": steps, "seconds": seconds},
        )
    ]
