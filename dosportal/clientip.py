"""The client's IP address: the connection's peer, or, behind proxies the operator lists, X-Forwarded-For.

`X-Forwarded-For` is written by whoever sent the request, so it is believed only from a
peer in `DOS_AI_TRUSTED_PROXIES`. Each trusted proxy appends the address it saw, so the
header is read from the right: skip addresses that are themselves trusted proxies, and
the first one that is not is the client. Anything malformed on the way stops the walk at
the last address we could trust (never an attacker-chosen string).

`client_ip_from()` is a pure function of (peer address, header value, trusted networks)
so the /v1 gateway can use it with the ASGI scope as well as the dashboard with a request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDRs ("10.0.0.0/8", "192.0.2.7", "::1"); a bad one raises ValueError naming it."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network (CIDR): {entry!r}") from None
    return tuple(networks)


def parse_trusted_proxies(entries: Iterable[str]) -> tuple[Network, ...]:
    """`DOS_AI_TRUSTED_PROXIES`: a bad entry stops start-up with its name."""
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.extend(parse_networks([entry]))
        except ValueError:
            raise ImproperlyConfigured(
                f"DOS_AI_TRUSTED_PROXIES: {entry!r} is not an IP address or network (CIDR)"
            ) from None
    return tuple(networks)


def _parse_address(value: str) -> Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:443"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "192.0.2.1:5678"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _is_trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address.version == network.version and address in network for network in trusted)


def client_ip_from(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client's address as text ("" when the peer itself is unknown)."""
    address = _parse_address(peer or "")
    if address is None:
        return ""
    if not forwarded_for or not _is_trusted(address, trusted):
        return str(address)
    for hop in reversed(forwarded_for.split(",")):
        hop_address = _parse_address(hop)
        if hop_address is None:
            break
        address = hop_address
        if not _is_trusted(address, trusted):
            break
    return str(address)


def client_ip(request: HttpRequest) -> str:
    return client_ip_from(
        request.META.get("REMOTE_ADDR"),
        request.META.get("HTTP_X_FORWARDED_FOR"),
        settings.DOS_AI_TRUSTED_PROXIES,
    )
