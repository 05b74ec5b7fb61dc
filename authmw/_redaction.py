"""Log redaction: tokens in httpx's and httpcore's own log records become digests.

httpcore logs every response's header list at DEBUG as the ``repr`` of bytes
tuples, ``[(b'X-Subject-Token', b'gAAAA...'), ...]``, and Keystone echoes
the validated token in ``X-Subject-Token``. ``repr`` chooses the quotes from
the content (``b"..."`` when the bytes hold ``'`` but no ``"``; ``b'...'``
with ``\\'`` escapes when they hold both) and escapes backslashes (``\\\\``)
and bytes outside printable ASCII (``\\t``, ``\\xNN``): the value is read
as the literal it is, escapes included, whatever its content. httpx logs
each request line at INFO, and a v2.0 validation puts the token in the path:
everything after ``/tokens/`` up to ``?``, ``#``, a quote or white space is
replaced, however short.
"""

from __future__ import annotations

import ast
import logging
import re
import threading
from urllib.parse import unquote

from ._hashing import fingerprint

__all__ = ["install_log_redaction", "redact"]

_SECRET_HEADERS = frozenset(
    {
        "x-auth-token",
        "x-subject-token",
        "x-service-token",
        "authorization",
        "proxy-authorization",
        "x-storage-token",
    }
)
_SCHEMES = frozenset({"authorization", "proxy-authorization"})

# One Python string or bytes literal, escapes included: its end is the first
# quote of its own kind that no backslash escapes.
_LITERAL = r"""b?(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
# A (name, value) pair of such literals, as in httpcore's header lists (or
# name: value, as in a dict's repr). Scanning left to right, a pair always
# starts at its name: text inside a literal is consumed with it.
_HEADER_VALUE = re.compile(
    rf"(?P<name>{_LITERAL})(?P<sep>\s*[,:]\s*)(?P<value>{_LITERAL})", re.DOTALL
)
# v2.0 validation puts the token in the path: GET /v2.0/tokens/{token}
_TOKEN_PATH = re.compile(r"(/tokens/)([^\s?#\"]+)", re.IGNORECASE)

_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


def _text(literal: str) -> str | None:
    """The text a literal stands for (bytes as latin-1), or None if it is not one."""
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) else None


def _redact_pair(m: re.Match[str]) -> str:
    name = _text(m["name"])
    if name is None or name.strip().lower() not in _SECRET_HEADERS:
        return m[0]
    literal = m["value"]
    value = _text(literal)
    if value is None:
        value = literal
    elif name.strip().lower() in _SCHEMES and " " in value.strip():
        value = value.strip().split(" ", 1)[1].strip()  # the credential after the scheme
    prefix = "b" if literal.startswith("b") else ""
    return f"{m['name']}{m['sep']}{prefix}'<redacted sha256:{fingerprint(value)}>'"


def _redact_path(m: re.Match[str]) -> str:
    return f"{m[1]}<redacted sha256:{fingerprint(unquote(m[2]))}>"


def redact(text: str) -> str:
    """``text`` with token header values and token URL paths replaced by digests."""
    if "'" in text or '"' in text:
        text = _HEADER_VALUE.sub(_redact_pair, text)
    if "/tokens/" in text.lower():
        text = _TOKEN_PATH.sub(_redact_path, text)
    return text


class _RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to fix
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True


_redaction_filter = _RedactTokens()
_installed = False
_install_lock = threading.Lock()


def install_log_redaction() -> None:
    """Redact token headers in httpx/httpcore log records (idempotent).

    httpcore logs every response's headers at DEBUG, and Keystone echoes the
    validated token in ``X-Subject-Token``. authmw installs this filter when
    it builds a client; to silence those loggers instead, set
    ``logging.getLogger("httpcore").setLevel(logging.INFO)``.
    """
    global _installed
    with _install_lock:
        if _installed:
            return
        for name in _LOGGERS:
            logging.getLogger(name).addFilter(_redaction_filter)
        _installed = True
