"""The store's token records as Django sees them: read-only, without the hash column."""

from __future__ import annotations

from typing import Any

from django.db import models

from ...store import TokenRecord
from ...store._records import PUBLIC_COLUMNS


class StoreToken(models.Model):  # type: ignore[misc]
    """One row of ``authmw_tokens``; changes go through the store, never through this."""

    id = models.CharField(primary_key=True, max_length=16)
    user_id = models.TextField()
    user_name = models.TextField(null=True)
    user_domain_id = models.TextField(null=True)
    user_domain_name = models.TextField(null=True)
    project_id = models.TextField(null=True)
    project_name = models.TextField(null=True)
    project_domain_id = models.TextField(null=True)
    project_domain_name = models.TextField(null=True)
    domain_id = models.TextField(null=True)
    domain_name = models.TextField(null=True)
    system_scope = models.TextField(null=True)
    roles = models.TextField()
    description = models.TextField()
    created_at = models.FloatField()
    expires_at = models.FloatField(null=True)
    revoked_at = models.FloatField(null=True)
    last_used_at = models.FloatField(null=True)
    scopes = models.TextField()
    read_only = models.IntegerField()
    allowed_ips = models.TextField()
    idle_ttl = models.FloatField(null=True)
    rotated_at = models.FloatField(null=True)
    pepper_id = models.TextField(null=True)

    class Meta:
        managed = False
        db_table = "authmw_tokens"
        app_label = "authmw_admin"
        verbose_name = "API token"
        ordering = ("-created_at",)
        default_permissions = ("add", "view")
        permissions = (
            ("revoke_storetoken", "Can revoke API tokens"),
            ("rotate_storetoken", "Can rotate API tokens"),
        )

    def __str__(self) -> str:
        return f"{self.id} ({self.user_name or self.user_id})"

    def record(self) -> TokenRecord:
        """The store's view of this row."""
        values: list[Any] = [getattr(self, name) for name in PUBLIC_COLUMNS]
        return TokenRecord._from_row(values)
