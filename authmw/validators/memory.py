"""A validator backed by a dict: the test and development default."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .._hashing import token_digest
from ..errors import InvalidToken
from ..identity import Identity
from .base import RevocationListener

__all__ = ["InMemoryValidator"]


class InMemoryValidator:
    """Maps tokens to identities, honouring each identity's ``expires_at``.

    Tokens are held only as SHA-256 digests. ``revoke`` takes effect at once,
    including in a cache that wraps this validator in the same process.
    """

    def __init__(
        self,
        tokens: dict[str, Identity] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        leeway: float = 0.0,
    ) -> None:
        self._by_digest: dict[bytes, Identity] = {}
        self._lock = threading.Lock()
        self._listeners: list[RevocationListener] = []
        self._clock = clock
        self._leeway = leeway
        for token, identity in (tokens or {}).items():
            self.add(token, identity)

    def add(self, token: str, identity: Identity) -> None:
        """Make ``token`` valid for ``identity``."""
        if not token:
            raise ValueError("token must be a non-empty string")
        with self._lock:
            self._by_digest[token_digest(token)] = identity

    def revoke(self, token: str) -> bool:
        """Make ``token`` invalid from now on; True if it was known."""
        with self._lock:
            identity = self._by_digest.pop(token_digest(token), None)
        if identity is None:
            return False
        audit_id = identity.audit_ids[0] if identity.audit_ids else None
        for listener in list(self._listeners):
            listener(audit_id)
        return True

    def add_revocation_listener(self, listener: RevocationListener) -> None:
        """Register a callback run after each revocation (used by caches)."""
        self._listeners.append(listener)

    def __len__(self) -> int:
        return len(self._by_digest)

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        """Return the identity for ``token`` or raise :class:`InvalidToken`."""
        identity = self._by_digest.get(token_digest(token))
        if identity is None:
            raise InvalidToken("unknown token")
        if not allow_expired and identity.is_expired(self._clock(), self._leeway):
            raise InvalidToken("token expired")
        return identity

    async def avalidate(self, token: str, *, allow_expired: bool = False) -> Identity:
        """Same as :meth:`validate`; never blocks, so no thread hop."""
        return self.validate(token, allow_expired=allow_expired)
