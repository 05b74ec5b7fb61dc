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
from .keystone_v3 import (
    KeystoneV3ApplicationCredential,
    KeystoneV3Auth,
    KeystoneV3Password,
    KeystoneV3Token,
    keystone_v3_url,
)

__all__ = [
    "AcquiredToken",
    "AuthenticationFailed",
    "KeystoneV3ApplicationCredential",
    "KeystoneV3Auth",
    "KeystoneV3Password",
    "KeystoneV3Token",
    "StaticToken",
    "TokenAuth",
    "TokenFlow",
    "install_log_redaction",
    "keystone_v3_url",
    "parse_timestamp",
]
