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


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(n: int) -> list[int]:
    """n loopback ports free right now, all held open together so they differ.

    They are drawn below the kernel's ephemeral range: a port from that range can be taken by any
    outgoing connection (another test's, or a broker retrying the coordinator) before its server binds it.
    """
    import random
    high = min(_ephemeral_low(), 32768)
    low = max(1024, high - 12000)
    rng = random.Random()
    socks, ports = [], []
    try:
        for _ in range(50 * n):
            if len(ports) == n:
                break
            port = rng.randrange(low, high)
            if port in ports:
                continue
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(port)
        if len(ports) < n:
            raise RuntimeError(f"found only {len(ports)} of {n} free loopback ports in {low}-{high}")
        return ports
    finally:
        for s in socks:
            s.close()


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _log_tails(root, lines: int = 15) -> str:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in sorted(files):
            if name.endswith(".log"):
                path = os.path.join(dirpath, name)
                with open(path, errors="replace") as f:
                    tail = f.read().splitlines()[-lines:]
                out.append(f"--- {path} ---\n" + "\n".join(tail))
    return "\n".join(out)


def stop_process_group(proc: subprocess.Popen, term_wait_s: float, kill_wait_s: float) -> None:
    """SIGTERM to a process started with start_new_session=True and its children; SIGKILL if it
    has not exited within term_wait_s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:  # the whole group has exited already
        proc.wait(kill_wait_s)
        return
    try:
        proc.wait(term_wait_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(kill_wait_s)


@contextlib.contextmanager
def procfile_cluster(tmp_path, attempts: int = 3, ready_s: float = 60.0):
    """The repo's Procfile under honcho, on free ports with its data in tmp_path; yields (proc, ports).

    ports[0] is the coordinator's, ports[1:4] the brokers', ports[4:8] their agents' (as 9100-3 / 9200-3).
    The agents share tmp_path/control-token, so ChaosController(..., data_dir=tmp_path) finds the token.
    Yields once every node and agent accepts connections. If a port was taken between choosing it and
    binding it (the node exits; its agent and honcho stay up), it starts again on fresh ports; after
    `attempts` tries it fails with the tail of every log.
    """
    with open(os.path.join(ROOT, "Procfile")) as f:
        template = f.read()
    failures = []
    for attempt in range(attempts):
        run_dir = tmp_path / f"run{attempt}"
        run_dir.mkdir()
        ports = free_ports(8)
        mapping = {str(9100 + i): str(ports[i]) for i in range(4)}
        mapping.update({str(9200 + i): str(ports[4 + i]) for i in range(4)})
        text = re.sub(r"\b(9[12]0[0-3])\b", lambda m, mp=mapping: mp[m.group(1)], template)
        text = re.sub(r"--kafka-port 909[2-5]\b", "--kafka-port 0", text)  # free Kafka-protocol ports too
        text = re.sub(r"--metrics-port 940[4-7]\b", "--metrics-port 0", text)  # and free metrics ports
        text = text.replace(".brokerlab/procfile", str(run_dir / "pf"))
        text = text.replace(".brokerlab/control-token", str(tmp_path / "control-token"))
        text = text.replace("brokerlab agent", f"{sys.executable} -m brokerlab_cli agent")
        (run_dir / "Procfile").write_text(text)
        # A file, not an unread pipe: honcho would block once the pipe buffer filled.
        with open(run_dir / "honcho.log", "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "honcho", "-f", str(run_dir / "Procfile"), "start"],
                                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + ready_s
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            if all(_accepts(p) for p in ports):
                ready = True
                break
            time.sleep(0.2)
        if ready:
            try:
                yield proc, ports
            finally:
                stop_process_group(proc, 20, 5)
            return
        stop_process_group(proc, 20, 5)
        failures.append(f"attempt {attempt + 1} (ports {ports}):\n{_log_tails(run_dir)}")
    raise AssertionError("the Procfile cluster never came up:\n" + "\n".join(failures))
