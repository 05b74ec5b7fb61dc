"""Fixtures that start real servers on 127.0.0.1 when a test asks for them.

- ``keystone`` (session): the checkout's Keystone (scripts/keystone), seeded.
- ``keystone_disposable``: a private copy of it on its own port, to stop and start.
- ``make_keystone(**settings)``: more private copies, e.g. with short-lived tokens.
- ``catalog_keystone`` (module): a private copy whose catalog also lists
  ``placement`` and ``compute`` (for application-credential access rules).
- ``redis_url``: ``redis://127.0.0.1:PORT/0`` of a session-wide redis-server, emptied per test.
- ``redis_server``: a private redis-server with ``stop()``/``start()``.
- ``memcached_server``: a private memcached with ``stop()``/``start()`` (``.address``).
- ``postgres_url``: URL of a fresh database on a session-wide PostgreSQL.
- ``postgres_server``: that PostgreSQL (``create_database()``, ``url()``).
- ``oidc_provider``: a private OpenID Connect provider (oidc-provider), with its own keys.

A server that cannot start fails the test with the reason (never a skip).
Tests using these fixtures get the ``keystone``/``redis``/``postgres``/``oidc`` marker,
so ``pytest -m "not keystone"`` leaves them out.
"""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest
from _services import (
    DisposableKeystone,
    MemcachedServer,
    OIDCProvider,
    PostgresServer,
    RedisServer,
    ServiceError,
    SharedKeystone,
    oidc_modules,
)

_Server = TypeVar(
    "_Server", RedisServer, PostgresServer, MemcachedServer, DisposableKeystone, OIDCProvider
)

_MARKERS = {
    "keystone": "keystone",
    "keystone_disposable": "keystone",
    "make_keystone": "keystone",
    "catalog_keystone": "keystone",
    "redis_url": "redis",
    "redis_server": "redis",
    "memcached_server": "memcached",
    "postgres_url": "postgres",
    "postgres_server": "postgres",
    "oidc_provider": "oidc",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        for fixture, marker in _MARKERS.items():
            if fixture in names:
                item.add_marker(marker)


def _fail(what: str, error: Exception) -> NoReturn:
    pytest.fail(f"{what} could not start: {error}", pytrace=False)


@pytest.fixture(scope="session")
def keystone() -> Iterator[SharedKeystone]:
    """The real Keystone, seeded (see scripts/keystone/README.md for the identities)."""
    ks = SharedKeystone()
    try:
        ks.start()
    except (ServiceError, OSError) as e:
        ks.release()
        _fail("Keystone", e)
    try:
        yield ks
    finally:
        ks.release()


@pytest.fixture
def keystone_disposable(keystone: SharedKeystone) -> Iterator[DisposableKeystone]:
    """A private Keystone with the same users, keys and tokens; stop()/start() it at will."""
    yield from _started(lambda: DisposableKeystone(keystone), "disposable Keystone")


def _started(make: Callable[[], _Server], what: str, attempts: int = 1) -> Iterator[_Server]:
    """The server ``make()`` builds, started (or the test fails saying why), destroyed after.

    With ``attempts`` > 1 a server that does not start is destroyed and a new one
    made, with a warning in the test summary; the last failure fails the test.
    """
    for attempt in range(attempts, 0, -1):
        try:
            server = make()
        except (ServiceError, OSError) as e:
            _fail(what, e)
        try:
            server.start()
            break
        except (ServiceError, OSError) as e:
            server.destroy()
            if attempt == 1:
                _fail(what, e)
            warnings.warn(f"{what} did not start, trying again: {e}", stacklevel=1)
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def make_keystone(keystone: SharedKeystone) -> Iterator[Callable[..., DisposableKeystone]]:
    """Factory of private, started Keystones with other settings, destroyed after the test.

    ``make_keystone(token_expiration=5)``, ``make_keystone(workers=1, cache=True)``.
    """
    made: list[DisposableKeystone] = []

    def make(**settings: Any) -> DisposableKeystone:
        ks = DisposableKeystone(keystone, **settings)
        made.append(ks)
        try:
            ks.start()
        except (ServiceError, OSError) as e:
            _fail("disposable Keystone", e)
        return ks

    try:
        yield make
    finally:
        for ks in made:
            ks.destroy()


CATALOG_SERVICES = {
    "placement": "http://127.0.0.1:9/placement",
    "compute": "http://127.0.0.1:9/compute",
}


@pytest.fixture(scope="module")
def catalog_keystone(keystone: SharedKeystone) -> Iterator[DisposableKeystone]:
    """A private Keystone whose catalog also lists ``placement`` and ``compute``."""
    ks = DisposableKeystone(keystone)
    try:
        ks.start()
        ks.own_identity_endpoints()
        for service_type, url in CATALOG_SERVICES.items():
            ks.add_service(service_type, url)
    except (ServiceError, OSError) as e:
        ks.destroy()
        _fail("disposable Keystone", e)
    try:
        yield ks
    finally:
        ks.destroy()


@pytest.fixture(scope="session")
def _redis_session() -> Iterator[RedisServer]:
    yield from _started(RedisServer, "redis-server")


@pytest.fixture
def redis_url(_redis_session: RedisServer) -> str:
    """``redis://127.0.0.1:PORT/0`` of a real redis-server, emptied for this test."""
    _redis_session.flushall()
    return _redis_session.url


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private, running redis-server (``.url``, ``.stop()``, ``.start()`` on the same port)."""
    yield from _started(RedisServer, "redis-server")


@pytest.fixture
def memcached_server() -> Iterator[MemcachedServer]:
    """A private, running memcached (``.address``, ``.stop()``, ``.start()`` on the same port)."""
    yield from _started(MemcachedServer, "memcached")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL for the session (superuser ``postgres``, trust auth, loopback)."""
    yield from _started(PostgresServer, "PostgreSQL")


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT/test_...``: a fresh, empty database."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(scope="session")
def _oidc_modules() -> Path:
    try:
        return oidc_modules()
    except (ServiceError, OSError, subprocess.SubprocessError) as e:
        _fail("the OpenID Connect provider", e)


@pytest.fixture
def oidc_provider(_oidc_modules: Path) -> Iterator[OIDCProvider]:
    """A private, running oidc-provider with fresh keys (``stop()``/``start()`` keep them).

    A start that does not answer is tried once more with a new port and new keys:
    once in a CI run a start stalled before listening, with nothing in the
    provider's log to say why.
    """
    yield from _started(
        lambda: OIDCProvider(_oidc_modules), "the OpenID Connect provider", attempts=2
    )
