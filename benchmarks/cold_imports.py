"""Each function's cold import against `import boto3` alone.

For every AWS::Serverless::Function in template.yaml: a fresh interpreter imports its handler module
with the Python path Lambda gives it (the function's CodeUri, then the layer's `layers/shared`),
then creates its first DynamoDB client (every function needs one, and the functions create theirs
lazily, so an import alone would leave boto3 out of some of them). The baseline is a fresh
interpreter doing `import boto3; boto3.client("dynamodb")`. Starts are interleaved so drift on the
machine falls on every subject alike. docs/performance.md says what would move each figure.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks import measure, sam_build
from benchmarks.registry import ROOT, Context, Row

TITLE = "each function's cold import vs `import boto3` alone"
AREA = "cold_imports"
LAYER_DIR = ROOT / "layers" / "shared"
BOTO3 = "boto3 alone"
FIRST_CLIENT = "moment_sync.runtime:aws_client=dynamodb"


def functions() -> list[tuple[str, Path, str]]:
    """(logical id, code folder, handler module) of every function template.yaml declares."""
    from local_stack.template import load_template  # noqa: PLC0415

    found = []
    for logical_id, resource in load_template()["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        properties = resource["Properties"]
        module = properties["Handler"].rpartition(".")[0]
        found.append((logical_id, ROOT / properties["CodeUri"], module))
    return found


def _environment() -> dict[str, str]:
    """Enough of what template.yaml sets for an import: the imports read no table or secret."""
    return measure.lambda_environment(
        {
            "ENVIRONMENT": "dev",
            "WEBHOOK_EVENTS_TABLE": "WebhookEvents",
            "LEDGER_TABLE": "Ledger",
            "WEBHOOK_SIGNING_SECRET_ARN": "bench/moment/webhook-signing-secrets",
            "MOMENT_API_KEY_SECRET_ARN": "bench/moment/api-key",
        }
    )


def run(context: Context) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-cold-imports-") as scratch:
        return _run(context, Path(scratch))


def _layout(context: Context, scratch: Path) -> tuple[Any, str]:
    """The build to start from (None: the source tree), and a sentence saying which."""
    built = sam_build.build()
    if isinstance(built, str):
        context.progress(f"cold_imports: no sam build ({built}); starting from the source tree")
        return None, (
            f"no sam build ({built}), so from the source tree: the function folder and layers/shared, with "
            ".venv's site-packages for the layer's requirements (which also holds development packages: "
            "httpx then imports click, rich and pygments, which the layer does not have)"
        )
    return built, (
        "as Lambda lays it out, from this run's `sam build`: the built function folder (/var/task), the "
        "built layer with its precompiled .pyc (/opt/python), and the runtime's boto3, botocore, s3transfer, "
        "jmespath, urllib3, dateutil and six (symlinked from .venv); `python -S`, so nothing else; "
        "PYTHONDONTWRITEBYTECODE=1 (read-only, as on Lambda: only the one-file handler is compiled)"
    )


def _run(context: Context, scratch: Path) -> list[Row]:
    built, layout = _layout(context, scratch)
    runtime = sam_build.runtime_packages(scratch) if built else None
    flags = ("-S",) if built else ()
    subjects: list[measure.ColdSubject] = []
    names: dict[str, str] = {}
    for logical_id, code_dir, module in functions():
        if not (code_dir / f"{module}.py").exists():
            context.skip(
                f"{AREA}.{code_dir.name}",
                f"{logical_id}'s handler {code_dir.relative_to(ROOT)}/{module}.py does not exist yet",
            )
            continue
        names[code_dir.name] = logical_id
        path = (built.artifacts[logical_id], built.layer_python, runtime) if built else (code_dir, LAYER_DIR)
        subjects.append(
            measure.ColdSubject(
                name=code_dir.name,
                module=module,
                pythonpath=path,
                ready=(FIRST_CLIENT,),
                python_flags=flags,
                # /var/task and /opt are read-only on Lambda; and the build's folders are measured by `sizes`
                write_bytecode=not built,
            )
        )
    boto3_alone = measure.ColdSubject(
        name=BOTO3,
        module="boto3",
        pythonpath=(runtime,) if runtime else (),
        ready=("boto3:client=dynamodb",),
        python_flags=flags,
        write_bytecode=not built,
    )
    starts = context.runs  # one start per subject and run, interleaved
    environment = _environment()
    context.progress(
        f"cold_imports: {len(subjects)} functions and boto3 alone, {starts} starts each, interleaved"
    )
    samples = measure.cold_start(context.python, [*subjects, boto3_alone], starts, environment)
    baseline = samples[BOTO3]
    rows = []
    for subject in subjects:
        # Where the import time goes: one `-X importtime` start each (not in a quick run).
        breakdown = (
            measure.ImportBreakdown([], {})
            if context.quick
            else measure.import_breakdown(context.python, subject, environment)
        )
        row = _row(subject, names[subject.name], samples[subject.name], baseline, breakdown, starts)
        row.notes.insert(1, f"Python path: {layout}")
        rows.append(row)
    return rows


def _row(
    subject: measure.ColdSubject,
    logical_id: str,
    ours: measure.ColdSamples,
    boto3_alone: measure.ColdSamples,
    breakdown: measure.ImportBreakdown,
    starts: int,
) -> Row:
    # The fastest start of each: with a few starts per subject on a shared machine, the median moves with
    # whatever else runs, while contention only ever slows a start down. The medians are in the notes.
    measured = min(ours.through(1))
    baseline = min(boto3_alone.through(1))
    median_ratio = measure.median(ours.through(1)) / measure.median(boto3_alone.through(1))
    checks = measure.cross_checks(
        ours.through(1),
        boto3_alone.through(1),
        cpu=(ours.through(1, cpu=True), boto3_alone.through(1, cpu=True)),
    )
    import_only = min(ours.import_ms)
    details: dict[str, Any] = {
        "function_ms": measure.spread(ours.through(1)),
        "import_only_ms": measure.spread(ours.import_ms),
        "boto3_alone_ms": measure.spread(boto3_alone.through(1)),
        **checks,
        "median_ratio": round(median_ratio, 3),
        "modules_loaded": {subject.name: ours.modules, BOTO3: boto3_alone.modules},
        "import_breakdown": {"by_package_ms": breakdown.by_package_ms, "roots": breakdown.roots},
        "starts": starts,
    }
    return Row(
        area=AREA,
        name=f"{AREA}.{subject.name}",
        title=f"{logical_id}: cold import of its handler + its first DynamoDB client (fastest start)",
        measured=measured,
        baseline=baseline,
        unit="ms",
        measured_label=f"import {subject.module} (its function folder, then the layer), "
        "then runtime.aws_client('dynamodb')",
        baseline_label="import boto3, then boto3.client('dynamodb')",
        notes=[
            f"fastest of {starts} fresh interpreters per subject (the steadiest estimate on a shared "
            "machine: contention only slows a start down), started in turn with the other functions and "
            "boto3 alone; an untimed first start of each warms the page cache",
            f"fastest import alone {import_only:.1f} ms; {measured - baseline:+.1f} ms over boto3 alone",
            f"noise check: median vs median {median_ratio:.2f}x ({measure.median(ours.through(1)):.1f} vs "
            f"{measure.median(boto3_alone.through(1)):.1f} ms), median of same-round ratios "
            f"{checks['paired_median_ratio']:.2f}x, median CPU time {checks['cpu_time_ratio']:.2f}x",
            f"modules loaded: {ours.modules} (boto3 alone with its client: {boto3_alone.modules})",
            *breakdown.describe(),
        ],
        details=details,
        # Each round's CPU-time ratio (the starts made next to each other): the spread over the runs.
        runs=[
            mine / other
            for mine, other in zip(ours.through(1, cpu=True), boto3_alone.through(1, cpu=True), strict=True)
        ],
        gate_label=f"CPU, median of {starts} runs",
    )
