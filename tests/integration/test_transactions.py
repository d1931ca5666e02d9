"""Issue E on real clusters: transactions, read_committed, fencing, timeouts, coordinator crash, EOS example."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from client import Admin, Consumer, NewTopic, Producer, TopicPartition
from client.common import errors
from client.common.pb import agent_pb2 as apb
from client.txn_cli import describe_transaction, list_transactions
from tests.helpers import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def topic(bs: str, partitions: int = 1, name: str | None = None) -> str:
    name = name or f"txn-{uuid.uuid4().hex[:8]}"
    with Admin({"bootstrap.servers": bs}) as admin:
        admin.create_topics([NewTopic(name, partitions, 3)])
    with Producer({"bootstrap.servers": bs}) as p:  # until metadata has leaders everywhere
        wait_until(lambda: all(pi.leader >= 0 for pi in p.partitions_for(name)) if p.partitions_for(name) else False,
                   what=f"leaders of {name}")
    return name


def txn_producer(bs: str, tid: str, **extra) -> Producer:
    p = Producer({"bootstrap.servers": bs, "transactional.id": tid, "enable.idempotence": True, "acks": "all",
                  **extra})
    p.init_transactions()
    return p


def consumer(bs: str, t: str, partitions: int, isolation: str) -> Consumer:
    c = Consumer({"bootstrap.servers": bs, "isolation.level": isolation, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(t, i) for i in range(partitions)])
    return c


def read(bs: str, t: str, partitions: int, isolation: str, want: int, timeout_s: float = 20.0) -> list:
    """Polls until `want` records came (fails after timeout_s), then returns them."""
    c = consumer(bs, t, partitions, isolation)
    got: list = []
    try:
        wait_until(lambda: got.extend(c.poll(200)) or len(got) >= want, timeout_s,
                   what=f"{want} {isolation} records of {t} (have {len(got)})")
    finally:
        c.close()
    return got


def test_aborted_hidden_under_read_committed_and_shown_under_read_uncommitted(shared_cluster):
    bs = shared_cluster.bootstrap_servers
    t = topic(bs, 2)
    p = txn_producer(bs, f"tid-{t}")
    try:
        p.begin_transaction()
        for i in range(10):
            p.send(t, value=f"aborted-{i}", partition=i % 2)
        p.flush()   # as in Kafka, abort_transaction() fails records not yet sent: these must be in the log
        p.abort_transaction()
        p.begin_transaction()
        for i in range(10):
            p.send(t, value=f"committed-{i}", partition=i % 2)
        p.commit_transaction()
    finally:
        p.close()
    committed = read(bs, t, 2, "read_committed", 10)
    assert sorted(r.value for r in committed) == sorted(f"committed-{i}".encode() for i in range(10))
    everything = read(bs, t, 2, "read_uncommitted", 20)
    assert sorted(r.value for r in everything) == sorted(
        [f"aborted-{i}".encode() for i in range(10)] + [f"committed-{i}".encode() for i in range(10)])
    # Control batches never reach the application: per partition, 5 aborted + 1 ABORT marker +
    # 5 committed + 1 COMMIT marker, and only the 10 data offsets come back.
    for part in (0, 1):
        offsets = sorted(r.offset for r in everything if r.partition == part)
        assert offsets == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]


def test_read_committed_stops_at_an_open_transaction(shared_cluster):
    bs = shared_cluster.bootstrap_servers
    t = topic(bs, 1)
    tp = TopicPartition(t, 0)
    plain = Producer({"bootstrap.servers": bs, "acks": "all"})
    p = txn_producer(bs, f"tid-{t}")
    c = consumer(bs, t, 1, "read_committed")
    try:
        plain.send(t, value="before").get(10)
        p.begin_transaction()
        first = p.send(t, value="open").get(10).offset
        plain.send(t, value="after").get(10)
        got = []
        wait_until(lambda: got.extend(c.poll(200)) or got, what="the record before the transaction")
        assert [r.value for r in got] == [b"before"]
        for _ in range(5):  # more polls never pass the open transaction's first offset
            assert not c.poll(200)
            assert c.position(tp) == first
        p.commit_transaction()
        wait_until(lambda: got.extend(c.poll(200)) or len(got) >= 3, what="the rest after commit")
        assert [r.value for r in got] == [b"before", b"open", b"after"]
    finally:
        c.close()
        p.close()
        plain.close()


def test_second_producer_fences_the_first(shared_cluster):
    bs = shared_cluster.bootstrap_servers
    t = topic(bs, 1)
    tid = f"tid-{t}"
    old = txn_producer(bs, tid)
    new = None
    try:
        old.begin_transaction()
        old.send(t, value="zombie-1").get(10)
        new = txn_producer(bs, tid)  # aborts the old transaction under a bumped epoch
        assert describe_transaction(bs, tid)[1].producer_epoch > old.producer_epoch
        late = old.send(t, value="zombie-2")  # its partition is in the txn already: goes to the broker
        with pytest.raises(errors.KafkaError) as e:
            late.get(10)
        assert isinstance(e.value, (errors.ProducerFencedError, errors.InvalidProducerEpochError))
        with pytest.raises(errors.ProducerFencedError):
            old.commit_transaction()
        with pytest.raises(errors.ProducerFencedError):
            old.send(t, value="zombie-3")
        new.begin_transaction()
        new.send(t, value="fresh")
        new.commit_transaction()
        got = read(bs, t, 1, "read_committed", 1)
        assert [r.value for r in got] == [b"fresh"]
        everything = read(bs, t, 1, "read_uncommitted", 2)
        assert [r.value for r in everything] == [b"zombie-1", b"fresh"]  # zombie-2 never appended
    finally:
        old.close(0)
        if new is not None:
            new.close()


def test_transaction_timeout_aborts_and_fences(shared_cluster):
    bs = shared_cluster.bootstrap_servers
    t = topic(bs, 1)
    tid = f"tid-{t}"
    p = txn_producer(bs, tid, **{"transaction.timeout.ms": 1000})
    try:
        p.begin_transaction()
        p.send(t, value="too-slow").get(10)
        assert describe_transaction(bs, tid)[1].transaction_state == "Ongoing"
        wait_until(lambda: describe_transaction(bs, tid)[1].transaction_state == "CompleteAbort",
                   what="the coordinator to abort the timed-out transaction")
        assert describe_transaction(bs, tid)[1].producer_epoch == p.producer_epoch + 1
        with pytest.raises(errors.ProducerFencedError):
            p.commit_transaction()
    finally:
        p.close(0)
    everything = read(bs, t, 1, "read_uncommitted", 1)
    assert [r.value for r in everything] == [b"too-slow"]
    c = consumer(bs, t, 1, "read_committed")
    try:  # the ABORT marker is below the LSO: the consumer steps past everything, returning nothing
        wait_until(lambda: not c.poll(200) and c.position(TopicPartition(t, 0)) == 2,
                   what="read_committed to step past the aborted transaction")
    finally:
        c.close()
    names = [x.transactional_id for x in list_transactions(bs)[1]]
    assert tid in names


def _set_marker_drop(cluster, on: bool) -> None:
    spec = apb.FaultRules()
    if on:
        spec.rules.add(kind="drop", src="coordinator", method="WriteTxnMarkers")
    for name in cluster.broker_names():
        cluster.agents[name].set_faults(spec)


def test_coordinator_killed_after_prepare_commit_completes_on_restart(cluster_factory):
    c = cluster_factory()
    bs = c.bootstrap_servers
    t = topic(bs, 3)
    tid = f"tid-{t}"
    p = txn_producer(bs, tid)
    try:
        _set_marker_drop(c, True)  # the coordinator can persist PrepareCommit but write no marker
        p.begin_transaction()
        for i in range(30):
            p.send(t, value=f"v{i}", partition=i % 3)
        p.commit_transaction()  # answered once PrepareCommit is durable
        d = describe_transaction(bs, tid)[1]
        assert d.transaction_state == "PrepareCommit"
        assert sorted(p for x in d.topics for p in x.partitions) == [0, 1, 2]
        cons = consumer(bs, t, 3, "read_committed")
        try:
            for _ in range(3):
                assert not cons.poll(200)  # undecided on every partition
        finally:
            cons.close()
        c.coordinator.kill()
        _set_marker_drop(c, False)
        c.coordinator.start()
        wait_until(lambda: describe_transaction(bs, tid)[1].transaction_state == "CompleteCommit", 60,
                   what="the restarted coordinator to complete the commit")
    finally:
        p.close(0)
    got = read(bs, t, 3, "read_committed", 30)
    assert sorted(r.value for r in got) == sorted(f"v{i}".encode() for i in range(30))
    assert {r.partition for r in got} == {0, 1, 2}


def _worker(bs: str, inp: str, out: str, tid: str, log_path: str) -> subprocess.Popen:
    argv = [sys.executable, os.path.join(ROOT, "examples", "eos_transform.py"), "--bootstrap-server", bs,
            "--input", inp, "--output", out, "--group", f"g-{inp}", "--transactional-id", tid,
            "--session-timeout-ms", "1500", "--max-poll-records", "20"]
    with open(log_path, "ab") as logf:
        return subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT)


def test_eos_example_survives_sigkill(cluster_factory, tmp_path):
    c = cluster_factory()
    bs = c.bootstrap_servers
    inp, out = topic(bs, 3), topic(bs, 3)
    n = 1200
    with Producer({"bootstrap.servers": bs, "acks": "all", "enable.idempotence": True}) as p:
        for i in range(n):
            p.send(inp, key=f"k{i}", value=json.dumps({"id": i}))
        p.flush(30)
    tid = f"eos-{inp}"
    log_path = str(tmp_path / "worker.log")
    reader = consumer(bs, out, 3, "read_committed")
    seen: list = []
    worker = None
    try:
        for kill in range(3):
            worker = _worker(bs, inp, out, tid, log_path)
            target = (kill + 1) * n // 5
            wait_until(lambda target=target: seen.extend(reader.poll(200)) or len(seen) >= target, 90,
                       what=f"output to reach {target} records before kill {kill + 1} (see {log_path})")
            worker.kill()
            worker.wait(10)
        worker = _worker(bs, inp, out, tid, log_path)
        wait_until(lambda: seen.extend(reader.poll(200)) or len(seen) >= n, 120,
                   what=f"all {n} records in the output (see {log_path})")
        for _ in range(5):  # nothing more arrives: no duplicates trail behind
            seen.extend(reader.poll(200))
    finally:
        reader.close()
        if worker is not None:
            worker.kill()
            worker.wait(10)
    ids = [json.loads(r.value)["id"] for r in seen]
    twice = {i for i in ids if ids.count(i) > 1}
    again = set()
    if twice:  # committed twice (re-processing) or an aborted record let through (read_committed)?
        again = {(r.partition, r.offset) for r in read(bs, out, 3, "read_committed", len(set(ids)))}
    evidence = [(r.partition, r.offset, dict(r.headers).get("source-partition"), dict(r.headers).get("source-offset"),
                 (r.partition, r.offset) in again) for r in seen if json.loads(r.value)["id"] in twice][:10]
    assert sorted(ids) == list(range(n)), \
        f"duplicates: {len(ids) - len(set(ids))}, missing: {n - len(set(ids))}; output (partition, offset, " \
        f"source partition, source offset, in a fresh read_committed read) of some: {evidence}"
    for r in seen:
        assert "processedAt" in json.loads(r.value)
        assert dict(r.headers)["source-topic"] == inp.encode()


def test_transactions_cli_list_and_describe(shared_cluster):
    bs = shared_cluster.bootstrap_servers
    t = topic(bs, 2)
    tid = f"cli-{t}"
    p = txn_producer(bs, tid)
    try:
        p.begin_transaction()
        p.send(t, value="x", partition=1).get(10)
        env = {**os.environ, "BROKERLAB_BOOTSTRAP": bs}
        cli = [sys.executable, "-m", "brokerlab_cli", "transactions"]
        r = subprocess.run(cli + ["--list"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
                           check=False)
        assert r.returncode == 0, r.stderr
        row = next(ln.split() for ln in r.stdout.splitlines() if ln.startswith(tid + " "))
        assert row[2:] == [str(p.producer_id), "Ongoing"]
        r = subprocess.run(cli + ["--describe", "--transactional-id", tid], capture_output=True, text=True, env=env,
                           cwd=ROOT, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        header, values = [ln.split() for ln in r.stdout.splitlines()]
        d = dict(zip(header, values))
        assert d["TransactionState"] == "Ongoing" and d["TopicPartitions"] == f"{t}-1"
        assert d["ProducerEpoch"] == str(p.producer_epoch) and int(d["CurrentTransactionStartTimeMs"]) > 0
        r = subprocess.run(cli + ["--describe", "--transactional-id", "no-such-id"], capture_output=True, text=True,
                           env=env, cwd=ROOT, timeout=60, check=False)
        assert r.returncode == 1 and "TRANSACTIONAL_ID_NOT_FOUND" in r.stderr
        p.commit_transaction()
    finally:
        p.close()
