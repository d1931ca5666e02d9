"""The coordinator process: controller (and, by later parts, group and transaction coordinators).

Driver: one lock around ControllerState; every mutation is persisted to the
node's RocksDB before it is answered, then metadata watchers are woken.
"""
from __future__ import annotations

import logging
import threading

import grpc

from client.common import errors
from client.common.clock import Clock, SystemClock
from client.common.config import BrokerConfig
from client.common.network import ChannelPool
from client.common.pb import metadata_pb2 as mpb
from client.common.pb import metadata_pb2_grpc as mgrpc
from node.controller import ControllerState
from node.limits import watch_max_wait_ms
from node.store import Store

log = logging.getLogger(__name__)


def partition_pb(p) -> mpb.PartitionState:
    return mpb.PartitionState(partition=p.partition, leader=p.leader, leader_epoch=p.leader_epoch,
                              partition_epoch=p.partition_epoch, replicas=p.replicas, isr=p.isr)


class Coordinator:
    name = "coordinator"

    def __init__(self, data_dir: str, host: str, port: int, config: BrokerConfig,
                 clock: Clock | None = None, agent: str = ""):
        self.data_dir = data_dir
        self.host, self.port = host, port
        self.config = config
        self.clock = clock or SystemClock()
        self.agent = agent
        self.store = Store(f"{data_dir}/db", sync=config.log_flush_sync)
        self.state = ControllerState(config.broker_session_timeout_ms, config.unclean_leader_election_enable,
                                     num_partitions=config.num_partitions,
                                     default_replication_factor=config.default_replication_factor)
        saved = self.store.get_json("controller")
        if saved:
            self.state.load_json(saved, self.clock.monotonic_ms())
            log.info("Recovered controller state: %d brokers, %d topics", len(self.state.brokers),
                     len(self.state.topics))
        self.cluster_id = self.store.get_json("cluster_id") or f"brokerlab-{self.clock.wall_ms():x}"
        self.store.put_json("cluster_id", self.cluster_id)
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self._stop = threading.Event()
        self.extensions: list = []  # group / transaction coordinators register here
        self.pool = ChannelPool(self.name)  # outbound calls to brokers (internal topics, txn markers)
        self.kafka_port = 0  # set by node.main once the Kafka listener is bound

    # -- driver ----------------------------------------------------------
    def _commit(self) -> None:
        """Caller holds the lock: persist, then wake watchers."""
        self.store.put_json("controller", self.state.to_json())
        self.changed.notify_all()

    def mutate(self, fn):
        with self.lock:
            before = self.state.metadata_epoch
            try:
                return fn(self.state, self.clock.monotonic_ms())
            finally:
                if self.state.metadata_epoch != before:
                    self._commit()

    def run_ticks(self) -> None:
        while not self._stop.wait(0.1):
            self.mutate(lambda s, now: s.tick(now))
            for ext in self.extensions:
                try:
                    ext.tick()
                except Exception:
                    log.exception("tick of %s failed", type(ext).__name__)

    def auto_create_topics(self, names: list[str]) -> dict[str, errors.KafkaError | None]:
        """The auto-creation entry point (Kafka's auto.create.topics.enable) for Metadata and Produce requests
        naming unknown topics, from the gRPC Metadata service and the Kafka listener alike. Creates the
        missing ones with num.partitions and default.replication.factor; per missing topic None (created)
        or the error (UNKNOWN_TOPIC_OR_PARTITION when auto.create.topics.enable=false). Existing topics
        are left out."""
        if not self.config.auto_create_topics_enable:
            with self.lock:
                missing = [n for n in dict.fromkeys(names) if n not in self.state.topics]
            return {n: errors.UnknownTopicOrPartitionError(f"Topic '{n}' does not exist and "
                                                           f"auto.create.topics.enable=false") for n in missing}
        return self.mutate(lambda s, now: s.auto_create_topics(list(names)))

    def unknown_partitions(self, partitions) -> set[tuple[str, int]]:
        """The partitions, of (topic, partition)s, that do not exist: the group and transaction coordinators
        answer them UNKNOWN_TOPIC_OR_PARTITION (OffsetCommit, TxnOffsetCommit, AddPartitionsToTxn)."""
        with self.lock:
            return self.state.unknown_partitions(partitions)

    def metadata(self, topics=(), include_internal=True, allow_auto_topic_creation=False) -> mpb.MetadataResponse:
        if allow_auto_topic_creation and topics:
            self.auto_create_topics(list(topics))
        with self.lock:
            return self._metadata_locked(topics, include_internal)

    def _metadata_locked(self, topics=(), include_internal=True) -> mpb.MetadataResponse:
        s = self.state
        resp = mpb.MetadataResponse(metadata_epoch=s.metadata_epoch, controller=f"{self.host}:{self.port}",
                                    controller_agent=self.agent, cluster_id=self.cluster_id,
                                    controller_kafka_port=self.kafka_port)
        for b in s.brokers.values():
            resp.brokers.add(node_id=b.broker_id, host=b.host, port=b.port, agent=b.agent, fenced=b.fenced,
                             broker_epoch=b.broker_epoch, kafka_port=b.kafka_port)
        names = list(topics) if topics else sorted(s.topics)
        for name in names:
            t = s.topics.get(name)
            if t is None:
                resp.topics.add(name=name, error_code=errors.UnknownTopicOrPartitionError.code)
                continue
            internal = name.startswith("__")
            if internal and not include_internal and not topics:
                continue
            tm = resp.topics.add(name=name, internal=internal)
            tm.configs.update(t.configs)
            tm.partitions.extend(partition_pb(p) for p in t.partitions)
        return resp

    def watch(self, known_epoch: int, max_wait_ms: int) -> mpb.MetadataResponse:
        deadline = self.clock.monotonic_ms() + watch_max_wait_ms(self.config, max_wait_ms)
        with self.lock:
            while self.state.metadata_epoch <= known_epoch and not self._stop.is_set():
                left = deadline - self.clock.monotonic_ms()
                if left <= 0:
                    break
                self.changed.wait(min(left, 500) / 1000.0)
            return self._metadata_locked()

    def start(self) -> None:
        """Called once the gRPC server serves (node.main): brokers can heartbeat from here on."""
        self.mutate(lambda s, now: s.start_sessions(now))
        threading.Thread(target=self.run_ticks, name="controller-tick", daemon=True).start()
        for ext in self.extensions:
            ext.start()

    def stop(self) -> None:
        self._stop.set()
        with self.lock:
            self.changed.notify_all()
        for ext in self.extensions:
            ext.stop()
        self.pool.close()
        self.store.close()

    def register(self, server: grpc.Server) -> None:
        svc = ControllerServicer(self)
        mgrpc.add_MetadataServicer_to_server(svc, server)
        mgrpc.add_ControllerServicer_to_server(svc, server)
        for ext in self.extensions:
            ext.register(server)


def _err(e: errors.KafkaError) -> dict:
    return {"error_code": e.code, "error_message": str(e)}


class ControllerServicer(mgrpc.MetadataServicer, mgrpc.ControllerServicer):
    def __init__(self, node: Coordinator):
        self.node = node

    def GetMetadata(self, request, context):
        return self.node.metadata(list(request.topics), request.include_internal,
                                  request.allow_auto_topic_creation)

    def WatchMetadata(self, request, context):
        return self.node.watch(request.known_epoch, request.max_wait_ms)

    def RegisterBroker(self, request, context):
        epoch = self.node.mutate(lambda s, now: s.register_broker(
            request.broker_id, request.host, request.port, request.agent, now, request.kafka_port))
        return mpb.RegisterBrokerResponse(broker_epoch=epoch)

    def BrokerHeartbeat(self, request, context):
        try:
            self.node.mutate(lambda s, now: s.heartbeat(request.broker_id, request.broker_epoch, now))
        except errors.KafkaError as e:
            return mpb.BrokerHeartbeatResponse(fenced=True, **_err(e))
        return mpb.BrokerHeartbeatResponse(metadata_epoch=self.node.state.metadata_epoch)

    def CreateTopics(self, request, context):
        resp = mpb.CreateTopicsResponse()
        for t in request.topics:
            try:
                self.node.mutate(lambda s, now, t=t: s.create_topic(
                    t.name, t.num_partitions, t.replication_factor, dict(t.configs), request.validate_only))
                resp.results.add(name=t.name)
            except errors.KafkaError as e:
                resp.results.add(name=t.name, **_err(e))
        return resp

    def DeleteTopics(self, request, context):
        resp = mpb.DeleteTopicsResponse()
        for name in request.names:
            try:
                self.node.mutate(lambda s, now, name=name: s.delete_topic(name))
                resp.results.add(name=name)
            except errors.KafkaError as e:
                resp.results.add(name=name, **_err(e))
        return resp

    def AlterPartition(self, request, context):
        try:
            p = self.node.mutate(lambda s, now: s.alter_partition(
                request.broker_id, request.broker_epoch, request.topic, request.partition,
                request.leader_epoch, request.partition_epoch, list(request.new_isr)))
        except errors.KafkaError as e:
            t = self.node.state.topics.get(request.topic)
            state = None
            if t is not None and request.partition < len(t.partitions):
                state = partition_pb(t.partitions[request.partition])
            return mpb.AlterPartitionResponse(state=state, **_err(e))
        return mpb.AlterPartitionResponse(state=partition_pb(p))
