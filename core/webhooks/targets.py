"""The SSRF guard's pure rules: which target URLs and which resolved addresses webhooks may reach.

`check_target_url` runs at registration and again before each delivery; the delivery adapter
then resolves the host and passes every address through `forbidden_address`, so a name that
later resolves to a private address (DNS rebinding) is still refused at delivery time.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import SplitResult, urlsplit

import msgspec

_DEFAULT_PORTS = {"https": 443, "http": 80}
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_MAX_HOST_LENGTH = 253
MAX_URL_LENGTH = 2048  # also the webhook tables' limit on a target URL

_METADATA_V4 = ipaddress.IPv4Address("169.254.169.254")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

# Addresses only wrong in production: `allow_private` (local development, tests) lets them through.
_PRIVATE_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (ipaddress.IPv4Network("127.0.0.0/8"), "loopback address"),
    (ipaddress.IPv4Network("10.0.0.0/8"), "private address"),
    (ipaddress.IPv4Network("172.16.0.0/12"), "private address"),
    (ipaddress.IPv4Network("192.168.0.0/16"), "private address"),
    (ipaddress.IPv4Network("100.64.0.0/10"), "shared (CGNAT) address"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "link-local address"),
)
_PRIVATE_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (ipaddress.IPv6Network("::1/128"), "loopback address"),
    (ipaddress.IPv6Network("fc00::/7"), "unique local (private) address"),
    (ipaddress.IPv6Network("fe80::/10"), "link-local address"),
    (ipaddress.IPv6Network("fec0::/10"), "site-local (private) address"),
)


class ParsedTarget(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook target URL that passed the static checks.

    `ip_literal` is set when the host is an IP address, so callers can check it with
    `forbidden_address` without resolving anything.
    """

    url: str
    scheme: str
    host: str
    port: int
    path: str
    ip_literal: str | None


def _host_of(parts: SplitResult) -> tuple[str, str | None]:
    """The normalised host and, when it is an address, the address; ValueError otherwise."""
    host = parts.hostname
    if not host:
        raise ValueError("the URL needs a host")
    if "%" in host:
        raise ValueError("IPv6 zone identifiers are not allowed in webhook URLs")
    try:
        return host, str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        ascii_host = host.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise ValueError("the URL host is not a valid host name") from exc
    labels = ascii_host.split(".")
    if len(ascii_host) > _MAX_HOST_LENGTH or not all(_LABEL.match(label) for label in labels):
        raise ValueError("the URL host is not a valid host name")
    # Resolvers read `2130706433`, `0x7f.1` or `127.1` as IPv4 addresses; such spellings are refused
    # so that an address can only be written in its plain form.
    last = labels[-1]
    if last.isdigit() or last.startswith("0x"):
        raise ValueError("the URL host looks like a numeric address; write the address in dotted form")
    return ascii_host, None


def check_target_url(url: str, *, allow_http: bool) -> ParsedTarget:
    """Parse and statically check a webhook target URL; ValueError explains any refusal.

    Callers turn the ValueError into `unsafe_url` (or `validation_failed` for malformed input).
    """
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise ValueError("the URL contains whitespace or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "http" and not allow_http:
        raise ValueError("webhook URLs must use https")
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("webhook URLs must use https" + (" or http" if allow_http else ""))
    if "@" in parts.netloc:
        raise ValueError("webhook URLs must not carry credentials")
    if parts.fragment:
        raise ValueError("webhook URLs must not have a fragment")
    host, ip_literal = _host_of(parts)
    try:
        explicit_port = parts.port
    except ValueError as exc:
        raise ValueError("the URL port must be a number from 1 to 65535") from exc
    if explicit_port == 0:
        raise ValueError("the URL port must be a number from 1 to 65535")
    port = explicit_port if explicit_port is not None else _DEFAULT_PORTS[scheme]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return ParsedTarget(url=url, scheme=scheme, host=host, port=port, path=path, ip_literal=ip_literal)


def _v4_reason(ip: ipaddress.IPv4Address, *, allow_private: bool) -> str | None:
    if ip in ipaddress.IPv4Network("0.0.0.0/8"):
        return "unspecified address"
    if ip.is_multicast:
        return "multicast address"
    for network, reason in _PRIVATE_V4:
        if ip in network:
            if allow_private:
                return None
            return "link-local address (cloud metadata)" if ip == _METADATA_V4 else reason
    if not ip.is_global:
        # Broadcast, 240/4 and the documentation, benchmarking and protocol ranges: never a real target.
        return "reserved address"
    return None


def _v6_reason(ip: ipaddress.IPv6Address, *, allow_private: bool) -> str | None:
    # An IPv6 spelling of an IPv4 address reaches that IPv4 host, so it gets the IPv4 verdict.
    embedded = ip.ipv4_mapped or ip.sixtofour
    if embedded is None and ip in _NAT64:
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if embedded is not None:
        reason = _v4_reason(embedded, allow_private=allow_private)
        return None if reason is None else f"IPv4-embedding IPv6 of a {reason}"
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_multicast:
        return "multicast address"
    for network, reason in _PRIVATE_V6:
        if ip in network:
            return None if allow_private else reason
    if not ip.is_global:
        return "reserved address"
    return None


def forbidden_address(ip: str, *, allow_private: bool) -> str | None:
    """Why webhooks may not reach `ip`, or None when they may; ValueError if `ip` is not an address.

    Unspecified, multicast and reserved addresses are always refused; loopback, private, CGNAT and
    link-local ones (the 169.254.169.254 metadata service included) only when `allow_private` is off.
    """
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv4Address):
        return _v4_reason(address, allow_private=allow_private)
    return _v6_reason(address, allow_private=allow_private)
