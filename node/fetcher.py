"""Follower replication: one fetcher thread per leader broker, as Kafka's ReplicaFetcherThread.

Each thread keeps one long-lived `ReplicaFetch` stream to its leader (a fetch session: the leader
remembers the partitions and offsets, see node/fetch_session.py) and talks over it in lock step: a
request, the leader's answer once something is new (or after max_wait_ms), the appends, and at once
the next request, which reports the new log end offsets, so the leader moves its high watermark a
moment after the follower's write rather than a poll later. A request names only what changed:
partitions added or removed, and those whose log end moved or that need asking again.

A partition added with a new leader epoch first asks the leader for the end offset of its own latest
epoch (OffsetForLeaderEpoch) and truncates to where the histories diverge, then joins the session.
"""
from __future__ import annotations

import logging
import queue
import threading
import time

import grpc

from client.common import errors
from client.common.network import transport_error
from client.common.pb import broker_pb2 as bpb
from client.common.pb import broker_pb2_grpc as bgrpc

log = logging.getLogger(__name__)

STALL_GRACE_S = 5.0  # a stream silent for max_wait + this is cancelled and opened again


class _Fetched:
    __slots__ = ("ask_again", "leader_epoch", "needs_truncation", "replica", "sent_offset")

    def __init__(self, replica, leader_epoch):
        self.replica = replica
        self.leader_epoch = leader_epoch
        self.needs_truncation = True
        self.sent_offset = None  # the fetch offset the leader's session holds; None: not in it
        self.ask_again = False  # name it in the next request even if its log end did not move


class FetcherThread:
    def __init__(self, broker, leader_id: int, address: str):
        self.broker = broker
        self.leader_id = leader_id
        self.address = address
        self.parts: dict[tuple[str, int], _Fetched] = {}  # guarded by self.lock
        # Partitions the next request must reconsider (added, removed, answered, to truncate): a
        # round's work follows what changed, not how many partitions the thread follows.
        self.pending: set[tuple[str, int]] = set()  # guarded by self.lock
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.changed = threading.Event()  # a partition was added (wakes an idle thread)
        self.call = None  # the open stream, cancelled by stop() and the stall watchdog
        # A full request every half replica.lag.time.max.ms (before a missed change could shrink the ISR).
        self.full_request_s = max(broker.config.replica_lag_time_max_ms / 2000.0, 0.2)
        self.last_answer = time.monotonic()  # of the open stream; read by the watchdog
        self.thread = threading.Thread(target=self.run, name=f"fetcher-{leader_id}", daemon=True)

    def start(self) -> FetcherThread:
        self.thread.start()
        return self

    def stub(self):
        return bgrpc.BrokerStub(self.broker.pool.get(self.address))

    def stop(self) -> None:
        self.stopped.set()
        self.changed.set()
        call = self.call
        if call is not None:
            call.cancel()

    def stalled(self, now: float) -> bool:
        wait_s = self.broker.config.replica_fetch_wait_max_ms / 1000.0
        return self.call is not None and now - self.last_answer > wait_s + STALL_GRACE_S

    def run(self) -> None:
        backoff = self.broker.config.replica_fetch_backoff_ms / 1000.0
        while not self.stopped.is_set() and not self.broker._stop.is_set():
            with self.lock:
                empty = not self.parts
                self.changed.clear()
            if empty:
                self.changed.wait(1.0)
                continue
            try:
                self._stream()
            except grpc.RpcError as e:
                log.debug("fetch stream from broker %d failed: %s", self.leader_id, transport_error(e))
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

    def next_request(self, session: dict, full: bool = False) -> bpb.ReplicaFetchRequest:
        """What the leader's session must learn: partitions gone, partitions new or whose log end moved
        (or that need asking again). `session` (key -> _Fetched) is the leader's view; updated here.
        Partitions still to truncate stay out of the session (and pending) until they are done."""
        b = self.broker
        req = bpb.ReplicaFetchRequest(replica_id=b.broker_id, replica_epoch=b.broker_epoch,
                                      max_wait_ms=b.config.replica_fetch_wait_max_ms,
                                      max_bytes=b.config.replica_fetch_max_bytes)
        with self.lock:
            keys, self.pending = self.pending, set()
            if full:
                keys |= set(self.parts)
            parts = {k: self.parts.get(k) for k in keys}
        keep = set()
        for key, f in parts.items():
            if key in session and (session[key] is not f or f.needs_truncation):
                req.forgotten.add(topic=key[0], partition=key[1])
                session.pop(key).sent_offset = None
            if f is None:
                continue
            if f.needs_truncation:
                keep.add(key)
                continue
            with f.replica.lock:
                leo = f.replica.model.log_end_offset
            if leo != f.sent_offset or f.ask_again or key not in session or full:
                req.partitions.add(topic=key[0], partition=key[1], fetch_offset=leo,
                                   partition_max_bytes=b.config.replica_fetch_max_bytes,
                                   current_leader_epoch=f.leader_epoch)
                f.sent_offset, f.ask_again = leo, False
                session[key] = f
        if keep:
            with self.lock:
                self.pending |= keep
        return req

    def on_answer(self, resp, session: dict) -> bool:
        """Applies one answer; True when every partition in it had an error (the caller backs off;
        one partition's error must not hold up the others)."""
        b = self.broker
        failed = bool(resp.partitions)
        if resp.partitions:
            with self.lock:
                self.pending.update((p.topic, p.partition) for p in resp.partitions)
        for p in resp.partitions:
            f = session.get((p.topic, p.partition))
            if f is None:
                continue
            if p.error_code:
                err = errors.for_code(p.error_code)
                if isinstance(err, errors.OffsetOutOfRangeError):
                    f.needs_truncation = True
                log.debug("replica fetch %s-%d from %d: %s", p.topic, p.partition, self.leader_id, err)
                f.ask_again = True
                continue
            failed = False
            b.append_as_follower(f.replica, p.records, p.high_watermark, f.leader_epoch)
            if p.records:
                with f.replica.lock:
                    moved = f.replica.model.log_end_offset != f.sent_offset
                f.ask_again = not moved  # records that did not extend the log: ask again
        return failed

    def _stream(self) -> None:
        """One stream's life: until the leader fails it, the stall watchdog or stop() cancels it."""
        backoff = min(self.broker.config.replica_fetch_backoff_ms / 1000.0, 0.2)
        requests: queue.SimpleQueue = queue.SimpleQueue()
        session: dict = {}
        with self.lock:
            self.pending = set(self.parts)  # a new stream: the leader's session starts empty
        for f in self._parts():
            f.sent_offset, f.ask_again = None, False
        self._truncate_pending()
        requests.put(self.next_request(session))
        self.last_answer = last_full = time.monotonic()
        call = self.call = self.stub().ReplicaFetch(iter(requests.get, None))
        try:
            for resp in call:
                self.last_answer = time.monotonic()
                failed = self.on_answer(resp, session)
                if self.stopped.is_set() or self.broker._stop.is_set():
                    return
                if failed:
                    # Errors answer at once (e.g. STALE_BROKER_EPOCH until the leader sees our
                    # registration): back off instead of spinning.
                    self.stopped.wait(backoff)
                self._truncate_pending()
                # Now and then every partition is named again with its log end (Kafka's full fetch
                # request): the leader re-checks each against its session, so a change it missed
                # cannot hold a partition up for longer than this.
                full = self.last_answer - last_full >= self.full_request_s
                if full:
                    last_full = self.last_answer
                requests.put(self.next_request(session, full=full))
        finally:
            self.call = None
            requests.put(None)
            call.cancel()

    def _parts(self) -> list[_Fetched]:
        with self.lock:
            return list(self.parts.values())

    def _truncate_pending(self) -> None:
        with self.lock:
            todo = [f for k in self.pending if (f := self.parts.get(k)) is not None and f.needs_truncation]
        for f in todo:
            self._truncate(f)

    def add(self, replica, leader_epoch: int) -> None:
        key = (replica.topic, replica.partition)
        with self.lock:
            self.parts[key] = _Fetched(replica, leader_epoch)
            self.pending.add(key)
        self.changed.set()

    def remove(self, replica) -> bool:
        key = (replica.topic, replica.partition)
        with self.lock:
            self.pending.add(key)
            return self.parts.pop(key, None) is not None

    def has(self, replica) -> bool:
        with self.lock:
            return (replica.topic, replica.partition) in self.parts


class FetcherManager:
    def __init__(self, broker):
        self.broker = broker
        self.threads: dict[tuple[int, str], FetcherThread] = {}
        self.lock = threading.Lock()
        self._watchdog: threading.Thread | None = None

    def add(self, replica, leader_id: int, address: str, leader_epoch: int) -> None:
        with self.lock:
            t = self.threads.get((leader_id, address))
            if t is None:
                t = self.threads[(leader_id, address)] = FetcherThread(self.broker, leader_id, address).start()
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="fetcher-watchdog", daemon=True)
                self._watchdog.start()
        t.add(replica, leader_epoch)

    def _watch(self) -> None:
        """A leader that stops answering (paused, or its replies black-holed) leaves the stream
        open without an error: cancel it, so the thread opens a new one."""
        while not self.broker._stop.wait(1.0):
            now = time.monotonic()
            with self.lock:
                threads = list(self.threads.values())
            for t in threads:
                call = t.call
                if call is not None and t.stalled(now):
                    log.info("Replica fetch stream to broker %d stalled; opening a new one", t.leader_id)
                    call.cancel()

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
                t.stop()
