"""The local token store: API tokens kept as hashes in SQL, validated locally."""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigurationError, IdentityServiceUnavailable, InvalidToken
from ..identity import Identity
from ..validators.base import run_blocking
from ._admin import StoreAdmin
from ._base import DEFAULT_URL, ROW
from ._records import COLUMNS, IssuedToken, TokenRecord, TokenRejected, as_datetime
from ._tokens import is_well_formed
from ._ttl import format_duration

__all__ = ["DEFAULT_URL", "IssuedToken", "LocalTokenStore", "TokenRecord"]

log = logging.getLogger("authmw.store")

_ID, _HASH, _ROLES, _CREATED, _EXPIRES, _REVOKED, _LAST_USED = (
    ROW[c]
    for c in ("id", "token_hash", "roles", "created_at", "expires_at", "revoked_at", "last_used_at")
)
_SCOPES, _READ_ONLY, _IPS, _IDLE, _PEPPER = (
    ROW[c] for c in ("scopes", "read_only", "allowed_ips", "idle_ttl", "pepper_id")
)
_GRACE = len(COLUMNS)  # the lookup's last column: when a rotated-out secret ends
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class LocalTokenStore(StoreAdmin):
    """API tokens issued and checked locally, kept in SQLite or PostgreSQL.

    ``url`` is ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``
    (or a plain file path) or ``postgresql://user:pass@host/db``; psycopg is
    imported only for the latter. The schema is created and migrated
    forward on first use (table ``authmw_schema_version``).

    Only a digest of each token is stored: SHA-256, or HMAC-SHA-256 with a
    ``pepper`` kept outside the database. ``pepper`` is one secret, or a
    mapping of pepper ids to secrets (oldest first): new tokens use the
    newest, every configured one validates, :meth:`retire_pepper` ends one.
    A store refuses to open with a pepper other than the one it knows by
    that id (or with none, if it was created with one, and the reverse).

    This object is a validator (``validate``/``avalidate``), safe to share
    between threads; several processes may use one SQLite file (WAL mode,
    busy timeout ``timeout``). Database failures raise
    :class:`~authmw.IdentityServiceUnavailable`; unknown, expired, revoked,
    rotated-out, idle and too old tokens :class:`~authmw.InvalidToken`
    (:class:`~authmw.store.TokenRejected` with a ``reason`` for the last five).

    ``max_ttl`` caps the lifetime of new tokens (None: no cap) and
    ``require_expiry`` refuses tokens without one; :meth:`set_policy`
    keeps rules in the database (tokens per user, a maximum lifetime that
    also applies at validation). ``last_used_at`` is written at most once
    per ``touch_interval`` seconds per token (None: never), and at least 10
    times per idle time for tokens issued with ``idle_ttl``.
    ``connect=False`` defers opening the database to first use.

    Revocations made by other processes (or hosts) reach this instance's
    revocation listeners within about ``watch_interval`` seconds (0.25; on
    PostgreSQL at once, through ``LISTEN``): a thread per process starts at
    the first validation in that process (so also in each worker forked
    after the store was built). ``watch_interval=None`` turns that off.
    """

    def __enter__(self) -> LocalTokenStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- validation --------------------------------------------------------
    def validate(
        self, token: str, *, allow_expired: bool = False, record_use: bool = True
    ) -> Identity:
        """The identity of ``token``; raises InvalidToken or IdentityServiceUnavailable.

        ``allow_expired`` accepts a token past its expiry (and only that).
        ``record_use=False``: a look, not a use (``last_used_at`` and the idle
        deadline stay as they are; ``authmw check`` looks).
        """
        if not is_well_formed(token):
            raise InvalidToken("malformed token")
        if not self._opened:
            try:
                self.open()
            except ConfigurationError as exc:
                # Fail closed, as for any store that cannot answer.
                raise IdentityServiceUnavailable(str(exc)) from exc
        self._ensure_watching()
        digests = self._ring.digests(token)
        b = self._backend
        if b.dialect == "sqlite":
            # One statement looks in both tables: SQLite stops at the first row, so a hit
            # costs about what it did (0.5 us more), and an unknown token one call, not two.
            row = b.fetchone(self._lookup(len(digests), "either"), digests + digests)
        else:
            row = b.fetchone(self._lookup(len(digests), "current"), digests)
            if row is None:
                # Not a current secret: a rotated-out one? (a second round trip, for unknown
                # tokens only: one query for both made every hit slower on PostgreSQL)
                row = b.fetchone(self._lookup(len(digests), "rotated"), digests)
        if row is None:
            raise InvalidToken("unknown token")
        self._check_digest(digests, row[_HASH], row[_PEPPER])
        now = self._clock()
        grace_end = row[_GRACE]
        if grace_end is not None and grace_end <= now:
            raise TokenRejected("rotated", f"token {row[_ID]} rotated, its grace period over")
        return self._identity(row, now, allow_expired, grace_end, record_use)

    async def avalidate(self, token: str, *, allow_expired: bool = False) -> Identity:
        """Same as :meth:`validate`, with the database call in a worker thread."""
        if not is_well_formed(token):
            raise InvalidToken("malformed token")
        return await run_blocking(
            functools.partial(self.validate, token, allow_expired=allow_expired)
        )

    def _lookup(self, count: int, secrets: str) -> str:
        """The query by one digest per pepper for a ``current`` secret, a ``rotated``-out
        one (then the last column is when that secret ends; NULL for a current one), or
        ``either`` (no secret is in both tables). Made once per number of peppers."""
        statement = self._statements.get((count, secrets))
        if statement is None:
            match = "token_hash = ?" if count == 1 else f"token_hash IN ({', '.join('?' * count)})"
            current = f"SELECT {', '.join(COLUMNS)}, NULL FROM authmw_tokens WHERE {match}"  # noqa: S608
            columns = ", ".join(
                f"r.{c}" if c in ("token_hash", "pepper_id") else f"t.{c}" for c in COLUMNS
            )
            rotated = (
                f"SELECT {columns}, r.valid_until FROM authmw_retired_secrets r "  # noqa: S608
                f"JOIN authmw_tokens t ON t.id = r.token_id WHERE r.{match}"
            )
            query = {
                "current": current,
                "rotated": rotated,
                "either": f"{current} UNION ALL {rotated} LIMIT 1",
            }[secrets]
            statement = self._backend.sql(query)
            self._statements[(count, secrets)] = statement
        return statement

    def _check_digest(self, digests: list[bytes], stored: bytes, pepper_id: str | None) -> None:
        """The row's hash must be the token's digest under the row's own pepper."""
        index = self._ring.index.get(pepper_id)
        if index is None or not hmac.compare_digest(bytes(stored), digests[index]):
            raise InvalidToken("unknown token")

    def _identity(
        self,
        row: Sequence[Any],
        now: float,
        allow_expired: bool,
        grace_end: float | None,
        record_use: bool = True,
    ) -> Identity:
        token_id = row[_ID]
        if row[_REVOKED] is not None:
            raise TokenRejected("revoked", f"token {token_id} revoked")
        expires = row[_EXPIRES]
        if not allow_expired and expires is not None and expires <= now - self.leeway:
            raise TokenRejected("expired", f"token {token_id} expired")
        created = row[_CREATED]
        # The identity expires at the earliest end: expiry, grace, lifetime, idle deadline.
        end = (
            expires
            if grace_end is None or (expires is not None and expires < grace_end)
            else grace_end
        )
        lifetime = self._policy.max_lifetime
        if lifetime is not None:
            if created + lifetime <= now:
                raise TokenRejected(
                    "policy",
                    f"token {token_id} older than the store's maximum lifetime of "
                    f"{format_duration(lifetime)}",
                )
            end = created + lifetime if end is None else min(end, created + lifetime)
        restrictions: dict[str, Any] = {}
        if row[_READ_ONLY]:
            restrictions["methods"] = list(_SAFE_METHODS)
        if row[_IPS]:
            restrictions["ips"] = row[_IPS].split(",")
        idle = row[_IDLE]
        if idle is not None:
            last = max(row[_LAST_USED] or created, self.last_use(token_id) or 0.0)
            if last + idle <= now:
                raise TokenRejected(
                    "idle", f"token {token_id} unused for longer than {format_duration(idle)}"
                )
            # This validation is a use: the deadline moves, and the cache keeps the
            # identity no longer than that (then asks the database again).
            restrictions["idle"] = {
                "store": self.store_id,
                "token": token_id,
                "ttl": idle,
                "deadline": now + idle,
                "until": end,  # the token's end but for idleness (None: no end)
            }
            end = now + idle if end is None else min(end, now + idle)
        if record_use:
            self._touch(token_id, row[_LAST_USED], now, idle)
        return Identity(
            user_id=row[2],
            user_name=row[3],
            user_domain_id=row[4],
            user_domain_name=row[5],
            project_id=row[6],
            project_name=row[7],
            project_domain_id=row[8],
            project_domain_name=row[9],
            domain_id=row[10],
            domain_name=row[11],
            system_scope=row[12],
            roles=row[_ROLES].split(",") if row[_ROLES] else (),
            expires_at=as_datetime(end),
            issued_at=as_datetime(created),
            audit_ids=(token_id,),
            methods=("token",),
            restrictions=restrictions,
            token_scopes=row[_SCOPES].split(",") if row[_SCOPES] else (),
        )

    def _touch(self, token_id: str, last_used: float | None, now: float, idle: Any) -> None:
        if self.touch_interval is None and idle is None:
            return
        interval = self._use_interval(idle)
        if last_used is not None and now - last_used < interval:
            return
        if now < self._touch_paused_until:
            return
        try:
            self._backend.execute(self._q_touch, (now, token_id, now - interval))
        except IdentityServiceUnavailable as exc:
            # Bookkeeping must not fail a valid request (e.g. a read-only replica).
            self._touch_paused_until = now + interval
            log.warning("cannot record last use of token %s: %s", token_id, exc)
