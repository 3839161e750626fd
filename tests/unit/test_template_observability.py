"""template.yaml's alarms, dashboard and saved queries against the code and the runbook.

Every metric of namespace MomentBalanceSync that an alarm or a dashboard widget watches must be one the
code emits, under the same name and with the same dimensions (an alarm on a metric nobody emits stays
quiet forever). The names are read from the source: `add_metric(name=...)` and the pusher's `_count(...)`
string literals, and the f-string names expanded from the enums they are built from. Every alarm must
name a runbook section that exists in docs/operations.md and notify the alarm topic.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from local_stack.template import load_template
from moment_sync.bill_pusher import BillPushResult
from moment_sync.ledger.model import CURRENCIES
from moment_sync.pusher import PushResult
from moment_sync.reconciliation import ParkReason
from moment_sync.signature import Rejection

ROOT = Path(__file__).resolve().parents[2]
SOURCES = (ROOT / "layers" / "shared" / "moment_sync", ROOT / "functions")
RUNBOOK = ROOT / "docs" / "operations.md"
RUNBOOK_LINK = re.compile(r"Runbook: docs/operations\.md#([a-z0-9-]+)")

# Metric names built at run time, by the f-string that builds them: every value they can take.
DYNAMIC_NAMES: dict[str, Callable[[], set[str]]] = {
    "EventParked_{park.reason.value}": lambda: {f"EventParked_{reason.value}" for reason in ParkReason},
    "AmountApplied_{payment.currency}": lambda: {f"AmountApplied_{currency}" for currency in CURRENCIES},
    # PushReport keys are PushResult values ("in_sync" -> "BalancesInSync").
    "Balances{result.title().replace('_', '')}": lambda: {
        "Balances" + result.value.title().replace("_", "") for result in PushResult
    },
    "Bills{result.title().replace('_', '')}": lambda: {
        "Bills" + result.value.title().replace("_", "") for result in BillPushResult
    },
}
# Helpers that forward their first argument to add_metric: their callers' arguments are the names.
WRAPPERS = {"_count"}
# Methods that write one log line with an EMF block counting their second argument (observability.py).
LINE_WITH_METRIC = {"log_with_metric"}
# The values each extra dimension the code adds can take.
DIMENSION_VALUES = {"Reason": {rejection.value for rejection in Rejection}}

# AWS metrics the template may watch, with the one dimension each is read by.
AWS_METRICS = {
    "AWS/Lambda": ({"Errors", "Throttles", "Duration", "Invocations", "IteratorAge"}, "FunctionName"),
    "AWS/SQS": ({"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"}, "QueueName"),
    "AWS/ApiGateway": ({"5xx", "4xx", "Count", "Latency", "IntegrationLatency"}, "ApiId"),
    "AWS/EventBridge/Pipes": ({"ExecutionFailed", "TargetStageFailed", "Invocations"}, "PipeName"),
}
# Which resource type a dimension value must name.
DIMENSION_TARGETS = {
    "FunctionName": "AWS::Serverless::Function",
    "QueueName": "AWS::SQS::Queue",
    "ApiId": "AWS::Serverless::HttpApi",
    "PipeName": "AWS::Pipes::Pipe",
}


# --- what the code emits -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Emitted:
    names: frozenset[str]
    # Extra dimensions (besides `service`) by metric name, from `add_dimension` calls.
    extra_dimensions: dict[str, frozenset[str]]


def _source_files() -> Iterator[Path]:
    for folder in SOURCES:
        yield from sorted(path for path in folder.rglob("*.py") if "__pycache__" not in path.parts)


def _metric_name_argument(call: ast.Call) -> ast.expr | None:
    """The name argument of `<metrics>.add_metric(...)` or of a wrapper's call; None otherwise."""
    function = call.func
    if isinstance(function, ast.Attribute) and function.attr == "add_metric":
        named = [keyword.value for keyword in call.keywords if keyword.arg == "name"]
        return named[0] if named else (call.args[0] if call.args else None)
    if isinstance(function, ast.Name) and function.id in WRAPPERS:
        return call.args[0] if call.args else None
    if isinstance(function, ast.Attribute) and function.attr in LINE_WITH_METRIC:
        # Invocation.log_with_metric(message, metric, ...): one log line with the metric's EMF inside.
        named = [keyword.value for keyword in call.keywords if keyword.arg == "metric"]
        return named[0] if named else (call.args[1] if len(call.args) > 1 else None)
    return None


def _names(argument: ast.expr, where: str) -> set[str]:
    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
        return {argument.value}
    if isinstance(argument, ast.IfExp):  # "A" if created else "B"
        return _names(argument.body, where) | _names(argument.orelse, where)
    if isinstance(argument, ast.JoinedStr):
        # Written out by hand: ast.unparse of an f-string differs between Python 3.11 and 3.12+.
        pattern = "".join(
            "{" + ast.unparse(part.value) + "}" if isinstance(part, ast.FormattedValue) else str(part.value)
            for part in argument.values
            if isinstance(part, (ast.FormattedValue, ast.Constant))
        )
        if pattern in DYNAMIC_NAMES:
            return DYNAMIC_NAMES[pattern]()
        pytest.fail(f"{where}: metric name f{pattern!r} is built at run time; teach DYNAMIC_NAMES its values")
    pytest.fail(f"{where}: metric name {ast.unparse(argument)} is neither a literal nor a known f-string")


def _is_call_to(statement: ast.stmt, attribute: str) -> ast.Call | None:
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
        function = statement.value.func
        if isinstance(function, ast.Attribute) and function.attr == attribute:
            return statement.value
    return None


@cache
def emitted() -> Emitted:
    names: set[str] = set()
    extra: dict[str, set[str]] = {}
    dimension_calls = placed = 0
    for path in _source_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        where = str(path.relative_to(ROOT))
        forwarded = {
            id(call)
            for wrapper in ast.walk(tree)
            if isinstance(wrapper, ast.FunctionDef) and wrapper.name in WRAPPERS
            for call in ast.walk(wrapper)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and id(node) not in forwarded:
                if (argument := _metric_name_argument(node)) is not None:
                    names |= _names(argument, where)
                function = node.func
                dimension_calls += isinstance(function, ast.Attribute) and function.attr == "add_dimension"
            # A dimension added by a statement of a block applies to the metrics that same block adds
            # (the receiver's rejection handler: add_dimension(Reason), then add_metric(WebhookRejected)).
            body = getattr(node, "body", None)
            if not isinstance(body, list):
                continue
            dimensions = [call for statement in body if (call := _is_call_to(statement, "add_dimension"))]
            placed += len(dimensions)
            for call in dimensions:
                dimension = _keyword_constant(call, "name", where)
                for statement in body:
                    metric = _is_call_to(statement, "add_metric")
                    if metric is not None and (argument := _metric_name_argument(metric)) is not None:
                        for name in _names(argument, where):
                            extra.setdefault(name, set()).add(dimension)
    assert placed == dimension_calls, "an add_dimension call this test cannot place: teach emitted() about it"
    return Emitted(frozenset(names), {name: frozenset(dims) for name, dims in extra.items()})


def _keyword_constant(call: ast.Call, keyword_name: str, where: str) -> str:
    for keyword in call.keywords:
        if keyword.arg == keyword_name and isinstance(keyword.value, ast.Constant):
            return str(keyword.value.value)
    pytest.fail(f"{where}: add_dimension without a literal {keyword_name}=")


# --- what the template watches -----------------------------------------------------------------------


@dataclass(frozen=True)
class Watched:
    where: str
    namespace: str
    name: str
    # Dimension name -> value: a literal, or "Resource" / "Resource.Attribute" for a reference.
    dimensions: dict[str, str]


def template() -> dict[str, Any]:
    return load_template()


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in template()["Resources"].items()
        if resource["Type"] == kind
    }


def alarms() -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in resources("AWS::CloudWatch::Alarm").items()
    }


def _reference(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        return ".".join(target) if isinstance(target, list) else str(target)
    raise AssertionError(f"unexpected dimension value {value!r}")


def _alarm_metrics(logical_id: str, properties: dict[str, Any]) -> Iterator[Watched]:
    if "MetricName" in properties:
        yield Watched(
            logical_id,
            properties["Namespace"],
            properties["MetricName"],
            {d["Name"]: _reference(d["Value"]) for d in properties.get("Dimensions", [])},
        )
        return
    queries = properties["Metrics"]
    ids = {query["Id"] for query in queries}
    for query in queries:
        if "Expression" in query:
            used = set(re.findall(r"\b([a-z][a-zA-Z0-9_]*)\b", query["Expression"])) - {"FILL"}
            assert used <= ids, f"{logical_id}: expression {query['Expression']!r} uses unknown ids"
            continue
        metric = query["MetricStat"]["Metric"]
        yield Watched(
            logical_id,
            metric["Namespace"],
            metric["MetricName"],
            {d["Name"]: _reference(d["Value"]) for d in metric.get("Dimensions", [])},
        )
    assert sum(bool(query.get("ReturnData", True)) for query in queries) == 1, logical_id


def dashboard_body() -> dict[str, Any]:
    [dashboard] = resources("AWS::CloudWatch::Dashboard").values()
    text = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    assert isinstance(text, str), "DashboardBody is a !Sub of one JSON string"
    parameters = template()["Parameters"]

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in parameters and parameters[name]["Type"] == "Number":
            return str(parameters[name]["Default"])  # a bare number in the JSON
        return match.group(0)  # inside a JSON string: left as ${Name} and checked below

    body: dict[str, Any] = json.loads(re.sub(r"\$\{([A-Za-z0-9:.]+)\}", substitute, text))
    return body


def _dashboard_metrics() -> Iterator[Watched]:
    for index, widget in enumerate(dashboard_body()["widgets"]):
        title = f"dashboard widget {index} ({widget['properties'].get('title', widget['type'])})"
        for entry in widget["properties"].get("metrics", []):
            if isinstance(entry[0], dict):
                assert "expression" in entry[0], title
                continue
            assert entry[0] not in {".", ".."}, f"{title}: write each metric in full, not with '.' shorthand"
            fields = [item for item in entry if not isinstance(item, dict)]
            namespace, name, *pairs = fields
            assert len(pairs) % 2 == 0, f"{title}: {entry}"
            dimensions = {
                pairs[i]: re.sub(r"^\$\{(.+)\}$", r"\1", pairs[i + 1]) for i in range(0, len(pairs), 2)
            }
            yield Watched(title, namespace, name, dimensions)


def watched() -> list[Watched]:
    found = [metric for logical_id, props in alarms().items() for metric in _alarm_metrics(logical_id, props)]
    return found + list(_dashboard_metrics())


def function_environment() -> dict[str, str]:
    variables: dict[str, str] = template()["Globals"]["Function"]["Environment"]["Variables"]
    return variables


def runbook_anchors() -> set[str]:
    anchors = set()
    for line in RUNBOOK.read_text().splitlines():
        if match := re.match(r"^#{1,6}\s+(.*?)\s*$", line):
            anchors.add(_github_anchor(match.group(1)))
    return anchors


def _github_anchor(heading: str) -> str:
    """As GitHub makes it: lower case, punctuation dropped (not - or _), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# --- the tests ---------------------------------------------------------------------------------------


def test_the_code_scan_finds_the_metrics_it_should() -> None:
    # A guard on the scanner itself: fixed names, each expanded pattern, and the receiver's Reason dimension.
    code = emitted()
    assert {"WebhookAccepted", "WebhookRejected", "PaymentApplied", "RedriveFoundReceived"} <= code.names
    assert {f"EventParked_{reason.value}" for reason in ParkReason} <= code.names
    assert {"AmountApplied_ZAR", "AmountApplied_USD", "BalancesInSync", "BalancesNotReached"} <= code.names
    assert code.extra_dimensions == {"WebhookRejected": frozenset({"Reason"})}


def test_every_watched_metric_of_our_namespace_is_emitted_with_its_dimensions() -> None:
    environment = function_environment()
    namespace, service = environment["POWERTOOLS_METRICS_NAMESPACE"], environment["POWERTOOLS_SERVICE_NAME"]
    code = emitted()
    problems = []
    for metric in watched():
        if metric.namespace.startswith("AWS/"):
            continue
        if metric.namespace != namespace:
            problems.append(f"{metric.where}: namespace {metric.namespace}, the code uses {namespace}")
            continue
        if metric.name not in code.names:
            problems.append(f"{metric.where}: {metric.name} is not emitted by the code")
            continue
        expected = {"service"} | code.extra_dimensions.get(metric.name, frozenset())
        if set(metric.dimensions) != expected:
            problems.append(
                f"{metric.where}: {metric.name} by {sorted(metric.dimensions)}, emitted by {sorted(expected)}"
            )
            continue
        if metric.dimensions["service"] != service:
            problems.append(f"{metric.where}: service={metric.dimensions['service']}, emitted as {service}")
        for dimension, values in DIMENSION_VALUES.items():
            if dimension in metric.dimensions and metric.dimensions[dimension] not in values:
                problems.append(
                    f"{metric.where}: {dimension}={metric.dimensions[dimension]} is never emitted"
                )
    assert not problems, "\n".join(problems)


def test_every_watched_aws_metric_names_a_resource_of_this_template() -> None:
    problems = []
    for metric in watched():
        if not metric.namespace.startswith("AWS/"):
            continue
        names, dimension = AWS_METRICS[metric.namespace]
        if metric.name not in names or set(metric.dimensions) != {dimension}:
            problems.append(f"{metric.where}: {metric.namespace} {metric.name} {metric.dimensions}")
            continue
        target = metric.dimensions[dimension].split(".")[0]
        kind = template()["Resources"].get(target, {}).get("Type")
        if kind != DIMENSION_TARGETS[dimension]:
            problems.append(
                f"{metric.where}: {dimension} names {target!r}, not a {DIMENSION_TARGETS[dimension]}"
            )
    assert not problems, "\n".join(problems)


def test_every_alarm_names_a_runbook_section_that_exists() -> None:
    anchors = runbook_anchors()
    problems = []
    for logical_id, properties in alarms().items():
        links = RUNBOOK_LINK.findall(properties.get("AlarmDescription", ""))
        if len(links) != 1:
            problems.append(f"{logical_id}: its description must end 'Runbook: docs/operations.md#<section>'")
        elif links[0] not in anchors:
            problems.append(f"{logical_id}: docs/operations.md has no section #{links[0]}")
    assert not problems, "\n".join(problems)


def test_every_alarm_notifies_the_topic_and_decides_about_missing_data() -> None:
    [topic] = resources("AWS::SNS::Topic")
    for logical_id, properties in alarms().items():
        assert {"Ref": topic} in properties["AlarmActions"], logical_id
        assert {"Ref": topic} in properties["OKActions"], logical_id
        assert properties["TreatMissingData"] in {"notBreaching", "breaching"}, logical_id
        assert properties["AlarmName"]["Fn::Sub"].startswith("${AWS::StackName}-"), logical_id
    names = [properties["AlarmName"]["Fn::Sub"] for properties in alarms().values()]
    assert len(names) == len(set(names))


def test_the_email_subscription_exists_only_when_an_address_is_given() -> None:
    [subscription] = resources("AWS::SNS::Subscription").values()
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}
    assert template()["Parameters"]["AlarmEmail"]["Default"] == ""
    assert template()["Conditions"]["HasAlarmEmail"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]
    }


def _alarmed() -> set[tuple[str, str, tuple[tuple[str, str], ...]]]:
    return {
        (metric.namespace, metric.name, tuple(sorted(metric.dimensions.items())))
        for logical_id, properties in alarms().items()
        for metric in _alarm_metrics(logical_id, properties)
    }


def test_the_alarms_the_issue_asks_for_exist() -> None:
    alarmed = _alarmed()
    service = (("service", "moment-balance-sync"),)
    required = {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", (("QueueName", f"{queue}.QueueName"),))
        for queue in resources("AWS::SQS::Queue")
    }
    for function in resources("AWS::Serverless::Function"):
        for metric in ("Errors", "Throttles"):
            required.add(("AWS/Lambda", metric, (("FunctionName", function),)))
    required |= {("MomentBalanceSync", f"EventParked_{reason.value}", service) for reason in ParkReason}
    required |= {
        ("MomentBalanceSync", name, service)
        for name in ("RedriveFoundReceived", "DriftDetected", "BalanceFailing", "PushFailed")
    }
    required |= {
        ("AWS/Lambda", "IteratorAge", (("FunctionName", "ReconcilerFunction"),)),
        ("AWS/ApiGateway", "5xx", (("ApiId", "HttpApi"),)),
        ("MomentBalanceSync", "WebhookRejected", (("Reason", "signature_mismatch"), *service)),
    }
    assert not required - alarmed, sorted(required - alarmed)


def test_the_dashboard_shows_every_alarm_and_what_the_issue_lists() -> None:
    body = dashboard_body()
    [alarm_widget] = [widget for widget in body["widgets"] if widget["type"] == "alarm"]
    listed = alarm_widget["properties"]["alarms"]
    assert listed == [f"${{{logical_id}.Arn}}" for logical_id in alarms()], "every alarm, in template order"
    shown = {(metric.namespace, metric.name) for metric in _dashboard_metrics()}
    ours = "MomentBalanceSync"
    expected = {
        (ours, name) for name in ("WebhookAccepted", "WebhookDuplicate", "WebhookRejected", "PaymentApplied")
    }
    expected |= {(ours, f"AmountApplied_{currency}") for currency in CURRENCIES}
    expected |= {(ours, f"EventParked_{reason.value}") for reason in ParkReason}
    expected |= {(ours, "Balances" + result.value.title().replace("_", "")) for result in PushResult}
    expected |= {
        (ours, name) for name in ("PushDeferred", "PushFailed", "DriftDetected", "BalancesCreatedOnMoment")
    }
    expected |= {("AWS/Lambda", name) for name in ("IteratorAge", "Duration", "Errors")}
    assert not expected - shown, sorted(expected - shown)
    per_function = {
        (metric.name, metric.dimensions["FunctionName"])
        for metric in _dashboard_metrics()
        if metric.namespace == "AWS/Lambda"
    }
    for function in resources("AWS::Serverless::Function"):
        assert {("Duration", function), ("Errors", function)} <= per_function, function


def test_saved_queries_read_the_functions_log_groups_and_the_runbook_names_them() -> None:
    log_groups = set(resources("AWS::Logs::LogGroup"))
    function_groups = {
        function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        for function in resources("AWS::Serverless::Function").values()
    }
    assert function_groups <= log_groups
    runbook = RUNBOOK.read_text()
    queries = resources("AWS::Logs::QueryDefinition")
    for logical_id, query in queries.items():
        properties = query["Properties"]
        groups = {group["Ref"] for group in properties["LogGroupNames"]}
        assert groups <= log_groups, logical_id
        name = properties["Name"]["Fn::Sub"]
        assert name.startswith("${AWS::StackName}/"), logical_id
        assert name.removeprefix("${AWS::StackName}/") in runbook, f"{logical_id}: the runbook never names it"
        if logical_id.startswith("Follow") or logical_id == "SlowestInvocationsQuery":
            assert groups == function_groups, f"{logical_id} must read every function's log group"
    follow = {logical_id: query["Properties"]["QueryString"] for logical_id, query in queries.items()}
    assert "correlation_id = " in follow["FollowWebhookQuery"]
    assert "payment_id = " in follow["FollowPaymentQuery"]
    assert "reference = " in follow["FollowReferenceQuery"]
    assert 'message = "webhook rejected"' in follow["RejectionsByReasonQuery"]
    assert "@duration" in follow["SlowestInvocationsQuery"]
