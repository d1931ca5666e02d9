"""Issue 18: a Kafka-protocol group consumer cut off from the coordinator node (`chaos cut-clients
coordinator`, and `chaos partition` shapes never include clients) sees its group requests fail, and after
`chaos heal` rejoins and commits again. The brokers stay reachable, so only the group coordinator is lost.
"""
from __future__ import annotations

import threading

import confluent_kafka as ck
import kafka
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.helpers import unique_name, wait_until

PARTITIONS = 2


def _create_and_fill(bs: str, topic: str, values: list[bytes]) -> None:
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic(topic, PARTITIONS, 3)])[topic].result(30)
    _produce(bs, topic, values)


def _produce(bs: str, topic: str, values: list[bytes]) -> None:
    p = ck.Producer({"bootstrap.servers": bs, "acks": "all"})
    for v in values:
        p.produce(topic, v)
    assert p.flush(60) == 0


def test_confluent_group_consumer_cut_from_the_coordinator_fails_commits_and_rejoins_after_heal(kafka_cluster):
    c, ctl = kafka_cluster
    bs = c.kafka_bootstrap_servers
    topic, group = unique_name("cut-group"), unique_name("cut-g")
    _create_and_fill(bs, topic, [b"before-%d" % i for i in range(10)])
    consumer = ck.Consumer({"bootstrap.servers": bs, "group.id": group, "client.id": "grouped",
                            "auto.offset.reset": "earliest", "enable.auto.commit": False,
                            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "socket.timeout.ms": 3000})
    got: list[bytes] = []

    def poll_until(n: int, what: str) -> None:
        def step() -> bool:
            m = consumer.poll(0.2)
            if m is not None and m.error() is None:
                got.append(m.value())
            return len(got) >= n
        wait_until(step, 90, what=f"{what} (have {len(got)})")

    try:
        consumer.subscribe([topic])
        poll_until(10, "the records before the cut")
        consumer.commit(asynchronous=False)

        ctl.cut_clients(["coordinator"])
        try:
            # Group requests to the coordinator are black-holed: a synchronous commit fails.
            with pytest.raises(ck.KafkaException):
                consumer.commit(asynchronous=False)
        finally:
            ctl.heal_network()

        _produce(bs, topic, [b"after-%d" % i for i in range(10)])
        poll_until(20, "the records after the heal")

        def committed() -> bool:
            try:
                consumer.commit(asynchronous=False)
            except ck.KafkaException:
                consumer.poll(0.2)  # rejoining: the commit is refused until the member is back
                return False
            return True
        wait_until(committed, 90, what="a commit after the heal")
        offsets = consumer.committed([ck.TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
        assert sum(tp.offset for tp in offsets if tp.offset >= 0) == 20
    finally:
        consumer.close()
    assert sorted(got) == sorted([b"before-%d" % i for i in range(10)] + [b"after-%d" % i for i in range(10)])


class PollingMember:
    """A kafka-python group member polling on its own thread (kafka-python joins inside poll(), so two
    members polled from one thread can block each other's rebalance); its assignment as last seen."""

    def __init__(self, bs: str, topic: str, group: str, client_id: str):
        self.consumer = kafka.KafkaConsumer(bootstrap_servers=bs, group_id=group, client_id=client_id,
                                            session_timeout_ms=6000, heartbeat_interval_ms=500,
                                            request_timeout_ms=7000, enable_auto_commit=False)
        # The first join must see the topic's partitions: kafka-python 3.0.12 can lose a second join
        # forced by late metadata (see test_kafka_client_groups_txns._kp_group_consumer).
        wait_until(lambda: self.consumer.partitions_for_topic(topic), 30, what=f"metadata of {topic}")
        self.consumer.subscribe([topic])
        self.owned: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"member-{client_id}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.consumer.poll(timeout_ms=1000)  # few poll boundaries: kafka-python 3.0.12 drops a join that completes as a poll times out
            self.owned = {tp.partition for tp in self.consumer.assignment()}

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        self.consumer.close()


@pytest.mark.parametrize("fault", ["cut-clients", "heartbeat-drop"])
def test_kafka_python_group_member_cut_off_loses_its_partitions_to_the_other_and_rejoins(kafka_cluster, fault):
    """Two kafka-python members; one is cut from the coordinator (`cut-clients coordinator --client
    client:cut`, or `heartbeat-drop client:cut`, which covers the Kafka Heartbeat API): its heartbeats
    stop arriving, the coordinator expires its session (session.timeout.ms) and gives every partition to
    the other member. After the heal it rejoins and the partitions are split again."""
    c, ctl = kafka_cluster
    bs = c.kafka_bootstrap_servers
    topic, group = unique_name("cut-kp"), unique_name("cut-kp-g")
    _create_and_fill(bs, topic, [b"x"])
    members = {cid: PollingMember(bs, topic, group, cid) for cid in ("stays", "cut")}

    def split() -> bool:
        o = {cid: m.owned for cid, m in members.items()}
        return all(len(v) == 1 for v in o.values()) and o["stays"] | o["cut"] == set(range(PARTITIONS))

    def coordinator_view() -> set[str]:
        """The client ids of the members of the group, as the coordinator describes it when Stable."""
        admin = kafka.KafkaAdminClient(bootstrap_servers=bs, client_id="observer")
        try:
            d = admin.describe_groups([group])[group]
        finally:
            admin.close()
        return {m["client_id"] for m in d["members"]} if d["group_state"] == "Stable" else set()

    try:
        wait_until(split, 90, what="both members owning a partition")
        if fault == "cut-clients":
            ctl.cut_clients(["coordinator"], "client:cut")
        else:
            ctl.heartbeat_drop(["client:cut"])
        try:
            # Only the other member is left in the group, owning both partitions.
            wait_until(lambda: members["stays"].owned == set(range(PARTITIONS)) and coordinator_view() == {"stays"},
                       90, what="the cut member expired and its partition reassigned")
        finally:
            ctl.heal_network()
        wait_until(lambda: split() and coordinator_view() == {"stays", "cut"}, 90,
                   what="the cut member back in the group")
    finally:
        for m in members.values():
            m.close()


def test_coordinator_killed_and_restarted_under_a_group_consumer_and_a_transactional_producer(kafka_cluster):
    """SIGKILL of the coordinator node (group and transaction coordinator, restarted by its agent on the
    same Kafka port): the consumer's group and the producer's transactional id come back from
    __consumer_offsets / __transaction_state; the consumer resumes from its commit and commits again, the
    producer's next transaction commits, and read_committed sees both transactions."""
    c, ctl = kafka_cluster
    bs = c.kafka_bootstrap_servers
    topic, group = unique_name("coord-kill"), unique_name("coord-kill-g")
    _create_and_fill(bs, topic, [b"before-%d" % i for i in range(10)])
    consumer = ck.Consumer({"bootstrap.servers": bs, "group.id": group, "auto.offset.reset": "earliest",
                            "enable.auto.commit": False, "isolation.level": "read_committed",
                            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    producer = ck.Producer({"bootstrap.servers": bs, "transactional.id": unique_name("coord-kill-tid")})
    got: set[bytes] = set()  # a rebalance may deliver a record again (at-least-once): a set
    next_offsets: dict[int, int] = {}  # partition -> the offset after the last record read

    def poll_until(n: int, what: str) -> None:
        def step() -> bool:
            m = consumer.poll(0.2)
            if m is not None and m.error() is None:
                got.add(m.value())
                next_offsets[m.partition()] = max(next_offsets.get(m.partition(), 0), m.offset() + 1)
            return len(got) >= n
        wait_until(step, 120, what=f"{what} (have {len(got)})")

    def commit() -> bool:
        """The offsets after every record read, explicitly (librdkafka's stored offsets reset on a
        rebalance)."""
        try:
            consumer.commit(offsets=[ck.TopicPartition(topic, p, o) for p, o in next_offsets.items()],
                            asynchronous=False)
        except ck.KafkaException:
            consumer.poll(0.2)
            return False
        return True

    try:
        consumer.subscribe([topic])
        poll_until(10, "the records before the kill")
        assert commit()
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.produce(topic, b"txn-1", partition=0)
        producer.commit_transaction(30)
        poll_until(11, "the first transaction")

        ctl.kill("coordinator")
        ctl.start("coordinator")

        producer.begin_transaction()
        producer.produce(topic, b"txn-2", partition=1)
        producer.commit_transaction(120)  # retried while the coordinator loads its log
        poll_until(12, "the transaction after the restart")
        wait_until(commit, 120, what="a commit after the restart")
        offsets = consumer.committed([ck.TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=60)
        assert {tp.partition: tp.offset for tp in offsets if tp.offset >= 0} == next_offsets
    finally:
        consumer.close()
    assert got == {b"before-%d" % i for i in range(10)} | {b"txn-1", b"txn-2"}
