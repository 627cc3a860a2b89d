"""Which partition a keyed record went to: librdkafka's key partitioners, in Python.

``streamsync explain --config`` reads one customer's deltas. They are keyed by customer
id, so the producer's partitioner put them all in one partition; computing it here reads
that partition instead of the whole topic. The functions match librdkafka's built-in
partitioners for a non-empty key (the ``partitioner`` setting; default
``consistent_random``): ``consistent``/``consistent_random`` hash with CRC-32,
``murmur2``/``murmur2_random`` as the Java client does, ``fnv1a``/``fnv1a_random`` with
32-bit FNV-1a (as Sarama). Any other setting (``random``, a custom partitioner) has no
answer, and the caller reads every partition.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

#: librdkafka's default ``partitioner``.
DEFAULT_PARTITIONER = "consistent_random"

_M32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """The Java client's murmur2 (seed 0x9747b28c), as an unsigned 32-bit number."""
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & _M32
    end = length & ~3
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & _M32
        k ^= k >> 24
        k = (k * m) & _M32
        h = ((h * m) & _M32) ^ k
    extra = length & 3
    if extra == 3:
        h ^= data[end + 2] << 16
    if extra >= 2:
        h ^= data[end + 1] << 8
    if extra >= 1:
        h ^= data[end]
        h = (h * m) & _M32
    h ^= h >> 13
    h = (h * m) & _M32
    h ^= h >> 15
    return h


def fnv1a(data: bytes) -> int:
    """32-bit FNV-1a, as the absolute value of a signed 32-bit number (librdkafka does
    this to match Sarama's hash partitioner)."""
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & _M32
    return (0x100000000 - h) & _M32 if h & 0x80000000 else h


_HASHES: dict[str, Callable[[bytes], int]] = {
    "consistent": zlib.crc32,
    "consistent_random": zlib.crc32,
    "murmur2": lambda key: murmur2(key) & 0x7FFFFFFF,
    "murmur2_random": lambda key: murmur2(key) & 0x7FFFFFFF,
    "fnv1a": fnv1a,
    "fnv1a_random": fnv1a,
}


def key_hash(partitioner: str) -> Callable[[bytes], int] | None:
    """The hash ``partitioner`` takes the partition of a non-empty key from (modulo the
    partition count), or ``None`` when it is not a key hash known here."""
    return _HASHES.get(partitioner)


def partition_for(
    key: bytes, partitions: int, partitioner: str = DEFAULT_PARTITIONER
) -> int | None:
    """The partition librdkafka's ``partitioner`` picks for a non-empty ``key`` among
    ``partitions``, or ``None`` when the partitioner is not a key hash known here."""
    if not key or partitions < 1:
        return None
    hash_ = _HASHES.get(partitioner)
    return None if hash_ is None else hash_(key) % partitions
