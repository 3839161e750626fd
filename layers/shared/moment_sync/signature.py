"""Standard Webhooks signatures, the scheme Moment signs its webhooks with.

Pure functions over bytes: no I/O and no clock of their own (the caller passes `now`), so a test
can pin time. The reference library (`standardwebhooks`) is not used at run time because its
`verify` decodes the body as UTF-8 (raw bytes are what was signed), reads the wall clock with a
fixed 5-minute tolerance, and raises `ValueError` on a signature entry without a comma; the tests
check that this module agrees with it wherever it is defined.

Never log, return or raise anything that contains a key or a computed signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

SECRET_PREFIX = "whsec_"  # noqa: S105 -- a prefix, not a secret
SIGNATURE_VERSION = "v1"

# A webhook id becomes a DynamoDB key and a log correlation id: printable ASCII, bounded.
_WEBHOOK_ID = re.compile(r"[\x21-\x7e]{1,255}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# Bounds the work a hostile header can cause before any HMAC is computed.
MAX_SIGNATURE_ENTRIES = 16


class Rejection(StrEnum):
    """Why a webhook was refused; also the `Reason` dimension of the rejection metric."""

    BODY_TOO_LARGE = "body_too_large"
    MALFORMED_BODY = "malformed_body"
    MISSING_HEADER = "missing_header"
    MALFORMED_HEADER = "malformed_header"
    TIMESTAMP_OUT_OF_WINDOW = "timestamp_out_of_window"
    SIGNATURE_MISMATCH = "signature_mismatch"


class WebhookRejected(Exception):
    """A webhook that must not be stored. The message is safe to show the sender."""

    def __init__(self, reason: Rejection, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    webhook_id: str
    timestamp: int
    # Decoded `v1` signatures; entries of other versions are ignored, as the scheme says.
    signatures: tuple[bytes, ...]


def decode_signing_key(secret: str) -> bytes:
    """Read a signing secret the way the Standard Webhooks reference library does.

    An optional `whsec_` prefix, then base64 of the key bytes (padding optional).
    """
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "==")
    except (binascii.Error, ValueError) as error:
        raise ValueError("a signing secret is not base64 after its whsec_ prefix") from error
    if not key:
        raise ValueError("a signing secret is empty")
    return key


def compute_signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> bytes:
    signed_content = b"%s.%d.%s" % (webhook_id.encode("ascii"), timestamp, body)
    return hmac.new(key, signed_content, hashlib.sha256).digest()


def signature_header(keys: Iterable[bytes], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value a sender holding `keys` would send (used by tools and tests)."""
    signatures = (compute_signature(key, webhook_id, timestamp, body) for key in keys)
    return " ".join(f"{SIGNATURE_VERSION},{base64.b64encode(signature).decode()}" for signature in signatures)


def parse_signed_headers(headers: Mapping[str, str]) -> SignedHeaders:
    """Read the three Standard Webhooks headers; header names are case-insensitive."""
    lowered = {name.lower(): value for name, value in headers.items()}
    values = {}
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        value = lowered.get(name)
        if value is None or not value.strip():
            raise WebhookRejected(Rejection.MISSING_HEADER, f"the {name} header is missing")
        values[name] = value.strip()

    webhook_id = values["webhook-id"]
    if not _WEBHOOK_ID.fullmatch(webhook_id):
        raise WebhookRejected(
            Rejection.MALFORMED_HEADER, "webhook-id must be 1 to 255 printable ASCII characters"
        )
    if not _TIMESTAMP.fullmatch(values["webhook-timestamp"]):
        raise WebhookRejected(Rejection.MALFORMED_HEADER, "webhook-timestamp must be whole Unix seconds")
    return SignedHeaders(
        webhook_id=webhook_id,
        timestamp=int(values["webhook-timestamp"]),
        signatures=_parse_signature_list(values["webhook-signature"]),
    )


def _parse_signature_list(header: str) -> tuple[bytes, ...]:
    entries = header.split()
    if len(entries) > MAX_SIGNATURE_ENTRIES:
        raise WebhookRejected(
            Rejection.MALFORMED_HEADER,
            f"webhook-signature has more than {MAX_SIGNATURE_ENTRIES} entries",
        )
    signatures = []
    for entry in entries:
        version, comma, encoded = entry.partition(",")
        if not comma or not version or not encoded:
            raise WebhookRejected(
                Rejection.MALFORMED_HEADER,
                "webhook-signature entries must look like v1,<base64 signature>",
            )
        if version != SIGNATURE_VERSION:
            continue
        try:
            signatures.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            raise WebhookRejected(
                Rejection.MALFORMED_HEADER, "a v1 signature in webhook-signature is not base64"
            ) from None
    return tuple(signatures)


def check_timestamp(timestamp: int, *, now: float, tolerance_seconds: int) -> None:
    """Refuse a timestamp too far in the past (a replay) or the future (a skewed or forged clock)."""
    if abs(now - timestamp) > tolerance_seconds:
        raise WebhookRejected(
            Rejection.TIMESTAMP_OUT_OF_WINDOW,
            f"webhook-timestamp is more than {tolerance_seconds} seconds away from now",
        )


def verify_signature(signed: SignedHeaders, body: bytes, keys: Sequence[bytes]) -> None:
    """Pass if any `v1` signature was made with any active key, compared in constant time."""
    for key in keys:
        expected = compute_signature(key, signed.webhook_id, signed.timestamp, body)
        if any(hmac.compare_digest(expected, candidate) for candidate in signed.signatures):
            return
    raise WebhookRejected(Rejection.SIGNATURE_MISMATCH, "no signature matches an active signing secret")
