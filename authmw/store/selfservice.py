"""A self-service HTTP API for the local store's tokens, behind authmw's middleware.

Callers authenticated by authmw list, issue, rotate and revoke their own
tokens; managing other users' tokens is a policy rule. Mount it behind
the middleware (it reads ``environ``/``scope["authmw.identity"]``)::

    service = TokenService(store)
    # WSGI (Flask: DispatcherMiddleware; any WSGI server):
    app = WSGIAuthMiddleware(DispatcherMiddleware(flask_app, {"/tokens": service.wsgi}), store)
    # ASGI (Starlette, FastAPI): app.mount("/tokens", service.asgi) behind ASGIAuthMiddleware
    # Django: authmw.contrib.django_tokens.urls(service)

Routes (inside the mount point), JSON in and out:

- ``GET /``: the caller's tokens (``?all=1``: also revoked and expired;
  ``?user=ID``: another user's, those the policy lets the caller manage);
- ``POST /``: issue ``{"description", "roles", "scopes", "ttl",
  "read_only", "allowed_ips", "idle_ttl", "user_id", "user_name"}`` (all
  optional; ``user_*`` for another user). 201 with the secret, once;
- ``GET /ID``, ``DELETE /ID`` (revoke), ``POST /ID/rotate`` ``{"grace"}``.

A new or rotated token never holds more than the caller's own token
(roles, scopes, lifetime, restrictions): see :mod:`authmw.store._grants`.
Rules (defaults in :data:`RULES`): ``authmw:tokens:manage_own`` (target:
the caller) and ``authmw:tokens:manage_others`` (target: the token's
``user_id``, ``user_domain_id``, ``project_id``, ``domain_id``). A token
the caller may not manage is answered 404, as one that does not exist.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from ..errors import ConfigurationError, Forbidden, IdentityServiceUnavailable, NotAuthenticated
from ..headers import IDENTITY_KEY, RESPONSES_KEY
from ..identity import Identity
from ..policy import Policy, RuleText
from ..responses import DEFAULT_RESPONSES, Responses, error_body
from ..validators.base import _blocking_executor
from ._grants import Escalation, check_record, grant, lifetime
from ._records import TokenRecord
from ._store import LocalTokenStore

__all__ = ["RULES", "Answer", "TokenService"]

log = logging.getLogger("authmw.store")

RULES: Mapping[str, RuleText] = {
    "authmw:tokens:manage_own": "",
    "authmw:tokens:manage_others": "role:admin and project_id:%(project_id)s",
}
"""Default rules: anyone authenticated manages their own tokens; an admin of a
project manages the tokens scoped to that project."""

_MAX_BODY = 64 * 1024
_NO_STORE = (("Cache-Control", "no-store"),)

Answer = tuple[int, tuple[tuple[str, str], ...], bytes]
"""Status, headers, body."""


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class TokenService:
    """The self-service API on ``store``; ``policy`` adds to or overrides :data:`RULES`.

    ``default_ttl``: the lifetime of a token issued without ``ttl`` (30 days,
    never beyond the caller's own token).
    """

    def __init__(
        self,
        store: LocalTokenStore,
        *,
        policy: Policy | Mapping[str, RuleText] | None = None,
        default_ttl: float = 30 * 86400.0,
    ) -> None:
        if not isinstance(store, LocalTokenStore):
            raise ConfigurationError("store", f"must be a LocalTokenStore, got {store!r}")
        if isinstance(policy, Policy):
            absent = [name for name in RULES if name not in policy]
            if absent:
                raise ConfigurationError("policy", f"lacks the rules {', '.join(absent)}")
            self.policy = policy
        else:
            self.policy = Policy(dict(policy or {}), defaults=RULES)
        self.store = store
        self.default_ttl = float(default_ttl)

    # -- the API ---------------------------------------------------------------
    def handle(
        self,
        method: str,
        path: str,
        query: str,
        body: bytes,
        identity: Identity | None,
        responses: Responses = DEFAULT_RESPONSES,
    ) -> Answer:
        """Answer one request: JSON, or authmw's own 401/403/503 bodies."""
        try:
            if identity is None:
                raise NotAuthenticated()
            status, data = self._route(method.upper(), path, query, body, identity)
        except (NotAuthenticated, Forbidden, IdentityServiceUnavailable) as exc:
            rejection = responses.for_error(exc)
            return rejection.status, rejection.headers, rejection.body
        except _Refused as exc:
            payload = error_body(exc.status, str(exc))
            return exc.status, (("Content-Type", "application/json"),), payload
        content = b"" if data is None else json.dumps(data).encode()
        headers = (("Content-Type", "application/json"), *_NO_STORE) if content else _NO_STORE
        return status, headers, content

    def _route(
        self, method: str, path: str, query: str, body: bytes, caller: Identity
    ) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if not parts:
            if method == "GET":
                return 200, self._list(caller, parse_qs(query))
            if method == "POST":
                return 201, self._issue(caller, _json(body))
            raise _Refused(405, "use GET or POST")
        record = self._record(caller, parts[0])
        if len(parts) == 1 and method == "GET":
            return 200, record.to_dict()
        if len(parts) == 1 and method == "DELETE":
            self.store.revoke(record.id)
            return 204, None
        if parts[1:] == ["rotate"] and method == "POST":
            return 200, self._rotate(caller, record, _json(body))
        raise _Refused(405 if len(parts) <= 2 else 404, "no such route")

    def _may(self, caller: Identity, record: TokenRecord | None, user_id: str) -> bool:
        # Tokens issued here for a caller without a user domain get the default one.
        own = user_id == caller.user_id and (
            record is None
            or (record.user_domain_id or "default") == (caller.user_domain_id or "default")
        )
        if own:
            return self.policy.enforce("authmw:tokens:manage_own", caller, _target(caller))
        target = (
            _target(record)
            if record is not None
            else {"user_id": user_id, "project_id": caller.project_id}
        )
        return self.policy.enforce("authmw:tokens:manage_others", caller, target)

    def _record(self, caller: Identity, token_id: str) -> TokenRecord:
        record = self.store.get(token_id)
        if record is None or not self._may(caller, record, record.user_id):
            raise _Refused(404, "no such token")
        return record

    def _list(self, caller: Identity, query: Mapping[str, list[str]]) -> list[dict[str, Any]]:
        user = (query.get("user") or [caller.user_id])[-1]
        everything = (query.get("all") or ["0"])[-1] in ("1", "true", "yes")
        if not self._may(caller, None, user):
            raise Forbidden(
                "not allowed to manage "
                + ("your tokens" if user == caller.user_id else "that user's tokens")
            )
        records = self.store.list_tokens(user=user, include_inactive=everything)
        return [r.to_dict() for r in records if self._may(caller, r, r.user_id)]

    def _issue(self, caller: Identity, request: Mapping[str, Any]) -> dict[str, Any]:
        now = self.store.clock()
        user_id = request.get("user_id", caller.user_id)
        if not isinstance(user_id, str) or not user_id:
            raise _Refused(400, "user_id: a non-empty string")
        if not self._may(caller, None, user_id):
            raise Forbidden("not allowed to issue tokens for that user")
        try:
            granted = grant(caller, request, now)
            ttl = lifetime(caller, request, self.default_ttl, now)
            user_name = caller.user_name if user_id == caller.user_id else request.get("user_name")
            issued = self.store.issue(
                user_id=user_id,
                user_name=user_name,
                user_domain_id=caller.user_domain_id,
                user_domain_name=caller.user_domain_name,
                project_id=caller.project_id,
                project_name=caller.project_name,
                project_domain_id=caller.project_domain_id if caller.project_id else None,
                project_domain_name=caller.project_domain_name if caller.project_id else None,
                domain_id=None if caller.project_id else caller.domain_id,
                domain_name=None if caller.project_id else caller.domain_name,
                system_scope=caller.system_scope,
                description=request.get("description", ""),
                ttl=ttl,
                **granted,
            )
        except Escalation as exc:
            raise _Refused(403, str(exc)) from None
        except (ValueError, TypeError) as exc:
            status = 403 if str(exc).startswith("policy") or "(policy)" in str(exc) else 400
            raise _Refused(status, str(exc)) from None
        log.info("token %s issued through the API by %s", issued.id, caller.user_id)
        return {"token": issued.token, "record": issued.record.to_dict()}

    def _rotate(
        self, caller: Identity, record: TokenRecord, request: Mapping[str, Any]
    ) -> dict[str, Any]:
        grace = request.get("grace", 0)
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
            raise _Refused(400, "grace: seconds, 0 or more")
        try:
            check_record(caller, record, self.store.policy.max_lifetime)
            rotated = self.store.rotate(record.id, grace=float(grace))
        except Escalation as exc:
            raise _Refused(403, str(exc)) from None
        except ValueError as exc:
            raise _Refused(409, str(exc)) from None
        log.info("token %s rotated through the API by %s", record.id, caller.user_id)
        return {"token": rotated.token, "record": rotated.record.to_dict()}

    # -- WSGI and ASGI -----------------------------------------------------------
    def wsgi(
        self, environ: MutableMapping[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """The API as a WSGI app (behind :class:`~authmw.WSGIAuthMiddleware`)."""
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            size = 0
        body = environ["wsgi.input"].read(size) if 0 < size <= _MAX_BODY else b""
        status, headers, payload = self._handle_mapping(
            environ,
            environ.get("REQUEST_METHOD", "GET"),
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
            body if size <= _MAX_BODY else None,
        )
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [*headers, ("Content-Length", str(len(payload)))],
        )
        return [payload]

    async def asgi(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        """The API as an ASGI app (behind :class:`~authmw.ASGIAuthMiddleware`, or mounted)."""
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= _MAX_BODY:
                chunks.append(chunk)
            if not message.get("more_body"):
                break
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        # The store blocks: run it in authmw's worker threads, never on the event loop.
        status, headers, payload = await asyncio.get_running_loop().run_in_executor(
            _blocking_executor(),
            functools.partial(
                self._handle_mapping,
                scope,
                scope.get("method", "GET"),
                path,
                scope.get("query_string", b"").decode("latin-1"),
                b"".join(chunks) if size <= _MAX_BODY else None,
            ),
        )
        raw = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers]
        raw.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": payload})

    def _handle_mapping(
        self, state: Mapping[str, Any], method: str, path: str, query: str, body: bytes | None
    ) -> Answer:
        if IDENTITY_KEY not in state:
            log.error("the token API is not behind authmw's middleware: every request is 401")
        responses = state.get(RESPONSES_KEY)
        if not isinstance(responses, Responses):
            responses = DEFAULT_RESPONSES
        if body is None:
            payload = error_body(413, f"request body over {_MAX_BODY} bytes")
            return 413, (("Content-Type", "application/json"),), payload
        return self.handle(method, path, query, body, state.get(IDENTITY_KEY), responses)


def _json(body: bytes) -> Mapping[str, Any]:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        raise _Refused(400, "the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise _Refused(400, "the body must be a JSON object")
    return data


def _target(owner: Identity | TokenRecord) -> dict[str, Any]:
    """The policy target naming whose a token is: the caller's, or the record's owner."""
    return {
        "user_id": owner.user_id,
        "user_domain_id": owner.user_domain_id,
        "project_id": owner.project_id,
        "domain_id": owner.domain_id,
    }
