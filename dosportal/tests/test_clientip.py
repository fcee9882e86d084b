"""The client IP: the peer, or X-Forwarded-For only from proxies the operator trusts."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory

from dosportal.clientip import client_ip, client_ip_from, parse_trusted_proxies

TRUSTED = parse_trusted_proxies(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        pytest.param("203.0.113.5", None, "203.0.113.5", id="without a header it is the peer"),
        pytest.param("203.0.113.5", "198.51.100.1", "203.0.113.5", id="a header from an untrusted peer is ignored"),
        pytest.param("10.1.2.3", "198.51.100.1", "198.51.100.1", id="a trusted proxy gives the client it saw"),
        # The client sent "1.1.1.1"; our proxy appended the address it really saw.
        pytest.param("10.1.2.3", "1.1.1.1, 198.51.100.1", "198.51.100.1", id="what a client wrote is not believed"),
        pytest.param(
            "10.0.0.1", "198.51.100.1, 192.0.2.7, 10.9.9.9", "198.51.100.1", id="trusted proxies walked from the right"
        ),
        pytest.param("10.0.0.1", "198.51.100.1, not-an-ip", "10.0.0.1", id="garbage stops at the last trusted hop"),
        pytest.param("10.0.0.1", "[2001:db9::1]:443", "2001:db9::1", id="brackets and a port"),
        pytest.param("10.0.0.1", "198.51.100.1:5678", "198.51.100.1", id="an IPv4 address and a port"),
        pytest.param("::ffff:203.0.113.5", None, "203.0.113.5", id="an IPv4-mapped peer"),
        pytest.param(None, "198.51.100.1", "", id="an unknown peer gives an empty address"),
        pytest.param("garbage", None, "", id="a peer that is no address gives an empty address"),
    ],
)
def test_the_client_ip_is_the_peer_or_what_a_trusted_proxy_saw(
    peer: str | None, forwarded_for: str | None, expected: str
) -> None:
    assert client_ip_from(peer, forwarded_for, TRUSTED) == expected


def test_nothing_is_trusted_by_default() -> None:
    assert client_ip_from("10.1.2.3", "198.51.100.1", ()) == "10.1.2.3"


def test_a_bad_entry_stops_start_up_with_its_name() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"DOS_AI_TRUSTED_PROXIES: 'nope' is not an IP address"):
        parse_trusted_proxies(["10.0.0.0/8", "nope"])


def test_the_request_wrapper_reads_the_setting(settings) -> None:
    request = RequestFactory().get("/", REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="198.51.100.1")
    settings.DOS_AI_TRUSTED_PROXIES = ()
    assert client_ip(request) == "10.1.2.3"
    settings.DOS_AI_TRUSTED_PROXIES = parse_trusted_proxies(["10.0.0.0/8"])
    assert client_ip(request) == "198.51.100.1"
