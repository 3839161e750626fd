"""The edge around every operator command: one line for a fault, quiet logs, progress, plain values.

`moment_sync.cli` wraps each command in `run`, so a command (including one added later) never handles
its own faults: missing credentials or region, a network that cannot be reached, a table or stack
that is not there, Moment refusing or failing each become one line on stderr and exit 1 (`--debug`
prints the traceback as well). The functions' JSON log lines are silenced while a command runs: an
operator reads tables and sentences, and a script reads `--json`, never both mixed with logs.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

from moment_sync.observability import logger

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
# Progress appears only once a command has run this long, and only on a terminal.
PROGRESS_AFTER_SECONDS = 1.0
_PROGRESS_EVERY_SECONDS = 0.2


def run(command: Callable[[], int], *, debug: bool, err: TextIO, local: bool = False) -> int:
    """The command's exit code; any fault it raises is one line on `err` and exit 1 (130 on Ctrl-C)."""
    with quiet_logs(debug):
        try:
            return command()
        except KeyboardInterrupt:
            print("moment-sync: interrupted", file=err)
            return EXIT_INTERRUPTED
        except Exception as error:
            if debug:
                traceback.print_exc(file=err)
            print(f"moment-sync: {one_line(error, local=local)}", file=err)
            return EXIT_FAILED


def one_line(error: BaseException, *, local: bool = False) -> str:
    """What went wrong and what to do about it, in one line, for faults an operator meets."""
    name = type(error).__name__
    where = "is `make local` running? (start it in another terminal)" if local else "check the network"
    if name in {"NoCredentialsError", "PartialCredentialsError"}:
        return (
            "no AWS credentials: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), "
            "or use --local for the local stack"
        )
    if name == "NoRegionError":
        return "no AWS region: give --region, or set AWS_REGION (or use --local for the local stack)"
    if name in {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
    }:
        return f"cannot reach AWS ({_short(error)}): {where}"
    if name in {"TokenRetrievalError", "SSOTokenLoadError", "UnauthorizedSSOTokenError"}:
        return f"the AWS login has expired ({_short(error)}): run `aws sso login` again"
    if name == "ProfileNotFound":
        return f"{_short(error)}: check AWS_PROFILE"
    response = getattr(error, "response", None)
    if isinstance(response, Mapping) and "Error" in response:
        return _aws_refused(error, response["Error"])
    if _is_network_error(error):
        return f"cannot reach {_short(error) or 'the server'}: {where}"
    if name.startswith("Moment"):  # moment_sync.moment_errors: already one line, the key redacted
        return str(error)
    return f"{name}: {_short(error)} (--debug shows the traceback)"


def _aws_refused(error: BaseException, details: Mapping[str, Any]) -> str:
    code = str(details.get("Code", ""))
    message = str(details.get("Message", "")) or _short(error)
    if code == "ResourceNotFoundException":
        return f"not found: {message} (check --stack, or the table names)"
    if code == "ValidationError" and "does not exist" in message:
        return f"not found: {message} (check --stack)"
    if code in {"UnrecognizedClientException", "InvalidClientTokenId", "ExpiredTokenException"}:
        return f"AWS refused the credentials ({code}): {message}"
    if code in {"AccessDeniedException", "AccessDenied"}:
        return f"AWS denied it ({code}): {message}"
    return f"AWS refused it ({code}): {message}"


def _is_network_error(error: BaseException) -> bool:
    import httpx  # noqa: PLC0415 -- only once something failed

    return isinstance(error, httpx.TransportError | ConnectionError | TimeoutError)


def _short(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


@contextmanager
def quiet_logs(debug: bool) -> Iterator[None]:
    """The functions' log lines off while a command runs (on with --debug), restored afterwards."""
    level = logger.log_level
    logger.setLevel(logging.DEBUG if debug else logging.CRITICAL)  # nothing here logs CRITICAL
    try:
        yield
    finally:
        logger.setLevel(level)


class Progress:
    """`label: 1,200 done` on one rewritten terminal line, once the work has taken a moment."""

    def __init__(self, label: str, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self._label = label
        self._stream = stream
        self._clock = clock
        self._started = clock()
        self._shown_at: float | None = None
        self._enabled = _is_terminal(stream)

    def update(self, done: int, total: int | None = None, what: str = "done") -> None:
        if not self._enabled:
            return
        now = self._clock()
        if now - self._started < PROGRESS_AFTER_SECONDS:
            return
        if self._shown_at is not None and now - self._shown_at < _PROGRESS_EVERY_SECONDS:
            return
        self._shown_at = now
        of = f" of {total:,}" if total is not None else ""
        self._stream.write(f"\r{self._label}: {done:,}{of} {what}\x1b[K")
        self._stream.flush()

    def finish(self) -> None:
        if self._shown_at is not None:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def plain(value: Any) -> str:
    """A value as an operator reads it: no Python reprs (dicts, lists, None)."""
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{plain(key)} {plain(item)}" for key, item in value.items()) or "none"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(plain(item) for item in value) or "none"
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    return str(value)


def table(
    headers: list[str], rows: list[list[Any]], out: TextIO, right: frozenset[int] = frozenset()
) -> None:
    """Columns as wide as their widest cell; the columns numbered in `right` are right-aligned."""
    cells = [[plain(cell) for cell in row] for row in rows]
    widths = [
        max([len(header)] + [len(row[column]) for row in cells]) for column, header in enumerate(headers)
    ]

    def line(values: list[str]) -> str:
        padded = [
            value.rjust(widths[column]) if column in right else value.ljust(widths[column])
            for column, value in enumerate(values)
        ]
        return "  ".join(padded).rstrip()

    print(line(headers), file=out)
    for row in cells:
        print(line(row), file=out)
