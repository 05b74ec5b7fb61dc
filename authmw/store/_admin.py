"""Managing the store's tokens: issue, rotate, revoke, list, purge, policy, peppers."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from ._base import MIN_IDLE_TTL, ROW, AddEvent
from ._fields import checked_fields
from ._records import COLUMNS, PUBLIC_COLUMNS, IssuedToken, TokenRecord
from ._rules import StoreRules, duration
from ._tokens import new_token
from ._ttl import format_duration

__all__ = ["StoreAdmin"]

log = logging.getLogger("authmw.store")

_PUBLIC = ", ".join(PUBLIC_COLUMNS)


class StoreAdmin(StoreRules):
    """Issue, rotate, revoke, list and purge tokens (and the store's policy and peppers)."""

    def issue(
        self,
        *,
        user_id: str | None = None,
        user_name: str | None = None,
        user_domain_id: str | None = None,
        user_domain_name: str | None = None,
        project_id: str | None = None,
        project_name: str | None = None,
        project_domain_id: str | None = None,
        project_domain_name: str | None = None,
        domain_id: str | None = None,
        domain_name: str | None = None,
        system_scope: str | None = None,
        roles: Iterable[str] = (),
        description: str = "",
        ttl: float | timedelta | None = None,
        expires_at: datetime | None = None,
        scopes: Iterable[str] = (),
        read_only: bool = False,
        allowed_ips: Iterable[str] = (),
        idle_ttl: float | timedelta | None = None,
    ) -> IssuedToken:
        """Create a token and return it with its record; the secret is not kept.

        The user is ``user_id`` and/or ``user_name`` (the id defaults to the
        name). The scope is a project, a domain or ``system_scope="all"``
        (or none). Domains of the user and project default to Keystone's
        ``default``/``Default``. The lifetime is ``ttl`` (seconds or a
        timedelta) or ``expires_at``. Restrictions, fixed for the token's
        life: ``scopes`` (for ``token_scope:`` rules), ``read_only`` (GET,
        HEAD, OPTIONS), ``allowed_ips`` (client networks), ``idle_ttl``
        (invalid once unused that long). Raises ``ValueError`` for bad input
        or a request the store's policy refuses.
        """
        fields = checked_fields(
            user_id=user_id,
            user_name=user_name,
            user_domain_id=user_domain_id,
            user_domain_name=user_domain_name,
            project_id=project_id,
            project_name=project_name,
            project_domain_id=project_domain_id,
            project_domain_name=project_domain_name,
            domain_id=domain_id,
            domain_name=domain_name,
            system_scope=system_scope,
            roles=roles,
            description=description,
            scopes=scopes,
            read_only=read_only,
            allowed_ips=allowed_ips,
        )
        idle = duration(idle_ttl, "idle_ttl")
        if idle is not None and idle < MIN_IDLE_TTL:
            raise ValueError(f"idle_ttl: at least {format_duration(MIN_IDLE_TTL)}")
        self.open()
        now = self._clock()
        expires = self._expiry(now, ttl, expires_at)
        token = new_token()
        newest = self._ring.hasher(self._ring.newest)
        assert newest is not None
        values = {
            **fields,
            "id": secrets.token_hex(8),
            "token_hash": newest(token),
            "created_at": now,
            "expires_at": expires,
            "revoked_at": None,
            "last_used_at": None,
            "idle_ttl": idle,
            "rotated_at": None,
            "pepper_id": self._ring.newest,
        }
        row = tuple(values[c] for c in COLUMNS)
        b = self._backend
        limit = self._policy.max_tokens_per_user
        insert = b.sql(
            f"INSERT INTO authmw_tokens ({', '.join(COLUMNS)}) "  # noqa: S608 - fixed names
            f"VALUES ({', '.join('?' * len(COLUMNS))})"
        )

        def write(conn: Any) -> None:
            with b.transaction(conn):
                if limit is not None:
                    b.lock_user(conn, values["user_id"])
                    active, params = self._active_clause(now)
                    count = conn.execute(
                        b.sql(f"SELECT COUNT(*) FROM authmw_tokens WHERE user_id = ? AND {active}"),  # noqa: S608
                        (values["user_id"], *params),
                    ).fetchone()[0]
                    if count >= limit:
                        raise ValueError(
                            f"policy: user {values['user_id']!r} already has {count} active "
                            f"tokens, the store's maximum (max_tokens_per_user)"
                        )
                conn.execute(insert, row)

        b.run(write)
        record = TokenRecord._from_row([values[c] for c in PUBLIC_COLUMNS])
        log.info("issued token %s for user %s", record.id, record.user_id)
        return IssuedToken(token=token, record=record)

    def _expiry(
        self, now: float, ttl: float | timedelta | None, expires_at: datetime | None
    ) -> float | None:
        if ttl is not None and expires_at is not None:
            raise ValueError("ttl: give ttl or expires_at, not both")
        if ttl is not None:
            seconds = duration(ttl, "ttl")
            assert seconds is not None
            expires: float | None = now + seconds
        elif expires_at is not None:
            if expires_at.tzinfo is None or expires_at.utcoffset() is None:
                raise ValueError("expires_at must be timezone-aware")
            expires = expires_at.timestamp()
            if expires <= now:
                raise ValueError("expires_at is in the past")
        else:
            expires = None
        lifetime = self._policy.max_lifetime
        if expires is None:
            if self.require_expiry:
                raise ValueError("ttl: tokens of this store must expire; give a ttl")
            if lifetime is not None:
                raise ValueError(
                    f"ttl: tokens must expire within the store's maximum lifetime of "
                    f"{format_duration(lifetime)} (policy)"
                )
            return None
        if self.max_ttl is not None and expires - now > self.max_ttl + 1e-6:
            raise ValueError(f"ttl: longer than the maximum of {format_duration(self.max_ttl)}")
        if lifetime is not None and expires - now > lifetime + 1e-6:
            raise ValueError(
                f"ttl: longer than the store's maximum lifetime of {format_duration(lifetime)} "
                "(policy)"
            )
        return expires

    def get(self, token_id: str) -> TokenRecord | None:
        """The record of token ``token_id`` (its public id), or None."""
        self.open()
        row = self._backend.fetchone(
            self._backend.sql(f"SELECT {_PUBLIC} FROM authmw_tokens WHERE id = ?"),  # noqa: S608
            (token_id,),
        )
        return None if row is None else TokenRecord._from_row(row)

    def list_tokens(
        self,
        *,
        user: str | None = None,
        include_inactive: bool = False,
        expiring_within: float | timedelta | None = None,
        limit: int | None = None,
    ) -> list[TokenRecord]:
        """Records, oldest first; of one user (id or name) if ``user`` is given.

        Revoked, expired and idle tokens are left out unless ``include_inactive``.
        ``expiring_within``: only active tokens whose expiry (or the end of the
        store's maximum lifetime) comes within that many seconds.
        """
        self.open()
        now = self._clock()
        where: list[str] = []
        params: list[Any] = []
        if user is not None:
            where.append("(user_id = ? OR user_name = ?)")
            params += [user, user]
        window = duration(expiring_within, "expiring_within")
        if not include_inactive or window is not None:
            active, active_params = self._active_clause(now)
            where.append(active)
            params += active_params
        if window is not None:
            soon = "(expires_at IS NOT NULL AND expires_at <= ?)"
            params.append(now + window)
            if self._policy.max_lifetime is not None:
                soon = f"({soon} OR created_at <= ?)"
                params.append(now + window - self._policy.max_lifetime)
            where.append(soon)
        statement = f"SELECT {_PUBLIC} FROM authmw_tokens"  # noqa: S608
        if where:
            statement += " WHERE " + " AND ".join(where)
        statement += " ORDER BY created_at, id"
        if limit is not None:
            statement += f" LIMIT {int(limit)}"
        rows = self._backend.fetchall(self._backend.sql(statement), params)
        return [TokenRecord._from_row(row) for row in rows]

    def revoke(self, token_id: str) -> bool:
        """Revoke token ``token_id``; True if this call revoked it.

        Takes effect at once in this process: revocation listeners (the
        middleware's cache) drop the token. Every other process validating
        with this store drops it within about ``watch_interval`` seconds
        (PostgreSQL: at once), through the events log.
        """
        self.open()
        now = self._clock()
        b = self._backend
        statement = b.sql(
            "UPDATE authmw_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
        )

        def write(conn: Any, add_event: AddEvent) -> int | None:
            with b.transaction(conn):
                if not conn.execute(statement, (now, token_id)).rowcount:
                    return None
                return add_event(token_id, "revoked")

        if self._write_events(write) is None:
            return False
        log.info("revoked token %s", token_id)
        self._notify(token_id)
        return True

    def rotate(self, token_id: str, *, grace: float | timedelta = 0.0) -> IssuedToken:
        """A new secret for token ``token_id``, with the same record (id, user, roles,
        restrictions, expiry); the old secret keeps working for ``grace`` seconds.

        Raises ``LookupError`` for an unknown id, ``ValueError`` for a token
        that is not active. Every process drops the old secret's cached
        validations, as for a revocation.
        """
        grace_seconds = duration(grace, "grace", zero=True)
        assert grace_seconds is not None
        self.open()
        now = self._clock()
        token = new_token()
        newest = self._ring.hasher(self._ring.newest)
        assert newest is not None
        b = self._backend
        columns = ", ".join(COLUMNS)
        select = b.sql(f"SELECT {columns} FROM authmw_tokens WHERE id = ?")  # noqa: S608
        if b.dialect == "postgresql":
            select += " FOR UPDATE"

        def write(conn: Any, add_event: AddEvent) -> Sequence[Any]:
            with b.transaction(conn):
                row: Sequence[Any] | None = conn.execute(select, (token_id,)).fetchone()
                if row is None:
                    raise LookupError(f"no token with id {token_id!r}")
                record = TokenRecord._from_row([row[ROW[c]] for c in PUBLIC_COLUMNS])
                status = record.status(now, max_lifetime=self._policy.max_lifetime)
                if status != "active":
                    raise ValueError(f"token {token_id} is {status}: only an active one rotates")
                conn.execute(
                    b.sql(
                        "INSERT INTO authmw_retired_secrets "
                        "(token_hash, token_id, pepper_id, valid_until) VALUES (?, ?, ?, ?)"
                    ),
                    (row[ROW["token_hash"]], token_id, row[ROW["pepper_id"]], now + grace_seconds),
                )
                conn.execute(
                    b.sql(
                        "UPDATE authmw_tokens SET token_hash = ?, pepper_id = ?, rotated_at = ? "
                        "WHERE id = ?"
                    ),
                    (newest(token), self._ring.newest, now, token_id),
                )
                add_event(token_id, "rotated")
                return row

        row = self._write_events(write)
        values = dict(zip(COLUMNS, row, strict=True))
        values.update(rotated_at=now, pepper_id=self._ring.newest)
        log.info("rotated token %s (old secret valid for %gs)", token_id, grace_seconds)
        self._notify(token_id)
        return IssuedToken(token, TokenRecord._from_row([values[c] for c in PUBLIC_COLUMNS]))

    def purge(self, *, expired: bool = True, revoked: bool = False, older_than: float = 0.0) -> int:
        """Delete tokens that expired (or went idle, or outlived the store's maximum
        lifetime) and/or were revoked over ``older_than`` seconds ago.

        Returns how many were deleted. Such tokens are already refused; this
        only keeps the table small. Secrets whose grace period ended go too.
        """
        if not expired and not revoked:
            raise ValueError("purge: choose expired and/or revoked tokens")
        self.open()
        cutoff = self._clock() - older_than
        clauses: list[str] = []
        params: list[Any] = []
        if expired:
            clauses.append("(expires_at IS NOT NULL AND expires_at <= ?)")
            clauses.append(
                "(idle_ttl IS NOT NULL AND COALESCE(last_used_at, created_at) + idle_ttl <= ?)"
            )
            params += [cutoff, cutoff]
            if self._policy.max_lifetime is not None:
                clauses.append("created_at <= ?")
                params.append(cutoff - self._policy.max_lifetime)
        if revoked:
            clauses.append("(revoked_at IS NOT NULL AND revoked_at <= ?)")
            params.append(cutoff)
        b = self._backend
        condition = " OR ".join(clauses)

        def delete(conn: Any) -> int:
            with b.transaction(conn):
                conn.execute(
                    b.sql(
                        "DELETE FROM authmw_retired_secrets WHERE valid_until <= ? OR token_id IN "  # noqa: S608
                        f"(SELECT id FROM authmw_tokens WHERE {condition})"
                    ),
                    (self._clock(), *params),
                )
                cursor = conn.execute(
                    b.sql(f"DELETE FROM authmw_tokens WHERE {condition}"),  # noqa: S608
                    params,
                )
                return int(cursor.rowcount)

        return b.run(delete)

    # -- bulk loading (benchmarks, imports) --------------------------------
    def _insert_rows(self, rows: Iterable[Sequence[Any]]) -> int:
        """Insert raw rows (all columns, in table order) in one transaction."""
        self.open()
        b = self._backend

        def load(conn: Any) -> int:
            with b.transaction(conn):
                return b.bulk_insert(conn, "authmw_tokens", COLUMNS, rows)

        return b.run(load)
