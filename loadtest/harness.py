"""Load and fault phases against gunicorn + WSGI and uvicorn + ASGI in front of a real Keystone.

:class:`Harness` starts both servers (each behind its own :class:`~loadtest.proxy.Proxy`
to Keystone), issues real tokens, and runs phases; in each phase the load
generator (:mod:`loadtest.gen`, a separate process) sends a mix of valid
(cached and fresh), revoked, invalid and missing tokens to both servers at
once while a fault is applied:

``normal``; ``keystone-down`` (Keystone stopped, then started again, and the
time until each server validates a fresh token again measured);
``keystone-down-stale`` (servers of their own with a short ``cache_time``
and ``stale_if_error``: Keystone stopped longer than ``cache_time``, tokens
validated before keep working, new ones get 503, tokens revoked and seen
rejected before stay 401, then Keystone is back);
``keystone-slow`` (every answer delayed, below the validator's timeout);
``keystone-stalled`` (delayed beyond the timeout); ``redis-down`` (when the
servers share a Redis cache); ``normal-after``. A soak repeats the cycle.

The Keystone object needs what the test suite's ``DisposableKeystone`` has:
``url``, ``port``, ``seed``, ``user(name)``, ``issue_token(user, project=)``,
``revoke(token)``, ``stop()``, ``start()``, ``validation_count()``. Never give
it a Keystone other processes use: it is stopped and started.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .proxy import Proxy
from .servers import REPO, Sample, Server

__all__ = ["Harness", "Settings"]


class KeystoneLike(Protocol):
    url: str
    seed: dict[str, Any]

    @property
    def port(self) -> int: ...
    def user(self, name: str) -> dict[str, Any]: ...
    def issue_token(self, user: str, password: str | None = ..., *args: Any, **kw: Any) -> str: ...
    def revoke(self, token: str) -> None: ...
    def stop(self) -> None: ...
    def start(self) -> None: ...
    def validation_count(self) -> int: ...


class RedisLike(Protocol):
    url: str

    def stop(self) -> None: ...
    def start(self) -> None: ...


@dataclass
class Settings:
    """Sizes of one run. :data:`SHORT` for CI, :data:`LONG` for the soak."""

    requests_per_phase: int = 250  # per server
    concurrency: int = 6  # connections per server
    warm_tokens: int = 30  # valid tokens made cached in the first normal phase
    fresh_per_phase: int = 4  # never-seen valid tokens per phase (each server sees each)
    revoked_tokens: int = 6
    invalid_per_phase: int = 20  # distinct invalid tokens per phase
    cycles: int = 1
    slow_delay: float = 0.3  # seconds added to every Keystone answer (timeout 5 s)
    stall_delay: float = 8.0  # beyond the validator's timeout
    recovery_limit: float = 90.0
    server_threads: int = 8
    cache_time: float = 3600.0
    validator_timeout: float = 5.0
    steady_phases: int = 0  # after the cycles: phases with no token the servers have not seen
    # The stale-if-error outage: servers of their own with a short cache_time.
    stale_cache_time: float = 2.0
    stale_if_error: float = 3600.0
    stale_tokens: int = 6  # validated before the outage, each server
    stale_revoked: int = 3  # validated, revoked and seen rejected before the outage

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SHORT = Settings(
    requests_per_phase=150,
    warm_tokens=20,
    fresh_per_phase=3,
    revoked_tokens=4,
    invalid_per_phase=12,
)
LONG = Settings(
    requests_per_phase=1500,
    concurrency=8,
    warm_tokens=150,
    fresh_per_phase=10,
    revoked_tokens=20,
    invalid_per_phase=60,
    cycles=6,
    steady_phases=5,
)


@dataclass
class Token:
    value: str
    user_id: str | None  # None: not a valid token
    kind: str


@dataclass
class PhaseResult:
    """Figures of one phase for one server."""

    server: str
    phase: str
    cycle: int
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    wrongly_accepted: int = 0
    wrongly_rejected_cached: int = 0
    valid_told_invalid: int = 0
    server_errors: int = 0
    unavailable: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    p50_cached_ms: float = 0.0
    validations_sent: int = 0  # validation requests that reached Keystone (seen by the proxy)
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    recovery_s: float | None = None
    seconds: float = 0.0
    stale_served: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _get(server: Server, token: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", "/items", headers={"X-Auth-Token": token})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _count(result: PhaseResult, request: dict[str, Any], row: Any) -> None:
    """Count one request's outcome into ``result``."""
    status, _latency, seen_user, _ = row
    result.requests += 1
    key = str(status)
    result.statuses[key] = result.statuses.get(key, 0) + 1
    kind = request["kind"]
    if status == 200 and (
        kind in ("revoked", "invalid", "missing") or seen_user != request["user_id"]
    ):
        result.wrongly_accepted += 1
    if kind in ("valid", "fresh") and status == 401:
        result.valid_told_invalid += 1
    if request["cached"] and status != 200:
        result.wrongly_rejected_cached += 1
    if status == 503:
        result.unavailable += 1
    if (status >= 500 and status != 503) or status == 0:
        result.server_errors += 1


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def _tally(
    result: PhaseResult, requests: list[dict[str, Any]], rows: list[Any]
) -> list[tuple[dict[str, Any], Any]]:
    """Count the requests sent to ``result.server`` and set the phase's latencies (p50,
    p99, and p50 of cached tokens answered 200); those (request, row) pairs."""
    answered = [
        (request, row)
        for request, row in zip(requests, rows, strict=True)
        if request["target"] == result.server
    ]
    for request, row in answered:
        _count(result, request, row)
    latencies = [row[1] for _, row in answered]
    cached = [row[1] for request, row in answered if row[0] == 200 and request["cached"]]
    result.p50_ms = _percentile(latencies, 0.5)
    result.p99_ms = _percentile(latencies, 0.99)
    result.p50_cached_ms = _percentile(cached, 0.5)
    return answered


class Harness:
    """One run: servers, proxies, tokens, phases. Use as a context manager."""

    def __init__(
        self,
        keystone: KeystoneLike,
        settings: Settings = SHORT,
        redis: RedisLike | None = None,
        workdir: Path | None = None,
        log: Any = None,
    ) -> None:
        self.keystone = keystone
        self.settings = settings
        self.redis = redis
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="authmw-loadtest-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.proxies: dict[str, Proxy] = {}
        self.servers: dict[str, Server] = {}
        self.results: list[PhaseResult] = []
        self.keystone_calls: dict[str, int] = {}
        self.rss: dict[str, list[int]] = {}
        # server -> tokens that got a 200 there (and stay cached: cache_time >= the run)
        self.cached: dict[str, set[str]] = {}
        self._pool: list[tuple[str, str]] = []  # fresh valid tokens: (token, user_id)
        self._warm: list[Token] = []
        self._revoked: list[Token] = []
        self._last_invalid: list[Token] = []

    # -- set-up ------------------------------------------------------------------------
    def __enter__(self) -> Harness:
        try:
            self._start_servers()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _service(self) -> dict[str, str]:
        user = self.keystone.seed["users"]["service-user"]
        return {
            "username": user["name"],
            "password": user["password"],
            "user_domain_name": user["domain"],
            "project_name": "service",
            "project_domain_name": "Default",
        }

    def _start_servers(self) -> None:
        for kind in ("gunicorn", "uvicorn"):
            proxy = Proxy(self.keystone.port)
            self.proxies[kind] = proxy
            config: dict[str, Any] = {
                "validator": "keystone",
                "keystone_url": f"http://127.0.0.1:{proxy.port}/v3",
                "service": self._service(),
                "timeout": self.settings.validator_timeout,
                "options": {"cache_time": self.settings.cache_time},
            }
            if self.redis is not None:
                config["redis_url"] = self.redis.url
                config["redis_secret"] = secrets.token_hex(32)
            server = Server(kind, config, self.workdir, threads=self.settings.server_threads)
            server.start()
            self.servers[kind] = server
            self.cached[kind] = set()
            self.rss[kind] = []

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()
        for proxy in self.proxies.values():
            proxy.close()

    # -- tokens -------------------------------------------------------------------------
    def _issue(self, count: int) -> list[tuple[str, str]]:
        # Every seeded user with a default project (scripts/keystone/seed.py).
        users = sorted(
            name
            for name, user in self.keystone.seed["users"].items()
            if user.get("default_project") and name not in ("admin", "service-user")
        )
        if not users:
            raise RuntimeError("no seeded user has a default project")

        def one(i: int) -> tuple[str, str]:
            name = users[i % len(users)]
            user = self.keystone.user(name)
            for attempt in range(5):
                try:
                    token = self.keystone.issue_token(name, project=user["default_project"])
                    return token, user["id"]
                except Exception as exc:
                    # Keystone on SQLite now and then answers a burst of logins with a 500.
                    if getattr(exc, "status_code", 0) < 500 or attempt == 4:
                        raise
                    time.sleep(0.2 * (attempt + 1))
            raise AssertionError("unreachable")

        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(one, range(count)))

    def prepare_tokens(self) -> None:
        s = self.settings
        phases = 6 * s.cycles
        fresh = (s.fresh_per_phase + 2) * phases  # + recovery probes
        fresh += 2 * (s.stale_tokens + s.stale_revoked + s.fresh_per_phase + 2)
        started = time.monotonic()
        issued = self._issue(s.warm_tokens + fresh + s.revoked_tokens)
        self._warm = [Token(t, u, "valid") for t, u in issued[: s.warm_tokens]]
        self._pool = issued[s.warm_tokens : s.warm_tokens + fresh]
        for token, _ in issued[s.warm_tokens + fresh :]:
            self.keystone.revoke(token)
            self._revoked.append(Token(token, None, "revoked"))
        self.log(
            f"issued {len(issued)} tokens ({s.revoked_tokens} revoked) "
            f"in {time.monotonic() - started:.1f}s"
        )

    def _fresh(self, count: int) -> list[Token]:
        taken, self._pool = self._pool[:count], self._pool[count:]
        if len(taken) < count:
            raise RuntimeError("ran out of fresh tokens")
        return [Token(t, u, "fresh") for t, u in taken]

    def _invalid(self, count: int) -> list[Token]:
        made = []
        for i in range(count):
            if i % 5 == 4:
                value = "not a token " + secrets.token_hex(4)  # refused without a call
            else:
                # Fernet-shaped, so that Keystone has to look at it (and says 404).
                value = "gAAAAAB" + secrets.token_urlsafe(140)
            made.append(Token(value, None, "invalid"))
        return made

    # -- phases ---------------------------------------------------------------------------
    def _plan(self, phase_fresh: list[Token], phase_invalid: list[Token]) -> dict[str, Any]:
        s = self.settings
        rng = secrets.SystemRandom()
        requests = []
        for target in self.servers:
            cached = [t for t in self._warm if t.value in self.cached[target]]
            valid_pool = cached or self._warm
            mix: list[Token | None] = []
            n = s.requests_per_phase
            mix += [rng.choice(valid_pool) for _ in range(int(n * 0.6))]
            mix += [rng.choice(self._revoked) for _ in range(int(n * 0.1))] if self._revoked else []
            mix += [rng.choice(phase_invalid) for _ in range(int(n * 0.12))]
            mix += [None] * int(n * 0.1)
            mix += phase_fresh * 2  # each fresh token twice: the second may be a cache hit
            while len(mix) < n:
                mix.append(rng.choice(valid_pool))
            rng.shuffle(mix)
            for token in mix:
                requests.append(
                    {
                        "target": target,
                        "kind": token.kind if token else "missing",
                        "token": token.value if token else None,
                        "user_id": token.user_id if token else None,
                        "cached": bool(token and token.value in self.cached[target]),
                    }
                )
        targets = {name: server.url for name, server in self.servers.items()}
        return {"targets": targets, "concurrency": s.concurrency, "requests": requests}

    def _generate(self, plan: dict[str, Any]) -> list[Any]:
        plan_path = self.workdir / "plan.json"
        out_path = self.workdir / "rows.json"
        plan_path.write_text(json.dumps(plan))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(  # noqa: S603 (our interpreter, our module)
            [sys.executable, "-m", "loadtest.gen", str(plan_path), str(out_path)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{proc.stderr[-3000:]}")
        rows: list[Any] = json.loads(out_path.read_text())
        return rows

    def _samples(self) -> dict[str, Sample]:
        return {
            name: server.sample(upstream_port=self.proxies[name].port)
            for name, server in self.servers.items()
        }

    def _phase(
        self,
        name: str,
        cycle: int,
        fault: Any = None,
        heal: Any = None,
        invalid: int | None = None,
        steady: bool = False,
    ) -> list[PhaseResult]:
        s = self.settings
        if steady:
            # Only tokens seen before: nothing new to cache, so memory must not grow.
            fresh, invalid_tokens = [], self._last_invalid
        else:
            fresh = self._fresh(s.fresh_per_phase)
            invalid_tokens = self._invalid(s.invalid_per_phase if invalid is None else invalid)
            self._last_invalid = invalid_tokens
        before = self._samples()
        sent_before = {n: p.validations for n, p in self.proxies.items()}
        started = time.monotonic()
        if fault is not None:
            fault()
        plan = self._plan(fresh, invalid_tokens)
        rows = self._generate(plan)
        recovery: dict[str, float] = {}
        if heal is not None:
            recovery = heal() or {}
        seconds = time.monotonic() - started
        after = self._samples()
        results = []
        for target in self.servers:
            result = PhaseResult(server=target, phase=name, cycle=cycle, seconds=round(seconds, 1))
            for request, row in _tally(result, plan["requests"], rows):
                status, _latency, seen_user, _ = row
                valid = request["kind"] in ("valid", "fresh")
                if status == 200 and valid and seen_user == request["user_id"]:
                    self.cached[target].add(request["token"])
            result.validations_sent = self.proxies[target].validations - sent_before[target]
            result.before = before[target].as_dict()
            result.after = after[target].as_dict()
            result.recovery_s = recovery.get(target)
            self.rss[target].append(after[target].rss_kb)
            results.append(result)
        self.results.extend(results)
        for r in results:
            self.log(
                f"[{cycle}] {name:17s} {r.server:8s} {r.requests:5d} req {r.statuses} "
                f"wrong+ {r.wrongly_accepted} wrong- {r.wrongly_rejected_cached} "
                f"p50 {r.p50_ms}ms p99 {r.p99_ms}ms calls {r.validations_sent}"
                + (f" recovery {r.recovery_s}s" if r.recovery_s is not None else "")
            )
        return results

    def _count_calls(self, label: str, since: int) -> int:
        now = self.keystone.validation_count()
        self.keystone_calls[label] = self.keystone_calls.get(label, 0) + now - since
        return now

    def _delay(self, seconds: float) -> None:
        for proxy in self.proxies.values():
            proxy.set(delay=seconds)

    def _restart_keystone(self) -> dict[str, float]:
        self.keystone.start()
        return self._await_recovery()

    def _unstall(self) -> dict[str, float]:
        self._delay(0.0)
        return self._await_recovery()

    def _await_recovery(self) -> dict[str, float]:
        """Seconds until each server validates a never-seen valid token again."""
        started = time.monotonic()
        probes = {name: self._fresh(1)[0] for name in self.servers}
        recovered: dict[str, float] = {}
        while len(recovered) < len(self.servers):
            if time.monotonic() - started > self.settings.recovery_limit:
                raise RuntimeError(f"no recovery within {self.settings.recovery_limit}s")
            for name, server in self.servers.items():
                if name in recovered:
                    continue
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                try:
                    conn.request("GET", "/items", headers={"X-Auth-Token": probes[name].value})
                    if conn.getresponse().status == 200:
                        recovered[name] = round(time.monotonic() - started, 2)
                        self.cached[name].add(probes[name].value)
                finally:
                    conn.close()
            time.sleep(0.1)
        return recovered

    def _stale_outage(self) -> None:
        """Keystone down for longer than ``cache_time`` with ``stale_if_error`` on."""
        s = self.settings
        servers: dict[str, Server] = {}
        try:
            for kind in ("gunicorn", "uvicorn"):
                config = {
                    "validator": "keystone",
                    "keystone_url": self.keystone.url,
                    "service": self._service(),
                    "timeout": s.validator_timeout,
                    "options": {
                        "cache_time": s.stale_cache_time,
                        "stale_if_error": s.stale_if_error,
                    },
                }
                servers[kind] = Server(kind, config, self.workdir, threads=s.server_threads)
                servers[kind].start()
            warm = {name: self._fresh(s.stale_tokens) for name in servers}
            doomed = {name: self._fresh(s.stale_revoked) for name in servers}
            for name, server in servers.items():
                for token in warm[name] + doomed[name]:
                    assert _get(server, token.value) == 200, "a valid token was refused"
            for name in servers:
                for token in doomed[name]:
                    self.keystone.revoke(token.value)
            time.sleep(s.stale_cache_time + 0.5)
            for name, server in servers.items():  # each server sees the revoked ones refused
                for token in doomed[name]:
                    assert _get(server, token.value) == 401, "a revoked token was accepted"
            started = time.monotonic()
            self.keystone.stop()
            time.sleep(s.stale_cache_time + 0.5)  # every entry is past cache_time now
            rng = secrets.SystemRandom()
            requests = []
            for name in servers:
                revoked = [Token(t.value, None, "revoked") for t in doomed[name]]
                fresh = self._fresh(s.fresh_per_phase)
                for _ in range(s.requests_per_phase // 2):
                    requests.append(_stale_request(name, rng.choice(warm[name]), True))
                requests += [_stale_request(name, t, False) for t in revoked * 4]
                requests += [_stale_request(name, t, False) for t in fresh]
            rng.shuffle(requests)
            before = {name: server.sample(self.keystone.port) for name, server in servers.items()}
            plan = {
                "targets": {name: server.url for name, server in servers.items()},
                "concurrency": s.concurrency,
                "requests": requests,
            }
            rows = self._generate(plan)
            self.keystone.start()
            recovery = self._recovered(servers)
            after = {name: server.sample(self.keystone.port) for name, server in servers.items()}
            for name, server in servers.items():
                result = PhaseResult(
                    server=name,
                    phase="keystone-down-stale",
                    cycle=s.cycles,
                    seconds=round(time.monotonic() - started, 1),
                    recovery_s=recovery[name],
                    before=before[name].as_dict(),
                    after=after[name].as_dict(),
                )
                _tally(result, requests, rows)
                result.stale_served = int(server.stats().get("stale_served", 0))
                self.results.append(result)
                self.log(
                    f"[stale] {name:8s} {result.requests:5d} req {result.statuses} "
                    f"wrong+ {result.wrongly_accepted} wrong- {result.wrongly_rejected_cached} "
                    f"stale {result.stale_served} recovery {result.recovery_s}s"
                )
        finally:
            for server in servers.values():
                server.stop()

    def _recovered(self, servers: dict[str, Server]) -> dict[str, float]:
        """Seconds until each of ``servers`` validates a never-seen token again."""
        started = time.monotonic()
        probes = {name: self._fresh(1)[0] for name in servers}
        recovered: dict[str, float] = {}
        while len(recovered) < len(servers):
            if time.monotonic() - started > self.settings.recovery_limit:
                raise RuntimeError(f"no recovery within {self.settings.recovery_limit}s")
            for name, server in servers.items():
                if name not in recovered and _get(server, probes[name].value) == 200:
                    recovered[name] = round(time.monotonic() - started, 2)
            time.sleep(0.1)
        return recovered

    def run(self) -> dict[str, Any]:
        """Every phase, ``settings.cycles`` times; the figures as a JSON-ready dict."""
        s = self.settings
        run_started = time.monotonic()
        self.prepare_tokens()
        calls = self.keystone.validation_count()
        for cycle in range(1, s.cycles + 1):
            self._phase("normal", cycle)
            calls = self._count_calls("normal", calls)
            self._phase(
                "keystone-down", cycle, fault=self.keystone.stop, heal=self._restart_keystone
            )
            calls = self._count_calls("keystone-down", calls)
            self._phase(
                "keystone-slow",
                cycle,
                fault=lambda: self._delay(s.slow_delay),
                heal=self._unstall,
                invalid=4,
            )
            calls = self._count_calls("keystone-slow", calls)
            self._phase(
                "keystone-stalled",
                cycle,
                fault=lambda: self._delay(s.stall_delay),
                heal=self._unstall,
                invalid=3,
            )
            calls = self._count_calls("keystone-stalled", calls)
            if self.redis is not None:
                redis = self.redis
                self._phase("redis-down", cycle, fault=redis.stop, heal=redis.start)
                calls = self._count_calls("redis-down", calls)
            self._phase("normal-after", cycle)
            calls = self._count_calls("normal-after", calls)
        self._stale_outage()
        calls = self._count_calls("keystone-down-stale", calls)
        for _ in range(s.steady_phases):
            # Tokens seen before only: the caches keep the same keys (a rejection that
            # expired from the negative cache is asked again and stored under its old key).
            self._phase("steady", s.cycles, steady=True)
            calls = self._count_calls("steady", calls)
        return {
            "settings": s.as_dict(),
            "redis": self.redis is not None,
            "seconds": round(time.monotonic() - run_started, 1),
            "phases": [r.as_dict() for r in self.results],
            "keystone_validations_by_phase": self.keystone_calls,
            "rss_kb": self.rss,
            "middleware_stats": {name: server.stats() for name, server in self.servers.items()},
            "summary": summarize(self.results),
        }


def _stale_request(target: str, token: Token, cached: bool) -> dict[str, Any]:
    return {
        "target": target,
        "kind": token.kind,
        "token": token.value,
        "user_id": token.user_id,
        "cached": cached,
    }


def summarize(results: list[PhaseResult]) -> dict[str, Any]:
    """Totals the tests assert on."""
    first_normal: dict[str, PhaseResult] = {}
    last: dict[str, PhaseResult] = {}
    for r in results:
        if r.phase == "keystone-down-stale":
            continue  # servers of its own
        if r.phase == "normal" and r.server not in first_normal:
            first_normal[r.server] = r
        last[r.server] = r
    leaks = {}
    for server, first in first_normal.items():
        end = last[server].after
        leaks[server] = {
            key: end[key] - first.after[key] for key in ("threads", "fds", "connections")
        }
    return {
        "requests": sum(r.requests for r in results),
        "wrongly_accepted": sum(r.wrongly_accepted for r in results),
        "wrongly_rejected_cached": sum(r.wrongly_rejected_cached for r in results),
        "valid_told_invalid": sum(r.valid_told_invalid for r in results),
        "server_errors": sum(r.server_errors for r in results),
        "unavailable": sum(r.unavailable for r in results),
        "growth_since_first_phase": leaks,
        "median_latency_ms": statistics.median([r.p50_ms for r in results]) if results else 0,
    }
