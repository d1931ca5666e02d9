"""murmur2 against Kafka's published vectors, and the default partitioner's choice."""
from __future__ import annotations

import pytest

from client.common.murmur2 import default_partition, murmur2, to_positive

# Kafka's UtilsTest.testMurmur2 (clients/src/test/java/org/apache/kafka/common/utils),
# plus vectors other Java-compatible ports check against Utils.murmur2.
KAFKA_VECTORS = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
    "1": -1993445489,
    "12": 126087238,
    "123": -267702483,
    "1234": -1614185708,
    "12345": -1188365604,
}

# (key -> partition for partition counts 1..64), derived from the published hashes
# above by hand-checkable arithmetic: (hash & 0x7fffffff) % n.
PARTITION_TABLE = {
    "21": [0, 0, 0, 0, 0, 0, 3, 4, 3, 0, 5, 0, 0, 10, 0, 12, 13, 12, 0, 0, 3, 16, 7, 12, 15, 0,
           12, 24, 17, 0, 26, 12, 27, 30, 10, 12, 29, 0, 0, 20, 17, 24, 27, 16, 30, 30, 21, 12,
           17, 40, 30, 0, 6, 12, 5, 52, 0, 46, 40, 0, 34, 26, 3, 44],
    "foobar": [0, 0, 0, 2, 1, 0, 0, 6, 0, 6, 8, 6, 7, 0, 6, 14, 9, 0, 14, 6, 0, 8, 10, 6, 16, 20,
               0, 14, 2, 6, 27, 30, 30, 26, 21, 18, 9, 14, 33, 6, 39, 0, 1, 30, 36, 10, 34, 30,
               28, 16, 9, 46, 41, 0, 41, 14, 33, 2, 8, 6, 47, 58, 0, 62],
    "abc": [0, 1, 0, 3, 2, 3, 4, 3, 3, 7, 6, 3, 12, 11, 12, 11, 16, 3, 15, 7, 18, 17, 9, 3, 7,
            25, 3, 11, 28, 27, 20, 27, 6, 33, 32, 3, 20, 15, 12, 27, 35, 39, 26, 39, 12, 9, 30,
            27, 11, 7, 33, 51, 42, 3, 17, 11, 15, 57, 58, 27, 42, 51, 39, 27],
}


@pytest.mark.parametrize("key,expected", sorted(KAFKA_VECTORS.items()))
def test_murmur2_matches_kafka(key, expected):
    assert murmur2(key.encode()) == expected


def test_accepts_bytes_like_and_is_signed_32_bit():
    assert murmur2(bytearray(b"foobar")) == murmur2(memoryview(b"foobar")) == -790332482
    for n in range(40):
        h = murmur2(bytes(range(n)))
        assert -(2**31) <= h < 2**31
    # High bytes are unsigned in the tail too (Java masks them with 0xff).
    assert murmur2(b"\xff\xfe\xfd") != murmur2(b"\x7f\x7e\x7d")


@pytest.mark.parametrize("n,expected", [
    (0, 0), (1, 1), (-1, 0x7FFFFFFF), (-(2**31), 0), (2**31 - 1, 2**31 - 1), (-973932308, 1173551340),
])
def test_to_positive(n, expected):
    assert to_positive(n) == expected


@pytest.mark.parametrize("key", sorted(PARTITION_TABLE))
def test_partition_table(key):
    got = [default_partition(key.encode(), n) for n in range(1, 65)]
    assert got == PARTITION_TABLE[key]


@pytest.mark.parametrize("key,hash_", sorted(KAFKA_VECTORS.items()))
def test_default_partition_is_positive_hash_mod_n(key, hash_):
    for n in range(1, 65):
        assert default_partition(key.encode(), n) == (hash_ & 0x7FFFFFFF) % n


def test_default_partition_rejects_no_partitions():
    with pytest.raises(ValueError):
        default_partition(b"k", 0)
