"""The broker process: partition replicas, the produce / fetch paths, and the replica manager.

Driver over `node.replica.Partition` (the model). Per partition one lock
owns the model and the order of appends to RocksDB (an append assigns
offsets and writes the batch under that lock, as Kafka's log lock does;
nothing else does I/O under it). Waiters (acks=all produces, long-poll
fetches) wait on one broker-wide condition that every append and
high-watermark move notifies.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from client.common import errors, records
from client.common.clock import Clock, SystemClock
from client.common.config import BrokerConfig, topic_config
from client.common.network import ChannelPool, transport_error
from client.common.pb import metadata_pb2 as mpb
from client.common.pb import metadata_pb2_grpc as mgrpc
from node import limits
from node.fetcher import FetcherManager
from node.metrics import BrokerMetrics
from node.producer_state import UNCHECKED, DuplicateBatch, ProducerStateManager, Reject
from node.replica import LeaderEpochCache, OffsetTruncationState, Partition, truncation_offset
from node.store import Store

log = logging.getLogger(__name__)

LATEST, EARLIEST = -1, -2


class _AheadOfSequence(Exception):  # a signal inside append_as_leader, not an error
    """A batch waits for its predecessor; `seen_changes` is the partition's Replica.changes at the check."""

    def __init__(self, seen_changes: int):
        super().__init__()
        self.seen_changes = seen_changes


@dataclass(frozen=True, slots=True)
class AppendResult:
    base_offset: int
    last_offset: int
    log_start_offset: int
    duplicate: bool
    batch_base_offsets: list[int]
    leader_epoch: int  # the epoch the batches were appended at: acks=all waits on exactly this epoch
    log_append_time: int = -1  # the broker's wall clock stamped on the batches (LogAppendTime topics)


@dataclass(slots=True)
class PartitionProduce:
    """One partition of a produce request and, after `Broker.produce`, its outcome."""
    topic: str
    partition: int
    records: bytes
    result: AppendResult | None = None
    error: Exception | None = None


@dataclass(frozen=True, slots=True)
class FetchPartition:
    topic: str
    partition: int
    fetch_offset: int
    partition_max_bytes: int = 0
    current_leader_epoch: int = -1


@dataclass(slots=True)
class FetchedPartition:
    topic: str
    partition: int
    records: bytes = b""
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    log_end_offset: int = -1
    leader_epoch: int = -1
    aborted: list = None  # (producer_id, first_offset) pairs, read_committed only
    error: Exception | None = None


class Replica:
    """One topic-partition on this broker: the model plus what the driver needs around it."""

    def __init__(self, topic: str, partition: int, broker_id: int, store: Store):
        self.topic, self.partition = topic, partition
        self.lock = threading.RLock()
        self.model = Partition(topic, partition, broker_id)  # owned by self.lock
        self.producers = ProducerStateManager()               # owned by self.lock
        self.configs: dict[str, str] = {}
        self.store = store
        self.known = False  # metadata for it has arrived
        self.applied: tuple | None = None  # the metadata last applied to it (Broker.apply_metadata's thread)
        # acks=all produces of this partition wait here: one append must not wake every waiter
        # of every partition on the broker.
        self.hw_cond = threading.Condition(threading.Lock())
        # Bumped under hw_cond by every Broker.wake(r): a produce held for its predecessor's sequence
        # (Broker._await_predecessor) waits for it to move, so no wake between its check and its wait is lost.
        self.changes = 0
        self._written: tuple = (None, None)  # (hw, epochs) last put in a WriteBatch; owned by self.lock
        self.aborted_index = None  # node.txn.AbortedTxnIndex, built lazily by TxnBroker; owned by:
        self.aborted_index_lock = threading.Lock()
        # Replica fetch sessions (node.fetch_session) to tell of every change; replaced whole, never
        # mutated, so `Broker.wake` reads it without a lock.
        self.listeners: tuple = ()
        self._listeners_lock = threading.Lock()

    def add_listener(self, session) -> None:
        with self._listeners_lock:
            if session not in self.listeners:
                self.listeners = self.listeners + (session,)

    def remove_listener(self, session) -> None:
        with self._listeners_lock:
            self.listeners = tuple(s for s in self.listeners if s is not session)

    def load(self) -> None:
        s, t, p = self.store, self.topic, self.partition
        last = s.last_batch(t, p)
        first = s.first_batch(t, p)
        leo = records.read_header(last).next_offset if last else 0
        log_start = records.read_header(first).base_offset if first else 0
        log_start = max(log_start, s.get_meta(t, p, "log_start", 0))
        hw = min(s.get_meta(t, p, "hw", 0), leo)
        cache = LeaderEpochCache.from_json(s.get_meta(t, p, "epochs", []))
        cache.truncate_from_end(leo)
        self.model = Partition(t, p, self.model.broker_id, log_start_offset=log_start, log_end_offset=leo,
                               high_watermark=hw, leader_epoch_cache=cache)
        self.producers.rebuild(records.read_header(b) for b in s.iter_batches(t, p))

    def mark_written(self, *, epochs) -> None:
        """The epoch cache `epochs` went to disk with the batches that made it."""
        self._written = (self._written[0], epochs)

    def forget_written(self) -> None:
        """A write carrying checkpoints failed: the next checkpoint writes them again."""
        self._written = (None, None)

    def checkpoint_puts(self) -> list[tuple[bytes, bytes]]:
        m = self.model
        hw, epochs = m.high_watermark, m.leader_epoch_cache.to_json()
        self._written = (hw, epochs)
        return [self.store.meta_put(self.topic, self.partition, "hw", hw),
                self.store.meta_put(self.topic, self.partition, "epochs", epochs)]

    def changed_checkpoint_puts(self) -> list[tuple[bytes, bytes]]:
        """Only what moved since the last checkpoint: on the append path the epochs rarely
        change, and two JSON encodes per append were a measurable part of it."""
        m = self.model
        hw, epochs = m.high_watermark, m.leader_epoch_cache.to_json()
        old_hw, old_epochs = self._written
        puts = []
        if hw != old_hw:
            puts.append(self.store.meta_put(self.topic, self.partition, "hw", hw))
        if epochs != old_epochs:
            puts.append(self.store.meta_put(self.topic, self.partition, "epochs", epochs))
        self._written = (hw, epochs)
        return puts


class Broker:
    def __init__(self, data_dir: str, host: str, port: int, broker_id: int, coordinator: str,
                 config: BrokerConfig, clock: Clock | None = None, agent: str = "", interceptors=()):
        self.broker_id = broker_id
        self.name = f"broker-{broker_id}"
        self.host, self.port = host, port
        self.coordinator_addr = coordinator
        self.config = config
        self.clock = clock or SystemClock()
        self.agent = agent
        self.kafka_port = 0  # set by node.main once the Kafka listener is bound
        self.store = Store(f"{data_dir}/db", sync=config.log_flush_sync)
        self.pool = ChannelPool(self.name, interceptors)
        self.replicas: dict[tuple[str, int], Replica] = {}
        self.replicas_lock = threading.Lock()
        self.data_cond = threading.Condition()  # long-poll fetches wait here; notified on append and HW moves
        # Replicas whose HW or epochs may have moved since the last checkpoint: the periodic checkpoint
        # visits only these, not every partition of the broker.
        self._checkpoint_dirty: set = set()  # guarded by:
        self._checkpoint_dirty_lock = threading.Lock()
        self._isr_watch: set = set()  # leaders the ISR check visits (see maybe_shrink_isrs); guarded by:
        self._isr_watch_lock = threading.Lock()
        self.metadata: mpb.MetadataResponse = mpb.MetadataResponse()
        self.metadata_lock = threading.Lock()
        self.broker_epochs: dict[int, int] = {}  # node id -> registered broker epoch, from metadata
        self.broker_epoch = -1
        self.registered = threading.Event()
        self._stop = threading.Event()
        self.fetchers = FetcherManager(self)
        self.isr_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="alter-isr")
        self.incarnation = uuid.uuid4().hex
        self.metrics = BrokerMetrics(self)  # served by node.main on --metrics-port
        from node.txn_broker import TxnBroker
        self.txn = TxnBroker(self)
        for t, p in self.store.partitions():
            r = Replica(t, p, broker_id, self.store)
            r.load()
            self.replicas[(t, p)] = r
        if self.replicas:
            log.info("Loaded %d partition replicas from disk", len(self.replicas))

    def wake(self, r: Replica | None = None) -> None:
        """An append, HW move or role change: wake that partition's acks=all waiters and the fetch long polls."""
        if r is not None:
            with r.hw_cond:
                r.changes += 1
                r.hw_cond.notify_all()
            with self._checkpoint_dirty_lock:
                self._checkpoint_dirty.add(r)
            with self._isr_watch_lock:
                self._isr_watch.add(r)
            for s in r.listeners:
                s.on_change((r.topic, r.partition))
        with self.data_cond:
            self.data_cond.notify_all()

    # -- lifecycle -------------------------------------------------------
    def start(self) -> None:
        for target, name in ((self._register_loop, "register"), (self._heartbeat_loop, "heartbeat"),
                             (self._metadata_loop, "metadata"), (self._isr_loop, "isr-shrink"),
                             (self._checkpoint_loop, "hw-checkpoint")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.fetchers.shutdown()
        with self.data_cond:
            self.data_cond.notify_all()
        self._checkpoint_all()
        self.isr_executor.shutdown(wait=False, cancel_futures=True)
        self.pool.close()
        self.store.close()

    def controller(self):
        return mgrpc.ControllerStub(self.pool.get(self.coordinator_addr))

    def _register_loop(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            if self.registered.is_set():
                self._stop.wait(0.2)
                continue
            try:
                resp = self.controller().RegisterBroker(mpb.RegisterBrokerRequest(
                    broker_id=self.broker_id, host=self.host, port=self.port, agent=self.agent,
                    incarnation_id=self.incarnation, kafka_port=self.kafka_port), timeout=5)
                self.broker_epoch = resp.broker_epoch
                self.registered.set()
                log.info("Registered with the controller, broker epoch %d", self.broker_epoch)
                backoff = 0.05
            except grpc.RpcError:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 1.0)

    def _heartbeat_loop(self) -> None:
        interval = self.config.broker_heartbeat_interval_ms / 1000.0
        while not self._stop.wait(interval):
            if not self.registered.is_set():
                continue
            try:
                resp = self.controller().BrokerHeartbeat(mpb.BrokerHeartbeatRequest(
                    broker_id=self.broker_id, broker_epoch=self.broker_epoch,
                    metadata_epoch=self.metadata.metadata_epoch), timeout=max(interval, 1.0))
                if resp.fenced:
                    log.info("Fenced by the controller (%s); registering again", resp.error_message)
                    self.registered.clear()
            except grpc.RpcError:
                pass

    def _metadata_loop(self) -> None:
        known = 0
        while not self._stop.is_set():
            if not self.registered.wait(0.2):
                continue
            try:
                md = self.controller().WatchMetadata(mpb.WatchMetadataRequest(
                    known_epoch=known, max_wait_ms=2000, broker_id=self.broker_id), timeout=5)
            except grpc.RpcError:
                self._stop.wait(0.1)
                continue
            if md.metadata_epoch < known:
                known = 0  # the controller restarted from an older checkpoint
            if md.metadata_epoch != known:
                known = md.metadata_epoch
                try:
                    self.apply_metadata(md)
                except Exception:
                    log.exception("applying metadata epoch %d failed", md.metadata_epoch)

    # -- metadata → replica roles -----------------------------------------
    def apply_metadata(self, md: mpb.MetadataResponse) -> None:
        with self.metadata_lock:
            self.metadata = md
            # Replica fetches are checked against these (one dict swap: readers take no lock).
            self.broker_epochs = {b.node_id: b.broker_epoch for b in md.brokers}
        now = self.clock.monotonic_ms()
        present = set()
        for t in md.topics:
            if t.error_code:
                continue
            configs_pb = sorted(t.configs.items())
            for ps in t.partitions:
                if self.broker_id not in ps.replicas:
                    continue
                key = (t.name, ps.partition)
                present.add(key)
                # Work follows what changed: a partition whose state, configs and leader address are
                # those last applied is skipped (every ISR change anywhere bumps the metadata epoch).
                seen = (ps.SerializeToString(deterministic=True), configs_pb, self.broker_address(ps.leader))
                r = self.replicas.get(key)
                if r is not None and r.applied == seen:
                    continue
                r = self._replica(t.name, ps.partition, create=True)
                r.configs = dict(t.configs)
                self._apply_partition_state(r, ps, now)
                r.applied = seen
        with self.replicas_lock:
            gone = [k for k in self.replicas if k not in present]
        topics_now = {t.name for t in md.topics}
        for key in gone:
            if key[0] not in topics_now:  # topic deleted: drop its data
                self._drop_replica(key)

    def _apply_partition_state(self, r: Replica, ps, now_ms: int) -> None:
        leader_addr = self.broker_address(ps.leader)
        with r.lock:
            m = r.model
            r.known = True
            if ps.leader == self.broker_id:
                if not m.is_leader or ps.leader_epoch > m.leader_epoch:
                    self.fetchers.remove(r)
                    m.become_leader(ps.leader_epoch, ps.partition_epoch, list(ps.isr), list(ps.replicas), now_ms)
                    log.info("Became leader of %s-%d at epoch %d, isr %s", r.topic, r.partition,
                             ps.leader_epoch, list(ps.isr))
                    self._persist_checkpoints(r)
                elif ps.partition_epoch >= m.partition_epoch:
                    m.on_isr_change_committed(list(ps.isr), ps.partition_epoch)
            elif m.is_leader or ps.leader_epoch > m.leader_epoch or ps.partition_epoch > m.partition_epoch:
                was_leader = m.is_leader
                res = m.become_follower(ps.leader, ps.leader_epoch, ps.partition_epoch, list(ps.isr),
                                        list(ps.replicas))
                if res.applied and (res.is_new_leader_epoch or was_leader):
                    log.info("Became follower of broker %d for %s-%d at epoch %d", ps.leader, r.topic,
                             r.partition, ps.leader_epoch)
                    self.fetchers.remove(r)
                    if ps.leader >= 0 and leader_addr:
                        self.fetchers.add(r, ps.leader, leader_addr, ps.leader_epoch)
            if not m.is_leader and ps.leader >= 0 and leader_addr and not self.fetchers.has(r):
                self.fetchers.add(r, ps.leader, leader_addr, ps.leader_epoch)
        self.wake(r)

    def broker_address(self, broker_id: int) -> str:
        for b in self.metadata.brokers:
            if b.node_id == broker_id:
                return f"{b.host}:{b.port}"
        return ""

    def _replica(self, topic: str, partition: int, create: bool = False) -> Replica | None:
        key = (topic, partition)
        r = self.replicas.get(key)
        if r is None and create:
            with self.replicas_lock:
                r = self.replicas.get(key)
                if r is None:
                    r = Replica(topic, partition, self.broker_id, self.store)
                    self.replicas[key] = r
        return r

    def _drop_replica(self, key) -> None:
        with self.replicas_lock:
            r = self.replicas.pop(key, None)
        if r is None:
            return
        self.fetchers.remove(r)
        with r.lock:
            self.store.delete_partition(*key)
        log.info("Deleted partition %s-%d", *key)

    def leader_replica(self, topic: str, partition: int) -> Replica:
        r = self.replicas.get((topic, partition))
        if r is None or not r.known:
            if any(t.name == topic and not t.error_code for t in self.metadata.topics):
                raise errors.NotLeaderOrFollowerError(
                    f"broker {self.broker_id} does not host {topic}-{partition}")
            raise errors.UnknownTopicOrPartitionError(f"This server does not host {topic}-{partition}")
        if not r.model.is_leader:
            raise errors.NotLeaderOrFollowerError(
                f"broker {self.broker_id} is not the leader of {topic}-{partition}")
        return r

    # -- produce ---------------------------------------------------------
    def append_as_leader(self, topic: str, partition: int, data: bytes, acks: int,
                         verification: object = UNCHECKED) -> AppendResult:
        """Validates and appends one produce payload (one or more batches), all or nothing.

        Every batch is checked first (against the request's own earlier batches too), the
        request is one RocksDB write, and only after that write succeeded do the log end, epoch
        cache and producer state move: a rejected batch or a failed write leaves nothing behind.
        A batch the idempotence window already holds is not appended again: its original offset
        is reported, and `duplicate` is set when nothing new was appended
        (DUPLICATE_SEQUENCE_NUMBER).

        `verification` (from `produce`): the guard of the transaction verification made for this
        request, or None; a transactional batch that would begin a transaction here is refused
        (INVALID_TXN_STATE) unless that guard is still current (no marker since).
        """
        r = self.leader_replica(topic, partition)
        batches = []
        pos = 0
        while pos < len(data):
            h = records.validate(data, pos)
            batches.append((h, data if h.size == len(data) else data[pos:pos + h.size]))
            pos += h.size
        if not batches:
            raise errors.InvalidRecordError("empty produce payload")
        hold_until = self.clock.monotonic_ms() + self.config.emu_produce_sequence_wait_ms
        while True:
            try:
                result = self._append_locked(r, batches, acks, verification, hold_until)
            except _AheadOfSequence as ahead:
                self._await_predecessor(r, ahead.seen_changes, hold_until)
                r = self.leader_replica(topic, partition)
                continue
            self.wake(r)
            return result

    def _append_locked(self, r: Replica, batches: list, acks: int, verification: object,
                       hold_until: int) -> AppendResult:
        """append_as_leader under r.lock. Raises _AheadOfSequence (nothing done) when a producer's first
        batch in the request is ahead of its sequence and may be held until `hold_until`."""
        topic, partition = r.topic, r.partition
        min_isr = topic_config(r.configs, "min.insync.replicas", self.config)
        now = self.clock.monotonic_ms()
        # LogAppendTime: the batches carry this broker's wall clock (which a clock fault skews).
        append_time = self.clock.wall_ms() \
            if topic_config(r.configs, "message.timestamp.type") == "LogAppendTime" else -1
        with r.lock:
            m = r.model
            if not m.is_leader:
                raise errors.NotLeaderOrFollowerError(f"broker {self.broker_id} lost leadership")
            err = m.check_append(acks, min_isr)
            if err is not None:
                raise err
            leader_epoch = m.leader_epoch
            pending = r.producers.begin_append()
            appended: list[tuple[int, int]] = []
            puts = []
            bases: list[int] = []
            base = last = -1
            duplicate = False
            n_records = n_bytes = 0
            next_offset = m.log_end_offset
            seen: set[int] = set()  # producers with an earlier batch in this request
            for h, raw in batches:
                if h.producer_id >= 0:
                    decision = pending.check_and_update(h.producer_id, h.producer_epoch, h.base_sequence,
                                                        h.last_sequence, h.is_transactional)
                    if isinstance(decision, Reject):
                        # Only a request's first batch of a producer can wait: a gap after its own earlier
                        # batches cannot be filled by another request.
                        if (h.producer_id not in seen
                                and isinstance(decision.error, errors.OutOfOrderSequenceNumberError)
                                and now < hold_until and not self._stop.is_set()
                                and r.producers.awaits_predecessor(h.producer_id, h.producer_epoch,
                                                                   h.base_sequence)):
                            raise _AheadOfSequence(r.changes)
                        raise decision.error
                    seen.add(h.producer_id)
                    if isinstance(decision, DuplicateBatch):
                        duplicate = True
                        bases.append(decision.base_offset)
                        base = decision.base_offset if base < 0 else base
                        last = max(last, decision.last_offset)
                        continue
                    if verification is not UNCHECKED and pending.needs_verification(h.producer_id,
                                                                                     h.is_transactional):
                        refused = r.producers.check_verification(h.producer_id, h.producer_epoch, verification)
                        if refused is not None:
                            raise refused.error
                offset = next_offset
                last_offset = offset + h.last_offset_delta
                if append_time >= 0:
                    raw = records.set_log_append_time(raw, append_time)
                puts.append(self.store.append_puts(topic, partition, offset,
                                                   records.set_offset_and_epoch(raw, offset, leader_epoch)))
                if h.producer_id >= 0:
                    pending.on_append(h.producer_id, h.producer_epoch, h.base_sequence, h.last_sequence,
                                      offset, last_offset, h.is_transactional)
                appended.append((offset, last_offset))
                n_records += h.records_count
                n_bytes += h.size
                bases.append(offset)
                base = offset if base < 0 else base
                last = last_offset
                next_offset = last_offset + 1
            if appended:
                self._write_then_apply(r, puts, appended, now)
                r.producers.commit_append(pending)
                self.metrics.on_append(topic, n_records, n_bytes)
            log_start = m.log_start_offset
        return AppendResult(base, last, log_start, duplicate and not appended, bases, leader_epoch, append_time)

    def _await_predecessor(self, r: Replica, seen_changes: int, hold_until: int) -> None:
        """A produce ahead of its producer's sequence waits (without r.lock) for the next append or role
        change of the partition, or until `hold_until` (emu.produce.sequence.wait.ms after it came)."""
        with r.hw_cond:
            while r.changes == seen_changes and not self._stop.is_set():
                left_ms = hold_until - self.clock.monotonic_ms()
                if left_ms <= 0:
                    return
                r.hw_cond.wait(left_ms / 1000.0)


    def produce(self, parts: list[PartitionProduce], acks: int, timeout_ms: int,
                transactional_id: str = "") -> list[PartitionProduce]:
        """One produce request (gRPC or Kafka): append each partition, then for acks=all wait until
        every appended partition is replicated or `timeout_ms` passes. Fills result / error in place.
        The timeout is clamped (emu.produce.purgatory.max.ms), batch sizes checked (message.max.bytes).
        Transactional batches are verified with the transaction coordinator first (KIP-890)."""
        timeout_ms = limits.produce_timeout_ms(self.config, timeout_ms)
        waits = []
        for p in parts:
            try:
                self._check_batch_sizes(p)
                guard = self.txn.maybe_verify(p.topic, p.partition, p.records, transactional_id)
                if guard is UNCHECKED:
                    p.result = self.append_as_leader(p.topic, p.partition, p.records, acks)
                else:
                    p.result = self.append_as_leader(p.topic, p.partition, p.records, acks, verification=guard)
                if acks == -1:
                    waits.append(p)
            except Exception as e:  # noqa: BLE001 - every failure becomes a per-partition error
                p.error = e
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000.0
        for p in waits:
            left_ms = int((deadline - time.monotonic()) * 1000)
            try:
                self.wait_for_hw(p.topic, p.partition, p.result.last_offset, max(left_ms, 0),
                                 leader_epoch=p.result.leader_epoch)
            except Exception as e:  # noqa: BLE001
                p.error = e
        return parts

    def _check_batch_sizes(self, p: PartitionProduce) -> None:
        r = self.replicas.get((p.topic, p.partition))
        limit = limits.max_message_bytes(self.config, r.configs if r is not None else {})
        size = limits.oversized_batch(p.records, limit)
        if size is not None:
            raise errors.MessageTooLargeError(
                f"a record batch of {size} bytes is larger than max.message.bytes={limit} of {p.topic}")

    def _write_then_apply(self, r: Replica, puts: list, appended: list[tuple[int, int]], now_ms: int) -> None:
        """Caller holds r.lock: one write for the request, then the model follows the log."""
        m = r.model
        puts.extend(r.changed_checkpoint_puts())
        try:
            self.store.write(puts)
        except Exception:
            r.forget_written()
            raise
        new_epoch_entry = m.leader_epoch_cache.latest_epoch != m.leader_epoch
        for offset, last_offset in appended:
            m.on_leader_append(offset, last_offset, now_ms)
        if new_epoch_entry:  # rare (the entry is made when leadership starts): persist it at once
            self.store.write(r.changed_checkpoint_puts())

    def wait_for_hw(self, topic: str, partition: int, last_offset: int, timeout_ms: int, *,
                    leader_epoch: int) -> None:
        """acks=all: block until the high watermark passes `last_offset`.

        `leader_epoch` is the one the append was made at (AppendResult.leader_epoch): if leadership
        moved since, the record may have been truncated and the offset reused by another one.
        """
        r = self.replicas.get((topic, partition))
        deadline = time.monotonic() + timeout_ms / 1000.0
        min_isr = topic_config(r.configs, "min.insync.replicas", self.config)
        with r.hw_cond:
            while True:
                m = r.model
                if not m.is_leader or m.leader_epoch != leader_epoch:
                    raise errors.NotLeaderOrFollowerError(
                        f"leadership of {topic}-{partition} changed before the write was replicated")
                done, err = m.check_enough_replicas_reach_offset(last_offset + 1, min_isr)
                if done:
                    if err is not None:
                        raise err  # replicated, but the ISR shrank below min.insync.replicas
                    return
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    raise errors.RequestTimedOutError(
                        f"{topic}-{partition}: not replicated to the ISR within {timeout_ms} ms")
                r.hw_cond.wait(min(left, 0.5))

    # -- fetch -----------------------------------------------------------
    def fetch(self, parts: list[FetchPartition], *, replica_id: int, isolation_level: int, max_wait_ms: int,
              min_bytes: int, max_bytes: int, is_active=lambda: True, replica_epoch: int = -1) -> list[FetchedPartition]:
        """One fetch request (gRPC or Kafka), a long poll: answers once `min_bytes` are readable,
        an error is found, `max_wait_ms` passes or `is_active()` turns false (the caller left).
        A follower (`replica_id` >= 0) must give its registered broker epoch as `replica_epoch`.
        The wait and sizes are clamped to this broker's ceilings (node/limits.py)."""
        lim = limits.fetch_limits(self.config, replica=replica_id >= 0, max_wait_ms=max_wait_ms, max_bytes=max_bytes)
        deadline = time.monotonic() + lim.max_wait_ms / 1000.0
        max_bytes = lim.max_bytes
        while True:
            seen = self._fetch_ends(parts, replica_id, isolation_level)  # a move during the read re-reads
            out: list[FetchedPartition] = []
            total = 0
            for p in parts:
                res = FetchedPartition(p.topic, p.partition, aborted=[])
                out.append(res)
                budget = limits.partition_budget(lim, p.partition_max_bytes, max(max_bytes - total, 0))
                if budget <= 0 and total > 0:
                    continue
                try:
                    (res.records, res.high_watermark, res.last_stable_offset, res.log_start_offset,
                     res.log_end_offset, res.leader_epoch, res.aborted) = self.read_partition(
                        p.topic, p.partition, p.fetch_offset, max(budget, 1), replica_id, isolation_level,
                        p.current_leader_epoch, replica_epoch=replica_epoch)
                    total += len(res.records)
                except Exception as e:  # noqa: BLE001
                    res.error = e
                    total += 1  # an error answers at once
            left = deadline - time.monotonic()
            if total >= max(min_bytes, 1) or left <= 0 or self._stop.is_set() or not is_active():
                return out
            # Every append and HW move anywhere notifies data_cond; re-read only when one of
            # this request's partitions moved (a wake-up is then a few int compares, not a
            # RocksDB seek per partition).
            with self.data_cond:
                while self._fetch_ends(parts, replica_id, isolation_level) == seen and not self._stop.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.data_cond.wait(min(left, 0.5))

    def _fetch_ends(self, parts, replica_id: int, isolation_level: int) -> list:
        """What a fetch could see per partition: (leader epoch, end) or None when not served here."""
        out = []
        for p in parts:
            r = self.replicas.get((p.topic, p.partition))
            m = r.model if r is not None else None
            if m is None or not m.is_leader:
                out.append(None)
            elif replica_id >= 0:
                out.append((m.leader_epoch, m.log_end_offset))
            elif isolation_level == 1:
                try:  # read without the replica lock: a torn read only costs one extra re-read
                    out.append((m.leader_epoch, self.last_stable_offset(r)))
                except RuntimeError:
                    out.append((m.leader_epoch, -1))
            else:
                out.append((m.leader_epoch, m.high_watermark))
        return out

    def offset_for_leader_epoch(self, topic: str, partition: int, current_leader_epoch: int,
                                leader_epoch: int) -> tuple[int, int]:
        """(epoch, end offset) of the largest epoch <= `leader_epoch` this leader knows (KIP-101/279)."""
        r = self.leader_replica(topic, partition)
        with r.lock:
            m = r.model
            if current_leader_epoch >= 0 and current_leader_epoch != m.leader_epoch:
                raise (errors.FencedLeaderEpochError if current_leader_epoch < m.leader_epoch
                       else errors.UnknownLeaderEpochError)(
                    f"epoch {current_leader_epoch} vs leader's {m.leader_epoch}")
            return m.leader_epoch_cache.end_offset_for(leader_epoch, m.log_end_offset)

    def _check_fetch_locked(self, r: Replica, current_leader_epoch: int, replica_id: int,
                            replica_epoch: int) -> None:
        """Caller holds r.lock: the fetcher's leader epoch, and for a follower its registration."""
        m = r.model
        if current_leader_epoch >= 0 and current_leader_epoch != m.leader_epoch:
            if current_leader_epoch < m.leader_epoch:
                raise errors.FencedLeaderEpochError(
                    f"epoch {current_leader_epoch} is older than {m.leader_epoch}")
            raise errors.UnknownLeaderEpochError(
                f"epoch {current_leader_epoch} is newer than {m.leader_epoch}")
        if replica_id >= 0:
            err = m.check_replica_fetch(replica_id, replica_epoch, self.broker_epochs.get(replica_id))
            if err is not None:
                raise err

    def on_replica_position(self, topic: str, partition: int, replica_id: int, replica_epoch: int,
                            fetch_offset: int, current_leader_epoch: int) -> bool:
        """A follower's stream reports its log end: checked as a replica fetch is, then applied at
        once (the HW moves and acks=all waiters wake before the leader reads anything for it).
        Returns whether the follower is in the committed ISR now."""
        r = self.leader_replica(topic, partition)
        with r.lock:
            self._check_fetch_locked(r, current_leader_epoch, replica_id, replica_epoch)
            m = r.model
            if fetch_offset > m.log_end_offset or fetch_offset < m.log_start_offset:
                raise errors.OffsetOutOfRangeError(
                    f"offset {fetch_offset} is out of range [{m.log_start_offset}, {m.log_end_offset}] "
                    f"for {topic}-{partition}")
        self.on_follower_fetch(r, replica_id, fetch_offset)
        return replica_id in r.model.isr

    def replica_fetch_session(self, replica_id: int):
        from node.fetch_session import ReplicaFetchSession
        return ReplicaFetchSession(self, replica_id)

    def read_partition(self, topic: str, partition: int, offset: int, max_bytes: int, replica_id: int,
                       isolation_level: int, current_leader_epoch: int, *, replica_epoch: int,
                       report: bool = True):
        """Returns (records bytes, high_watermark, lso, log_start, leo, leader_epoch, aborted).

        `replica_id` >= 0 is a follower's fetch; `replica_epoch` is then its broker epoch, which
        must be the one it is registered with (ignored for consumers, replica_id -1). `report`:
        the fetch offset is the follower's log end (a stream applied it already: False).
        """
        r = self.leader_replica(topic, partition)
        with r.lock:
            m = r.model
            self._check_fetch_locked(r, current_leader_epoch, replica_id, replica_epoch)
            hw, leo, log_start = m.high_watermark, m.log_end_offset, m.log_start_offset
            lso = self.last_stable_offset(r)
        if offset > leo or offset < log_start:
            raise errors.OffsetOutOfRangeError(
                f"offset {offset} is out of range [{log_start}, {leo}] for {topic}-{partition}")
        if replica_id >= 0:
            upto = leo
        else:
            upto = lso if isolation_level == 1 else hw
        data = b""
        if offset < upto:
            data = self.store.read(topic, partition, offset, max_bytes, upto)
        aborted = self.aborted_transactions(r, offset, upto) if isolation_level == 1 else []
        if replica_id < 0:
            self.metrics.on_consumer_fetch(topic, len(data))
        if replica_id >= 0 and report:
            self.on_follower_fetch(r, replica_id, offset)
            with r.lock:
                hw = r.model.high_watermark
        return data, hw, lso, log_start, leo, r.model.leader_epoch, aborted

    def last_stable_offset(self, r: Replica) -> int:
        """Below this every transaction is decided; transactions (issue E) narrow it."""
        first_unstable = getattr(r.producers, "first_unstable_offset", None)
        hw = r.model.high_watermark
        if callable(first_unstable):
            fu = first_unstable()
            if fu is not None:
                return min(fu, hw)
        return hw

    def aborted_transactions(self, r: Replica, start: int, upto: int) -> list:
        return self.txn.aborted_transactions(r, start, upto)

    def on_follower_fetch(self, r: Replica, follower_id: int, fetch_offset: int) -> None:
        now = self.clock.monotonic_ms()
        with r.lock:
            m = r.model
            hw_before = m.high_watermark
            decision = m.on_follower_fetch(follower_id, fetch_offset, now)
            change = decision.isr_change
            moved = m.high_watermark != hw_before
        if decision.error is not None:
            raise decision.error
        if moved:
            self.wake(r)
        if change is not None:
            self.isr_executor.submit(self._alter_isr, r, change)

    def list_offset(self, topic: str, partition: int, timestamp: int, isolation_level: int) -> tuple[int, int]:
        r = self.leader_replica(topic, partition)
        with r.lock:
            m = r.model
            if timestamp == EARLIEST:
                return m.log_start_offset, -1
            if timestamp == LATEST:
                return (self.last_stable_offset(r) if isolation_level == 1 else m.high_watermark), -1
            hw = m.high_watermark
        for raw in self.store.iter_batches(topic, partition):
            h = records.read_header(raw)
            if h.base_offset >= hw:
                break
            if h.max_timestamp >= timestamp:
                for rec in records.decode_records(raw):
                    if rec.timestamp >= timestamp and rec.offset < hw:
                        return rec.offset, rec.timestamp
        return -1, -1

    # -- ISR maintenance --------------------------------------------------
    def _isr_loop(self) -> None:
        lag = self.config.replica_lag_time_max_ms
        period = max(lag / 2000.0, 0.05)
        while not self._stop.wait(period):
            self.maybe_shrink_isrs(self.clock.monotonic_ms(), lag)

    def maybe_shrink_isrs(self, now_ms: int, lag_ms: int) -> None:
        """The ISR check visits only leaders where some ISR follower is behind the log end: one whose
        followers all reached it cannot shrink (Kafka's isCaughtUp), and any append or role change
        (`wake`) puts a partition back on the list."""
        with self._isr_watch_lock:
            watched, self._isr_watch = self._isr_watch, set()
        keep = []
        for r in watched:
            if self.replicas.get((r.topic, r.partition)) is not r:
                continue
            with r.lock:
                m = r.model
                if not m.is_leader:
                    continue
                change = m.maybe_shrink_isr(now_ms, lag_ms)
                if change is not None or m.partition_state.is_inflight or any(
                        f != m.broker_id and (f not in m.followers
                                              or m.followers[f].log_end_offset < m.log_end_offset)
                        for f in m.isr):
                    keep.append(r)
            if change is not None:
                self._alter_isr(r, change)
        if keep:
            with self._isr_watch_lock:
                self._isr_watch.update(keep)

    def _alter_isr(self, r: Replica, change) -> None:
        """Sends one ISR proposal, with the leader and partition epochs it was made at.

        The call may run late (queued behind others, or slow): by then the partition epoch may
        have moved, e.g. a replica of the proposed ISR was fenced and removed. The controller
        refuses a proposal whose epoch is not current (INVALID_UPDATE_VERSION), so a stale view
        never puts a lagging replica back into the ISR.
        """
        req = mpb.AlterPartitionRequest(
            broker_id=self.broker_id, broker_epoch=self.broker_epoch, topic=r.topic, partition=r.partition,
            leader_epoch=change.leader_epoch, partition_epoch=change.partition_epoch,
            new_isr=list(change.new_isr))
        log.info("%s ISR for %s-%d to %s at partition epoch %d", "Expanding" if change.added else "Shrinking",
                 r.topic, r.partition, list(change.new_isr), change.partition_epoch)
        try:
            resp = self.controller().AlterPartition(req, timeout=5)
        except grpc.RpcError as e:
            log.info("AlterPartition for %s-%d failed: %s", r.topic, r.partition, transport_error(e))
            with r.lock:
                if self._proposal_pending(r, change):
                    r.model.on_isr_change_failed()
            return
        committed = not resp.error_code and resp.state.leader_epoch == change.leader_epoch
        with r.lock:
            if not self._proposal_pending(r, change):
                # Usually metadata already brought this very change (the controller wakes watchers
                # before it answers); otherwise the partition moved on and metadata will say how.
                if resp.error_code or r.model.partition_epoch < resp.state.partition_epoch:
                    log.info("Ignoring the AlterPartition answer for %s-%d: the partition moved on since "
                             "the proposal", r.topic, r.partition)
            elif resp.error_code:
                log.info("AlterPartition for %s-%d refused: %s", r.topic, r.partition, resp.error_message)
                r.model.on_isr_change_failed()
            elif committed:
                r.model.on_isr_change_committed(list(resp.state.isr), resp.state.partition_epoch)
        if committed:  # the controller committed this proposal, whichever path applied it here
            self.metrics.on_isr_change(expanded=bool(change.added))
        self.wake(r)

    @staticmethod
    def _proposal_pending(r: Replica, change) -> bool:
        """The model still waits for this proposal (Kafka: partitionState == proposedIsrState)."""
        m = r.model
        return (m.is_leader and m.partition_state.is_inflight and m.leader_epoch == change.leader_epoch
                and m.partition_epoch == change.partition_epoch)

    # -- follower side (called by the fetcher threads) ----------------------
    def append_as_follower(self, r: Replica, data: bytes, leader_hw: int, leader_epoch: int) -> None:
        """Appends what the leader sent, all or nothing: one write, then the model follows."""
        with r.lock:
            m = r.model
            if not m.is_follower_at(leader_epoch):
                return  # a newer role arrived while the fetch was in flight
            fetched = []
            end = m.log_end_offset
            for h, raw in records.iter_batches(data):
                if h.last_offset < end:
                    continue  # already have it
                if h.base_offset != end:
                    log.warning("%s-%d: follower gap, expected %d got %d", r.topic, r.partition, end,
                                h.base_offset)
                    break
                fetched.append((h, raw))
                end = h.last_offset + 1
            puts = [self.store.append_puts(r.topic, r.partition, h.base_offset, raw) for h, raw in fetched]
            # One write per fetched answer: a new epoch entry goes in the same WriteBatch as its
            # batches (the cache is not rebuilt from the log on restart); the HW, which load()
            # clamps and the leader sends again, is left to the periodic checkpoint, as Kafka does.
            latest = m.leader_epoch_cache.latest_epoch
            epochs = None
            if any(h.partition_leader_epoch >= 0 and h.partition_leader_epoch != latest for h, _ in fetched):
                cache = LeaderEpochCache(m.leader_epoch_cache.entries)
                for h, _ in fetched:
                    if h.partition_leader_epoch >= 0:
                        cache.assign(h.partition_leader_epoch, h.base_offset)
                epochs = cache.to_json()
                puts.append(self.store.meta_put(r.topic, r.partition, "epochs", epochs))
            if puts:
                self.store.write(puts)
            for h, _ in fetched:
                m.on_follower_append(h.base_offset, h.last_offset, h.partition_leader_epoch)
                if h.producer_id >= 0:
                    r.producers.replay([h])
            if epochs is not None:
                r.mark_written(epochs=epochs)
            hw_before = m.high_watermark
            m.update_high_watermark_from_leader(leader_hw)
            moved = m.high_watermark != hw_before
        if moved:
            with self._checkpoint_dirty_lock:
                self._checkpoint_dirty.add(r)

    def truncate(self, r: Replica, offset: int, leader_epoch: int) -> bool:
        """Follower: drop the log from `offset` on, only while still following at `leader_epoch`.

        The fetcher decides where to truncate from an answer it waited for; if meanwhile this
        replica became leader (and took writes) or follows a newer epoch, that answer is stale
        and truncating would drop records the new role relies on. Returns False when refused.
        """
        with r.lock:
            if not self._still_following(r, leader_epoch, f"truncate to {offset}"):
                return False
            self._truncate_locked(r, offset)
            return True

    def truncate_to_leader_epoch_end(self, r: Replica, leader_epoch: int,
                                     epoch_end: tuple[int, int]) -> OffsetTruncationState | None:
        """Follower: truncate where the leader's OffsetForLeaderEpoch answer says the histories
        diverge (KIP-101/279); computed and applied under the partition lock, only while still
        following at `leader_epoch`. None when refused."""
        with r.lock:
            if not self._still_following(r, leader_epoch, f"truncate to the end of epoch {epoch_end}"):
                return None
            m = r.model
            state = truncation_offset(m.leader_epoch_cache, m.log_end_offset, epoch_end, m.high_watermark)
            self._truncate_locked(r, state.offset)
            return state

    def _still_following(self, r: Replica, leader_epoch: int, what: str) -> bool:
        m = r.model
        if not m.is_follower_at(leader_epoch):
            log.info("%s-%d: not going to %s for leader epoch %d: now %s at epoch %d", r.topic, r.partition,
                     what, leader_epoch, "leader" if m.is_leader else "follower", m.leader_epoch)
            return False
        return True

    def _truncate_locked(self, r: Replica, offset: int) -> None:
        m = r.model
        if offset >= m.log_end_offset:
            return
        # Kafka truncates whole batches: the new end is the base of the batch holding `offset`.
        new_end, deleted = self.store.truncation(r.topic, r.partition, offset)
        log.info("Truncating %s-%d from %d to %d", r.topic, r.partition, m.log_end_offset, new_end)
        self.store.write([], delete_ranges=[deleted])  # disk first: if this fails nothing moved
        m.truncate_to(new_end)
        r.producers.rebuild(records.read_header(b) for b in self.store.iter_batches(r.topic, r.partition))
        self.txn.on_truncate(r)
        # A lost checkpoint is harmless: load() clamps the HW and the epoch cache to the log.
        self._persist_checkpoints(r)

    def _persist_checkpoints(self, r: Replica) -> None:
        self.store.write(r.checkpoint_puts())

    def _checkpoint_loop(self) -> None:
        while not self._stop.wait(1.0):
            with self._checkpoint_dirty_lock:
                dirty, self._checkpoint_dirty = self._checkpoint_dirty, set()
            self._checkpoint_all(dirty)

    def _checkpoint_all(self, replicas=None) -> None:
        """Writes the HW and epoch checkpoints that moved, of `replicas` (default: every replica)."""
        puts = []
        done = []
        for r in list(self.replicas.values()) if replicas is None else replicas:
            if self.replicas.get((r.topic, r.partition)) is not r:
                continue  # dropped: its checkpoints must not come back
            with r.lock:
                puts.extend(r.changed_checkpoint_puts())
            done.append(r)
        if puts:
            try:
                self.store.write(puts)
            except Exception:  # noqa: BLE001 - a checkpoint that failed is written next time
                for r in done:  # written next time
                    with r.lock:
                        r.forget_written()
                with self._checkpoint_dirty_lock:
                    self._checkpoint_dirty.update(done)

    def describe_log(self, topic: str, partition: int) -> dict:
        r = self.replicas.get((topic, partition))
        if r is None:
            raise errors.UnknownTopicOrPartitionError(f"{topic}-{partition}")
        with r.lock:
            m = r.model
            hw, leo, start = m.high_watermark, m.log_end_offset, m.log_start_offset
            info = {"role": "leader" if m.is_leader else "follower", "leader_epoch": m.leader_epoch,
                    "isr": list(m.isr), "epochs": m.leader_epoch_cache.to_json()}
        digest = hashlib.sha256()
        for raw in self.store.iter_batches(topic, partition):
            h = records.read_header(raw)
            if h.last_offset >= hw:
                break
            # Compare the records, not the header epoch fields some replicas rewrote.
            digest.update(raw[:12] + raw[16:])
        return {"hw": hw, "leo": leo, "log_start": start, "digest": digest.hexdigest(), **info}

    # -- transactions (node/txn_broker.py) ---------------------------------
    def write_txn_markers(self, request):
        return self.txn.write_txn_markers(request)
