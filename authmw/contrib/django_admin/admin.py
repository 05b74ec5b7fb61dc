"""The ModelAdmin of the token store: read-only records; issue, rotate and revoke through the store.

A secret is rendered once, in the answer to the request that made it
(``Cache-Control: no-store``): never put in a message, a log entry, a
redirect or a form.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import ExpressionWrapper, F, FloatField, Q, QuerySet
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from ...errors import AuthError
from ...store import parse_duration
from . import get_store
from .models import StoreToken

_UTC_FORMAT = "%Y-%m-%d %H:%M UTC"
Fn = TypeVar("Fn", bound=Callable[..., Any])


def _display(description: str, ordering: str | None = None) -> Callable[[Fn], Fn]:
    """``admin.display``, typed."""
    return cast("Callable[[Fn], Fn]", admin.display(description=description, ordering=ordering))


def _action(description: str) -> Callable[[Fn], Fn]:
    """``admin.action``, typed."""
    return cast("Callable[[Fn], Fn]", admin.action(description=description))


def _when(value: Any) -> str:
    return "-" if value is None else value.strftime(_UTC_FORMAT)


def _lifetime() -> float | None:
    lifetime: float | None = get_store().policy.max_lifetime
    return lifetime


class StatusFilter(admin.SimpleListFilter):  # type: ignore[misc]
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("active", "active"),
            ("revoked", "revoked"),
            ("expired", "expired"),
            ("idle", "idle"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = time.time()
        idle_at = ExpressionWrapper(
            Coalesce(F("last_used_at"), F("created_at")) + F("idle_ttl"), output_field=FloatField()
        )
        queryset = queryset.annotate(idle_at=idle_at)
        lifetime = _lifetime()
        expired = Q(expires_at__lte=now)
        if lifetime is not None:
            expired |= Q(created_at__lte=now - lifetime)
        idle = Q(idle_ttl__isnull=False, idle_at__lte=now)
        value = self.value()
        if value == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        if value == "expired":
            return queryset.filter(expired, revoked_at__isnull=True)
        if value == "idle":
            return queryset.filter(idle, revoked_at__isnull=True).exclude(expired)
        if value == "active":
            return queryset.filter(revoked_at__isnull=True).exclude(expired).exclude(idle)
        return queryset


class UserFilter(admin.SimpleListFilter):  # type: ignore[misc]
    title = "user"
    parameter_name = "user"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        users = StoreToken.objects.values_list("user_id", flat=True).distinct().order_by("user_id")
        return [(user, user) for user in users[:200]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(user_id=value) if value else queryset


class IssueForm(forms.Form):  # type: ignore[misc]
    """What a new token carries; everything is fixed once issued."""

    user_name = forms.CharField(max_length=255)
    user_id = forms.CharField(max_length=255, required=False, help_text="default: the name")
    project = forms.CharField(max_length=255, required=False, help_text="project scope")
    roles = forms.CharField(required=False, help_text="comma-separated")
    scopes = forms.CharField(required=False, help_text="token scopes, comma-separated")
    ttl = forms.CharField(initial="30d", help_text="lifetime: 30d, 12h, 3600")
    idle_ttl = forms.CharField(required=False, help_text="invalid once unused this long")
    read_only = forms.BooleanField(required=False, help_text="GET, HEAD and OPTIONS only")
    allowed_ips = forms.CharField(required=False, help_text="client networks, comma-separated")
    description = forms.CharField(max_length=1024, required=False)

    def issue_arguments(self) -> dict[str, Any]:
        data = self.cleaned_data

        def listed(name: str) -> list[str]:
            return [part.strip() for part in data[name].split(",") if part.strip()]

        return {
            "user_name": data["user_name"],
            "user_id": data["user_id"] or None,
            "project_name": data["project"] or None,
            "roles": listed("roles"),
            "scopes": listed("scopes"),
            "ttl": parse_duration(data["ttl"]),
            "idle_ttl": parse_duration(data["idle_ttl"]) if data["idle_ttl"] else None,
            "read_only": data["read_only"],
            "allowed_ips": listed("allowed_ips"),
            "description": data["description"],
        }


class RotateForm(forms.Form):  # type: ignore[misc]
    grace = forms.CharField(
        required=False, initial="24h", help_text="how long the old secret keeps working"
    )


@admin.register(StoreToken)
class StoreTokenAdmin(admin.ModelAdmin):  # type: ignore[misc]
    list_display = (
        "id",
        "user",
        "scope",
        "roles",
        "status",
        "expires",
        "last_used",
        "limits",
        "description",
    )
    list_filter = (StatusFilter, UserFilter)
    search_fields = ("id", "user_id", "user_name", "project_id", "project_name", "description")
    fields = (
        "id",
        "user",
        "scope",
        "roles",
        "status",
        "created",
        "expires",
        "last_used",
        "idle_after",
        "rotated",
        "limits",
        "description",
        "pepper_id",
    )
    readonly_fields = fields
    actions = ("revoke_selected",)
    change_form_template = "authmw_admin/change_form.html"

    # -- columns ---------------------------------------------------------------
    @_display(description="user")
    def user(self, obj: StoreToken) -> str:
        return f"{obj.user_name or '-'} ({obj.user_id})"

    @_display(description="scope")
    def scope(self, obj: StoreToken) -> str:
        return obj.record().scope

    @_display(description="status")
    def status(self, obj: StoreToken) -> str:
        return obj.record().status(max_lifetime=_lifetime())

    @_display(description="created", ordering="created_at")
    def created(self, obj: StoreToken) -> str:
        return _when(obj.record().created_at)

    @_display(description="expires", ordering="expires_at")
    def expires(self, obj: StoreToken) -> str:
        return _when(obj.record().effective_expiry(_lifetime())) if obj.expires_at else "never"

    @_display(description="last used", ordering="last_used_at")
    def last_used(self, obj: StoreToken) -> str:
        return _when(obj.record().last_used_at)

    @_display(description="idle after")
    def idle_after(self, obj: StoreToken) -> str:
        return _when(obj.record().idle_deadline())

    @_display(description="rotated")
    def rotated(self, obj: StoreToken) -> str:
        return _when(obj.record().rotated_at)

    @_display(description="restrictions")
    def limits(self, obj: StoreToken) -> str:
        record = obj.record()
        parts = ["read-only"] if record.read_only else []
        if record.allowed_ips:
            parts.append("from " + " ".join(record.allowed_ips))
        if record.idle_ttl:
            parts.append(f"idle {record.idle_ttl:g} s")
        if record.scopes:
            parts.append("scopes " + " ".join(record.scopes))
        return "; ".join(parts) or "-"

    # -- permissions: records are never changed or deleted here -------------------
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def _require(self, request: HttpRequest, action: str) -> None:
        if not request.user.has_perm(f"authmw_admin.{action}_storetoken"):
            raise PermissionDenied

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions: dict[str, Any] = super().get_actions(request)
        if not request.user.has_perm("authmw_admin.revoke_storetoken"):
            actions.pop("revoke_selected", None)
        return actions

    # -- issue, rotate, revoke ------------------------------------------------------
    def get_urls(self) -> list[Any]:
        own = [
            path(
                "<str:object_id>/rotate/",
                self.admin_site.admin_view(self.rotate_view),
                name="authmw_admin_storetoken_rotate",
            ),
            path(
                "<str:object_id>/revoke/",
                self.admin_site.admin_view(self.revoke_view),
                name="authmw_admin_storetoken_revoke",
            ),
        ]
        inherited: list[Any] = super().get_urls()
        return own + inherited

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        self._require(request, "add")
        form = IssueForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                issued = get_store().issue(**form.issue_arguments())
            except (ValueError, TypeError, AuthError) as exc:
                form.add_error(None, str(exc))
            else:
                obj = StoreToken.objects.get(pk=issued.id)
                self.log_addition(request, obj, [{"added": {}}])
                return self._secret(request, obj, issued.token, "issued")
        return self._page(request, "authmw_admin/issue.html", "Issue an API token", form=form)

    def rotate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        self._require(request, "rotate")
        obj = get_object_or_404(StoreToken, pk=object_id)
        form = RotateForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            grace_text = form.cleaned_data["grace"].strip()
            try:
                grace = parse_duration(grace_text) if grace_text else 0.0
                rotated = get_store().rotate(obj.pk, grace=grace)
            except (ValueError, LookupError, AuthError) as exc:
                form.add_error(None, str(exc))
            else:
                self.log_change(request, obj, f"Rotated (old secret valid {grace:g} s more)")
                return self._secret(request, obj, rotated.token, "rotated")
        return self._page(request, "authmw_admin/rotate.html", f"Rotate {obj}", form=form, obj=obj)

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        self._require(request, "revoke")
        obj = get_object_or_404(StoreToken, pk=object_id)
        if request.method == "POST":
            if get_store().revoke(obj.pk):
                self.log_change(request, obj, "Revoked")
                self.message_user(request, f"Token {obj.pk} revoked.", messages.SUCCESS)
            else:
                self.message_user(request, f"Token {obj.pk} was already revoked.", messages.INFO)
            return HttpResponseRedirect(
                reverse("admin:authmw_admin_storetoken_change", args=[obj.pk])
            )
        return self._page(request, "authmw_admin/revoke.html", f"Revoke {obj}", obj=obj)

    @_action("Revoke the selected tokens")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[StoreToken]) -> None:
        self._require(request, "revoke")
        store = get_store()
        count = 0
        for obj in queryset:
            if store.revoke(obj.pk):
                self.log_change(request, obj, "Revoked")
                count += 1
        self.message_user(request, f"{count} token(s) revoked.", messages.SUCCESS)

    def _page(
        self, request: HttpRequest, template: str, title: str, **context: Any
    ) -> HttpResponse:
        return TemplateResponse(
            request,
            template,
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": title,
                **context,
            },
        )

    def _secret(self, request: HttpRequest, obj: StoreToken, token: str, verb: str) -> HttpResponse:
        """The one page that shows a secret: not stored, not cached, not redirected to."""
        response = self._page(
            request,
            "authmw_admin/secret.html",
            f"Token {obj.pk} {verb}",
            obj=obj,
            token=token,
            verb=verb,
        )
        response["Cache-Control"] = "no-store"
        return response
