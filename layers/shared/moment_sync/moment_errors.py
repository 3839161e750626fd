"""What the Moment client raises: one typed error per way a call to Moment's Billing API can end badly.

    MomentError                      anything the client raises
    ├── MomentKeyRefused             the API key does not suit this environment (at construction)
    ├── MomentNotOurs                Moment's object under this reference is not the ledger's to adopt
    │   └── MomentBillDiffers        our bill's reference, another owner, amount or currency
    └── MomentApiError               a request failed; carries method, path, status, problem details
        ├── MomentRequestRejected    a 4xx Moment will refuse again if asked again (never retried)
        │   ├── MomentNotFound       404
        │   └── MomentConflict       409: the object exists already, or the idempotency key was reused
        ├── MomentUnavailable        5xx or a network error, still failing after the retries
        │   ├── MomentRateLimited    429, still throttled after the retries
        │   └── MomentOutOfTime      the run's time budget would end before the next attempt could
        └── MomentResponseInvalid    Moment answered, but not with what its documentation promises

Every message is one line and never contains the API key: the client redacts it before it gets here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REDACTED = "[redacted]"
_MAX_MESSAGE_CHARS = 600


@dataclass(frozen=True, slots=True)
class ProblemDetails:
    """An RFC 9457 problem document, as Moment sends with every error (each member may be absent)."""

    type: str | None = None
    title: str | None = None
    status: int | None = None
    detail: str | None = None
    instance: str | None = None

    @classmethod
    def from_document(cls, document: Any) -> ProblemDetails | None:
        """The members present with the right type; None when the body is not a problem document."""
        if not isinstance(document, dict):
            return None
        problem = cls(
            type=_text_member(document, "type"),
            title=_text_member(document, "title"),
            status=_status_member(document),
            detail=_text_member(document, "detail"),
            instance=_text_member(document, "instance"),
        )
        return None if problem == cls() else problem

    def redacted(self, secret: str) -> ProblemDetails:
        """A copy with every occurrence of `secret` blanked out of its texts."""

        def clean(text: str | None) -> str | None:
            return text.replace(secret, REDACTED) if text else text

        return ProblemDetails(
            clean(self.type), clean(self.title), self.status, clean(self.detail), clean(self.instance)
        )


def _text_member(document: dict[str, Any], name: str) -> str | None:
    value = document.get(name)
    return value if isinstance(value, str) else None


def _status_member(document: dict[str, Any]) -> int | None:
    value = document.get("status")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class MomentError(Exception):
    """Base of every error the Moment client raises."""


class MomentKeyRefused(MomentError):
    """The API key is refused before any request: live outside prod, test in prod, or no secret key."""


class MomentNotOurs(MomentError):
    """Moment holds an object under the ledger's reference that is not the ledger's: its
    external_reference differs (the reference was read as another object's Moment id), or an account
    belongs to another customer. Adopting it would push a balance onto someone else's object."""


class MomentBillDiffers(MomentNotOurs):
    """Moment holds a bill under the ledger's reference whose owner, amount_due or currency differ from
    the ledger's bill: adopting it would record the ledger's payments against another debt."""


class MomentApiError(MomentError):
    """A request to Moment failed. `replayed` is True when Moment replayed a stored response for this
    idempotency key: the same key will keep returning it for 24 hours, so look the object up by its
    reference and, if it does not exist, create it under a new key generation. `may_have_reached` is
    False only when no attempt can have been carried out by Moment: each failed before the request was
    sent (no connection) or was refused by Moment (a 4xx, including 429); a timeout or a lost
    connection after sending, or a 5xx, may have been applied."""

    def __init__(
        self,
        *,
        method: str,
        path: str,
        status: int | None,
        problem: ProblemDetails | None = None,
        reason: str = "",
        replayed: bool = False,
        idempotency_key: str | None = None,
        attempts: int = 1,
        may_have_reached: bool = True,
    ) -> None:
        self.may_have_reached = may_have_reached
        self.method = method
        self.path = path
        self.status = status
        self.problem = problem
        self.reason = reason
        self.replayed = replayed
        self.idempotency_key = idempotency_key
        self.attempts = attempts
        super().__init__(self._message())

    def _message(self) -> str:
        outcome = f"answered {self.status}" if self.status is not None else "got no answer"
        parts = [f"Moment {self.method} {self.path} {outcome}"]
        if self.problem and self.problem.title:
            parts.append(self.problem.title)
        if self.problem and self.problem.detail:
            parts.append(self.problem.detail)
        elif self.reason:
            parts.append(self.reason)
        message = ": ".join(parts)
        if self.replayed:
            message += " (replayed by Moment for this idempotency key)"
        if self.attempts > 1:
            message += f" after {self.attempts} attempts"
        return _one_line(message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class MomentRequestRejected(MomentApiError):
    """A 4xx other than 429: the request itself is wrong (or unauthorised), so it is never retried."""


class MomentNotFound(MomentRequestRejected):
    """404: no object has that Moment id or external_reference."""


class MomentConflict(MomentRequestRejected):
    """409: typically the external_reference exists already; adopt that object by its reference."""


class MomentUnavailable(MomentApiError):
    """A 5xx or a network error (`status` is None) that outlasted the retries; try again on a later run."""


class MomentRateLimited(MomentUnavailable):
    """429 that outlasted the retries (and any Retry-After Moment sent). `retry_after`: the seconds the
    last 429 asked for (None without a readable Retry-After); every pusher worker backs off that long."""

    retry_after: float | None = None


class MomentOutOfTime(MomentUnavailable):
    """The run's time budget would end before the next attempt (or the pause before it) could: that
    attempt was not sent. Earlier attempts of the same call may have reached Moment (`may_have_reached`)."""


class MomentResponseInvalid(MomentApiError):
    """Moment's answer is not what its documentation promises (not JSON, a wrong type, a missing field)."""


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_MESSAGE_CHARS else flat[: _MAX_MESSAGE_CHARS - 1] + "…"
