"""The PasswordBlocklist port over the list of common passwords that ships with Pictor.

`data/common-passwords.txt.gz` is Django's list (20 000 of the most common passwords, compiled by
Royce Williams, lower-cased and deduplicated; see `data/NOTICE`).
"""

from __future__ import annotations

import functools
import gzip
import unicodedata
from importlib import resources

_DATA_FILE = "common-passwords.txt.gz"


def fold_password(password: str) -> str:
    """The form entries are stored and looked up in: NFKC, then case-folded."""
    return unicodedata.normalize("NFKC", password).casefold()


@functools.cache
def _shipped_entries() -> frozenset[str]:
    """The data file, read once per process however many blocklists are built."""
    data = resources.files("adapters.passwords").joinpath("data").joinpath(_DATA_FILE).read_bytes()
    lines = gzip.decompress(data).decode("utf-8").splitlines()
    return frozenset(fold_password(line) for line in lines if line.strip())


class ShippedBlocklist:
    """Implements `core.ports.PasswordBlocklist` with the shipped list, in a frozenset.

    Matching is case-insensitive and NFKC-insensitive; a lookup is one hash-set probe, so it
    costs the same whatever the list holds.
    """

    def __init__(self) -> None:
        self._entries = _shipped_entries()

    def __contains__(self, password: object) -> bool:
        return isinstance(password, str) and fold_password(password) in self._entries

    def __len__(self) -> int:
        return len(self._entries)
