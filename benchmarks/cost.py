"""Cost per million webhooks, modelled from what this run measured and AWS list prices.

Per webhook (a new `obligation.amount_applied`, applied to a balance not yet pending, the usual
case): one HTTP API request; the receiver's invocation; the reconciler's invocation (one record
each: at a few webhooks a second the 1 s batching window rarely gathers more); the write units both
make (their rows in this run); the bytes both print to CloudWatch Logs, plus Lambda's own
START/END/REPORT lines. The baseline is the same model for the minimal receiver
(benchmarks/baseline_receiver.py: one PutItem, prints nothing) and no reconciler, so the ratio says
what the whole system costs per webhook against the least a receiver can cost.

Figures come from the rows the receiver and reconciler areas made earlier in this run; when those
areas did not run (`--only cost`), this area measures them itself and says so. The prices and every
assumption are stated in PRICES and ASSUMPTIONS and in docs/performance.md.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any

from benchmarks import events_cost
from benchmarks.registry import Context, Goal, Row

TITLE = "cost per million webhooks vs the minimal receiver (modelled)"
AREA = "cost"

# AWS list prices, US East (N. Virginia), on-demand, in USD. Not af-south-1 (Cape Town), where the
# stack would likely run: its prices are higher and are not stated here because they could not be
# checked. As published after DynamoDB's on-demand price cut of 1 November 2024; not re-checked
# against the live pricing pages for the run of 2026-11-23 (no network access from the benchmark).
PRICES = {
    "http_api_per_million_requests": 1.00,  # HTTP API, first 300 million a month, per 512 KB request
    "lambda_arm64_per_gb_second": 0.0000133334,  # first 7.5 billion GB-s a month
    "lambda_per_million_requests": 0.20,
    "dynamodb_per_million_write_request_units": 0.625,  # on-demand, Standard table class
    "dynamodb_per_million_read_request_units": 0.125,
    "logs_ingestion_per_gb": 0.50,  # CloudWatch Logs, Standard log class; GB = 2**30 bytes
    "secrets_manager_per_10000_calls": 0.05,
    "secrets_manager_per_secret_month": 0.40,
}
PRICES_AS_OF = (
    "AWS list prices for us-east-1 (af-south-1's are higher and not used), as published after DynamoDB's "
    "on-demand price cut of 2024-11-01; not re-checked against the live pricing pages on 2026-11-23"
)

ASSUMPTIONS = {
    # Lambda gives a function CPU in proportion to its memory: 1,769 MB is one vCPU.
    "mb_per_vcpu": 1769,
    # This machine's x86 core taken as fast as a Graviton core for this code (unmeasured).
    "lambda_core_speed_vs_this_machine": 1.0,
    # Round trips the handler waits for, billed as duration (typical in-region figures, unmeasured).
    "putitem_round_trip_ms": 5.0,
    "transactwriteitems_round_trip_ms": 10.0,
    # Lambda's START, END and REPORT lines (text format) per invocation, estimated.
    "platform_log_bytes_per_invocation": 260,
    "records_per_reconciler_invocation": 1,
    # Secrets Manager is paid per month, not per webhook: spread over this many webhooks a month.
    "webhooks_per_month": 1_000_000,
    # Receiver environments kept warm all month, each reading the signing secret once a minute
    # (SigningSecretsCacheSeconds 60): 43,200 calls a month each.
    "warm_receiver_environments": 1,
    # The Moment API key (MOMENT_API_KEY_MAX_AGE_SECONDS 300): read about once per run by the pusher and
    # the re-drive (every 5 minutes each: 8,640 runs a month each) and the daily check (30).
    "moment_key_reads_per_month": 2 * 8_640 + 30,
}
SECONDS_PER_MONTH = 30 * 86_400

# The re-drive's reads per webhook received (docs/ledger.md#the-cursor-and-the-retry-list): its status
# once by the forward read (a strongly consistent BatchGetItem: 1 read unit for an item under 4 KB)
# and once by the late sweep a day behind (eventually consistent: 0.5), plus the event's ~100 bytes of
# KEYS_ONLY `Unfinished` index read by each (an eventually consistent Query, 0.5 unit per 4 KB).
REDRIVE_READS = {
    "forward_status": 1.0,
    "late_sweep_status": 0.5,
    "index_bytes": 2 * 100,
}


def redrive_read_units_per_webhook() -> float:
    index_units = REDRIVE_READS["index_bytes"] / 4096 * 0.5
    return REDRIVE_READS["forward_status"] + REDRIVE_READS["late_sweep_status"] + index_units


# Issue 16, item 4: at most $8.50 per million webhooks, everything included (ingestion, the ledger, the
# events out). The row's baseline is that budget, so its ratio is the share of it spent.
BUDGET_USD_PER_MILLION = 8.50

NEEDED = {
    "receiver": ("receiver.warm_median", "receiver.write_units_new"),
    "reconciler": ("reconciler.write_units_applied", "reconciler.cpu_per_invocation_single"),
}


@dataclass(frozen=True)
class Webhook:
    """One webhook's bill in the model: what it costs, item by item, in USD."""

    api_gateway: float
    lambda_: float
    dynamodb: float
    logs: float
    secrets_manager: float
    explained: dict[str, str]

    @property
    def total(self) -> float:
        return self.api_gateway + self.lambda_ + self.dynamodb + self.logs + self.secrets_manager


def _secrets_manager() -> tuple[float, str]:
    """Per webhook: the month's Secrets Manager bill (calls and secrets stored) over the month's webhooks."""
    from local_stack.template import load_template  # noqa: PLC0415

    secrets = sum(
        resource["Type"] == "AWS::SecretsManager::Secret"
        for resource in load_template()["Resources"].values()
    )
    signing_reads = SECONDS_PER_MONTH // 60 * ASSUMPTIONS["warm_receiver_environments"]
    calls = signing_reads + ASSUMPTIONS["moment_key_reads_per_month"]
    calls_usd = calls / 10_000 * PRICES["secrets_manager_per_10000_calls"]
    stored_usd = secrets * PRICES["secrets_manager_per_secret_month"]
    month = ASSUMPTIONS["webhooks_per_month"]
    return (calls_usd + stored_usd) / month, (
        f"a month's bill over {month:,} webhooks: the signing secret read once a minute by "
        f"{ASSUMPTIONS['warm_receiver_environments']} warm receiver environment(s), {signing_reads:,} calls; "
        f"the Moment API key, {ASSUMPTIONS['moment_key_reads_per_month']:,} calls (pusher and re-drive "
        f"every 5 minutes, the daily check); {calls:,} calls at $0.05 per 10,000 = ${calls_usd:.3f}, plus "
        f"{secrets} secrets at $0.40 a month = ${stored_usd:.2f}: ${calls_usd + stored_usd:.3f} a month, "
        "whatever the traffic (at 10 million webhooks a month, a tenth of this per million)"
    )


def _billed_ms(cpu_us: float, round_trip_ms: float, memory_mb: int) -> int:
    """Lambda's billed duration (1 ms granularity) for CPU measured here plus a round trip waited for."""
    slowdown = ASSUMPTIONS["mb_per_vcpu"] / memory_mb / ASSUMPTIONS["lambda_core_speed_vs_this_machine"]
    return math.ceil(cpu_us / 1000 * slowdown + round_trip_ms)


def _lambda_usd(billed_ms: float, memory_mb: int) -> float:
    return (
        billed_ms / 1000 * memory_mb / 1024 * PRICES["lambda_arm64_per_gb_second"]
        + PRICES["lambda_per_million_requests"] / 1e6
    )


def _logs_usd(printed_bytes: float) -> float:
    return printed_bytes / 2**30 * PRICES["logs_ingestion_per_gb"]


def _inputs(context: Context) -> tuple[dict[str, Row], list[str]]:
    """The rows the model needs: from this run, or measured here when their area did not run."""
    rows: dict[str, Row] = {}
    measured_here: list[str] = []
    for area, names in NEEDED.items():
        if all(context.row(name) for name in names):
            rows.update({name: context.row(name) for name in names})  # type: ignore[misc]
            continue
        context.progress(f"cost: the {area} area did not run; measuring what the model needs from it")
        module: Any = importlib.import_module(f"benchmarks.{area}")
        found = {row.name: row for row in module.cost_inputs(context)}
        rows.update({name: found[name] for name in names})
        measured_here.append(area)
    return rows, measured_here


def _memory_mb() -> int:
    from local_stack.template import load_template  # noqa: PLC0415

    return int(load_template()["Globals"]["Function"]["MemorySize"])


def run(context: Context) -> list[Row]:
    rows, measured_here = _inputs(context)
    memory_mb = _memory_mb()
    system, baseline = _system(rows, memory_mb), _baseline(rows, memory_mb)
    source = (
        "inputs measured in this run by the receiver and reconciler areas"
        if not measured_here
        else f"inputs measured by this area itself (the {' and '.join(measured_here)} area(s) did not run)"
    )
    common = [
        source,
        f"prices: {PRICES_AS_OF}: " + ", ".join(f"{name} ${value:g}" for name, value in PRICES.items()),
        "assumptions: " + ", ".join(f"{name} {value:g}" for name, value in ASSUMPTIONS.items()),
    ]
    per_million = 1e6
    items = (
        ("api_gateway", "API Gateway (HTTP API)", system.api_gateway, baseline.api_gateway),
        ("lambda", "Lambda (requests and duration)", system.lambda_, baseline.lambda_),
        ("dynamodb", "DynamoDB (on-demand write request units)", system.dynamodb, baseline.dynamodb),
        ("logs", "CloudWatch Logs ingestion", system.logs, baseline.logs),
        (
            "secrets_manager",
            "Secrets Manager (calls and secrets, a month over its webhooks)",
            system.secrets_manager,
            0.0,
        ),
    )
    result = [
        Row(
            area=AREA,
            name=f"cost.{key}",
            title=f"{title}, USD per million webhooks",
            measured=ours * per_million,
            baseline=theirs * per_million,
            unit="USD",
            measured_label=system.explained[key],
            baseline_label=baseline.explained[key],
            notes=[common[0]],
        )
        for key, title, ours, theirs in items
    ]
    result.append(
        Row(
            area=AREA,
            name="cost.total",
            title="cost per million webhooks, modelled: API Gateway, Lambda, DynamoDB, logs, Secrets Manager",
            measured=system.total * per_million,
            baseline=baseline.total * per_million,
            unit="USD",
            measured_label="the receiver and the reconciler, per new payment webhook, and the month's "
            "Secrets Manager bill spread over its webhooks: "
            + ", ".join(f"{key} ${value * per_million:.3f}" for key, _, value, _ in items),
            baseline_label="baseline_receiver, one PutItem, no reconciler: "
            + ", ".join(f"{key} ${value * per_million:.3f}" for key, _, _, value in items),
            notes=[
                *common,
                "left out: DynamoDB storage and point-in-time recovery (per GB-month, not per webhook), "
                "CloudWatch custom metrics (per metric-month), init durations of cold starts, the pusher "
                "(at most one push "
                "per balance per schedule tick, however many payments), and stream reads (free to Lambda)",
                "redeliveries of the same webhook cost one more API Gateway request, receiver invocation and "
                "write unit each (receiver.write_units_duplicate); they never reach the reconciler",
            ],
            details={"prices": PRICES, "assumptions": ASSUMPTIONS, "memory_mb": memory_mb},
        )
    )
    result.append(_everything_included(system))
    return result


def _everything_included(system: Webhook) -> Row:
    """Ingestion and the ledger (this model) plus the events out (events_cost's worst case), against the
    issue's budget; the same at ten times the traffic, where the month's Secrets Manager bill is spread
    ten times thinner."""
    events = events_cost.per_million(bill_share=0.0, cycles_per_balance_payment=1.0)
    events_usd = sum(events.values())
    total = system.total * 1e6 + events_usd
    at_ten_million = total - system.secrets_manager * 1e6 * 0.9
    return Row(
        area=AREA,
        name="cost.everything_included",
        title="cost per million webhooks, everything included (events out, worst case), against the budget",
        measured=total,
        baseline=BUDGET_USD_PER_MILLION,
        unit="USD",
        measured_label=f"cost.total ${system.total * 1e6:.3f} + events out ${events_usd:.2f} ("
        + ", ".join(f"{name} ${value:.2f}" for name, value in events.items())
        + f"), at {ASSUMPTIONS['webhooks_per_month']:,} webhooks a month",
        baseline_label=f"issue 16's budget, ${BUDGET_USD_PER_MILLION:.2f} per million webhooks",
        goal=Goal.at_most(1.0),
        notes=[
            f"at 10,000,000 webhooks a month (Secrets Manager a tenth per million): ${at_ten_million:.3f}",
            "events out: every webhook a balance payment in a push cycle of its own (events_cost's worst "
            "case; its typical row is within 0.1% of it at the stated traffic)",
            "docs/performance.md, 'What $8.50 would take': the floor the other issues require",
        ],
        details={"events_out": events, "at_ten_million_webhooks_a_month": at_ten_million},
    )


def _system(rows: dict[str, Row], memory_mb: int) -> Webhook:
    warm = rows["receiver.warm_median"]
    receiver_cpu = warm.details.get("receiver_cpu_us", warm.measured)
    receiver_units = rows["receiver.write_units_new"].measured
    reconciler_units = rows["reconciler.write_units_applied"].measured
    reconciler_cpu = rows["reconciler.cpu_per_invocation_single"].measured
    receiver_ms = _billed_ms(receiver_cpu, ASSUMPTIONS["putitem_round_trip_ms"], memory_mb)
    secrets_usd, secrets_explained = _secrets_manager()
    # The reconciler waits for three writes in turn: the application's claim (PutItem), the
    # transaction, and the event's status (UpdateItem).
    reconciler_wait_ms = (
        2 * ASSUMPTIONS["putitem_round_trip_ms"] + ASSUMPTIONS["transactwriteitems_round_trip_ms"]
    )
    reconciler_ms = _billed_ms(reconciler_cpu, reconciler_wait_ms, memory_mb)
    printed = (
        warm.details["stdout_per_call"]["webhook_receiver"]["bytes"]
        + _reconciler_printed(rows)
        + 2 * ASSUMPTIONS["platform_log_bytes_per_invocation"]
    )
    units = receiver_units + reconciler_units
    reads = redrive_read_units_per_webhook()
    return Webhook(
        api_gateway=PRICES["http_api_per_million_requests"] / 1e6,
        lambda_=_lambda_usd(receiver_ms, memory_mb) + _lambda_usd(reconciler_ms, memory_mb),
        dynamodb=units * PRICES["dynamodb_per_million_write_request_units"] / 1e6
        + reads * PRICES["dynamodb_per_million_read_request_units"] / 1e6,
        logs=_logs_usd(printed),
        secrets_manager=secrets_usd,
        explained={
            "secrets_manager": secrets_explained,
            "api_gateway": "1 HTTP API request (POST /webhooks/moment)",
            "lambda": f"2 invocations of {memory_mb} MB: receiver {receiver_ms} ms billed "
            f"({receiver_cpu:.0f} µs CPU here x {ASSUMPTIONS['mb_per_vcpu'] / memory_mb:.2f} for a "
            f"{memory_mb} MB share of a vCPU + {ASSUMPTIONS['putitem_round_trip_ms']:g} ms PutItem round "
            f"trip), reconciler {reconciler_ms} ms ({reconciler_cpu:.0f} µs x the same + "
            f"{reconciler_wait_ms:g} ms of round trips: the claim's PutItem, the transaction, the status's "
            "UpdateItem)",
            "dynamodb": f"{units:g} write request units: receiver {receiver_units:g} (item and Unfinished "
            f"index), reconciler {reconciler_units:g} (the application's claim 1, a transaction of entry "
            "and head at 2 per KB, the event's status 1, and the index writes); "
            f"{reads:.3f} read request units by the re-drive (the status read by its forward read 1 and "
            "by its late sweep 0.5, and the Unfinished index's keys by each; links are cached per "
            "environment)",
            "logs": f"{printed:,.0f} bytes: receiver "
            f"{warm.details['stdout_per_call']['webhook_receiver']['bytes']:.0f} (log line and EMF), "
            f"reconciler {_reconciler_printed(rows):.0f} (log line and EMF of a one-record invocation), "
            f"Lambda's START/END/REPORT {2 * ASSUMPTIONS['platform_log_bytes_per_invocation']} (estimated)",
        },
    )


def _reconciler_printed(rows: dict[str, Row]) -> float:
    row = rows["reconciler.cpu_per_invocation_single"]
    return float(row.details["stdout_bytes_per_invocation"])


def _baseline(rows: dict[str, Row], memory_mb: int) -> Webhook:
    warm = rows["receiver.warm_median"]
    baseline_cpu = warm.details.get("baseline_cpu_us", warm.baseline)
    units = rows["receiver.write_units_new"].baseline
    billed = _billed_ms(baseline_cpu, ASSUMPTIONS["putitem_round_trip_ms"], memory_mb)
    printed = (
        warm.details["stdout_per_call"]["baseline_receiver"]["bytes"]
        + ASSUMPTIONS["platform_log_bytes_per_invocation"]
    )
    return Webhook(
        api_gateway=PRICES["http_api_per_million_requests"] / 1e6,
        lambda_=_lambda_usd(billed, memory_mb),
        dynamodb=units * PRICES["dynamodb_per_million_write_request_units"] / 1e6,
        logs=_logs_usd(printed),
        secrets_manager=0.0,
        explained={
            "secrets_manager": "none: its key comes from an environment variable",
            "api_gateway": "1 HTTP API request",
            "lambda": f"1 invocation of {memory_mb} MB: {billed} ms billed ({baseline_cpu:.0f} µs CPU here, "
            "scaled the same, + the same PutItem round trip)",
            "dynamodb": f"{units:g} write request unit (its 3-attribute item, no index)",
            "logs": f"{printed:,.0f} bytes: Lambda's START/END/REPORT only (it prints nothing)",
        },
    )
