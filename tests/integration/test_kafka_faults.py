"""Issue 18: faults reach Kafka-protocol clients as they reach gRPC ones (the same rule table).

confluent-kafka (librdkafka) with acks=all and idempotence: a client cut off by cut-clients fails or
times out and recovers after the heal; a leader SIGKILLed, or partitioned from its followers, while
it produces loses no acknowledged record and duplicates none, and each partition keeps send order.
"""
from __future__ import annotations

import threading

import confluent_kafka as ck
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.helpers import unique_name, wait_until

PARTITIONS = 3


def _create(bs: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic(topic, PARTITIONS, 3, config={"min.insync.replicas": "2"})])[topic].result(30)


def _leader(cluster, topic: str, partition: int) -> int:
    for t in cluster.metadata().topics:
        if t.name == topic:
            return t.partitions[partition].leader
    raise KeyError(topic)


class Acked:
    """Delivery reports of one producer: value -> (partition, offset), and the failures."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ok: dict[bytes, tuple[int, int]] = {}
        self.failed: list[tuple[bytes, ck.KafkaError]] = []

    def __call__(self, err, msg) -> None:
        with self.lock:
            if err is None:
                self.ok[msg.value()] = (msg.partition(), msg.offset())
            else:
                self.failed.append((msg.value(), err))


def _producer(bs: str, client_id: str, **extra) -> ck.Producer:
    return ck.Producer({"bootstrap.servers": bs, "client.id": client_id, "acks": "all", "enable.idempotence": True,
                        "linger.ms": 5, "socket.timeout.ms": 3000, "metadata.max.age.ms": 1000, **extra})


def _read_all(bs: str, topic: str, until: int) -> dict[int, list[bytes]]:
    """Every partition read from the start (read_committed) until `until` records are in."""
    c = ck.Consumer({"bootstrap.servers": bs, "group.id": unique_name("reader"), "enable.auto.commit": False,
                     "isolation.level": "read_committed"})
    c.assign([ck.TopicPartition(_t, p, ck.OFFSET_BEGINNING) for _t, p in ((topic, p) for p in range(PARTITIONS))])
    got: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}

    def step() -> bool:
        for m in c.consume(500, 0.2):
            if not m.error():
                got[m.partition()].append(m.value())
        return sum(len(v) for v in got.values()) >= until
    try:
        wait_until(step, 90, what=f"{until} records read back")
    finally:
        c.close()
    return got


def test_cut_clients_fails_kafka_requests_until_heal(kafka_cluster):
    c, ctl = kafka_cluster
    bs = c.kafka_bootstrap_servers
    topic = unique_name("cut")
    _create(bs, topic)
    acked = Acked()
    p = _producer(bs, "app", **{"message.timeout.ms": 4000, "enable.idempotence": False})
    for i in range(10):
        p.produce(topic, b"before-%d" % i, on_delivery=acked)
    assert p.flush(30) == 0 and len(acked.ok) == 10
    ctl.cut_clients(c.node_names())
    try:
        for i in range(5):
            p.produce(topic, b"during-%d" % i, on_delivery=acked)
        p.flush(30)
        # Every send during the cut failed (timed out): none was acknowledged.
        assert sorted(v for v, _ in acked.failed) == [b"during-%d" % i for i in range(5)]
        assert not any(v.startswith(b"during") for v in acked.ok)
    finally:
        ctl.heal_network()
    for i in range(10):
        p.produce(topic, b"after-%d" % i, on_delivery=acked)
    assert p.flush(60) == 0
    assert sum(1 for v in acked.ok if v.startswith(b"after")) == 10


@pytest.mark.parametrize("fault", ["kill", "partition"])
def test_leader_lost_under_idempotent_acks_all_produce_loses_and_duplicates_nothing(kafka_cluster, fault):
    c, ctl = kafka_cluster
    bs = c.kafka_bootstrap_servers
    topic = unique_name(f"leader-{fault}")
    _create(bs, topic)
    acked = Acked()
    # A small send queue keeps ~2,000 records in flight at the fault without a backlog of 100,000
    # (librdkafka's default) to drain and read back afterwards, which cost most of a minute.
    p = _producer(bs, "writer", **{"message.timeout.ms": 60000, "queue.buffering.max.messages": 2000})
    stop = threading.Event()
    sent = []

    def produce() -> None:
        i = 0
        while not stop.is_set() and i < 200_000:
            v = b"%08d" % i
            try:
                p.produce(topic, v, partition=i % PARTITIONS, on_delivery=acked)
                sent.append(v)
                i += 1
            except BufferError:
                pass
            p.poll(0.001 if i % 50 == 0 else 0)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    victim = _leader(c, topic, 0)
    try:
        wait_until(lambda: len(acked.ok) >= 300, 60, what="acknowledged records before the fault")
        if fault == "kill":
            ctl.kill(f"broker-{victim}")
        else:
            others = [n for n in c.node_names() if n != f"broker-{victim}"]
            ctl.partition([[f"broker-{victim}"], others])
        wait_until(lambda: _leader(c, topic, 0) not in (victim, -1), 60, what="a new leader for partition 0")
        before = len(acked.ok)
        wait_until(lambda: len(acked.ok) >= before + 300, 90, what="acknowledged records after the fault")
    finally:
        stop.set()
        t.join(30)
        p.flush(90)
        ctl.heal_network()
        if fault == "kill":
            ctl.start(f"broker-{victim}")
    assert not acked.failed, acked.failed[:3]
    got = _read_all(bs, topic, len(acked.ok))
    for part, values in got.items():
        assert len(values) == len(set(values)), f"partition {part}: duplicates"
        assert values == sorted(values), f"partition {part}: out of send order"
    seen = {v for vs in got.values() for v in vs}
    lost = [v for v in acked.ok if v not in seen]
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:3]}"
