"""Names of cache tags shared by the readers that cache and the writers that invalidate.

A principal (core.accounts.principal) cached for a credential carries the tags of everything it
was built from; changing any of them (a key revoked, a user suspended, a plan changed) invalidates
the tag, in every process.
"""

from __future__ import annotations

import msgspec


def user_tag(user_id: str) -> str:
    """Everything cached about one user: profile, role, status, plan."""
    return f"user:{user_id}"


def api_key_tag(key_id: str) -> str:
    return f"api-key:{key_id}"


class Invalidation(msgspec.Struct, frozen=True):
    """A message on the invalidation bus: drop these tags, or (`reset`) drop everything because
    messages may have been missed (the bus reconnected)."""

    tags: tuple[str, ...] = ()
    reset: bool = False
