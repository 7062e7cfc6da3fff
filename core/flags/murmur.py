"""MurmurHash3 x86_32 (Austin Appleby's public-domain algorithm) in pure Python.

The core imports no C extension; tests cross-check this against the `mmh3` package, the one
Unleash's Python client hashes with.
"""

from __future__ import annotations

from typing import Final

_C1: Final = 0xCC9E2D51
_C2: Final = 0x1B873593
_MASK: Final = 0xFFFFFFFF


def _rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK


def _fmix32(h: int) -> int:
    """The finaliser: every input bit affects every output bit."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    h ^= h >> 16
    return h


def murmur3_32(data: bytes | str, seed: int = 0) -> int:
    """The unsigned 32-bit MurmurHash3 (x86 variant) of `data`; text is hashed as UTF-8."""
    key = data.encode() if isinstance(data, str) else data
    h = seed & _MASK
    length = len(key)
    whole = length - length % 4
    for start in range(0, whole, 4):
        k = int.from_bytes(key[start : start + 4], "little")
        k = (_rotl32((k * _C1) & _MASK, 15) * _C2) & _MASK
        h = (_rotl32(h ^ k, 13) * 5 + 0xE6546B64) & _MASK
    tail = key[whole:]
    if tail:
        k = int.from_bytes(tail, "little")
        h ^= (_rotl32((k * _C1) & _MASK, 15) * _C2) & _MASK
    return _fmix32(h ^ length)
