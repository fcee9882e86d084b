"""The rules of a key's settings that more than one place needs: spend periods, allowed
client addresses, allowed models. Pure functions, no database (the /v1 path calls them).

Spend periods are calendar periods in UTC: a day starts at 00:00, a week on Monday at
00:00, a month on its 1st at 00:00; `total` is one period that never ends (it starts at
the epoch). The period a call belongs to is computed from the time the call started,
here in Python, and passed to the reservation and settlement statements, so the tests
can cross a period boundary without waiting for one.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress

from dosportal.clientip import Network, parse_networks

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
PERIODS = ("day", "week", "month", "total")


def period_start(period: str, at: dt.datetime) -> dt.datetime:
    """The start of the spend period that contains `at`."""
    at = at.astimezone(dt.UTC)
    midnight = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return midnight
    if period == "week":
        return midnight - dt.timedelta(days=midnight.weekday())
    if period == "month":
        return midnight.replace(day=1)
    if period == "total":
        return EPOCH
    raise ValueError(f"unknown spend period {period!r}")


def period_end(period: str, at: dt.datetime) -> dt.datetime | None:
    """When the period containing `at` ends and the spend starts again from zero; None for `total`."""
    start = period_start(period, at)
    if period == "day":
        return start + dt.timedelta(days=1)
    if period == "week":
        return start + dt.timedelta(days=7)
    if period == "month":
        return (start + dt.timedelta(days=32)).replace(day=1)
    return None


def clean_networks(entries: list[str]) -> list[str]:
    """Addresses and CIDR ranges, normalised (`10.0.0.7/24` → `10.0.0.0/24`, a bare address
    stays bare); a bad entry raises ValueError naming it."""
    cleaned = []
    for network in parse_networks(entry for entry in entries if entry.strip()):
        text = str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)
        if text not in cleaned:
            cleaned.append(text)
    return cleaned


@functools.lru_cache(maxsize=1024)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    try:
        return parse_networks(entries)
    except ValueError:
        return ()  # a list that cannot be read allows no one rather than everyone


def ip_allowed(client: str, allowed: list[str] | None) -> bool:
    """True when `allowed` is None (any address) or the client is inside one of its ranges.
    An IPv4 client seen as an IPv4-mapped IPv6 address (::ffff:a.b.c.d) matches its IPv4 form."""
    if allowed is None:
        return True
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == network.version and address in network for network in _networks(tuple(allowed)))


def model_allowed(name: str, allowed: list[str] | None) -> bool:
    """None means every model, explicitly; a list (even an empty one) allows only what it names."""
    return allowed is None or name in allowed
