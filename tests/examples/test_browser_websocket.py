"""examples/browser_websocket.py: the page, and a socket opened the way its script opens it."""

from __future__ import annotations

import pytest
from examples_support import load_example
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

example = load_example("browser_websocket.py")


def test_the_page_offers_the_token_as_a_subprotocol() -> None:
    with TestClient(example.create_app()) as client:
        page = client.get("/").text
    assert 'new WebSocket(url, ["bearer", token])' in page


def test_a_socket_opened_like_the_page_does() -> None:
    with (
        TestClient(example.create_app()) as client,
        client.websocket_connect("/events", subprotocols=["bearer", "demo-member-token"]) as ws,
    ):
        assert ws.accepted_subprotocol == "bearer"
        ws.send_text("hello")
        assert ws.receive_json() == {"user": "member", "echo": "hello"}


def test_a_bad_token_is_refused_before_accept() -> None:
    with (
        TestClient(example.create_app()) as client,
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect("/events", subprotocols=["bearer", "not-a-token"]),
    ):
        pass
    assert denied.value.status_code == 401
