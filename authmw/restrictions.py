"""Limits a token carries with it, checked on every request (cache hits included).

A validator may return an :class:`~authmw.Identity` with ``restrictions``:
a mapping from a restriction kind to its data (plain JSON-like values, so
the limits survive the shared cache). The pipeline asks :func:`refusal`
about every request once the token is known to be valid, so a restriction
holds whatever the app forgets and however the identity was found.

Kinds:

- ``"methods"``: the HTTP methods allowed (a read-only key: GET, HEAD, OPTIONS);
- ``"access_rules"``: a Keystone application credential's access rules
  (``{"service_type", "in_catalog", "rules": [{"service", "method", "path"}]}``,
  put there by :class:`~authmw.KeystoneValidator`), checked exactly as
  keystonemiddleware checks them: no ``service_type`` configured -> 401;
  ``identity`` + ``GET .../v3/auth/tokens`` -> allowed; the service type not
  in the token's catalog -> 401; a confirmed service token with the request
  -> allowed; else a rule must match the service type, the method (exactly)
  and the path (``*`` or ``{name}`` = one segment, ``**`` = anything) -> or 401.
  The path is ``SCRIPT_NAME`` + ``PATH_INFO`` (ASGI ``root_path`` + the
  path inside the app), percent-quoted as webob quotes it, as
  keystonemiddleware matches it.
- ``"ips"``, ``"idle"``: the client networks allowed and the idle deadline
  of a local store's API key (:mod:`authmw._key_restrictions`);

A kind this version does not know refuses every request (fail closed: a
newer writer of the token store may have added it).
"""

from __future__ import annotations

import functools
import logging
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

__all__ = ["CHECKS", "Refusal", "RequestFacts", "refusal"]

log = logging.getLogger("authmw.restrictions")

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestFacts(NamedTuple):
    """What a restriction may look at: the request, not its credentials."""

    method: str
    path: str
    """The path inside the app (``PATH_INFO``; ASGI ``path`` without ``root_path``)."""
    client: str | None
    """The client address (the connection's, or a trusted proxy's forwarded one)."""
    service_token: bool
    """True when a valid service token came with the request."""
    script_name: str = ""
    """Where the app is mounted (WSGI ``SCRIPT_NAME``; ASGI ``root_path``)."""
    request_id: str | None = None
    """The request's ``X-OpenStack-Request-ID`` or ``X-Request-Id`` (audit records)."""


class Refusal(NamedTuple):
    """A restriction's no: the status (401 or 403) and a message for the body and logs.

    ``reason`` names the rule in the logs (``read-only``, ``ip``, ``idle``);
    ``note`` says more there when the message must stay generic (a 401).
    """

    status: int
    message: str
    reason: str = ""
    note: str = ""


Check = Callable[[Any, RequestFacts], "Refusal | None"]


def _methods(allowed: Any, request: RequestFacts) -> Refusal | None:
    if request.method.upper() in allowed:
        return None
    reason = "read-only" if _SAFE_METHODS.issuperset(allowed) else "method"
    return Refusal(403, f"this token allows only {', '.join(allowed)} requests", reason)


# keystonemiddleware's message for every refused token (its 401 body says the same).
_NOT_AUTHENTICATED = "The request you have made requires authentication."
# What webob leaves unquoted in ``request.path``, the path keystonemiddleware matches.
_PATH_SAFE = "/~!$&'()*+,;=:@"
_GLOB_TOKEN = re.compile(
    r"(?P<tag>{[^}]*})|(?P<wild>\*(?=$|[^\*]))|(?P<rec_wild>\*\*)|(?P<literal>[^{}\*])"
)


@functools.lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str] | None:
    """keystonemiddleware's ``_path_matches`` pattern as a regex (None: not a valid one)."""
    regex = ""
    for match in _GLOB_TOKEN.finditer(pattern):
        if match["tag"] or match["wild"]:
            regex += r"[^\/]+"
        if match["rec_wild"]:
            regex += ".*"
        if match["literal"]:
            regex += match["literal"]  # not escaped: keystonemiddleware does not either
    try:
        return re.compile(f"^{regex}$")
    except re.error:
        return None  # keystonemiddleware fails the request; no rule matches here


def _quoted(path: str) -> str:
    """``path`` percent-quoted as webob's ``request.path`` is (WSGI paths are latin-1)."""
    try:
        raw = path.encode("latin-1")
    except UnicodeEncodeError:
        raw = path.encode("utf-8", "surrogateescape")
    return urllib.parse.quote(raw, safe=_PATH_SAFE)


def _access_rules(data: Any, request: RequestFacts) -> Refusal | None:
    refused = Refusal(401, _NOT_AUTHENTICATED)
    service_type = data.get("service_type")
    if not service_type:
        return refused
    path = _quoted(request.script_name) + _quoted(request.path)  # webob's request.path
    if service_type == "identity" and request.method == "GET" and path.endswith("/v3/auth/tokens"):
        return None  # a token can always be validated
    if not data.get("in_catalog"):
        return refused
    if request.service_token:
        return None  # a chain of service calls, not a user-facing request
    for rule in data.get("rules", ()):
        if rule.get("method") != request.method or rule.get("service") != service_type:
            continue
        pattern = rule.get("path")
        regex = _glob(pattern) if isinstance(pattern, str) else None
        if regex is not None and regex.match(path):
            return None
    return refused


CHECKS: dict[str, Check] = {"methods": _methods, "access_rules": _access_rules}
"""The check of each restriction kind."""


def refusal(
    restrictions: Mapping[str, Any], request: RequestFacts, token_id: str | None = None
) -> Refusal | None:
    """The first restriction that refuses ``request``, or None; ``token_id`` (the
    token's audit id, never the token) names the token in the log line."""
    for kind, data in restrictions.items():
        check = CHECKS.get(kind)
        if check is None:
            return Refusal(
                403, f"this token carries a restriction this service does not know ({kind})"
            )
        answer = check(data, request)
        if answer is not None:
            log.info(
                "refused token %s on %s %s (reason: %s): %s",
                token_id or "-",
                request.method,
                request.path,
                answer.reason or kind,
                answer.note or answer.message,
            )
            return answer
    return None


def _register_key_restrictions() -> None:
    from ._key_restrictions import CHECKS as KEY_CHECKS

    CHECKS.update(KEY_CHECKS)


_register_key_restrictions()
