"""Exceptions raised by authmw.

Hierarchy::

    AuthError
    ├── InvalidToken                 the token is definitely not valid (-> 401)
    │   └── ScopeMismatch            valid token, wrong FIWARE service scope (-> 401)
    ├── IdentityServiceUnavailable   could not find out (network, timeout, 5xx) (-> 503)
    ├── NotAuthenticated             a policy check found no identity (-> 401)
    ├── Forbidden                    authenticated, but not allowed (-> 403)
    └── ConfigurationError           bad option at start-up (also a ValueError)
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigurationError",
    "Forbidden",
    "IdentityServiceUnavailable",
    "InvalidToken",
    "NotAuthenticated",
    "ScopeMismatch",
]


class AuthError(Exception):
    """Base class of every exception authmw raises on purpose."""


class InvalidToken(AuthError):
    """The identity service gave a definitive answer: this token is not valid."""


class ScopeMismatch(InvalidToken):
    """The token is valid but does not match the FIWARE service headers."""


class IdentityServiceUnavailable(AuthError):
    """The validator could not find out whether the token is valid."""


class NotAuthenticated(AuthError):
    """An access check ran without an authenticated identity."""


class Forbidden(AuthError):
    """The identity is authenticated but the access rule denies the request."""


class ConfigurationError(AuthError, ValueError):
    """An option has a wrong value; raised at start-up, naming the option."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
