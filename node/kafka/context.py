"""What a Kafka API handler may use: the node's drivers and the cluster metadata.

On the coordinator `coordinator` is the Coordinator (controller state, group and
transaction coordinators as its extensions) and `broker` is None; on a broker the
reverse. Topic admin from a broker goes to the controller over gRPC, as the
brokers' own calls do.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from client.common import errors
from client.common.config import BrokerConfig
from client.common.pb import metadata_pb2 as mpb
from node.kafka import COORDINATOR_NODE_ID
from node.kafka.codec import response_class

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewTopic:
    name: str
    num_partitions: int  # -1: num.partitions
    replication_factor: int  # -1: default.replication.factor
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class KafkaContext:
    name: str  # "coordinator" / "broker-N": the fault rules' destination
    node_id: int
    host: str
    config: BrokerConfig
    broker: object | None = None  # node.broker.Broker
    coordinator: object | None = None  # node.coordinator.Coordinator
    handlers: dict = field(default_factory=dict)  # the registry in force (ApiVersions lists it)

    @classmethod
    def for_node(cls, node) -> KafkaContext:
        from node.broker import Broker
        if isinstance(node, Broker):
            return cls(node.name, node.broker_id, node.host, node.config, broker=node)
        return cls(node.name, COORDINATOR_NODE_ID, node.host, node.config, coordinator=node)

    @staticmethod
    def response_class(header):
        return response_class(header.request_api_key, header.request_api_version)

    # -- the coordinator's extensions ----------------------------------------
    def extension(self, type_name: str):
        """The coordinator's extension of that class name (GroupCoordinator, TxnCoordinator), or None."""
        if self.coordinator is None:
            return None
        for ext in self.coordinator.extensions:
            if type(ext).__name__ == type_name:
                return ext
        return None

    @property
    def group_coordinator(self):
        return self.extension("GroupCoordinator")

    @property
    def txn_coordinator(self):
        return self.extension("TxnCoordinator")

    # -- metadata ----------------------------------------------------------------
    def cluster_metadata(self, topics=()) -> mpb.MetadataResponse:
        """The controller's metadata (on the coordinator) or this broker's copy of it."""
        if self.coordinator is not None:
            return self.coordinator.metadata(list(topics), include_internal=True)
        md = self.broker.metadata
        if not topics:
            return md
        out = mpb.MetadataResponse()
        out.CopyFrom(md)
        del out.topics[:]
        by_name = {t.name: t for t in md.topics}
        for name in topics:
            t = by_name.get(name)
            if t is None:
                out.topics.add(name=name, error_code=errors.UnknownTopicOrPartitionError.code)
            else:
                out.topics.append(t)
        return out

    def kafka_nodes(self, md: mpb.MetadataResponse) -> list[tuple[int, str, int]]:
        """(node_id, host, kafka port) of every node with a Kafka listener: live brokers and the coordinator."""
        nodes = [(b.node_id, b.host, b.kafka_port) for b in md.brokers if b.kafka_port and not b.fenced]
        if md.controller_kafka_port:
            nodes.append((COORDINATOR_NODE_ID, md.controller.rsplit(":", 1)[0], md.controller_kafka_port))
        return sorted(nodes)

    # -- topic admin -------------------------------------------------------------
    def create_topics(self, topics: list[NewTopic], validate_only: bool = False) -> dict[str, Exception | None]:
        """Creates through the controller; per topic None or the Kafka error."""
        specs = [mpb.CreatableTopic(
            name=t.name,
            num_partitions=t.num_partitions if t.num_partitions > 0 else self.config.num_partitions,
            replication_factor=(t.replication_factor if t.replication_factor > 0
                                else self.config.default_replication_factor),
            configs=t.configs) for t in topics]
        req = mpb.CreateTopicsRequest(topics=specs, validate_only=validate_only)
        return self._admin("CreateTopics", req, [t.name for t in topics])

    def delete_topics(self, names: list[str]) -> dict[str, Exception | None]:
        return self._admin("DeleteTopics", mpb.DeleteTopicsRequest(names=names), names)

    def _admin(self, method: str, req, names: list[str]) -> dict[str, Exception | None]:
        import grpc

        from node.coordinator import ControllerServicer
        try:
            if self.coordinator is not None:
                resp = getattr(ControllerServicer(self.coordinator), method)(req, None)
            else:
                resp = getattr(self.broker.controller(), method)(req, timeout=30)
        except grpc.RpcError as e:
            err = errors.NotControllerError(f"the controller is unreachable: {e.code()}")
            return {n: err for n in names}
        out: dict[str, Exception | None] = {}
        for r in resp.results:
            out[r.name] = errors.for_code(r.error_code, r.error_message) if r.error_code else None
        return out

    def auto_create(self, names: list[str]) -> dict[str, Exception | None]:
        """Kafka's auto.create.topics.enable through the controller's one entry point
        (Coordinator.auto_create_topics; from a broker, a GetMetadata that allows auto-creation):
        per unknown topic None (created) or the Kafka error."""
        import grpc
        if self.coordinator is not None:
            return self.coordinator.auto_create_topics(list(names))
        req = mpb.MetadataRequest(topics=list(names), allow_auto_topic_creation=True)
        try:
            from client.common.pb import metadata_pb2_grpc as mgrpc
            stub = mgrpc.MetadataStub(self.broker.pool.get(self.broker.coordinator_addr))
            md = stub.GetMetadata(req, timeout=5)
        except grpc.RpcError as e:
            err = errors.NotControllerError(f"the controller is unreachable: {e.code()}")
            return {n: err for n in names}
        return {t.name: errors.for_code(t.error_code, f"auto-creating {t.name}") if t.error_code else None
                for t in md.topics if t.name in names}
