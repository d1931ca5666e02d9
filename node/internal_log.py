"""Internal replicated topics (`__consumer_offsets`, `__transaction_state`) written by the coordinator.

The coordinator writes its group and transaction state as keyed records
with acks=all to a replicated topic, like Kafka, and rebuilds that state by
reading the topic back after a restart. Adapter only: it knows the wire,
not what the records mean. As in Kafka, a topic is created only once as many
brokers are alive as its replication factor asks, and with exactly that
factor; until then its coordinator answers COORDINATOR_NOT_AVAILABLE.
"""
from __future__ import annotations

import logging
import time

import grpc

from client.common import errors, records
from client.common.murmur2 import default_partition
from client.common.network import transport_error
from client.common.pb import broker_pb2 as bpb
from client.common.pb import broker_pb2_grpc as bgrpc

log = logging.getLogger(__name__)


OFFSETS_TOPIC = "__consumer_offsets"
TXN_TOPIC = "__transaction_state"
GROUP_KEY, TRANSACTION_KEY = 0, 1  # FindCoordinator key types
# Kafka's words for each internal topic and the setting that gives its replication factor.
RF_SETTING = {OFFSETS_TOPIC: ("offsets topic", "offsets.topic.replication.factor"),
              TXN_TOPIC: ("transactions state topic", "transaction.state.log.replication.factor")}
WARN_EVERY_MS = 30_000  # while a topic waits for brokers, its warning repeats this often


def not_enough_brokers(topic: str, live: int, replication_factor: int, registered: int | None = None) -> str:
    """Kafka's message (AutoTopicCreationManager) for an internal topic that waits for brokers."""
    what, key = RF_SETTING[topic]
    msg = (f"Number of alive brokers '{live}' does not meet the required replication factor "
           f"'{replication_factor}' for the {what} (configured via '{key}'). This error can be ignored if "
           f"the cluster is starting up and not all brokers are up yet.")
    if registered is not None and registered < replication_factor:
        msg += (f" Only {registered} broker(s) have ever registered: start more brokers or lower {key} "
                f"(it is never created with fewer replicas).")
    return msg


def coordinator_not_available(md, key_type: int, key: str, config) -> errors.KafkaError | None:
    """FindCoordinator's error for `key` (gRPC and Kafka listener alike), from cluster metadata `md`:
    COORDINATOR_NOT_AVAILABLE (retriable) while the key's internal topic does not exist yet (fewer brokers
    alive than its replication factor) or its partition has no leader, as Kafka; None when it can serve."""
    topic = TXN_TOPIC if key_type == TRANSACTION_KEY else OFFSETS_TOPIC
    t = next((t for t in md.topics if t.name == topic and not t.error_code and t.partitions), None)
    if t is None:
        rf = (config.transaction_state_log_replication_factor if key_type == TRANSACTION_KEY
              else config.offsets_topic_replication_factor)
        live = sum(1 for b in md.brokers if not b.fenced)
        if live < rf:
            return errors.CoordinatorNotAvailableError(not_enough_brokers(topic, live, rf))
        return errors.CoordinatorNotAvailableError(f"{topic} is being created")
    partition = default_partition(key.encode(), len(t.partitions))
    p = next((p for p in t.partitions if p.partition == partition), None)
    if p is None or p.leader < 0:
        return errors.CoordinatorNotAvailableError(f"{topic}-{partition} has no leader")
    return None


class InternalTopic:
    def __init__(self, node, topic: str, partitions: int, replication_factor: int, min_isr: int):
        self.node = node  # the Coordinator: its controller state and channel pool
        self.topic = topic
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.min_isr = min_isr
        # Why the coordinator cannot serve yet (COORDINATOR_NOT_AVAILABLE), None once it can: set by
        # ensure() on the loading thread, read by request threads (one reference, swapped whole).
        self.unavailable: errors.KafkaError | None = None
        self._warned: tuple[int, int] | None = None  # (alive brokers, monotonic ms) of the last warning

    def ensure(self) -> bool:
        """Creates the topic once `replication_factor` brokers are alive, with exactly that many replicas,
        never fewer (Kafka's offsets.topic.replication.factor / transaction.state.log.replication.factor);
        an existing topic is kept as it is. True when every partition has a leader; until then
        `unavailable` says why."""
        st = self.node.state
        warning = None
        with self.node.lock:
            t = st.topics.get(self.topic)
            if t is None:
                live = len(st.live_brokers())
                if live < self.replication_factor:
                    warning = not_enough_brokers(self.topic, live, self.replication_factor, len(st.brokers))
                else:
                    rf = self.replication_factor
                    t = st.create_topic(self.topic, self.partitions, rf,
                                        {"min.insync.replicas": str(min(self.min_isr, rf)),
                                         "cleanup.policy": "compact"})
                    self.node._commit()
            leaderless = [] if t is None else [p.partition for p in t.partitions if p.leader < 0]
        if warning is not None:
            self.unavailable = errors.CoordinatorNotAvailableError(warning)
            self._maybe_warn(live, warning)
            return False
        if leaderless:
            self.unavailable = errors.CoordinatorNotAvailableError(
                f"{self.topic} partition(s) {leaderless} have no leader")
            return False
        self.unavailable = None
        return True

    def _maybe_warn(self, live: int, message: str) -> None:
        """Once per change of the alive brokers, and every WARN_EVERY_MS while nothing changes."""
        now = self.node.clock.monotonic_ms()
        if self._warned is None or self._warned[0] != live or now - self._warned[1] >= WARN_EVERY_MS:
            self._warned = (live, now)
            log.warning("Cannot create %s yet: %s", self.topic, message)

    def partition_for(self, key: str) -> int:
        return default_partition(key.encode(), self.partitions)

    def _leader(self, partition: int) -> str | None:
        with self.node.lock:
            t = self.node.state.topics.get(self.topic)
            if t is None or partition >= len(t.partitions):
                return None
            leader = t.partitions[partition].leader
            b = self.node.state.brokers.get(leader)
            if b is None or b.fenced:
                return None
            return f"{b.host}:{b.port}"

    def _stub(self, addr: str):
        return bgrpc.BrokerStub(self.node.pool.get(addr))

    def append(self, partition: int, entries: list[tuple[bytes, bytes | None]], timeout_s: float = 10.0) -> int:
        """Writes entries as one batch with acks=all; returns its base offset. Retries within timeout_s."""
        now_ms = self.node.clock.wall_ms()  # the node's wall clock, which a clock fault skews
        batch = records.build_batch([(now_ms, k, v, None) for k, v in entries])
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        last: Exception | None = None
        while time.monotonic() < deadline:
            addr = self._leader(partition)
            if addr is not None:
                req = bpb.ProduceRequest(acks=-1, timeout_ms=int(max(0.5, deadline - time.monotonic()) * 1000))
                req.partitions.add(topic=self.topic, partition=partition, records=batch)
                try:
                    p = self._stub(addr).Produce(req, timeout=max(1.0, deadline - time.monotonic()) + 1).partitions[0]
                    if p.error_code == 0:
                        return p.base_offset
                    last = errors.for_code(p.error_code, p.error_message)
                    if not last.retriable:
                        raise last
                except grpc.RpcError as e:
                    last = transport_error(e, addr)
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        raise errors.CoordinatorNotAvailableError(f"could not write {self.topic}-{partition}: {last}")

    def read_all(self, partition: int, timeout_s: float = 30.0) -> list[tuple[int, bytes | None, bytes | None]]:
        """Every record up to the leader's log end, in offset order, read once the high watermark got
        there: a leader elected a moment ago (a coordinator restart fences brokers) learns that its
        last records are committed only when its followers fetch from it, so its high watermark can
        lag records that were acknowledged. Kafka's coordinators load to the log end."""
        deadline = time.monotonic() + timeout_s
        out: list = []
        offset = 0
        while time.monotonic() < deadline:
            addr = self._leader(partition)
            if addr is None:
                time.sleep(0.1)
                continue
            req = bpb.FetchRequest(replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=8 << 20)
            req.partitions.add(topic=self.topic, partition=partition, fetch_offset=offset,
                               partition_max_bytes=8 << 20, current_leader_epoch=-1)
            try:
                p = self._stub(addr).Fetch(req, timeout=10).partitions[0]
            except grpc.RpcError:
                time.sleep(0.1)
                continue
            if p.error_code:
                time.sleep(0.1)
                continue
            if not p.records:
                if offset >= p.high_watermark >= p.log_end_offset:
                    return out
                time.sleep(0.05)
                continue
            for h, raw in records.iter_batches(p.records):
                if h.is_control:
                    offset = max(offset, h.next_offset)
                    continue
                for r in records.decode_records(raw):
                    if r.offset >= offset:
                        out.append((r.offset, r.key, r.value))
                offset = max(offset, h.next_offset)
        raise errors.CoordinatorLoadInProgressError(f"could not read {self.topic}-{partition} within {timeout_s} s")
