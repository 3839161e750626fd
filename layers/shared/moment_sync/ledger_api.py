"""The merchant's ledger API (docs/api/openapi.yaml) on API Gateway's HTTP API, payload 2.0.

Routing is Powertools' `APIGatewayHttpResolver`. Each route checks its request
(`moment_sync.ledger.requests`), calls one use case of `moment_sync.ledger.service` and answers JSON.
Every error is an RFC 9457 problem: what the request got wrong (400, 413, 415, 428), what the ledger's
state refuses (404, 409, 422), a busy table (503), and anything unexpected (500: logged with its
traceback, and the body says nothing of it). This module never touches the tables itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler.api_gateway import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as AwsConnectionError

from moment_sync.adapters.dynamo_items import error_code
from moment_sync.adapters.ledger_bills import BillTransient
from moment_sync.adapters.ledger_table import TransientLedgerError
from moment_sync.http_responses import json_response, problem_response
from moment_sync.ledger import bill_service, requests, service
from moment_sync.ledger.bills import BillRef
from moment_sync.ledger.model import BalanceKind, BalanceRef
from moment_sync.ledger.requests import RequestInvalid
from moment_sync.ledger.service import LedgerProblem
from moment_sync.observability import MetricUnit, logger, metrics
from moment_sync.runtime import LedgerDependencies

RETRY_AFTER_SECONDS = "1"
# DynamoDB's answers that mean "not now" rather than "never": the client is told to retry (503).
_TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TransactionConflictException",
        "InternalServerError",
        "ServiceUnavailable",
    }
)
_MAX_LOGGED_PATH = 300

app = APIGatewayHttpResolver()


def handle_request(event: dict[str, Any], context: Any, dependencies: LedgerDependencies) -> dict[str, Any]:
    """One API Gateway event → its response. Logs one line per request and counts it."""
    app.context["dependencies"] = dependencies  # cleared by resolve() when it is done
    try:
        response = app.resolve(event, context)
    except Exception:  # an event API Gateway would never send (no rawPath, no method)
        logger.exception("ledger api request could not be routed")
        response = _internal_error()
    status = int(response["statusCode"])
    metrics.add_metric(name="LedgerApiRequests", unit=MetricUnit.Count, value=1)
    if status >= 500:
        metrics.add_metric(name="LedgerApiServerErrors", unit=MetricUnit.Count, value=1)
    elif status >= 400:
        metrics.add_metric(name="LedgerApiClientErrors", unit=MetricUnit.Count, value=1)
    logger.info(
        "ledger api request",
        extra={
            "route": event.get("routeKey"),
            "method": (event.get("requestContext") or {}).get("http", {}).get("method"),
            "path": str(event.get("rawPath", ""))[:_MAX_LOGGED_PATH],
            "status": status,
        },
    )
    return response


# --- routes ---------------------------------------------------------------------------------------


def put_customer(ref: str) -> Response[str]:
    reference = _reference(ref, BalanceKind.CUSTOMER)
    change = requests.customer_change(_body())
    created, view = service.put_customer(_ledger(), reference, change, _now())
    return _json(201 if created else 200, view)


def put_account(ref: str) -> Response[str]:
    reference = _reference(ref, BalanceKind.ACCOUNT)
    change = requests.account_change(_body())
    created, view = service.put_account(_ledger(), reference, change, _now())
    return _json(201 if created else 200, view)


def get_customer(ref: str) -> Response[str]:
    return _read(BalanceKind.CUSTOMER, ref)


def get_account(ref: str) -> Response[str]:
    return _read(BalanceKind.ACCOUNT, ref)


def post_customer_charge(ref: str) -> Response[str]:
    return _charge(BalanceKind.CUSTOMER, ref)


def post_account_charge(ref: str) -> Response[str]:
    return _charge(BalanceKind.ACCOUNT, ref)


def put_customer_balance(ref: str) -> Response[str]:
    return _set_balance(BalanceKind.CUSTOMER, ref)


def put_account_balance(ref: str) -> Response[str]:
    return _set_balance(BalanceKind.ACCOUNT, ref)


def get_event(webhook_id: str) -> Response[str]:
    identifier = requests.webhook_id(unquote(webhook_id))
    logger.append_keys(webhook_id=identifier)
    requests.no_query(_query())
    return _json(200, service.read_event(_dependencies().events, identifier))


def put_bill(ref: str) -> Response[str]:
    reference = _bill_reference(ref)
    change = requests.bill_change(_body())
    created, view = bill_service.put_bill(_ledger(), reference, change, _now())
    metrics.add_metric(name="BillsRaised" if created else "BillsReplayed", unit=MetricUnit.Count, value=1)
    return _json(201 if created else 200, view)


def get_bill(ref: str) -> Response[str]:
    bill = BillRef(_bill_reference(ref))
    limit, cursor = requests.page(_query())
    return _json(200, bill_service.read_bill(_ledger(), bill, limit=limit, cursor=cursor))


def post_bill_void(ref: str) -> Response[str]:
    reference = _bill_reference(ref)
    requests.no_query(_query())
    view = bill_service.void_bill(_ledger(), reference, _now())
    metrics.add_metric(name="BillsVoided", unit=MetricUnit.Count, value=1)
    return _json(200, view)


def post_bill_payment(ref: str) -> Response[str]:
    reference = _bill_reference(ref)
    payment = requests.outside_payment(_body())
    logger.append_keys(payment_id=payment["id"])
    created, entry = bill_service.pay_bill(_ledger(), reference, payment, _now())
    metrics.add_metric(
        name="BillPaymentsRecorded" if created else "BillPaymentsReplayed", unit=MetricUnit.Count, value=1
    )
    return _json(201 if created else 200, entry)


def get_customer_bills(ref: str) -> Response[str]:
    return _bills_of(BalanceKind.CUSTOMER, ref)


def get_account_bills(ref: str) -> Response[str]:
    return _bills_of(BalanceKind.ACCOUNT, ref)


def _bills_of(kind: BalanceKind, ref: str) -> Response[str]:
    owner = BalanceRef(kind, _reference(ref, kind))
    limit, cursor, status = requests.bill_page(_query())
    return _json(200, bill_service.list_bills(_ledger(), owner, status=status, limit=limit, cursor=cursor))


def _read(kind: BalanceKind, ref: str) -> Response[str]:
    balance = BalanceRef(kind, _reference(ref, kind))
    limit, cursor = requests.page(_query())
    return _json(200, service.read_balance(_ledger(), balance, limit=limit, cursor=cursor))


def _charge(kind: BalanceKind, ref: str) -> Response[str]:
    balance = BalanceRef(kind, _reference(ref, kind))
    charge = requests.charge(_body())
    logger.append_keys(charge_id=charge["id"])
    created, entry = service.post_charge(_ledger(), balance, charge, _now())
    metrics.add_metric(name="ChargesPosted" if created else "ChargesReplayed", unit=MetricUnit.Count, value=1)
    return _json(201 if created else 200, entry)


def _set_balance(kind: BalanceKind, ref: str) -> Response[str]:
    balance = BalanceRef(kind, _reference(ref, kind))
    new_balance, expected_version = requests.balance_change(_body())
    view = service.set_balance(_ledger(), balance, new_balance, expected_version, _now())
    metrics.add_metric(name="BalancesSet", unit=MetricUnit.Count, value=1)
    return _json(200, view)


# One table for Powertools and for telling a wrong method (405) from a wrong path (404).
ROUTES: tuple[tuple[str, str, Callable[..., Response[str]]], ...] = (
    ("PUT", "/customers/<ref>", put_customer),
    ("GET", "/customers/<ref>", get_customer),
    ("PUT", "/accounts/<ref>", put_account),
    ("GET", "/accounts/<ref>", get_account),
    ("POST", "/customers/<ref>/charges", post_customer_charge),
    ("POST", "/accounts/<ref>/charges", post_account_charge),
    ("PUT", "/customers/<ref>/balance", put_customer_balance),
    ("PUT", "/accounts/<ref>/balance", put_account_balance),
    ("GET", "/events/<webhook_id>", get_event),
    ("PUT", "/bills/<ref>", put_bill),
    ("GET", "/bills/<ref>", get_bill),
    ("POST", "/bills/<ref>/void", post_bill_void),
    ("POST", "/bills/<ref>/payments", post_bill_payment),
    ("GET", "/customers/<ref>/bills", get_customer_bills),
    ("GET", "/accounts/<ref>/bills", get_account_bills),
)
for _method, _rule, _function in ROUTES:
    app.route(_rule, method=_method)(_function)
_PATHS = [(re.compile(re.sub(r"<\w+>", "[^/]+", rule)), method) for method, rule, _ in ROUTES]


# --- errors ---------------------------------------------------------------------------------------


def _request_invalid(problem: RequestInvalid) -> Response[str]:
    logger.info("request refused", extra={"problem": problem.problem, "detail": problem.detail})
    return _problem(problem.status, problem.problem, problem.title, problem.detail, **problem.extensions())


def _ledger_problem(problem: LedgerProblem) -> Response[str]:
    logger.info("request refused by the ledger", extra={"problem": problem.problem, "detail": problem.detail})
    return _problem(problem.status, problem.problem, problem.title, problem.detail, **problem.extensions)


def _ledger_busy(error: Exception) -> Response[str]:
    logger.warning("ledger busy", extra={"error": f"{type(error).__name__}: {error}"})
    return _problem(
        503,
        "ledger-busy",
        "The ledger is busy",
        "the ledger was throttled or another change collided with this one; retry",
        headers={"retry-after": RETRY_AFTER_SECONDS},
    )


def _aws_error(error: ClientError) -> Response[str]:
    if error_code(error) in _TRANSIENT_CODES:
        return _ledger_busy(error)
    return _unexpected(error)


def _unexpected(error: Exception) -> Response[str]:
    logger.exception("ledger api request failed unexpectedly")
    return _internal_error_response()


def _no_route(_: NotFoundError) -> Response[str]:
    path = app.current_event.path
    allowed = sorted({method for pattern, method in _PATHS if pattern.fullmatch(path)})
    if allowed:
        return _problem(
            405,
            "method-not-allowed",
            "Method not allowed",
            f"this path answers {', '.join(allowed)}",
            headers={"allow": ", ".join(allowed)},
        )
    return _problem(404, "route-not-found", "No such route", "this API has no such path")


app.exception_handler(RequestInvalid)(_request_invalid)
app.exception_handler(LedgerProblem)(_ledger_problem)
# No answer from DynamoDB at all (cannot connect, timed out, connection dropped) is worth a retry too.
app.exception_handler([TransientLedgerError, BillTransient, AwsConnectionError, HTTPClientError])(
    _ledger_busy
)
app.exception_handler(ClientError)(_aws_error)
app.exception_handler(Exception)(_unexpected)
app.not_found(_no_route)


# --- helpers --------------------------------------------------------------------------------------


def _dependencies() -> LedgerDependencies:
    dependencies: LedgerDependencies = app.context["dependencies"]
    return dependencies


def _ledger() -> Any:
    return _dependencies().ledger


def _now() -> float:
    return _dependencies().clock()


def _reference(ref: str, kind: BalanceKind) -> str:
    """The path's reference (as the client percent-encoded it), checked, and put on every log line."""
    reference = requests.reference(unquote(ref))
    logger.append_keys(reference=reference, balance_kind=kind.value)
    return reference


def _bill_reference(ref: str) -> str:
    reference = requests.reference(unquote(ref))
    logger.append_keys(reference=reference, balance_kind="bill")
    return reference


def _body() -> dict[str, Any]:
    event = app.current_event.raw_event
    requests.json_content_type((event.get("headers") or {}).get("content-type"))
    return requests.json_object(event.get("body"), bool(event.get("isBase64Encoded")))


def _query() -> dict[str, str] | None:
    query: dict[str, str] | None = app.current_event.raw_event.get("queryStringParameters")
    return query


def _json(status: int, body: dict[str, Any]) -> Response[str]:
    return _as_response(json_response(status, body))


def _problem(
    status: int,
    problem: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> Response[str]:
    return _as_response(problem_response(status, problem, title, detail, headers, **extensions))


def _internal_error() -> dict[str, Any]:
    return problem_response(
        500, "internal-error", "Internal error", "the request failed unexpectedly; it has been logged"
    )


def _internal_error_response() -> Response[str]:
    return _as_response(_internal_error())


def _as_response(payload: dict[str, Any]) -> Response[str]:
    """moment_sync.http_responses' payload (the one shape of every answer) as Powertools' Response."""
    headers = dict(payload["headers"])
    content_type = headers.pop("content-type")
    return Response(payload["statusCode"], content_type, payload["body"], headers)
