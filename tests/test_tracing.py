"""OpenTelemetry spans (SDK in-memory exporter) around authentications and Keystone calls."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hardening._identity_server import Answer, IdentityServer
from helpers import BAD, GOOD, Counting, WSGIRecorder, call_wsgi, environ, full_identity
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from authmw import WSGIAuthMiddleware
from authmw.tracing import Tracing
from authmw.validators.introspection import HTTPIntrospectionValidator
from authmw.validators.keystone import KeystoneValidator


@pytest.fixture
def spans() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider), exporter
    provider.shutdown()


def request(middleware: Any, token: str, **headers: str) -> int:
    pairs = [("X-Auth-Token", token), *headers.items()]
    return call_wsgi(middleware, environ(headers=pairs)).code


def test_a_span_per_authentication_with_its_cache_outcome(
    spans: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = spans
    validator = Counting({GOOD: full_identity()})
    middleware = WSGIAuthMiddleware(WSGIRecorder(), validator, tracing=tracing)
    assert request(middleware, GOOD) == 200
    assert request(middleware, GOOD) == 200
    assert request(middleware, BAD) == 401
    assert request(middleware, BAD) == 401
    found = [s for s in exporter.get_finished_spans() if s.name == "authmw.authenticate"]
    assert [(s.attributes["authmw.outcome"], s.attributes["authmw.cache"]) for s in found] == [
        ("allowed", "miss"),
        ("allowed", "hit"),
        ("rejected", "miss"),
        ("rejected", "hit"),
    ]
    # No user identifiers unless asked for.
    assert all("enduser.id" not in s.attributes for s in found)


def test_identities_in_spans_only_when_switched_on() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    middleware = WSGIAuthMiddleware(
        WSGIRecorder(),
        Counting({GOOD: full_identity()}),
        tracing=Tracing(provider, identities=True),
    )
    request(middleware, GOOD)
    (span,) = exporter.get_finished_spans()
    assert span.attributes["enduser.id"] == "u-123"


def test_one_trace_spans_the_middleware_and_the_keystone_call(
    keystone: Any, spans: tuple[Tracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = spans
    validator = KeystoneValidator(keystone.url, **keystone.service_credentials)
    middleware = WSGIAuthMiddleware(WSGIRecorder(), validator, tracing=tracing)
    token = keystone.issue_token(
        "demo-user", "demo-secret", "demo", project="demo-project", project_domain="demo"
    )
    assert request(middleware, token, **{"X-OpenStack-Request-ID": "req-trace-1"}) == 200
    finished = exporter.get_finished_spans()
    (parent,) = [s for s in finished if s.name == "authmw.authenticate"]
    calls = [s for s in finished if s.name.endswith("identity service")]
    validation = [
        s for s in calls if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]
    assert validation, [s.name for s in finished]
    assert all(s.context.trace_id == parent.context.trace_id for s in validation)
    assert all(token not in json.dumps(dict(s.attributes)) for s in finished)


def test_the_trace_context_and_request_id_reach_the_identity_service(
    spans: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = spans
    with IdentityServer() as server:
        server.answer = Answer(
            200, json.dumps({"active": True, "sub": "u-1", "exp": 4102444800}).encode()
        )
        validator = HTTPIntrospectionValidator(
            server.url + "/introspect", client_id="c", client_secret="s"
        )
        middleware = WSGIAuthMiddleware(WSGIRecorder(), validator, tracing=tracing)
        assert request(middleware, GOOD, **{"X-Request-Id": "req-abc"}) == 200
        seen = server.served[-1].headers
    (parent,) = [s for s in exporter.get_finished_spans() if s.name == "authmw.authenticate"]
    traceparent = seen["traceparent"]
    assert format(parent.context.trace_id, "032x") in traceparent
    assert seen["x-openstack-request-id"] == "req-abc"


def test_without_tracing_nothing_of_opentelemetry_is_imported() -> None:
    code = (
        "import sys, authmw\n"
        "from authmw import WSGIAuthMiddleware, InMemoryValidator\n"
        "WSGIAuthMiddleware(lambda e, s: [], InMemoryValidator())\n"
        "print(any(m.startswith('opentelemetry') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
