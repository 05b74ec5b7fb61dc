"""Identity.token_body kept compressed: the same data on every read, read-only, small."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from types import MappingProxyType

import pytest

from authmw import Identity
from authmw._compact import CompactJSON, frozen, thawed

BODY = {
    "methods": ["password"],
    "user": {"domain": {"id": "default", "name": "Default"}, "id": "u" * 32, "name": "demo"},
    "audit_ids": ["SN6zsK-FRACe296XXUZKLw"],
    "expires_at": "2099-11-23T13:27:43.000000Z",
    "roles": [{"id": "r" * 32, "name": "member"}],
    "is_domain": False,
    "extra": {"n": 1, "f": 1.5, "none": None, "text": "J\u00fcrgen \u2603"},
}


def test_a_json_body_reads_back_equal_and_read_only() -> None:
    body = CompactJSON.of(BODY)
    assert isinstance(body, CompactJSON)
    assert body == frozen(BODY)  # read as frozen data is: lists as tuples
    assert thawed(body) == json.loads(json.dumps(BODY))
    assert body["user"]["id"] == "u" * 32
    assert body.get("missing") is None and "roles" in body and len(body) == len(BODY)
    assert dict(body.items())["extra"]["text"] == "J\u00fcrgen \u2603"
    assert body["roles"] == ({"id": "r" * 32, "name": "member"},)  # lists as tuples
    with pytest.raises(TypeError):
        body["user"]["id"] = "mallory"  # type: ignore[index]


def test_it_is_much_smaller_than_its_json() -> None:
    body = CompactJSON.of(BODY)
    assert isinstance(body, CompactJSON)
    assert len(body._data) < len(json.dumps(BODY)) / 2


@pytest.mark.parametrize(
    "value",
    [
        {1: "an int key JSON would turn into a string"},
        {"when": datetime(2030, 1, 1, tzinfo=timezone.utc)},
        {"nan": float("nan")},
    ],
)
def test_data_json_would_change_is_kept_as_it_is(value: dict[object, object]) -> None:
    kept = CompactJSON.of(value)  # type: ignore[arg-type]
    assert not isinstance(kept, CompactJSON)
    assert isinstance(kept, MappingProxyType)
    assert list(kept) == list(value)


def test_a_member_of_a_json_text_reads_as_that_member_parsed() -> None:
    # Keystone's own text, separators and all: kept as it came, read as parsed.
    text = json.dumps({"token": BODY, "other": [1, 2]}).encode()
    body = CompactJSON.member(text, "token")
    assert body == frozen(json.loads(text)["token"])
    assert thawed(body) == json.loads(text)["token"]
    assert "other" not in body and body["user"]["name"] == "demo"
    assert CompactJSON.of(body) is body
    with pytest.raises(TypeError):
        body["user"]["id"] = "mallory"  # type: ignore[index]


def test_a_member_keeps_what_the_text_says_even_where_json_is_loose() -> None:
    # NaN and a repeated key parse the same way every time: the body read is the
    # body the validator saw.
    text = b'{"token": {"n": NaN, "k": 1, "k": 2}}'
    body = CompactJSON.member(text, "token")
    assert body["k"] == 2 and body["n"] != body["n"]


def test_identity_keeps_its_token_body_compact_and_equal() -> None:
    identity = Identity("u1", token_body=BODY)
    assert isinstance(identity.token_body, CompactJSON)
    assert identity.to_dict(include_token_body=True)["token_body"] == json.loads(json.dumps(BODY))
    again = Identity.from_dict(identity.to_dict(include_token_body=True))
    assert again.token_body == identity.token_body
    assert "demo" not in repr(identity.token_body)  # the repr shows no content
    stale_body, body = identity.served_stale().token_body, identity.token_body
    assert isinstance(stale_body, CompactJSON) and isinstance(body, CompactJSON)
    assert stale_body.packed()[0] is body.packed()[0]  # shared, not compressed again
