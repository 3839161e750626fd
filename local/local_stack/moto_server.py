"""moto's server on loopback, one request at a time, with TransactWriteItems that copies only what it
touches (`moto_speedups`).

moto's backend is not thread-safe: a transaction is a sequence of reads and writes with no lock, so a
PutItem served on another thread in between would see (or be undone with) half a transaction, and a
Query or a stream read iterating a table's dict while another thread inserts fails ("dictionary
changed size during iteration"). DynamoDB itself never shows either. So the server is threaded
(werkzeug's threaded server: every connection, from every function's worker process, is accepted and
read at once) but each request's work in moto's backend runs under one lock, body included; that
lock is what is safe, and nothing finer is (a read during a transaction's writes sees half of it).
The requests of different functions, each in its own process, still interleave request by request,
which is where DynamoDB's races between functions live (two conditional writes to one item, a read
then a write); the lock is held for the milliseconds moto takes, never across a function's calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import httpx
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from local_stack import moto_speedups

Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def one_request_at_a_time(app: Wsgi) -> Wsgi:
    lock = threading.Lock()

    def serial(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with lock:
            return list(app(environ, start_response))  # the whole body, inside the lock

    return serial


class SerialMotoServer(ThreadedMotoServer):
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(ip_address=host, port=port, verbose=False)
        self._error: OSError | None = None
        moto_speedups.install()  # moto runs in this process: its backends are this process's

    def _server_entry(self) -> None:
        app = one_request_at_a_time(DomainDispatcherApplication(create_backend_app))
        try:
            self._server = make_server(
                self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
            )
        except (OSError, SystemExit) as error:  # the port is taken (werkzeug exits): tell start()
            self._error = OSError(f"port {self._port} is in use?") if isinstance(error, SystemExit) else error
            self._server_ready_event.set()
            return
        self._server_ready_event.set()
        self._server.serve_forever()

    def start(self) -> None:
        super().start()
        if self._error is not None:
            raise OSError(f"moto cannot listen on {self._ip_address}:{self._port}: {self._error}")

    @property
    def endpoint(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def reset(self) -> None:
        """Forget every resource. moto keeps them per process, not per server."""
        httpx.post(f"{self.endpoint}/moto-api/reset", timeout=10, trust_env=False).raise_for_status()
