"""Token acquisition for outgoing calls: :class:`httpx.Auth` classes that obtain and renew tokens.

The same classes give the validators their service identity.
"""

from __future__ import annotations

from ._base import (
    AcquiredToken,
    AuthenticationFailed,
    StaticToken,
    TokenAuth,
    TokenFlow,
    install_log_redaction,
    parse_timestamp,
)

__all__ = [
    "AcquiredToken",
    "AuthenticationFailed",
    "StaticToken",
    "TokenAuth",
    "TokenFlow",
    "install_log_redaction",
    "parse_timestamp",
]
