"""Issue 18: unmodified Kafka clients on the Kafka listener of a real 3-broker cluster — consumer groups with
commits, and transactions (one committed, one aborted) read back with read_committed and read_uncommitted.

Each library (kafka-python, confluent-kafka, aiokafka) runs the same script: create a topic through its
admin API, produce with idempotence and acks=all, consume as a group and commit, check a second member of
the group resumes from the commit; commit one transaction and abort another.
"""
from __future__ import annotations

import asyncio

import aiokafka
import confluent_kafka as ck
import kafka
import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin import NewTopic as CkNewTopic
from kafka.admin import KafkaAdminClient, NewTopic

from tests.helpers import unique_name, wait_until

PARTITIONS = 2
COMMITTED = [b"committed-%d" % i for i in range(5)]
ABORTED = [b"aborted-%d" % i for i in range(5)]
SENTINEL = b"end"  # a third, committed transaction writes it to every partition: readers stop there


def _values(records) -> list[bytes]:
    return sorted(r for r in records)


def _until_sentinels(values_by_partition: dict) -> bool:
    return len(values_by_partition) == PARTITIONS and all(SENTINEL in vs for vs in values_by_partition.values())


def _expected(isolation: str) -> list[bytes]:
    seen = COMMITTED + (ABORTED if isolation == "read_uncommitted" else [])
    return _values(seen + [SENTINEL] * PARTITIONS)


# ---------------------------------------------------------------- kafka-python

def _kp_create(bs: str, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bs, client_id="kp-admin")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=3)])
    finally:
        admin.close()


def _kp_produce(bs: str, topic: str, values: list[bytes]) -> None:
    p = kafka.KafkaProducer(bootstrap_servers=bs, acks="all", enable_idempotence=True, client_id="kp-producer")
    try:
        for v in values:
            p.send(topic, key=v, value=v).get(timeout=30)
    finally:
        p.close()


def _kp_group_consumer(bs: str, topic: str, group: str, **config):
    """A kafka-python group member subscribed once it has the topic's metadata. kafka-python 3.0.12
    loses a join that completes while poll()'s timeout runs out if the join was forced by metadata
    arriving after the first one (the member then never gets its assignment nor heartbeats), so the
    first join must already see the topic's partitions."""
    c = kafka.KafkaConsumer(bootstrap_servers=bs, group_id=group, **config)
    wait_until(lambda: c.partitions_for_topic(topic), 30, what=f"kafka-python metadata of {topic}")
    c.subscribe([topic])
    return c


def _kp_poll_until(consumer, want: int, what: str) -> list:
    got: list = []

    def step() -> bool:  # 1 s polls: fewer poll boundaries for a join to complete across (see above)
        for rs in consumer.poll(timeout_ms=1000).values():
            got.extend(rs)
        return len(got) >= want
    wait_until(step, 60, what=f"{what} (have {len(got)} of {want})")
    return got


def _kp_commit(consumer, records) -> None:
    """Commits past `records` as a kafka-python application does it: a commit refused because the
    group is rebalancing (a member whose join kafka-python dropped is being expired) is retried after
    a poll that rejoins. The offsets come from the records, not the positions the poll may move."""
    offsets: dict = {}
    for r in records:
        tp = kafka.TopicPartition(r.topic, r.partition)
        offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)

    def attempt() -> bool:
        try:
            consumer.commit({tp: kafka.OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
            return True
        except (kafka.errors.CommitFailedError, kafka.errors.RebalanceInProgressError):
            consumer.poll(timeout_ms=1000)
            return False
    wait_until(attempt, 60, what="a kafka-python commit outside a rebalance")


def _kp_read_to_sentinels(bs: str, topic: str, isolation: str) -> list[bytes]:
    c = kafka.KafkaConsumer(bootstrap_servers=bs, isolation_level=isolation, enable_auto_commit=False,
                            auto_offset_reset="earliest")
    seen: dict = {}

    def step() -> bool:
        for tp, rs in c.poll(timeout_ms=200).items():
            seen.setdefault(tp.partition, []).extend(r.value for r in rs)
        return _until_sentinels(seen)
    try:
        c.assign([kafka.TopicPartition(topic, i) for i in range(PARTITIONS)])
        wait_until(step, 60, what=f"kafka-python {isolation} up to the sentinels ({seen})")
    finally:
        c.close()
    return [v for vs in seen.values() for v in vs]


def test_kafka_python_group_consume_and_commit(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    topic, group = unique_name("kp-group"), unique_name("kp-g")
    _kp_create(bs, topic)
    first = [f"a{i}".encode() for i in range(20)]
    _kp_produce(bs, topic, first)

    c = _kp_group_consumer(bs, topic, group, auto_offset_reset="earliest", enable_auto_commit=False,
                           client_id="kp-consumer-1")
    try:
        got = _kp_poll_until(c, len(first), "kafka-python group consumer")
        assert _values(r.value for r in got) == _values(first)
        _kp_commit(c, got)
        committed = {tp.partition: c.committed(tp) for tp in c.assignment()}
        assert sum(v or 0 for v in committed.values()) == len(first)
        admin = KafkaAdminClient(bootstrap_servers=bs, client_id="kp-admin")
        try:  # DescribeGroups / ListGroups while the member is in the group
            def stable():  # a member whose join kafka-python dropped leaves only when it expires
                c.poll(timeout_ms=1000)  # and heartbeats / rejoins meanwhile
                d = admin.describe_groups([group])[group]
                return d if d["group_state"] == "Stable" and len(d["members"]) == 1 else None
            d = wait_until(stable, 60, what=f"group {group} stable with one member")
            assert d["protocol_type"] == "consumer", d
            assert [(m["client_id"], m["client_host"]) for m in d["members"]] == [("kp-consumer-1", "/127.0.0.1")], d
            assert group in [g[0] if isinstance(g, tuple) else g["group_id"] for g in admin.list_groups()]
        finally:
            admin.close()
    finally:
        c.close()

    second = [f"b{i}".encode() for i in range(10)]
    _kp_produce(bs, topic, second)
    c2 = _kp_group_consumer(bs, topic, group, auto_offset_reset="earliest", enable_auto_commit=False,
                            client_id="kp-consumer-2")
    try:  # a new member of the group resumes from the commit: only the new records
        got = _kp_poll_until(c2, len(second), "kafka-python consumer after the commit")
        assert _values(r.value for r in got) == _values(second)
    finally:
        c2.close()


def test_kafka_python_committed_returns_the_leader_epoch_committed(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    topic = unique_name("kp-epoch")
    _kp_create(bs, topic)
    c = kafka.KafkaConsumer(bootstrap_servers=bs, group_id=unique_name("kp-epoch-g"), enable_auto_commit=False)
    try:
        tp = kafka.TopicPartition(topic, 0)
        c.commit({tp: kafka.OffsetAndMetadata(5, "m", 3)})
        assert c.committed(tp, metadata=True) == kafka.OffsetAndMetadata(5, "m", 3)
    finally:
        c.close()


def test_kafka_python_transactions_committed_and_aborted(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    topic = unique_name("kp-txn")
    _kp_create(bs, topic)
    p = kafka.KafkaProducer(bootstrap_servers=bs, transactional_id=unique_name("kp-tid"), acks="all",
                            enable_idempotence=True, client_id="kp-txn-producer")
    try:
        p.init_transactions()
        for values, commit in ((COMMITTED, True), (ABORTED, False)):
            p.begin_transaction()
            for v in values:
                p.send(topic, key=v, value=v)
            p.flush()
            p.commit_transaction() if commit else p.abort_transaction()
        p.begin_transaction()
        for i in range(PARTITIONS):
            p.send(topic, value=SENTINEL, partition=i)
        p.commit_transaction()
    finally:
        p.close()

    for isolation in ("read_committed", "read_uncommitted"):
        assert _values(_kp_read_to_sentinels(bs, topic, isolation)) == _expected(isolation), isolation


def test_kafka_python_consume_transform_produce_moves_offsets_only_on_commit(shared_cluster):
    """send_offsets_to_transaction with the consumer's group metadata (AddOffsetsToTxn, TxnOffsetCommit v3
    with member and generation): an aborted transaction leaves the group's offsets, a committed one moves
    them."""
    bs = shared_cluster.kafka_bootstrap_servers
    src, dst, group = unique_name("kp-src"), unique_name("kp-dst"), unique_name("kp-eos")
    _kp_create(bs, src)
    _kp_create(bs, dst)
    _kp_produce(bs, src, [b"v%d" % i for i in range(6)])
    c = _kp_group_consumer(bs, src, group, auto_offset_reset="earliest", enable_auto_commit=False,
                           isolation_level="read_committed")
    p = kafka.KafkaProducer(bootstrap_servers=bs, transactional_id=unique_name("kp-eos-tid"))
    try:
        got = _kp_poll_until(c, 6, "the source records")
        offsets = {tp: kafka.OffsetAndMetadata(c.position(tp), "", -1) for tp in c.assignment()}
        p.init_transactions()
        for commit in (False, True):
            p.begin_transaction()
            for r in got:
                p.send(dst, value=r.value.upper())
            p.send_offsets_to_transaction(offsets, c.group_metadata())
            if commit:
                p.commit_transaction()
            else:
                p.abort_transaction()
                assert all(c.committed(tp) is None for tp in offsets), "offsets of an aborted transaction"
        assert sum(c.committed(tp) for tp in offsets) == 6
    finally:
        p.close()
        c.close()


def test_kafka_python_admin_lists_and_describes_an_open_transaction(shared_cluster):
    """ListTransactions (asked of every node; only the coordinator has any) and DescribeTransactions."""
    bs = shared_cluster.kafka_bootstrap_servers
    topic, tid = unique_name("kp-desc"), unique_name("kp-desc-tid")
    _kp_create(bs, topic)
    p = kafka.KafkaProducer(bootstrap_servers=bs, transactional_id=tid)
    admin = KafkaAdminClient(bootstrap_servers=bs, client_id="kp-admin")
    try:
        p.init_transactions()
        p.begin_transaction()
        p.send(topic, b"open", partition=1).get(30)
        listed = [t for ts in admin.list_transactions(state_filters=["Ongoing"]).values() for t in ts]
        mine = [t for t in listed if t.transactional_id == tid]
        assert len(mine) == 1 and mine[0].state == "Ongoing", listed
        d = admin.describe_transactions([tid])[tid]
        assert (d.coordinator_id, d.state, d.producer_id) == (0, "Ongoing", mine[0].producer_id)
        assert d.transaction_start_time_ms > 0
        assert [(tp.topic, tp.partition) for tp in d.topic_partitions] == [(topic, 1)]
        p.abort_transaction()
        assert not [t for ts in admin.list_transactions(state_filters=["Ongoing"]).values() for t in ts
                    if t.transactional_id == tid]
    finally:
        admin.close()
        p.close()


# -------------------------------------------------------------- confluent-kafka

def _ck_create(bs: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bs})
    for f in admin.create_topics([CkNewTopic(topic, PARTITIONS, 3)]).values():
        f.result(30)


def _ck_produce(bs: str, topic: str, values: list[bytes]) -> None:
    p = ck.Producer({"bootstrap.servers": bs, "acks": "all", "enable.idempotence": True})
    errors: list = []
    for v in values:
        p.produce(topic, key=v, value=v, on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(30) == 0
    assert errors == []


def _ck_poll_until(consumer, want: int, what: str) -> list:
    got: list = []

    def step():
        m = consumer.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m)
        return len(got) >= want
    wait_until(step, 60, what=f"{what} (have {len(got)} of {want})")
    return got


def _ck_read_to_sentinels(bs: str, topic: str, isolation: str) -> list[bytes]:
    c = ck.Consumer({"bootstrap.servers": bs, "group.id": unique_name("ck-read"), "isolation.level": isolation,
                     "enable.auto.commit": False})
    seen: dict = {}

    def step() -> bool:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            seen.setdefault(m.partition(), []).append(m.value())
        return _until_sentinels(seen)
    try:
        c.assign([ck.TopicPartition(topic, i, ck.OFFSET_BEGINNING) for i in range(PARTITIONS)])
        wait_until(step, 60, what=f"confluent-kafka {isolation} up to the sentinels ({seen})")
    finally:
        c.close()
    return [v for vs in seen.values() for v in vs]


def test_confluent_kafka_group_consume_and_commit(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    topic, group = unique_name("ck-group"), unique_name("ck-g")
    _ck_create(bs, topic)
    first = [f"a{i}".encode() for i in range(20)]
    _ck_produce(bs, topic, first)
    conf = {"bootstrap.servers": bs, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False}
    c = ck.Consumer(conf)
    try:
        c.subscribe([topic])
        got = _ck_poll_until(c, len(first), "confluent-kafka group consumer")
        assert _values(m.value() for m in got) == _values(first)
        c.commit(asynchronous=False)
        committed = c.committed([ck.TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
        assert sum(tp.offset for tp in committed) == len(first)
        admin = AdminClient({"bootstrap.servers": bs})
        d = admin.describe_consumer_groups([group])[group].result(30)
        assert d.state == ck.ConsumerGroupState.STABLE and len(d.members) == 1
        assert {tp.partition for tp in d.members[0].assignment.topic_partitions} == set(range(PARTITIONS))
        listed = admin.list_consumer_groups().result(30)
        assert group in {g.group_id for g in listed.valid}
        with pytest.raises(ck.KafkaException):  # a group with a member is not deleted (NON_EMPTY_GROUP)
            admin.delete_consumer_groups([group])[group].result(30)
    finally:
        c.close()

    second = [f"b{i}".encode() for i in range(10)]
    _ck_produce(bs, topic, second)
    c2 = ck.Consumer(conf)
    try:
        c2.subscribe([topic])
        got = _ck_poll_until(c2, len(second), "confluent-kafka consumer after the commit")
        assert _values(m.value() for m in got) == _values(second)
    finally:
        c2.close()
    admin = AdminClient({"bootstrap.servers": bs})
    # Empty now (both members left): DeleteGroups removes it with its offsets.
    wait_until(lambda: admin.describe_consumer_groups([group])[group].result(30).state
               == ck.ConsumerGroupState.EMPTY, 30, what="the group empty")
    admin.delete_consumer_groups([group])[group].result(30)
    offsets = admin.list_consumer_group_offsets([ck.ConsumerGroupTopicPartitions(group)])[group].result(30)
    assert offsets.topic_partitions == []


def test_confluent_kafka_commit_naming_a_missing_partition_fails_there_and_leader_epochs_come_back(shared_cluster):
    """As Kafka: a commit naming partitions that do not exist fails with UNKNOWN_TOPIC_OR_PARTITION and
    commits the others; committed() returns the leader epoch committed, also for offsets sent with a
    transaction."""
    bs = shared_cluster.kafka_bootstrap_servers
    topic, group = unique_name("ck-gaps"), unique_name("ck-gaps-g")
    _ck_create(bs, topic)
    c = ck.Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False})
    try:
        with pytest.raises(ck.KafkaException) as failed:
            c.commit(offsets=[ck.TopicPartition(topic, 0, 5, leader_epoch=3),
                              ck.TopicPartition(unique_name("nope"), 0, 5),
                              ck.TopicPartition(topic, PARTITIONS, 1)], asynchronous=False)
        assert failed.value.args[0].code() == ck.KafkaError.UNKNOWN_TOPIC_OR_PART
        parts = [ck.TopicPartition(topic, i) for i in range(PARTITIONS)]
        assert [(tp.offset, tp.leader_epoch) for tp in c.committed(parts, timeout=30)] == [
            (5, 3), (ck.OFFSET_INVALID, None)]

        p = ck.Producer({"bootstrap.servers": bs, "transactional.id": unique_name("ck-gaps-tid")})
        p.init_transactions(30)
        p.begin_transaction()
        p.send_offsets_to_transaction([ck.TopicPartition(topic, 1, 9, leader_epoch=4)], c.consumer_group_metadata(),
                                      30)
        p.commit_transaction(30)
        assert [(tp.offset, tp.leader_epoch) for tp in c.committed(parts, timeout=30)] == [(5, 3), (9, 4)]
    finally:
        c.close()


def test_confluent_kafka_two_members_share_the_partitions(shared_cluster):
    """Two members: a rebalance (JoinGroup with MEMBER_ID_REQUIRED, SyncGroup) splits the partitions."""
    bs = shared_cluster.kafka_bootstrap_servers
    topic, group = unique_name("ck-two"), unique_name("ck-g2")
    _ck_create(bs, topic)
    conf = {"bootstrap.servers": bs, "group.id": group, "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
    members = [ck.Consumer(dict(conf, **{"group.instance.id": "static-a"})), ck.Consumer(conf)]
    try:
        for m in members:
            m.subscribe([topic])

        def split() -> bool:
            for m in members:
                m.poll(0.1)
            owned = [{tp.partition for tp in m.assignment()} for m in members]
            return all(len(o) == 1 for o in owned) and owned[0] | owned[1] == set(range(PARTITIONS))
        wait_until(split, 60, what="both members owning one partition each")
    finally:
        for m in members:
            m.close()


def test_confluent_kafka_transactions_committed_and_aborted(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    topic = unique_name("ck-txn")
    _ck_create(bs, topic)
    p = ck.Producer({"bootstrap.servers": bs, "transactional.id": unique_name("ck-tid"), "acks": "all",
                     "enable.idempotence": True})
    p.init_transactions(30)
    for values, commit in ((COMMITTED, True), (ABORTED, False)):
        p.begin_transaction()
        for v in values:
            p.produce(topic, key=v, value=v)
        p.flush(30)
        p.commit_transaction(30) if commit else p.abort_transaction(30)
    p.begin_transaction()
    for i in range(PARTITIONS):
        p.produce(topic, value=SENTINEL, partition=i)
    p.commit_transaction(30)

    for isolation in ("read_committed", "read_uncommitted"):
        assert _values(_ck_read_to_sentinels(bs, topic, isolation)) == _expected(isolation), isolation


def test_confluent_kafka_consume_transform_produce(shared_cluster):
    """send_offsets_to_transaction (AddOffsetsToTxn + TxnOffsetCommit): the group's offsets move only
    with a committed transaction."""
    bs = shared_cluster.kafka_bootstrap_servers
    src, dst, group = unique_name("ck-src"), unique_name("ck-dst"), unique_name("ck-eos")
    _ck_create(bs, src)
    _ck_create(bs, dst)
    _ck_produce(bs, src, [b"v%d" % i for i in range(6)])
    c = ck.Consumer({"bootstrap.servers": bs, "group.id": group, "auto.offset.reset": "earliest",
                     "enable.auto.commit": False, "isolation.level": "read_committed"})
    p = ck.Producer({"bootstrap.servers": bs, "transactional.id": unique_name("ck-eos-tid")})
    try:
        c.subscribe([src])
        got = _ck_poll_until(c, 6, "the source records")
        p.init_transactions(30)
        p.begin_transaction()
        for m in got:
            p.produce(dst, value=m.value().upper())
        positions = c.position(c.assignment())
        p.send_offsets_to_transaction(positions, c.consumer_group_metadata(), 30)
        p.commit_transaction(30)
        committed = c.committed([ck.TopicPartition(src, i) for i in range(PARTITIONS)], timeout=30)
        assert sum(tp.offset for tp in committed if tp.offset >= 0) == 6
    finally:
        c.close()


def test_confluent_kafka_read_committed_offset_fetch_waits_for_a_pending_transaction(shared_cluster):
    """KIP-447: while a transaction holds offsets for the group, a read_committed consumer's OffsetFetch
    (require_stable) gets UNSTABLE_OFFSET_COMMIT and retries; a read_uncommitted one reads the old offsets.
    After the commit both read the new offsets."""
    bs = shared_cluster.kafka_bootstrap_servers
    topic, group = unique_name("ck-stable"), unique_name("ck-stable-g")
    _ck_create(bs, topic)
    tps = [ck.TopicPartition(topic, p) for p in range(PARTITIONS)]
    p = ck.Producer({"bootstrap.servers": bs, "transactional.id": unique_name("ck-stable-tid")})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, value=b"x", partition=0)
    member = ck.Consumer({"bootstrap.servers": bs, "group.id": group})
    p.send_offsets_to_transaction([ck.TopicPartition(topic, 0, 5)], member.consumer_group_metadata(), 30)
    member.close()

    def committed(isolation: str, timeout_s: float):
        c = ck.Consumer({"bootstrap.servers": bs, "group.id": group, "isolation.level": isolation})
        try:
            return {tp.partition: tp.offset for tp in c.committed(tps, timeout=timeout_s)}
        finally:
            c.close()
    assert committed("read_uncommitted", 30)[0] == ck.OFFSET_INVALID  # nothing committed yet
    with pytest.raises(ck.KafkaException) as e:  # retried on UNSTABLE_OFFSET_COMMIT until its timeout
        committed("read_committed", 3)
    assert e.value.args[0].code() in (ck.KafkaError.UNSTABLE_OFFSET_COMMIT, ck.KafkaError._TIMED_OUT)
    p.commit_transaction(30)
    assert committed("read_committed", 30)[0] == 5
    assert committed("read_uncommitted", 30)[0] == 5


# ----------------------------------------------------------------------- aiokafka

async def _aio_create(bs: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    admin = AIOKafkaAdminClient(bootstrap_servers=bs)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=3)])
    finally:
        await admin.close()


async def _aio_produce(bs: str, topic: str, values: list[bytes]) -> None:
    p = aiokafka.AIOKafkaProducer(bootstrap_servers=bs, acks="all", enable_idempotence=True)
    await p.start()
    try:
        for v in values:
            await p.send_and_wait(topic, key=v, value=v)
    finally:
        await p.stop()


async def _aio_poll_until(consumer, want: int, what: str, timeout_s: float = 60) -> list:
    got: list = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(got) < want:
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what} (have {len(got)} of {want})")
        for rs in (await consumer.getmany(timeout_ms=200)).values():
            got.extend(rs)
    return got


def test_aiokafka_group_consume_and_commit(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    topic, group = unique_name("aio-group"), unique_name("aio-g")
    first = [f"a{i}".encode() for i in range(20)]
    second = [f"b{i}".encode() for i in range(10)]

    async def run():
        await _aio_create(bs, topic)
        await _aio_produce(bs, topic, first)
        c = aiokafka.AIOKafkaConsumer(topic, bootstrap_servers=bs, group_id=group, auto_offset_reset="earliest",
                                      enable_auto_commit=False)
        await c.start()
        try:
            got = await _aio_poll_until(c, len(first), "aiokafka group consumer")
            assert _values(r.value for r in got) == _values(first)
            await c.commit()
            committed = [await c.committed(tp) for tp in c.assignment()]
            assert sum(committed) == len(first)
        finally:
            await c.stop()
        await _aio_produce(bs, topic, second)
        c2 = aiokafka.AIOKafkaConsumer(topic, bootstrap_servers=bs, group_id=group, auto_offset_reset="earliest",
                                       enable_auto_commit=False)
        await c2.start()
        try:
            got = await _aio_poll_until(c2, len(second), "aiokafka consumer after the commit")
            assert _values(r.value for r in got) == _values(second)
        finally:
            await c2.stop()

    asyncio.run(run())


def test_aiokafka_transactions_committed_and_aborted(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    topic = unique_name("aio-txn")

    async def read(isolation: str) -> list[bytes]:
        c = aiokafka.AIOKafkaConsumer(bootstrap_servers=bs, auto_offset_reset="earliest",
                                      isolation_level=isolation, enable_auto_commit=False)
        await c.start()
        seen: dict = {}
        try:
            c.assign([aiokafka.TopicPartition(topic, i) for i in range(PARTITIONS)])
            deadline = asyncio.get_running_loop().time() + 60
            while not _until_sentinels(seen):
                assert asyncio.get_running_loop().time() < deadline, f"aiokafka {isolation}: only {seen}"
                for tp, rs in (await c.getmany(timeout_ms=200)).items():
                    seen.setdefault(tp.partition, []).extend(r.value for r in rs)
        finally:
            await c.stop()
        return [v for vs in seen.values() for v in vs]

    async def run():
        await _aio_create(bs, topic)
        p = aiokafka.AIOKafkaProducer(bootstrap_servers=bs, transactional_id=unique_name("aio-tid"), acks="all",
                                      enable_idempotence=True)
        await p.start()
        try:
            async with p.transaction():
                for v in COMMITTED:
                    await p.send(topic, key=v, value=v)
            await p.begin_transaction()
            for v in ABORTED:
                await p.send_and_wait(topic, key=v, value=v)
            await p.abort_transaction()
            async with p.transaction():
                for i in range(PARTITIONS):
                    await p.send(topic, value=SENTINEL, partition=i)
        finally:
            await p.stop()
        for isolation in ("read_committed", "read_uncommitted"):
            assert _values(await read(isolation)) == _expected(isolation), isolation

    asyncio.run(run())


def test_aiokafka_consume_transform_produce_moves_offsets_only_on_commit(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    src, dst, group = unique_name("aio-src"), unique_name("aio-dst"), unique_name("aio-eos")

    async def run():
        await _aio_create(bs, src)
        await _aio_create(bs, dst)
        await _aio_produce(bs, src, [b"v%d" % i for i in range(6)])
        c = aiokafka.AIOKafkaConsumer(src, bootstrap_servers=bs, group_id=group, auto_offset_reset="earliest",
                                      enable_auto_commit=False, isolation_level="read_committed")
        p = aiokafka.AIOKafkaProducer(bootstrap_servers=bs, transactional_id=unique_name("aio-eos-tid"))
        await c.start()
        await p.start()
        try:
            got = await _aio_poll_until(c, 6, "the source records")
            offsets = {tp: await c.position(tp) for tp in c.assignment()}
            for commit in (False, True):
                await p.begin_transaction()
                for r in got:
                    await p.send(dst, value=r.value.upper())
                await p.send_offsets_to_transaction(offsets, group)
                if commit:
                    await p.commit_transaction()
                else:
                    await p.abort_transaction()
                    assert [await c.committed(tp) for tp in offsets] == [None] * len(offsets)
            assert sum([await c.committed(tp) for tp in offsets]) == 6
        finally:
            await p.stop()
            await c.stop()

    asyncio.run(run())


def test_confluent_kafka_cooperative_sticky_members_split_and_a_leaver_hands_over(shared_cluster):
    """The cooperative-sticky assignor (incremental rebalances) through JoinGroup / SyncGroup: two members
    split the partitions; when one leaves (LeaveGroup), the other ends up owning them all."""
    bs = shared_cluster.kafka_bootstrap_servers
    topic, group = unique_name("ck-coop"), unique_name("ck-coop-g")
    _ck_create(bs, topic)
    conf = {"bootstrap.servers": bs, "group.id": group, "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
    members = [ck.Consumer(conf), ck.Consumer(conf)]
    try:
        for m in members:
            m.subscribe([topic])

        def owned() -> list[set[int]]:
            for m in members:
                m.poll(0.1)
            return [{tp.partition for tp in m.assignment()} for m in members]
        wait_until(lambda: sorted(map(len, owned())) == [1, 1], 60, what="a partition each")
        members.pop().close()  # LeaveGroup
        wait_until(lambda: owned() == [set(range(PARTITIONS))], 60, what="the other member owning both")
    finally:
        for m in members:
            m.close()


def test_confluent_kafka_second_producer_with_the_same_transactional_id_fences_the_first(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    topic, tid = unique_name("ck-fence"), unique_name("ck-fence-tid")
    _ck_create(bs, topic)
    conf = {"bootstrap.servers": bs, "transactional.id": tid}
    old = ck.Producer(conf)
    old.init_transactions(30)
    old.begin_transaction()
    old.produce(topic, value=b"zombie", partition=0)
    old.flush(30)
    new = ck.Producer(conf)
    new.init_transactions(60)  # bumps the epoch and aborts the old producer's open transaction
    new.begin_transaction()
    new.produce(topic, value=SENTINEL, partition=0)
    new.produce(topic, value=SENTINEL, partition=1)
    new.commit_transaction(30)
    with pytest.raises(ck.KafkaException) as e:
        old.commit_transaction(30)
    assert e.value.args[0].fatal() or e.value.args[0].code() in (ck.KafkaError._FENCED,
                                                                   ck.KafkaError.PRODUCER_FENCED)
    assert sorted(_ck_read_to_sentinels(bs, topic, "read_committed")) == [SENTINEL, SENTINEL]


def test_aiokafka_two_members_share_the_partitions_and_one_takes_over_when_the_other_leaves(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    topic, group = unique_name("aio-two"), unique_name("aio-two-g")

    async def run():
        await _aio_create(bs, topic)
        members = [aiokafka.AIOKafkaConsumer(topic, bootstrap_servers=bs, group_id=group, session_timeout_ms=6000,
                                             heartbeat_interval_ms=500) for _ in range(2)]
        for m in members:
            await m.start()
        loop = asyncio.get_running_loop()

        async def until(cond, what: str) -> None:
            deadline = loop.time() + 60
            while not cond():
                assert loop.time() < deadline, f"aiokafka: {what}: {[m.assignment() for m in members]}"
                await asyncio.sleep(0.1)  # the members' own tasks join and heartbeat meanwhile
        try:
            await until(lambda: sorted(len(m.assignment()) for m in members) == [1, 1], "a partition each")
            await members.pop().stop()  # LeaveGroup
            await until(lambda: len(members[0].assignment()) == PARTITIONS, "the other member owning both")
        finally:
            for m in members:
                await m.stop()

    asyncio.run(run())
