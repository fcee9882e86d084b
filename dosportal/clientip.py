"""The client's address: the connection's peer, or `X-Forwarded-For` only behind trusted proxies.

`DOS_AI_TRUSTED_PROXIES` lists the addresses and CIDR ranges of the proxies in front of the
portal (IPv4 and IPv6). `X-Forwarded-For` is believed only when the connection comes from
one of them; the client is then the right-most address that is not itself a trusted proxy
(each proxy appends the address it saw, so anything to its left may be forged).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from django.conf import settings
from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR ranges; a bad entry raises ValueError naming it."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or CIDR range: {entry!r}") from None
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: tuple[Network, ...]) -> bool:
    return any(address.version == network.version and address in network for network in trusted)


def resolve_client_ip(peer: str, forwarded_for: str, trusted: tuple[Network, ...]) -> str:
    """The client address, given the connection's peer and the X-Forwarded-For header."""
    peer_address = _address(peer)
    if peer_address is None:
        return peer or "unknown"
    if not forwarded_for or not _trusted(peer_address, trusted):
        return str(peer_address)
    for hop in reversed(forwarded_for.split(",")):
        address = _address(hop)
        if address is None:
            break  # a forged or garbled entry: stop at the last address we can vouch for
        if not _trusted(address, trusted):
            return str(address)
        peer_address = address
    return str(peer_address)


@functools.cache
def _trusted_from_settings(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return parse_networks(entries)


def client_ip(request: HttpRequest) -> str:
    trusted = _trusted_from_settings(tuple(settings.DOS_AI_TRUSTED_PROXIES))
    return resolve_client_ip(request.META.get("REMOTE_ADDR", ""), request.headers.get("X-Forwarded-For", ""), trusted)
