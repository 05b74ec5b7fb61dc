"""Limits a token carries with it, checked on every request (cache hits included).

A validator may return an :class:`~authmw.Identity` with ``restrictions``:
a mapping from a restriction kind to its data (plain JSON-like values, so
the limits survive the shared cache). The pipeline asks :func:`refusal`
about every request once the token is known to be valid, so a restriction
holds whatever the app forgets and however the identity was found.

Kinds:

- ``"methods"``: the HTTP methods allowed (a read-only key: GET, HEAD, OPTIONS);

A kind this version does not know refuses every request (fail closed: a
newer writer of the token store may have added it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

__all__ = ["CHECKS", "Refusal", "RequestFacts", "refusal"]


class RequestFacts(NamedTuple):
    """What a restriction may look at: the request, not its credentials."""

    method: str
    path: str
    """The path inside the app (``PATH_INFO``; ASGI ``path`` without ``root_path``)."""
    client: str | None
    """The client address (the connection's, or a trusted proxy's forwarded one)."""
    service_token: bool
    """True when a valid service token came with the request."""


class Refusal(NamedTuple):
    """A restriction's no: the status (401 or 403) and a message for the logs and body."""

    status: int
    message: str


Check = Callable[[Any, RequestFacts], "Refusal | None"]


def _methods(allowed: Any, request: RequestFacts) -> Refusal | None:
    if request.method.upper() in allowed:
        return None
    return Refusal(403, f"this token allows only {', '.join(allowed)} requests")


CHECKS: dict[str, Check] = {"methods": _methods}
"""The check of each restriction kind."""


def refusal(restrictions: Mapping[str, Any], request: RequestFacts) -> Refusal | None:
    """The first restriction that refuses ``request``, or None."""
    for kind, data in restrictions.items():
        check = CHECKS.get(kind)
        if check is None:
            return Refusal(
                403, f"this token carries a restriction this service does not know ({kind})"
            )
        answer = check(data, request)
        if answer is not None:
            return answer
    return None
