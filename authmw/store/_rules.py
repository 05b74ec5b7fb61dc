"""Rules kept in the store's database: its policy, and its peppers."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from ._base import AddEvent, StoreBase, StorePolicy

__all__ = ["StoreRules", "duration"]

log = logging.getLogger("authmw.store")

_UNSET: Any = object()


def duration(value: float | timedelta | None, name: str, *, zero: bool = False) -> float | None:
    """Seconds in ``value`` (a number or a timedelta), positive (or 0 with ``zero``)."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or seconds < 0
        or (seconds == 0 and not zero)
    ):
        raise ValueError(f"{name}: must be a positive number of seconds, got {value!r}")
    return float(seconds)


class StoreRules(StoreBase):
    """The store's policy (:meth:`set_policy`) and peppers (:meth:`retire_pepper`)."""

    # -- policy ------------------------------------------------------------
    def set_policy(
        self, *, max_tokens_per_user: int | None = _UNSET, max_lifetime: float | None = _UNSET
    ) -> StorePolicy:
        """Change the store's policy (None removes a limit); every process applies it
        within about ``watch_interval`` and drops its cached validations. A lower
        ``max_lifetime`` invalidates tokens older than it at once."""
        self.open()
        changes: dict[str, str | None] = {}
        if max_tokens_per_user is not _UNSET:
            if max_tokens_per_user is not None and (
                isinstance(max_tokens_per_user, bool)
                or not isinstance(max_tokens_per_user, int)
                or max_tokens_per_user < 1
            ):
                raise ValueError(
                    f"max_tokens_per_user: must be a whole number >= 1, got {max_tokens_per_user!r}"
                )
            changes["policy.max_tokens_per_user"] = (
                None if max_tokens_per_user is None else str(max_tokens_per_user)
            )
        if max_lifetime is not _UNSET:
            seconds = duration(max_lifetime, "max_lifetime")
            changes["policy.max_lifetime"] = None if seconds is None else repr(seconds)
        if not changes:
            return self._policy
        b = self._backend

        def write(conn: Any, add_event: AddEvent) -> None:
            with b.transaction(conn):
                for key, value in changes.items():
                    conn.execute(b.sql("DELETE FROM authmw_settings WHERE key = ?"), (key,))
                    if value is not None:
                        conn.execute(
                            b.sql("INSERT INTO authmw_settings (key, value) VALUES (?, ?)"),
                            (key, value),
                        )
                add_event(None, "policy")

        self._write_events(write)
        self._reload_settings()
        log.info("token store policy changed: %s", self._policy)
        self._notify(None)
        return self._policy

    # -- peppers -------------------------------------------------------------
    def peppers(self) -> list[dict[str, Any]]:
        """The peppers the store knows: id, configured here, newest, retired, active tokens."""
        self.open()
        b = self._backend
        rows = b.fetchall("SELECT key, value FROM authmw_settings")
        settings = {str(k): str(v) for k, v in rows}
        ids = sorted(k.split(".", 1)[1] for k in settings if k.startswith("pepper."))
        active, params = self._active_clause(self._clock())
        counts = dict(
            b.fetchall(
                b.sql(
                    f"SELECT pepper_id, COUNT(*) FROM authmw_tokens WHERE {active} "  # noqa: S608
                    "GROUP BY pepper_id"
                ),
                params,
            )
        )
        return [
            {
                "id": pepper_id,
                "configured": pepper_id in self._ring.hashers,
                "newest": pepper_id == self._ring.newest,
                "retired": f"pepper_retired.{pepper_id}" in settings,
                "active_tokens": int(counts.get(pepper_id, 0)),
            }
            for pepper_id in ids
        ]

    def retire_pepper(self, pepper_id: str) -> int:
        """Stop accepting tokens issued with pepper ``pepper_id``: they are revoked (every
        process hears it), the pepper may leave the configuration, and configuring it
        again is refused. Returns how many tokens were revoked. Rotate the tokens
        worth keeping first (a rotation uses the newest pepper)."""
        self.open()
        if pepper_id == self._ring.newest:
            raise ValueError(f"pepper {pepper_id!r} is the newest: it issues new tokens")
        known = {p["id"]: p for p in self.peppers()}
        if pepper_id not in known:
            raise LookupError(f"the store knows no pepper {pepper_id!r}")
        now = self._clock()
        b = self._backend

        def write(conn: Any, add_event: AddEvent) -> int:
            with b.transaction(conn):
                count = conn.execute(
                    b.sql(
                        "UPDATE authmw_tokens SET revoked_at = ? "
                        "WHERE pepper_id = ? AND revoked_at IS NULL"
                    ),
                    (now, pepper_id),
                ).rowcount
                conn.execute(
                    b.sql("DELETE FROM authmw_retired_secrets WHERE pepper_id = ?"), (pepper_id,)
                )
                conn.execute(
                    b.sql(
                        "INSERT INTO authmw_settings (key, value) VALUES (?, ?) "
                        "ON CONFLICT (key) DO NOTHING"
                    ),
                    (f"pepper_retired.{pepper_id}", repr(now)),
                )
                add_event(None, "pepper")
                return int(count)

        count = self._write_events(write)
        self._ring.drop(pepper_id)
        log.info("retired pepper %r: %d tokens revoked", pepper_id, count)
        self._notify(None)
        return count
