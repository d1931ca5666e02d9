"""Prometheus metrics of a node, with the names Kafka users query through the JMX exporter.

Hot paths only bump counters (a dict lookup and a locked add). Every gauge is
computed when Prometheus scrapes, by a collector that reads the driver's state:
nothing is kept up to date between scrapes. The list with meanings is
docs/metrics.md.
"""
from __future__ import annotations

import logging
import os
import time

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

# Request times in ms: a tiny unary call is well under 1 ms, a long-poll fetch waits up to its max wait.
REQUEST_BUCKETS_MS = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)

try:  # `_created` series only double what a scrape shows; Kafka's exporters have none.
    from prometheus_client import disable_created_metrics
    disable_created_metrics()
except ImportError:  # pragma: no cover - older prometheus-client
    pass


def request_name(method: str, request=None) -> str:
    """Kafka's RequestMetrics `request` label: the RPC name, a fetch split into FetchConsumer / FetchFollower."""
    name = method.rsplit("/", 1)[-1]
    if name == "Fetch":
        return "FetchFollower" if getattr(request, "replica_id", -1) >= 0 else "FetchConsumer"
    return name


class NodeMetrics:
    """One node's registry (its own, so several in-process nodes in tests do not mix) and HTTP endpoint."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.request_time = Histogram(
            "kafka_network_requestmetrics_totaltimems", "Time to serve a request, from receipt to reply, in ms",
            ["request"], buckets=REQUEST_BUCKETS_MS, registry=self.registry)
        self._request_children: dict[str, object] = {}
        self.http_server = None
        self.port = 0

    def observe_request(self, name: str, ms: float) -> None:
        child = self._request_children.get(name)
        if child is None:
            child = self._request_children.setdefault(name, self.request_time.labels(name))
        child.observe(ms)

    def serve(self, host: str, port: int, data_dir: str | None = None) -> int:
        """Serves /metrics on host:port (0: a free port); returns the bound port, also written to
        `<data_dir>/metrics_port` so the agent can pin it for restarts."""
        self.http_server, _ = start_http_server(port, addr=host, registry=self.registry)
        self.port = self.http_server.server_port
        if data_dir is not None:
            with open(os.path.join(data_dir, "metrics_port"), "w") as f:
                f.write(str(self.port))
        return self.port

    def close(self) -> None:
        if self.http_server is not None:
            self.http_server.shutdown()
            self.http_server.server_close()
            self.http_server = None

    def server_interceptor(self) -> grpc.ServerInterceptor:
        return _RequestTimer(self)


class _RequestTimer(grpc.ServerInterceptor):
    """Times every unary call (outermost: fault delays count, as they would on a real network)."""

    def __init__(self, metrics: NodeMetrics):
        self.metrics = metrics

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner, method, observe = handler.unary_unary, details.method, self.metrics.observe_request

        def timed(request, context):
            t0 = time.perf_counter()
            try:
                return inner(request, context)
            finally:
                observe(request_name(method, request), (time.perf_counter() - t0) * 1000.0)

        return grpc.unary_unary_rpc_method_handler(timed, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


class _TopicCounters:
    __slots__ = ("bytes_in", "bytes_out", "messages_in")

    def __init__(self, m: BrokerMetrics, topic: str):
        self.messages_in = m.messages_in.labels(topic)
        self.bytes_in = m.bytes_in.labels(topic)
        self.bytes_out = m.bytes_out.labels(topic)


class BrokerMetrics(NodeMetrics):
    """A broker's: BrokerTopicMetrics counters bumped by the produce / fetch paths, ReplicaManager
    gauges read from the replicas at scrape time."""

    def __init__(self, broker) -> None:
        super().__init__()
        r = self.registry
        self.messages_in = Counter("kafka_server_brokertopicmetrics_messagesin",
                                   "Records appended as leader", ["topic"], registry=r)
        self.bytes_in = Counter("kafka_server_brokertopicmetrics_bytesin",
                                "Record batch bytes appended as leader", ["topic"], registry=r)
        self.bytes_out = Counter("kafka_server_brokertopicmetrics_bytesout",
                                 "Record batch bytes sent to consumers (not to followers)", ["topic"], registry=r)
        self.isr_shrinks = Counter("kafka_server_replicamanager_isrshrinks",
                                   "ISR shrinks this broker proposed as leader and the controller committed",
                                   registry=r)
        self.isr_expands = Counter("kafka_server_replicamanager_isrexpands",
                                   "ISR expansions this broker proposed as leader and the controller committed",
                                   registry=r)
        self._topics: dict[str, _TopicCounters] = {}
        r.register(_ReplicaManagerCollector(broker))

    def _topic(self, topic: str) -> _TopicCounters:
        c = self._topics.get(topic)
        if c is None:
            c = self._topics.setdefault(topic, _TopicCounters(self, topic))
        return c

    def on_append(self, topic: str, records: int, size: int) -> None:
        c = self._topic(topic)
        c.messages_in.inc(records)
        c.bytes_in.inc(size)

    def on_consumer_fetch(self, topic: str, size: int) -> None:
        if size:
            self._topic(topic).bytes_out.inc(size)

    def on_isr_change(self, expanded: bool) -> None:
        (self.isr_expands if expanded else self.isr_shrinks).inc()


class _ReplicaManagerCollector:
    """Reads the replicas without their locks: each value is one attribute read, and a scrape
    racing a role change is off by that change only, as a JMX read of Kafka's gauges is."""

    def __init__(self, broker):
        self.broker = broker

    def collect(self):
        b = self.broker
        partitions = GaugeMetricFamily("kafka_server_replicamanager_partitioncount",
                                       "Partition replicas on this broker")
        leaders = GaugeMetricFamily("kafka_server_replicamanager_leadercount",
                                    "Partitions this broker leads")
        urp = GaugeMetricFamily("kafka_server_replicamanager_underreplicatedpartitions",
                                "Partitions this broker leads whose ISR is smaller than the replica set")
        under_min = GaugeMetricFamily("kafka_server_replicamanager_underminisrpartitioncount",
                                      "Partitions this broker leads whose ISR is below min.insync.replicas")
        leo = GaugeMetricFamily("kafka_log_log_logendoffset", "Log end offset of each replica",
                                labels=["topic", "partition"])
        start = GaugeMetricFamily("kafka_log_log_logstartoffset", "Log start offset of each replica",
                                  labels=["topic", "partition"])
        hw = GaugeMetricFamily("kafka_cluster_partition_highwatermark",
                               "High watermark of each replica (a follower's lags the leader's)",
                               labels=["topic", "partition"])
        n = n_leaders = n_urp = n_under_min = 0
        from client.common.config import topic_config
        for r in list(b.replicas.values()):
            if not r.known:
                continue
            m = r.model
            n += 1
            labels = [r.topic, str(r.partition)]
            leo.add_metric(labels, m.log_end_offset)
            start.add_metric(labels, m.log_start_offset)
            hw.add_metric(labels, m.high_watermark)
            if m.is_leader:
                n_leaders += 1
                isr = len(m.isr)
                if isr < len(m.replicas):
                    n_urp += 1
                if isr < topic_config(r.configs, "min.insync.replicas", b.config):
                    n_under_min += 1
        partitions.add_metric([], n)
        leaders.add_metric([], n_leaders)
        urp.add_metric([], n_urp)
        under_min.add_metric([], n_under_min)
        yield from (partitions, leaders, urp, under_min, leo, start, hw)
        yield from controller_families(active=False)


def controller_families(active: bool, offline: int = 0, partitions: int = 0, brokers: int = 0,
                        fenced: int = 0):
    """KafkaController gauges: every node reports them, only the active controller non-zero (as in Kafka)."""
    for name, doc, value in (
            ("activecontrollercount", "1 on the node that is the active controller, else 0", int(active)),
            ("offlinepartitionscount", "Partitions without a leader", offline),
            ("globalpartitioncount", "Partitions in the cluster", partitions),
            ("activebrokercount", "Registered brokers that are not fenced", brokers),
            ("fencedbrokercount", "Registered brokers that are fenced", fenced)):
        g = GaugeMetricFamily(f"kafka_controller_kafkacontroller_{name}", doc)
        g.add_metric([], value)
        yield g


class CoordinatorMetrics(NodeMetrics):
    """The coordinator's: KafkaController gauges and consumer-group lag, both read at scrape time."""

    def __init__(self, coordinator) -> None:
        super().__init__()
        self.registry.register(_ControllerCollector(coordinator))
        self.registry.register(ConsumerLagCollector(coordinator))


class _ControllerCollector:
    def __init__(self, coordinator):
        self.node = coordinator

    def collect(self):
        with self.node.lock:  # the controller's dicts change under it; a scrape holds it for one pass
            s = self.node.state
            parts = [p for t in s.topics.values() for p in t.partitions]
            fenced = sum(1 for b in s.brokers.values() if b.fenced)
            n_brokers = len(s.brokers)
        offline = sum(1 for p in parts if p.leader < 0)
        yield from controller_families(active=True, offline=offline, partitions=len(parts),
                                       brokers=n_brokers - fenced, fenced=fenced)


LAG_TIMEOUT_S = 1.0  # per scrape: a partitioned leader costs one timeout, not a hung scrape


class ConsumerLagCollector:
    """kafka_consumergroup_lag as the common lag exporters (kafka_exporter) name it: a group's
    committed offset against the partition's high watermark, asked of each leader at scrape time.
    Partitions whose leader does not answer are left out of that scrape."""

    def __init__(self, coordinator):
        self.node = coordinator

    def _committed(self) -> dict[str, dict[tuple[str, int], int]]:
        from node.group_coordinator import GroupCoordinator
        out: dict[str, dict[tuple[str, int], int]] = {}
        for ext in self.node.extensions:
            if isinstance(ext, GroupCoordinator):
                with ext.lock:
                    for gid, g in ext.groups.items():
                        offs = {(tp[0], tp[1]): om.offset for tp, om in g.committed().items() if om is not None}
                        if offs:
                            out[gid] = offs
        return out

    def _high_watermarks(self, tps: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
        from client.common.pb import broker_pb2 as bpb
        from client.common.pb import broker_pb2_grpc as bgrpc
        with self.node.lock:
            s = self.node.state
            by_leader: dict[int, list[tuple[str, int]]] = {}
            for topic, partition in tps:
                t = s.topics.get(topic)
                if t is None or partition >= len(t.partitions) or t.partitions[partition].leader < 0:
                    continue
                by_leader.setdefault(t.partitions[partition].leader, []).append((topic, partition))
            addrs = {bid: f"{b.host}:{b.port}" for bid, b in s.brokers.items()}
        calls = []
        for leader, parts in by_leader.items():
            if leader not in addrs:
                continue
            req = bpb.ListOffsetsRequest(partitions=[bpb.ListOffsetsPartition(topic=t, partition=p, timestamp=-1)
                                                     for t, p in parts])
            calls.append(bgrpc.BrokerStub(self.node.pool.get(addrs[leader])).ListOffsets.future(
                req, timeout=LAG_TIMEOUT_S))
        hws = {}
        for call in calls:
            try:
                for p in call.result().partitions:
                    if not p.error_code:
                        hws[(p.topic, p.partition)] = p.offset
            except grpc.RpcError:
                continue
        return hws

    def collect(self):
        lag = GaugeMetricFamily("kafka_consumergroup_lag",
                                "High watermark minus the group's committed offset",
                                labels=["consumergroup", "topic", "partition"])
        current = GaugeMetricFamily("kafka_consumergroup_current_offset", "The group's committed offset",
                                    labels=["consumergroup", "topic", "partition"])
        committed = self._committed()
        hws = self._high_watermarks({tp for offs in committed.values() for tp in offs}) if committed else {}
        for gid, offs in sorted(committed.items()):
            for (topic, partition), offset in sorted(offs.items()):
                labels = [gid, topic, str(partition)]
                current.add_metric(labels, offset)
                if (topic, partition) in hws:
                    lag.add_metric(labels, hws[(topic, partition)] - offset)
        yield lag
        yield current


def metrics_counter_total(text: str, name: str) -> float:
    """Sum of every sample named `name` in a Prometheus text exposition (for tools and tests)."""
    from prometheus_client.parser import text_string_to_metric_families
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                total += s.value
    return total

