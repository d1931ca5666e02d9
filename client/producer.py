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
from concurrent.futures import Future
from typing import Any, Callable

import grpc

from client.accumulator import ProducerBatch, RecordAccumulator
from client.common import errors
from client.common.clock import SystemClock
from client.common.config import ProducerConfig
from client.common.network import ChannelPool, transport_error
from client.common.pb import broker_pb2 as bpb
from client.common.pb import broker_pb2_grpc as bgrpc
from client.common.pb import txn_pb2 as tpb
from client.common.pb import txn_pb2_grpc as tgrpc
from client.common.types import RecordMetadata, TopicPartition
from client.metadata import Metadata
from client.metrics import ProducerMetrics
from client.partitioner import DefaultPartitioner, make_partitioner

log = logging.getLogger(__name__)


class FutureRecordMetadata(Future):
    """A Future of RecordMetadata with kafka-python's callback helpers."""

    def get(self, timeout: float | None = None) -> RecordMetadata:
        try:
            return self.result(timeout)
        except TimeoutError:
            raise errors.KafkaTimeoutError(f"no result within {timeout} s") from None

    def add_callback(self, fn: Callable, *args, **kwargs) -> "FutureRecordMetadata":
        def cb(f):
            if f.exception() is None:
                fn(*args, f.result(), **kwargs)
        self.add_done_callback(cb)
        return self

    def add_errback(self, fn: Callable, *args, **kwargs) -> "FutureRecordMetadata":
        def cb(f):
            if f.exception() is not None:
                fn(*args, f.exception(), **kwargs)
        self.add_done_callback(cb)
        return self


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
        props = dict(config or {})
        for k, v in kwargs.items():
            props[k.replace("_", ".")] = v
        self.config = ProducerConfig.from_props(props)
        c = self.config
        self.client_id = c.client_id or f"producer-{id(self) & 0xffff}"
        self.clock = SystemClock()
        self.pool = ChannelPool(f"client:{self.client_id}")
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
        self._closed = False
        self._rng = random.Random()
        self.idempotent = c.enable_idempotence
        self.producer_id, self.producer_epoch = -1, -1
        self._sequences: dict[TopicPartition, int] = {}  # next sequence per partition (sender thread)
        self._fatal: errors.KafkaError | None = None
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
        key_b = _to_bytes(self.key_serializer(key) if self.key_serializer and key is not None else key)
        value_b = _to_bytes(self.value_serializer(value) if self.value_serializer and value is not None else value)
        hdrs = [(k, _to_bytes(v)) for k, v in headers] if headers else None
        size = 21 + (len(key_b) if key_b else 0) + (len(value_b) if value_b else 0)
        if size > self.config.max_request_size:
            raise errors.MessageTooLargeError(
                f"The message is {size} bytes when serialized which is larger than max.request.size "
                f"({self.config.max_request_size})")
        ts = timestamp_ms if timestamp_ms is not None else self.clock.wall_ms()
        tp = self._partition_for(topic, partition, key, key_b, value, value_b)
        if self.txn is not None:
            self.txn.maybe_add_partition(tp)
        fut = FutureRecordMetadata()
        if callback is not None:
            fut.add_done_callback(lambda f: callback(f.result() if f.exception() is None else None, f.exception()))
        deadline = time.monotonic() + self.config.max_block_ms / 1000.0
        with self._lock:
            started = time.monotonic()
            while True:
                res = self.accumulator.append(tp, ts, key_b, value_b, hdrs, self.clock.monotonic_ms())
                if res.batch is not None:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    self.metrics_.record_error(1)
                    raise errors.BufferExhaustedError(
                        f"Failed to allocate {size} bytes within the configured max blocking time "
                        f"{self.config.max_block_ms} ms (buffer.memory={self.config.buffer_memory}, "
                        f"{self.accumulator.available_bytes()} available)")
                self._wake.set()
                self._space.wait(left)
            if time.monotonic() - started > 0.0005:
                self.metrics_.record_buffer_wait((time.monotonic() - started) * 1000)
            res.batch.futures.append((fut, len(key_b) if key_b else -1, len(value_b) if value_b else -1, ts))
            if res.new_batch and key_b is None and isinstance(self.partitioner, DefaultPartitioner):
                pass
        if res.batch_full or res.new_batch and self.accumulator.linger_ms == 0:
            self._wake.set()
        if res.batch_full and key_b is None and isinstance(self.partitioner, DefaultPartitioner):
            self.partitioner.on_new_batch(topic, self.metadata.cluster, tp.partition)
        return fut

    def flush(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self.accumulator.flushing = True
            pending = [f for dq in self.accumulator.batches.values() for b in dq for f, *_ in b.futures]
        pending += self._inflight_futures()
        self._wake.set()
        try:
            for f in pending:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    f.exception(left)
                except TimeoutError:
                    raise errors.KafkaTimeoutError(f"flush did not complete within {timeout} s") from None
        finally:
            with self._lock:
                self.accumulator.flushing = False

    def close(self, timeout: float | None = None) -> None:
        if self._closed:
            return
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
            self._sender.join(timeout=5)
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
        parts = self.metadata.cluster.partitions.get(topic)
        if parts is None:
            parts = self._wait_for_topic(topic)
        if partition is not None:
            if not 0 <= partition < len(parts):
                raise errors.UnknownTopicOrPartitionError(
                    f"Partition {partition} of topic {topic} with partition count {len(parts)} is not present")
            return TopicPartition(topic, partition)
        p = self.partitioner(topic, key, key_b, value, value_b, self.metadata.cluster)
        return TopicPartition(topic, p)

    def _wait_for_topic(self, topic: str):
        deadline = time.monotonic() + self.config.max_block_ms / 1000.0
        delay = 0.05
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
    def _inflight_futures(self) -> list:
        return [f for fs in list(self._inflight_batches.values()) for f in fs] if hasattr(self, "_inflight_batches") else []

    def _run(self) -> None:
        self._inflight_batches: dict[int, list] = {}
        try:
            while True:
                self._handle_responses()
                if self._closed and not self._inflight and not self.accumulator.has_undrained():
                    break
                now = self.clock.monotonic_ms()
                if self.idempotent and self.producer_id < 0 and self._fatal is None:
                    if self.accumulator.has_undrained() or self.txn is not None:
                        if not self._init_producer_id():
                            self._wait(self.config.retry_backoff_ms)
                            continue
                self._expire(now)
                with self._lock:
                    ready, next_ms = self.accumulator.ready(now)
                sent = self._send_ready(ready, now) if ready else False
                if not sent:
                    self._wait(min(next_ms, 50))
        except Exception:
            log.exception("producer sender thread died")
            self._fatal = errors.IllegalStateError("the producer's sender thread died; see the log")
            with self._lock:
                left = self.accumulator.abort_all()
            for b in left:
                self._fail_batch(b, self._fatal)

    def _wait(self, ms: float) -> None:
        try:
            item = self._responses.get(timeout=ms / 1000.0)
            self._responses.put(item)
        except queue.Empty:
            pass
        if self._wake.is_set():
            self._wake.clear()

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

    def _expire(self, now: int) -> None:
        with self._lock:
            expired = self.accumulator.expired(now)
        for b in expired:
            self._fail_batch(b, errors.KafkaTimeoutError(
                f"Expiring {b.record_count} record(s) for {b.tp}: {now - b.created_ms} ms has passed since "
                f"batch creation (delivery.timeout.ms={self.config.delivery_timeout_ms})"))
            if self.idempotent and b.attempts > 0:
                # The broker may or may not hold it: start a fresh producer id so sequences stay valid.
                self.producer_id = -1

    def _send_ready(self, ready: list[TopicPartition], now: int) -> bool:
        by_leader: dict[str, list[TopicPartition]] = {}
        need_refresh = False
        for tp in ready:
            addr = self.metadata.leader_address(tp)
            if addr is None:
                need_refresh = True
                continue
            by_leader.setdefault(addr, []).append(tp)
        if need_refresh:
            self._refresh_metadata()
        sent = False
        max_inflight = self.config.max_in_flight_requests_per_connection
        for addr, tps in by_leader.items():
            if self._inflight.get(addr, 0) >= max_inflight:
                continue
            batches: list[ProducerBatch] = []
            with self._lock:
                for tp in tps:
                    batches.extend(self.accumulator.drain(tp, self.config.max_request_size))
                if self.accumulator.flushing or self.accumulator.closing:
                    pass
                self._space.notify_all()
            if batches:
                self._send_request(addr, batches, now)
                sent = True
        return sent

    def _send_request(self, addr: str, batches: list[ProducerBatch], now: int) -> None:
        req = bpb.ProduceRequest(acks=self.acks, timeout_ms=self.config.request_timeout_ms,
                                 transactional_id=self.config.transactional_id or "")
        by_tp: dict[TopicPartition, list[bytes]] = {}
        for b in batches:
            if self.idempotent and self.producer_id >= 0:
                if b.base_sequence < 0:
                    seq = self._sequences.get(b.tp, 0)
                    b.base_sequence = seq
                    self._sequences[b.tp] = (seq + b.record_count) & 0x7FFFFFFF
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
        token = id(req)
        self._inflight_batches[token] = [f for b in batches for f, *_ in b.futures]
        stub = bgrpc.BrokerStub(self.pool.get(addr))
        timeout = self.config.request_timeout_ms / 1000.0 + 1.0
        if self.acks == 0:
            call = stub.Produce.future(req, timeout=timeout)
            call.add_done_callback(lambda f: None)
            self._responses.put((addr, token, batches, None, None, now))
            return
        call = stub.Produce.future(req, timeout=timeout)
        call.add_done_callback(lambda f: self._responses.put((addr, token, batches, f, None, now)))

    def _handle_responses(self) -> None:
        while True:
            try:
                addr, token, batches, call, _, sent_ms = self._responses.get_nowait()
            except queue.Empty:
                return
            self._inflight[addr] = max(0, self._inflight.get(addr, 0) - 1)
            self._inflight_batches.pop(token, None)
            now = self.clock.monotonic_ms()
            if call is None:  # acks=0
                for b in batches:
                    self._complete_batch(b, -1)
                continue
            self.metrics_.record_latency(now - sent_ms)
            try:
                resp = call.result()
            except grpc.RpcError as e:
                err = transport_error(e, addr)
                if isinstance(err, errors.KafkaConnectionError):
                    self.pool.reset(addr) if e.code() != grpc.StatusCode.UNAVAILABLE else None
                self._retry_or_fail(batches, err, now)
                continue
            results = {(p.topic, p.partition): p for p in resp.partitions}
            groups: dict[TopicPartition, list[ProducerBatch]] = {}
            for b in batches:
                groups.setdefault(b.tp, []).append(b)
            for tp, bs in groups.items():
                p = results.get((tp.topic, tp.partition))
                if p is None:
                    self._retry_or_fail(bs, errors.UnknownServerError("no response for partition"), now)
                    continue
                if p.error_code == 0 or p.error_code == errors.DuplicateSequenceNumberError.code:
                    offset = p.base_offset
                    for b in bs:
                        self._complete_batch(b, offset)
                        if offset >= 0:
                            offset += b.record_count
                    with self._lock:
                        self.accumulator.unmute(tp)
                else:
                    self._retry_or_fail(bs, errors.for_code(p.error_code, p.error_message), now)

    def _retry_or_fail(self, batches: list[ProducerBatch], err: errors.KafkaError, now: int) -> None:
        if err.invalid_metadata or isinstance(err, errors.KafkaConnectionError):
            self._refresh_metadata()
        tp = batches[0].tp
        retriable = err.retriable and not isinstance(err, errors.OutOfOrderSequenceNumberError)
        if isinstance(err, errors.OutOfOrderSequenceNumberError) and self.idempotent:
            retriable = False
        keep, fail = [], []
        for b in batches:
            if retriable and b.attempts <= self.config.retries and \
                    now - b.created_ms < self.config.delivery_timeout_ms:
                keep.append(b)
            else:
                fail.append(b)
        for b in fail:
            self._fail_batch(b, err)
        if keep:
            self.metrics_.record_retry(sum(b.record_count for b in keep))
            attempt = keep[0].attempts
            backoff = min(self.config.retry_backoff_ms * (2 ** max(attempt - 1, 0)), self.config.retry_backoff_max_ms)
            backoff = int(backoff * self._rng.uniform(0.8, 1.2))
            log.debug("retrying %d batch(es) for %s after %s (attempt %d)", len(keep), tp, err, attempt)
            with self._lock:
                self.accumulator.reenqueue(keep, now + backoff)
        else:
            with self._lock:
                self.accumulator.unmute(tp)
        if self.txn is not None and fail:
            self.txn.on_send_failed(err)

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
        for i, (fut, ks, vs, ts) in enumerate(b.futures):
            off = base_offset + i if base_offset >= 0 else -1
            if not fut.done():
                fut.set_result(RecordMetadata(b.tp.topic, b.tp.partition, off, ts, ks, vs))

    def _fail_batch(self, b: ProducerBatch, err: Exception) -> None:
        with self._lock:
            self.accumulator.complete(b)
            self._space.notify_all()
        self.metrics_.record_error(b.record_count)
        for fut, *_ in b.futures:
            if not fut.done():
                fut.set_exception(err)
