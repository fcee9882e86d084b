"""Where a webhook may go: never to our own network, unless the operator allows it.

A customer's URL must not make the portal call loopback, link-local (cloud metadata at
169.254.169.254), private or otherwise non-public addresses. The check is on the addresses the
name resolves to, every time a delivery is sent, and the connection is made to the address
that was checked (so a DNS answer that changes between check and connect — rebinding — cannot
slip through); TLS still verifies the certificate for the URL's host name. Redirects are never
followed: a 3xx is a failed attempt. DOS_AI_WEBHOOKS_ALLOW_PRIVATE=1 lifts the address check
(for a portal whose customers' receivers are on its own network, and for tests).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings


class UrlRefused(Exception):
    """The URL may not receive webhooks; the message says why, in words for the form."""


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # with the query
    address: str  # the checked IP address to connect to


def check_url_form(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an http(s) URL without credentials; UrlRefused otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlRefused("This is not a valid URL.") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UrlRefused("Use an http:// or https:// URL.")
    if parts.username or parts.password:
        raise UrlRefused("Leave credentials out of the URL; verify the signature instead.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def _refused_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    # is_global is False for loopback, link-local, private, shared (100.64/10), reserved,
    # documentation and unspecified ranges alike; multicast is not a receiver either.
    return not address.is_global or address.is_multicast


def resolve(url: str) -> Target:
    """The URL's parts and the first allowed address its host resolves to; UrlRefused when
    the URL is malformed, does not resolve, or any of its addresses is not public."""
    scheme, host, port, path = check_url_form(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UrlRefused(f"The host name {host} does not resolve.") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not settings.DOS_AI_WEBHOOKS_ALLOW_PRIVATE:
        for address in addresses:
            if _refused_address(ipaddress.ip_address(address.split("%", 1)[0])):
                raise UrlRefused(
                    f"{host} resolves to {address}, a private, loopback or link-local address: "
                    "webhooks go only to public addresses."
                )
    return Target(scheme, host, port, path, addresses[0])


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self.address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self.address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes  # the start of it, for the delivery log


def post(target: Target, body: bytes, headers: dict[str, str], *, timeout: float) -> Answer:
    """POST `body` to the checked address; redirects are not followed. OSError and
    http.client.HTTPException on a network failure or time-out."""
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(target, timeout)
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        return Answer(response.status, response.read(1024))
    finally:
        connection.close()
