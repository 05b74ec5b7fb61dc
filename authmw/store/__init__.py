"""Local API tokens: issue them, keep only their hash, validate them (SQLite or PostgreSQL).

::

    from authmw import WSGIAuthMiddleware
    from authmw.store import LocalTokenStore

    store = LocalTokenStore("sqlite:///tokens.db")      # or "postgresql://..."
    issued = store.issue(user_name="alice", project_name="demo", roles=["reader"], ttl=86400)
    print(issued.token)                                 # shown once; only its hash is kept
    app = WSGIAuthMiddleware(app, validator=store)

The ``authmw token ...`` commands manage the same store from a shell.
"""

from __future__ import annotations

from ._base import StorePolicy
from ._records import REASONS, TokenRejected
from ._store import DEFAULT_URL, IssuedToken, LocalTokenStore, TokenRecord
from ._tokens import TOKEN_PATTERN, is_well_formed
from ._ttl import format_duration, parse_duration

__all__ = [
    "DEFAULT_URL",
    "REASONS",
    "TOKEN_PATTERN",
    "IssuedToken",
    "LocalTokenStore",
    "StorePolicy",
    "TokenRecord",
    "TokenRejected",
    "format_duration",
    "is_well_formed",
    "parse_duration",
]
