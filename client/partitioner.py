"""Partitioners: Kafka's default (murmur2 of the key; sticky for keyless records), round-robin,
and custom ones given as an import path or a callable with Kafka's Partitioner arguments:
(topic, key, key_bytes, value, value_bytes, cluster)."""
from __future__ import annotations

import importlib
import random

from client.common.errors import ConfigError
from client.common.murmur2 import default_partition, murmur2


class DefaultPartitioner:
    """Keyed: murmur2(key) % partitions, as Kafka's Java client. Keyless: sticky (KIP-480):
    one partition until its batch is sent, then another."""

    def __init__(self, rng: random.Random | None = None, ignore_keys: bool = False):
        self.rng = rng or random.Random()
        self.sticky: dict[str, int] = {}
        self.ignore_keys = ignore_keys
        # topic -> (the metadata's partition list it was built from, available partition ids): a new
        # batch re-picks, and rebuilding the list each time cost O(partitions) per batch (about 9% of
        # the producer's samples with 1,000 partitions). Metadata replaces the list when it changes.
        self._available: dict[str, tuple[list, list[int], dict[int, int]]] = {}

    def __call__(self, topic, key, key_bytes, value, value_bytes, cluster) -> int:
        n = len(cluster.partitions.get(topic, ()))
        if key_bytes is not None and not self.ignore_keys:
            if n > 0:  # default_partition inlined (toPositive(murmur2) % n): two calls fewer per record
                return (murmur2(key_bytes) & 0x7FFFFFFF) % n
            return default_partition(key_bytes, n)   # raises the clear error
        p = self.sticky.get(topic)
        if p is None or p >= n:
            p = self._pick(topic, cluster, n)
        return p

    def _pick(self, topic, cluster, n, avoid: int = -1) -> int:
        parts = cluster.partitions.get(topic)
        cached = self._available.get(topic)
        if cached is not None and cached[0] is parts and parts is not None:
            _, avail, index = cached
        else:
            avail = [p.partition for p in cluster.available_partitions_for_topic(topic)] or list(range(n))
            index = {p: i for i, p in enumerate(avail)}
            self._available[topic] = (parts, avail, index)
        j = index.get(avoid)
        if len(avail) > 1 and j is not None:
            # Uniform over the others, drawing as rng.choice over a copy without `avoid` would.
            i = self.rng.randrange(len(avail) - 1)
            p = avail[i + (i >= j)]
        else:
            p = self.rng.choice(avail)
        self.sticky[topic] = p
        return p

    def on_new_batch(self, topic, cluster, prev_partition: int) -> None:
        """A keyless batch was closed: stick to another partition from now on."""
        if self.sticky.get(topic) == prev_partition:
            self._pick(topic, cluster, len(cluster.partitions_for_topic(topic)), avoid=prev_partition)


class RoundRobinPartitioner:
    def __init__(self):
        self.counters: dict[str, int] = {}

    def __call__(self, topic, key, key_bytes, value, value_bytes, cluster) -> int:
        parts = cluster.available_partitions_for_topic(topic) or cluster.partitions_for_topic(topic)
        i = self.counters.get(topic, 0)
        self.counters[topic] = i + 1
        return parts[i % len(parts)].partition


_NAMES = {
    None: DefaultPartitioner, "default": DefaultPartitioner,
    "org.apache.kafka.clients.producer.internals.DefaultPartitioner": DefaultPartitioner,
    "round_robin": RoundRobinPartitioner, "roundrobin": RoundRobinPartitioner,
    "org.apache.kafka.clients.producer.RoundRobinPartitioner": RoundRobinPartitioner,
}


def make_partitioner(spec, ignore_keys: bool = False):
    """`partitioner.class`: None, a known name, 'module:attr' / 'module.attr', a class or a callable."""
    if spec in _NAMES:
        cls = _NAMES[spec]
        return cls(ignore_keys=ignore_keys) if cls is DefaultPartitioner else cls()
    obj = spec
    if isinstance(spec, str):
        mod, _, attr = spec.replace(":", ".").rpartition(".")
        try:
            obj = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError, ValueError) as e:
            raise ConfigError(f"Invalid value {spec!r} for configuration partitioner.class: {e}") from None
    if isinstance(obj, type):
        obj = obj()
    if hasattr(obj, "partition") and callable(obj.partition):
        return obj.partition
    if not callable(obj):
        raise ConfigError(f"Invalid value {spec!r} for configuration partitioner.class: not callable")
    return obj
