"""Drive the Django example's token admin and token API with Django's test client.

Run by tests/examples/test_django_admin.py in a process of its own (the
example's settings, not the test suite's): ``python django_admin_client.py``
with ``DJANGO_SETTINGS_MODULE=itemsite.settings``, ``AUTHMW_DB`` and
``DJANGO_DB`` set, the example project on ``sys.path``. It prints one JSON
object: every response it got (method, path, status, body), the secrets it
was shown, and the tokens issued behind its back (never shown to it).
"""

from __future__ import annotations

import json
import re
import sys
from collections import deque
from html.parser import HTMLParser
from typing import Any

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

from authmw.contrib.django_admin import get_store  # noqa: E402

SECRET = re.compile(r'<code id="secret">(amw_[0-9A-Za-z]{49})</code>')
ADMIN = "/admin/authmw_admin/storetoken/"


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.links.append(href)


class Session:
    def __init__(self) -> None:
        self.client = Client()
        self.responses: list[dict[str, Any]] = []

    def send(self, method: str, url: str, data: Any = None, **extra: Any) -> Any:
        call = getattr(self.client, method.lower())
        if data is not None and method in ("POST", "PUT") and "content_type" in extra:
            response = call(url, data=data, **extra)
        elif data is not None:
            response = call(url, data)
        else:
            response = call(url, **extra)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        self.responses.append(
            {
                "method": method,
                "url": url,
                "status": response.status_code,
                "headers": dict(response.items()),
                "body": body.decode("utf-8", "replace"),
            }
        )
        return response

    def secret(self) -> str:
        found = SECRET.findall(self.responses[-1]["body"])
        assert len(found) == 1, self.responses[-1]
        return str(found[0])


def main() -> None:
    call_command("migrate", verbosity=0, interactive=False)
    user = get_user_model().objects.create_superuser("root", "root@example.com", "x")
    store = get_store()
    hidden = {  # issued behind the admin's back: their secrets must never show up
        "alice": store.issue(user_name="alice", project_name="p1", roles=["member"], ttl=86400),
        "bob": store.issue(
            user_name="bob", roles=["member"], ttl=86400, read_only=True, scopes=["items:read"]
        ),
        "carol": store.issue(user_name="carol", ttl=86400, allowed_ips=["10.0.0.0/8"]),
    }
    s = Session()
    s.send("GET", "/admin/")  # not signed in: a redirect to the login page
    s.client.force_login(user)

    s.send("GET", ADMIN + "add/")
    issue = {"user_name": "dave", "project": "p1", "roles": "member", "ttl": "30d"}
    issue.update({"scopes": "items:read, items:write", "idle_ttl": "6h", "description": "ci"})
    s.send("POST", ADMIN + "add/", issue)
    issued = s.secret()
    issued_id = store.validate(issued).audit_ids[0]
    s.send("POST", ADMIN + "add/", {"user_name": "dave", "ttl": "3x"})  # a form error

    s.send("GET", ADMIN + f"{issued_id}/rotate/")
    s.send("POST", ADMIN + f"{issued_id}/rotate/", {"grace": "1h"})
    rotated = s.secret()
    s.send("GET", ADMIN + f"{hidden['carol'].id}/revoke/")
    s.send("POST", ADMIN + f"{hidden['carol'].id}/revoke/")
    s.send("POST", ADMIN, {"action": "revoke_selected", "_selected_action": [hidden["bob"].id]})

    # The self-service API, with alice's token (a caller of the site, not the admin).
    api = Client(HTTP_X_AUTH_TOKEN=hidden["alice"].token)
    s.client, admin_client = api, s.client
    s.send("GET", "/tokens/")
    s.send("POST", "/tokens/", json.dumps({"roles": ["member"]}), content_type="application/json")
    from_api = json.loads(s.responses[-1]["body"])["token"]
    s.send("GET", f"/tokens/{hidden['alice'].id}")
    s.send("GET", "/items")
    s.send("GET", "/api/items")
    s.client = admin_client

    # Scrape: every admin page reachable from the index, filters and searches included.
    seen: set[str] = set()
    queue = deque(["/admin/", ADMIN, ADMIN + "?q=alice", ADMIN + "?status=revoked"])
    while queue and len(seen) < 300:
        url = queue.popleft()
        if url in seen or "logout" in url:
            continue
        seen.add(url)
        response = s.send("GET", url)
        s.responses[-1]["crawled"] = True
        if response.status_code != 200 or "html" not in response.get("Content-Type", ""):
            continue
        parser = Links()
        parser.feed(s.responses[-1]["body"])
        for link in parser.links:
            if link.startswith("?"):
                link = url.split("?", 1)[0] + link
            # Breadth first; a page with _changelist_filters is the page without them.
            link = link.split("?_changelist_filters=", 1)[0]
            if link.startswith("/admin/") and link not in seen:
                queue.append(link)

    json.dump(
        {
            "responses": s.responses,
            "shown": {"issued": issued, "rotated": rotated, "api": from_api},
            "hidden": {name: t.token for name, t in hidden.items()},
            "ids": {"issued": issued_id, **{name: t.id for name, t in hidden.items()}},
            "crawled": sorted(seen),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
