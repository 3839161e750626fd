"""Lambda's Invoke API for the local stack, asynchronous invocations only: what the push dispatcher
calls to start one balance pusher worker per shard (`InvocationType=Event`, docs/pusher.md#fan-out).

The dispatcher's boto3 client reaches it through AWS_ENDPOINT_URL_LAMBDA (moto answers every other
service). Each accepted invocation is answered 202 at once and run on its own thread through
`LocalFunctions.invoke`, as Lambda's asynchronous queue runs it; its outcome goes to `on_done` (the
scheduler's terminal line). Nothing retries a failed one: the worker's template sets
MaximumRetryAttempts 0.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from local_stack.functions import Invocation, LocalFunctions

_INVOKE = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations$")


class LocalLambdaApi:
    def __init__(
        self,
        functions: LocalFunctions | None = None,
        on_done: Callable[[str, Invocation], None] = lambda _name, _invocation: None,
        host: str = "127.0.0.1",
    ) -> None:
        self.functions = functions
        self.on_done = on_done
        self.running: list[threading.Thread] = []
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalLambdaApi:
        threading.Thread(target=self._server.serve_forever, name="local-lambda-api", daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        for thread in list(self.running):
            thread.join(timeout=300)  # a worker under way finishes (its timeout is 240 s)

    def wait_until_idle(self, timeout: float = 300.0) -> None:
        for thread in list(self.running):
            thread.join(timeout=timeout)

    def invoke_async(self, name: str, payload: dict[str, Any]) -> None:
        functions = self.functions
        assert functions is not None  # noqa: S101 -- set by the stack before any function runs

        def run() -> None:
            self.on_done(name, functions.invoke(name, payload))

        thread = threading.Thread(target=run, name=f"async-{name}", daemon=True)
        self.running = [alive for alive in self.running if alive.is_alive()] + [thread]
        thread.start()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                match = _INVOKE.match(self.path.split("?", 1)[0])
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                name = unquote(match.group(1)).rsplit(":", 1)[-1] if match else ""
                if not match or api.functions is None or not api.functions.has(name):
                    return self._answer(404, {"Type": "User", "message": f"Function not found: {name}"})
                if self.headers.get("X-Amz-Invocation-Type") != "Event":
                    return self._answer(400, {"message": "the local stack invokes asynchronously only"})
                try:
                    payload = json.loads(body or b"{}")
                except ValueError:
                    return self._answer(400, {"Type": "User", "message": "Could not parse request body"})
                api.invoke_async(name, payload)
                return self._answer(202, None)

            def _answer(self, status: int, document: Any) -> None:
                data = b"" if document is None else json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
