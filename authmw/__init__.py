"""authmw: X-Auth-Token authentication middleware for WSGI and ASGI apps."""

from __future__ import annotations

from .asgi import ASGIAuthMiddleware
from .cache import CachedValidator
from .core import AuthCore, Decision, Rejection, error_body
from .errors import (
    AuthError,
    ConfigurationError,
    Forbidden,
    IdentityServiceUnavailable,
    InvalidToken,
    NotAuthenticated,
    ScopeMismatch,
)
from .identity import Identity
from .paste import filter_factory
from .resilience import CircuitBreaker, GuardedValidator
from .store import IssuedToken, LocalTokenStore, TokenRecord
from .throttle import Throttle
from .validators.base import AsyncValidator, Validator
from .validators.chain import ChainValidator
from .validators.introspection import HTTPIntrospectionValidator, IntrospectionMapping
from .validators.jwt import ClaimMapping, Issuer, JWTValidator
from .validators.keystone import KeystoneValidator
from .validators.keystone_v2 import KeystoneV2Validator
from .validators.memory import InMemoryValidator
from .wsgi import WSGIAuthMiddleware

__version__ = "0.1.0"

__all__ = [
    "ASGIAuthMiddleware",
    "AsyncValidator",
    "AuthCore",
    "AuthError",
    "CachedValidator",
    "ChainValidator",
    "CircuitBreaker",
    "ClaimMapping",
    "ConfigurationError",
    "Decision",
    "Forbidden",
    "GuardedValidator",
    "HTTPIntrospectionValidator",
    "Identity",
    "IdentityServiceUnavailable",
    "InMemoryValidator",
    "IntrospectionMapping",
    "InvalidToken",
    "IssuedToken",
    "Issuer",
    "JWTValidator",
    "KeystoneV2Validator",
    "KeystoneValidator",
    "LocalTokenStore",
    "NotAuthenticated",
    "Rejection",
    "ScopeMismatch",
    "Throttle",
    "TokenRecord",
    "Validator",
    "WSGIAuthMiddleware",
    "__version__",
    "error_body",
    "filter_factory",
]
