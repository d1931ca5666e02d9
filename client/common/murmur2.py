"""Kafka's murmur2 hash (`Utils.murmur2`) and the default partitioner's key hashing.

The arithmetic mirrors Java's 32-bit ints: products and sums wrap at 2**32 and
`>>>` is a logical shift on the unsigned value; the result is signed, as in Java.
"""
from __future__ import annotations

import struct

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
# Little-endian 32-bit words, unpacked at once: the per-byte loop was most of a keyed send's cost.
_WORDS = [struct.Struct(f"<{n}I").unpack_from for n in range(64)]


def murmur2(data: bytes) -> int:
    """Signed 32-bit murmur2 of `data`, equal to Kafka's `Utils.murmur2(byte[])`."""
    length = len(data)
    h = _SEED ^ length
    m = _M
    n4 = length >> 2
    words = _WORDS[n4](data) if n4 < 64 else struct.unpack_from(f"<{n4}I", data)
    for k in words:
        k = (k * m) & _MASK
        k ^= k >> 24
        h = ((h * m) & _MASK) ^ ((k * m) & _MASK)
    rest = length & 3
    if rest:
        tail = n4 << 2
        if rest == 3:
            h ^= data[tail + 2] << 16
        if rest >= 2:
            h ^= data[tail + 1] << 8
        h ^= data[tail]
        h = (h * m) & _MASK
    h ^= h >> 13
    h = (h * m) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(n: int) -> int:
    """Kafka's `Utils.toPositive`: clear the sign bit (not abs, so MIN_VALUE maps to 0)."""
    return n & 0x7FFFFFFF


def default_partition(key_bytes: bytes, num_partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a non-null key."""
    if num_partitions <= 0:
        raise ValueError(f"num_partitions must be positive, got {num_partitions}")
    return to_positive(murmur2(key_bytes)) % num_partitions
