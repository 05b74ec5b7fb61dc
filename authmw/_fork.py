"""A forked child's fresh start.

gunicorn ``--preload`` builds the app in the master and then forks the
workers from it. Two things must not cross the fork: a lock that a thread of
the master (a revocation listener, a store watcher) held at that instant,
which no thread of the child would ever release; and a connection the
master opened, which every worker would then write to and read from at
once, each reading answers meant for another. Objects holding either
register here (module state: a function). In the child, every registered
``_after_fork()`` and function runs first (new locks; connections forgotten,
not closed: the parent still uses them), then every registered
``_restart()`` starts its thread again.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["ForkAware", "Restartable", "call_after_fork", "reset_after_fork", "restart_after_fork"]


class ForkAware(Protocol):
    def _after_fork(self) -> None:
        """In the child: new locks, no connection of the parent's."""


class Restartable(Protocol):
    def _restart(self) -> None:
        """In the child, once every :class:`ForkAware` is reset: start its thread again."""


_resets: weakref.WeakSet[ForkAware] = weakref.WeakSet()
_restarts: weakref.WeakSet[Restartable] = weakref.WeakSet()
_functions: list[Callable[[], None]] = []


def call_after_fork(function: Callable[[], None]) -> None:
    """Call ``function()`` in every child forked from now on, with the resets (for a
    module's own state: its lock, its thread pool)."""
    _functions.append(function)


def reset_after_fork(owner: ForkAware) -> None:
    """Call ``owner._after_fork()`` in every child forked from now on."""
    _resets.add(owner)


def restart_after_fork(owner: Restartable) -> None:
    """Call ``owner._restart()`` in every child forked from now on, after the resets."""
    _restarts.add(owner)


def _in_child() -> None:
    resets = [owner._after_fork for owner in list(_resets)]
    restarts = [owner._restart for owner in list(_restarts)]
    for call in [*_functions, *resets, *restarts]:  # every reset before any restart
        try:
            call()
        except Exception:  # one failure must not leave the others as the parent had them
            # Named, not repr()'d: a half-built owner's repr may fail too.
            name = getattr(call, "__qualname__", type(call).__name__)
            logging.getLogger("authmw").exception("after a fork, %s failed", name)


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_in_child)
