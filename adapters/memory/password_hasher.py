"""A fast stand-in for the argon2 hasher, for tests: still salted and one-way, just cheap."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_SCHEME = "fake"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


class FastPasswordHasher:
    """Implements `core.ports.PasswordHasher` with PBKDF2-SHA256 at a few iterations.

    Hashes read `fake$<iterations>$<salt>$<digest>`. `iterations` is the current parameter: change
    it and hashes made before say `needs_rehash`, as argon2 hashes do when the cost changes.
    Never use it outside tests.
    """

    def __init__(self, *, iterations: int = 1) -> None:
        self.iterations = iterations

    def _digest(self, password: str, salt: bytes, iterations: int) -> bytes:
        return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)

    async def hash(self, password: str) -> str:
        salt = secrets.token_bytes(16)
        digest = self._digest(password, salt, self.iterations)
        return f"{_SCHEME}${self.iterations}${_b64(salt)}${_b64(digest)}"

    async def verify(self, password_hash: str, password: str) -> bool:
        parsed = _parse(password_hash)
        if parsed is None:
            return False
        iterations, salt, expected = parsed
        try:
            actual = self._digest(password, salt, iterations)
        except UnicodeError:
            return False
        return hmac.compare_digest(actual, expected)

    def needs_rehash(self, password_hash: str) -> bool:
        parsed = _parse(password_hash)
        return parsed is None or parsed[0] != self.iterations


def _parse(password_hash: str) -> tuple[int, bytes, bytes] | None:
    parts = password_hash.split("$")
    if len(parts) != 4 or parts[0] != _SCHEME or not parts[1].isdigit():
        return None
    try:
        salt, digest = (base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in parts[2:])
    except ValueError:
        return None
    iterations = int(parts[1])
    if iterations < 1 or not salt or len(digest) != hashlib.sha256().digest_size:
        return None
    return iterations, salt, digest
