"""Log redaction: tokens in httpx's and httpcore's own log records become digests."""

from __future__ import annotations

import logging
import re
import threading

from ._hashing import fingerprint

__all__ = ["install_log_redaction", "redact"]

_SECRET_HEADERS = (
    "x-auth-token",
    "x-subject-token",
    "x-service-token",
    "authorization",
    "proxy-authorization",
    "x-storage-token",
)
# httpcore writes header lists as reprs: (b'X-Subject-Token', b'gAAAA...')
_HEADER_VALUE = re.compile(
    r"""(b?(['"])(?:""" + "|".join(_SECRET_HEADERS) + r""")\2\s*,\s*b?(['"]))(.*?)(\3)""",
    re.IGNORECASE,
)
# v2.0 validation puts the token in the path: GET /v2.0/tokens/{token}
_TOKEN_PATH = re.compile(r"(/tokens/)([^/\s\"'?#]{8,})")

_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


def _redact_match(m: re.Match[str]) -> str:
    return f"{m.group(1)}<redacted sha256:{fingerprint(m.group(4))}>{m.group(5)}"


def _redact_path(m: re.Match[str]) -> str:
    return f"{m.group(1)}<redacted sha256:{fingerprint(m.group(2))}>"


def redact(text: str) -> str:
    """``text`` with token header values and token URL paths replaced by digests."""
    return _TOKEN_PATH.sub(_redact_path, _HEADER_VALUE.sub(_redact_match, text))


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
