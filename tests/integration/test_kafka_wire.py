"""Issue 18 on a real 3-broker cluster: the Kafka listener's cluster and log APIs, kcat, and faults.

Raw requests (tests/kafka_wire.py) pin the protocol behaviour Kafka clients depend on; kcat and
confluent-kafka check it end to end. kcat tests skip with a reason when kcat is absent, and fail
under CI=true (.ci/run installs it).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import confluent_kafka as ck
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from client.common import records
from node.kafka import COORDINATOR_NODE_ID
from tests.helpers import unique_name, wait_until
from tests.kafka_wire import WireClient

PRODUCE, FETCH, LIST_OFFSETS, METADATA, OFFSET_FOR_LEADER_EPOCH = 0, 1, 2, 3, 23


def _run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=False, capture_output=True, text=True, **kw)


def _kcat() -> str:
    path = shutil.which("kcat")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kcat is not installed (.ci/run installs it with apt-get install kcat)")
        pytest.skip("kcat is not installed: apt-get install kcat")
    return path


def _create(bs: str, topic: str, partitions: int = 3, rf: int = 3, configs: dict | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic(topic, partitions, rf, config=configs or {})])[topic].result(30)
    wait_until(lambda: _leaders(bs, topic, partitions), 30, what=f"leaders for {topic}")


def _metadata(bs: str, topics=None):
    with WireClient(bs) as c:
        body = {"topics": None if topics is None else [{"name": t} for t in topics],
                "allow_auto_topic_creation": False}
        return c.call(METADATA, 12, body)


def _leaders(bs: str, topic: str, partitions: int) -> dict[int, str] | None:
    """partition -> the leader's Kafka address, once every partition has a leader."""
    md = _metadata(bs, [topic])
    nodes = {b.node_id: f"{b.host}:{b.port}" for b in md.brokers}
    t = md.topics[0]
    if t.error_code or len(t.partitions) != partitions or any(p.leader_id < 0 for p in t.partitions):
        return None
    return {p.partition_index: nodes[p.leader_id] for p in t.partitions}


def _produce(address: str, topic: str, partition: int, batch: bytes, acks: int = -1, client_id: str = "test"):
    with WireClient(address, client_id=client_id) as c:
        resp = c.call(PRODUCE, 9, {"transactional_id": None, "acks": acks, "timeout": 10000, "topic_data": [
            {"name": topic, "partition_data": [{"index": partition, "records": batch}]}]})
    return resp.responses[0].partition_responses[0]


def _fetch(address: str, topic: str, partition: int, offset: int, isolation: int = 0):
    with WireClient(address) as c:
        resp = c.call(FETCH, 12, {"replica_id": -1, "max_wait": 0, "min_bytes": 1, "max_bytes": 1 << 20,
                                  "isolation_level": isolation, "topics": [{"topic": topic, "partitions": [
                                      {"partition": partition, "fetch_offset": offset,
                                       "partition_max_bytes": 1 << 20}]}]})
    return resp.responses[0].partitions[0]


def _batch(values, **producer_state) -> bytes:
    now = int(time.time() * 1000)
    return records.build_batch([(now, None, v) for v in values], **producer_state)


# ---------------------------------------------------------------- Metadata and admin

def test_metadata_lists_the_coordinator_as_controller_leading_no_partitions(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    topic = unique_name("md")
    _create(bs, topic, partitions=3)
    md = _metadata(bs)
    ids = sorted(b.node_id for b in md.brokers)
    assert ids == [COORDINATOR_NODE_ID, 1, 2, 3]
    assert md.controller_id == COORDINATOR_NODE_ID
    assert f"{md.brokers[0].host}:{md.brokers[0].port}" == bs
    t = next(t for t in md.topics if t.name == topic)
    assert len(t.partitions) == 3
    for p in t.partitions:
        assert p.leader_id in (1, 2, 3) and sorted(p.replica_nodes) == [1, 2, 3]
    # A broker answers the same cluster (from its metadata copy).
    broker = next(f"{b.host}:{b.port}" for b in md.brokers if b.node_id == 2)
    wait_until(lambda: {b.node_id for b in _metadata(broker).brokers} == set(ids), 10, what="broker metadata")


def test_admin_create_describe_and_delete_through_confluent_kafka(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    topic = unique_name("adm")
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic(topic, 2, 3, config={"min.insync.replicas": "2"})])[topic].result(30)
    err = admin.create_topics([NewTopic(topic, 2, 3)])[topic].exception(30)
    assert err is not None and err.args[0].code() == ck.KafkaError.TOPIC_ALREADY_EXISTS
    res = admin.describe_configs([ConfigResource("topic", topic)])
    configs = next(iter(res.values())).result(30)
    assert configs["min.insync.replicas"].value == "2"
    assert configs["cleanup.policy"].value == "delete" and configs["cleanup.policy"].is_default
    cluster = admin.describe_cluster().result(30)
    assert cluster.controller.id == COORDINATOR_NODE_ID
    assert sorted(n.id for n in cluster.nodes) == [COORDINATOR_NODE_ID, 1, 2, 3]
    admin.delete_topics([topic])[topic].result(30)
    wait_until(lambda: _metadata(bs, [topic]).topics[0].error_code == 3, 10, what="the topic to be gone")


def test_auto_create_from_metadata_and_produce_unless_disallowed(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    asked, refused = unique_name("auto-md"), unique_name("no-auto")
    with WireClient(bs) as c:
        r = c.call(METADATA, 12, {"topics": [{"name": refused}], "allow_auto_topic_creation": False})
        assert r.topics[0].error_code == 3  # UNKNOWN_TOPIC_OR_PARTITION, not created
        r = c.call(METADATA, 12, {"topics": [{"name": asked}], "allow_auto_topic_creation": True})
        assert r.topics[0].error_code == 5  # LEADER_NOT_AVAILABLE while Kafka creates it
    leaders = wait_until(lambda: _leaders(bs, asked, 1), 30, what="the auto-created topic")
    assert list(leaders) == [0]  # num.partitions = 1
    assert _metadata(bs, [refused]).topics[0].error_code == 3
    # kafka-python's producer auto-creates by producing to a topic it never created.
    import kafka
    produced = unique_name("auto-produce")
    p = kafka.KafkaProducer(bootstrap_servers=bs, acks="all")
    try:
        meta = p.send(produced, b"v").get(timeout=30)
    finally:
        p.close()
    assert meta.offset == 0 and _leaders(bs, produced, 1)
    # A broker asks the controller to create it (the same entry point).
    broker = next(f"{b.host}:{b.port}" for b in _metadata(bs).brokers if b.node_id == 3)
    via_broker = unique_name("auto-broker")
    with WireClient(broker) as c:
        r = c.call(METADATA, 12, {"topics": [{"name": via_broker}], "allow_auto_topic_creation": True})
        assert r.topics[0].error_code == 5
    wait_until(lambda: _leaders(bs, via_broker, 1), 30, what="the topic auto-created through a broker")


# ---------------------------------------------------------------- Produce and Fetch semantics

def test_duplicate_idempotent_batch_answers_none_with_its_original_offset(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    topic = unique_name("dup")
    _create(bs, topic, partitions=1)
    leader = _leaders(bs, topic, 1)[0]
    first = _produce(leader, topic, 0, _batch([b"a", b"b"]))  # someone else's records first
    assert first.error_code == 0 and first.base_offset == 0
    batch = _batch([b"x", b"y", b"z"], producer_id=4242, producer_epoch=0, base_sequence=0)
    once = _produce(leader, topic, 0, batch)
    again = _produce(leader, topic, 0, batch)  # the retry of a batch whose response was lost
    assert (once.error_code, once.base_offset) == (0, 2)
    assert (again.error_code, again.base_offset) == (0, 2)  # NONE and the original offset, as in Kafka
    data = _fetch(leader, topic, 0, 0)
    assert [r.value for b in _batches(data.records) for r in records.decode_records(b)] == [b"a", b"b", b"x", b"y",
                                                                                             b"z"]


def test_acks_0_gets_no_response_and_is_appended(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    topic = unique_name("acks0")
    _create(bs, topic, partitions=1)
    leader = _leaders(bs, topic, 1)[0]
    with WireClient(leader) as c:
        c.send(PRODUCE, 9, {"transactional_id": None, "acks": 0, "timeout": 1000, "topic_data": [
            {"name": topic, "partition_data": [{"index": 0, "records": _batch([b"fire", b"forget"])}]}]})
        # The next answer on this connection is the Metadata one: Kafka sends nothing for acks=0.
        md_id = c.send(METADATA, 12, {"topics": [{"name": topic}], "allow_auto_topic_creation": False})
        assert c.receive(METADATA, 12)[0] == md_id
    wait_until(lambda: _fetch(leader, topic, 0, 0).high_watermark == 2, 10, what="the acks=0 records")


def _batches(data: bytes) -> list[bytes]:
    return [raw for _, raw in records.iter_batches(data)]


def test_fetch_returns_the_batch_holding_the_offset_bytes_untouched(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    topic = unique_name("fetch")
    _create(bs, topic, partitions=1)
    leader = _leaders(bs, topic, 1)[0]
    sent = _batch([b"%d" % i for i in range(10)])
    assert _produce(leader, topic, 0, sent).base_offset == 0
    p = _fetch(leader, topic, 0, 5)
    assert p.error_code == 0 and p.high_watermark == 10
    (raw,) = _batches(p.records)
    h = records.read_header(raw)
    assert (h.base_offset, h.last_offset) == (0, 9)  # the whole batch holding offset 5, as Kafka serves it
    # The served bytes are the produced ones but for the leader epoch (bytes 12-15), which the CRC skips.
    assert raw[:12] == sent[:12] and raw[16:] == sent[16:]
    assert _fetch(leader, topic, 0, 11).error_code == 1  # OFFSET_OUT_OF_RANGE


def test_list_offsets_and_offset_for_leader_epoch(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    topic = unique_name("offsets")
    _create(bs, topic, partitions=1)
    leader = _leaders(bs, topic, 1)[0]
    t0 = int(time.time() * 1000)
    batch = records.build_batch([(t0 + i * 10, None, b"%d" % i) for i in range(5)])
    assert _produce(leader, topic, 0, batch).base_offset == 0

    def list_offset(ts: int):
        with WireClient(leader) as c:
            r = c.call(LIST_OFFSETS, 6, {"replica_id": -1, "isolation_level": 0, "topics": [
                {"name": topic, "partitions": [{"partition_index": 0, "current_leader_epoch": -1, "timestamp": ts}]}]})
        p = r.topics[0].partitions[0]
        return p.error_code, p.offset, p.timestamp
    assert list_offset(-2) == (0, 0, -1)  # earliest
    assert list_offset(-1) == (0, 5, -1)  # latest: the high watermark
    assert list_offset(t0 + 25) == (0, 3, t0 + 30)  # the first record at or after the timestamp
    with WireClient(leader) as c:
        r = c.call(OFFSET_FOR_LEADER_EPOCH, 4, {"replica_id": -1, "topics": [{"topic": topic, "partitions": [
            {"partition": 0, "current_leader_epoch": -1, "leader_epoch": 0}]}]})
    p = r.topics[0].partitions[0]
    assert (p.error_code, p.leader_epoch, p.end_offset) == (0, 0, 5)
    # The coordinator leads nothing: it says so rather than failing the connection.
    with WireClient(bs) as c:
        r = c.call(LIST_OFFSETS, 6, {"replica_id": -1, "isolation_level": 0, "topics": [
            {"name": topic, "partitions": [{"partition_index": 0, "current_leader_epoch": -1, "timestamp": -1}]}]})
    assert r.topics[0].partitions[0].error_code == 6  # NOT_LEADER_OR_FOLLOWER


def test_aborted_transactions_are_listed_only_for_read_committed(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    topic = unique_name("aborted")
    _create(bs, topic, partitions=1)
    leader = _leaders(bs, topic, 1)[0]
    p = ck.Producer({"bootstrap.servers": bs, "transactional.id": unique_name("txn"), "acks": "all"})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, b"t1", partition=0)
    p.produce(topic, b"t2", partition=0)
    p.flush(30)
    p.abort_transaction(30)
    wait_until(lambda: _fetch(leader, topic, 0, 0, isolation=1).last_stable_offset == 3, 30,
               what="the ABORT marker below the LSO")
    committed = _fetch(leader, topic, 0, 0, isolation=1)
    assert [a.first_offset for a in committed.aborted_transactions] == [0]
    (h, _), _marker = list(records.iter_batches(committed.records))[:2]
    assert committed.aborted_transactions[0].producer_id == h.producer_id and h.is_transactional
    uncommitted = _fetch(leader, topic, 0, 0, isolation=0)
    assert uncommitted.aborted_transactions is None  # Kafka sends null to read_uncommitted fetches
    # confluent-kafka read_committed skips the aborted records; read_uncommitted sees them.
    assert _consume_values(bs, topic, "read_committed", want=0) == []
    assert _consume_values(bs, topic, "read_uncommitted", want=2) == [b"t1", b"t2"]


def _consume_values(bs: str, topic: str, isolation: str, want: int) -> list[bytes]:
    c = ck.Consumer({"bootstrap.servers": bs, "group.id": unique_name("g"), "isolation.level": isolation,
                     "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([ck.TopicPartition(topic, 0, 0)])
    got: list[bytes] = []
    eof = []

    def step() -> bool:
        m = c.poll(0.2)
        if m is not None:
            if m.error() and m.error().code() == ck.KafkaError._PARTITION_EOF:
                eof.append(m.offset())
            elif not m.error():
                got.append(m.value())
        return bool(eof) and len(got) >= want
    try:
        wait_until(step, 30, what=f"{isolation} read to the end")
    finally:
        c.close()
    return got


# ---------------------------------------------------------------- kcat

def test_kcat_lists_every_broker_and_partition(shared_cluster):
    kcat = _kcat()
    bs = shared_cluster.kafka_bootstrap_servers
    topic = unique_name("kcat-l")
    _create(bs, topic, partitions=4)
    out = _run([kcat, "-b", bs, "-L", "-J", "-t", topic], timeout=60)
    assert out.returncode == 0, out.stderr
    md = json.loads(out.stdout)
    assert sorted(b["id"] for b in md["brokers"]) == [COORDINATOR_NODE_ID, 1, 2, 3]
    (t,) = md["topics"]
    assert t["topic"] == topic and sorted(p["partition"] for p in t["partitions"]) == [0, 1, 2, 3]
    assert all(p["leader"] in (1, 2, 3) and len(p["isrs"]) == 3 for p in t["partitions"])


def test_kcat_produces_and_consumes_10000_records(shared_cluster):
    kcat = _kcat()
    bs = shared_cluster.kafka_bootstrap_servers
    topic = unique_name("kcat-rt")
    _create(bs, topic, partitions=3, configs={"min.insync.replicas": "2"})
    lines = [f"record-{i}" for i in range(10_000)]
    p = _run([kcat, "-b", bs, "-P", "-t", topic, "-X", "acks=all"], input="\n".join(lines) + "\n", timeout=120)
    assert p.returncode == 0, p.stderr
    c = _run([kcat, "-b", bs, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-c", "10000"], timeout=120)
    assert c.returncode == 0, c.stderr
    assert sorted(c.stdout.split()) == sorted(lines)


def test_kcat_consumes_as_a_group(shared_cluster):
    kcat = _kcat()
    bs = shared_cluster.kafka_bootstrap_servers
    topic, group = unique_name("kcat-g"), unique_name("kcat-group")
    _create(bs, topic, partitions=2)
    lines = [f"g-{i}" for i in range(200)]
    p = _run([kcat, "-b", bs, "-P", "-t", topic], input="\n".join(lines) + "\n", timeout=60)
    assert p.returncode == 0, p.stderr
    proc = subprocess.Popen([kcat, "-b", bs, "-G", group, "-o", "beginning", "-q", "-c", "200",
                             "-X", "auto.offset.reset=earliest", topic], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert sorted(out.split()) == sorted(lines)
    # The group exists at the coordinator and has committed what it read.
    admin = AdminClient({"bootstrap.servers": bs})
    listed = admin.list_consumer_groups().result(30)
    assert group in {g.group_id for g in listed.valid}
