"""Named secrets with versions, so signing keys can rotate without breaking what they signed."""

from __future__ import annotations

import msgspec


class SecretVersion(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: str
    value: str

    def __repr__(self) -> str:  # never leak the value into logs or tracebacks
        return f"SecretVersion(name={self.name!r}, version={self.version!r}, value='***')"

    __str__ = __repr__


# Names of the secrets Pictor itself uses; operators provide them or the embedded default makes them.
URL_SIGNING_KEY = "url_signing_key"
METRICS_TOKEN = "metrics_token"
RENDERER_API_KEY = "renderer_api_key"  # bearer token for PICTOR_RENDERER_URL, when it needs one
WEBHOOK_SECRET_KEY = "webhook_secret_key"  # master key from which webhook signing secrets are derived
