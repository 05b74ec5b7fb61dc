"""Who the client is: the connection's address, or a trusted proxy's ``X-Forwarded-For``.

Without ``trusted_proxies`` the client is the peer of the connection (WSGI
``REMOTE_ADDR``, ASGI ``scope["client"]``): a client-sent
``X-Forwarded-For`` is never believed. With it, and only when the peer is
one of the trusted networks, ``X-Forwarded-For`` is read from the right:
each address appended by a trusted proxy is skipped, and the first one that
is not trusted is the client (the leftmost, when every hop is trusted).
IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``) are the IPv4 address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from .errors import ConfigurationError

__all__ = ["ClientAddresses", "normal_address"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> Address | None:
    """The address in ``text`` (IPv4-mapped IPv6 as IPv4), or None."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normal_address(text: str | None) -> str | None:
    """``text`` as a canonical address string (None if it is not an address)."""
    if text is None:
        return None
    address = parse_address(text)
    return str(address) if address is not None else None


class ClientAddresses:
    """Finds the client's address for one ``trusted_proxies`` setting."""

    __slots__ = ("networks",)

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        if isinstance(trusted_proxies, str):
            trusted_proxies = [trusted_proxies]
        networks: list[Network] = []
        for entry in trusted_proxies:
            try:
                networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
            except ValueError:
                raise ConfigurationError(
                    "trusted_proxies", f"not an address or network: {entry!r}"
                ) from None
        self.networks = tuple(networks)

    def _trusted(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    def client(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The client's address, from the connection's ``peer`` and ``X-Forwarded-For``."""
        peer_address = parse_address(peer) if peer else None
        if peer_address is None:
            return None
        if not self.networks or not forwarded_for or not self._trusted(peer_address):
            return str(peer_address)
        hops = [parse_address(hop) for hop in forwarded_for.split(",")]
        client = peer_address
        for hop in reversed(hops):
            if hop is None:
                break  # garbage: trust nothing further left
            client = hop
            if not self._trusted(hop):
                break
        return str(client)
