"""tools/sign_webhook_event.py explains itself in whole sentences: its `--help` stopped mid-sentence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_sign_webhook_events_help_is_whole_sentences() -> None:
    shown = subprocess.run(  # noqa: S603 -- this interpreter, a tool of this repository
        [sys.executable, str(ROOT / "tools" / "sign_webhook_event.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    description = " ".join(shown.stdout.split("\n\n")[1].split())
    assert description.endswith("."), description
    assert "a fresh timestamp." in description, description
