"""The IAM authorizer of the HTTP API, locally: a SigV4 signature checked as API Gateway checks it.

On with LOCAL_REQUIRE_SIGV4=1 (off by default, so `curl` works as the README shows). A request to a
route the template marks `Authorizer: AWS_IAM` is refused 403 unless its `Authorization` header is
an AWS4-HMAC-SHA256 signature, for service `execute-api` in the stack's region, by a known access
key, made within 5 minutes of now, over exactly this method, path, query, signed headers and body.
The signature is recomputed with botocore's own signer, from the request as it arrived. The local
stack knows one access key, the made-up one moto takes (local_stack.made_up_values); AWS checks
the caller's IAM policy as well, which has no local counterpart.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

MAX_SKEW_SECONDS = 5 * 60  # API Gateway's limit
SERVICE = "execute-api"
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/"
    r"(?P<service>[^/,\s]+)/aws4_request,\s*SignedHeaders=(?P<headers>[a-z0-9;\-]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})"
)


@dataclass(frozen=True)
class SigV4Check:
    region: str
    secrets: Mapping[str, str]  # access key id -> secret access key
    clock: Callable[[], float] = time.time

    def refusal(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> str | None:
        """Why API Gateway would answer 403, or None when the signature holds."""
        found = _AUTHORIZATION.fullmatch(headers.get("authorization", "").strip())
        if found is None:
            return "missing or malformed AWS4-HMAC-SHA256 Authorization header"
        if found["service"] != SERVICE:
            return f"signed for service {found['service']!r}, not {SERVICE!r}"
        if found["region"] != self.region:
            return f"signed for region {found['region']!r}, not {self.region!r}"
        secret = self.secrets.get(found["key"])
        if secret is None:
            return "unknown access key"
        amz_date = headers.get("x-amz-date", "")
        try:
            signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
        except ValueError:
            return "missing or malformed X-Amz-Date"
        if abs(self.clock() - signed_at) > MAX_SKEW_SECONDS:
            return "signature expired: X-Amz-Date is more than 5 minutes from now"
        if not amz_date.startswith(found["date"]):
            return "the credential's date is not X-Amz-Date's"
        signed = found["headers"].split(";")
        if "host" not in signed or any(name not in headers for name in signed):
            return "a signed header is missing, or host is not signed"
        expected = _signature(
            method,
            target,
            {name: headers[name] for name in signed},
            body,
            found["key"],
            secret,
            self.region,
            amz_date,
        )
        if not hmac.compare_digest(expected, found["signature"]):
            return "the signature does not match this request"
        return None


def _signature(
    method: str,
    target: str,
    signed_headers: Mapping[str, str],
    body: bytes,
    access_key: str,
    secret: str,
    region: str,
    amz_date: str,
) -> str:
    from botocore.auth import SigV4Auth  # noqa: PLC0415 -- only when the check is on
    from botocore.awsrequest import AWSRequest  # noqa: PLC0415
    from botocore.credentials import Credentials  # noqa: PLC0415

    token = signed_headers.get("x-amz-security-token")
    request = AWSRequest(
        method=method, url=f"http://{signed_headers['host']}{target}", data=body, headers=dict(signed_headers)
    )
    signer = SigV4Auth(Credentials(access_key, secret, token), SERVICE, region)
    request.context["timestamp"] = amz_date
    canonical = signer.canonical_request(request)
    return str(signer.signature(signer.string_to_sign(request, canonical), request))
