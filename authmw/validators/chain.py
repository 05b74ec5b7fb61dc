"""Several validators behind one: route by token prefix, or try in order.

::

    ChainValidator(routes={"amw_": LocalTokenStore(...)}, fallback=[KeystoneValidator(...)])

A token starting with a route's prefix goes to that validator and no other:
an ``amw_`` token never costs a Keystone call, a Keystone token never a
database query. Other tokens go through ``fallback`` in order; a definite
:class:`~authmw.InvalidToken` lets the next one try, but an outage
(:class:`~authmw.IdentityServiceUnavailable`) stops the chain: a token is
never accepted by a weaker validator because the stronger one was down.

Under :class:`~authmw.AuthCore` each member gets its own circuit breaker
and concurrency bound (an outage of Keystone does not open the breaker for
local tokens); the in-process cache, coalescing and the negative cache sit
in front of the whole chain, keyed by token as always.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import _checks
from ..errors import ConfigurationError, InvalidToken
from ..identity import Identity
from .base import RevocationListener, Validator, validate_async

__all__ = ["ChainValidator"]


def _validator(option: str, value: Any) -> Validator:
    if not callable(getattr(value, "validate", None)):
        raise ConfigurationError(option, f"must have a validate(token) method, got {value!r}")
    return value  # type: ignore[no-any-return]


class ChainValidator:
    """Routes each token to one validator by prefix, else tries ``fallback`` in order."""

    @_checks.checked_keywords
    def __init__(
        self,
        routes: Mapping[str, Validator] | None = None,
        fallback: Validator | Sequence[Validator] = (),
    ) -> None:
        routes = dict(routes or {})
        for prefix in routes:
            if not isinstance(prefix, str) or not prefix or not prefix.isprintable():
                raise ConfigurationError(
                    "routes", f"a prefix must be printable text, got {prefix!r}"
                )
        self.routes = {prefix: _validator(f"routes[{prefix!r}]", v) for prefix, v in routes.items()}
        if callable(getattr(fallback, "validate", None)):
            fallback = [fallback]  # type: ignore[list-item]
        if not isinstance(fallback, Sequence):
            raise ConfigurationError("fallback", f"must be a validator or a list, got {fallback!r}")
        self.fallback = tuple(_validator("fallback", v) for v in fallback)
        if not self.routes and not self.fallback:
            raise ConfigurationError("routes", "a chain needs at least one validator")
        # Longest prefix first: "amw_live_" wins over "amw_".
        self._prefixes = sorted(self.routes, key=len, reverse=True)

    @property
    def members(self) -> tuple[Validator, ...]:
        """Every validator of the chain, each once."""
        seen: dict[int, Validator] = {}
        for validator in (*self.routes.values(), *self.fallback):
            seen.setdefault(id(validator), validator)
        return tuple(seen.values())

    def with_members(self, wrap: Callable[[Validator], Validator]) -> ChainValidator:
        """The same chain with each member replaced by ``wrap(member)`` (one wrap per member)."""
        wrapped = {id(member): wrap(member) for member in self.members}
        return ChainValidator(
            {prefix: wrapped[id(v)] for prefix, v in self.routes.items()},
            [wrapped[id(v)] for v in self.fallback],
        )

    def _candidates(self, token: str) -> tuple[Validator, ...]:
        for prefix in self._prefixes:
            if token.startswith(prefix):
                return (self.routes[prefix],)
        return self.fallback

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        """The identity from the first validator that knows ``token``."""
        for validator in self._candidates(token):
            try:
                return validator.validate(token, allow_expired=allow_expired)
            except InvalidToken:
                continue  # an outage is not caught: it stops the chain
        raise InvalidToken("no validator of the chain knows this token")

    async def avalidate(self, token: str, *, allow_expired: bool = False) -> Identity:
        """Awaitable :meth:`validate`."""
        for validator in self._candidates(token):
            try:
                return await validate_async(validator, token, allow_expired=allow_expired)
            except InvalidToken:
                continue
        raise InvalidToken("no validator of the chain knows this token")

    def close(self) -> None:
        """Close every member that has a ``close``."""
        for member in self.members:
            close: Any = getattr(member, "close", None)
            if close is not None:
                close()

    async def aclose(self) -> None:
        """Close every member's async resources."""
        for member in self.members:
            aclose: Any = getattr(member, "aclose", None)
            if aclose is not None:
                await aclose()

    def add_revocation_listener(self, listener: RevocationListener) -> None:
        """Revocations from any member (a local store's revoke) reach ``listener``."""
        for member in self.members:
            listen = getattr(member, "add_revocation_listener", None)
            if listen is not None:
                listen(listener)
