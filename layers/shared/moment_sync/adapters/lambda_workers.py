"""Starting a push worker: an asynchronous Lambda invocation of the worker function, `{"shard": N}`.

Lambda's asynchronous queue may deliver it twice or late: the worker's shard lease and the push state's
sequence make that harmless (docs/pusher.md#fan-out)."""

from __future__ import annotations

import json
from typing import Any


class LambdaWorkers:
    def __init__(self, client: Any, function_name: str) -> None:
        self._client = client
        self.function_name = function_name

    def start(self, shard: int) -> None:
        response = self._client.invoke(
            FunctionName=self.function_name,
            InvocationType="Event",
            Payload=json.dumps({"shard": shard}).encode(),
        )
        if response.get("StatusCode") != 202:  # queued: anything else was not
            raise RuntimeError(f"Lambda answered {response.get('StatusCode')} for shard {shard}'s worker")
