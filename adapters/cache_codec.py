"""How cache adapters turn values into bytes and back, and what a valid TTL is.

Every Cache adapter shares this, so a value cached by one reads back the same from any other
(msgpack through msgspec: Structs, dicts, lists, str, int, datetimes, UUIDs...).
"""

from __future__ import annotations

import math
from typing import Any, Final, TypeVar

import msgspec

T = TypeVar("T")

_encoder: Final = msgspec.msgpack.Encoder()
_decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}


def encode_value(value: Any) -> bytes:
    """msgpack bytes for `value`; raises TypeError for types msgspec cannot encode."""
    return _encoder.encode(value)


def decode_value(data: bytes, type_: type[T]) -> T:
    """`data` decoded and validated as `type_`; raises msgspec.DecodeError when it does not fit."""
    try:
        decoder = _decoders.get(type_)
    except TypeError:  # an unhashable type annotation: decode without caching a decoder
        return msgspec.msgpack.decode(data, type=type_)
    if decoder is None:
        # Building a typed decoder costs far more than one decode; there are few cached types.
        decoder = _decoders[type_] = msgspec.msgpack.Decoder(type_)
    result: T = decoder.decode(data)
    return result


def ttl_milliseconds(ttl_seconds: float) -> int:
    """The TTL in whole milliseconds (at least 1); raises ValueError unless positive and finite."""
    if not (ttl_seconds > 0 and math.isfinite(ttl_seconds)):
        raise ValueError(f"ttl_seconds must be a positive number of seconds, got {ttl_seconds!r}")
    return max(1, round(ttl_seconds * 1000))
