"""Restriction kinds of API keys: allowed client addresses, and the idle deadline.

Registered in :data:`authmw.restrictions.CHECKS`; the local token store puts
them on the identities it returns, and the pipeline checks them on every
request, cache hits included.

- ``"ips"``: a list of networks (``"10.0.0.0/8"``, ``"2001:db8::/32"``); a
  request from another address, or with no address, is refused (403). An
  IPv4-mapped IPv6 address (``::ffff:10.1.2.3``, as dual-stack servers
  report IPv4 clients) is checked as the IPv4 address it carries.
- ``"idle"``: ``{"store", "token", "ttl", "deadline"}``: a token unused for
  ``ttl`` seconds is invalid (401). The deadline was computed when the
  token was validated; a use served from the cache since then moves it, in
  this process at once, and in every other process once the store's
  batched ``last_used_at`` write reaches the database (the check tells the
  store of each use through :func:`register_uses`).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any, Protocol

from . import _fork
from .restrictions import Refusal, RequestFacts

__all__ = ["CHECKS", "UseRecorder", "client_address", "normalize_networks", "register_uses"]

log = logging.getLogger("authmw.restrictions")

NOT_AUTHENTICATED = "The request you have made requires authentication."
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


# -- client addresses --------------------------------------------------------
def normalize_networks(cidrs: Iterable[str]) -> tuple[str, ...]:
    """Networks as the store keeps them: canonical text, IPv4-mapped IPv6 as IPv4;
    raises ValueError naming a bad one."""
    if isinstance(cidrs, str):
        raise TypeError("allow_ip must be a sequence of networks, not a string")
    result: list[str] = []
    for text in cidrs:
        if not isinstance(text, str):
            raise TypeError(f"allow_ip: {text!r} is not a string")
        try:
            network: _Network = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError as exc:
            raise ValueError(f"allow_ip: {text!r} is not an IP network ({exc})") from None
        if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
            network = ipaddress.IPv4Network(
                (int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96)
            )
        if str(network) not in result:
            result.append(str(network))
    return tuple(result)


def client_address(text: str | None) -> _Address | None:
    """The client's address from ``RequestFacts.client``; None when it is not one
    (a unix socket, nothing). ``[::1]`` and zone ids are accepted."""
    if not text:
        return None
    value = text.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    value = value.split("%", 1)[0]
    try:
        address: _Address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=1024)
def _parsed(networks: tuple[str, ...]) -> tuple[_Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


@functools.lru_cache(maxsize=4096)
def _allowed(networks: tuple[str, ...], client: str | None) -> bool:
    """Whether ``client`` is in one of ``networks`` (remembered: checked on every request)."""
    address = client_address(client)
    return address is not None and any(address in n for n in _parsed(networks))


def _ips(data: Any, request: RequestFacts) -> Refusal | None:
    if _allowed(data if isinstance(data, tuple) else tuple(data), request.client):
        return None
    return Refusal(
        403,
        "this token may not be used from this address",
        "ip",
        f"client {request.client or 'without an address'} not in {', '.join(data)}",
    )


# -- the idle deadline -------------------------------------------------------
class UseRecorder(Protocol):
    """What the idle check needs from the store the token came from (in this process)."""

    def clock(self) -> float: ...
    def last_use(self, token_id: str) -> float | None: ...
    def note_use(self, token_id: str, when: float, window: float) -> None: ...


_recorders: dict[str, list[weakref.ref[UseRecorder]]] = {}
_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork


_fork.call_after_fork(_after_fork_in_child)


def register_uses(store_id: str, recorder: UseRecorder | None, *, remove: bool = False) -> None:
    """Make ``recorder`` hear of uses of store ``store_id``'s idle tokens (``remove``: stop)."""
    with _lock:
        refs = [r for r in _recorders.get(store_id, ()) if r() is not None and r() is not recorder]
        if not remove and recorder is not None:
            refs.append(weakref.ref(recorder))
        if refs:
            _recorders[store_id] = refs
        else:
            _recorders.pop(store_id, None)


def _recorder(store_id: Any) -> UseRecorder | None:
    for ref in _recorders.get(store_id, ()):
        recorder = ref()
        if recorder is not None:
            return recorder
    return None


def _idle(data: Any, request: RequestFacts) -> Refusal | None:
    token_id, ttl = data["token"], float(data["ttl"])
    deadline = float(data["deadline"])
    recorder = _recorder(data["store"])
    now = recorder.clock() if recorder is not None else time.time()
    if recorder is not None:
        last = recorder.last_use(token_id)
        if last is not None:
            deadline = max(deadline, last + ttl)
    if now >= deadline:
        return Refusal(
            401, NOT_AUTHENTICATED, "idle", f"token {token_id} unused for longer than {ttl:g} s"
        )
    if recorder is not None:
        recorder.note_use(token_id, now, ttl)
    return None


CHECKS = {"ips": _ips, "idle": _idle}
"""The kinds this module adds to :data:`authmw.restrictions.CHECKS`."""
