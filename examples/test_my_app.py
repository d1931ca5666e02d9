"""A user's own test against a real brokerlab cluster (the `brokerlab_cluster` pytest fixture).

With brokerlab installed (`pip install brokerlab`), pytest finds the fixture by itself:

    pytest examples/test_my_app.py

The test produces with an idempotent producer (acks=all), kills the partition's leader in the middle
of the stream, and checks Kafka's promise: every acknowledged record is consumed exactly once.
"""
from __future__ import annotations

import time
import uuid
from collections import Counter

from client import Consumer, Producer, TopicPartition


def consume_all(bootstrap: str, tp: TopicPartition, timeout_s: float = 60.0) -> list[bytes]:
    """Every value of the partition, from the beginning to its current end."""
    values = []
    with Consumer({"bootstrap.servers": bootstrap, "enable.auto.commit": False}) as consumer:
        consumer.assign([tp])
        consumer.seek_to_beginning()
        end = consumer.end_offsets([tp])[tp]
        deadline = time.monotonic() + timeout_s
        while consumer.position(tp) < end:
            assert time.monotonic() < deadline, f"could not read {tp} to offset {end} in {timeout_s} s"
            values += [r.value for r in consumer.poll(500)]
    return values


def test_every_acknowledged_record_is_consumed_exactly_once_after_a_leader_crash(brokerlab_cluster):
    cluster = brokerlab_cluster
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    cluster.create_topic(topic, partitions=1, replication_factor=3, configs={"min.insync.replicas": 2})
    cluster.wait_for_isr(topic, 0, size=3, timeout=30)
    old_leader = cluster.leader(topic, 0)

    config = {"bootstrap.servers": cluster.bootstrap_servers, "enable.idempotence": True, "acks": "all",
              "linger.ms": 5, "request.timeout.ms": 5000, "delivery.timeout.ms": 60000}
    futures = []
    with Producer(config) as producer:
        for i in range(2000):
            futures.append((b"order-%d" % i, producer.send(topic, b"order-%d" % i, partition=0)))
            if i == 500:
                futures[-1][1].get(30)  # records are flowing: now crash the leader under the stream
                cluster.kill(old_leader)
        producer.flush(90)

    acked = [value for value, f in futures if f.exception() is None]
    failed = [f.exception() for _, f in futures if f.exception() is not None]
    assert not failed, f"retries should ride out a leader crash; {len(failed)} sends failed: {failed[:3]}"
    new_leader = cluster.wait_for_leader(topic, 0, not_on=old_leader, timeout=30)
    assert new_leader != old_leader

    seen = Counter(consume_all(cluster.bootstrap_servers, TopicPartition(topic, 0)))
    lost = [v for v in acked if seen[v] == 0]
    duplicated = [v for v, n in seen.items() if n > 1]
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:5]}"
    assert not duplicated, f"{len(duplicated)} records duplicated, e.g. {duplicated[:5]}"
