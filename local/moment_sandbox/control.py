"""The sandbox's control routes, under `/_sandbox/`: no key needed, never faulted.

| Route | What it does |
|---|---|
| `POST /_sandbox/payments` | A payment at Moment and its signed webhook (201; the body: `payments.py`) |
| `GET /_sandbox/state` | `{"customers", "accounts", "bills", "deliveries"}`, objects in Moment's own shape |
| `POST /_sandbox/reset` | Forget every object, idempotency key and delivery (not settings, faults) |
| `GET`/`POST /_sandbox/faults` | Fault settings (`faults.py`); `seed` restarts draws; GET adds `injected` |
| `GET`/`POST /_sandbox/settings` | `webhook_url`, `webhook_secrets`, `applies_payments`, the bill rules |
| `POST /_sandbox/wait` | Wait (`{"timeout_seconds": 10}`) until every webhook is delivered or given up |

A POST changes only the fields it sends and answers with the result, like a GET.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from moment_sandbox.messages import Problem, Request, Response, invalid, json_object, json_response, not_found
from moment_sandbox.moment import FakeMoment
from moment_sandbox.payments import payment_order
from moment_sandbox.settings import SandboxSettings

PREFIX = "/_sandbox/"
MAX_WAIT_SECONDS = 300


class ControlRoutes:
    def __init__(self, moment: FakeMoment) -> None:
        self._moment = moment
        self._routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("POST", "payments"): self._pay,
            ("GET", "state"): self._state,
            ("POST", "reset"): self._reset,
            ("GET", "faults"): self._faults,
            ("POST", "faults"): self._set_faults,
            ("GET", "settings"): self._settings,
            ("POST", "settings"): self._set_settings,
            ("POST", "wait"): self._wait,
        }

    def handle(self, request: Request) -> Response:
        try:
            return self._route(request)(request)
        except Problem as problem:
            return problem.to_response(request.path)

    def _route(self, request: Request) -> Callable[[Request], Response]:
        name = request.path.removeprefix(PREFIX)
        route = self._routes.get((request.method, name))
        if route is not None:
            return route
        allowed = [method for method, route_name in self._routes if route_name == name]
        if allowed:
            raise Problem(405, "method-not-allowed", f"{request.path} answers {', '.join(allowed)}")
        raise not_found(f"no control route {request.method} {request.path}")

    def _pay(self, request: Request) -> Response:
        return json_response(201, self._moment.pay(payment_order(json_object(request.body))))

    def _state(self, _request: Request) -> Response:
        return json_response(200, self._moment.state())

    def _reset(self, _request: Request) -> Response:
        self._moment.reset()
        return json_response(200, self._moment.state())

    def _faults(self, _request: Request) -> Response:
        faults = self._moment.faults
        return json_response(
            200, {**faults.faults.to_json(), "seed": faults.seed, "injected": faults.injected()}
        )

    def _set_faults(self, request: Request) -> Response:
        changes = json_object(request.body)
        seed = changes.pop("seed", None)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise invalid("seed must be an integer")
        self._moment.set_faults(self._moment.faults.faults.updated(changes), seed)
        return self._faults(request)

    def _settings(self, _request: Request) -> Response:
        return json_response(200, settings_json(self._moment.settings))

    def _set_settings(self, request: Request) -> Response:
        changes = _runtime_settings(json_object(request.body))
        try:
            self._moment.configure(**changes)
        except ValueError as error:
            raise invalid(str(error)) from None
        return self._settings(request)

    def _wait(self, request: Request) -> Response:
        timeout = json_object(request.body or b"{}").get("timeout_seconds", 10)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 <= timeout <= MAX_WAIT_SECONDS
        ):
            raise invalid(f"timeout_seconds must be a number from 0 to {MAX_WAIT_SECONDS}")
        settled = self._moment.wait_for_deliveries(timeout)
        return json_response(200, {"settled": settled, "deliveries": self._moment.webhooks.deliveries()})


def settings_json(settings: SandboxSettings) -> dict[str, Any]:
    """The settings a caller may read back (secrets are counted, not shown)."""
    return {
        "webhook_url": settings.webhook_url,
        "webhook_secret_count": len(settings.webhook_secrets),
        "applies_payments": settings.applies_payments,
        "background_delivery": settings.background_delivery,
        "webhook_max_attempts": settings.webhook_max_attempts,
        "webhook_base_delay_seconds": settings.webhook_base_delay_seconds,
        "webhook_timeout_seconds": settings.webhook_timeout_seconds,
        "bill_parent_ids": settings.bill_parent_ids,
        "bill_underpayment_allowed": settings.bill_underpayment_allowed,
        "bill_overpayment_allowed": settings.bill_overpayment_allowed,
        "bill_overpaid_patch": settings.bill_overpaid_patch,
        "paid_bill_patch": settings.paid_bill_patch,
        "refuse_void_with_payments": settings.refuse_void_with_payments,
    }


def _runtime_settings(body: Mapping[str, Any]) -> dict[str, Any]:
    changes = dict(body)
    if "webhook_url" in changes and not isinstance(changes["webhook_url"], str | None):
        raise invalid("webhook_url must be a URL or null")
    if "webhook_secrets" in changes:
        secrets = changes["webhook_secrets"]
        if not isinstance(secrets, list) or not all(isinstance(secret, str) for secret in secrets):
            raise invalid("webhook_secrets must be a list of whsec_… strings")
        changes["webhook_secrets"] = tuple(secrets)
    for name in _FLAGS:
        if name in changes and not isinstance(changes[name], bool):
            raise invalid(f"{name} must be true or false")
    return changes


_FLAGS = (
    "applies_payments",
    "bill_parent_ids",
    "bill_underpayment_allowed",
    "bill_overpayment_allowed",
    "refuse_void_with_payments",
)
