"""Signing the sample webhook for `sam local invoke` writes under build/ and leaves the tracked
events/ file as it is: nothing a user runs may leave the working tree dirty."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRACKED = ROOT / "events" / "webhook_receiver" / "moment-webhook.json"


def test_signing_writes_under_build_and_leaves_the_tracked_sample_alone() -> None:
    before = TRACKED.read_bytes()
    result = subprocess.run(  # noqa: S603 -- this repository's own script
        [sys.executable, str(ROOT / "tools" / "sign_webhook_event.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert TRACKED.read_bytes() == before
    signed = ROOT / "build" / "events" / "moment-webhook.json"
    assert str(signed) in result.stdout
    event = json.loads(signed.read_text())
    assert abs(int(event["headers"]["webhook-timestamp"]) - time.time()) < 60
    assert event["body"] == json.loads(before)["body"]  # the same webhook, signed afresh
