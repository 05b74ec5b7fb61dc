"""The validator protocol, and the glue that runs blocking validators off the event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import threading
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from .. import _fork
from ..identity import Identity

__all__ = [
    "AsyncValidator",
    "Revocation",
    "RevocationListener",
    "RevocationMatcher",
    "Validator",
    "ValidatorWrapper",
    "blocking_executor",
    "revokes",
    "run_blocking",
    "validate_async",
]


@runtime_checkable
class RevocationMatcher(Protocol):
    """A revocation naming tokens by what they are (a Keystone revocation event)."""

    def matches(self, identity: Identity) -> bool: ...


Revocation = str | None | RevocationMatcher
"""What a revocation names: a token's audit id, every token (None), or a matcher."""

RevocationListener = Callable[[Revocation], None]
"""Called with each revocation (see :data:`Revocation`)."""


def revokes(revocation: Revocation, identity: Identity) -> bool:
    """True if ``revocation`` concerns the token behind ``identity``."""
    if revocation is None:
        return True
    if isinstance(revocation, str):
        return revocation in identity.audit_ids
    return revocation.matches(identity)


@runtime_checkable
class Validator(Protocol):
    """Checks one token.

    ``validate`` returns the caller's :class:`~authmw.Identity`, raises
    :class:`~authmw.InvalidToken` when the token is definitely not valid and
    :class:`~authmw.IdentityServiceUnavailable` when it could not find out.
    ``allow_expired`` is set only for a user token that comes with a valid
    service token (Keystone's composite authentication).
    """

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity: ...


@runtime_checkable
class AsyncValidator(Validator, Protocol):
    """A validator that also has a native awaitable form."""

    async def avalidate(self, token: str, *, allow_expired: bool = False) -> Identity: ...


_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # The parent's pool has no threads here, and counts its idle ones: it would
    # never start one (see authmw._fork). A new pool on first use.
    global _executor, _executor_lock
    _executor, _executor_lock = None, threading.Lock()


_fork.call_after_fork(_after_fork_in_child)


def blocking_executor() -> concurrent.futures.ThreadPoolExecutor:
    """authmw's worker threads for blocking validations."""
    return _blocking_executor()


def _blocking_executor() -> concurrent.futures.ThreadPoolExecutor:
    # A pool of our own: the loop's default pool is shared with the app's
    # sync endpoints, and a slow identity service must not starve them.
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=16, thread_name_prefix="authmw-validate"
            )
        return _executor


async def run_blocking(func: Callable[[], Identity]) -> Identity:
    """Run a blocking validation in authmw's worker threads, keeping context vars."""
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    return await loop.run_in_executor(_blocking_executor(), ctx.run, func)


async def validate_async(
    validator: Validator, token: str, *, allow_expired: bool = False
) -> Identity:
    """Await ``validator`` natively if it can, else in a worker thread."""
    avalidate = getattr(validator, "avalidate", None)
    if avalidate is not None:
        result: Identity = await avalidate(token, allow_expired=allow_expired)
        return result
    return await run_blocking(
        functools.partial(validator.validate, token, allow_expired=allow_expired)
    )


class ValidatorWrapper:
    """Base of validators that wrap another one (cache, guard): lifecycle pass-through."""

    validator: Validator

    def close(self) -> None:
        """Close the wrapped validator if it has a ``close``."""
        close: Any = getattr(self.validator, "close", None)
        if close is not None:
            close()

    async def aclose(self) -> None:
        """Close the wrapped validator's async resources if it has ``aclose``."""
        aclose: Any = getattr(self.validator, "aclose", None)
        if aclose is not None:
            await aclose()

    def add_revocation_listener(self, listener: RevocationListener) -> None:
        """Pass revocation listeners through to the wrapped validator."""
        listen = getattr(self.validator, "add_revocation_listener", None)
        if listen is not None:
            listen(listener)
