"""The shared memcached cache level, against a real memcached started by the fixtures."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from _services import MemcachedServer, free_port
from forking import in_child
from helpers import BAD, GOOD, Counting, WSGIRecorder, call_wsgi, environ, full_identity
from pymemcache.client.base import Client

from authmw import ConfigurationError, InvalidToken
from authmw._hashing import token_digest
from authmw.memcache import MemcacheCache, parse_servers
from authmw.wsgi import WSGIAuthMiddleware

REPO = Path(__file__).resolve().parent.parent
SECRET = "m" * 32 + "-shared-cache-test-secret"


@pytest.fixture
def namespace() -> str:
    return "t-" + uuid.uuid4().hex[:12]


def shared(server: MemcachedServer, namespace: str, **options: Any) -> MemcacheCache:
    options.setdefault("secret", SECRET)
    return MemcacheCache([server.address], namespace=namespace, **options)


def wsgi(validator: Any, cache: MemcacheCache, **options: Any) -> WSGIAuthMiddleware:
    return WSGIAuthMiddleware(WSGIRecorder(), validator=validator, shared_cache=cache, **options)


def request(app: WSGIAuthMiddleware, token: str) -> int:
    return call_wsgi(app, environ(headers=[("X-Auth-Token", token)])).code


def entry_key(namespace: str, token: str) -> bytes:
    return f"{namespace}:t:{token_digest(token).hex()}".encode()


def raw(server: MemcachedServer) -> Client:
    return Client((server.host, server.port), timeout=2, default_noreply=False)


def test_second_process_makes_no_validator_call(
    memcached_server: MemcachedServer, namespace: str, tmp_path: Path
) -> None:
    """Two OS processes: the first validates, the second gets the identity from memcached."""
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(REPO / "tests")!r})
        from helpers import Counting, WSGIRecorder, call_wsgi, environ, full_identity
        from authmw.memcache import MemcacheCache
        from authmw.wsgi import WSGIAuthMiddleware
        validator = Counting({{{GOOD!r}: full_identity()}})
        cache = MemcacheCache([{memcached_server.address!r}], secret={SECRET!r},
                              namespace={namespace!r})
        app = WSGIAuthMiddleware(WSGIRecorder(), validator=validator, shared_cache=cache)
        code = call_wsgi(app, environ(headers=[("X-Auth-Token", {GOOD!r})])).code
        user = app.app.last["authmw.identity"].user_id
        print(json.dumps({{"code": code, "validations": len(validator.calls), "user": user,
                          "shared_hits": app.stats()["shared_hits"]}}))
        """
    )
    results = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    first, second = results
    assert first["code"] == second["code"] == 200
    assert first["validations"] == 1 and first["shared_hits"] == 0
    assert second["validations"] == 0 and second["shared_hits"] == 1
    assert first["user"] == second["user"]


def test_rejection_is_shared(memcached_server: MemcachedServer, namespace: str) -> None:
    first_validator, second_validator = Counting(), Counting()
    first = wsgi(first_validator, shared(memcached_server, namespace))
    second = wsgi(second_validator, shared(memcached_server, namespace))
    assert request(first, BAD) == 401
    assert request(second, BAD) == 401
    assert first_validator.calls == [BAD] and second_validator.calls == []


def test_keys_are_token_digests_never_tokens(
    memcached_server: MemcachedServer, namespace: str
) -> None:
    request(wsgi(Counting({GOOD: full_identity()}), shared(memcached_server, namespace)), GOOD)
    value = raw(memcached_server).get(entry_key(namespace, GOOD))
    assert value is not None and GOOD.encode() not in value


def _flip(value: bytes, index: int) -> bytes:
    return value[:index] + bytes([value[index] ^ 0x01]) + value[index + 1 :]


@pytest.mark.parametrize("where", ["payload", "header", "marker", "mac"])
def test_tampered_entry_is_a_miss(
    memcached_server: MemcachedServer, namespace: str, where: str
) -> None:
    request(wsgi(Counting({GOOD: full_identity()}), shared(memcached_server, namespace)), GOOD)
    client = raw(memcached_server)
    key = entry_key(namespace, GOOD)
    value = client.get(key)
    assert value is not None
    index = {"payload": len(value) - 40, "header": 1, "marker": 5, "mac": len(value) - 1}[where]
    client.set(key, _flip(value, index))

    second_validator = Counting({GOOD: full_identity()})
    cache = shared(memcached_server, namespace)
    assert request(wsgi(second_validator, cache), GOOD) == 200
    assert second_validator.calls == [GOOD]  # the entry was not used
    assert cache.stats.rejected == 1 and cache.stats.errors == 0


def test_forged_roles_and_moved_entries_are_misses(
    memcached_server: MemcachedServer, namespace: str
) -> None:
    reader = full_identity(roles=("reader",))
    writer = wsgi(Counting({GOOD: reader}), shared(memcached_server, namespace))
    request(writer, GOOD)
    client = raw(memcached_server)
    value = client.get(entry_key(namespace, GOOD))
    assert value is not None and b'"reader"' in value
    client.set(entry_key(namespace, GOOD), value.replace(b'"reader"', b'"admin!"'))
    client.set(entry_key(namespace, BAD), value)  # a valid entry under another token's key
    validator = Counting({GOOD: full_identity(roles=("reader",))})
    cache = shared(memcached_server, namespace)
    app = wsgi(validator, cache)
    assert request(app, GOOD) == 200
    assert request(app, BAD) == 401
    assert validator.calls == [GOOD, BAD]
    assert cache.stats.rejected == 2


def test_other_secret_is_a_miss_and_previous_secret_reads(
    memcached_server: MemcachedServer, namespace: str
) -> None:
    request(wsgi(Counting({GOOD: full_identity()}), shared(memcached_server, namespace)), GOOD)
    new = "n" * 40
    stranger = shared(memcached_server, namespace, secret=new)
    assert stranger.get(token_digest(GOOD)) is None and stranger.stats.rejected == 1
    rotated = shared(memcached_server, namespace, secret=new, previous_secrets=[SECRET])
    identity = rotated.get(token_digest(GOOD))
    assert identity is not None and identity.user_id == full_identity().user_id


def test_encrypted_entries_hide_the_identity(
    memcached_server: MemcachedServer, namespace: str
) -> None:
    identity = full_identity(user_name="very-visible-name")
    cache = shared(memcached_server, namespace, encrypt=True)
    request(wsgi(Counting({GOOD: identity}), cache), GOOD)
    value = raw(memcached_server).get(entry_key(namespace, GOOD))
    assert value is not None and b"very-visible-name" not in value
    reader = shared(memcached_server, namespace, encrypt=True)
    assert reader.get(token_digest(GOOD)) == identity
    assert shared(memcached_server, namespace).get(token_digest(GOOD)) is None  # mode must match


def test_negative_entry_raises_invalid_token(
    memcached_server: MemcachedServer, namespace: str
) -> None:
    cache = shared(memcached_server, namespace)
    cache.put_invalid(token_digest(BAD), 10)
    with pytest.raises(InvalidToken):
        shared(memcached_server, namespace).get(token_digest(BAD))


def test_revocation_is_seen_by_the_other_process(
    memcached_server: MemcachedServer, namespace: str
) -> None:
    identity = full_identity(audit_ids=("audit-1",))
    writer = shared(memcached_server, namespace)
    writer.put(token_digest(GOOD), identity, 60)
    reader = shared(memcached_server, namespace)
    assert reader.get(token_digest(GOOD)) == identity
    writer.revoke("audit-1")
    fresh = shared(memcached_server, namespace)
    assert fresh.get(token_digest(GOOD)) is None and fresh.stats.revoked == 1
    raw(memcached_server).flush_all()  # memcached lost the marker (evicted)...
    fresh.put(token_digest(GOOD), identity, 60)
    assert fresh.get(token_digest(GOOD)) is None  # ...a process that saw it remembers


def test_revoke_everything_retires_every_entry(
    memcached_server: MemcachedServer, namespace: str
) -> None:
    writer = shared(memcached_server, namespace)
    writer.put(token_digest(GOOD), full_identity(), 60)
    writer.revoke(None)
    reader = shared(memcached_server, namespace)
    assert reader.get(token_digest(GOOD)) is None and reader.stats.stale == 1
    writer.put(token_digest(GOOD), full_identity(), 60)  # written at the new generation
    assert shared(memcached_server, namespace).get(token_digest(GOOD)) == full_identity()


def test_generation_set_back_is_put_back_up(
    memcached_server: MemcachedServer, namespace: str
) -> None:
    cache = shared(memcached_server, namespace)
    cache.put(token_digest(GOOD), full_identity(), 60)
    cache.revoke(None)
    client = raw(memcached_server)
    client.set(f"{namespace}:gen".encode(), b"0")
    assert cache.get(token_digest(GOOD)) is None  # the old entry stays retired
    assert int(client.get(f"{namespace}:gen".encode()) or 0) >= 1


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "authmw.memcache" and r.levelno >= logging.WARNING
    ]


def test_memcached_stopped_under_load(
    memcached_server: MemcachedServer, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No failed request, one WARNING; after a restart, hits are shared again."""
    caplog.set_level(logging.INFO, logger="authmw.memcache")
    tokens = {f"load-token-{n:04d}": full_identity(user_id=f"user-{n}") for n in range(600)}
    cache = shared(memcached_server, namespace, retry_interval=0.05, max_retry_interval=0.2)
    validator = Counting(tokens)
    app = wsgi(validator, cache)
    names = sorted(tokens)
    statuses: list[int] = []
    lock = threading.Lock()
    done = threading.Semaphore(0)

    def worker(part: list[str]) -> None:
        for n, token in enumerate(part):
            code = request(app, token)
            with lock:
                statuses.append(code)
            if n == 50:
                done.release()

    threads = [threading.Thread(target=worker, args=(names[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for _ in threads:
        done.acquire()  # every worker is well into its tokens
    memcached_server.stop()
    for t in threads:
        t.join()
    assert statuses == [200] * len(names)
    assert not cache.available
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()
    assert not any(t in caplog.text for t in tokens)

    memcached_server.start()
    writes = cache.stats.writes
    deadline = time.monotonic() + 30
    n = 0
    while not (cache.available and cache.stats.writes > writes):
        assert time.monotonic() < deadline, "memcached never came back"
        token = f"after-restart-{n:04d}"
        validator.answers[token] = full_identity(user_id=f"after-{n}")
        assert request(app, token) == 200  # a validation; shared once memcached answers
        n += 1
        time.sleep(0.02)
    other_validator = Counting()  # knows no token: a call would be a 401
    other = wsgi(other_validator, shared(memcached_server, namespace))
    assert request(other, token) == 200
    assert other_validator.calls == []
    assert other.stats()["shared_hits"] == 1
    assert len(_warnings(caplog)) == 1
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_memcached_never_there_fails_no_request(
    namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = MemcacheCache(
        [f"127.0.0.1:{free_port()}"], secret=SECRET, namespace=namespace, retry_interval=0
    )
    app = wsgi(Counting({GOOD: full_identity()}), cache, negative_cache_time=0)
    assert request(app, GOOD) == 200
    assert request(app, BAD) == 401
    cache.revoke("audit-1")  # logged, not raised
    assert cache.stats.errors >= 2
    assert len([r for r in _warnings(caplog) if "unavailable" in r.getMessage()]) == 1


async def test_async_api(memcached_server: MemcachedServer, namespace: str) -> None:
    cache = shared(memcached_server, namespace)
    await cache.aput(token_digest(GOOD), full_identity(), 60)
    assert await cache.aget(token_digest(GOOD)) == full_identity()
    await cache.aput_invalid(token_digest(BAD), 10)
    with pytest.raises(InvalidToken):
        await cache.aget(token_digest(BAD))
    await cache.aclose()


@pytest.mark.parametrize(
    ("servers", "expected"),
    [
        ("127.0.0.1:11211", [("127.0.0.1", 11211)]),
        ("a:1, b", [("a", 1), ("b", 11211)]),
        (["inet6:[::1]:11212"], [("::1", 11212)]),
        (["inet:cache:11213"], [("cache", 11213)]),
        (["unix:/run/memcached.sock"], ["/run/memcached.sock"]),
    ],
)
def test_server_forms(servers: Any, expected: list[Any]) -> None:
    assert parse_servers("memcached_servers", servers) == expected


@pytest.mark.parametrize(
    ("servers", "options", "option"),
    [
        ([], {}, "servers"),
        (["host:port"], {}, "servers"),
        (["h:1"], {"secret": "short"}, "secret"),
        (["h:1"], {"max_ttl": 31 * 24 * 3600}, "max_ttl"),
        (["h:1"], {"socket_timeout": 0}, "socket_timeout"),
        (["h:1"], {"namespace": "two words"}, "namespace"),
    ],
)
def test_bad_options_fail_at_start_up(servers: Any, options: dict[str, Any], option: str) -> None:
    options.setdefault("secret", SECRET)
    with pytest.raises(ConfigurationError) as caught:
        MemcacheCache(servers, **options)
    assert caught.value.option == option


def test_import_authmw_does_not_import_pymemcache() -> None:
    code = "import authmw, authmw.memcache, sys; print('pymemcache' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "False"


# -- from keystonemiddleware's options ------------------------------------------------

KSM_BASE = {"auth_url": "http://ks/v3", "username": "u", "password": "p", "project_name": "s"}


def test_keystonemiddleware_options_build_the_cache(
    memcached_server: MemcachedServer, namespace: str
) -> None:
    from authmw.options import keystone_options

    options = keystone_options(
        {
            **KSM_BASE,
            "memcached_servers": memcached_server.address,
            "memcache_security_strategy": "encrypt",
            "memcache_secret_key": SECRET,
            "service_type": "placement",
        }
    )
    cache = options.build_shared_cache()
    assert isinstance(cache, MemcacheCache)
    assert cache.encrypt and cache.namespace == "authmw-placement"
    assert "memcache" not in repr(options) and SECRET not in repr(options)
    cache.put(token_digest(GOOD), full_identity(), 60)
    assert cache.get(token_digest(GOOD)) == full_identity()


def test_without_a_security_strategy_memcached_is_not_used() -> None:
    from authmw.options import IgnoredOptionWarning, keystone_options

    with pytest.warns(IgnoredOptionWarning, match="signed entries"):
        options = keystone_options({**KSM_BASE, "memcached_servers": "127.0.0.1:11211"})
    assert options.build_shared_cache() is None


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        ({"memcache_security_strategy": "MAC"}, "memcache_secret_key"),
        (
            {"memcache_security_strategy": "MAC", "memcache_secret_key": "short"},
            "memcache_secret_key",
        ),
        ({"memcache_security_strategy": "SHA1"}, "memcache_security_strategy"),
        ({"memcache_sasl_enabled": "true"}, "memcache_sasl_enabled"),
        (
            {
                "memcached_servers": "host:port",
                "memcache_security_strategy": "MAC",
                "memcache_secret_key": SECRET,
            },
            "servers",
        ),
    ],
)
def test_wrong_memcache_options_fail_at_start_up(extra: dict[str, str], option: str) -> None:
    from authmw.options import keystone_options

    conf = {**KSM_BASE, "memcached_servers": "127.0.0.1:11211", **extra}
    with pytest.raises(ConfigurationError) as caught:
        keystone_options(conf).build_shared_cache()
    assert caught.value.option == option


def test_a_cache_whose_options_are_refused_is_not_reset_in_forked_children(
    memcached_server: MemcachedServer,
) -> None:
    from authmw import _fork

    before = len(_fork._resets)
    with pytest.raises(ConfigurationError) as caught:
        MemcacheCache(memcached_server.address, secret=SECRET, max_pool_size=0)
    assert caught.value.option == "max_pool_size"
    assert len(_fork._resets) == before  # the half-built cache (kept by the traceback)


def test_a_forked_child_opens_its_own_connections(
    memcached_server: MemcachedServer, namespace: str
) -> None:
    # gunicorn --preload: a worker forked after the master used the cache must not share
    # its pooled connection, or two processes would read each other's answers.
    cache = shared(memcached_server, namespace)
    cache.put(b"k" * 32, full_identity(), 60)  # the parent's pooled connection
    stats = raw(memcached_server)

    def connections() -> int:
        return int(stats.stats()[b"total_connections"])

    before = connections()
    assert in_child(lambda: cache.get(b"k" * 32) or sys.exit(1)) == 0
    assert connections() == before + 1  # the child's own
    assert cache.get(b"k" * 32) == full_identity()  # the parent's still works
