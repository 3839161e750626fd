"""The active webhook signing secrets, read from Secrets Manager and cached per execution environment.

The secret's value is a JSON list of `whsec_…` strings (two during a rotation); a plain string
counts as a list of one. Powertools' parameters cache keeps the value for `max_age` seconds, so a
rotation takes effect without a deploy.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from moment_sync.receiver import SigningKeysUnavailable
from moment_sync.signature import decode_signing_key


def parse_signing_secrets(value: str) -> list[bytes]:
    """Decode every active secret; raise SigningKeysUnavailable when none is usable."""
    text = value.strip()
    try:
        secrets: object = json.loads(text) if text.startswith(("[", "{", '"')) else text
    except json.JSONDecodeError:
        raise SigningKeysUnavailable("the signing secret is not valid JSON") from None
    if isinstance(secrets, str):
        secrets = [secrets]
    if not isinstance(secrets, list) or not all(isinstance(secret, str) for secret in secrets):
        raise SigningKeysUnavailable("the signing secret must be a JSON list of strings")
    try:
        keys = [decode_signing_key(secret) for secret in secrets if secret.strip()]
    except ValueError as error:
        raise SigningKeysUnavailable(str(error)) from None
    if not keys:
        raise SigningKeysUnavailable("no signing secret is configured")
    return keys


class SecretsManagerSigningKeys:
    """Callable returning the decoded keys; cached, so most invocations make no Secrets Manager call.

    The decoded keys are kept as long as the provider's cache keeps the value (`max_age_seconds`), so a
    warm call neither asks the provider nor decodes base64 again; a rotation is seen once that expires.
    """

    def __init__(
        self,
        provider: Any,
        secret_id: str,
        max_age_seconds: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # provider: a Powertools SecretsProvider (its cache lives as long as the execution environment).
        self._provider = provider
        self._secret_id = secret_id
        self._max_age_seconds = max_age_seconds
        self._monotonic = monotonic
        self._value: str | None = None
        self._keys: list[bytes] = []
        self._fresh_until = -math.inf

    def __call__(self) -> list[bytes]:
        now = self._monotonic()
        if now < self._fresh_until:
            return self._keys
        try:
            value = self._provider.get(self._secret_id, max_age=self._max_age_seconds)
        except Exception as error:
            # Powertools wraps every SDK failure in GetParameterError; the cause is what an operator needs.
            raise SigningKeysUnavailable(f"{type(error).__name__}: {error}") from error
        if not isinstance(value, str):
            raise SigningKeysUnavailable("the signing secret is not a string")
        if value != self._value:
            self._keys, self._value = parse_signing_secrets(value), value
        self._fresh_until = now + self._max_age_seconds
        return self._keys
