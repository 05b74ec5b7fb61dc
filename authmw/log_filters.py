"""A logging filter that keeps query-string tokens out of server access logs.

A browser websocket may carry its token in the query string
(``token_sources=[..., "query: access_token"]``); authmw removes it before
the app sees the request, but the server has already logged the request
line. Install the filter on the servers' loggers::

    from authmw.log_filters import install_query_redaction
    install_query_redaction()            # uvicorn and gunicorn loggers, "access_token"

or name it in a logging configuration (uvicorn's ``--log-config``,
gunicorn's ``logconfig_dict``)::

    "filters": {"tokens": {"()": "authmw.log_filters.QueryTokenFilter"}},
    "handlers": {"access": {..., "filters": ["tokens"]}},

Every ``name=value`` of the given parameter names, in a record's message
and in its arguments (tuples, as uvicorn logs, or a dict, as gunicorn's
access log does), becomes ``name=<redacted>``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["SERVER_LOGGERS", "QueryTokenFilter", "install_query_redaction"]

SERVER_LOGGERS = ("uvicorn.access", "uvicorn.error", "gunicorn.access", "gunicorn.error")
"""The loggers uvicorn and gunicorn write request lines to."""


class QueryTokenFilter(logging.Filter):
    """Redacts the values of query parameters ``names`` in every record it sees."""

    def __init__(self, names: Iterable[str] = ("access_token",)) -> None:
        super().__init__()
        names = [names] if isinstance(names, str) else list(names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError("names: give at least one query parameter name")
        alternatives = "|".join(re.escape(n) for n in names)
        # The name, raw or percent-encoded anywhere a query can appear in a line.
        self._pattern = re.compile(rf"((?:^|[?&;\s\"'])(?:{alternatives})=)[^&\s\"'#]*")

    def redact(self, text: str) -> str:
        """``text`` with the parameters' values replaced."""
        return self._pattern.sub(r"\1<redacted>", text)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        args: Any = record.args
        if isinstance(args, tuple):
            record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in args)
        elif isinstance(args, dict):
            record.args = {k: self.redact(v) if isinstance(v, str) else v for k, v in args.items()}
        return True


def install_query_redaction(
    names: Iterable[str] = ("access_token",), loggers: Iterable[str] = SERVER_LOGGERS
) -> QueryTokenFilter:
    """Add one :class:`QueryTokenFilter` to each of ``loggers`` (idempotent per logger)."""
    query_filter = QueryTokenFilter(names)
    for name in loggers:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, QueryTokenFilter)]:
            logger.removeFilter(old)
        logger.addFilter(query_filter)
    return query_filter
