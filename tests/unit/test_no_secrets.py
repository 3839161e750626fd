"""No secret value is committed: every key-shaped string in the repository is one of the made-up or
published values listed in local/local_stack/made_up_values.py, the one place they may live."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from local_stack import made_up_values

ROOT = Path(__file__).resolve().parents[2]
# Standard Webhooks secrets, Moment secret keys (test and live), and AWS access keys.
KEY_SHAPES = re.compile(
    r"whsec_[A-Za-z0-9+/=]{8,}|\bsk_(?:test_|live_)?[A-Za-z0-9_]{8,}|\bAKIA[0-9A-Z]{16}\b"
)


def allowed_values() -> set[str]:
    values: set[str] = set()
    for name in dir(made_up_values):
        value = getattr(made_up_values, name)
        if name.isupper() and isinstance(value, str):
            values.add(value)
        elif name.isupper() and isinstance(value, tuple):
            values.update(value)
    return values


def tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],  # noqa: S607 -- git from PATH, in this repo
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return [ROOT / name for name in listed if name and (ROOT / name).is_file()]


def test_every_key_shaped_string_is_a_listed_made_up_value() -> None:
    allowed = allowed_values()
    found = {}
    for path in tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for match in KEY_SHAPES.finditer(text):
            if match.group(0) not in allowed:
                found[f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}"] = match.group(
                    0
                )
    assert found == {}


def test_the_deployment_files_hold_no_key_at_all() -> None:
    for name in ("template.yaml", "samconfig.toml"):
        assert not KEY_SHAPES.search((ROOT / name).read_text()), name
    for event in (ROOT / "events").rglob("*.json"):
        text = event.read_text()
        for match in KEY_SHAPES.finditer(text):
            assert match.group(0) in allowed_values(), event


def test_the_made_up_values_look_made_up() -> None:
    assert made_up_values.LOCAL_MOMENT_API_KEY.startswith("sk_test_")
    assert "made_up" in made_up_values.LOCAL_MOMENT_API_KEY
    for secret in (made_up_values.LOCAL_WEBHOOK_SECRET, made_up_values.FORGER_WEBHOOK_SECRET):
        import base64

        decoded = base64.b64decode(secret.removeprefix("whsec_")).decode()
        assert "local" in decoded or "forged" in decoded, decoded
