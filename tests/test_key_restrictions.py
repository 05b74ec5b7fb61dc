"""The restriction kinds of API keys: client networks, read-only, idle deadline; their logs."""

from __future__ import annotations

import logging
import re

import pytest

from authmw._key_restrictions import client_address, normalize_networks, register_uses
from authmw.restrictions import CHECKS, RequestFacts, refusal


def facts(client: str | None = "10.1.2.3", method: str = "GET") -> RequestFacts:
    return RequestFacts(method, "/items", client, False)


@pytest.mark.parametrize(
    ("networks", "client", "allowed"),
    [
        (["10.0.0.0/8"], "10.1.2.3", True),
        (["10.0.0.0/8"], "11.1.2.3", False),
        (["10.0.0.0/8"], "::ffff:10.1.2.3", True),  # IPv4-mapped: a dual-stack server's view
        (["10.0.0.0/8"], "::ffff:11.1.2.3", False),
        (["::ffff:10.0.0.0/104"], "10.9.9.9", True),  # a mapped network is an IPv4 one
        (["2001:db8::/32"], "2001:db8::7", True),
        (["2001:db8::/32"], "[2001:db8::7]", True),
        (["2001:db8::/32"], "2001:db8::7%eth0", True),
        (["2001:db8::/32"], "2001:db9::7", False),
        (["2001:db8::/32"], "10.1.2.3", False),
        (["192.0.2.7"], "192.0.2.7", True),  # a single address
        (["192.0.2.7"], "192.0.2.8", False),
        (["10.0.0.0/8", "192.0.2.0/24"], "192.0.2.200", True),
        (["0.0.0.0/0"], "unix:/run/app.sock", False),  # not an address: refused
        (["0.0.0.0/0"], None, False),
        (["0.0.0.0/0"], "", False),
    ],
)
def test_client_networks(networks: list[str], client: str | None, allowed: bool) -> None:
    data = list(normalize_networks(networks))
    answer = refusal({"ips": data}, facts(client))
    if allowed:
        assert answer is None
    else:
        assert answer is not None
        assert (answer.status, answer.reason) == (403, "ip")
        assert answer.message == "this token may not be used from this address"


def test_networks_are_normalised_and_bad_ones_named() -> None:
    assert normalize_networks(["10.1.2.3/8", " 10.0.0.0/8 ", "::ffff:192.0.2.0/120"]) == (
        "10.0.0.0/8",
        "192.0.2.0/24",
    )
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/33'")):
        normalize_networks(["10.0.0.0/33"])
    with pytest.raises(ValueError, match=re.escape("'example.com'")):
        normalize_networks(["example.com"])
    with pytest.raises(TypeError):
        normalize_networks("10.0.0.0/8")
    assert str(client_address("::ffff:10.1.2.3")) == "10.1.2.3"


def test_read_only_refuses_other_methods_with_a_clear_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="authmw.restrictions")
    data = {"methods": ["GET", "HEAD", "OPTIONS"]}
    for method in ("GET", "HEAD", "OPTIONS", "get"):
        assert refusal(data, facts(method=method)) is None
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        answer = refusal(data, facts(method=method))
        assert answer is not None and answer.status == 403
        assert answer.message == "this token allows only GET, HEAD, OPTIONS requests"
    assert "reason: read-only" in caplog.records[-1].getMessage()


class Recorder:
    def __init__(self, now: float) -> None:
        self.now = now
        self.uses: dict[str, float] = {}

    def clock(self) -> float:
        return self.now

    def last_use(self, token_id: str) -> float | None:
        return self.uses.get(token_id)

    def note_use(self, token_id: str, when: float, window: float) -> None:
        self.uses[token_id] = when


def test_idle_deadline_moves_with_uses_seen_here(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="authmw.restrictions")
    recorder = Recorder(1000.0)
    register_uses("store-x", recorder)
    try:
        data = {"idle": {"store": "store-x", "token": "t1", "ttl": 60.0, "deadline": 1060.0}}
        assert refusal(data, facts()) is None
        assert recorder.uses == {"t1": 1000.0}
        recorder.now = 1059.0
        assert refusal(data, facts()) is None  # a use: the deadline is now 1119
        recorder.now = 1118.0
        assert refusal(data, facts()) is None
        recorder.now = 1178.0
        answer = refusal(data, facts())
        assert answer is not None
        assert answer.status == 401
        assert answer.message == "The request you have made requires authentication."
        assert "reason: idle" in caplog.records[-1].getMessage()
        assert "t1" in caplog.records[-1].getMessage()
    finally:
        register_uses("store-x", recorder, remove=True)


def test_idle_without_the_store_in_this_process_uses_the_deadline_it_carries() -> None:
    data = {"idle": {"store": "elsewhere", "token": "t1", "ttl": 60.0, "deadline": 1e12}}
    assert refusal(data, facts()) is None
    data["idle"]["deadline"] = 1.0
    answer = refusal(data, facts())
    assert answer is not None and answer.status == 401


def test_the_kinds_are_registered() -> None:
    assert {"methods", "ips", "idle"} <= set(CHECKS)


def test_a_refusal_names_the_token_id_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="authmw.restrictions")
    assert refusal({"methods": ["GET"]}, facts(method="POST"), "audit-42") is not None
    assert "refused token audit-42 on POST /items (reason: read-only)" in caplog.text


def test_a_401_refusal_challenges_as_the_tokens_source() -> None:
    from authmw import Identity, InMemoryValidator
    from authmw.wsgi import WSGIAuthMiddleware

    expired_idle = {"idle": {"store": "elsewhere", "token": "t1", "ttl": 60.0, "deadline": 1.0}}
    identity = Identity("u1", audit_ids=("audit-9",), restrictions=expired_idle)
    app = WSGIAuthMiddleware(
        lambda environ, start: (start("200 OK", []), [b"ok"])[1],
        validator=InMemoryValidator({"key-1": identity}),
        token_sources=["authorization: Bearer"],
    )
    answers: list[tuple[str, list[tuple[str, str]]]] = []
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/items",
        "REMOTE_ADDR": "10.1.2.3",
        "HTTP_AUTHORIZATION": "Bearer key-1",
        "wsgi.url_scheme": "http",
    }
    for _ in range(2):  # the first validates, the second is a cache hit
        app(dict(environ), lambda status, headers, exc=None: answers.append((status, headers)))
    for status, headers in answers:
        assert status.startswith("401")
        challenge = dict(headers)["WWW-Authenticate"]
        assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
