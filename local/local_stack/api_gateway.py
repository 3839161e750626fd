"""A local front for the HTTP API: real HTTP in, API Gateway payload 2.0 events to the same handlers.

It does what API Gateway does for an HTTP API with a Lambda proxy integration: lower-cases header
names and joins repeated headers (and repeated query parameters) with commas, base64-encodes a body
that is not UTF-8 text, passes path parameters, and turns the handler's response back into HTTP; a
request no route takes, whatever its method, is a 404. Routes the template puts behind `AWS_IAM` are
open locally unless `sigv4` is set (LOCAL_REQUIRE_SIGV4=1): then their signatures are checked as
API Gateway checks them (sigv4_check).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

# An API Gateway (payload 2.0) event in, the integration's response out.
Handler = Callable[[dict[str, Any]], dict[str, Any]]
MAX_LOCAL_BODY = 10 * 1024 * 1024  # API Gateway's own payload limit


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # "/customers/{ref}" style, as in template.yaml
    function_name: str
    handler: Handler
    iam: bool = False  # the template's Authorizer: AWS_IAM

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path))
        found = re.fullmatch(pattern, path)
        return found.groupdict() if found else None


def build_event(
    route: Route,
    method: str,
    raw_path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    path_parameters: dict[str, str],
    source_ip: str,
) -> dict[str, Any]:
    try:
        text, is_base64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, is_base64 = base64.b64encode(body).decode("ascii"), True
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": raw_path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": headers.get("host", "127.0.0.1"),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": route.route_key,
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": is_base64,
    }
    if body:
        event["body"] = text
    if query:
        event["queryStringParameters"] = query_string_parameters(query)
    if path_parameters:
        event["pathParameters"] = path_parameters
    return event


def query_string_parameters(query: str) -> dict[str, str]:
    """An HTTP API's `queryStringParameters` (payload format 2.0): a parameter sent more than once
    reaches the function once, its values joined with commas in the order sent ("Duplicate query
    strings are combined with commas", API Gateway Developer Guide, "Create AWS Lambda proxy
    integrations for HTTP APIs", payload format version 2.0). A REST API's format 1.0 would keep
    only the last value here and all of them in `multiValueQueryStringParameters`; the template's
    API is an HTTP API (AWS::Serverless::HttpApi), so this is 2.0."""
    parameters: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        name, value = part.split("=", 1) if "=" in part else (part, "")
        parameters[name] = f"{parameters[name]},{value}" if name in parameters else value
    return parameters


class SignatureCheck(Protocol):
    def refusal(self, method: str, target: str, headers: dict[str, str], body: bytes) -> str | None: ...


class LocalHttpApi:
    """Serves `routes` on loopback until stopped; `url` is set once it listens."""

    def __init__(
        self, routes: list[Route], host: str = "127.0.0.1", port: int = 0, sigv4: SignatureCheck | None = None
    ) -> None:
        self.routes = routes  # may be set after construction, before start()
        self.sigv4 = sigv4
        self._server = ThreadingHTTPServer((host, port), self._request_handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-http-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalHttpApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LocalHttpApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def dispatch(
        self, method: str, target: str, headers: dict[str, str], body: bytes, source_ip: str = "127.0.0.1"
    ) -> tuple[int, dict[str, str], bytes]:
        split = urlsplit(target)
        for route in self.routes:
            parameters = route.match(method, split.path)
            if parameters is not None:
                if route.iam and self.sigv4 is not None:
                    refusal = self.sigv4.refusal(method, target, headers, body)
                    if refusal is not None:  # API Gateway says only "Forbidden"; locally, also why
                        forbidden = {"message": "Forbidden", "local_reason": refusal}
                        return 403, {"content-type": "application/json"}, json.dumps(forbidden).encode()
                event = build_event(
                    route, method, split.path, split.query, headers, body, parameters, source_ip
                )
                return _http_response(route.handler(event))
        problem = {
            "type": "about:blank",
            "title": "Not Found",
            "status": 404,
            "detail": f"no route for {method} {split.path}",
        }
        return 404, {"content-type": "application/problem+json"}, json.dumps(problem).encode()

    def _request_handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in two writes: without TCP_NODELAY, a keep-alive client's delayed
            # ACK holds the body back 40 ms on every request.
            disable_nagle_algorithm = True

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length > MAX_LOCAL_BODY:
                    self.send_error(413)
                    return
                body = self.rfile.read(length) if length else b""
                headers: dict[str, str] = {}
                for name, value in self.headers.items():
                    key = name.lower()
                    headers[key] = f"{headers[key]},{value}" if key in headers else value
                status, response_headers, payload = api.dispatch(
                    self.command, self.path, headers, body, self.client_address[0]
                )
                self.send_response(status)
                for name, value in response_headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":  # a HEAD answer is the headers alone
                    self.wfile.write(payload)

            def __getattr__(self, name: str) -> Any:
                # Every method goes to the routes, as on API Gateway: one no route takes (HEAD, OPTIONS,
                # TRACE, ...) is the front's 404, not http.server's 501 (a 5xx the API never gives).
                if name.startswith("do_"):
                    return self._handle
                raise AttributeError(name)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the handlers log; the front stays quiet

        return RequestHandler


def _http_response(response: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    body = response.get("body") or ""
    payload = base64.b64decode(body) if response.get("isBase64Encoded") else body.encode("utf-8")
    headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
    return int(response.get("statusCode", 200)), headers, payload
