"""A record of every authentication decision, for auditors and security teams.

Give any entry point ``on_decision=hook``: the pipeline calls
``hook(record)`` exactly once for each decision it makes (public routes
included) with an :class:`AuditRecord`; an ``async def`` hook is scheduled
on the running loop (or run to completion where there is none). A hook that
raises is logged and never fails the request. Without a hook nothing is
computed. Records never hold a token: a fingerprint (the first 8 hex digits
of its SHA-256) and the token's audit id (for the local store, the token's
id) identify it.

:class:`JSONLinesAudit` is a ready hook writing one JSON object per line;
:func:`cadf` gives a record in the DMTF CADF event format OpenStack's audit
middleware emits.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import IO, Any

__all__ = ["AuditRecord", "JSONLinesAudit", "cadf"]

log = logging.getLogger("authmw.audit")


@dataclass(frozen=True)
class AuditRecord:
    """One decision."""

    time: float
    """When it was made (POSIX seconds)."""
    outcome: str
    """``allowed``, ``public``, ``anonymous`` (no credential, the app decides), ``rejected``
    (401), ``forbidden`` (403), ``throttled`` (429), ``unavailable`` (503)."""
    status: int | None
    """The status authmw answered with, or None when the app was called."""
    reason: str
    method: str
    path: str
    client: str | None
    request_id: str | None
    token: str | None
    """Fingerprint of the token: the first 8 hex digits of its SHA-256."""
    audit_id: str | None
    """The token's audit id (Keystone), the token's id (the local store)."""
    user_id: str | None
    user_name: str | None
    project_id: str | None
    domain_id: str | None
    roles: tuple[str, ...]
    service_user_id: str | None
    cached: bool
    """True when no validator was asked (the in-process cache answered)."""
    latency_ms: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        data = asdict(self)
        data["roles"] = list(self.roles)
        return data


class JSONLinesAudit:
    """An ``on_decision`` hook writing each record as one JSON line.

    To a file (``path``, appended to), a text ``stream``, or a ``logger``
    (one INFO record per decision, the JSON as its message). ``format`` may
    turn a record into another dict first (e.g. :func:`cadf`).
    """

    def __init__(
        self,
        path: str | None = None,
        *,
        stream: IO[str] | None = None,
        logger: logging.Logger | None = None,
        format: Callable[[AuditRecord], dict[str, Any]] = AuditRecord.as_dict,
    ) -> None:
        given = [x for x in (path, stream, logger) if x is not None]
        if len(given) != 1:
            from .errors import ConfigurationError

            raise ConfigurationError("path", "give exactly one of path, stream or logger")
        self._format = format
        self._logger = logger
        self._lock = threading.Lock()
        self._stream: IO[str] | None = stream
        self._owned = path is not None  # close() closes only a file opened here
        if path is not None:
            self._stream = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def __call__(self, record: AuditRecord) -> None:
        line = json.dumps(self._format(record), separators=(",", ":"), default=str)
        if self._logger is not None:
            self._logger.info(line)
            return
        assert self._stream is not None
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        """Close the file (a stream or logger given is left alone)."""
        if self._stream is not None and self._owned:
            self._stream.close()


def cadf(record: AuditRecord) -> dict[str, Any]:
    """``record`` as a CADF event (as keystonemiddleware's audit middleware emits)."""
    success = record.outcome in ("allowed", "public", "anonymous")
    event: dict[str, Any] = {
        "typeURI": "http://schemas.dmtf.org/cloud/audit/1.0/event",
        "id": str(uuid.uuid4()),
        "eventTime": datetime.fromtimestamp(record.time, timezone.utc).isoformat(),
        "eventType": "activity",
        "action": "authenticate",
        "outcome": "success" if success else "failure",
        "reason": {
            "reasonType": "HTTP",
            "reasonCode": str(record.status or 200),
            "policyType": record.outcome,
        },
        "initiator": {
            "typeURI": "service/security/account/user",
            "id": record.user_id or "unknown",
            "name": record.user_name,
            "project_id": record.project_id,
            "domain_id": record.domain_id,
            "host": {"address": record.client},
            "credential": {"token": record.token, "audit_id": record.audit_id},
        },
        "target": {"typeURI": "service", "id": "target", "requestPath": record.path},
        "observer": {"typeURI": "service/security", "id": "authmw"},
        "requestPath": record.path,
        "method": record.method,
    }
    if record.request_id:
        event["requestId"] = record.request_id
    return event
