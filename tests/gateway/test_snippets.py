"""The shipped gateway configurations stay in step with authmw.headers and authmw.responses."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from authmw import headers as h
from authmw.responses import NOT_AUTHENTICATED, UNAVAILABLE, Responses, error_body

GATEWAYS = Path(__file__).resolve().parents[2] / "examples" / "gateways"


def test_nginx_copies_every_injected_header_and_clears_every_stripped_one() -> None:
    text = (GATEWAYS / "nginx" / "authmw-location.conf").read_text()
    copied = dict(re.findall(r"auth_request_set \$(authmw_\w+) \$upstream_http_(\w+);", text))
    set_to = dict(re.findall(r"^proxy_set_header ([\w-]+) (\S+);", text, re.MULTILINE))
    assert set(set_to) == set(h.STRIPPED_HEADERS)
    for name in h.INJECTED_HEADERS:
        variable = set_to[name].removeprefix("$")
        assert copied[variable] == name.lower().replace("-", "_"), name
    for name in h.STRIPPED_HEADERS - set(h.INJECTED_HEADERS):
        assert set_to[name] == '""', name


def test_nginx_bodies_are_authmws() -> None:
    text = (GATEWAYS / "nginx" / "authmw-server.conf").read_text()
    bodies = re.findall(r"return (\d+) '([^']*)';", text)
    assert (str(401), error_body(401, NOT_AUTHENTICATED).decode()) in bodies
    assert (str(503), error_body(503, UNAVAILABLE).decode()) in bodies
    assert (str(403), error_body(403, "Forbidden.").decode()) in bodies
    too_many = Responses("Keystone", lambda: 5.0).too_many(1).body.decode()
    assert (str(429), too_many) in bodies
    for status, body in bodies:
        if status == "500":
            continue  # nginx's own failure, not an answer of authmw's
        assert error_body(int(status), "x")[:40] == body.encode()[:40], status


def test_traefik_regex_covers_exactly_the_stripped_headers() -> None:
    config = yaml.safe_load((GATEWAYS / "traefik" / "dynamic.yaml").read_text())
    forward = config["http"]["middlewares"]["authmw"]["forwardAuth"]
    assert forward["trustForwardHeader"] is False
    pattern = re.compile(forward["authResponseHeadersRegex"].replace("^(?i)", "(?i)^"))
    for name in h.STRIPPED_HEADERS:
        for spelling in (name, name.lower(), name.upper(), name.replace("-", "_")):
            assert pattern.fullmatch(spelling), spelling
    for other in ("X-Auth-Token", "Authorization", "X-Forwarded-Uri", "Fiware-Service", "X-User"):
        assert bool(pattern.fullmatch(other)) == (other in h.STRIPPED_HEADERS), other


def test_envoy_lists_every_injected_header() -> None:
    config = yaml.safe_load((GATEWAYS / "envoy" / "envoy.yaml").read_text())
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    options = manager["typed_config"]
    assert options["common_http_protocol_options"]["headers_with_underscores_action"] == (
        "DROP_HEADER"
    )
    authz = options["http_filters"][0]["typed_config"]
    upstream = authz["http_service"]["authorization_response"]["allowed_upstream_headers"]
    assert {p["exact"] for p in upstream["patterns"]} == {n.lower() for n in h.INJECTED_HEADERS}
    sent = {p["exact"] for p in authz["allowed_headers"]["patterns"]}
    assert {"x-auth-token", "x-service-token", "fiware-service", "fiware-servicepath"} <= sent
    assert authz["failure_mode_allow"] is False
