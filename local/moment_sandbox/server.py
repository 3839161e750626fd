"""`MomentSandbox`: the fake Moment on a loopback HTTP server, in a thread of this process.

Owns the socket: a `ThreadingHTTPServer` (a thread per connection, HTTP/1.1 keep-alive), reading
request bodies (`Content-Length` only, at most 1 MiB), sending `/_sandbox/…` to the control routes
and everything else to the Billing API, and answering a 500 problem (never a dropped connection) if
the sandbox itself breaks. It is also the Python handle on a running sandbox: `start()`, `stop()`,
`url`, `with MomentSandbox(...) as sandbox:`, and shortcuts to what the control routes do.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from moment_sandbox.billing_api import BillingApi
from moment_sandbox.control import PREFIX as CONTROL_PREFIX
from moment_sandbox.control import ControlRoutes
from moment_sandbox.faults import Faults
from moment_sandbox.messages import Problem, Request, Response
from moment_sandbox.moment import FakeMoment
from moment_sandbox.payments import payment_order
from moment_sandbox.settings import SandboxSettings

LOGGER = logging.getLogger("moment_sandbox")
MAX_BODY_BYTES = 1024 * 1024
POLL_SECONDS = 0.05  # how soon stop() is noticed


class MomentSandbox:
    """Listens as soon as it is made (so `url` is known); serves once started; one use only."""

    def __init__(
        self, settings: SandboxSettings | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        """`clock`: the wall clock (Unix seconds) that stamps webhooks and events."""
        settings = settings or SandboxSettings()
        self.moment = FakeMoment(settings, clock)
        self._billing = BillingApi(self.moment)
        self._control = ControlRoutes(self.moment)
        self._server = _SandboxHttpServer(
            (settings.host, settings.port), self.dispatch, settings.log_requests
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(POLL_SECONDS,), name="moment-sandbox", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> MomentSandbox:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
        self.moment.close()

    def __enter__(self) -> MomentSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def dispatch(self, request: Request) -> Response:
        """The sandbox's answer to one request, whatever goes wrong inside."""
        try:
            if request.path.startswith(CONTROL_PREFIX):
                return self._control.handle(request)
            return self._billing.handle(request)
        except Exception:
            LOGGER.exception("the sandbox failed on %s %s", request.method, request.path)
            return Problem(500, "internal-server-error", "the sandbox failed; see its log").to_response(
                request.path
            )

    # Shortcuts to what the control routes do, for tests and demos in this process.

    def pay(self, **body: Any) -> dict[str, Any]:
        """`POST /_sandbox/payments` with `body`, e.g. `pay(customer="UCR1", amount=1500)`."""
        return self.moment.pay(payment_order(body))

    def state(self) -> dict[str, Any]:
        return self.moment.state()

    def reset(self) -> None:
        self.moment.reset()

    def set_faults(self, seed: int | None = None, **changes: Any) -> Faults:
        """E.g. `set_faults(fail_429_rate=1.0)`; fields not named keep their value."""
        faults = self.moment.faults.faults.updated(changes)
        self.moment.set_faults(faults, seed)
        return faults

    def configure(self, **changes: Any) -> SandboxSettings:
        """Change `webhook_url`, `webhook_secrets`, `applies_payments` or a bill rule while running."""
        return self.moment.configure(**changes)

    def wait_for_deliveries(self, timeout: float | None = 10.0) -> bool:
        """True once every webhook sent so far is delivered or given up; False on timeout."""
        return self.moment.wait_for_deliveries(timeout)


class _SandboxHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], dispatch: Callable[[Request], Response], log_requests: bool
    ) -> None:
        super().__init__(address, _RequestHandler)
        self.dispatch = dispatch
        self.log_requests = log_requests


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes; Nagle would hold the second back
    server: _SandboxHttpServer

    def _handle(self) -> None:
        path = urlsplit(self.path).path
        try:
            request = Request(self.command, path, self._headers(), self._body())
        except Problem as problem:
            self.close_connection = True  # the unread body would poison the next request
            self._send(problem.to_response(path))
            return
        self._send(self.server.dispatch(request))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return headers

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            raise Problem(411, "length-required", "send the body with a Content-Length")
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            raise Problem(400, "invalid-body", "Content-Length is not a number") from None
        if length < 0:
            raise Problem(400, "invalid-body", "Content-Length is negative")
        if length > MAX_BODY_BYTES:
            raise Problem(413, "content-too-large", f"the body is larger than {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length) if length else b""

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(response.body)))
        if self.close_connection:
            self.send_header("connection", "close")
        try:
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up waiting (an injected timeout)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log_requests:
            LOGGER.info(format, *args)
