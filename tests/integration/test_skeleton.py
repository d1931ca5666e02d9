"""Issue A: a real multi-process cluster; round trips, restart durability, bad input."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from client import Admin, NewTopic, Producer
from client.common import errors, records
from client.common.network import ChannelPool
from client.common.pb import broker_pb2 as bpb
from client.common.pb import broker_pb2_grpc as bgrpc
from node.cluster import FAST_CONFIGS, Cluster
from tests.helpers import ROOT, procfile_cluster, read_all, wait_until

CLI = [sys.executable, "-m", "brokerlab_cli"]


def cli(args, bootstrap, input_text=None, timeout=120):
    env = {**os.environ, "BROKERLAB_BOOTSTRAP": bootstrap}
    return subprocess.run(CLI + args, input=input_text, capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT, check=False)


def test_cli_round_trip_10k_and_restart(tmp_path):
    cfg = dict(FAST_CONFIGS)
    c = Cluster(str(tmp_path / "data"), brokers=3, configs=cfg).start()
    try:
        bs = c.bootstrap_servers
        r = cli(["topics", "create", "--topic", "lines", "--partitions", "6", "--replication-factor", "3"], bs)
        assert r.returncode == 0, r.stderr
        r = cli(["topics", "describe", "--topic", "lines"], bs)
        assert r.returncode == 0, r.stderr
        rows = [ln for ln in r.stdout.splitlines() if "Partition:" in ln]
        assert len(rows) == 6
        for ln in rows:
            assert re.search(r"Replicas: \d,\d,\d\tIsr: \d,\d,\d", ln), ln
        lines = "\n".join(f"line-{i}" for i in range(10000)) + "\n"
        r = cli(["produce", "--topic", "lines", "--acks", "all"], bs, lines)
        assert r.returncode == 0, r.stderr
        r = cli(["consume", "--topic", "lines", "--from-beginning", "--max-messages", "10000",
                 "--timeout-ms", "10000"], bs)
        got = r.stdout.split()
        assert sorted(got) == sorted(f"line-{i}" for i in range(10000))
    finally:
        c.stop()
    # Same data dir, new processes: everything acknowledged is still there.
    c2 = Cluster(str(tmp_path / "data"), brokers=3, configs=cfg).start()
    try:
        bs = c2.bootstrap_servers
        def all_back():
            r = cli(["consume", "--topic", "lines", "--from-beginning", "--max-messages", "10000",
                     "--timeout-ms", "5000"], bs)
            return sorted(r.stdout.split()) == sorted(f"line-{i}" for i in range(10000))
        wait_until(all_back, 60, what="10,000 lines after restart")
    finally:
        c2.stop()


def test_keyed_produce_and_partition_flags(shared_cluster):
    bs = shared_cluster.bootstrap_servers
    assert cli(["topics", "create", "--topic", "keyed", "--partitions", "3", "--replication-factor", "2"],
               bs).returncode == 0
    r = cli(["produce", "--topic", "keyed", "--property", "parse.key=true", "--property", "key.separator=:"],
            bs, "a:1\nb:2\na:3\n")
    assert r.returncode == 0, r.stderr
    r = cli(["consume", "--topic", "keyed", "--from-beginning", "--max-messages", "3", "--timeout-ms", "5000",
             "--property", "print.key=true", "--property", "key.separator=:"], bs)
    got = sorted(r.stdout.split())
    assert got == ["a:1", "a:3", "b:2"]
    # Same key, same partition, in order. Each partition is read to its end (one poll may return nothing yet).
    logs = read_all(bs, "keyed", range(3))
    a_parts = {tp.partition for tp, recs in logs.items() for r in recs if r.key == b"a"}
    assert len(a_parts) == 1
    assert [r.value for r in logs[("keyed", a_parts.pop())] if r.key == b"a"] == [b"1", b"3"]


def test_bad_input_errors(shared_cluster):
    bs = shared_cluster.bootstrap_servers
    with Admin({"bootstrap.servers": bs}) as admin:
        admin.create_topic("bad", 2, 3)
        with pytest.raises(errors.TopicAlreadyExistsError):
            admin.create_topic("bad", 2, 3)
        with pytest.raises(errors.InvalidReplicationFactorError):
            admin.create_topic("too-many", 1, 4)
        with pytest.raises(errors.InvalidConfigError, match="no.such.key"):
            admin.create_topics([NewTopic("cfg", 1, 1, {"no.such.key": "1"})])
        with pytest.raises(errors.InvalidConfigError, match="min.insync.replicas"):
            admin.create_topics([NewTopic("cfg", 1, 1, {"min.insync.replicas": "zero"})])
        md = admin.describe_topics(["bad"])[0]
    # CLI: one readable line, non-zero exit, no traceback.
    r = cli(["topics", "create", "--topic", "bad", "--partitions", "1", "--replication-factor", "1"], bs)
    assert r.returncode != 0 and "TOPIC_ALREADY_EXISTS" in r.stderr and "Traceback" not in r.stderr
    r = cli(["topics", "create", "--topic", "x", "--partitions", "1", "--replication-factor", "9"], bs)
    assert r.returncode != 0 and "INVALID_REPLICATION_FACTOR" in r.stderr and "Traceback" not in r.stderr
    # auto.create.topics.enable is on by default, as in Kafka: producing creates the topic (num.partitions);
    # with it off the same command fails with UNKNOWN_TOPIC_OR_PARTITION (test_broker_settings.py).
    r = cli(["produce", "--topic", "auto-made"], bs, "x\n")
    assert r.returncode == 0, r.stderr
    with pytest.raises(errors.ConfigError, match="no.such.producer.key"):
        Producer({"bootstrap.servers": bs, "no.such.producer.key": 1})
    with pytest.raises(errors.ConfigError, match="acks"):
        Producer({"bootstrap.servers": bs, "acks": "2"})

    # Raw produce requests: a follower refuses, a corrupt batch is refused and nothing is appended.
    p0 = md.partitions[0]
    brokers = {b.node_id: f"{b.host}:{b.port}" for b in shared_cluster.metadata().brokers}
    follower = next(r for r in p0.replicas if r != p0.leader)
    pool = ChannelPool("client:test")
    try:
        batch = records.build_batch([(0, None, b"v", None)])
        def produce(addr, data, topic="bad"):
            req = bpb.ProduceRequest(acks=1, timeout_ms=5000)
            req.partitions.add(topic=topic, partition=0, records=data)
            return bgrpc.BrokerStub(pool.get(addr)).Produce(req, timeout=10).partitions[0]
        assert produce(brokers[follower], batch).error_code == errors.NotLeaderOrFollowerError.code
        assert produce(brokers[p0.leader], batch, "nope").error_code == errors.UnknownTopicOrPartitionError.code
        corrupt = bytearray(batch)
        corrupt[-1] ^= 0xFF
        assert produce(brokers[p0.leader], bytes(corrupt)).error_code == errors.CorruptMessageError.code
        ok = produce(brokers[p0.leader], batch)
        assert ok.error_code == 0 and ok.base_offset == 0  # the corrupt batch took no offset
    finally:
        pool.close()


def test_procfile_with_honcho(tmp_path):
    """The repo's Procfile, with free ports and temp data dirs, runs a working cluster under honcho."""
    with procfile_cluster(tmp_path) as (_proc, ports):
        bs = f"127.0.0.1:{ports[0]}"
        def ready():
            with Admin({"bootstrap.servers": bs}) as a:
                md = a.describe_cluster()
                return len([b for b in md.brokers if not b.fenced]) == 3
        wait_until(ready, 60, what="the Procfile cluster")
        assert cli(["topics", "create", "--topic", "pf", "--partitions", "3", "--replication-factor", "3"],
                   bs).returncode == 0
        assert cli(["produce", "--topic", "pf", "--acks", "all"], bs, "\n".join(map(str, range(500))) + "\n").returncode == 0
        r = cli(["consume", "--topic", "pf", "--from-beginning", "--max-messages", "500", "--timeout-ms", "10000"], bs)
        assert sorted(map(int, r.stdout.split())) == list(range(500))
