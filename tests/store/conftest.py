"""Fixtures of the token store tests: every test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest

from authmw.store import LocalTokenStore


class Clock:
    """A settable clock for the store (POSIX seconds)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections put their tables in ``schema``."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote('-csearch_path=' + schema, safe='')}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    """A fresh, empty database on the suite's real PostgreSQL server."""
    return postgres_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh, empty database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tokens.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def make_store(db_url: str, clock: Clock) -> Iterator[Callable[..., LocalTokenStore]]:
    """Opens stores on ``db_url`` (clock injected unless given); closes them afterwards."""
    opened: list[LocalTokenStore] = []

    def make(**options: Any) -> LocalTokenStore:
        options.setdefault("clock", clock)
        store = LocalTokenStore(options.pop("url", db_url), **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., LocalTokenStore]) -> LocalTokenStore:
    return make_store()


@pytest.fixture
def raw_sql(db_url: str) -> Callable[..., list[tuple[Any, ...]]]:
    """Runs SQL on the store's database directly, bypassing the store (``?`` placeholders)."""

    def run(statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if db_url.startswith("sqlite:///"):
            conn = sqlite3.connect(db_url[len("sqlite:///") :], isolation_level=None)
            try:
                cursor = conn.execute(statement, params)
                return cursor.fetchall() if cursor.description else []
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(db_url, autocommit=True) as pg:
            cur = pg.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    return run
