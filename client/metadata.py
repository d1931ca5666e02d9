"""The client's view of the cluster: brokers, partition leaders, the controller."""
from __future__ import annotations

import logging
import threading

import grpc

from client.common import errors
from client.common.clock import Clock, SystemClock
from client.common.network import ChannelPool, transport_error
from client.common.pb import metadata_pb2 as mpb
from client.common.pb import metadata_pb2_grpc as mgrpc
from client.common.types import BrokerInfo, ClusterMetadata, PartitionInfo, TopicPartition

log = logging.getLogger(__name__)


class Metadata:
    def __init__(self, bootstrap: list[str], pool: ChannelPool, clock: Clock | None = None,
                 request_timeout_ms: int = 30000):
        if not bootstrap:
            raise errors.ConfigError("bootstrap.servers is empty")
        self.bootstrap = list(bootstrap)
        self.pool = pool
        self.clock = clock or SystemClock()
        self.request_timeout_ms = request_timeout_ms
        self.cluster = ClusterMetadata()
        self.topic_errors: dict[str, int] = {}
        self.configs: dict[str, dict[str, str]] = {}
        self.lock = threading.Lock()
        self.last_refresh_ms = -1
        self.controller_agent = ""
        self.cluster_id = ""

    def candidates(self) -> list[str]:
        addrs = [self.cluster.controller] if self.cluster.controller else []
        addrs += [b.address for b in self.cluster.brokers.values()]
        addrs += self.bootstrap
        seen, out = set(), []
        for a in addrs:
            if a and a not in seen:
                seen.add(a)
                out.append(a)
        return out

    def fetch(self, topics: list[str] | None = None, timeout_ms: int | None = None,
              allow_auto_topic_creation: bool = False) -> mpb.MetadataResponse:
        """Asks the first node that answers; raises KafkaConnectionError when none does.
        allow_auto_topic_creation: the cluster creates the named topics that do not exist, if it allows
        (auto.create.topics.enable), as a Kafka producer's metadata request asks."""
        timeout = (timeout_ms or min(self.request_timeout_ms, 5000)) / 1000.0
        last: Exception | None = None
        for addr in self.candidates():
            try:
                return mgrpc.MetadataStub(self.pool.get(addr)).GetMetadata(
                    mpb.MetadataRequest(topics=topics or [], include_internal=True,
                                        allow_auto_topic_creation=allow_auto_topic_creation), timeout=timeout)
            except grpc.RpcError as e:
                last = transport_error(e, addr)
        raise errors.KafkaConnectionError(
            f"no node of the cluster answered at {', '.join(self.candidates())}: {last}")

    def refresh(self, topics: list[str] | None = None) -> ClusterMetadata:
        md = self.fetch()
        self.update(md)
        return self.cluster

    def update(self, md: mpb.MetadataResponse) -> None:
        cluster = ClusterMetadata(controller=md.controller, metadata_epoch=md.metadata_epoch)
        for b in md.brokers:
            if not b.fenced:
                cluster.brokers[b.node_id] = BrokerInfo(b.node_id, b.host, b.port, b.agent)
        topic_errors, configs = {}, {}
        for t in md.topics:
            if t.error_code:
                topic_errors[t.name] = t.error_code
                continue
            cluster.partitions[t.name] = [
                PartitionInfo(t.name, p.partition, p.leader, tuple(p.replicas), tuple(p.isr), p.leader_epoch)
                for p in sorted(t.partitions, key=lambda p: p.partition)]
            configs[t.name] = dict(t.configs)
        with self.lock:
            # A broker's cache older than what we have: keep ours unless the cluster restarted.
            if (md.metadata_epoch < self.cluster.metadata_epoch and cluster.controller == self.cluster.controller
                    and self.cluster.partitions and md.metadata_epoch > 1):
                return
            self.cluster = cluster
            self.topic_errors = topic_errors
            self.configs = configs
            self.controller_agent = md.controller_agent
            self.cluster_id = md.cluster_id
            self.last_refresh_ms = self.clock.monotonic_ms()

    def partitions_for(self, topic: str, refresh_if_missing: bool = True) -> list[PartitionInfo]:
        parts = self.cluster.partitions.get(topic)
        if parts is None and refresh_if_missing:
            self.refresh()
            parts = self.cluster.partitions.get(topic)
        if parts is None:
            raise errors.UnknownTopicOrPartitionError(f"Topic '{topic}' does not exist")
        return parts

    def leader_address(self, tp: TopicPartition) -> str | None:
        leader = self.cluster.leader_for(tp)
        b = self.cluster.brokers.get(leader)
        return b.address if b else None

    def leader_epoch(self, tp: TopicPartition) -> int:
        parts = self.cluster.partitions.get(tp.topic)
        if parts is None or tp.partition >= len(parts):
            return -1
        return parts[tp.partition].leader_epoch

    def controller_address(self) -> str:
        if not self.cluster.controller:
            self.refresh()
        return self.cluster.controller
