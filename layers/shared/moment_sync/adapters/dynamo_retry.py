"""DynamoDB refusals that botocore does not retry, tried again here (the pusher's writes).

botocore retries throttling and 5xx answers itself, but not `TransactionConflictException` (a write
that met another transaction on the same item: the reconciler applying a payment to the balance being
pushed) nor a transaction cancelled only for such a conflict. Both mean nothing was written, so the
same request is safe to send again: a conditional write keeps its condition. After the last try the
error goes up as before, and the pusher counts that push as failed, with its backoff.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from moment_sync.adapters.dynamo_items import error_code
from moment_sync.observability import logger

CONFLICT_TRIES = 4
CONFLICT_BASE_DELAY_SECONDS = 0.05
CONFLICT_MAX_DELAY_SECONDS = 1.0
_WRITES = frozenset({"put_item", "update_item", "delete_item", "transact_write_items"})


def is_transaction_conflict(error: ClientError) -> bool:
    """Refused for a conflict with another transaction, and for nothing else (a failed condition in
    the same transaction is an answer, not a conflict)."""
    code = error_code(error)
    if code == "TransactionConflictException":
        return True
    if code != "TransactionCanceledException":
        return False
    reasons = {reason.get("Code") for reason in error.response.get("CancellationReasons") or []}
    reasons -= {None, "", "None"}
    return bool(reasons) and reasons <= {"TransactionConflict"}


class ConflictRetryingClient:
    """A DynamoDB client whose writes are sent again, with exponential backoff and full jitter, while
    DynamoDB refuses them for a transaction conflict (at most `tries` in all; the worst case adds
    0.05 + 0.1 + 0.2 = 0.35 s). Everything else is the wrapped client's."""

    def __init__(
        self,
        client: Any,
        *,
        tries: int = CONFLICT_TRIES,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self._tries = tries
        self._sleep = sleep
        self._jitter = jitter

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name not in _WRITES:
            return attribute

        def tried_again_on_conflict(**request: Any) -> Any:
            for attempt in range(1, self._tries + 1):
                try:
                    return attribute(**request)
                except ClientError as error:
                    if attempt == self._tries or not is_transaction_conflict(error):
                        raise
                    delay = min(CONFLICT_MAX_DELAY_SECONDS, CONFLICT_BASE_DELAY_SECONDS * 2 ** (attempt - 1))
                    logger.info(
                        "DynamoDB write met a transaction conflict; trying again",
                        extra={"operation": name, "attempt": attempt},
                    )
                    self._sleep(delay * self._jitter())
            raise AssertionError("tries is at least 1")  # pragma: no cover

        return tried_again_on_conflict
