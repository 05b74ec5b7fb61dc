from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Blueprint, Flask, jsonify

import authmw.contrib.flask as flask_contrib
from authmw import ConfigurationError, Forbidden, InMemoryValidator, WSGIAuthMiddleware
from authmw.contrib.flask import AuthMW, authorize, current_identity, get_identity, protect, require
from authmw.policy import PolicyError, require_any_role

from .conftest import (
    ADMIN_TOKEN,
    BAD_TOKEN,
    ITEM_PROJECTS,
    MEMBER_TOKEN,
    OTHER_ADMIN_TOKEN,
    POLICY,
    READER_TOKEN,
    Unavailable,
    error_of,
)


def item_target(item_id: str) -> dict[str, Any]:
    return {"project_id": ITEM_PROJECTS[item_id]}


def build_app(validator: Any, **options: Any) -> Flask:
    app = Flask(__name__)
    options.setdefault("public_routes", ["GET /health"])
    AuthMW(app, validator, policy=POLICY, **options)

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok", "user": get_identity() and get_identity().user_id}  # type: ignore[union-attr]

    @app.get("/items")
    @require("items:list")
    def list_items() -> Any:
        return {"user": current_identity.user_id}

    @app.post("/items")
    @require("items:create")
    def create_item() -> Any:
        return {"created_by": current_identity.user_id}, 201

    @app.delete("/items/<item_id>")
    @require("items:delete", target=item_target)
    def delete_item(item_id: str) -> Any:
        return "", 204

    @app.put("/items/<item_id>")
    def update_item(item_id: str) -> Any:
        identity = authorize("rule:admin_of_project or role:member", item_target(item_id))
        return {"updated_by": identity.user_id}

    @app.get("/async")
    @require(require_any_role("reader"))
    async def async_view() -> Any:
        return {"async": True}

    @app.get("/raises")
    def raises() -> Any:
        raise Forbidden("not today")

    admin = Blueprint("admin", __name__, url_prefix="/admin")
    protect(admin, "role:admin", exempt=["admin.ping"])

    @admin.get("/stats")
    def stats() -> Any:
        return jsonify(roles=list(current_identity.roles))

    @admin.get("/ping")
    def ping() -> Any:
        return {"pong": True}

    reports = Blueprint("reports", __name__)

    @reports.get("/reports")
    @require("role:reader and project_id:p1")
    def report() -> Any:
        return {"report": True}

    app.register_blueprint(admin)
    app.register_blueprint(reports)
    return app


@pytest.fixture
def client(validator: InMemoryValidator) -> Any:
    return build_app(validator).test_client()


def headers(token: str) -> dict[str, str]:
    return {"X-Auth-Token": token}


def test_public_route_needs_no_token(client: Any) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "user": None}


def test_no_token_is_401_with_challenge(client: Any) -> None:
    response = client.get("/items")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Keystone realm="authmw"'
    error_of(response.data, 401)


def test_bad_token_is_401(client: Any) -> None:
    response = client.get("/items", headers=headers(BAD_TOKEN))
    assert response.status_code == 401
    error_of(response.data, 401)


def test_allowed_requests(client: Any) -> None:
    assert client.get("/items", headers=headers(READER_TOKEN)).get_json() == {"user": "u-reader"}
    response = client.post("/items", headers=headers(MEMBER_TOKEN))
    assert response.status_code == 201
    assert response.get_json() == {"created_by": "u-member"}
    assert client.delete("/items/i1", headers=headers(ADMIN_TOKEN)).status_code == 204


def test_denied_requests_are_403_never_401(client: Any) -> None:
    response = client.post("/items", headers=headers(READER_TOKEN))
    assert response.status_code == 403
    assert "WWW-Authenticate" not in response.headers
    assert response.headers["Content-Type"] == "application/json"
    assert error_of(response.data, 403) == "policy does not allow items:create"
    # admin, but of another project than the item's
    response = client.delete("/items/i1", headers=headers(OTHER_ADMIN_TOKEN))
    assert response.status_code == 403
    error_of(response.data, 403)
    assert client.delete("/items/i1", headers=headers(MEMBER_TOKEN)).status_code == 403


def test_authorize_inside_a_view(client: Any) -> None:
    assert client.put("/items/i2", headers=headers(OTHER_ADMIN_TOKEN)).get_json() == {
        "updated_by": "u-other"
    }
    assert client.put("/items/i2", headers=headers(MEMBER_TOKEN)).status_code == 200
    response = client.put("/items/i1", headers=headers(READER_TOKEN))
    assert response.status_code == 403
    error_of(response.data, 403)


def test_async_view_and_requirement_object(client: Any) -> None:
    assert client.get("/async", headers=headers(READER_TOKEN)).get_json() == {"async": True}
    assert client.get("/async", headers=headers(OTHER_ADMIN_TOKEN)).status_code == 403


def test_blueprints(client: Any) -> None:
    assert client.get("/admin/stats", headers=headers(ADMIN_TOKEN)).get_json() == {
        "roles": ["admin", "member"]
    }
    response = client.get("/admin/stats", headers=headers(MEMBER_TOKEN))
    assert response.status_code == 403
    error_of(response.data, 403)
    assert client.get("/admin/ping", headers=headers(MEMBER_TOKEN)).get_json() == {"pong": True}
    assert client.get("/reports", headers=headers(READER_TOKEN)).status_code == 200
    assert client.get("/reports", headers=headers(OTHER_ADMIN_TOKEN)).status_code == 403


def test_raised_access_errors_become_json_responses(client: Any) -> None:
    response = client.get("/raises", headers=headers(MEMBER_TOKEN))
    assert response.status_code == 403
    assert error_of(response.data, 403) == "not today"


def test_identity_service_down_is_503(validator: InMemoryValidator) -> None:
    client = build_app(Unavailable()).test_client()
    response = client.get("/items", headers=headers(MEMBER_TOKEN))
    assert response.status_code == 503
    error_of(response.data, 503)


def test_delayed_decision_lets_the_decorator_answer_401(validator: InMemoryValidator) -> None:
    client = build_app(
        validator, delay_auth_decision=True, www_authenticate_uri="https://keystone.example/v3"
    ).test_client()
    for token in (None, BAD_TOKEN):
        response = client.get("/items", headers=headers(token) if token else {})
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Keystone uri="https://keystone.example/v3"'
        error_of(response.data, 401)
    assert client.get("/items", headers=headers(READER_TOKEN)).status_code == 200


def test_middleware_installed_separately(validator: InMemoryValidator) -> None:
    app = Flask(__name__)
    AuthMW(app, policy=POLICY)  # policy and error handlers only
    app.wsgi_app = WSGIAuthMiddleware(app.wsgi_app, validator, delay_auth_decision=True)  # type: ignore[method-assign]

    @app.post("/items")
    @require("items:create")
    def create() -> Any:
        return {"ok": True}

    client = app.test_client()
    assert client.post("/items", headers=headers(MEMBER_TOKEN)).status_code == 200
    assert client.post("/items", headers=headers(READER_TOKEN)).status_code == 403
    assert client.post("/items").status_code == 401


def test_without_any_middleware_every_request_is_401_and_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flask_contrib, "_warned_missing", False)
    app = Flask(__name__)

    @app.get("/x")
    @require("role:admin")
    def view() -> Any:
        return "never"

    with caplog.at_level(logging.WARNING, logger="authmw.contrib.flask"):
        response = app.test_client().get("/x", headers=headers(ADMIN_TOKEN))
    assert response.status_code == 401
    error_of(response.data, 401)
    assert "wrap the app with AuthMW" in caplog.text


def test_expression_without_a_policy(validator: InMemoryValidator) -> None:
    app = Flask(__name__)
    AuthMW(app, validator)

    @app.get("/x")
    @require("role:admin or role:reader")
    def view() -> Any:
        return "ok"

    client = app.test_client()
    assert client.get("/x", headers=headers(READER_TOKEN)).status_code == 200
    assert client.get("/x", headers=headers(OTHER_ADMIN_TOKEN)).status_code == 200
    assert client.get("/x", headers=headers(MEMBER_TOKEN)).status_code == 200  # has reader
    app2 = Flask(__name__)
    AuthMW(app2, validator)

    @app2.get("/y")
    @require("role:admin")
    def view2() -> Any:
        return "ok"

    assert app2.test_client().get("/y", headers=headers(MEMBER_TOKEN)).status_code == 403


def test_syntax_errors_surface_when_decorating() -> None:
    with pytest.raises(PolicyError, match="expected a check"):
        require("role:admin or")


def test_unusable_rule_denies_and_is_logged(
    validator: InMemoryValidator, caplog: pytest.LogCaptureFixture
) -> None:
    app = Flask(__name__)
    AuthMW(app, validator, policy=POLICY)

    @app.get("/x")
    @require("rule:no_such_rule")
    def view() -> Any:
        return "never"

    with caplog.at_level(logging.ERROR, logger="authmw.contrib"):
        response = app.test_client().get("/x", headers=headers(ADMIN_TOKEN))
    assert response.status_code == 403
    error_of(response.data, 403)
    assert "no_such_rule" in caplog.text


def test_options_without_validator_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match="need a validator"):
        AuthMW(Flask(__name__), delay_auth_decision=True)
