"""The SSRF guard's rules: target URL checks and forbidden resolved addresses."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.webhooks.targets import check_target_url, forbidden_address

PRIVATE_ADDRESSES = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "169.254.0.1",
    "100.64.0.1",
    "::1",
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::10.0.0.1",
    "2002:a00:1::1",
    "fc00::1",
    "fd00:ec2::254",
    "fe80::1",
]
ALWAYS_REFUSED = ["0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255", "240.0.0.1", "192.0.2.1"]
PUBLIC_ADDRESSES = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("ip", PRIVATE_ADDRESSES)
def test_private_addresses_refused_by_default_and_allowed_with_allow_private(ip: str) -> None:
    assert forbidden_address(ip, allow_private=False) is not None
    assert forbidden_address(ip, allow_private=True) is None


@pytest.mark.parametrize("ip", ALWAYS_REFUSED)
def test_unspecified_multicast_and_reserved_are_always_refused(ip: str) -> None:
    assert forbidden_address(ip, allow_private=False) is not None
    assert forbidden_address(ip, allow_private=True) is not None


@pytest.mark.parametrize("ip", PUBLIC_ADDRESSES)
def test_public_addresses_are_allowed(ip: str) -> None:
    assert forbidden_address(ip, allow_private=False) is None


def test_reasons_name_the_category() -> None:
    assert forbidden_address("127.0.0.1", allow_private=False) == "loopback address"
    assert "metadata" in (forbidden_address("169.254.169.254", allow_private=False) or "")
    assert "private" in (forbidden_address("::ffff:10.0.0.1", allow_private=False) or "")
    assert "CGNAT" in (forbidden_address("100.64.0.1", allow_private=False) or "")
    assert forbidden_address("fe80::1", allow_private=False) == "link-local address"


def test_non_addresses_raise() -> None:
    with pytest.raises(ValueError):
        forbidden_address("example.com", allow_private=False)


@given(
    st.ip_addresses(v=4, network="10.0.0.0/8")
    | st.ip_addresses(v=4, network="127.0.0.0/8")
    | st.ip_addresses(v=4, network="192.168.0.0/16")
    | st.ip_addresses(v=6, network="fc00::/7")
)
def test_every_private_address_is_refused_also_in_mapped_form(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    assert forbidden_address(str(ip), allow_private=False) is not None
    if isinstance(ip, ipaddress.IPv4Address):
        assert forbidden_address(f"::ffff:{ip}", allow_private=False) is not None


@given(st.ip_addresses())
def test_allowed_addresses_are_global(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    if forbidden_address(str(ip), allow_private=False) is None:
        assert ip.is_global or (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None)


def test_https_url_is_parsed() -> None:
    target = check_target_url("https://Hooks.Example.com/pictor?team=1", allow_http=False)
    assert (target.scheme, target.host, target.port, target.path, target.ip_literal) == (
        "https",
        "hooks.example.com",
        443,
        "/pictor?team=1",
        None,
    )
    assert check_target_url("https://example.com:8443", allow_http=False).port == 8443
    assert check_target_url("https://[::1]:9000/x", allow_http=False).ip_literal == "::1"
    assert check_target_url("https://10.0.0.1/x", allow_http=False).ip_literal == "10.0.0.1"


def test_http_refused_unless_allowed() -> None:
    with pytest.raises(ValueError, match="https"):
        check_target_url("http://example.com/hook", allow_http=False)
    target = check_target_url("http://127.0.0.1:8080/hook", allow_http=True)
    assert (target.scheme, target.port, target.ip_literal) == ("http", 8080, "127.0.0.1")


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pass@example.com/",
        "https://user@example.com/",
        "https://example.com@10.0.0.1/",
        "ftp://example.com/",
        "file:///etc/passwd",
        "example.com/hook",
        "https:///hook",
        "https://example.com:0/",
        "https://example.com:65536/",
        "https://example.com:port/",
        "https://exa mple.com/",
        "https://example.com/\r\nX: y",
        "https://example.com/#frag",
        "https://2130706433/",
        "https://0x7f.1/",
        "https://127.1/",
        "https://[fe80::1%25eth0]/",
        "https://-bad-.example.com/",
        "https://" + "a" * 64 + ".com/",
    ],
)
def test_unsafe_or_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_target_url(url, allow_http=True)


@given(st.integers(min_value=1, max_value=65535))
def test_every_valid_port_is_accepted(port: int) -> None:
    assert check_target_url(f"https://example.com:{port}/h", allow_http=False).port == port
