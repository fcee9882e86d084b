"""The client IP: the peer, or X-Forwarded-For only from proxies the operator trusts."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory

from dosportal.clientip import client_ip, client_ip_from, parse_trusted_proxies

TRUSTED = parse_trusted_proxies(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"])


def test_without_a_header_it_is_the_peer() -> None:
    assert client_ip_from("203.0.113.5", None, TRUSTED) == "203.0.113.5"


def test_a_header_from_an_untrusted_peer_is_ignored() -> None:
    assert client_ip_from("203.0.113.5", "198.51.100.1", TRUSTED) == "203.0.113.5"


def test_a_trusted_proxy_gives_the_client_it_saw() -> None:
    assert client_ip_from("10.1.2.3", "198.51.100.1", TRUSTED) == "198.51.100.1"


def test_addresses_a_client_wrote_itself_are_not_believed() -> None:
    # The client sent "1.1.1.1"; our proxy appended the address it really saw.
    assert client_ip_from("10.1.2.3", "1.1.1.1, 198.51.100.1", TRUSTED) == "198.51.100.1"


def test_a_chain_of_trusted_proxies_is_walked_from_the_right() -> None:
    assert client_ip_from("10.0.0.1", "198.51.100.1, 192.0.2.7, 10.9.9.9", TRUSTED) == "198.51.100.1"


def test_garbage_stops_at_the_last_trusted_hop() -> None:
    assert client_ip_from("10.0.0.1", "198.51.100.1, not-an-ip", TRUSTED) == "10.0.0.1"


def test_ports_brackets_and_ipv4_mapped_addresses_are_understood() -> None:
    assert client_ip_from("10.0.0.1", "[2001:db9::1]:443", TRUSTED) == "2001:db9::1"
    assert client_ip_from("10.0.0.1", "198.51.100.1:5678", TRUSTED) == "198.51.100.1"
    assert client_ip_from("::ffff:203.0.113.5", None, TRUSTED) == "203.0.113.5"


def test_an_unknown_peer_gives_an_empty_address() -> None:
    assert client_ip_from(None, "198.51.100.1", TRUSTED) == ""
    assert client_ip_from("garbage", None, TRUSTED) == ""


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
