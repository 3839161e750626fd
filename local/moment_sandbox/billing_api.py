"""Moment's Billing API routes: `/billing/customers`, `/billing/accounts` and `/billing/bills`, create,
read and PATCH, and `POST /billing/bills/{bill}/void`.

Owns the order in which a request meets Moment's rules: injected latency and faults first (so a
429/500 changes nothing and spends no idempotency key), then the Bearer key (401), the route
(404/405), the `Idempotency-Key` on a POST (400 without one; the first answer, errors included, is
replayed), then the body's own rules; last, an injected timeout holds back the answer. The path
parameter is a Moment id or an external_reference.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from functools import partial
from urllib.parse import unquote

from moment_sandbox import validation
from moment_sandbox.idempotency import key_of
from moment_sandbox.messages import Problem, Request, Response, invalid, json_object, json_response, not_found
from moment_sandbox.moment import FakeMoment

COLLECTION = re.compile(r"/billing/(customers|accounts|bills)")
ITEM = re.compile(r"/billing/(customers|accounts|bills)/([^/]+)")
VOID = re.compile(r"/billing/bills/([^/]+)/void")

Answer = Callable[[], Response]
Routes = dict[str, dict[str, Callable[..., Response]]]  # method -> "customers"/"accounts"/… -> handler


class BillingApi:
    def __init__(self, moment: FakeMoment) -> None:
        self._moment = moment
        self._store = moment.store
        self._collection_routes: Routes = {
            "POST": {
                "customers": self._create_customer,
                "accounts": self._create_account,
                "bills": self._create_bill,
            },
        }
        self._item_routes: Routes = {
            "GET": {"customers": self._get_customer, "accounts": self._get_account, "bills": self._get_bill},
            "PATCH": {
                "customers": self._update_customer,
                "accounts": self._update_account,
                "bills": self._update_bill,
            },
        }
        self._void_routes: Routes = {"POST": {"bills": self._void_bill}}

    def handle(self, request: Request) -> Response:
        self._moment.faults.delay()
        fault = self._moment.faults.draw()
        if isinstance(fault, Problem):
            return fault.to_response(request.path)
        response = self._carry_out(request)
        if fault is not None:
            fault.wait()  # done, but answered after the client stopped waiting
        return response

    def _carry_out(self, request: Request) -> Response:
        try:
            self._authenticate(request)
            answer = partial(_as_response, self._route(request), request)
            if request.method != "POST":
                return answer()
            return self._moment.idempotency.answer(key_of(request), request, answer)
        except Problem as problem:
            return problem.to_response(request.path)

    def _authenticate(self, request: Request) -> None:
        scheme, _, token = (request.header("authorization") or "").partition(" ")
        expected = self._moment.settings.api_key
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
            raise Problem(401, "unauthorized", "send a valid secret key as 'Authorization: Bearer sk_test_…'")

    def _route(self, request: Request) -> Answer:
        """The answer to this request, not yet worked out; a 404/405 problem if there is no route."""
        if collection := COLLECTION.fullmatch(request.path):
            return partial(_pick(self._collection_routes, request, collection[1]), request)
        if item := ITEM.fullmatch(request.path):
            return partial(_pick(self._item_routes, request, item[1]), request, unquote(item[2]))
        if void := VOID.fullmatch(request.path):
            return partial(_pick(self._void_routes, request, "bills"), request, unquote(void[1]))
        raise not_found(f"no route for {request.method} {request.path}")

    def _create_customer(self, request: Request) -> Response:
        fields = validation.customer_create(json_object(request.body))
        return json_response(201, self._store.create_customer(fields))

    def _create_account(self, request: Request) -> Response:
        fields, customer = validation.account_create(json_object(request.body))
        return json_response(201, self._store.create_account(fields, customer))

    def _get_customer(self, _request: Request, key: str) -> Response:
        return json_response(200, self._store.customer(key))

    def _get_account(self, _request: Request, key: str) -> Response:
        return json_response(200, self._store.account(key))

    def _update_customer(self, request: Request, key: str) -> Response:
        fields = validation.customer_update(json_object(request.body))
        return json_response(200, self._store.update_customer(key, fields))

    def _update_account(self, request: Request, key: str) -> Response:
        fields = validation.account_update(json_object(request.body))
        return json_response(200, self._store.update_account(key, fields))

    def _create_bill(self, request: Request) -> Response:
        fields, owner = validation.bill_create(json_object(request.body))
        return json_response(201, self._store.create_bill(fields, owner, self._moment.settings.bill_rules))

    def _get_bill(self, _request: Request, key: str) -> Response:
        return json_response(200, self._store.bill(key, self._moment.settings.bill_rules))

    def _update_bill(self, request: Request, key: str) -> Response:
        fields = validation.bill_update(json_object(request.body))
        return json_response(200, self._store.update_bill(key, fields, self._moment.settings.bill_rules))

    def _void_bill(self, request: Request, key: str) -> Response:
        # No body is documented; an empty object is tolerated, anything in it is not.
        if request.body.strip() and json_object(request.body):
            raise invalid("the void takes no body")
        return json_response(200, self._store.void_bill(key, self._moment.settings.bill_rules))


def _pick(routes: Routes, request: Request, collection: str) -> Callable[..., Response]:
    by_collection = routes.get(request.method)
    if by_collection is None:
        allowed = ", ".join(routes)
        raise Problem(405, "method-not-allowed", f"{request.path} answers {allowed}, not {request.method}")
    return by_collection[collection]


def _as_response(answer: Answer, request: Request) -> Response:
    try:
        return answer()
    except Problem as problem:
        return problem.to_response(request.path)
