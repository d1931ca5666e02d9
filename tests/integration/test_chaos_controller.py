"""Issue F: every fault through the chaos controller has its real effect on a running cluster, and heals."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from chaos.controller import ChaosController
from client import Admin, Consumer, Producer, TopicPartition
from client.common import records
from client.common.network import ChannelPool
from client.common.pb import agent_pb2 as apb
from client.common.pb import agent_pb2_grpc as agrpc
from client.common.pb import broker_pb2 as bpb
from client.common.pb import broker_pb2_grpc as bgrpc
from node.cluster import FAST_CONFIGS, Cluster
from tests.helpers import ROOT, procfile_cluster, wait_until

CLI = [sys.executable, "-m", "brokerlab_cli"]


def chaos_cli(args, bootstrap, state, data_dir):
    """The CLI as a user runs it: the control token comes from the cluster's data dir, never typed."""
    env = {**os.environ, "BROKERLAB_BOOTSTRAP": bootstrap, "BROKERLAB_CHAOS_STATE": state}
    env.pop("BROKERLAB_CONTROL_TOKEN", None)
    return subprocess.run(CLI + ["chaos", *args, "--data-dir", str(data_dir)], capture_output=True, text=True, check=False,
                          env=env, timeout=120, cwd=ROOT)


def partition_state(ctl, topic, p=0):
    md = ctl.metadata()
    t = next(t for t in md.topics if t.name == topic)
    return next(x for x in t.partitions if x.partition == p)


def fenced(ctl):
    return {f"broker-{b.node_id}" for b in ctl.metadata().brokers if b.fenced}


def read_all(bs, topic, partitions, expect, timeout_s=30):
    got = []
    with Consumer({"bootstrap.servers": bs}) as c:
        c.assign([TopicPartition(topic, p) for p in range(partitions)])
        c.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        while len(got) < expect and time.monotonic() < deadline:
            got.extend(r.value for r in c.poll(500))
    return got


# -- under the repo's Procfile (honcho) --------------------------------------------------------------

def test_procfile_kill_and_restart_broker_and_coordinator(tmp_path):
    with procfile_cluster(tmp_path) as (proc, ports):
        bs = f"127.0.0.1:{ports[0]}"
        state = str(tmp_path / "chaos-agents.json")
        ctl = ChaosController(bs, state_path=state, data_dir=str(tmp_path))
        try:
            wait_until(lambda: len(ctl.discover()) == 4 and ctl.healthy(), 60, what="the Procfile cluster")
            assert ctl.node("coordinator").agent == f"127.0.0.1:{ports[4]}"
            with Admin({"bootstrap.servers": bs}) as a:
                a.create_topic("pf", 2, 3)
            wait_until(ctl.healthy, 30, what="topic pf fully replicated")

            # A broker: killed through its agent (CLI), the Procfile entry stays up, the node comes back.
            r = chaos_cli(["kill", "broker-2"], bs, state, tmp_path)
            assert r.returncode == 0 and "broker-2: killed" in r.stdout, r.stderr
            wait_until(lambda: "broker-2" in fenced(ctl), 20, what="broker-2 fenced after kill")
            assert proc.poll() is None and ctl.status()["nodes"][1]["state"] == "killed"
            r = chaos_cli(["restart", "broker-2"], bs, state, tmp_path)
            assert r.returncode == 0 and "broker-2: running" in r.stdout, r.stderr
            wait_until(ctl.healthy, 60, what="broker-2 back in every ISR")

            # The coordinator: a fresh controller (another CLI call) still finds its agent from the state file.
            r = chaos_cli(["kill", "coordinator"], bs, state, tmp_path)
            assert r.returncode == 0, r.stderr
            r = chaos_cli(["status"], bs, state, tmp_path)
            assert r.returncode == 0, r.stderr
            assert re.search(r"coordinator\s+killed", r.stdout), r.stdout  # metadata now from a broker's cache
            assert proc.poll() is None
            r = chaos_cli(["start", "coordinator"], bs, state, tmp_path)
            assert r.returncode == 0 and "coordinator: running" in r.stdout, r.stderr
            wait_until(ctl.healthy, 60, what="brokers rejoined the restarted coordinator")
            with Producer({"bootstrap.servers": bs, "acks": "all"}) as p:
                futs = [p.send("pf", str(i).encode()) for i in range(100)]
                p.flush()
                assert all(f.exception() is None for f in futs)
            assert sorted(int(v) for v in read_all(bs, "pf", 2, 100)) == list(range(100))
        finally:
            ctl.close()


# -- one cluster (brokerlab up's Cluster) for the other faults; each test heals ----------------------

@pytest.fixture(scope="module")
def chaos_cluster():
    tmp = tempfile.mkdtemp(prefix="brokerlab-chaos-")
    c = Cluster(tmp, brokers=3, port=0, configs=dict(FAST_CONFIGS)).start()
    ctl = ChaosController(c.bootstrap_servers, state_path=os.path.join(tmp, "chaos-agents.json"),
                          control_token=c.control_token)
    ctl.discover()
    yield c, ctl
    ctl.close()
    c.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def env(chaos_cluster):
    c, ctl = chaos_cluster
    yield c, ctl
    ctl.heal()
    assert ctl.wait_healthy(60), "the cluster did not heal"


def create(bs, ctl, topic, partitions=1, configs=None):
    with Admin({"bootstrap.servers": bs}) as a:
        a.create_topic(topic, partitions, 3, configs or {})
    wait_until(ctl.healthy, 30, what=f"{topic} fully replicated")


def test_pause_follower_leaves_isr_and_resume_brings_it_back(env):
    c, ctl = env
    create(c.bootstrap_servers, ctl, "pz")
    st = partition_state(ctl, "pz")
    follower = next(r for r in st.replicas if r != st.leader)
    ctl.pause(f"broker-{follower}")
    assert ctl.status()["nodes"][follower - 1]["state"] == "paused"
    with Producer({"bootstrap.servers": c.bootstrap_servers, "acks": "1", "enable.idempotence": False}) as p:
        p.send("pz", b"x").get(30)
    wait_until(lambda: follower not in partition_state(ctl, "pz").isr, 30, what="the paused follower out of ISR")
    ctl.resume(f"broker-{follower}")
    wait_until(lambda: follower in partition_state(ctl, "pz").isr, 30, what="the resumed follower back in ISR")


def replica_log(pool, addr, topic):
    return bgrpc.BrokerStub(pool.get(addr)).DescribeReplicaLog(bpb.ReplicaLogRequest(topic=topic, partition=0),
                                                               timeout=5)


def test_isolated_leader_is_replaced_and_rejoins_with_truncated_log(env):
    c, ctl = env
    bs = c.bootstrap_servers
    create(bs, ctl, "iso")
    with Producer({"bootstrap.servers": bs, "acks": "all"}) as p:
        for i in range(10):
            p.send("iso", f"ok-{i}".encode()).get(30)
    st = partition_state(ctl, "iso")
    old = f"broker-{st.leader}"
    addr = ctl.node(old).address
    pool = ChannelPool("client:raw")
    try:
        ctl.isolate(old)
        # Clients still reach the old leader, which does not know it was replaced: acks=1 lands there only.
        for i in range(5):
            req = bpb.ProduceRequest(acks=1, timeout_ms=5000)
            req.partitions.add(topic="iso", partition=0, records=records.build_batch([(0, None, b"divergent", None)]))
            assert bgrpc.BrokerStub(pool.get(addr)).Produce(req, timeout=10).partitions[0].error_code == 0
        assert replica_log(pool, addr, "iso").log_end_offset == 15
        wait_until(lambda: partition_state(ctl, "iso").leader not in (-1, st.leader), 30, what="a new leader")
        new = partition_state(ctl, "iso")
        assert new.leader_epoch > st.leader_epoch
        with Producer({"bootstrap.servers": bs, "acks": "all"}) as p:
            for i in range(3):
                p.send("iso", f"after-{i}".encode()).get(30)
        ctl.heal()
        new_addr = ctl.node(f"broker-{new.leader}").address

        seen = []

        def rejoined():
            mine, theirs = replica_log(pool, addr, "iso"), replica_log(pool, new_addr, "iso")
            seen[:] = [mine, theirs, partition_state(ctl, "iso")]
            return (mine.role == "follower" and mine.log_end_offset == theirs.log_end_offset == 13
                    and mine.digest == theirs.digest and st.leader in partition_state(ctl, "iso").isr)
        wait_until(rejoined, 60, what=f"the old leader truncated and back as a follower (last: {seen})")
    finally:
        pool.close()
    values = read_all(bs, "iso", 1, 13)
    assert sorted(values) == sorted([f"ok-{i}".encode() for i in range(10)] + [f"after-{i}".encode() for i in range(3)])


def test_heartbeat_delay_fences_broker_while_data_flows(env):
    c, ctl = env
    bs = c.bootstrap_servers
    create(bs, ctl, "hb", 3)
    ctl.heartbeat_delay(["broker-3"], 5000)  # session timeout is 1.5 s
    wait_until(lambda: "broker-3" in fenced(ctl), 20, what="broker-3 fenced")
    # Its data traffic still flows: a client reads metadata and replica state from it directly.
    pool = ChannelPool("client:raw")
    try:
        assert replica_log(pool, ctl.node("broker-3").address, "hb").error_code == 0
    finally:
        pool.close()
    spec = agrpc.FaultsStub(ctl.pool.get(ctl.node("coordinator").address)).GetFaults(apb.Empty(), timeout=5)
    assert spec.delayed > 0 and [r.method for r in spec.rules] == ["BrokerHeartbeat|Heartbeat"]
    with Producer({"bootstrap.servers": bs, "acks": "all"}) as p:
        futs = [p.send("hb", str(i).encode()) for i in range(30)]
        p.flush()
        assert all(f.exception() is None for f in futs)
    ctl.heal_network("heartbeat")
    wait_until(lambda: "broker-3" not in fenced(ctl), 20, what="broker-3 unfenced after heal")


def test_link_delay_shows_in_produce_latency(env):
    c, ctl = env
    bs = c.bootstrap_servers
    create(bs, ctl, "lat")
    leader = f"broker-{partition_state(ctl, 'lat').leader}"
    with Producer({"bootstrap.servers": bs, "acks": "1", "client.id": "lat", "enable.idempotence": False}) as p:
        p.send("lat", b"warm").get(30)
        ctl.delay([f"client:lat:{leader}"], 300, 20)
        t0 = time.monotonic()
        p.send("lat", b"slow").get(30)
        assert time.monotonic() - t0 >= 0.28  # the injected delay is a lower bound
        ctl.heal_network("delay")
        assert not ctl.faults(leader).rules
        p.send("lat", b"again").get(30)


def test_loss_causes_retries_not_data_loss_with_acks_all(env):
    c, ctl = env
    bs = c.bootstrap_servers
    create(bs, ctl, "lossy", 3, {"min.insync.replicas": "2"})
    ctl.loss([f"client:lossy:broker-{i}" for i in (1, 2, 3)], 0.3)
    with Producer({"bootstrap.servers": bs, "acks": "all", "client.id": "lossy", "enable.idempotence": True,
                   "linger.ms": 2, "retry.backoff.ms": 20}) as p:
        futs = []
        for round_ in range(30):  # many requests, so some are surely lost
            futs += [p.send("lossy", str(round_ * 10 + i).encode()) for i in range(10)]
            p.flush()
        assert all(f.exception() is None for f in futs)
        assert p.metrics()["record-retry-total"] > 0
    refused = sum(agrpc.FaultsStub(ctl.pool.get(ctl.node(f"broker-{i}").address)).GetFaults(apb.Empty(), timeout=5)
                  .refused for i in (1, 2, 3))
    assert refused > 0
    ctl.heal_network("loss")
    values = read_all(bs, "lossy", 3, 300)
    assert sorted(int(v) for v in values) == list(range(300))  # each exactly once


def test_chaos_heal_cli_leaves_every_isr_full(env):
    c, ctl = env
    bs = c.bootstrap_servers
    create(bs, ctl, "healme", 3)
    ctl.pause("broker-1")
    ctl.kill("broker-2")
    ctl.partition([["broker-3"], ["coordinator"]])
    ctl.delay(["broker-3:*"], 100, 10)
    ctl.clock("broker-3", offset_ms=60000)
    wait_until(lambda: not ctl.healthy(), 20, what="the cluster degraded")
    st = ctl.status()
    assert {r["node"]: r["state"] for r in st["nodes"]}["broker-2"] == "killed" and st["under_replicated"]
    r = chaos_cli(["heal", "--wait-s", "60"], bs, ctl.state_path, c.data_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed broker-1" in r.stdout and "started broker-2" in r.stdout
    assert ctl.healthy()
    assert all(not row["faults"] and "clock" not in row and row["state"] == "running" for row in ctl.status()["nodes"])

