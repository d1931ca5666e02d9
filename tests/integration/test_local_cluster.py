"""Issue 10: LocalCluster, the embedded cluster for users' tests, does what each method says."""
from __future__ import annotations

import os

import psutil
import pytest

from chaos import LocalCluster
from chaos.local_cluster import LocalCluster as LocalClusterDirect
from chaos.targets import TargetError
from client import Producer
from client.common.errors import ConfigError
from node.pids import alive as _alive
from tests.helpers import wait_until


@pytest.fixture(scope="module")
def lc():
    with LocalCluster(brokers=3) as c:
        yield c


@pytest.fixture
def local(lc):
    yield lc
    lc.restore()


def test_kafka_clients_reach_it_through_kafka_bootstrap_servers(local):
    import confluent_kafka as ck
    topic = _topic(local, "lc-kafka")
    p = ck.Producer({"bootstrap.servers": local.kafka_bootstrap_servers, "acks": "all"})
    p.produce(topic, b"v", partition=0)
    assert p.flush(30) == 0
    md = p.list_topics(topic, timeout=10)
    assert sorted(md.brokers) == [0, 1, 2, 3] and md.controller_id == 0


def _topic(cluster, name: str) -> str:
    cluster.create_topic(name, partitions=1, replication_factor=3, configs={"min.insync.replicas": 2})
    cluster.wait_for_isr(name, 0, 3, timeout=20)
    return name


def _wait_isr(cluster, topic: str, cond, timeout_s: float = 30) -> None:
    """Waits for the ISR the test assumes: a loaded machine can shrink an ISR for a moment at any
    time, so "the ISR has 2 members" does not say which two."""
    wait_until(lambda: cluster.leader(topic, 0) is not None and cond(cluster.isr(topic, 0)), timeout_s,
               what=f"the ISR of {topic}-0 the test needs")


def test_both_imports_and_the_shape_of_a_cluster(local):
    assert LocalCluster is LocalClusterDirect
    assert local.nodes == ["coordinator", "broker-1", "broker-2", "broker-3"]
    assert local.brokers == ["broker-1", "broker-2", "broker-3"]
    assert local.bootstrap_servers == local.address("coordinator")
    assert local.bootstrap_servers.startswith("127.0.0.1:")
    assert set(local.pids()) == set(local.nodes)
    assert all(local.state(n) == "running" for n in local.nodes)
    with Producer({"bootstrap.servers": local.bootstrap_servers}) as p:
        _topic(local, "shape")
        assert p.send("shape", b"x", partition=0).get(10).offset == 0
    logs = local.logs()
    assert set(logs) == set(local.nodes)
    assert all("listening on" in text for text in logs.values())


def test_kill_moves_leadership_and_start_brings_the_broker_back(local):
    _topic(local, "kill")
    leader = local.leader("kill", 0)
    assert leader in local.replicas("kill", 0)
    pid = local.pids()[leader]
    local.kill(leader)
    assert not _alive(pid)
    assert local.state(leader) == "killed"
    assert leader not in local.pids()
    new = local.wait_for_leader("kill", 0, not_on=leader, timeout=20)
    assert new != leader
    _wait_isr(local, "kill", lambda isr: leader not in isr)

    local.start(leader)
    assert local.state(leader) == "running"
    _wait_isr(local, "kill", lambda isr: sorted(isr) == ["broker-1", "broker-2", "broker-3"])


def test_pause_freezes_the_process_and_resume_thaws_it(local):
    _topic(local, "pause")
    follower = next(r for r in local.replicas("pause", 0) if r != local.leader("pause", 0))
    proc = psutil.Process(local.pids()[follower])
    local.pause(follower)
    assert local.state(follower) == "paused"
    wait_until(lambda: proc.status() == psutil.STATUS_STOPPED, 5, what="process stopped")
    _wait_isr(local, "pause", lambda isr: follower not in isr)

    local.resume(follower)
    assert local.state(follower) == "running"
    wait_until(lambda: proc.status() != psutil.STATUS_STOPPED, 5, what="process running again")
    _wait_isr(local, "pause", lambda isr: follower in isr)


def test_partition_cuts_a_node_off_and_heal_joins_it_again(local):
    _topic(local, "part")
    follower = next(r for r in local.replicas("part", 0) if r != local.leader("part", 0))
    grudge = local.partition([follower])  # one group: cut from every other node
    others = [n for n in local.nodes if n != follower]
    assert grudge[follower] == sorted(others)
    assert all(grudge[o] == [follower] for o in others)
    assert local.state(follower) == "running"  # a network fault, not a process fault
    _wait_isr(local, "part", lambda isr: follower not in isr)
    rules = local.chaos.faults(follower).rules
    assert {r.src for r in rules if r.dst == follower} == set(others) and all(r.kind == "drop" for r in rules)

    local.heal()
    assert all(not local.chaos.faults(n).rules for n in local.nodes)
    _wait_isr(local, "part", lambda isr: follower in isr)


def test_partition_into_explicit_groups_moves_the_leader_away_from_the_minority(local):
    _topic(local, "groups")
    leader = local.leader("groups", 0)
    majority = [n for n in local.nodes if n != leader]
    local.partition([leader], majority)
    assert local.wait_for_leader("groups", 0, not_on=leader, timeout=20) in majority
    local.heal()
    local.wait_for_isr("groups", 0, 3, timeout=30)


def test_restore_undoes_every_fault(local):
    _topic(local, "restore")
    local.kill("broker-1")
    local.pause("broker-2")
    local.partition(["broker-3"])
    local.restore()
    assert all(local.state(n) == "running" for n in local.nodes)
    assert all(not local.chaos.faults(n).rules for n in local.nodes)
    local.wait_for_isr("restore", 0, 3, timeout=30)


def test_bad_input_names_the_problem(local):
    with pytest.raises(ValueError, match="unknown node 'broker-9'"):
        local.kill("broker-9")
    with pytest.raises(TargetError, match="unknown node 'nope'"):
        local.partition(["nope"], ["broker-1"])
    with pytest.raises(ValueError, match="unknown topic 'missing'"):
        local.leader("missing", 0)
    _topic(local, "bad")
    with pytest.raises(ValueError, match="no partition 5"):
        local.leader("bad", 5)
    # RF=3: an ISR of 4 can never come, whatever the ISR is doing right now
    with pytest.raises(TimeoutError, match="ISR of bad-0 to have 4 replicas"):
        local.wait_for_isr("bad", 0, 4, timeout=0.5)
    with pytest.raises(ValueError, match="brokers must be an integer >= 1"):
        LocalCluster(brokers=0)
    with pytest.raises(ConfigError, match="Unknown configuration 'no.such.key'"):
        LocalCluster(brokers=1, configs={"no.such.key": 1})
    with pytest.raises(RuntimeError, match="not running"):
        _ = LocalCluster(brokers=1).bootstrap_servers


def test_everything_stops_and_the_temp_dir_goes_when_the_block_fails():
    with pytest.raises(ZeroDivisionError), LocalCluster(brokers=1) as c:
        pids = list(c.pids().values())
        data_dir = c.data_dir
        paused = c.pids()["broker-1"]
        c.pause("broker-1")  # a paused node must be stopped too
        raise ZeroDivisionError("the user's test failed")
    assert len(pids) == 2 and paused in pids
    assert not any(_alive(p) for p in pids)
    assert not os.path.exists(data_dir)
    assert not c.running


def test_a_port_taken_between_choosing_and_binding_gets_one_retry(monkeypatch):
    import socket

    import chaos.local_cluster as lcm
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    real, calls = lcm._free_ports, []

    def ports(n, host):
        calls.append(n)
        got = real(n, host)
        return [squatter.getsockname()[1]] + got[1:] if len(calls) == 1 else got

    monkeypatch.setattr(lcm, "_free_ports", ports)
    try:
        with LocalCluster(brokers=1) as c:
            assert len(calls) == 2
            assert c.address("coordinator") != f"127.0.0.1:{squatter.getsockname()[1]}"
            c.create_topic("retried", replication_factor=1)
            assert c.leader("retried", 0) == "broker-1"
    finally:
        squatter.close()
