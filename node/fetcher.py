"""Follower replication: one fetcher thread per leader broker, as Kafka's ReplicaFetcherThread.

Each thread long-polls its leader with one Fetch for all the partitions it
follows there. A partition added with a new leader epoch first asks the
leader for the end offset of its own latest epoch (OffsetForLeaderEpoch)
and truncates to where the histories diverge, then fetches.
"""
from __future__ import annotations

import logging
import threading

import grpc

from client.common import errors
from client.common.network import transport_error
from client.common.pb import broker_pb2 as bpb
from client.common.pb import broker_pb2_grpc as bgrpc

log = logging.getLogger(__name__)


class _Fetched:
    __slots__ = ("replica", "leader_epoch", "needs_truncation")

    def __init__(self, replica, leader_epoch):
        self.replica = replica
        self.leader_epoch = leader_epoch
        self.needs_truncation = True


class FetcherThread:
    def __init__(self, broker, leader_id: int, address: str):
        self.broker = broker
        self.leader_id = leader_id
        self.address = address
        self.parts: dict[tuple[str, int], _Fetched] = {}  # guarded by self.lock
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name=f"fetcher-{leader_id}", daemon=True)

    def start(self) -> FetcherThread:
        self.thread.start()
        return self

    def stub(self):
        return bgrpc.BrokerStub(self.broker.pool.get(self.address))

    def run(self) -> None:
        backoff = self.broker.config.replica_fetch_backoff_ms / 1000.0
        while not self.stopped.is_set() and not self.broker._stop.is_set():
            with self.lock:
                parts = list(self.parts.values())
            if not parts:
                self.stopped.wait(0.05)
                continue
            try:
                for f in parts:
                    if f.needs_truncation:
                        self._truncate(f)
                self._fetch_once([f for f in parts if not f.needs_truncation])
            except grpc.RpcError as e:
                log.debug("fetch from broker %d failed: %s", self.leader_id, transport_error(e))
                self.stopped.wait(min(backoff, 0.2))
            except Exception:
                log.exception("fetcher for broker %d", self.leader_id)
                self.stopped.wait(backoff)

    def _truncate(self, f: _Fetched) -> None:
        r = self.broker.replicas.get((f.replica.topic, f.replica.partition))
        if r is None:
            return
        with r.lock:
            latest = r.model.leader_epoch_cache.latest_epoch
            leo = r.model.log_end_offset
            hw = r.model.high_watermark
        if latest is None or latest < 0 or leo == 0:
            # No epochs to compare: keep only what was committed.
            if leo == 0 or hw >= leo or self.broker.truncate(r, hw, f.leader_epoch):
                f.needs_truncation = False
            return
        resp = self.stub().OffsetForLeaderEpoch(bpb.OffsetForLeaderEpochRequest(
            replica_id=self.broker.broker_id,
            partitions=[bpb.EpochPartition(topic=r.topic, partition=r.partition, leader_epoch=latest,
                                           current_leader_epoch=f.leader_epoch)]), timeout=5)
        p = resp.partitions[0]
        if p.error_code:
            err = errors.for_code(p.error_code)
            log.debug("OffsetForLeaderEpoch %s-%d: %s", r.topic, r.partition, err)
            self.stopped.wait(0.1)
            return
        # The answer is for f.leader_epoch: the broker applies it only if the replica still
        # follows at that epoch (it may have become leader while we waited).
        state = self.broker.truncate_to_leader_epoch_end(r, f.leader_epoch, (p.leader_epoch, p.end_offset))
        if state is None:
            return  # stale: the role changed, and with it this partition's fetch state
        # Not completed (KIP-279): ask again with our now lower latest epoch.
        f.needs_truncation = not state.truncation_completed

    def _fetch_once(self, parts: list[_Fetched]) -> None:
        if not parts:
            self.stopped.wait(0.05)
            return
        b = self.broker
        req = bpb.FetchRequest(replica_id=b.broker_id, replica_epoch=b.broker_epoch,
                               max_wait_ms=b.config.replica_fetch_wait_max_ms, min_bytes=1,
                               max_bytes=b.config.replica_fetch_max_bytes)
        for f in parts:
            with f.replica.lock:
                leo = f.replica.model.log_end_offset
            req.partitions.add(topic=f.replica.topic, partition=f.replica.partition, fetch_offset=leo,
                               partition_max_bytes=b.config.replica_fetch_max_bytes,
                               current_leader_epoch=f.leader_epoch)
        resp = self.stub().Fetch(req, timeout=b.config.replica_fetch_wait_max_ms / 1000.0 + 5)
        by_key = {(f.replica.topic, f.replica.partition): f for f in parts}
        if resp.partitions and all(p.error_code for p in resp.partitions):
            # Errors answer at once (e.g. STALE_BROKER_EPOCH until the leader sees our registration):
            # back off instead of spinning.
            self.stopped.wait(min(b.config.replica_fetch_backoff_ms / 1000.0, 0.2))
        for p in resp.partitions:
            f = by_key.get((p.topic, p.partition))
            if f is None:
                continue
            if p.error_code:
                err = errors.for_code(p.error_code)
                if isinstance(err, errors.OffsetOutOfRangeError):
                    f.needs_truncation = True
                log.debug("replica fetch %s-%d from %d: %s", p.topic, p.partition, self.leader_id, err)
                continue
            b.append_as_follower(f.replica, p.records, p.high_watermark, f.leader_epoch)

    def add(self, replica, leader_epoch: int) -> None:
        with self.lock:
            self.parts[(replica.topic, replica.partition)] = _Fetched(replica, leader_epoch)

    def remove(self, replica) -> bool:
        with self.lock:
            return self.parts.pop((replica.topic, replica.partition), None) is not None

    def has(self, replica) -> bool:
        with self.lock:
            return (replica.topic, replica.partition) in self.parts


class FetcherManager:
    def __init__(self, broker):
        self.broker = broker
        self.threads: dict[tuple[int, str], FetcherThread] = {}
        self.lock = threading.Lock()

    def add(self, replica, leader_id: int, address: str, leader_epoch: int) -> None:
        with self.lock:
            t = self.threads.get((leader_id, address))
            if t is None:
                t = self.threads[(leader_id, address)] = FetcherThread(self.broker, leader_id, address).start()
        t.add(replica, leader_epoch)

    def remove(self, replica) -> None:
        with self.lock:
            threads = list(self.threads.values())
        for t in threads:
            t.remove(replica)

    def has(self, replica) -> bool:
        with self.lock:
            return any(t.has(replica) for t in self.threads.values())

    def shutdown(self) -> None:
        with self.lock:
            for t in self.threads.values():
                t.stopped.set()
