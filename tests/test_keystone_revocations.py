"""Revoked Keystone tokens leave every cache in seconds, against the real Keystone.

With ``revocation_poll_interval`` the validator follows ``GET
/v3/OS-REVOKE/events``: a token deleted, a user disabled or a password
changed is rejected within the interval plus a second, whatever
``cache_time`` is. A role assignment removed leaves no event; with
``refresh_after`` the cached identity is re-validated in the background and
the token is rejected within ``refresh_after`` plus one validation. Each
case runs through 2 gunicorn workers with ``cache_time=300``, each building
the app, and again with the app built in the master (``--preload``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import call_wsgi, environ, until

from authmw import AuthCore, WSGIAuthMiddleware
from authmw.redis import RedisCache
from authmw.validators._keystone_revoke import RevocationEvent
from authmw.validators.keystone import KeystoneValidator
from loadtest.servers import Server

pytestmark = pytest.mark.keystone

BOUND = 20.0  # generous; the measured figures are in docs/benchmarks.md


class Person:
    """A throwaway user with ``member`` on demo-project, in the private Keystone."""

    def __init__(self, keystone: Any) -> None:
        self.keystone = keystone
        self.name = "u-" + uuid.uuid4().hex[:10]
        self.password = "p-" + uuid.uuid4().hex
        domain = keystone.domain_id("demo")
        r = keystone._as_admin(
            "POST",
            "/users",
            json={"user": {"name": self.name, "domain_id": domain, "password": self.password}},
        )
        assert r.status_code == 201, r.text
        self.id = r.json()["user"]["id"]
        self.project = keystone.project_id("demo-project")
        role = keystone._as_admin("GET", "/roles", params={"name": "member"}).json()["roles"][0]
        self.role = role["id"]
        self.grant = f"/projects/{self.project}/users/{self.id}/roles/{self.role}"
        assert keystone._as_admin("PUT", self.grant).status_code == 204

    def token(self) -> str:
        token: str = self.keystone.issue_token(
            self.name, self.password, "demo", project="demo-project", project_domain="demo"
        )
        return token

    def disable(self) -> None:
        r = self.keystone._as_admin("PATCH", f"/users/{self.id}", json={"user": {"enabled": False}})
        assert r.status_code == 200, r.text

    def change_password(self) -> None:
        self.password = "n-" + uuid.uuid4().hex
        r = self.keystone._as_admin(
            "PATCH", f"/users/{self.id}", json={"user": {"password": self.password}}
        )
        assert r.status_code == 200, r.text

    def remove_role(self) -> None:
        assert self.keystone._as_admin("DELETE", self.grant).status_code == 204


@pytest.fixture
def person(keystone_disposable: Any) -> Person:
    return Person(keystone_disposable)


def test_events_match_the_tokens_keystone_says_they_revoke(
    keystone_disposable: Any, person: Person
) -> None:
    validator = KeystoneValidator(
        keystone_disposable.url, **keystone_disposable.service_credentials
    )
    doomed, other = (
        person.token(),
        keystone_disposable.issue_token(
            "demo-user", "demo-secret", "demo", project="demo-project", project_domain="demo"
        ),
    )
    doomed_identity, other_identity = validator.validate(doomed), validator.validate(other)
    keystone_disposable.revoke(doomed)
    events = keystone_disposable._as_admin("GET", "/OS-REVOKE/events").json()["events"]
    parsed = [RevocationEvent.from_json(e) for e in events]
    assert any(e.matches(doomed_identity) for e in parsed)
    assert not any(e.matches(other_identity) for e in parsed)
    person.disable()
    events = keystone_disposable._as_admin("GET", "/OS-REVOKE/events").json()["events"]
    parsed = [RevocationEvent.from_json(e) for e in events]
    assert not any(e.matches(other_identity) for e in parsed)
    assert any(e.user_id == person.id and e.matches(doomed_identity) for e in parsed)


def test_a_token_issued_after_an_event_is_not_named_by_it(
    keystone_disposable: Any, person: Person
) -> None:
    validator = KeystoneValidator(
        keystone_disposable.url, **keystone_disposable.service_credentials
    )
    before = validator.validate(person.token())
    person.change_password()  # an event for the user, issued_before now
    time.sleep(1.1)  # Keystone stamps events to the second
    after = validator.validate(person.token())  # with the new password
    events = keystone_disposable._as_admin("GET", "/OS-REVOKE/events").json()["events"]
    parsed = [RevocationEvent.from_json(e) for e in events if e.get("user_id") == person.id]
    assert parsed
    assert any(e.matches(before) for e in parsed)
    assert not any(e.matches(after) for e in parsed)


@pytest.mark.parametrize("case", ["token deleted", "user disabled", "password changed"])
def test_the_follower_drops_revoked_tokens_from_the_cache(
    keystone_disposable: Any, person: Person, case: str
) -> None:
    validator = KeystoneValidator(
        keystone_disposable.url,
        revocation_poll_interval=1,
        **keystone_disposable.service_credentials,
    )
    middleware = WSGIAuthMiddleware(
        lambda env, start: (start("200 OK", []), [b"ok"])[1], validator, cache_time=300
    )
    token = person.token()
    request = environ(headers=[("X-Auth-Token", token)])
    assert call_wsgi(middleware, dict(request)).code == 200  # now cached for 300 s
    {
        "token deleted": lambda: keystone_disposable.revoke(token),
        "user disabled": person.disable,
        "password changed": person.change_password,
    }[case]()
    assert until(lambda: call_wsgi(middleware, dict(request)).code == 401, BOUND, step=0.1)
    assert validator.revocations is not None and validator.revocations.events >= 1
    validator.close()


def test_polling_starts_with_the_first_request(keystone_disposable: Any, person: Person) -> None:
    # A gunicorn master that builds the app (--preload) validates nothing: it must run
    # no thread its workers would be forked in the middle of.
    earlier = set(threading.enumerate())  # other tests' followers may still be ending

    def polling() -> bool:
        return any(
            t.name == "authmw-keystone-revocations" and t not in earlier
            for t in threading.enumerate()
        )

    validator = KeystoneValidator(
        keystone_disposable.url,
        revocation_poll_interval=1,
        **keystone_disposable.service_credentials,
    )
    middleware = WSGIAuthMiddleware(
        lambda env, start: (start("200 OK", []), [b"ok"])[1], validator, cache_time=300
    )
    assert not polling()
    request = environ(headers=[("X-Auth-Token", person.token())])
    assert call_wsgi(middleware, request).code == 200
    assert polling()
    validator.close()


def test_a_process_served_from_the_shared_cache_follows_revocations_too(
    keystone_disposable: Any, person: Person, redis_url: str
) -> None:
    # A worker whose first request is answered from Redis never asks Keystone, and
    # must still poll: the identity it caches for 300 s is what a revocation must drop.
    namespace = "k-" + uuid.uuid4().hex[:10]

    def worker(interval: float | None) -> tuple[KeystoneValidator, WSGIAuthMiddleware]:
        validator = KeystoneValidator(
            keystone_disposable.url,
            revocation_poll_interval=interval,
            **keystone_disposable.service_credentials,
        )
        shared = RedisCache.from_url(redis_url, secret="r" * 32, namespace=namespace)
        app = WSGIAuthMiddleware(
            lambda env, start: (start("200 OK", []), [b"ok"])[1],
            validator,
            cache_time=300,
            shared_cache=shared,
        )
        return validator, app

    request = environ(headers=[("X-Auth-Token", person.token())])
    first_validator, first = worker(None)  # validates, and fills Redis; follows nothing
    assert call_wsgi(first, dict(request)).code == 200
    validator, second = worker(1)
    assert call_wsgi(second, dict(request)).code == 200
    assert second.stats()["shared_hits"] == 1  # served from Redis, Keystone not asked
    person.disable()
    assert until(lambda: call_wsgi(second, dict(request)).code == 401, BOUND, step=0.1)
    validator.close()
    first_validator.close()


def test_a_removed_role_is_seen_within_refresh_after(
    keystone_disposable: Any, person: Person
) -> None:
    validator = KeystoneValidator(
        keystone_disposable.url, **keystone_disposable.service_credentials
    )
    core = AuthCore(validator, cache_time=300, refresh_after=2)
    token = person.token()
    assert core.authenticate(token).identity is not None
    person.remove_role()  # Keystone records no event: the token just stops validating
    assert until(lambda: core.authenticate(token).rejection is not None, BOUND, step=0.1)
    assert core.stats()["refreshed"] >= 1


# -- two gunicorn workers ------------------------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["app-per-worker", "preload"])
def workers(keystone_disposable: Any, tmp_path: Path, request: Any) -> Iterator[Server]:
    # preload: the app (its validator, the follower's thread and HTTP client, the
    # service token) is made in the master, and the workers are forked from it.
    config = {
        "validator": "keystone",
        "keystone_url": keystone_disposable.url,
        "service": keystone_disposable.service_credentials,
        "validator_options": {"revocation_poll_interval": 1},
        "options": {"cache_time": 300, "refresh_after": 3},
    }
    server = Server("gunicorn", config, tmp_path, threads=4, workers=2, preload=request.param)
    server.start()
    yield server
    server.stop()


def pids_answering(server: Server, token: str, expected: int) -> set[int]:
    """The workers that answered ``expected`` to a series of requests (both, usually)."""
    pids: set[int] = set()
    for _ in range(40):
        r = httpx.get(server.url + "/x", headers={"X-Auth-Token": token}, timeout=10)
        if r.status_code == expected == 200:
            pids.add(r.json()["pid"])
        elif r.status_code == expected:
            pids.add(-1)
    return pids


@pytest.mark.parametrize("case", ["token deleted", "user disabled", "role removed"])
def test_every_worker_rejects_the_token_within_its_bound(
    keystone_disposable: Any, person: Person, workers: Server, case: str
) -> None:
    token = person.token()
    both_cache_it = until(lambda: len(pids_answering(workers, token, 200)) == 2, BOUND, step=0.1)
    assert both_cache_it, "both workers cache it"
    {
        "token deleted": lambda: keystone_disposable.revoke(token),
        "user disabled": person.disable,
        "role removed": person.remove_role,
    }[case]()

    def rejected_by_all() -> bool:
        answers = [
            httpx.get(workers.url + "/x", headers={"X-Auth-Token": token}, timeout=10)
            for _ in range(20)
        ]
        return all(r.status_code == 401 for r in answers)

    assert until(rejected_by_all, BOUND, step=0.1), f"{case}: a worker still accepts the token"
