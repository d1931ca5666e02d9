"""Starts a local cluster: a coordinator and N brokers, each a separate process under its own agent.

Used by `brokerlab up`, the test fixtures and LocalCluster. Port 0 means
"pick a free port": the node binds it and reports it through its data dir.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Self

import grpc

from client.common.config import BrokerConfig
from client.common.errors import ConfigError
from client.common.network import ChannelPool
from client.common.pb import metadata_pb2 as mpb
from client.common.pb import metadata_pb2_grpc as mgrpc
from node.agent import Agent
from node.auth import call_metadata, ensure_token, token_path

log = logging.getLogger(__name__)

# Short timeouts so failover and tests take seconds, not Kafka's production minutes.
FAST_CONFIGS = {
    "broker.heartbeat.interval.ms": 200,
    "broker.session.timeout.ms": 1500,
    "replica.lag.time.max.ms": 2000,
    "replica.fetch.wait.max.ms": 200,
    "replica.fetch.backoff.ms": 100,
    "group.initial.rebalance.delay.ms": 0,
    "group.min.session.timeout.ms": 500,
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": 500,
}


# The internal topics' replication factors: Kafka's default is 3, and a topic is never created with fewer
# (node/internal_log.py), so a launcher that knows its cluster's size sets them to min(3, brokers).
INTERNAL_TOPIC_RF_KEYS = ("offsets.topic.replication.factor", "transaction.state.log.replication.factor")


def with_internal_topic_configs(configs: dict, brokers: int) -> dict:
    """`configs` with each of INTERNAL_TOPIC_RF_KEYS not given set to min(3, brokers), so a 1- or 2-broker
    cluster's group and transaction coordinators can start. A given value above `brokers` raises a
    ConfigError naming the setting: that topic could never be created."""
    out = dict(configs)
    given = BrokerConfig.from_props(out)  # a bad value fails here, naming its key
    for key in INTERNAL_TOPIC_RF_KEYS:
        if key not in out:
            out[key] = min(3, brokers)
        elif given.get(key) > brokers:
            raise ConfigError(f"{key}={given.get(key)} is larger than the cluster's {brokers} broker(s): the "
                              f"internal topic is never created with fewer replicas; set {key} to at most "
                              f"{brokers}")
    return out


class ClusterNodes:
    """The surface Cluster and NetnsCluster share, over their `agents` (node name -> a node with
    NodeAddresses), `data_dir` and `control_token`."""

    def ensure_control_token(self) -> str:
        """The cluster's control token (node.auth), created in the data dir if it has none yet."""
        if self.control_token is None:
            self.control_token = ensure_token(token_path(self.data_dir))
        return self.control_token

    @property
    def coordinator(self):
        return self.agents["coordinator"]

    @property
    def bootstrap_servers(self) -> str:
        return self.coordinator.address

    @property
    def kafka_bootstrap_servers(self) -> str:
        """The coordinator's Kafka-protocol address: what Kafka clients' bootstrap.servers takes."""
        return self.coordinator.kafka_address

    @property
    def all_servers(self) -> str:
        """Every node's address: a client bootstrapped with it survives the coordinator's death,
        as a Kafka client given several brokers does."""
        return ",".join(a.address for a in self.agents.values())

    def node_names(self) -> list[str]:
        return list(self.agents)

    def broker_names(self) -> list[str]:
        return [n for n in self.agents if n.startswith("broker-")]


class Cluster(ClusterNodes):
    def __init__(self, data_dir: str, brokers: int = 3, port: int = 0, host: str = "127.0.0.1",
                 configs: dict | None = None, env: dict | None = None, kafka_port: int | None = 0,
                 metrics_port: int | None = 0, security=None):
        """`kafka_port`: the coordinator's Kafka-protocol port, broker-i's is kafka_port + i
        (0: free ports; None: no Kafka listeners). `metrics_port` likewise for the Prometheus endpoints.
        `security`: None (off), a protocol name ("SASL_SSL") or a node.security.settings.Security."""
        if brokers < 1:
            raise ValueError("a cluster needs at least one broker")
        self.data_dir = os.path.abspath(data_dir)
        self.n_brokers = brokers
        self.host = host
        self.base_port = port
        self.kafka_port = kafka_port
        self.metrics_port = metrics_port
        self.configs = with_internal_topic_configs(configs or {}, brokers)  # a bad setting fails here, naming it
        from node.security.settings import Security
        self.security = Security.coerce(security)
        if self.security is not None:
            self.configs.update(self.security.node_configs(self.data_dir))
        BrokerConfig.from_props(self.configs)
        self.env = dict(env or {})
        self.agents: dict[str, Agent] = {}
        self.control_token: str | None = None  # set by start(): <data_dir>/control-token
        # the cluster's own calls carry its control token: with SASL on, data-plane calls need it too
        self.pool = ChannelPool("cluster", channel_credentials=self.channel_credentials(),
                                metadata=lambda: call_metadata(self.control_token))

    def start(self, timeout_s: float = 60.0) -> Cluster:
        os.makedirs(self.data_dir, exist_ok=True)
        logs = os.path.join(self.data_dir, "logs")
        os.makedirs(logs, exist_ok=True)
        token = self.ensure_control_token()
        self.write_client_props()
        try:
            coord = Agent("coordinator", "coordinator", host=self.host, port=self.base_port,
                          data_dir=os.path.join(self.data_dir, "coordinator"), configs=self.configs,
                          log_path=os.path.join(logs, "coordinator.log"), env=self.env, control_token=token,
                          kafka_port=self.kafka_port, metrics_port=self.metrics_port)
            self.agents["coordinator"] = coord
            coord.start()
            for i in range(1, self.n_brokers + 1):
                name = f"broker-{i}"
                a = Agent(name, "broker", node_id=i, host=self.host,
                          port=self.base_port + i if self.base_port else 0,
                          data_dir=os.path.join(self.data_dir, name), coordinator=coord.address,
                          configs=self.configs, log_path=os.path.join(logs, f"{name}.log"), env=self.env,
                          control_token=token,
                          kafka_port=self.kafka_port + i if self.kafka_port else self.kafka_port,
                          metrics_port=self.metrics_port + i if self.metrics_port else self.metrics_port)
                self.agents[name] = a
            for name in self.broker_names():
                self.agents[name].start()
            self.wait_ready(timeout_s)
            self.create_users()
        except BaseException:
            self.stop()
            raise
        return self

    def write_client_props(self) -> None:
        """<data dir>/client-security.properties for the tools started later (none: security is off)."""
        from node.security.settings import CLIENT_PROPS_FILE, write_client_props
        if self.security is None:
            try:
                os.unlink(os.path.join(self.data_dir, CLIENT_PROPS_FILE))
            except FileNotFoundError:
                pass
            return
        write_client_props(self.data_dir, self.security.client_props(self.data_dir))

    def channel_credentials(self):
        """gRPC channel credentials for this cluster (TLS: its CA), None when plaintext."""
        if self.security is None or not self.security.tls:
            return None
        from client.common.security import channel_credentials_from_config
        return channel_credentials_from_config(self.security.client_props(self.data_dir))

    def security_admin(self):
        """A node.security.admin.SecurityAdmin for this cluster's users and ACLs (close it after use)."""
        from node.security.admin import SecurityAdmin
        return SecurityAdmin(self.bootstrap_servers, self.ensure_control_token(),
                             channel_credentials=self.channel_credentials())

    def create_users(self) -> None:
        if self.security is None or not self.security.users:
            return
        with self.security_admin() as admin:
            for user, password in self.security.users.items():
                admin.create_user(user, password)

    def metadata(self, timeout_s: float = 2.0) -> mpb.MetadataResponse:
        return mgrpc.MetadataStub(self.pool.get(self.coordinator.address)).GetMetadata(
            mpb.MetadataRequest(include_internal=True), timeout=timeout_s)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until every broker is registered and unfenced."""
        deadline = time.monotonic() + timeout_s
        delay = 0.02
        want = {int(n.split("-")[1]) for n in self.broker_names() if self.agents[n].state == "running"}
        while True:
            try:
                md = self.metadata()
                live = {b.node_id for b in md.brokers if not b.fenced}
                if want <= live:
                    return
            except grpc.RpcError:
                pass
            for a in self.agents.values():
                st = a.status()
                if st.state == "exited":
                    raise RuntimeError(f"{a.name} exited with code {st.exit_code}; see {a.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not ready within {timeout_s} s; logs in {self.data_dir}/logs")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def stop(self) -> None:
        for a in list(self.agents.values())[::-1]:
            try:
                a.close()
            except Exception:  # keep stopping the others
                log.exception("stopping %s", a.name)
        self.pool.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
