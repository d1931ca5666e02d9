"""NetnsCluster: a cluster whose nodes are hosts of their own (node.netns), for `brokerlab up --netns`,
`brokerlab chaos run` with `network: netns` and the tests.

Each node runs under a `brokerlab agent --kernel-faults` process inside its namespace: the same
agent a Procfile starts on a machine of its own, reached by the chaos controller over the bridge
with the control token. Every node uses the same ports (its own address), as on separate machines.
The surface is node.cluster.Cluster's (bootstrap_servers, agents with addresses, stop, ...).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Self

import grpc

from client.common.network import ChannelPool
from client.common.pb import agent_pb2 as apb
from client.common.pb import agent_pb2_grpc as agrpc
from client.common.pb import metadata_pb2 as mpb
from client.common.pb import metadata_pb2_grpc as mgrpc
from node.agent import NodeAddresses
from node.auth import TOKEN_ENV, call_metadata, token_path
from node.cluster import ClusterNodes, with_internal_topic_configs
from node.netns import NetnsNetwork, clean_leftovers, start_reaper

log = logging.getLogger(__name__)

AGENT_PORT = 9190


@dataclass
class NodeProcess(NodeAddresses):
    """One node's agent process, in the node's namespace."""
    name: str
    host: str
    port: int
    agent_port: int
    kafka_port: int | None
    metrics_port: int | None
    log_path: str
    agent_log_path: str
    proc: subprocess.Popen | None = None  # the agent's process (its node is the agent's child)
    stub: object = None  # () -> this agent's AgentStub, set by NetnsCluster

    # node.agent.Agent's process control, through the agent's gRPC service (LocalCluster calls these)
    def _call(self, method: str, timeout_s: float = 60.0) -> apb.AgentStatus:
        st = getattr(self.stub(), method)(apb.AgentRequest(node=self.name), timeout=timeout_s)
        if st.error:
            raise RuntimeError(f"{method} {self.name}: {st.error}")
        return st

    def start(self) -> apb.AgentStatus:
        return self._call("Start")

    def kill(self) -> apb.AgentStatus:
        return self._call("Kill")

    def pause(self) -> apb.AgentStatus:
        return self._call("Pause")

    def resume(self) -> apb.AgentStatus:
        return self._call("Resume")

    def restart(self) -> apb.AgentStatus:
        return self._call("Restart")

    def stop(self) -> apb.AgentStatus:
        return self._call("Stop")

    def status(self) -> apb.AgentStatus:
        return self.stub().Status(apb.AgentRequest(node=self.name), timeout=10)

    @property
    def agent_address(self) -> str:
        return f"{self.host}:{self.agent_port}"


class NetnsCluster(ClusterNodes):
    def __init__(self, data_dir: str, brokers: int = 3, configs: dict | None = None, *, subnet: str | None = None,
                 port: int = 9100, kafka_port: int | None = 9092, metrics_port: int | None = 9404,
                 agent_port: int = AGENT_PORT, echo=None):
        if brokers < 1:
            raise ValueError("a cluster needs at least one broker")
        ports = [p for p in (port, kafka_port, metrics_port, agent_port) if p is not None]
        if 0 in ports or len(set(ports)) != len(ports):
            raise ValueError(f"a netns cluster needs distinct fixed ports (every node has the same on its "
                             f"own address), got gRPC {port}, Kafka {kafka_port}, metrics {metrics_port}, "
                             f"agent {agent_port}")
        self.configs = with_internal_topic_configs(configs or {}, brokers)  # a bad setting fails here, naming it
        self.data_dir = os.path.abspath(data_dir)
        self.n_brokers = brokers
        self.ports = (port, kafka_port, metrics_port, agent_port)
        self.echo = echo or (lambda msg: log.info("%s", msg))
        names = ["coordinator"] + [f"broker-{i}" for i in range(1, brokers + 1)]
        self.network = NetnsNetwork(names, subnet)
        self.agents: dict[str, NodeProcess] = {}
        self.control_token: str | None = None
        self.pool: ChannelPool | None = None
        self._reaper: subprocess.Popen | None = None
        self.removed_leftovers: list[str] = []

    # -- Cluster's surface ------------------------------------------------
    @property
    def plan(self):
        return self.network.plan

    # -- lifecycle ----------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> NetnsCluster:
        self.removed_leftovers = clean_leftovers()
        if self.removed_leftovers:
            self.echo("removed what an earlier --netns cluster (no longer running) left behind: "
                      + ", ".join(self.removed_leftovers))
        os.makedirs(os.path.join(self.data_dir, "logs"), exist_ok=True)
        token = self.ensure_control_token()
        self.pool = ChannelPool("cluster", metadata=call_metadata(token))
        try:
            plan = self.network.create()
            self._reaper = start_reaper(self.network.prefix)
            port, kafka_port, metrics_port, agent_port = self.ports
            for name in plan.nodes:
                logs = os.path.join(self.data_dir, "logs")
                self.agents[name] = NodeProcess(name, plan.ip(name), port, agent_port, kafka_port, metrics_port,
                                                os.path.join(logs, f"{name}.log"),
                                                os.path.join(logs, f"{name}-agent.log"),
                                                stub=lambda n=name: self.agent_stub(n))
            for name in plan.nodes:
                self._spawn(name)
            self._wait_agents(timeout_s)
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str) -> None:
        a = self.agents[name]
        kind = "coordinator" if name == "coordinator" else "broker"
        argv = [*self.network.exec_argv(name), sys.executable, "-m", "brokerlab_cli", "agent", kind,
                "--host", a.host, "--port", str(a.port), "--agent-port", str(a.agent_port),
                "--data-dir", os.path.join(self.data_dir, name), "--log-path", a.log_path,
                "--coordinator", self.agents["coordinator"].address, "--kafka-timeouts", "--kernel-faults",
                "--control-token-file", token_path(self.data_dir)]
        if kind == "broker":
            argv += ["--id", name.split("-")[1]]
        argv += ["--no-kafka"] if a.kafka_port is None else ["--kafka-port", str(a.kafka_port)]
        argv += ["--no-metrics"] if a.metrics_port is None else ["--metrics-port", str(a.metrics_port)]
        for k, v in self.configs.items():
            argv += ["--config", f"{k}={v}"]
        env = {**os.environ, TOKEN_ENV: self.control_token}
        env.pop("BROKERLAB_PARENT_PID", None)  # the agent, not this process, is its node's parent
        with open(a.agent_log_path, "ab") as logf:
            a.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env=env, start_new_session=True)

    def agent_stub(self, name: str) -> agrpc.AgentStub:
        return agrpc.AgentStub(self.pool.get(self.agents[name].agent_address))

    def _check_alive(self) -> None:
        for a in self.agents.values():
            if a.proc is not None and a.proc.poll() is not None:
                raise RuntimeError(f"{a.name}'s agent exited with code {a.proc.returncode}; "
                                   f"see {a.agent_log_path}: {_tail(a.agent_log_path)}")

    def _wait_agents(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = list(self.agents)
        delay = 0.05
        while pending:
            for name in list(pending):
                try:
                    st = self.agent_stub(name).Status(apb.AgentRequest(node=name), timeout=2)
                    if st.state == "running":
                        pending.remove(name)
                except grpc.RpcError:
                    pass
            self._check_alive()
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"agents of {', '.join(pending)} not up within {timeout_s} s; "
                                   f"logs in {self.data_dir}/logs")
            if pending:
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def metadata(self, timeout_s: float = 2.0) -> mpb.MetadataResponse:
        return mgrpc.MetadataStub(self.pool.get(self.bootstrap_servers)).GetMetadata(
            mpb.MetadataRequest(include_internal=True), timeout=timeout_s)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until every broker that runs is registered and unfenced."""
        deadline = time.monotonic() + timeout_s
        want = set()
        for name in self.broker_names():
            try:
                running = self.agents[name].status().state == "running"
            except grpc.RpcError:
                running = True  # its agent will say; until then it counts
            if running:
                want.add(int(name.split("-")[1]))
        delay = 0.05
        while True:
            try:
                if want <= {b.node_id for b in self.metadata().brokers if not b.fenced}:
                    return
            except grpc.RpcError:
                pass
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not ready within {timeout_s} s; logs in {self.data_dir}/logs")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def stop(self, graceful: bool = True) -> list[str]:
        """Stops the agents (they stop their nodes and remove their rules), then removes the network.
        Returns what was removed."""
        if graceful:
            for a in self.agents.values():
                if a.proc is not None and a.proc.poll() is None:
                    a.proc.terminate()
            for a in self.agents.values():
                if a.proc is not None:
                    try:
                        a.proc.wait(15)
                    except subprocess.TimeoutExpired:
                        pass  # killed with its namespace below
        removed = self.network.remove()
        for a in self.agents.values():
            if a.proc is not None and a.proc.poll() is None:
                a.proc.kill()
                a.proc.wait(5)
        if self._reaper is not None:
            self._reaper.terminate()
            self._reaper.wait(5)
            self._reaper = None
        if self.pool is not None:
            self.pool.close()
        return removed

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _tail(path: str, n: int = 5) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().splitlines()[-n:])
    except OSError:
        return ""
