"""Moment-style identifiers: a prefix and random letters and digits, e.g. `bcus_H4jp6KnU5cPw263v1jyz4`."""

from __future__ import annotations

import secrets
import string

ALPHANUMERIC = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 21) -> str:
    return prefix + "".join(secrets.choice(ALPHANUMERIC) for _ in range(length))
