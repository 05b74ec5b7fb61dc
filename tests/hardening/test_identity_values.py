"""Whatever an identity service puts in an identity, the middleware renders it without failing.

Validators build identities from JSON they do not control: names with
commas, line breaks, NUL, non-BMP characters or lone surrogates (JSON allows
``"\\ud800"``). Rendering them as headers must never raise (a 500), never
split a header, and the value the app sees must be sendable as a header.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from authmw import ASGIAuthMiddleware, Identity, InMemoryValidator, WSGIAuthMiddleware
from authmw import headers as h
from authmw.validators._roles import usable_roles

from ._support import FUZZ

TOKEN = "identity-values-token-0123456789"

# Any code point, lone surrogates included.
any_text = st.text(
    alphabet=st.characters() | st.characters(categories=["Cs"]) | st.sampled_from("\r\n\x00,"),
    max_size=20,
)
optional = st.none() | any_text


@st.composite
def identities(draw: st.DrawFn) -> Identity:
    return Identity(
        user_id=draw(any_text.filter(bool)),
        user_name=draw(optional),
        user_domain_id=draw(optional),
        user_domain_name=draw(optional),
        project_id=draw(optional),
        project_name=draw(optional),
        project_domain_id=draw(optional),
        project_domain_name=draw(optional),
        domain_id=draw(optional),
        domain_name=draw(optional),
        system_scope=draw(st.none() | st.just("all") | any_text),
        # Only names an Identity accepts (test_x_roles_reads_back_as_the_roles below).
        roles=usable_roles(draw(st.lists(any_text, max_size=4))),
        is_admin_project=draw(st.booleans()),
        service_catalog=draw(
            st.none()
            | st.lists(
                st.fixed_dictionaries(
                    {
                        "type": any_text,
                        "endpoints": st.lists(
                            st.fixed_dictionaries(
                                {"interface": any_text, "url": any_text, "region": any_text}
                            ),
                            max_size=2,
                        ),
                    }
                ),
                max_size=2,
            ).map(tuple)
        ),
    )


def _app_environ(identity: Identity) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.update(environ)
        start_response("200 OK", [])
        return [b""]

    middleware = WSGIAuthMiddleware(app, validator=InMemoryValidator({TOKEN: identity}))
    statuses: list[str] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_X_AUTH_TOKEN": TOKEN}

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)

    b"".join(middleware(environ, start_response))
    assert statuses == ["200 OK"]
    return seen


def _app_headers(identity: Identity) -> list[tuple[bytes, bytes]]:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = ASGIAuthMiddleware(app, validator=InMemoryValidator({TOKEN: identity}))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"x-auth-token", TOKEN.encode())],
    }
    asyncio.run(middleware(scope, receive, send))
    assert sent[0]["status"] == 200
    headers: list[tuple[bytes, bytes]] = seen["headers"]
    return headers


@FUZZ
@given(identity=identities())
def test_any_identity_renders_as_headers_through_wsgi(identity: Identity) -> None:
    environ = _app_environ(identity)
    assert environ["authmw.identity"] is identity
    for key in h.STRIPPED_ENVIRON_KEYS:
        if key in environ:
            value = environ[key]
            value.encode("latin-1")  # PEP 3333: a "bytes as str" value
            assert not any(c in value for c in "\r\n\x00")
    assert environ["HTTP_X_USER_ID"]


@FUZZ
@given(identity=identities())
def test_any_identity_renders_as_headers_through_asgi(identity: Identity) -> None:
    headers = _app_headers(identity)
    names = {name for name, _ in headers}
    assert b"x-user-id" in names and b"x-identity-status" in names
    for _name, value in headers:
        assert isinstance(value, bytes)
        assert not any(c in value for c in b"\r\n\x00")


@FUZZ
@given(names=st.lists(any_text | st.sampled_from([" admin", "member,admin", "\x00admin"])))
def test_x_roles_reads_back_as_the_roles(names: list[str]) -> None:
    # Whatever role names a service sends, the roles an identity keeps read
    # back from X-Roles as oslo.context reads it (split on commas, strip):
    # no name can turn into another role.
    roles = usable_roles(names)
    identity = Identity("u1", roles=roles)
    x_roles = _app_environ(identity)["HTTP_X_ROLES"].encode("latin-1").decode("utf-8")
    assert [r.strip() for r in x_roles.split(",")] == (list(roles) or [""])


def test_nul_is_not_deleted_from_header_values() -> None:
    environ = _app_environ(Identity("\x00", user_name="\x00admin"))
    assert environ["HTTP_X_USER_ID"]
    assert environ["HTTP_X_USER_NAME"] != "admin"


def test_lone_surrogate_from_a_json_body_does_not_become_a_500() -> None:
    # json.loads('"\\ud800"') gives a lone surrogate; Keystone-shaped answers
    # carrying one reach the middleware through the real validators.
    identity = Identity("u\ud800", user_name="x\udcff", project_id="p", project_name="\udfff")
    assert _app_environ(identity)["HTTP_X_USER_ID"].startswith("u")
    assert (b"x-user-id", b"u?") in _app_headers(identity)
