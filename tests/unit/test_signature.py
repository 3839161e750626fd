"""Standard Webhooks verification: known answers, agreement with the reference library, edge cases."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
import standardwebhooks
from hypothesis import given
from hypothesis import strategies as st

from local_stack.made_up_values import PUBLISHED_TEST_VECTOR_SECRETS
from moment_sync.signature import (
    MAX_SIGNATURE_ENTRIES,
    Rejection,
    WebhookRejected,
    check_timestamp,
    decode_signing_key,
    parse_signed_headers,
    signature_header,
    verify_signature,
)

# Moment's first example signature is the Standard Webhooks reference vector (docs/moment.md).
KAT_SECRET, HAND_VECTOR_SECRET = PUBLISHED_TEST_VECTOR_SECRETS
KAT_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
KAT_TIMESTAMP = 1614265330
KAT_BODY = b'{"test": 2432232314}'
KAT_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def headers(webhook_id: str, timestamp: int | str, signature: str) -> dict[str, str]:
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def test_moment_example_signature_verifies_with_the_clock_pinned() -> None:
    signed = parse_signed_headers(headers(KAT_ID, KAT_TIMESTAMP, KAT_SIGNATURE))
    check_timestamp(signed.timestamp, now=KAT_TIMESTAMP + 5, tolerance_seconds=180)
    verify_signature(signed, KAT_BODY, [decode_signing_key(KAT_SECRET)])
    assert (
        signature_header([decode_signing_key(KAT_SECRET)], KAT_ID, KAT_TIMESTAMP, KAT_BODY) == KAT_SIGNATURE
    )


def test_moment_example_is_stale_today() -> None:
    with pytest.raises(WebhookRejected) as rejected:
        check_timestamp(
            KAT_TIMESTAMP, now=datetime(2026, 11, 23, tzinfo=UTC).timestamp(), tolerance_seconds=180
        )
    assert rejected.value.reason is Rejection.TIMESTAMP_OUT_OF_WINDOW


def test_vector_computed_by_hand_with_openssl() -> None:
    # KEY=$(printf 'hand-computed-vector-key' | xxd -p)
    # printf 'msg_handVector01.1700000000.{"type":"ping"}' |
    #   openssl dgst -sha256 -mac HMAC -macopt hexkey:$KEY -binary | base64
    key = decode_signing_key(HAND_VECTOR_SECRET)
    assert key == b"hand-computed-vector-key"
    expected = "v1,s+mtL9a1XLmPCjMDodd5ygLukNpvU1IQYZkfwBflOuM="
    assert signature_header([key], "msg_handVector01", 1700000000, b'{"type":"ping"}') == expected


@pytest.mark.parametrize(
    "secret",
    [
        KAT_SECRET,
        KAT_SECRET.removeprefix("whsec_"),
        "whsec_" + base64.b64encode(b"short").decode().rstrip("="),
    ],
)
def test_keys_are_read_as_the_reference_library_reads_them(secret: str) -> None:
    reference = standardwebhooks.Webhook(secret)
    assert decode_signing_key(secret) == reference._whsecret


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_!!!not-base64!!!"])
def test_unusable_keys_are_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="signing secret"):
        decode_signing_key(secret)


@given(
    key=st.binary(min_size=1, max_size=64),
    webhook_id=st.from_regex(r"[A-Za-z0-9_]{1,40}", fullmatch=True),
    timestamp=st.integers(min_value=0, max_value=2**34),
    body=st.text(max_size=300),
)
def test_signatures_agree_with_the_reference_library(
    key: bytes, webhook_id: str, timestamp: int, body: str
) -> None:
    reference = standardwebhooks.Webhook(key).sign(
        webhook_id, datetime.fromtimestamp(timestamp, tz=UTC), body
    )
    assert signature_header([key], webhook_id, timestamp, body.encode()) == reference


@given(body=st.binary(max_size=200), flip=st.integers(min_value=0))
def test_any_changed_byte_fails_verification(body: bytes, flip: int) -> None:
    key = b"made-up-key"
    signed = parse_signed_headers(headers("msg_1", 100, signature_header([key], "msg_1", 100, body)))
    verify_signature(signed, body, [key])
    tampered = bytearray(body + b"x")
    tampered[flip % len(tampered)] ^= 0x01
    with pytest.raises(WebhookRejected):
        verify_signature(signed, bytes(tampered), [key])


def test_any_active_key_and_any_v1_entry_passes() -> None:
    old, new = b"old-key", b"new-key"
    body = b"{}"
    signed_by_new = parse_signed_headers(
        headers(
            "msg_1",
            100,
            "v2,AAAA "
            + signature_header([b"unrelated"], "msg_1", 100, body)
            + " "
            + signature_header([new], "msg_1", 100, body),
        )
    )
    verify_signature(signed_by_new, body, [old, new])
    with pytest.raises(WebhookRejected) as rejected:
        verify_signature(signed_by_new, body, [old])
    assert rejected.value.reason is Rejection.SIGNATURE_MISMATCH


def test_header_names_are_case_insensitive() -> None:
    signed = parse_signed_headers(
        {"Webhook-Id": "msg_1", "WEBHOOK-TIMESTAMP": "5", "webhook-Signature": "v1,AAAA"}
    )
    assert (signed.webhook_id, signed.timestamp, signed.signatures) == ("msg_1", 5, (b"\x00\x00\x00",))


@pytest.mark.parametrize(
    ("given_headers", "reason"),
    [
        ({}, Rejection.MISSING_HEADER),
        (headers("msg_1", 5, ""), Rejection.MISSING_HEADER),
        ({"webhook-id": "msg_1", "webhook-timestamp": "5"}, Rejection.MISSING_HEADER),
        (headers("msg 1", 5, "v1,AAAA"), Rejection.MALFORMED_HEADER),
        (headers("m" * 256, 5, "v1,AAAA"), Rejection.MALFORMED_HEADER),
        (headers("msg_é", 5, "v1,AAAA"), Rejection.MALFORMED_HEADER),
        (headers("msg_1", "5.5", "v1,AAAA"), Rejection.MALFORMED_HEADER),
        (headers("msg_1", "-5", "v1,AAAA"), Rejection.MALFORMED_HEADER),
        (headers("msg_1", "soon", "v1,AAAA"), Rejection.MALFORMED_HEADER),
        (headers("msg_1", "1" * 13, "v1,AAAA"), Rejection.MALFORMED_HEADER),
        (headers("msg_1", 5, "v1AAAA"), Rejection.MALFORMED_HEADER),
        (headers("msg_1", 5, "v1,"), Rejection.MALFORMED_HEADER),
        (headers("msg_1", 5, ",AAAA"), Rejection.MALFORMED_HEADER),
        (headers("msg_1", 5, "v1,not base64!"), Rejection.MALFORMED_HEADER),
        (headers("msg_1", 5, "v1,AAA"), Rejection.MALFORMED_HEADER),
        (
            headers("msg_1", 5, " ".join(["v1,AAAA"] * (MAX_SIGNATURE_ENTRIES + 1))),
            Rejection.MALFORMED_HEADER,
        ),
    ],
)
def test_missing_or_malformed_headers_are_refused_before_any_hmac(
    given_headers: dict[str, str], reason: Rejection
) -> None:
    with pytest.raises(WebhookRejected) as rejected:
        parse_signed_headers(given_headers)
    assert rejected.value.reason is reason


def test_only_other_versions_is_wellformed_but_matches_nothing() -> None:
    signed = parse_signed_headers(headers("msg_1", 5, "v1a,AAAA v2,BBBB"))
    assert signed.signatures == ()
    with pytest.raises(WebhookRejected) as rejected:
        verify_signature(signed, b"", [b"key"])
    assert rejected.value.reason is Rejection.SIGNATURE_MISMATCH


@pytest.mark.parametrize(
    ("offset", "accepted"), [(0, True), (180, True), (-180, True), (181, False), (-181, False)]
)
def test_timestamp_window_is_symmetric(offset: int, accepted: bool) -> None:
    now = 1_790_000_000
    if accepted:
        check_timestamp(now + offset, now=now, tolerance_seconds=180)
    else:
        with pytest.raises(WebhookRejected):
            check_timestamp(now + offset, now=now, tolerance_seconds=180)
