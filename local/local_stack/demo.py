"""`make demo`: Moment's webhooks arriving at the receiver over real HTTP, on this machine alone.

Starts the local stack (moto on loopback, the HTTP API front, the real handler), then plays what
Moment does: a payment webhook, its redelivery, a forged one, a replayed stale one, and an authentic
body that is not JSON. Webhooks are signed with the Standard Webhooks reference library, not with
this project's code. Exits 0 only if every answer and the stored table are as expected.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
import standardwebhooks

from local_stack.made_up_values import FORGER_WEBHOOK_SECRET, LOCAL_WEBHOOK_SECRET
from local_stack.stack import LocalSettings, RunningStack, function_output_to, running_stack
from local_stack.template import ROOT

FUNCTION_LOG = ROOT / "build" / "local" / "function-output.jsonl"


@dataclass(frozen=True)
class Delivery:
    story: str
    webhook_id: str
    body: bytes
    expected_status: int
    secret: str = LOCAL_WEBHOOK_SECRET
    age_seconds: int = 0


def payment(application_id: str, amount: int, customer_id: str) -> bytes:
    data = {
        "id": application_id,
        "amount": amount,
        "currency": "ZAR",
        "payment_id": "pay_" + application_id[3:],
        "customer_id": customer_id,
    }
    return json.dumps(
        {"id": "evt_" + application_id[3:], "type": "obligation.amount_applied", "data": data}
    ).encode()


DELIVERIES = [
    Delivery(
        "R150.00 paid by customer UCR1001",
        "msg_demo_0001",
        payment("ob_demo0001", 15000, "bcus_demo1001"),
        200,
    ),
    Delivery(
        "...the same webhook redelivered by Moment",
        "msg_demo_0001",
        payment("ob_demo0001", 15000, "bcus_demo1001"),
        200,
    ),
    Delivery(
        "R99.50 paid by customer UCR1002", "msg_demo_0002", payment("ob_demo0002", 9950, "bcus_demo1002"), 200
    ),
    Delivery(
        "a forged webhook (signed with another key)",
        "msg_demo_forged",
        payment("ob_forged", 1_000_000, "bcus_demo1001"),
        401,
        secret=FORGER_WEBHOOK_SECRET,
    ),
    Delivery(
        "a captured webhook replayed 10 minutes later",
        "msg_demo_replay",
        payment("ob_demo0001", 15000, "bcus_demo1001"),
        401,
        age_seconds=600,
    ),
    Delivery(
        "an authentic body that is not JSON (stored; parked later)", "msg_demo_garbled", b"<html>oops", 200
    ),
]


def send(client: httpx.Client, delivery: Delivery) -> httpx.Response:
    signed_at = datetime.fromtimestamp(time.time() - delivery.age_seconds, tz=UTC)
    signature = standardwebhooks.Webhook(delivery.secret).sign(
        delivery.webhook_id, signed_at, delivery.body.decode()
    )
    headers = {
        "content-type": "application/json",
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(int(signed_at.timestamp())),
        "webhook-signature": signature,
    }
    return client.post("/webhooks/moment", content=delivery.body, headers=headers)


def play(stack: RunningStack, print: Any) -> bool:
    print(f"API: {stack.api_url}")
    print(f"Function logs and metrics (as CloudWatch would get them): {FUNCTION_LOG.relative_to(ROOT)}\n")
    ok = True
    with httpx.Client(base_url=stack.api_url, timeout=10) as client:
        for delivery in DELIVERIES:
            response = send(client, delivery)
            answer = response.json()
            outcome = answer.get("status") if response.status_code == 200 else answer.get("title")
            mark = "ok " if response.status_code == delivery.expected_status else "BAD"
            ok &= response.status_code == delivery.expected_status
            print(f"  [{mark}] {delivery.story:<58} -> {response.status_code} {outcome}")

    items = stack.client("dynamodb").scan(TableName=stack.names["WebhookEventsTable"])["Items"]
    print("\nWebhookEvents table:")
    print(f"  {'webhook id':<18} {'status':<9} {'type':<26} {'amount':>8}  application")
    for item in sorted(items, key=lambda item: item["webhook_id"]["S"]):
        print(
            f"  {item['webhook_id']['S']:<18} {item['status']['S']:<9} "
            f"{item.get('event_type', {}).get('S', '(not JSON)'):<26} "
            f"{item.get('amount', {}).get('N', '-'):>8}  {item.get('application_id', {}).get('S', '-')}"
        )
    stored_ids = {item["webhook_id"]["S"] for item in items}
    expected_ids = {d.webhook_id for d in DELIVERIES if d.expected_status == 200}
    ok &= stored_ids == expected_ids
    print(
        f"\n{len(stored_ids)} webhooks stored once each; forged and replayed ones stored: "
        f"{'none' if stored_ids == expected_ids else sorted(stored_ids - expected_ids)}"
    )
    return ok


def main() -> int:
    settings = LocalSettings.from_environment()
    settings.api_port = 0  # the demo picks a free port; `make local` uses LOCAL_API_PORT
    started = time.monotonic()
    with function_output_to(FUNCTION_LOG) as terminal, running_stack(settings) as stack:
        say = partial(print, file=terminal, flush=True)
        ok = play(stack, say)
        say(f"demo {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
