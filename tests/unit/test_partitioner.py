"""Partitioners: the default one against Kafka's Java client, sticky keyless (KIP-480), round-robin,
custom partitioners by import path and as callables (the patterns document's region-aware one)."""
from __future__ import annotations

import random

import pytest

from client.common.errors import ConfigError
from client.common.murmur2 import murmur2
from client.common.types import ClusterMetadata, PartitionInfo
from client.partitioner import DefaultPartitioner, RoundRobinPartitioner, make_partitioner
from tests.unit.test_murmur2 import KAFKA_VECTORS


def cluster(n: int, topic: str = "t", unavailable: tuple[int, ...] = ()) -> ClusterMetadata:
    return ClusterMetadata(partitions={topic: [
        PartitionInfo(topic, i, -1 if i in unavailable else 1, (1,), (1,)) for i in range(n)]})


# ---------------------------------------------------------------- Kafka's Java client, as a reference

def _i32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def _ushr(x: int, n: int) -> int:   # Java's >>> on an int
    return (x & 0xFFFFFFFF) >> n


def java_murmur2(data: bytes) -> int:
    """A line-by-line port of Utils.murmur2 with Java int arithmetic, independent of the client's."""
    length = len(data)
    m, r = 0x5BD1E995, 24
    h = _i32(_i32(0x9747B28C) ^ length)
    for i in range(length // 4):
        i4 = i * 4
        k = (data[i4] & 0xFF) + ((data[i4 + 1] & 0xFF) << 8) + ((data[i4 + 2] & 0xFF) << 16) \
            + ((data[i4 + 3] & 0xFF) << 24)
        k = _i32(k * m)
        k = _i32(k ^ _ushr(k, r))
        k = _i32(k * m)
        h = _i32(h * m)
        h = _i32(h ^ k)
    rest, tail = length % 4, length & ~3
    if rest == 3:
        h = _i32(h ^ ((data[tail + 2] & 0xFF) << 16))
    if rest >= 2:
        h = _i32(h ^ ((data[tail + 1] & 0xFF) << 8))
    if rest >= 1:
        h = _i32(h ^ (data[tail] & 0xFF))
        h = _i32(h * m)
    h = _i32(h ^ _ushr(h, 13))
    h = _i32(h * m)
    return _i32(h ^ _ushr(h, 15))


def java_partition(key_bytes: bytes, n: int) -> int:
    """BuiltInPartitioner.partitionForKey: Utils.toPositive(Utils.murmur2(keyBytes)) % numPartitions."""
    return (java_murmur2(key_bytes) & 0x7FFFFFFF) % n


@pytest.mark.parametrize("key,expected", sorted(KAFKA_VECTORS.items()))
def test_reference_matches_kafkas_published_vectors(key, expected):
    assert java_murmur2(key.encode()) == expected


def test_default_partitioner_matches_the_java_client_for_10000_random_keys_and_1_to_64_partitions():
    rng = random.Random(20240607)
    keys = [rng.randbytes(rng.randrange(0, 33)) for _ in range(10_000)]  # every tail length, 0-8 words
    p = DefaultPartitioner(rng=random.Random(0))
    clusters = {n: cluster(n) for n in range(1, 65)}
    mismatches = []
    for key in keys:
        h = java_murmur2(key) & 0x7FFFFFFF
        for n, c in clusters.items():
            got = p("t", key, key, b"v", b"v", c)
            if got != h % n:
                mismatches.append((key, n, got, h % n))
    assert mismatches == []


# ---------------------------------------------------------------- sticky keyless (KIP-480)

def test_keyless_records_stick_to_one_partition_until_a_new_batch():
    c = cluster(6)
    p = DefaultPartitioner(rng=random.Random(1))
    first = p("t", None, None, b"v", b"v", c)
    assert {p("t", None, None, b"v", b"v", c) for _ in range(100)} == {first}
    p.on_new_batch("t", c, first)
    second = p("t", None, None, b"v", b"v", c)
    assert second != first
    assert {p("t", None, None, b"v", b"v", c) for _ in range(100)} == {second}
    p.on_new_batch("t", c, first)    # a stale notice (not the sticky partition) changes nothing
    assert p("t", None, None, b"v", b"v", c) == second


def test_sticky_spreads_over_available_partitions_only():
    c = cluster(6, unavailable=(1, 4))
    p = DefaultPartitioner(rng=random.Random(2))
    seen = set()
    for _ in range(200):
        cur = p("t", None, None, b"v", b"v", c)
        seen.add(cur)
        p.on_new_batch("t", c, cur)
    assert seen == {0, 2, 3, 5}


def test_sticky_follows_new_metadata_after_picks_from_the_old():
    # The available partitions are kept per metadata partition list: new metadata is seen at once.
    p = DefaultPartitioner(rng=random.Random(4))
    before = cluster(6)
    cur = p("t", None, None, b"v", b"v", before)
    for _ in range(20):
        p.on_new_batch("t", before, cur)
        cur = p("t", None, None, b"v", b"v", before)
    after = cluster(6, unavailable=(0, 1, 2, 3))
    seen = set()
    for _ in range(50):
        p.on_new_batch("t", after, cur)
        cur = p("t", None, None, b"v", b"v", after)
        seen.add(cur)
    assert seen == {4, 5}


def test_sticky_with_one_partition_and_after_the_topic_shrinks():
    p = DefaultPartitioner(rng=random.Random(3))
    c1 = cluster(1)
    assert p("t", None, None, None, None, c1) == 0
    p.on_new_batch("t", c1, 0)
    assert p("t", None, None, None, None, c1) == 0
    p.sticky["t"] = 5     # a partition that no longer exists is re-picked
    assert p("t", None, None, None, None, cluster(3)) in (0, 1, 2)


def test_keyed_records_ignore_stickiness_unless_partitioner_ignore_keys():
    c = cluster(8)
    p = DefaultPartitioner(rng=random.Random(4))
    assert p("t", b"abc", b"abc", None, None, c) == java_partition(b"abc", 8)
    q = DefaultPartitioner(rng=random.Random(4), ignore_keys=True)
    sticky = q("t", None, None, None, None, c)
    assert {q("t", k, k, None, None, c) for k in (b"a", b"b", b"c", b"abc")} == {sticky}


# ---------------------------------------------------------------- round-robin

def test_round_robin_cycles_over_available_partitions_per_topic():
    p = RoundRobinPartitioner()
    c = cluster(3)
    assert [p("t", b"k", b"k", None, None, c) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    c2 = cluster(4, unavailable=(2,))
    q = RoundRobinPartitioner()
    assert [q("t", None, None, None, None, c2) for _ in range(6)] == [0, 1, 3, 0, 1, 3]


@pytest.mark.parametrize("name", ["round_robin", "roundrobin",
                                  "org.apache.kafka.clients.producer.RoundRobinPartitioner"])
def test_round_robin_by_name(name):
    p = make_partitioner(name)
    assert [p("t", None, None, None, None, cluster(2)) for _ in range(3)] == [0, 1, 0]


# ---------------------------------------------------------------- custom partitioners

def java_string_hash(s: str) -> int:
    h = 0
    for ch in s:
        h = _i32(31 * h + ord(ch))
    return h


class RegionAwarePartitioner:
    """The patterns document's RegionAwarePartitioner in a few lines (Kafka's Partitioner arguments)."""

    def partition(self, topic, key, key_bytes, value, value_bytes, cluster):
        n = len(cluster.partitions_for_topic(topic))
        if key_bytes is None:
            return random.randrange(n)
        region = "us" if "us" in key else "eu" if "eu" in key else "other"
        return (java_string_hash(region) % n + murmur2(key_bytes) % n) % n


def test_region_aware_partitioner_from_an_import_path():
    p = make_partitioner("tests.unit.test_partitioner.RegionAwarePartitioner")
    c = cluster(12)
    for key in ("user-us-1", "user-eu-7", "user-9"):
        kb = key.encode()
        region = "us" if "us" in key else "eu" if "eu" in key else "other"
        want = (java_string_hash(region) % 12 + murmur2(kb) % 12) % 12
        assert p("user-events", key, kb, "{}", b"{}", cluster(12, "user-events")) == want
    assert 0 <= p("t", None, None, None, None, c) < 12
    # module:attr spelling too
    q = make_partitioner("tests.unit.test_partitioner:RegionAwarePartitioner")
    assert q("t", "a-us", b"a-us", None, None, c) == p("t", "a-us", b"a-us", None, None, c)


def test_custom_partitioner_as_a_callable_gets_kafkas_arguments():
    calls = []

    def by_value_length(topic, key, key_bytes, value, value_bytes, cluster):
        calls.append((topic, key, key_bytes, value, value_bytes))
        return len(value_bytes) % len(cluster.partitions_for_topic(topic))

    p = make_partitioner(by_value_length)
    assert p("t", "k", b"k", "vvvvv", b"vvvvv", cluster(3)) == 2
    assert calls == [("t", "k", b"k", "vvvvv", b"vvvvv")]


def test_custom_partitioner_class_object_is_instantiated():
    p = make_partitioner(RegionAwarePartitioner)
    assert p("t", "x-eu", b"x-eu", None, None, cluster(5)) == \
        (java_string_hash("eu") % 5 + murmur2(b"x-eu") % 5) % 5


@pytest.mark.parametrize("spec", ["no.such.module.Partitioner", "tests.unit.test_partitioner.Nope", 42])
def test_bad_partitioner_class_is_a_config_error_naming_the_key(spec):
    with pytest.raises(ConfigError, match="partitioner.class"):
        make_partitioner(spec)


@pytest.mark.parametrize("name", [None, "default", "org.apache.kafka.clients.producer.internals.DefaultPartitioner"])
def test_default_by_name(name):
    assert isinstance(make_partitioner(name), DefaultPartitioner)
