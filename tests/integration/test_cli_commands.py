"""Every command of the operator CLI, enumerated from its own parser: each has a run here whose exit
status, human output and `--json` output are checked, with no log line and no Python repr in either.
A command added later without a case in COMMANDS fails `test_every_command_has_a_case`.

And the faults an operator meets first (no credentials, no region, nothing listening, a table that
is not there) are one line and exit 1, never a traceback; `--debug` shows it.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from local_stack.made_up_values import LOCAL_MOMENT_API_KEY
from moment_sandbox import MomentSandbox, SandboxSettings
from moment_sync import cli_shell
from moment_sync.cli import build_parser, main
from moment_sync.moment_client import MomentClient
from moment_sync.observability import logger
from support.ledger import LedgerHarness, payment


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    exit_code: int
    says: str  # a regular expression the human output must match


# One run per command, against the harness below (UCR1 paid 1500, one event parked unmatched).
COMMANDS: dict[str, Case] = {
    "event": Case(("event", "msg_paid"), 0, r"status\s+applied"),
    "balance": Case(("balance", "customer", "UCR1"), 0, r"amount\s+entry\n.*payment:ob_1"),
    "redrive": Case(
        ("redrive", "--reason", "unmatched"), 0, r"redrive: 1 events examined: 1 parked \(unmatched\)"
    ),
    "verify": Case(("verify",), 0, r"verify: 1 balances checked, all agree"),
    "put-customer": Case(("put-customer", "UCR7", "--currency", "ZAR"), 0, r"created: customer UCR7"),
    "put-account": Case(
        ("put-account", "ACC1", "--customer-ref", "UCR1", "--currency", "ZAR"), 1, r"^$"
    ),  # UCR1 is on the customer model: refused (stderr says why)
    "charge": Case(("charge", "customer", "UCR1", "--id", "inv-9", "--amount", "700"), 0, r"posted: entry"),
    "set-balance": Case(
        ("set-balance", "customer", "UCR1", "--balance", "0", "--expected-version", "1"), 0, r"set: customer"
    ),
    "adjust": Case(
        ("adjust", "customer", "UCR1", "--amount", "-100", "--reason", "goodwill", "--operator", "thandi"),
        0,
        r"adjusted: entry",
    ),
    "reconcile-report": Case(
        ("reconcile-report",), 1, r"reference\s+ledger\s+moment.*\n.*UCR1.*-1500.*unexplained"
    ),  # bcus_1 is not on Moment: an unexplained difference, exit 1
    "parked": Case(("parked",), 0, r"reason\s+webhook id.*\nunmatched\s+msg_unknown.*700\s+ZAR"),
    "forget": Case(("forget", "UCR1"), 0, r"erased the raw body of 1 stored webhooks\n  msg_paid"),
    "backfill-application-guards": Case(
        ("backfill-application-guards",), 0, r"1 payments checked, 0 conflicts"
    ),
    "unlink": Case(("unlink", "customer", "UCR1"), 0, r"unlinked customer UCR1 from bcus_1"),
    "link": Case(("link", "customer", "UCR1", "bcus_1"), 1, r"^$"),  # already linked: refused, one line
    "adopt": Case(("adopt", "--all-held", "--ledger-wins"), 0, r"no balance is held after an adoption"),
    "republish-events": Case(
        ("republish-events", "--since", "2000-01-01T00:00:00Z", "--dry-run"),
        0,
        r"found 2 event\(s\) from .*: Event Parked 1, Payment Applied 1",
    ),
    "bill": Case(
        ("bill", "put", "FEE", "--customer", "UCR1", "--currency", "ZAR", "--amount-due", "90000"),
        0,
        r"created: bill FEE\n(.*\n)*status\s+unpaid",
    ),
    "bills": Case(("bills", "--customer", "UCR1"), 0, r"customer UCR1: 0 bills"),
}
LOG_LINE = re.compile(r'"level"|service_undefined|"timestamp"')
PYTHON_REPR = re.compile(r"\{'|\['|\bNone\b|\bTrue\b|\bFalse\b")


def commands_of(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("the CLI has no commands")


def test_every_command_has_a_case() -> None:
    assert commands_of(build_parser()) == set(COMMANDS)


@pytest.fixture
def sandbox() -> Iterator[MomentSandbox]:
    with MomentSandbox(SandboxSettings(webhook_url=None)) as running:
        yield running


@pytest.fixture
def harness(dynamodb: Any) -> LedgerHarness:
    harness = LedgerHarness(dynamodb)
    harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_paid", payment("ob_1", 1500, customer_id="bcus_1"))
    harness.receive("msg_unknown", payment("ob_2", 700, customer_id="bcus_unknown"))
    harness.invoke(harness.next_batch())
    return harness


def run(harness: LedgerHarness, sandbox: MomentSandbox, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with MomentClient(LOCAL_MOMENT_API_KEY, environment="dev", base_url=sandbox.url) as moment:
        code = main(
            ["--events-table", harness.events_name, "--ledger-table", harness.ledger_name, *argv],
            out=out,
            err=err,
            moment=moment,
        )
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Where the functions' Logger writes (stdout in Lambda and in a terminal), caught."""
    caught = io.StringIO()
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    previous = handler.setStream(caught)
    yield caught
    handler.setStream(previous)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_in_words(
    command: str,
    harness: LedgerHarness,
    sandbox: MomentSandbox,
    capfd: pytest.CaptureFixture[str],
    log_output: io.StringIO,
) -> None:
    case = COMMANDS[command]
    code, text, err = run(harness, sandbox, *case.argv)
    leaked = capfd.readouterr()  # what reached the process's own stdout/stderr
    assert log_output.getvalue() == ""
    assert code == case.exit_code, err
    assert re.search(case.says, text, re.MULTILINE), text
    for shown in (text, err, leaked.out, leaked.err):
        assert not LOG_LINE.search(shown), shown
        assert not PYTHON_REPR.search(shown), shown
    assert "Traceback" not in err
    if err:  # a refusal or a fault: one line (reconcile-report's exit 1 is its report)
        assert err.startswith("moment-sync: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_as_json(
    command: str,
    harness: LedgerHarness,
    sandbox: MomentSandbox,
    capfd: pytest.CaptureFixture[str],
    log_output: io.StringIO,
) -> None:
    case = COMMANDS[command]
    code, text, err = run(harness, sandbox, "--json", *case.argv)
    leaked = capfd.readouterr()
    assert log_output.getvalue() == ""
    assert code == case.exit_code, err
    if code == 0 or command == "reconcile-report":
        assert isinstance(json.loads(text), dict)  # one JSON document, nothing else
    assert not LOG_LINE.search(leaked.out + leaked.err)


# --- the faults an operator meets first -----------------------------------------------------------


@pytest.fixture
def no_aws_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> pytest.MonkeyPatch:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def fault(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    code = main(list(argv), out=io.StringIO(), err=err)
    return code, err.getvalue()


def test_no_region_is_one_line(no_aws_settings: pytest.MonkeyPatch) -> None:
    code, err = fault("--events-table", "E", "--ledger-table", "L", "verify")
    assert (code, err) == (
        1,
        "moment-sync: no AWS region: give --region, or set AWS_REGION (or use --local for the local stack)\n",
    )


def test_no_credentials_is_one_line(no_aws_settings: pytest.MonkeyPatch) -> None:
    code, err = fault("--region", "af-south-1", "--events-table", "E", "--ledger-table", "L", "verify")
    assert code == 1
    assert err.startswith("moment-sync: no AWS credentials: set AWS_PROFILE") and err.count("\n") == 1


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_local_with_nothing_listening_says_to_start_make_local(no_aws_settings: pytest.MonkeyPatch) -> None:
    no_aws_settings.setenv("LOCAL_AWS_PORT", str(closed_port()))
    code, err = fault("--local", "event", "msg_1")
    assert code == 1
    assert err.startswith("moment-sync: cannot reach AWS (") and "is `make local` running?" in err
    assert err.count("\n") == 1


def test_a_table_that_is_not_there_is_not_found(dynamodb: Any) -> None:
    code, err = fault("--events-table", "NoSuchTable", "--ledger-table", "NoSuchTable", "verify")
    assert code == 1
    assert err.startswith("moment-sync: not found: ") and err.count("\n") == 1


def test_debug_shows_the_traceback_too(no_aws_settings: pytest.MonkeyPatch) -> None:
    code, err = fault("--debug", "--events-table", "E", "--ledger-table", "L", "verify")
    assert code == 1
    assert err.startswith("Traceback") and "NoRegionError" in err
    assert err.splitlines()[-1].startswith("moment-sync: no AWS region")


# --- progress -------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_on_a_terminal_once_a_command_takes_a_moment() -> None:
    ticks = iter([0.0, 0.5, 1.5, 1.6, 2.0])
    terminal = Terminal()
    progress = cli_shell.Progress("verify", terminal, clock=lambda: next(ticks))
    progress.update(10, what="items read")  # 0.5 s: too soon to bother
    progress.update(1200, what="items read")  # 1.5 s: shown
    progress.update(1300, what="items read")  # 1.6 s: too soon after the last
    progress.update(2000, 4000, what="events")  # 2.0 s
    progress.finish()
    assert terminal.getvalue() == (
        "\rverify: 1,200 items read\x1b[K\rverify: 2,000 of 4,000 events\x1b[K\r\x1b[K"
    )


def test_progress_never_reaches_a_pipe() -> None:
    pipe = io.StringIO()
    progress = cli_shell.Progress("verify", pipe, clock=iter([0.0, 5.0]).__next__)
    progress.update(1)
    progress.finish()
    assert pipe.getvalue() == ""


def test_verify_reports_progress_on_a_terminal(
    harness: LedgerHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_shell, "PROGRESS_AFTER_SECONDS", 0.0)
    terminal = Terminal()
    code = main(
        ["--events-table", harness.events_name, "--ledger-table", harness.ledger_name, "verify"],
        out=io.StringIO(),
        err=terminal,
    )
    assert code == 0
    assert "\rverify: 1 items read" in terminal.getvalue() and terminal.getvalue().endswith("\r\x1b[K")
