"""The webhook receiver against a minimal receiver written for the benchmark (baseline_receiver.py).

Cold start (fresh interpreters), warm invocations (a fresh interpreter per side, in-memory DynamoDB
at botocore's `before-send`), and DynamoDB requests and write units per webhook (moto, counted with a
`before-call` hook). docs/performance.md says what each row means and what would move it.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from benchmarks import measure, sam_build
from benchmarks.registry import ROOT, Context, Goal, Row

TITLE = "webhook receiver vs a minimal receiver"
AREA = "receiver"

FUNCTION = "WebhookReceiverFunction"  # template.yaml's logical id: CodeUri and Handler come from there
LAYER_DIR = ROOT / "layers" / "shared"
SAMPLE_EVENT = ROOT / "events" / "webhook_receiver" / "moment-webhook.json"
BASELINE_SOURCE = Path(__file__).with_name("baseline_receiver.py")
TABLE_NAME = "WebhookEvents"
SIGNING_KEYS_NAME = "bench/moment/webhook-signing-secrets"
# What the receiver imports from the layer's requirements, and what those import in turn.
LAYER_IMPORTS = ("aws_lambda_powertools", "jmespath", "typing_extensions")

WITHIN_1_3 = Goal.at_most(1.3)
EXACTLY_1 = Goal.exactly(1.0)

REAL = "webhook_receiver"
BASELINE = "baseline_receiver"
BOTO3 = "boto3"


def run(context: Context) -> list[Row]:
    environment = _environment()
    handler = _handler()
    with tempfile.TemporaryDirectory(prefix="bench-receiver-") as scratch:
        rows = _cold_rows(context, environment, handler, Path(scratch))
    rows += _warm_rows(context, environment, handler)
    rows += _storage_rows(context, environment, handler)
    return rows


def cost_inputs(context: Context) -> list[Row]:
    """What the cost model needs from this area when the area is not part of the run: the warm
    invocations (durations and bytes printed) and the write units, not the cold starts."""
    environment = _environment()
    handler = _handler()
    return _warm_rows(context, environment, handler) + _storage_rows(context, environment, handler)


def _handler() -> tuple[Path, str]:
    """The receiver's code folder and handler module, as template.yaml declares them."""
    from local_stack.template import resource_properties  # noqa: PLC0415

    properties = resource_properties(FUNCTION)
    module, _, function = properties["Handler"].rpartition(".")
    assert function == "lambda_handler", f"{FUNCTION}'s handler is {properties['Handler']}"
    return ROOT / properties["CodeUri"], module


def _environment() -> dict[str, str]:
    """What Lambda sets for WebhookReceiverFunction (template.yaml's Globals and its own variables)."""
    from local_stack.functions import function_environment  # noqa: PLC0415
    from local_stack.made_up_values import LOCAL_WEBHOOK_SECRET  # noqa: PLC0415
    from local_stack.template import load_template, parameter_default  # noqa: PLC0415

    parameters = load_template()["Parameters"]
    resources = {"WebhookEventsTable": TABLE_NAME, "WebhookSigningSecret": SIGNING_KEYS_NAME}

    def resolve(name: str) -> str:
        return str(parameter_default(name)) if name in parameters else resources[name]

    variables = function_environment(FUNCTION, resolve)
    # The baseline reads its key from here; the in-memory Secrets Manager serves the same one to the receiver.
    variables["BASELINE_WEBHOOK_SECRETS"] = LOCAL_WEBHOOK_SECRET
    return measure.lambda_environment(variables)


# -- cold start -------------------------------------------------------------------------------------


def _cold_subjects(scratch: Path, handler: tuple[Path, str], *, bytecode: bool) -> list[measure.ColdSubject]:
    """The receiver as Lambda lays it out (/var/task = the function folder first, then /opt/python =
    the layer), the baseline alone in its own function folder, and boto3 alone. With `bytecode`
    False, the layer and both functions are copies without __pycache__ and Python may not write one:
    what `sam build` ships (no .pyc) on a read-only file system."""
    suffix = "" if bytecode else "-no-pyc"
    task, layer, baseline_task = (
        scratch / f"{name}{suffix}" for name in ("task", "opt-python", "baseline-task")
    )
    baseline_task.mkdir()
    shutil.copy2(BASELINE_SOURCE, baseline_task)
    peer_tasks = {peer: scratch / f"{peer}{suffix}" for peer in PEERS}
    for peer, task_dir in peer_tasks.items():
        task_dir.mkdir()
        shutil.copy2(Path(__file__).with_name(f"{peer}.py"), task_dir)
    function_dir, module = handler
    real_path: tuple[Path, ...] = (function_dir, LAYER_DIR)
    if not bytecode:
        no_pyc = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(function_dir, task, ignore=no_pyc)
        shutil.copytree(LAYER_DIR / "moment_sync", layer / "moment_sync", ignore=no_pyc)
        for name in LAYER_IMPORTS:
            spec = find_spec(name)
            assert spec is not None and spec.origin is not None, f"{name} is not installed"
            origin = Path(spec.origin)
            if origin.name == "__init__.py":
                shutil.copytree(origin.parent, layer / name, ignore=no_pyc)
            else:
                shutil.copy2(origin, layer / origin.name)
        real_path = (task, layer)
    return [
        measure.ColdSubject(
            name=REAL,
            module=module,
            pythonpath=real_path,
            # The receiver builds its adapters on the first call (runtime.py); here they are built
            # right after the import, timed with it: the DynamoDB client first, then the rest.
            ready=("moment_sync.runtime:aws_client=dynamodb", "moment_sync.runtime:receiver_dependencies"),
            first_call="benchmarks.receiver_cold:real_first_call",
            environment={"BENCH_HANDLER_MODULE": module},
            write_bytecode=bytecode,
        ),
        measure.ColdSubject(
            name=BASELINE,
            module="baseline_receiver",
            pythonpath=(baseline_task,),
            first_call="benchmarks.receiver_cold:baseline_first_call",
            write_bytecode=bytecode,
        ),
        measure.ColdSubject(name=BOTO3, module="boto3", pythonpath=(), ready=("boto3:client=dynamodb",)),
        # The peers create their client at import, as the baseline does; no first call here.
        *(
            measure.ColdSubject(name=peer, module=peer, pythonpath=(task_dir,), write_bytecode=bytecode)
            for peer, task_dir in peer_tasks.items()
        ),
    ]


_spread = measure.spread


def _grouped_ratio(ours: list[float], theirs: list[float], groups: int) -> tuple[float, list[float]]:
    """Samples taken in rounds, cut into `groups` runs of consecutive rounds: the median over runs of
    the ratio of each run's medians, and those ratios."""
    size = max(1, len(ours) // groups)
    ratios = [
        measure.median(ours[start : start + size]) / measure.median(theirs[start : start + size])
        for start in range(0, size * groups, size)
    ]
    return measure.median(ratios), ratios


_cross_checks = measure.cross_checks


def _cold_rows(
    context: Context, environment: dict[str, str], handler: tuple[Path, str], scratch: Path
) -> list[Row]:
    # Three interleaved rounds per run: the gate is the median over the runs (context.runs).
    starts = 3 * context.runs
    context.progress(f"receiver: cold starts, {starts} per subject, interleaved")
    real, baseline, boto3_alone, *peers = _cold_subjects(scratch, handler, bytecode=True)
    samples = measure.cold_start(context.python, [real, baseline, boto3_alone, *peers], starts, environment)
    breakdown = (
        measure.ImportBreakdown([], {})  # one -X importtime start: not in a quick run
        if context.quick
        else measure.import_breakdown(
            context.python, measure.ColdSubject(REAL, real.module, real.pythonpath, real.ready), environment
        )
    )
    no_pyc_starts = context.iterations(full=7, quick=3)
    real_no_pyc, baseline_no_pyc, *_ = _cold_subjects(scratch, handler, bytecode=False)
    as_built = _as_built_subject(context, scratch, real)
    context.progress(
        f"receiver: cold starts without .pyc{' and as sam build ships it' if as_built else ''}, "
        f"{no_pyc_starts} per subject"
    )
    no_pyc = measure.cold_start(
        context.python,
        [real_no_pyc, baseline_no_pyc, *([as_built] if as_built else [])],
        no_pyc_starts,
        environment,
    )

    ours, theirs, boto = samples[REAL], samples[BASELINE], samples[BOTO3]
    boto_ms = measure.median(boto.through(1))
    baseline_ms = measure.median(theirs.import_ms)
    start_ms = measure.median(ours.through(1))
    ready_ms = measure.median(ours.through(2))
    common = {"starts": starts, "bytecode": "cached (.pyc written by an untimed first start)"}
    how = (
        f"median of {starts} fresh interpreters per side, started in turn; the clock starts at the "
        "import (interpreter start-up is the same for both and not counted)"
    )
    checks = _cross_checks(
        ours.through(1), theirs.import_ms, cpu=(ours.through(1, cpu=True), theirs.cpu_import_ms)
    )
    noise = (
        f"noise check: median of same-round ratios {checks['paired_median_ratio']:.2f}x, "
        f"fastest start vs fastest start {checks['min_ratio']:.2f}x, "
        f"CPU time {checks['cpu_time_ratio']:.2f}x"
    )
    groups = context.runs
    cpu_gate, cpu_ratios = _grouped_ratio(ours.through(1, cpu=True), theirs.cpu_import_ms, groups)
    gate_label = f"CPU, median of {groups} runs"
    peer_rows = [
        Row(
            area=AREA,
            name=f"receiver.{short}.cold_start",
            title=f"cold start (import + the first DynamoDB client), against {label}",
            measured=start_ms,
            baseline=measure.median(samples[peer].import_ms),
            unit="ms",
            measured_label="as receiver.cold_start",
            baseline_label=f"import benchmarks/{peer}.py (boto3, its libraries, and its client)",
            runs=_grouped_ratio(ours.through(1, cpu=True), samples[peer].cpu_import_ms, groups)[1],
            gate_label=gate_label,
            notes=[how, f"modules loaded: receiver {ours.modules}, peer {samples[peer].modules}"],
            details={"peer_ms": _spread(samples[peer].import_ms)},
        )
        for peer, (short, label) in PEERS.items()
    ]
    return [
        Row(
            area=AREA,
            name="receiver.cold_start",
            title="cold start: import + the first DynamoDB client",
            measured=start_ms,
            baseline=baseline_ms,
            unit="ms",
            measured_label=f"import {handler[1]}, then runtime.aws_client('dynamodb') "
            "(boto3 import + client)",
            baseline_label="import baseline_receiver (imports boto3, creates its client at import)",
            goal=WITHIN_1_3,
            gate=cpu_gate,
            gate_label=gate_label,
            runs=cpu_ratios,
            notes=[
                how,
                noise,
                f"the gate: the starts in {groups} runs of {starts // groups} rounds each, the CPU-time "
                f"ratio of each run's medians: {', '.join(f'{ratio:.2f}' for ratio in cpu_ratios)}",
                "fairness: the receiver imports boto3 and creates its client lazily, on the first call; "
                "the baseline at import. Both are counted here, import + first client, for both sides",
                f"receiver: import alone {measure.median(ours.import_ms):.1f} ms (no boto3 yet), "
                f"+ DynamoDB client {start_ms - measure.median(ours.import_ms):.1f} ms",
                f"boto3 alone (import boto3 + DynamoDB client): {boto_ms:.1f} ms; the receiver's own code "
                f"and Powertools come to {start_ms - boto_ms:+.1f} ms over it, the baseline's to "
                f"{baseline_ms - boto_ms:+.1f} ms (its few imports are ones boto3 makes anyway)",
                *breakdown.describe(),
            ],
            details={
                "receiver_ms": _spread(ours.through(1)),
                **checks,
                "receiver_import_only_ms": _spread(ours.import_ms),
                "baseline_ms": _spread(theirs.import_ms),
                "boto3_alone_ms": _spread(boto.through(1)),
                "modules_loaded": {REAL: ours.modules, BASELINE: theirs.modules, BOTO3: boto.modules},
                "import_breakdown": {
                    "by_package_ms": breakdown.by_package_ms,
                    "roots": breakdown.roots,
                },
                **common,
            },
        ),
        Row(
            area=AREA,
            name="receiver.cold_ready",
            title="cold start: import + every adapter the first request needs",
            measured=ready_ms,
            baseline=baseline_ms,
            unit="ms",
            measured_label=f"import {handler[1]}, then runtime.receiver_dependencies() "
            "(DynamoDB and Secrets Manager clients, Powertools parameters)",
            baseline_label="import baseline_receiver (it needs nothing more)",
            notes=[
                how,
                f"over the row above: {ready_ms - start_ms:.1f} ms for the Secrets Manager client and "
                "Powertools' parameters utility; the baseline reads its key from the environment, "
                "which is the design difference this row prices",
            ],
            details={
                "receiver_ms": _spread(ours.through(2)),
                **_cross_checks(
                    ours.through(2), theirs.import_ms, cpu=(ours.through(2, cpu=True), theirs.cpu_import_ms)
                ),
                "baseline_ms": _spread(theirs.import_ms),
                **common,
            },
        ),
        Row(
            area=AREA,
            name="receiver.cold_first_response",
            title="cold start to the first response (no network: in-memory AWS)",
            measured=measure.median(ours.first_response_ms),
            baseline=measure.median(theirs.first_response_ms),
            unit="ms",
            measured_label="the row above + the first lambda_handler(event, context) "
            "(GetSecretValue, PutItem, first log line and EMF blob)",
            baseline_label="import baseline_receiver + its first lambda_handler(event, context)",
            notes=[
                how,
                "the first call pays for what nothing loaded before it: Powertools' log formatting "
                "and metric flushing, botocore's first request (endpoint rules, credentials, signing), "
                "the first GetSecretValue through Powertools' cache",
                "Lambda bills the init phase and the first invocation alike; a network round trip to "
                "DynamoDB and to Secrets Manager (receiver only) comes on top on AWS",
            ],
            details={
                "receiver_ms": _spread(ours.first_response_ms),
                **_cross_checks(ours.first_response_ms, theirs.first_response_ms),
                "baseline_ms": _spread(theirs.first_response_ms),
                **common,
            },
        ),
        Row(
            area=AREA,
            name="receiver.cold_start_no_pyc",
            title="cold start with no .pyc anywhere: what the layer cost before it was precompiled",
            measured=measure.median(no_pyc[REAL].through(1)),
            baseline=measure.median(no_pyc[BASELINE].import_ms),
            unit="ms",
            measured_label="as receiver.cold_start, from copies of the function folder and the layer "
            f"({', '.join(['moment_sync', *LAYER_IMPORTS])}) with no __pycache__, PYTHONDONTWRITEBYTECODE=1",
            baseline_label="as receiver.cold_start, baseline_receiver.py copied without .pyc",
            notes=[
                f"median of {no_pyc_starts} fresh interpreters per side; boto3 keeps its .pyc on both "
                "sides (the Lambda runtime provides boto3; whether its copy is precompiled was not "
                "checked here)",
                "/opt and /var/task are read-only on Lambda, so a layer shipped without .pyc is compiled "
                "from source at every cold start; the layer is now built with precompiled .pyc "
                "(layers/shared/Makefile), so this row is the counterfactual: see cold_start_as_built",
                "to first response without .pyc: "
                f"receiver {measure.median(no_pyc[REAL].first_response_ms):.1f} ms, "
                f"baseline {measure.median(no_pyc[BASELINE].first_response_ms):.1f} ms",
            ],
            details={
                "receiver_ms": _spread(no_pyc[REAL].through(1)),
                **_cross_checks(
                    no_pyc[REAL].through(1),
                    no_pyc[BASELINE].import_ms,
                    cpu=(no_pyc[REAL].through(1, cpu=True), no_pyc[BASELINE].cpu_import_ms),
                ),
                "baseline_ms": _spread(no_pyc[BASELINE].import_ms),
                "receiver_first_response_ms": _spread(no_pyc[REAL].first_response_ms),
                "baseline_first_response_ms": _spread(no_pyc[BASELINE].first_response_ms),
                "starts": no_pyc_starts,
            },
        ),
        *([_as_built_row(no_pyc, no_pyc_starts)] if as_built else []),
        *peer_rows,
    ]


AS_BUILT = "webhook_receiver as built"


def _as_built_subject(
    context: Context, scratch: Path, real: measure.ColdSubject
) -> measure.ColdSubject | None:
    """The receiver from this run's `sam build` (function folder, layer with its precompiled .pyc, the
    runtime's boto3), read-only as on Lambda; None, after saying why, when there is no build."""
    built = sam_build.build()
    if isinstance(built, str):
        context.skip("receiver.cold_start_as_built", built)
        return None
    return dataclasses.replace(
        real,
        name=AS_BUILT,
        pythonpath=(built.artifacts[FUNCTION], built.layer_python, sam_build.runtime_packages(scratch)),
        write_bytecode=False,
        python_flags=("-S",),
    )


def _as_built_row(no_pyc: dict[str, measure.ColdSamples], starts: int) -> Row:
    ours, theirs = no_pyc[AS_BUILT], no_pyc[BASELINE]
    return Row(
        area=AREA,
        name="receiver.cold_start_as_built",
        title="cold start as `sam build` ships it: the precompiled layer, read-only",
        measured=measure.median(ours.through(1)),
        baseline=measure.median(theirs.import_ms),
        unit="ms",
        measured_label="as receiver.cold_start, from this run's sam build: the built function folder, the "
        "built layer (unchecked-hash .pyc), the runtime's boto3; python -S, PYTHONDONTWRITEBYTECODE=1",
        baseline_label="as receiver.cold_start_no_pyc: baseline_receiver.py, no .pyc",
        notes=[
            f"median of {starts} fresh interpreters per side, interleaved with cold_start_no_pyc's",
            "what Lambda runs: nothing of the layer is compiled at the cold start, only the one-file "
            "handler module (sam build does not precompile function folders; it compiles in about a ms)",
            f"to first response: receiver {measure.median(ours.first_response_ms):.1f} ms, "
            f"baseline {measure.median(theirs.first_response_ms):.1f} ms",
        ],
        details={
            "receiver_ms": _spread(ours.through(1)),
            **_cross_checks(
                ours.through(1), theirs.import_ms, cpu=(ours.through(1, cpu=True), theirs.cpu_import_ms)
            ),
            "baseline_ms": _spread(theirs.import_ms),
            "receiver_first_response_ms": _spread(ours.first_response_ms),
            "starts": starts,
        },
    )


# -- warm invocations -------------------------------------------------------------------------------


# The peers: what a merchant would write instead, measured in the same run, each in its own interpreter.
PEER_POWERTOOLS = "peer_powertools_receiver"
PEER_PUT = "peer_conditional_put_receiver"
PEERS = {
    PEER_POWERTOOLS: ("vs_powertools", "Powertools idempotent_function (DynamoDB) + standardwebhooks"),
    PEER_PUT: ("vs_conditional_put", "standardwebhooks + one conditional PutItem"),
}
WARM_SIDES = (REAL, BASELINE, PEER_POWERTOOLS, PEER_PUT)
# What each side answers to a redelivery (Powertools returns the saved result of the first call).
DUPLICATE_STATUS = {
    REAL: "duplicate",
    BASELINE: "duplicate",
    PEER_POWERTOOLS: "accepted",
    PEER_PUT: "duplicate",
}
BATCH = 50  # calls per turn: every side takes a turn of this many before any takes the next
WITHIN_1_25 = Goal.at_most(1.25)


def _warm_pythonpath(side: str, handler: tuple[Path, str]) -> tuple[Path, ...]:
    return (handler[0], LAYER_DIR, ROOT) if side == REAL else (ROOT,)


def warm_runs(
    context: Context, environment: dict[str, str], handler: tuple[Path, str], *, runs: int, calls: int
) -> list[dict[str, dict[str, Any]]]:
    """`runs` runs; in each, one fresh interpreter per side, all alive at once, taking turns of BATCH
    calls (the order rotating every turn), so each side meets the same load on the machine."""
    duplicates, warmup = max(BATCH, calls // 3 // BATCH * BATCH), context.iterations(full=300, quick=100)
    results = []
    for number in range(runs):
        sides = [*WARM_SIDES[number % 4 :], *WARM_SIDES[: number % 4]]
        servers = {
            side: measure.Server(
                context.python,
                "benchmarks.receiver:warm_server",
                {
                    "side": side,
                    "warmup": warmup,
                    "secret": environment["BASELINE_WEBHOOK_SECRETS"],
                    "handler_module": handler[1],
                },
                environment=environment,
                pythonpath=_warm_pythonpath(side, handler),
            )
            for side in sides
        }
        for operation, total in (("new", calls), ("duplicate", duplicates)):
            for turn in range(total // BATCH):
                shift = turn % len(sides)
                for side in [*sides[shift:], *sides[:shift]]:
                    servers[side].send({"op": operation, "count": BATCH})
        results.append({side: server.finish({"op": "finish"}) for side, server in servers.items()})
    return results


def _per_run_ratio(
    runs: list[dict[str, dict[str, Any]]], ours: str, theirs: str, samples: str
) -> list[float]:
    return [measure.median(run[ours][samples]) / measure.median(run[theirs][samples]) for run in runs]


def _warm_rows(context: Context, environment: dict[str, str], handler: tuple[Path, str]) -> list[Row]:
    runs = context.runs
    calls = context.iterations(full=500, quick=200)
    context.progress(
        f"receiver: warm invocations, {runs} runs of {calls} new webhooks per side "
        f"(receiver, baseline, {len(PEERS)} peers), taking turns of {BATCH}"
    )
    measured = warm_runs(context, environment, handler, runs=runs, calls=calls)

    def pooled(side: str, samples: str) -> list[float]:
        return [value for run in measured for value in run[side][samples]]

    def gate(theirs: str, samples: str = "new_cpu_us") -> tuple[float, list[float]]:
        ratios = _per_run_ratio(measured, REAL, theirs, samples)
        return measure.median(ratios), ratios

    output = measured[-1]
    backend = (
        "backend: in-memory DynamoDB (and Secrets Manager) at botocore's before-send hook, so "
        "botocore still validates, serialises, signs and parses each call; not moto (its emulation "
        "would dominate), not the Stubber (it skips serialisation, signing and parsing)"
    )
    setup = (
        f"{runs} runs; in each, {calls} new webhooks per side (fresh webhook-id each, same sample body, "
        f"signed beforehand) after {measured and output[REAL]['warmup']} untimed warm-up calls, one fresh "
        f"interpreter per side, all four alive at once and taking turns of {BATCH} calls (order rotating), "
        "so every side meets the same load; secrets cached (the receiver's SecretsManagerSigningKeys, the "
        "others' key decoded at import); the handler as deployed: lambda_handler(event, context)"
    )
    sink = (
        "stdout (the receiver's JSON log line with its EMF block) goes to /dev/null, line-buffered so each "
        "line is written as it is logged, as on Lambda. Per call the receiver printed "
        f"{output[REAL]['stdout']['bytes']:.0f} bytes in {output[REAL]['stdout']['lines']:.0f} line(s), "
        "the baseline and the peers "
        + ", ".join(f"{output[side]['stdout']['bytes']:.0f}" for side in (BASELINE, *PEERS))
    )
    cpu_gate, cpu_ratios = gate(BASELINE)
    wall_gate, wall_ratios = gate(BASELINE, "new_us")
    ours, theirs = pooled(REAL, "new_us"), pooled(BASELINE, "new_us")
    runs_text = (
        f"CPU-time ratio per run {', '.join(f'{ratio:.2f}' for ratio in cpu_ratios)} "
        f"(median {cpu_gate:.2f}x, spread {min(cpu_ratios):.2f}-{max(cpu_ratios):.2f}); "
        "wall-time ratio per run "
        f"{', '.join(f'{ratio:.2f}' for ratio in wall_ratios)} (median {wall_gate:.2f}x)"
    )
    gate_label = f"CPU, median of {runs} runs"
    details = {
        "runs": runs,
        "calls_per_run": calls,
        "batch": BATCH,
        "cpu_ratio_per_run": [round(ratio, 4) for ratio in cpu_ratios],
        "wall_ratio_per_run": [round(ratio, 4) for ratio in wall_ratios],
        "stdout_per_call": {side: output[side]["stdout"] for side in WARM_SIDES},
        "cpu_median_per_run_us": {
            side: [round(measure.median(run[side]["new_cpu_us"]), 1) for run in measured]
            for side in WARM_SIDES
        },
    }
    rows = [
        Row(
            area=AREA,
            name="receiver.warm_median",
            title="warm invocation, new webhook: median",
            measured=measure.median(ours),
            baseline=measure.median(theirs),
            unit="µs",
            measured_label=f"{handler[1]}.lambda_handler (one JSON log line with its EMF block, adapters)",
            baseline_label="baseline_receiver.lambda_handler",
            goal=WITHIN_1_25,
            gate=cpu_gate,
            gate_label=gate_label,
            runs=cpu_ratios,
            notes=[
                setup,
                backend,
                sink,
                runs_text,
                f"CPU time per call (median of the pooled samples): receiver "
                f"{measure.median(pooled(REAL, 'new_cpu_us')):.0f} µs, baseline "
                f"{measure.median(pooled(BASELINE, 'new_cpu_us')):.0f} µs; neither includes the DynamoDB "
                "round trip, which adds the same to both on AWS",
            ],
            details={
                "receiver_us": _spread(ours),
                "baseline_us": _spread(theirs),
                # What the cost model bills: CPU time per call, not wall time on a shared machine.
                "receiver_cpu_us": measure.median(pooled(REAL, "new_cpu_us")),
                "baseline_cpu_us": measure.median(pooled(BASELINE, "new_cpu_us")),
                **details,
            },
        ),
        Row(
            area=AREA,
            name="receiver.warm_p95",
            title="warm invocation, new webhook: 95th percentile",
            measured=measure.percentile(ours, 0.95),
            baseline=measure.percentile(theirs, 0.95),
            unit="µs",
            measured_label=f"{handler[1]}.lambda_handler",
            baseline_label="baseline_receiver.lambda_handler",
            notes=[
                "same calls as receiver.warm_median, pooled over its runs; nearest-rank p95. The tail moves "
                "with whatever else the machine runs (garbage collection, other processes)"
            ],
        ),
        Row(
            area=AREA,
            name="receiver.warm_duplicate_median",
            title="warm invocation, redelivered webhook (conditional put fails): median",
            measured=measure.median(pooled(REAL, "duplicate_us")),
            baseline=measure.median(pooled(BASELINE, "duplicate_us")),
            unit="µs",
            measured_label=f"{handler[1]}.lambda_handler (ALL_OLD item back, body compared)",
            baseline_label="baseline_receiver.lambda_handler",
            runs=gate(BASELINE, "duplicate_cpu_us")[1],
            gate_label=gate_label,
            notes=[
                "redeliveries of webhooks stored earlier in the same run, taking turns as above; the failed "
                "condition comes back as a ClientError that botocore parses (with the stored item, for the "
                "receiver), and the receiver logs and counts it through Powertools"
            ],
            details={
                "receiver_us": _spread(pooled(REAL, "duplicate_us")),
                "baseline_us": _spread(pooled(BASELINE, "duplicate_us")),
            },
        ),
    ]
    for peer, (short, label) in PEERS.items():
        peer_gate, peer_ratios = gate(peer)
        rows += [
            Row(
                area=AREA,
                name=f"receiver.{short}.warm_median",
                title=f"warm invocation, new webhook, against a peer: {label}",
                measured=measure.median(ours),
                baseline=measure.median(pooled(peer, "new_us")),
                unit="µs",
                measured_label=f"{handler[1]}.lambda_handler",
                baseline_label=f"benchmarks/{peer}.py: {label}",
                gate=peer_gate,
                gate_label=gate_label,
                runs=peer_ratios,
                notes=[
                    "the same runs and turns as receiver.warm_median; the ratio is the project's to the "
                    "peer's",
                    f"CPU-time ratio per run {', '.join(f'{ratio:.2f}' for ratio in peer_ratios)}",
                ],
                details={"peer_us": _spread(pooled(peer, "new_us"))},
            ),
            Row(
                area=AREA,
                name=f"receiver.{short}.warm_p95",
                title=f"warm invocation, new webhook, 95th percentile, against {label}",
                measured=measure.percentile(ours, 0.95),
                baseline=measure.percentile(pooled(peer, "new_us"), 0.95),
                unit="µs",
                measured_label=f"{handler[1]}.lambda_handler",
                baseline_label=f"benchmarks/{peer}.py",
                notes=["the same calls, nearest-rank p95"],
            ),
            Row(
                area=AREA,
                name=f"receiver.{short}.warm_duplicate_median",
                title=f"warm invocation, redelivered webhook, against {label}",
                measured=measure.median(pooled(REAL, "duplicate_us")),
                baseline=measure.median(pooled(peer, "duplicate_us")),
                unit="µs",
                measured_label=f"{handler[1]}.lambda_handler",
                baseline_label=f"benchmarks/{peer}.py",
                runs=gate(peer, "duplicate_cpu_us")[1],
                gate_label=gate_label,
            ),
        ]
    return rows


def warm_server(params: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """Run in a fresh interpreter (measure.Server): one side's handler, warmed up, then timed turn by turn."""
    from benchmarks.fake_aws import BenchLambdaContext, signed_event, signing_key  # noqa: PLC0415

    side = params["side"]
    handler, dynamodb = _warm_handler(params)
    template = json.loads(SAMPLE_EVENT.read_text())
    body = template["body"].encode()
    key = signing_key(params["secret"])
    made = [0]

    def batch(count: int) -> tuple[list[dict[str, Any]], list[BenchLambdaContext]]:
        # Same length of webhook-id on every side; every id new, so every call is a new write. Signed
        # now, not at start-up: on a loaded machine a run can outlast the 180 s timestamp window.
        first, made[0] = made[0], made[0] + count
        now = int(time.time())
        events = [
            signed_event(template, body, webhook_id=f"msg_bench_{n:09d}", timestamp=now, key=key)
            for n in range(first, made[0])
        ]
        return events, [BenchLambdaContext(side, n) for n in range(first, made[0])]

    _timed(handler, *batch(params["warmup"]), expect="accepted")
    samples: dict[str, list[float]] = {
        "new_us": [],
        "new_cpu_us": [],
        "duplicate_us": [],
        "duplicate_cpu_us": [],
    }
    stored: list[tuple[dict[str, Any], BenchLambdaContext]] = []
    counts = {"new": params["warmup"], "duplicate": 0}

    def step(command: dict[str, Any]) -> dict[str, Any] | None:
        operation = command["op"]
        if operation == "new":
            events, contexts = batch(command["count"])
            samples["new_us"] += _timed(
                handler, events, contexts, expect="accepted", cpu=samples["new_cpu_us"]
            )
            stored.extend(zip(events, contexts, strict=True))
            counts["new"] += len(events)
            return None
        if operation == "duplicate":
            again = stored[counts["duplicate"] : counts["duplicate"] + command["count"]]
            counts["duplicate"] += len(again)
            # Moment signs every retry afresh.
            now = int(time.time())
            resent = [
                signed_event(
                    template, body, webhook_id=event["headers"]["webhook-id"], timestamp=now, key=key
                )
                for event, _ in again
            ]
            samples["duplicate_us"] += _timed(
                handler,
                resent,
                [context for _, context in again],
                expect=DUPLICATE_STATUS[side],
                cpu=samples["duplicate_cpu_us"],
            )
            return None
        # Each new webhook one request (two for Powertools: the record, then its result), each redelivery one.
        per_new = 2 if side == PEER_POWERTOOLS else 1
        expected = counts["new"] * per_new + counts["duplicate"]
        if dynamodb.requests != expected or len(dynamodb.items) != counts["new"]:
            raise RuntimeError(f"{side}: {dynamodb.requests} DynamoDB requests, {expected} expected")
        with measure.captured_stdout() as written:
            _timed(handler, *batch(50), expect="accepted")
        return {
            **samples,
            "warmup": params["warmup"],
            "stdout": {"bytes": len(written) / 50, "lines": written.count(b"\n") / 50},
        }

    return step


def _warm_handler(params: dict[str, Any]) -> tuple[Callable[[Any, Any], Any], Any]:
    """The side's handler wired to an in-memory DynamoDB (and, for the receiver, Secrets Manager)."""
    from benchmarks.fake_aws import InMemoryDynamoDB, InMemorySecretsManager  # noqa: PLC0415

    side = params["side"]
    # Lambda writes each line as it comes; a pipe or /dev/null would otherwise buffer whole blocks.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    dynamodb = InMemoryDynamoDB(key="id" if side == PEER_POWERTOOLS else "webhook_id")
    if side == REAL:
        receiver = importlib.import_module(params["handler_module"])
        from moment_sync import runtime  # noqa: PLC0415

        runtime.receiver_dependencies()
        dynamodb.attach(runtime.aws_client("dynamodb").meta.events)
        secrets = InMemorySecretsManager(
            os.environ["WEBHOOK_SIGNING_SECRET_ARN"], json.dumps([params["secret"]])
        )
        secrets.attach(runtime.aws_client("secretsmanager").meta.events)
        return receiver.lambda_handler, dynamodb
    module = importlib.import_module(f"benchmarks.{side}")
    dynamodb.attach(module.dynamodb.meta.events)
    return module.lambda_handler, dynamodb


def warm_child(params: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh interpreter: time one side's handler on new webhooks, then on redeliveries."""
    from benchmarks.fake_aws import (  # noqa: PLC0415
        BenchLambdaContext,
        InMemoryDynamoDB,
        InMemorySecretsManager,
        signed_event,
        signing_key,
    )

    side = params["side"]
    # Lambda writes each line as it comes; a pipe or /dev/null would otherwise buffer whole blocks.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    dynamodb = InMemoryDynamoDB()
    if side == REAL:
        receiver = importlib.import_module(params["handler_module"])
        from moment_sync import runtime  # noqa: PLC0415

        runtime.receiver_dependencies()
        dynamodb.attach(runtime.aws_client("dynamodb").meta.events)
        secrets = InMemorySecretsManager(
            os.environ["WEBHOOK_SIGNING_SECRET_ARN"], json.dumps([params["secret"]])
        )
        secrets.attach(runtime.aws_client("secretsmanager").meta.events)
        handler: Callable[[Any, Any], Any] = receiver.lambda_handler
    else:
        from benchmarks import baseline_receiver  # noqa: PLC0415

        dynamodb.attach(baseline_receiver.dynamodb.meta.events)
        handler = baseline_receiver.lambda_handler

    template = json.loads(SAMPLE_EVENT.read_text())
    body = template["body"].encode()
    key = signing_key(params["secret"])
    now = int(time.time())

    def batch(tag: str, count: int) -> tuple[list[dict[str, Any]], list[BenchLambdaContext]]:
        # Same length of webhook-id on both sides; every id new, so every call is a new write.
        events = [
            signed_event(
                template, body, webhook_id=f"msg_bench_{side[:4]}_{tag}{n:07d}", timestamp=now, key=key
            )
            for n in range(count)
        ]
        return events, [BenchLambdaContext(side, n) for n in range(count)]

    _timed(handler, *batch("w", params["warmup"]), expect="accepted")
    new_events, contexts = batch("n", params["calls"])
    if params.get("profile"):
        # cProfile of the timed loop instead of timings (docs/performance.md: where the time goes).
        import cProfile  # noqa: PLC0415

        profiler = cProfile.Profile()
        profiler.runcall(_timed, handler, new_events, contexts, expect="accepted")
        profiler.dump_stats(params["profile"])
        return {}
    new_cpu_us: list[float] = []
    new_us = _timed(handler, new_events, contexts, expect="accepted", cpu=new_cpu_us)
    duplicate_events = new_events[: params["duplicates"]]
    duplicate_us = _timed(handler, duplicate_events, contexts[: len(duplicate_events)], expect="duplicate")
    expected_requests = params["warmup"] + params["calls"] + params["duplicates"]
    if dynamodb.requests != expected_requests or len(dynamodb.items) != params["warmup"] + params["calls"]:
        raise RuntimeError(f"{side}: {dynamodb.requests} DynamoDB requests for {expected_requests} calls")

    with measure.captured_stdout() as written:
        _timed(handler, *batch("o", 50), expect="accepted")
    return {
        "new_us": new_us,
        "new_cpu_us": new_cpu_us,
        "duplicate_us": duplicate_us,
        "stdout": {"bytes": len(written) / 50, "lines": written.count(b"\n") / 50},
    }


def _timed(
    handler: Callable[[Any, Any], Any],
    events: Sequence[Any],
    contexts: Sequence[Any],
    *,
    expect: str,
    cpu: list[float] | None = None,
) -> list[float]:
    """Wall time of each call in µs; with `cpu`, each call's CPU time (this thread's) appended to it."""
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    samples: list[float] = []
    cpu_samples: list[float] = []
    answers = []
    gc.collect()
    for event, context in zip(events, contexts, strict=True):
        started, cpu_started = clock(), cpu_clock()
        answers.append(handler(event, context))
        cpu_samples.append((cpu_clock() - cpu_started) / 1000)
        samples.append((clock() - started) / 1000)
    for answer in answers:
        if answer["statusCode"] != 200 or json.loads(answer["body"])["status"] != expect:
            raise RuntimeError(f"expected {expect}, got {answer}")
    if cpu is not None:
        cpu += cpu_samples
    return samples


# -- storage: requests and write units ----------------------------------------------------------------


def _storage_rows(context: Context, environment: dict[str, str], handler: tuple[Path, str]) -> list[Row]:
    context.progress("receiver: DynamoDB requests and write units per webhook (moto)")
    found = measure.run_call(
        context.python,
        "benchmarks.receiver:storage_child",
        {"secret": environment["BASELINE_WEBHOOK_SECRETS"], "handler_module": handler[1]},
        environment=environment,
        pythonpath=(handler[0], LAYER_DIR, ROOT / "local", ROOT),
    )
    ours, theirs = found[REAL], found[BASELINE]
    counted = (
        "counted with a before-call.dynamodb.* hook on the receiver's own client (runtime.aws_client), "
        "the real handler and adapter against moto's DynamoDB, table from template.yaml"
    )
    units_how = (
        "DynamoDB's size rules (attribute names + values; binary by raw bytes), 1 write unit per KB "
        "rounded up; the WebhookEvents table is on-demand, so these are write request units"
    )
    rows = [
        Row(
            area=AREA,
            name="receiver.dynamodb_requests_new",
            title="DynamoDB requests per new webhook",
            measured=len(ours["new_requests"]),
            baseline=1,
            unit="requests",
            measured_label=f"the sample event, first delivery: {ours['new_requests']}",
            baseline_label="the ideal: one conditional PutItem",
            goal=EXACTLY_1,
            notes=[
                counted,
                f"the baseline receiver, counted the same way: {len(theirs['new_requests'])}",
                f"Secrets Manager requests over the whole run: {ours['secrets_requests']} "
                "(the first call fills Powertools' cache for SIGNING_SECRETS_MAX_AGE_SECONDS)",
                f"a forged delivery made {len(ours['forged_requests'])} DynamoDB requests",
            ],
        ),
        Row(
            area=AREA,
            name="receiver.dynamodb_requests_duplicate",
            title="DynamoDB requests per redelivered webhook",
            measured=len(ours["duplicate_requests"]),
            baseline=1,
            unit="requests",
            measured_label=f"the sample event again, re-signed 60 s later: {ours['duplicate_requests']}",
            baseline_label="the ideal: one conditional PutItem, no read before or after",
            goal=EXACTLY_1,
            notes=[
                counted,
                "the stored body comes back on the failed condition (ReturnValuesOnConditionCheckFailure="
                "ALL_OLD), which consumes no read units",
                f"the baseline receiver: {len(theirs['duplicate_requests'])}",
            ],
        ),
        Row(
            area=AREA,
            name="receiver.write_units_new",
            title="write units per new webhook (the sample event), table and indexes",
            measured=ours["new_units"],
            baseline=theirs["new_units"],
            unit="write units",
            measured_label=f"the stored item, {ours['item_bytes']} bytes (body {ours['body_bytes']}, other "
            f"attributes {ours['item_bytes'] - ours['body_bytes']}): table {ours['table_units']}"
            + "".join(f" + index {name} {units}" for name, units in ours["index_units"].items()),
            baseline_label="the baseline's item (webhook_id, body, received_at), "
            f"{theirs['item_bytes']} bytes, in a table built from the same template",
            notes=[
                units_how,
                "an item carrying a secondary index's key attributes is also written to that index "
                "(its projected attributes, rounded up to a KB); sparse indexes skip items without them",
                f"a body of up to {1024 - (ours['item_bytes'] - ours['body_bytes'])} bytes keeps the "
                f"receiver's item at 1 table unit (baseline: "
                f"{1024 - (theirs['item_bytes'] - theirs['body_bytes'])}); docs/webhooks.md says Moment's "
                "events are about 1 KiB, so real ones may cost one more",
                "the stream (NEW_IMAGE), TTL deletes and point-in-time recovery add no write units",
            ],
            details={REAL: ours, BASELINE: theirs},
        ),
        Row(
            area=AREA,
            name="receiver.write_units_duplicate",
            title="write units per redelivered webhook (failed conditional put)",
            measured=ours["duplicate_units"],
            baseline=theirs["duplicate_units"],
            unit="write units",
            measured_label="the larger of the stored item and the item sent, rounded up to a KB; "
            "no index write",
            baseline_label="the same for the baseline's item",
            notes=[
                units_how,
                "a failed conditional write still consumes write capacity for the item it found",
            ],
        ),
    ]
    for peer, (short, label) in PEERS.items():
        theirs = found[peer]
        described = f"benchmarks/{peer}.py ({label}) against moto, counted the same way"
        rows += [
            Row(
                area=AREA,
                name=f"receiver.{short}.dynamodb_requests_new",
                title=f"DynamoDB requests per new webhook, against {label}",
                measured=len(ours["new_requests"]),
                baseline=len(theirs["new_requests"]),
                unit="requests",
                measured_label=f"{ours['new_requests']}",
                baseline_label=f"{described}: {theirs['new_requests']}",
            ),
            Row(
                area=AREA,
                name=f"receiver.{short}.dynamodb_requests_duplicate",
                title=f"DynamoDB requests per redelivered webhook, against {label}",
                measured=len(ours["duplicate_requests"]),
                baseline=len(theirs["duplicate_requests"]),
                unit="requests",
                measured_label=f"{ours['duplicate_requests']}",
                baseline_label=f"{described}: {theirs['duplicate_requests']}",
                notes=[
                    f"a forged delivery: {len(theirs['forged_requests'])} requests (signature checked first)"
                ],
            ),
            Row(
                area=AREA,
                name=f"receiver.{short}.write_units_new",
                title=f"write units per new webhook, against {label}",
                measured=ours["new_units"],
                baseline=theirs["new_units"],
                unit="write units",
                measured_label="table + the Unfinished index entry (the re-drive's way to what the stream "
                "did not finish)",
                baseline_label=f"{described}; stored item {theirs['item_bytes']} bytes"
                + (
                    f" (INPROGRESS record {theirs['in_progress_item_bytes']} bytes, then the update that "
                    "saves the result)"
                    if "in_progress_item_bytes" in theirs
                    else ""
                ),
                notes=[units_how],
                details={peer: theirs},
            ),
            Row(
                area=AREA,
                name=f"receiver.{short}.write_units_duplicate",
                title=f"write units per redelivered webhook, against {label}",
                measured=ours["duplicate_units"],
                baseline=theirs["duplicate_units"],
                unit="write units",
                measured_label="the failed conditional put",
                baseline_label=described,
                notes=[units_how],
            ),
        ]
    return rows


def storage_child(params: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh interpreter: the real handler and the baseline against moto; count and size."""
    import boto3  # noqa: PLC0415
    from moto import mock_aws  # noqa: PLC0415

    from benchmarks.fake_aws import BenchLambdaContext, signed_event, signing_key  # noqa: PLC0415
    from local_stack.made_up_values import FORGER_WEBHOOK_SECRET  # noqa: PLC0415
    from local_stack.template import create_table  # noqa: PLC0415

    template = json.loads(SAMPLE_EVENT.read_text())
    body = template["body"].encode()
    signed_at = int(template["headers"]["webhook-timestamp"])
    webhook_id = template["headers"]["webhook-id"]
    key = signing_key(params["secret"])
    results: dict[str, Any] = {}
    with mock_aws():
        client = boto3.client("dynamodb")
        create_table(client, "WebhookEventsTable", TABLE_NAME)
        create_table(client, "WebhookEventsTable", "BaselineWebhookEvents")
        boto3.client("secretsmanager").create_secret(
            Name=SIGNING_KEYS_NAME, SecretString=json.dumps([params["secret"]])
        )

        receiver = importlib.import_module(params["handler_module"])
        from moment_sync import runtime  # noqa: PLC0415

        runtime.reset()
        clock = [signed_at + 3.0]
        dependencies = dataclasses.replace(runtime.receiver_dependencies(), clock=lambda: clock[0])
        secrets_requests: list[str] = []
        runtime.aws_client("secretsmanager").meta.events.register(
            "before-call.secrets-manager.*", lambda model, **_: secrets_requests.append(model.name)
        )

        def real(event: dict[str, Any]) -> Any:
            return receiver.lambda_handler(event, BenchLambdaContext(REAL, 1), dependencies)

        def real_redelivery() -> Any:
            clock[0] = signed_at + 63.0
            return real(redelivery)

        # The file in events/ as it is (signed with the local secret); then Moment's redelivery,
        # re-signed a minute later; then a forgery.
        redelivery = signed_event(template, body, webhook_id=webhook_id, timestamp=signed_at + 60, key=key)
        forged = signed_event(
            template,
            body,
            webhook_id="msg_forged",
            timestamp=signed_at,
            key=signing_key(FORGER_WEBHOOK_SECRET),
        )
        results[REAL] = _count_and_size(
            runtime.aws_client("dynamodb"),
            TABLE_NAME,
            new=lambda: real(template),
            duplicate=real_redelivery,
            forged=lambda: real(forged),
        )
        results[REAL]["secrets_requests"] = len(secrets_requests)

        from benchmarks import baseline_receiver  # noqa: PLC0415

        baseline_receiver.TABLE_NAME = "BaselineWebhookEvents"
        now = int(time.time())
        fresh = signed_event(template, body, webhook_id=webhook_id, timestamp=now, key=key)
        results[BASELINE] = _count_and_size(
            baseline_receiver.dynamodb,
            "BaselineWebhookEvents",
            new=lambda: baseline_receiver.lambda_handler(fresh, None),
            duplicate=lambda: baseline_receiver.lambda_handler(fresh, None),
            forged=lambda: baseline_receiver.lambda_handler(forged, None),
        )
        results.update(_count_peers(client, template, body, key, forged))
    return results


def _count_peers(
    client: Any, template: dict[str, Any], body: bytes, key: bytes, forged: dict[str, Any]
) -> dict[str, Any]:
    """Each peer against moto: requests per new, redelivered and forged webhook, and write units."""
    from benchmarks.dynamodb_units import item_size, write_units  # noqa: PLC0415
    from benchmarks.fake_aws import BenchLambdaContext, signed_event  # noqa: PLC0415
    from local_stack.template import create_table  # noqa: PLC0415

    now = int(time.time())
    webhook_id = template["headers"]["webhook-id"]
    fresh = signed_event(template, body, webhook_id=webhook_id, timestamp=now, key=key)
    # standardwebhooks checks the timestamp against the wall clock: Moment's retry, re-signed a minute on.
    again = signed_event(template, body, webhook_id=webhook_id, timestamp=now + 60, key=key)
    forged = dict(forged, headers={**forged["headers"], "webhook-timestamp": str(now)})
    results: dict[str, Any] = {}

    create_table(client, "WebhookEventsTable", "PeerWebhookEvents")
    from benchmarks import peer_conditional_put_receiver as put_peer  # noqa: PLC0415

    put_peer.TABLE_NAME = "PeerWebhookEvents"
    results[PEER_PUT] = _count_and_size(
        put_peer.dynamodb,
        "PeerWebhookEvents",
        new=lambda: put_peer.lambda_handler(fresh, BenchLambdaContext(PEER_PUT, 1)),
        duplicate=lambda: put_peer.lambda_handler(again, BenchLambdaContext(PEER_PUT, 2)),
        forged=lambda: put_peer.lambda_handler(forged, BenchLambdaContext(PEER_PUT, 3)),
    )

    # Powertools' idempotency table, as its documentation has it: key `id`, TTL on `expiration`.
    client.create_table(
        TableName="IdempotencyRecords",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    from benchmarks import peer_powertools_receiver as powertools_peer  # noqa: PLC0415

    requests: list[str] = []
    sent: list[dict[str, Any]] = []

    def seen(model: Any, params: dict[str, Any], **_: Any) -> None:
        requests.append(model.name)
        sent.append(json.loads(params.get("body") or b"{}"))

    powertools_peer.dynamodb.meta.events.register("before-call.dynamodb.*", seen)
    counted: dict[str, Any] = {}
    for name, event, expected in (("new", fresh, 200), ("duplicate", again, 200), ("forged", forged, 401)):
        requests.clear()
        answer = powertools_peer.lambda_handler(event, BenchLambdaContext(PEER_POWERTOOLS, 1))
        if answer["statusCode"] != expected:
            raise RuntimeError(f"{PEER_POWERTOOLS} {name}: expected {expected}, got {answer}")
        counted[f"{name}_requests"] = list(requests)
    powertools_peer.dynamodb.meta.events.unregister("before-call.dynamodb.*", seen)
    [stored] = client.scan(TableName="IdempotencyRecords")["Items"]
    put_size = item_size(sent[0]["Item"])  # the INPROGRESS record
    stored_size = item_size(stored)  # after the UpdateItem that saved the result
    results[PEER_POWERTOOLS] = {
        **counted,
        "item_bytes": stored_size,
        "in_progress_item_bytes": put_size,
        # The put, then the update (the larger of the item before and after it); no index.
        "new_units": write_units(put_size) + write_units(max(put_size, stored_size)),
        "duplicate_units": write_units(max(stored_size, item_size(sent[2]["Item"]))),
        "index_units": {},
    }
    return results


def _count_and_size(
    client: Any,
    table: str,
    *,
    new: Callable[[], Any],
    duplicate: Callable[[], Any],
    forged: Callable[[], Any],
) -> dict[str, Any]:
    from benchmarks.dynamodb_units import index_write_units, item_size, write_units  # noqa: PLC0415

    requests: list[str] = []
    sent: list[Any] = []

    def seen(model: Any, params: dict[str, Any], **_: Any) -> None:
        requests.append(model.name)
        # botocore's request dict: the body is the JSON sent (binary values as base64 text).
        sent_params = json.loads(params.get("body") or b"{}")
        if "Item" in sent_params:
            sent.append(sent_params["Item"])

    client.meta.events.register("before-call.dynamodb.*", seen)
    counted: dict[str, Any] = {}
    for name, call, expected in (("new", new, 200), ("duplicate", duplicate, 200), ("forged", forged, 401)):
        requests.clear()
        answer = call()
        if answer["statusCode"] != expected:
            raise RuntimeError(f"{name}: expected {expected}, got {answer}")
        counted[f"{name}_requests"] = list(requests)
    client.meta.events.unregister("before-call.dynamodb.*", seen)
    [stored] = client.scan(TableName=table)["Items"]
    stored_size = item_size(stored)
    indexes = index_write_units(stored, client.describe_table(TableName=table)["Table"])
    return {
        **counted,
        "item_bytes": stored_size,
        "body_bytes": len(stored["body"]["B"]),
        "table_units": write_units(stored_size),
        "index_units": indexes,
        "new_units": write_units(stored_size) + sum(indexes.values()),
        # A failed condition writes no index.
        "duplicate_units": write_units(max([stored_size, *(item_size(item) for item in sent[1:])])),
    }
