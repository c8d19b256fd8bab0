"""The client's address for the access log: the peer, or X-Forwarded-For behind a proxy
we trust (`log.trusted_proxies`)."""

from __future__ import annotations

import ipaddress

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ClientAddress:
    """The client's address: the peer, or X-Forwarded-For when the peer is a trusted proxy.

    Only what parses as an IP address is believed, and it is logged as parsed: anything
    else in the header is the client's own text, which must not reach the access log.
    """

    def __init__(self, trusted: tuple[str, ...]) -> None:
        self._trusted: list[Network] = [ipaddress.ip_network(n, strict=False) for n in trusted]

    def _is_trusted(self, address: IPAddress) -> bool:
        return any(address in network for network in self._trusted)

    def of(self, request: web.Request) -> str:
        peer = request.remote or "-"
        if not self._trusted:
            return peer
        forwarded = request.headers.get("X-Forwarded-For")
        if not forwarded:
            return peer
        nearest = _address(peer)
        if nearest is None or not self._is_trusted(nearest):
            return peer
        # Walk from the nearest hop outwards; the first untrusted address is the client.
        # A hop that is no address ends the walk at the last proxy we trust.
        for hop in reversed(forwarded.split(",")):
            address = _address(hop)
            if address is None:
                break
            nearest = address
            if not self._is_trusted(address):
                break
        return str(nearest) if nearest is not None else peer


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None
