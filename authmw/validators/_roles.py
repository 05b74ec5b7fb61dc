"""Role names from an identity service that no identity may hold, dropped in one place.

Keystone stores role names such as ``"member,admin"`` or ``" admin"``, and an
introspection endpoint may answer anything; in ``X-Roles`` oslo.context would
read both as ``admin``. :class:`~authmw.Identity` refuses such names, so every
validator that reads roles from an answer passes them through
:func:`usable_roles`: the token keeps its other roles.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from ..identity import role_name_problem

__all__ = ["usable_roles"]

log = logging.getLogger("authmw.validators")

_warned: set[str] = set()
_MAX_WARNED = 1024  # names remembered; past that, further names are logged at DEBUG
_lock = threading.Lock()


def usable_roles(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` without those an :class:`~authmw.Identity` refuses, in order.

    Each distinct dropped name is logged once at WARNING (the identity
    service holds a role that ``X-Roles`` cannot carry), then at DEBUG.
    """
    kept: list[str] = []
    for name in names:
        problem = role_name_problem(name)
        if problem is None:
            kept.append(name)
        else:
            _report(name, problem)
    return tuple(kept)


def _report(name: str, problem: str) -> None:
    with _lock:
        first = name not in _warned and len(_warned) < _MAX_WARNED
        if first:
            _warned.add(name)
    log.log(
        logging.WARNING if first else logging.DEBUG,
        "the identity service gave a role named %r, which %s: it cannot go in X-Roles "
        "and is left out of the identity (logged once per name)",
        name,
        problem,
    )
