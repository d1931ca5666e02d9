"""Shared test helpers: bounded polling, never fixed sleeps."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid


def unique_name(prefix: str) -> str:
    """A topic or group name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_ports(n: int) -> list[int]:
    """n loopback ports free right now (all held open together, so they differ)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def stop_process_group(proc: subprocess.Popen, term_wait_s: float, kill_wait_s: float) -> None:
    """SIGTERM to a process started with start_new_session=True and its children; SIGKILL if it
    has not exited within term_wait_s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(term_wait_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(kill_wait_s)


@contextlib.contextmanager
def procfile_cluster(tmp_path):
    """The repo's Procfile under honcho, on free ports with its data in tmp_path; yields (proc, ports).

    ports[0] is the coordinator's, ports[1:4] the brokers', ports[4:8] their agents' (as 9100-3 / 9200-3).
    The agents share tmp_path/control-token, so ChaosController(..., data_dir=tmp_path) finds the token.
    """
    with open(os.path.join(ROOT, "Procfile")) as f:
        text = f.read()
    ports = free_ports(8)
    mapping = {str(9100 + i): str(ports[i]) for i in range(4)}
    mapping.update({str(9200 + i): str(ports[4 + i]) for i in range(4)})
    text = re.sub(r"\b(9[12]0[0-3])\b", lambda m: mapping[m.group(1)], text)
    text = re.sub(r"--kafka-port 909[2-5]\b", "--kafka-port 0", text)  # free Kafka-protocol ports too
    text = re.sub(r"--metrics-port 940[4-7]\b", "--metrics-port 0", text)  # and free metrics ports
    text = text.replace(".brokerlab/procfile", str(tmp_path / "pf"))
    text = text.replace(".brokerlab/control-token", str(tmp_path / "control-token"))
    text = text.replace("brokerlab agent", f"{sys.executable} -m brokerlab_cli agent")
    (tmp_path / "Procfile").write_text(text)
    # DEVNULL, not an unread pipe: honcho would block once the pipe buffer filled.
    proc = subprocess.Popen([sys.executable, "-m", "honcho", "-f", str(tmp_path / "Procfile"), "start"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc, ports
    finally:
        stop_process_group(proc, 20, 5)
