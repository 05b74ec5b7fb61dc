"""Forking the test process as gunicorn --preload forks its master: run something in the
child, with a lock held by a thread of the parent at the instant of the fork."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator


def in_child(action: Callable[[], object], seconds: int = 5) -> int:
    """Run ``action`` in a forked child: 0 if it returned, 1 if it raised, 2 if it hung."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        signal.signal(signal.SIGALRM, lambda *_: os._exit(2))
        signal.alarm(seconds)
        try:
            action()
        except BaseException:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@contextlib.contextmanager
def held(lock: contextlib.AbstractContextManager[object]) -> Iterator[None]:
    """A thread holds ``lock`` until the block ends (as a listener mid-revocation would)."""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            done.wait()

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait()
    try:
        yield
    finally:
        done.set()
        thread.join()
