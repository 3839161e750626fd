"""The functions' AWS clients (runtime.aws_client): what each request pays in the client itself."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore import useragent
from botocore.awsrequest import AWSResponse

from moment_sync import runtime


class _Body:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


@pytest.fixture
def fresh_clients() -> Iterator[None]:
    runtime.aws_client.cache_clear()
    yield
    runtime.aws_client.cache_clear()


def test_the_user_agent_is_built_once_per_client_not_twice_per_request(
    fresh_clients: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # botocore's default rebuilds the header from its sanitised parts on every request (twice), which
    # cost the receiver about a fifth of its warm CPU; a fixed header is sent as it is.
    rebuilt: list[str] = []
    build = useragent.UserAgentString._build_sdk_metadata

    def counted(self: Any) -> Any:
        rebuilt.append("sdk")
        return build(self)

    monkeypatch.setattr(useragent.UserAgentString, "_build_sdk_metadata", counted)
    client = runtime.aws_client("dynamodb")
    sent: list[str] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        sent.append(request.headers["User-Agent"].decode())
        return AWSResponse(request.url, 200, {"x-amzn-requestid": "0" * 52}, _Body(json.dumps({}).encode()))

    client.meta.events.register_first("before-send.dynamodb", answer)
    for number in range(3):
        client.put_item(TableName="WebhookEvents", Item={"webhook_id": {"S": f"msg_{number}"}})

    assert rebuilt == []
    assert len(sent) == 3
    assert sent[0].startswith("Boto3/")
    assert "moment-balance-sync" in sent[0]
