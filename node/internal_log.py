"""Internal replicated topics (`__consumer_offsets`, `__transaction_state`) written by the coordinator.

The coordinator writes its group and transaction state as keyed records
with acks=all to a replicated topic, like Kafka, and rebuilds that state by
reading the topic back after a restart. Adapter only: it knows the wire,
not what the records mean.
"""
from __future__ import annotations

import logging
import time

import grpc

from client.common import errors, records
from client.common.network import transport_error
from client.common.pb import broker_pb2 as bpb
from client.common.pb import broker_pb2_grpc as bgrpc

log = logging.getLogger(__name__)


class InternalTopic:
    def __init__(self, node, topic: str, partitions: int, replication_factor: int, min_isr: int):
        self.node = node  # the Coordinator: its controller state and channel pool
        self.topic = topic
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.min_isr = min_isr

    def ensure(self) -> bool:
        """Creates the topic once brokers are up; True when every partition has a leader."""
        st = self.node.state
        with self.node.lock:
            t = st.topics.get(self.topic)
            if t is None:
                live = len(st.live_brokers())
                if live == 0:
                    return False
                rf = min(self.replication_factor, live)
                if live < self.replication_factor and time.monotonic() - self.node.started_at < 5:
                    return False  # give every broker a moment to register first
                st.create_topic(self.topic, self.partitions, rf,
                                {"min.insync.replicas": str(min(self.min_isr, rf)),
                                 "cleanup.policy": "compact"})
                self.node._commit()
                return False
            return all(p.leader >= 0 for p in t.partitions)

    def partition_for(self, key: str) -> int:
        from client.common.murmur2 import default_partition
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
