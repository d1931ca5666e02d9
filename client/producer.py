"""Producer: Kafka's model — send() appends to the RecordAccumulator, a Sender thread drains.

The sender owns the in-flight state; send() only touches the accumulator
under `self._lock`. Responses come back on gRPC threads and are handed to
the sender through a queue, so batch completion and retries happen on one
thread in order.
"""
from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from client.accumulator import ProducerBatch, RecordAccumulator, SequenceNumbers, record_size
from client.common import errors
from client.common.clock import SystemClock
from client.common.config import ProducerConfig
from client.common.network import ChannelPool, transport_error
from client.common.pb import broker_pb2 as bpb
from client.common.pb import broker_pb2_grpc as bgrpc
from client.common.pb import txn_pb2 as tpb
from client.common.pb import txn_pb2_grpc as tgrpc
from client.common.security import channel_credentials_from_config, sasl_metadata
from client.common.types import TopicPartition
from client.future import FutureRecordMetadata, ProduceRequestResult
from client.metadata import Metadata
from client.metrics import ProducerMetrics
from client.partitioner import DefaultPartitioner, make_partitioner

log = logging.getLogger(__name__)
_time_ns = time.time_ns


def _to_bytes(x) -> bytes | None:
    if x is None or isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode()
    if isinstance(x, (bytearray, memoryview)):
        return bytes(x)
    raise errors.InvalidRecordError(f"cannot send {type(x).__name__} without a serializer (bytes or str)")


class Producer:
    def __init__(self, config: dict[str, Any] | None = None, **kwargs):
        self.config = ProducerConfig.from_props(config, **kwargs)  # kwargs: linger_ms=5 -> linger.ms
        c = self.config
        self.client_id = c.client_id or f"producer-{id(self) & 0xffff}"
        self.clock = SystemClock()
        self.pool = ChannelPool(f"client:{self.client_id}", metadata=sasl_metadata(self.config),
                                channel_credentials=channel_credentials_from_config(self.config))
        self.metadata = Metadata(c.bootstrap_servers, self.pool, self.clock, c.request_timeout_ms)
        self.acks = c.acks_int
        self.key_serializer = c.key_serializer
        self.value_serializer = c.value_serializer
        self.partitioner = make_partitioner(c.partitioner_class, c.partitioner_ignore_keys)
        self.accumulator = RecordAccumulator(c.batch_size, c.linger_ms, c.buffer_memory, c.compression_type,
                                             c.delivery_timeout_ms)
        self.metrics_ = ProducerMetrics(self.clock)
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._responses: queue.Queue = queue.Queue()
        self._inflight: dict[str, int] = {}   # broker address -> requests in flight (sender thread only)
        self._produce_rpcs: dict[str, tuple] = {}   # broker address -> (channel, Produce); sender thread
        self._metadata_stale = False          # sender thread: refresh once before the next drain
        self._pid_reset_needed = False        # a sent batch failed: its partition's sequences have a gap
        self._sticky = isinstance(self.partitioner, DefaultPartitioner)
        self._tps: dict[str, list[TopicPartition]] = {}   # topic -> TopicPartition per partition
        self._sticky_partitions = self.partitioner.sticky if self._sticky else {}   # topic -> partition
        # A record at most this big (record_size) needs no further size check.
        self._max_record_size = min(c.max_request_size, c.buffer_memory)
        self._closed = False
        self._rng = random.Random()
        self.idempotent = c.enable_idempotence
        # Kafka's guarantee: with idempotence up to max.in.flight (<= 5) batches of a partition in
        # flight, kept in order by their sequence numbers; without it one, kept in order by waiting.
        # A transactional producer keeps one: its abort path (client/transactions.py) counts on at
        # most one request per partition whose outcome is unknown.
        self.accumulator.max_in_flight_per_partition = \
            c.max_in_flight_requests_per_connection if self.idempotent and not c.transactional_id else 1
        self.accumulator.sequenced = self.idempotent
        self.producer_id, self.producer_epoch = -1, -1
        self._sequences = SequenceNumbers()  # sender thread
        self._fatal: errors.KafkaError | None = None
        self._aborting = False   # set by the transaction manager while it aborts: no retries (read by the sender)
        self.txn = None
        if c.transactional_id:
            from client.transactions import TransactionManager
            self.txn = TransactionManager(self)
        self._sender = threading.Thread(target=self._run, name=f"sender-{self.client_id}", daemon=True)
        self._sender.start()

    # -- public API ------------------------------------------------------
    def send(self, topic: str, value=None, key=None, headers=None, partition: int | None = None,
             timestamp_ms: int | None = None, callback: Callable | None = None) -> FutureRecordMetadata:
        if self._closed:
            raise errors.IllegalStateError("Cannot send after the producer is closed.")
        if self._fatal is not None:
            raise self._fatal
        key_b = self.key_serializer(key) if self.key_serializer is not None and key is not None else key
        if key_b is not None and key_b.__class__ is not bytes:
            key_b = _to_bytes(key_b)
        value_b = self.value_serializer(value) if self.value_serializer is not None and value is not None \
            else value
        if value_b is not None and value_b.__class__ is not bytes:
            value_b = _to_bytes(value_b)
        key_size = len(key_b) if key_b is not None else -1
        value_size = len(value_b) if value_b is not None else -1
        if headers:
            hdrs = [(k, _to_bytes(v)) for k, v in headers]
            self._ensure_valid_record_size(record_size(key_b, value_b, hdrs))
        else:
            hdrs = None
            # record_size() inlined: 21 bytes of overhead plus key and value
            if 21 + key_size + value_size + 2 > self._max_record_size:
                self._ensure_valid_record_size(record_size(key_b, value_b))
        # CreateTime is when send() was called. The producer's clock is always a SystemClock, read
        # here directly: the method call cost more than the clock.
        ts = timestamp_ms if timestamp_ms is not None else _time_ns() // 1_000_000
        sticky = self._sticky and partition is None and (key_b is None or self.partitioner.ignore_keys)
        tp = None
        if sticky:
            # The partition the sticky partitioner holds for this topic, as _partition_for would
            # find it, without its two calls.
            p = self._sticky_partitions.get(topic)
            tps = self._tps.get(topic)
            if p is not None and tps is not None and p < len(tps) \
                    and len(tps) == len(self.metadata.cluster.partitions.get(topic, ())):
                tp = tps[p]
        if tp is None:
            tp = self._partition_for(topic, partition, key, key_b, value, value_b)
        if self.txn is None:
            # Fast path: the record fits the partition's open batch; one lock, no clock, no result object.
            with self._lock:
                b = self.accumulator.try_append_open(tp, ts, key_b, value_b, hdrs)
                if b is not None:
                    fut = FutureRecordMetadata(b.result, b.builder.record_count - 1, ts, key_size, value_size)
                    if callback is not None:
                        fut.add_both(callback)
                    full = b.builder.is_full
            if b is not None:
                if full:
                    self._wake.set()  # a full batch to send now
                return fut
            if sticky:
                # KIP-480: a keyless record that would open a new batch moves the sticky partition on.
                self.partitioner.on_new_batch(topic, self.metadata.cluster, tp.partition)
                tp = self._partition_for(topic, None, key, key_b, value, value_b)
        else:
            if sticky:
                with self._lock:
                    new_batch = self.accumulator.needs_new_batch(tp, key_b, value_b, hdrs)
                if new_batch:
                    self.partitioner.on_new_batch(topic, self.metadata.cluster, tp.partition)
                    tp = self._partition_for(topic, None, key, key_b, value, value_b)
            self.txn.maybe_add_partition(tp)  # before the append: it asks the coordinator
        with self._lock:
            res = self.accumulator.append(tp, ts, key_b, value_b, hdrs, self.clock.monotonic_ms())
            if res.batch is None:
                res = self._wait_for_memory(tp, ts, key_b, value_b, hdrs)
            b = res.batch
            if res.new_batch:
                b.result = ProduceRequestResult(tp)
            fut = FutureRecordMetadata(b.result, b.builder.record_count - 1, ts, key_size, value_size)
            if callback is not None:
                fut.add_both(callback)
        if res.new_batch or res.batch_full:
            self._wake.set()  # a new linger deadline, or a full batch to send now
        return fut

    def _ensure_valid_record_size(self, size: int) -> None:
        if size > self.config.max_request_size:
            raise errors.MessageTooLargeError(
                f"The message is {size} bytes when serialized which is larger than "
                f"{self.config.max_request_size}, which is the value of the max.request.size configuration.")
        if size > self.config.buffer_memory:
            raise errors.MessageTooLargeError(
                f"The message is {size} bytes when serialized which is larger than the total memory buffer "
                f"you have configured with the buffer.memory configuration ({self.config.buffer_memory}).")

    def _wait_for_memory(self, tp, ts, key_b, value_b, hdrs):
        """Called with self._lock held: blocks up to max.block.ms for buffer.memory to free up."""
        started = time.monotonic()
        deadline = started + self.config.max_block_ms / 1000.0
        self.accumulator.waiters += 1   # makes every batch ready, so memory comes back sooner
        self._wake.set()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.metrics_.record_error(1)
                    raise self.accumulator.buffer_exhausted_error(self.config.max_block_ms)
                self._space.wait(left)
                res = self.accumulator.append(tp, ts, key_b, value_b, hdrs, self.clock.monotonic_ms())
                if res.batch is not None:
                    return res
        finally:
            self.accumulator.waiters -= 1
            self.metrics_.record_buffer_wait((time.monotonic() - started) * 1000)

    def flush(self, timeout: float | None = None) -> None:
        """Makes every buffered batch ready now and waits until all batches appended before the
        call, in-flight ones included, are acknowledged or failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self.accumulator.flushes_in_progress += 1
            results = [b.result for b in self.accumulator.incomplete if b.result is not None]
        self._wake.set()
        try:
            for r in results:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not r.wait(left):
                    raise errors.KafkaTimeoutError(f"Failed to flush accumulated records within {timeout} s")
        finally:
            with self._lock:
                self.accumulator.flushes_in_progress -= 1

    def abort_undrained(self, err: errors.KafkaError) -> bool:
        """Kafka's abortUndrainedBatches: fails every batch not in flight. True when one of them had
        been sent before (a retry waiting its turn): it may still reach the broker."""
        with self._lock:
            left = self.accumulator.abort_all()
        for b in left:
            self._fail_batch(b, err)
        return any(b.attempts > 0 for b in left)

    def wait_incomplete(self, deadline: float) -> bool:
        """Waits (until `deadline`, time.monotonic()) for every batch to be acknowledged or failed,
        failing any that comes back to the queue meanwhile; True when none is left."""
        while True:
            with self._lock:
                results = [b.result for b in self.accumulator.incomplete if b.result is not None]
            if not results:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            results[0].wait(min(left, 0.1))
            if self.abort_undrained(errors.TransactionAbortedError("its transaction is aborting")):
                return False

    def close(self, timeout: float | None = None) -> None:
        """Delivers what is buffered (waiting up to timeout s), then stops the sender; records still
        undelivered after that fail with a timeout error."""
        if self._closed:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if timeout is None or timeout > 0:
                try:
                    self.flush(timeout)
                except errors.KafkaError:
                    pass
        finally:
            self._closed = True
            with self._lock:
                self.accumulator.closing = True
                left = self.accumulator.abort_all()
            for b in left:
                self._fail_batch(b, errors.KafkaTimeoutError("producer closed before the record was sent"))
            self._wake.set()
            self._sender.join(None if deadline is None else max(deadline - time.monotonic(), 0.1))
            with self._lock:
                unanswered = list(self.accumulator.incomplete)
            for b in unanswered:   # in flight when close() gave up waiting
                self._fail_batch(b, errors.KafkaTimeoutError("producer closed before the broker answered"))
            self.pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def partitions_for(self, topic: str):
        return self.metadata.partitions_for(topic)

    def metrics(self) -> dict[str, float]:
        with self._lock:
            avail = self.accumulator.available_bytes()
        return self.metrics_.snapshot(avail)

    # -- transactions (delegated) ------------------------------------------
    def init_transactions(self, timeout: float | None = None) -> None:
        self._require_txn().init_transactions(timeout)

    def begin_transaction(self) -> None:
        self._require_txn().begin_transaction()

    def send_offsets_to_transaction(self, offsets, consumer_group_metadata) -> None:
        self._require_txn().send_offsets_to_transaction(offsets, consumer_group_metadata)

    def commit_transaction(self, timeout: float | None = None) -> None:
        self._require_txn().commit_transaction(timeout)

    def abort_transaction(self, timeout: float | None = None) -> None:
        self._require_txn().abort_transaction(timeout)

    def _require_txn(self):
        if self.txn is None:
            raise errors.IllegalStateError("Transactional method invoked on a non-transactional producer "
                                           "(set transactional.id)")
        return self.txn

    # -- partitioning ----------------------------------------------------
    def _partition_for(self, topic, partition, key, key_b, value, value_b) -> TopicPartition:
        cluster = self.metadata.cluster
        parts = cluster.partitions.get(topic)
        if parts is None:
            parts = self._wait_for_topic(topic)
            cluster = self.metadata.cluster
        n = len(parts)
        if partition is not None:
            if not 0 <= partition < n:
                raise errors.UnknownTopicOrPartitionError(
                    f"Partition {partition} of topic {topic} with partition count {n} is not present")
            p = partition
        else:
            p = self.partitioner(topic, key, key_b, value, value_b, cluster)
        # One TopicPartition per partition, reused: building a tuple per record showed in profiles.
        tps = self._tps.get(topic)
        if tps is None or len(tps) != n:
            tps = self._tps[topic] = [TopicPartition(topic, i) for i in range(n)]
        if 0 <= p < n:
            return tps[p]
        return TopicPartition(topic, p)   # a custom partitioner's out-of-range answer, as given

    def _wait_for_topic(self, topic: str):
        deadline = time.monotonic() + self.config.max_block_ms / 1000.0
        delay = 0.05
        try:
            # As Kafka's producer: the cluster auto-creates a topic it does not know, if it allows.
            self.metadata.fetch([topic], allow_auto_topic_creation=True)
        except errors.KafkaConnectionError:
            pass
        while True:
            try:
                self.metadata.refresh()
            except errors.KafkaConnectionError:
                if time.monotonic() > deadline:
                    raise
            parts = self.metadata.cluster.partitions.get(topic)
            if parts is not None:
                return parts
            if topic in self.metadata.topic_errors or time.monotonic() > deadline:
                raise errors.UnknownTopicOrPartitionError(f"Topic '{topic}' not present in metadata")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    # -- sender thread ---------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                self._wake.clear()   # a wake-up from here on makes the _wait below return at once
                self._handle_responses()
                inflight = sum(self._inflight.values())
                if self._closed and not inflight and not self.accumulator.has_undrained():
                    break
                now = self.clock.monotonic_ms()
                self._expire(now)
                if self._pid_reset_needed:
                    if inflight:   # let the old producer id's requests finish first
                        self._wait(self.config.retry_backoff_ms)
                        continue
                    self._reset_producer_id()
                if self.idempotent and self.producer_id < 0 and self._fatal is None \
                        and (self.accumulator.has_undrained() or self.txn is not None) \
                        and not self._init_producer_id():
                    self._wait(self.config.retry_backoff_ms)
                    continue
                if self._metadata_stale:
                    self._metadata_stale = False
                    self._refresh_metadata()
                with self._lock:
                    ready, next_ms = self.accumulator.ready(now)
                    next_ms = min(next_ms, self.accumulator.next_expiry_ms(now) + 1)
                if ready and not self._send_ready(ready, now):
                    next_ms = min(next_ms, self.config.retry_backoff_ms)  # waiting for a leader
                self._wait(next_ms)
        except Exception:
            log.exception("producer sender thread died")
            self._fatal = errors.IllegalStateError("the producer's sender thread died; see the log")
            with self._lock:
                left = list(self.accumulator.incomplete)
                self.accumulator.abort_all()
            for b in left:
                self._fail_batch(b, self._fatal)

    def _wait(self, ms: float) -> None:
        """Sleeps until ms pass or something wakes the sender (send, flush, close, a response)."""
        self._wake.wait(max(ms, 0) / 1000.0)

    def _init_producer_id(self) -> bool:
        if self.txn is not None:
            return self.txn.producer_id_ready()
        try:
            addr = self.metadata.controller_address()
            resp = tgrpc.TxnCoordinatorStub(self.pool.get(addr)).InitProducerId(
                tpb.InitProducerIdRequest(transactional_id="", producer_id=-1, producer_epoch=-1),
                timeout=self.config.request_timeout_ms / 1000.0)
        except (grpc.RpcError, errors.KafkaError) as e:
            log.debug("InitProducerId failed: %s", e)
            return False
        if resp.error_code:
            err = errors.for_code(resp.error_code, resp.error_message)
            if not err.retriable:
                self._fatal = err
            return False
        self.set_producer_id(resp.producer_id, resp.producer_epoch)
        return True

    def set_producer_id(self, producer_id: int, epoch: int) -> None:
        self.producer_id, self.producer_epoch = producer_id, epoch
        self._sequences.clear()
        log.info("Producer %s got producer id %d epoch %d", self.client_id, producer_id, epoch)

    def _reset_producer_id(self) -> None:
        """A sent batch failed, so the broker's next expected sequence is unknown: start over with
        a new producer id (Kafka before KIP-360). Queued batches get fresh sequences from 0."""
        self._pid_reset_needed = False
        if self.txn is not None:
            return  # the transaction manager owns the producer id; the transaction must abort
        log.info("Producer %s resetting producer id %d after a failed batch", self.client_id, self.producer_id)
        self.producer_id, self.producer_epoch = -1, -1
        self._sequences.clear()
        with self._lock:
            for dq in self.accumulator.batches.values():
                for b in dq:
                    b.base_sequence = -1

    def _expire(self, now: int) -> None:
        with self._lock:
            expired = self.accumulator.expired(now)
        for b in expired:
            self._fail_batch(b, errors.KafkaTimeoutError(
                f"Expiring {b.record_count} record(s) for {b.tp}: {now - b.created_ms} ms has passed since "
                f"batch creation (delivery.timeout.ms={self.config.delivery_timeout_ms})"))

    def _send_ready(self, ready: list[TopicPartition], now: int) -> bool:
        """Drains ready partitions into requests per leader, up to max.in.flight per broker and
        max.request.size per request. False when some partition had no known leader."""
        by_leader: dict[str, list[TopicPartition]] = {}
        leaders_known = True
        for tp in ready:
            addr = self.metadata.leader_address(tp)
            if addr is None:
                leaders_known = False
                continue
            by_leader.setdefault(addr, []).append(tp)
        if not leaders_known:
            self._metadata_stale = True
        max_inflight = self.config.max_in_flight_requests_per_connection
        for addr, tps in by_leader.items():
            while tps and self._inflight.get(addr, 0) < max_inflight:
                batches: list[ProducerBatch] = []
                budget = self.config.max_request_size
                with self._lock:
                    while tps and budget > 0:
                        got = self.accumulator.drain(tps.pop(0), budget)
                        budget -= sum(b.builder.estimated_size for b in got)
                        batches.extend(got)
                if batches:
                    self._send_request(addr, batches, now)
        return leaders_known

    def _send_request(self, addr: str, batches: list[ProducerBatch], now: int) -> None:
        req = bpb.ProduceRequest(acks=self.acks, timeout_ms=self.config.request_timeout_ms,
                                 transactional_id=self.config.transactional_id or "")
        by_tp: dict[TopicPartition, list[bytes]] = {}
        for b in batches:
            if self.idempotent and self.producer_id >= 0:
                self._sequences.assign(b)
                b.producer_epoch = self.producer_epoch
                b.builder.set_producer_state(self.producer_id, self.producer_epoch, b.base_sequence,
                                             is_transactional=self.txn is not None)
            data = b.builder.build()
            b.attempts += 1
            b.sent_ms = now
            by_tp.setdefault(b.tp, []).append(data)
        for tp, datas in by_tp.items():
            req.partitions.add(topic=tp.topic, partition=tp.partition, records=b"".join(datas))
        self.metrics_.record_request(batches)
        self._inflight[addr] = self._inflight.get(addr, 0) + 1
        timeout = self.config.request_timeout_ms / 1000.0 + 1.0  # the broker waits request.timeout.ms
        call = self._produce_rpc(addr).future(req, timeout=timeout)
        if self.acks == 0:
            # Kafka completes acks=0 sends once written; the partition stays muted until the call
            # returns, so records still reach the log in send order.
            for b in batches:
                self._complete_batch(b, -1)

        def on_done(f):
            self._responses.put((addr, batches, f, now))
            self._wake.set()
        call.add_done_callback(on_done)

    def _produce_rpc(self, addr: str):
        """The Produce method for addr's channel, kept while the pool keeps that channel (a stub
        builds a callable per RPC of the service: more than the call itself costs)."""
        ch = self.pool.get(addr)
        cached = self._produce_rpcs.get(addr)
        if cached is None or cached[0] is not ch:
            cached = self._produce_rpcs[addr] = (ch, bgrpc.BrokerStub(ch).Produce)
        return cached[1]

    def _handle_responses(self) -> None:
        while True:
            try:
                addr, batches, call, sent_ms = self._responses.get_nowait()
            except queue.Empty:
                return
            self._inflight[addr] = max(0, self._inflight.get(addr, 0) - 1)
            now = self.clock.monotonic_ms()
            if self.acks == 0:
                with self._lock:
                    for b in batches:
                        self.accumulator.unmute(b.tp, 1)
                continue
            self.metrics_.record_latency(now - sent_ms)
            try:
                resp = call.result()
            except grpc.RpcError as e:
                err = transport_error(e, addr)
                if isinstance(err, errors.KafkaConnectionError) and e.code() != grpc.StatusCode.UNAVAILABLE:
                    self.pool.reset(addr)
                groups = _by_partition(batches)
                for bs in groups.values():
                    self._retry_or_fail(bs, err, now)
                continue
            results = {(p.topic, p.partition): p for p in resp.partitions}
            for tp, bs in _by_partition(batches).items():
                p = results.get((tp.topic, tp.partition))
                if p is None:
                    self._retry_or_fail(bs, errors.UnknownServerError("no response for partition"), now)
                    continue
                if p.error_code == 0 or p.error_code == errors.DuplicateSequenceNumberError.code:
                    # A duplicate is a retry of a batch the broker already has: success at its offset.
                    offset = p.base_offset
                    per_batch = list(p.batch_base_offsets)
                    for i, b in enumerate(bs):
                        if len(per_batch) == len(bs):
                            offset = per_batch[i]  # exact even when some batches were duplicates
                        self._complete_batch(b, offset)
                        if offset >= 0:
                            offset += b.record_count
                    with self._lock:
                        self.accumulator.unmute(tp, len(bs))
                else:
                    self._retry_or_fail(bs, errors.for_code(p.error_code, p.error_message), now)

    def _retry_or_fail(self, batches: list[ProducerBatch], err: errors.KafkaError, now: int) -> None:
        """One partition's batches from one failed request: back to the head of the queue after a
        backoff, or failed (not retriable, retries used up, or delivery.timeout.ms passed)."""
        if err.invalid_metadata or isinstance(err, errors.KafkaConnectionError):
            self._metadata_stale = True
        tp = batches[0].tp
        # An out-of-order sequence is retriable while an earlier batch of the partition is still
        # unanswered or queued for its retry (several in flight: it reached the broker first, or
        # failed); otherwise the broker lost our state and a retry cannot fix it.
        if isinstance(err, errors.OutOfOrderSequenceNumberError):
            retriable = self._earlier_batch_pending(batches)
        else:
            retriable = err.retriable
        if self.txn is not None and (self._aborting or batches[0].producer_epoch != self.producer_epoch):
            retriable = False   # its transaction is aborting or over: a resend would land in the next one
        keep, fail = [], []
        for b in batches:
            if now - b.created_ms >= self.config.delivery_timeout_ms:
                fail.append((b, errors.KafkaTimeoutError(
                    f"Expiring {b.record_count} record(s) for {tp}: {now - b.created_ms} ms has passed since "
                    f"batch creation (delivery.timeout.ms={self.config.delivery_timeout_ms}); last error: {err}")))
            elif retriable and b.attempts <= self.config.retries:
                keep.append(b)
            else:
                fail.append((b, err))
        for b, e in fail:
            self._fail_batch(b, e)
        if fail:
            with self._lock:
                self.accumulator.unmute(tp, len(fail))
        if keep:
            self.metrics_.record_retry(sum(b.record_count for b in keep))
            attempt = keep[0].attempts
            backoff = min(self.config.retry_backoff_ms * (2 ** max(attempt - 1, 0)), self.config.retry_backoff_max_ms)
            backoff = int(backoff * self._rng.uniform(0.8, 1.2))
            log.debug("retrying %d batch(es) for %s after %s (attempt %d)", len(keep), tp, err, attempt)
            with self._lock:
                self.accumulator.reenqueue(keep, now + backoff)
        if self.txn is not None and fail:
            self.txn.on_send_failed(err, fail[0][0].producer_epoch)

    def _earlier_batch_pending(self, batches: list[ProducerBatch]) -> bool:
        """Whether a batch of the same partition and producer epoch with a lower sequence than these
        is still incomplete (in flight, or back in the queue for a retry)."""
        first = min(b.base_sequence for b in batches)
        if first < 0:
            return False
        tp, epoch, mine = batches[0].tp, batches[0].producer_epoch, set(batches)
        with self._lock:
            return any(o.tp == tp and o.producer_epoch == epoch and 0 <= o.base_sequence < first
                       and o not in mine for o in self.accumulator.incomplete)

    def _refresh_metadata(self) -> None:
        try:
            self.metadata.refresh()
        except errors.KafkaError as e:
            log.debug("metadata refresh failed: %s", e)

    def _complete_batch(self, b: ProducerBatch, base_offset: int) -> None:
        with self._lock:
            self.accumulator.complete(b)
            self._space.notify_all()
        self.metrics_.record_sent(b)
        if b.result is not None:
            b.result.complete(base_offset, None)

    def _fail_batch(self, b: ProducerBatch, err: BaseException) -> None:
        with self._lock:
            self.accumulator.complete(b)
            self._space.notify_all()
        self.metrics_.record_error(b.record_count)
        if self.idempotent and b.base_sequence >= 0 and not self._closed:
            self._pid_reset_needed = True
        if b.result is not None:
            b.result.complete(-1, err)


def _by_partition(batches: list[ProducerBatch]) -> dict[TopicPartition, list[ProducerBatch]]:
    out: dict[TopicPartition, list[ProducerBatch]] = {}
    for b in batches:
        out.setdefault(b.tp, []).append(b)
    return out
