"""What every WebhookTransport shares: the SSRF refusals, the error texts, the added headers and
the reading of `Retry-After`.

The HTTP transport and the in-memory fake both use these, so a test written against the fake sees
the same refusals and messages as production. Standard library and core only: the fake imports
this module without loading httpx.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from core.webhooks.targets import ParsedTarget, check_target_url, forbidden_address

DEFAULT_USER_AGENT = "Pictor-Webhooks/1"
CONNECTION_REFUSED = "connection refused"


class UnsafeTarget(Exception):
    """The attempt was refused before any connection; `str(error)` is the text to report."""


def check_target(url: str, *, allow_private: bool) -> ParsedTarget:
    """The parsed target URL, or UnsafeTarget. Plain http is allowed together with private targets
    (PICTOR_WEBHOOKS_ALLOW_PRIVATE), since both only make sense for local receivers."""
    try:
        return check_target_url(url, allow_http=allow_private)
    except ValueError as error:
        raise UnsafeTarget(f"unsafe target: {error}") from None


def check_addresses(target: ParsedTarget, addresses: Sequence[str], *, allow_private: bool) -> None:
    """Raise UnsafeTarget if ANY address the host has is forbidden: the connection may go to any of
    them, and a receiver must not be able to smuggle a private address in among public ones."""
    for address in addresses:
        try:
            reason = forbidden_address(address, allow_private=allow_private)
        except ValueError:
            reason = "invalid address"
        if reason is not None:
            verb = "is" if target.ip_literal is not None else "resolves to"
            article = "an" if reason[:1].lower() in "aeiou" else "a"
            raise UnsafeTarget(f"unsafe target: {target.host} {verb} {article} {reason}")


def unresolvable(host: str) -> str:
    """The error text for a host name that has no address."""
    return f"cannot resolve {host}"


def timed_out(timeout_seconds: float) -> str:
    """The error text for an attempt that ran out of time."""
    return f"timeout after {timeout_seconds:g}s"


def outgoing_headers(headers: Mapping[str, str], *, user_agent: str) -> dict[str, str]:
    """The headers an attempt sends: the caller's as given, plus a JSON content type and the user
    agent unless the caller set them. A caller's `Host` is dropped: the target decides it."""
    sent = {name: value for name, value in headers.items() if name.lower() != "host"}
    given = {name.lower() for name in sent}
    if "content-type" not in given:
        sent["content-type"] = "application/json"
    if "user-agent" not in given:
        sent["user-agent"] = user_agent
    return sent


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta-seconds or an HTTP-date, RFC 9110 §10.2.3),
    or None when it is absent, malformed, negative or already past."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime form and "-0000": HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    seconds = (when - now).total_seconds()
    return seconds if seconds >= 0 else None
