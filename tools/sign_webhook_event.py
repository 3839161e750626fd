"""Write build/events/moment-webhook.json: events/webhook_receiver/moment-webhook.json (an API Gateway
HTTP API event carrying a Moment `obligation.amount_applied` webhook) signed again with the given
secret and a fresh timestamp. The tracked sample is never rewritten: its signature is old.

`sam local invoke WebhookReceiverFunction -e build/events/moment-webhook.json` then passes
verification as long as it runs within the tolerance (180 s by default).

Usage: python tools/sign_webhook_event.py [--secret whsec_...] [--timestamp UNIX] [--webhook-id ID]
                                          [--out PATH]
       python tools/sign_webhook_event.py --curl URL [--webhook-id ID] [--body JSON] [--secret whsec_...]

`--curl` writes no file: it prints a `curl` command that sends a freshly signed webhook to URL (the
local stack's http://127.0.0.1:3000/webhooks/moment, say), with this body or the one given.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers" / "shared"), str(ROOT / "local")]

from local_stack.made_up_values import LOCAL_WEBHOOK_SECRET  # noqa: E402
from moment_sync.signature import decode_signing_key, signature_header  # noqa: E402

BODY = {
    "id": "evt_2341234567890abcdef",
    "type": "obligation.amount_applied",
    "data": {
        "id": "ob_N2a38DJQWPL8K4X42354234",
        "amount": 2000,
        "currency": "ZAR",
        "payment_id": "pay_1313235234843nmafdsa",
        "customer_id": "bcus_H4jp6KnU5cPw263v1jyz4",
        "metadata": {"event_id": "wellness_joburg_2025"},
        "created_at": "2025-06-18T08:45:00Z",
        "updated_at": "2025-06-18T08:45:10Z",
    },
}
WEBHOOK_ID = "msg_2mXnExampleDelivery01"
SIGNED_EVENT = ROOT / "build" / "events" / "moment-webhook.json"


def build_event(secret: str, timestamp: int, webhook_id: str = WEBHOOK_ID) -> dict[str, object]:
    body = json.dumps(BODY, separators=(",", ":"))
    signature = signature_header([decode_signing_key(secret)], webhook_id, timestamp, body.encode())
    return {
        "version": "2.0",
        "routeKey": "POST /webhooks/moment",
        "rawPath": "/webhooks/moment",
        "rawQueryString": "",
        "headers": {
            "accept": "*/*",
            "content-length": str(len(body)),
            "content-type": "application/json",
            "host": "abcdef1234.execute-api.af-south-1.amazonaws.com",
            "user-agent": "Svix-Webhooks/1.63.0",
            "webhook-id": webhook_id,
            "webhook-signature": signature,
            "webhook-timestamp": str(timestamp),
            "x-amzn-trace-id": "Root=1-6742f0c2-3f1d2c4b5a6978a1b2c3d4e5",
            "x-forwarded-for": "203.0.113.10",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdef1234",
            "domainName": "abcdef1234.execute-api.af-south-1.amazonaws.com",
            "domainPrefix": "abcdef1234",
            "http": {
                "method": "POST",
                "path": "/webhooks/moment",
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.10",
                "userAgent": "Svix-Webhooks/1.63.0",
            },
            "requestId": "bM4qYgbhsoEEMpA=",
            "routeKey": "POST /webhooks/moment",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(timestamp)),
            "timeEpoch": timestamp * 1000,
        },
        "body": body,
        "isBase64Encoded": False,
    }


def curl_command(url: str, secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    signature = signature_header([decode_signing_key(secret)], webhook_id, timestamp, body.encode())
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }
    parts = ["curl", "-sS", "-i", url]
    for name, value in headers.items():
        parts += ["-H", f"{name}: {value}"]
    parts += ["--data-binary", body]
    return " ".join(shlex.quote(part) for part in parts)


def main() -> None:
    # The docstring's whole first paragraph: its first line alone stops mid-sentence.
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--secret", default=LOCAL_WEBHOOK_SECRET, help="whsec_... (default: the local one)")
    parser.add_argument("--timestamp", type=int, default=None, help="Unix seconds (default: now)")
    parser.add_argument("--out", type=Path, default=SIGNED_EVENT, help="default: build/events/…")
    parser.add_argument(
        "--curl", metavar="URL", help="print a curl command for URL instead of writing a file"
    )
    parser.add_argument(
        "--webhook-id", default=None, help=f"default: {WEBHOOK_ID}, or a new msg_ id with --curl"
    )
    parser.add_argument(
        "--body", default=None, help="with --curl: the JSON body (default: the sample payment)"
    )
    arguments = parser.parse_args()
    timestamp = arguments.timestamp if arguments.timestamp is not None else int(time.time())
    if arguments.curl:
        webhook_id = arguments.webhook_id or f"msg_byhand{timestamp}"
        body = arguments.body or json.dumps(BODY, separators=(",", ":"))
        print(curl_command(arguments.curl, arguments.secret, webhook_id, timestamp, body))
        return
    event = build_event(arguments.secret, timestamp, arguments.webhook_id or WEBHOOK_ID)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(event, indent=2) + "\n")
    print(f"wrote {arguments.out} (webhook-timestamp {timestamp})")


if __name__ == "__main__":
    main()
