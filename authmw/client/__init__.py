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
from .acquire import EpochUnit, TokenAcquireAuth, parse_epoch
from .keystone_v2 import KeystoneV2Auth, MultiFactorRequired, keystone_v2_url
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
    "EpochUnit",
    "KeystoneV2Auth",
    "KeystoneV3ApplicationCredential",
    "KeystoneV3Auth",
    "KeystoneV3Password",
    "KeystoneV3Token",
    "MultiFactorRequired",
    "StaticToken",
    "TokenAcquireAuth",
    "TokenAuth",
    "TokenFlow",
    "install_log_redaction",
    "keystone_v2_url",
    "keystone_v3_url",
    "parse_epoch",
    "parse_timestamp",
]
