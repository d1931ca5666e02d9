"""Shared test helpers: bounded polling, never fixed sleeps."""
from __future__ import annotations

import time


def wait_until(cond, timeout_s: float = 20.0, interval_s: float = 0.05, what: str = "condition"):
    """Polls cond() until it returns a truthy value; fails the test after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - conditions may fail while a cluster settles
            last_exc = e
        time.sleep(interval_s)
        interval_s = min(interval_s * 1.5, 0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


def partition_state(cluster, topic: str, partition: int):
    """The controller's view: (leader, leader_epoch, replicas, isr)."""
    md = cluster.metadata()
    for t in md.topics:
        if t.name == topic:
            p = t.partitions[partition]
            return p.leader, p.leader_epoch, list(p.replicas), list(p.isr)
    raise KeyError(topic)


def broker_addresses(cluster) -> dict[int, str]:
    return {b.node_id: f"{b.host}:{b.port}" for b in cluster.metadata().brokers}


def replica_log(cluster, broker_id: int, topic: str, partition: int):
    """One replica's log summary (hw, leo, digest of records below hw) via DescribeReplicaLog."""
    from client.common.pb import broker_pb2 as bpb
    from client.common.pb import broker_pb2_grpc as bgrpc
    addr = cluster.agents[f"broker-{broker_id}"].address
    return bgrpc.BrokerStub(cluster.pool.get(addr)).DescribeReplicaLog(
        bpb.ReplicaLogRequest(topic=topic, partition=partition), timeout=5)


def read_all(bootstrap: str, topic: str, partitions, timeout_s: float = 30.0, **props):
    """Every record of the partitions from the beginning to the current end, per partition in offset order."""
    from client import Consumer, TopicPartition
    tps = [TopicPartition(topic, p) for p in partitions]
    out = {tp: [] for tp in tps}
    with Consumer({"bootstrap.servers": bootstrap, **props}) as c:
        c.assign(tps)
        c.seek_to_beginning()
        ends = wait_until(lambda: c.end_offsets(tps), timeout_s, what="end offsets")
        deadline = time.monotonic() + timeout_s
        while any(c.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end within {timeout_s} s")
            for r in c.poll(500):
                out[(r.topic, r.partition)].append(r)
    return out
