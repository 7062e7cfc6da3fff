"""HMAC download links for stores that cannot presign (local files, memory).

The stores build links with `sign`; the HTTP route that serves `/v1/files/{key}` checks them with
`verify` and then streams the object. Both sides derive the signed text from the key the same
way, so they only have to agree on the key.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

from core.ports import Clock, Secrets
from core.secrets import URL_SIGNING_KEY
from core.signed_links import sign_link, verify_link
from core.storage import SignedUrl, validate_blob_key


def quote_key(key: str) -> str:
    """The key as a URL path: each segment percent-encoded on its own, the slashes kept."""
    return "/".join(quote(segment, safe="") for segment in key.split("/"))


class LinkSigner:
    """Makes and checks `{public_base_url}{path_prefix}{key}?expires=…&kid=…&sig=…` links.

    The signature covers the route path (`path_prefix` plus the encoded key) and the expiry, with
    the current version of the `url_signing_key` secret; any version the secrets port still lists
    verifies, so rotating the key does not break links already handed out.
    """

    def __init__(
        self,
        secrets: Secrets,
        clock: Clock,
        public_base_url: str,
        path_prefix: str = "/v1/files/",
    ) -> None:
        if not (path_prefix.startswith("/") and path_prefix.endswith("/")):
            raise ValueError(f"path_prefix must start and end with '/': {path_prefix!r}")
        self._secrets = secrets
        self._clock = clock
        self._base_url = public_base_url.rstrip("/")
        self._path_prefix = path_prefix

    def path(self, key: str) -> str:
        """The route path that serves `key`, as signed."""
        return self._path_prefix + quote_key(key)

    async def sign(self, key: str, expires_in: timedelta) -> SignedUrl:
        """A link to `key` valid for at least `expires_in` (rounded up to whole seconds).

        The stores refuse a non-positive `expires_in`; here it makes an already expired link,
        which is what tests of the serving route need.
        """
        validate_blob_key(key)
        secret = await self._secrets.current(URL_SIGNING_KEY)
        expires = math.ceil((self._clock.now() + expires_in).timestamp())
        path = self.path(key)
        query = urlencode(sign_link(path, expires=expires, secret=secret))
        return SignedUrl(
            url=f"{self._base_url}{path}?{query}", expires_at=datetime.fromtimestamp(expires, UTC)
        )

    async def verify(self, key: str, expires: str | None, kid: str | None, sig: str | None) -> None:
        """Return if the link's query parameters are valid for `key` now.

        Raises DomainError `invalid_signature` (tampered, malformed or signed with a retired key
        version) or `link_expired`.
        """
        versions = await self._secrets.versions(URL_SIGNING_KEY)
        verify_link(
            self.path(key), expires=expires, kid=kid, sig=sig, secrets=versions, now=self._clock.now()
        )
