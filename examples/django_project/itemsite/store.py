"""The items, in memory (shared by the plain views and the REST framework API)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from authmw import Identity

ITEMS: dict[str, dict[str, Any]] = {}
_lock = threading.Lock()


def add_item(name: str, identity: Identity) -> dict[str, Any]:
    item = {
        "id": uuid.uuid4().hex,
        "name": name,
        "project_id": identity.project_id,
        "owner": identity.user_id,
    }
    with _lock:
        ITEMS[item["id"]] = item
    return item


def remove_item(item_id: str) -> None:
    with _lock:
        ITEMS.pop(item_id, None)
