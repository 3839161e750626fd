"""Rules of the ledger API a new merchant engineer tripped over (issue 15): a body declared as anything
but JSON is 415; free text refuses control, bidi, separator and zero-width characters but keeps the
joiners names need; a charge or adjustment that would take a balance past Moment's 99,999,999 is 422
and changes nothing. Every answer is checked against docs/api/openapi.yaml (support.ledger_api)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from moment_sync.cli import main as cli
from moment_sync.ledger.model import MOMENT_MAX_BALANCE, BalanceKind, BalanceRef
from moment_sync.runtime import LedgerDependencies
from support.ledger import LedgerHarness
from support.ledger_api import LedgerApi


@pytest.fixture
def harness(dynamodb: Any) -> LedgerHarness:
    return LedgerHarness(dynamodb)


@pytest.fixture
def api(harness: LedgerHarness) -> LedgerApi:
    return LedgerApi(LedgerDependencies(events=harness.events, ledger=harness.ledger, clock=harness.clock))


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
def test_a_body_that_is_not_declared_json_is_415_and_changes_nothing(
    api: LedgerApi, content_type: str
) -> None:
    answer = api.put("/customers/CT1", {"currency": "ZAR"}, content_type=content_type)
    assert (answer.status, answer.problem) == (415, "unsupported-media-type")
    assert api.get("/customers/CT1").status == 404


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON", None]
)
def test_json_with_parameters_or_no_content_type_is_read(api: LedgerApi, content_type: str | None) -> None:
    assert api.put("/customers/CT2", {"currency": "ZAR"}, content_type=content_type).status in {200, 201}


@pytest.mark.parametrize(
    ("character", "why"),
    [
        ("\x07", "C0 control"),
        ("\x85", "C1 control (next line)"),
        ("\x9b", "C1 control (CSI)"),
        ("\u202e", "right-to-left override"),
        ("\u2066", "left-to-right isolate"),
        ("\u200f", "right-to-left mark"),
        ("\u2028", "line separator"),
        ("\u2029", "paragraph separator"),
        ("\u200b", "zero-width space"),
        ("\u2060", "word joiner"),
        ("\ufeff", "byte-order mark"),
    ],
)
def test_invisible_and_reordering_characters_are_refused_in_free_text(
    api: LedgerApi, character: str, why: str
) -> None:
    name = api.put("/customers/TX1", {"currency": "ZAR", "name": f"Thandi{character}Nkosi"})
    assert (name.status, name.error_fields) == (400, ["name"]), why
    assert api.put("/customers/TX2", {"currency": "ZAR"}).status == 201
    charge = api.post("/customers/TX2/charges", {"id": "c1", "amount": 5, "description": f"June{character}"})
    assert (charge.status, charge.error_fields) == (400, ["description"]), why


def test_joiners_that_names_need_are_kept(api: LedgerApi) -> None:
    for name in (
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
        "Family \U0001f468\u200d\U0001f469\u200d\U0001f467",
    ):
        answer = api.put("/customers/ZW1", {"currency": "ZAR", "name": name})
        assert answer.status in {200, 201} and answer.body["name"] == name


def test_a_charge_past_momens_limit_is_422_and_changes_nothing(
    api: LedgerApi, harness: LedgerHarness
) -> None:
    assert api.put("/customers/BIG1", {"currency": "ZAR"}).status == 201
    assert api.post("/customers/BIG1/charges", {"id": "c1", "amount": MOMENT_MAX_BALANCE}).status == 201
    over = api.post("/customers/BIG1/charges", {"id": "c2", "amount": 1})
    assert (over.status, over.problem) == (422, "balance-out-of-range")
    assert "99,999,999" in over.body["detail"]
    assert api.post("/customers/BIG1/charges", {"id": "c3", "amount": -1}).status == 201  # a credit still can
    head = harness.head(BalanceRef(BalanceKind.CUSTOMER, "BIG1"))
    assert (head["balance"], head["version"]) == (MOMENT_MAX_BALANCE - 1, 2)
    assert (
        api.post("/customers/BIG1/charges", {"id": "c1", "amount": MOMENT_MAX_BALANCE}).status == 200
    )  # replay


def test_credits_past_the_limit_the_other_way_are_refused_too(api: LedgerApi) -> None:
    assert api.put("/customers/BIG2", {"currency": "ZAR"}).status == 201
    assert api.post("/customers/BIG2/charges", {"id": "r1", "amount": -MOMENT_MAX_BALANCE}).status == 201
    assert api.post("/customers/BIG2/charges", {"id": "r2", "amount": -1}).status == 422


def test_an_adjustment_past_the_limit_is_refused_by_the_cli(api: LedgerApi, harness: LedgerHarness) -> None:
    assert api.put("/customers/BIG3", {"currency": "ZAR"}).status == 201
    assert api.post("/customers/BIG3/charges", {"id": "c1", "amount": MOMENT_MAX_BALANCE}).status == 201
    err = io.StringIO()
    code = cli(
        [
            "--events-table", harness.events_name, "--ledger-table", harness.ledger_name,
            "adjust", "customer", "BIG3", "--amount", "10", "--reason", "fee", "--operator", "ops",
        ],
        out=io.StringIO(),
        err=err,
    )  # fmt: skip
    assert code == 1 and "(balance-out-of-range)" in err.getvalue()
