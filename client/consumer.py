"""Consumer: Kafka's model — assign or subscribe, positions per partition, a fetcher, poll().

poll() is the application thread's: positions, the buffered records and
the fetch requests belong to it. Group membership (subscribe, commits,
heartbeats) lives in client/group_member.py.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import grpc

from client.common import errors, records
from client.common.clock import SystemClock
from client.common.config import ConsumerConfig
from client.common.network import ChannelPool, transport_error
from client.common.pb import broker_pb2 as bpb
from client.common.pb import broker_pb2_grpc as bgrpc
from client.common.security import channel_credentials_from_config, sasl_metadata
from client.common.types import ConsumerRecord, OffsetAndMetadata, TopicPartition
from client.metadata import Metadata
from client.metrics import ConsumerMetrics

log = logging.getLogger(__name__)

EARLIEST, LATEST = -2, -1


class ConsumerRecords(dict):
    """{TopicPartition: [ConsumerRecord]} as kafka-python returns; iterating yields records as Java's does."""

    def __iter__(self):
        for recs in self.values():
            yield from recs

    def __len__(self) -> int:
        return sum(len(v) for v in self.values())

    def __bool__(self) -> bool:
        return any(self.values())

    def count(self) -> int:
        return len(self)

    def is_empty(self) -> bool:
        return not self

    def records(self, tp: TopicPartition) -> list[ConsumerRecord]:
        return self.get(tp, [])

    def partitions(self) -> set[TopicPartition]:
        return set(self.keys())


class Consumer:
    def __init__(self, config: dict[str, Any] | None = None, *topics: str, **kwargs):
        self.config = ConsumerConfig.from_props(config, **kwargs)  # kwargs: linger_ms=5 -> linger.ms
        c = self.config
        self.client_id = c.client_id or f"consumer-{id(self) & 0xffff}"
        self.clock = SystemClock()
        self.pool = ChannelPool(f"client:{self.client_id}", metadata=sasl_metadata(self.config),
                                channel_credentials=channel_credentials_from_config(self.config))
        self.metadata = Metadata(c.bootstrap_servers, self.pool, self.clock, c.request_timeout_ms)
        self.metrics_ = ConsumerMetrics(self.clock)
        self.read_committed = c.isolation_level == "read_committed"
        self.key_deserializer = c.key_deserializer
        self.value_deserializer = c.value_deserializer
        self._assigned: list[TopicPartition] = []
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._buffer: dict[TopicPartition, list[ConsumerRecord]] = {}
        self._high_watermarks: dict[TopicPartition, int] = {}
        self._inflight: dict[str, tuple] = {}  # leader address -> (fetch future, {tp: position sent}, sent at)
        self._fetch_done = threading.Event()  # set by gRPC threads when any in-flight fetch completes
        self._last_overdue_refresh = 0.0
        self._closed = False
        self.group = None
        if c.group_id:
            from client.group_member import ConsumerCoordinator
            self.group = ConsumerCoordinator(self)
        if topics:
            self.subscribe(list(topics))

    # -- assignment ------------------------------------------------------
    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        tps = [TopicPartition(*tp) for tp in partitions]
        if self.group is not None and self.group.subscribed():
            raise errors.IllegalStateError("Subscription to topics and manual assignment are mutually exclusive")
        for tp in tps:
            self.metadata.partitions_for(tp.topic)
        self._set_assignment(tps)

    def _set_assignment(self, tps: list[TopicPartition]) -> None:
        keep = set(tps)
        self._assigned = list(dict.fromkeys(tps))
        for d in (self._positions, self._buffer, self._high_watermarks):
            for tp in list(d):
                if tp not in keep:
                    del d[tp]
        self._paused &= keep
        self.metrics_.forget([tp for tp in list(self.metrics_.lag) if tp not in keep])

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def subscribe(self, topics=None, pattern=None, listener=None) -> None:
        if self.group is None:
            raise errors.InvalidGroupIdError("subscribe() needs group.id to be set")
        self.group.subscribe(topics, pattern, listener)

    def unsubscribe(self) -> None:
        if self.group is not None:
            self.group.unsubscribe()
        self._set_assignment([])

    def subscription(self) -> set[str]:
        return set(self.group.subscription) if self.group is not None else set()

    # -- positions -------------------------------------------------------
    def seek(self, tp: TopicPartition, offset: int | OffsetAndMetadata) -> None:
        tp = TopicPartition(*tp)
        if tp not in self._assigned:
            raise errors.IllegalStateError(f"No current assignment for partition {tp}")
        if isinstance(offset, OffsetAndMetadata):
            offset = offset.offset
        if offset < 0:
            raise errors.IllegalStateError(f"seek offset must not be negative: {offset}")
        self._positions[tp] = offset
        self._buffer.pop(tp, None)

    def seek_to_beginning(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        self._reset(list(partitions) if partitions else list(self._assigned), EARLIEST)

    def seek_to_end(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        self._reset(list(partitions) if partitions else list(self._assigned), LATEST)

    def position(self, tp: TopicPartition, timeout: float | None = None) -> int:
        tp = TopicPartition(*tp)
        if tp not in self._assigned:
            raise errors.IllegalStateError("You can only check the position for partitions assigned to this consumer")
        if tp not in self._positions:
            self._init_positions([tp])
        return self._positions[tp]

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            tp = TopicPartition(*tp)
            if tp not in self._assigned:
                raise errors.IllegalStateError(f"No current assignment for partition {tp}")
            self._paused.add(tp)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._paused.discard(TopicPartition(*tp))

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def beginning_offsets(self, partitions) -> dict[TopicPartition, int]:
        return self._list_offsets([TopicPartition(*tp) for tp in partitions], EARLIEST)

    def end_offsets(self, partitions) -> dict[TopicPartition, int]:
        return self._list_offsets([TopicPartition(*tp) for tp in partitions], LATEST)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {p.partition for p in self.metadata.partitions_for(topic)}

    def list_topics(self) -> dict[str, set[int]]:
        self.metadata.refresh()
        return {t: {p.partition for p in ps} for t, ps in self.metadata.cluster.partitions.items()
                if not (self.config.exclude_internal_topics and t.startswith("__"))}

    def _reset(self, tps: list[TopicPartition], which: int) -> None:
        for tp, off in self._list_offsets([TopicPartition(*t) for t in tps], which).items():
            self._positions[tp] = off
            self._buffer.pop(tp, None)

    def _init_positions(self, tps: list[TopicPartition]) -> None:
        """Missing positions come from the committed offset, else auto.offset.reset."""
        missing = [tp for tp in tps if tp not in self._positions]
        if not missing:
            return
        if self.group is not None:
            for tp, om in self.group.fetch_committed(missing).items():
                if om is not None and om.offset >= 0:
                    self._positions[tp] = om.offset
            missing = [tp for tp in missing if tp not in self._positions]
        if not missing:
            return
        policy = self.config.auto_offset_reset
        if policy == "none":
            raise errors.NoOffsetForPartitionError(
                f"Undefined offset with no reset policy for partitions: {[str(tp) for tp in missing]}")
        self._reset(missing, EARLIEST if policy == "earliest" else LATEST)

    def _list_offsets(self, tps: list[TopicPartition], timestamp: int, timeout_s: float = 30.0) -> dict:
        out: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + timeout_s
        pending = list(tps)
        while pending:
            by_leader: dict[str, list[TopicPartition]] = {}
            for tp in pending:
                self.metadata.partitions_for(tp.topic)
                addr = self.metadata.leader_address(tp)
                if addr:
                    by_leader.setdefault(addr, []).append(tp)
            retry = [tp for tp in pending if not self.metadata.leader_address(tp)]
            for addr, group in by_leader.items():
                req = bpb.ListOffsetsRequest(isolation_level=1 if self.read_committed else 0)
                for tp in group:
                    req.partitions.add(topic=tp.topic, partition=tp.partition, timestamp=timestamp)
                try:
                    resp = bgrpc.BrokerStub(self.pool.get(addr)).ListOffsets(req, timeout=5)
                except grpc.RpcError:
                    retry.extend(group)
                    continue
                for p in resp.partitions:
                    tp = TopicPartition(p.topic, p.partition)
                    if p.error_code:
                        err = errors.for_code(p.error_code, p.error_message)
                        if not err.retriable:
                            raise err
                        retry.append(tp)
                    else:
                        out[tp] = p.offset
            pending = retry
            if pending:
                if time.monotonic() > deadline:
                    raise errors.KafkaTimeoutError(f"could not list offsets for {[str(t) for t in pending]}")
                time.sleep(0.1)
                self._refresh_metadata()
        return out

    # -- poll ------------------------------------------------------------
    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> ConsumerRecords:
        if self._closed:
            raise errors.IllegalStateError("This consumer has already been closed.")
        max_records = max_records or self.config.max_poll_records
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000.0
        if self.group is not None:
            self.group.poll(deadline)
        while True:
            out = self._drain_buffer(max_records)
            if out:
                self._prefetch()
                self.metrics_.record_poll(len(out))
                if self.group is not None:
                    self.group.on_records_returned()
                return out
            left_ms = int((deadline - time.monotonic()) * 1000)
            fetchable = [tp for tp in self._assigned if tp not in self._paused]
            if fetchable:
                self._init_positions(fetchable)
                self._fetch(fetchable, max(0, min(left_ms, self.config.fetch_max_wait_ms)), deadline)
                out = self._drain_buffer(max_records)
                if out:
                    self._prefetch()
                    self.metrics_.record_poll(len(out))
                    return out
            elif left_ms > 0:
                time.sleep(min(left_ms, 50) / 1000.0)
            if time.monotonic() >= deadline:
                self.metrics_.record_poll(0)
                return ConsumerRecords()
            if self.group is not None:
                self.group.poll(deadline)

    def _drain_buffer(self, max_records: int) -> ConsumerRecords:
        out = ConsumerRecords()
        n = 0
        for tp in list(self._buffer):
            if tp in self._paused or tp not in self._positions:
                continue
            recs = self._buffer[tp]
            take = recs[:max_records - n]
            if not take:
                break
            rest = recs[len(take):]
            if rest:
                self._buffer[tp] = rest
            else:
                del self._buffer[tp]
            out[tp] = take
            self._positions[tp] = take[-1].offset + 1
            n += len(take)
            if n >= max_records:
                break
        return out

    def _prefetch(self) -> None:
        """As Kafka's fetcher: partitions with nothing buffered are fetched before poll returns, so
        the brokers work while the application processes what it got."""
        self._fetch([tp for tp in self._assigned if tp not in self._paused and tp in self._positions],
                    self.config.fetch_max_wait_ms, send_only=True)

    def _fetch(self, tps: list[TopicPartition], max_wait_ms: int, deadline: float | None = None,
               send_only: bool = False) -> None:
        """Sends fetches for partitions with nothing buffered or in flight, then handles the answers
        that arrive before `deadline`. A fetch still unanswered then stays in flight for the next
        poll, so poll(timeout) returns on time even when a leader hangs (Kafka's fetcher does the same).
        `send_only`: send and return; the answers are handled by a later call."""
        if deadline is None:
            deadline = time.monotonic() + max_wait_ms / 1000.0 + self.config.request_timeout_ms / 1000.0
        now = time.monotonic()
        overdue = [addr for addr, (_, _, sent_at) in self._inflight.items()
                   if now - sent_at > self.config.fetch_max_wait_ms / 1000.0 + 1.0]
        if overdue and now - self._last_overdue_refresh > 0.5:
            # A fetch far past its long-poll time: its leader may hang; see if leadership moved.
            self._last_overdue_refresh = now
            self._refresh_metadata()
        for addr, (call, sent, _) in list(self._inflight.items()):
            if any(self.metadata.leader_address(tp) != addr for tp in sent):
                call.cancel()  # leadership moved (e.g. the old leader hangs): fetch from the new one
                del self._inflight[addr]
        busy = {tp for _, sent, _ in self._inflight.values() for tp in sent}
        by_leader: dict[str, list[TopicPartition]] = {}
        missing = False
        for tp in tps:
            if tp in self._buffer or tp in busy:
                continue
            addr = self.metadata.leader_address(tp)
            if addr is None:
                missing = True
                continue
            if addr in self._inflight:
                continue  # one fetch per leader at a time, as Kafka's fetcher
            by_leader.setdefault(addr, []).append(tp)
        if missing:
            self._refresh_metadata()
        if not by_leader and not self._inflight:
            if missing and not send_only:
                time.sleep(max(0.0, min(max_wait_ms / 1000.0, 0.1, deadline - time.monotonic())))
            return
        c = self.config
        for addr, group in by_leader.items():
            req = bpb.FetchRequest(replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=c.fetch_min_bytes,
                                   max_bytes=c.fetch_max_bytes, isolation_level=1 if self.read_committed else 0)
            for tp in group:
                req.partitions.add(topic=tp.topic, partition=tp.partition, fetch_offset=self._positions[tp],
                                   partition_max_bytes=c.max_partition_fetch_bytes,
                                   current_leader_epoch=-1)
            stub = bgrpc.BrokerStub(self.pool.get(addr))
            call = stub.Fetch.future(req, timeout=max_wait_ms / 1000.0 + c.request_timeout_ms / 1000.0)
            self._inflight[addr] = (call, {tp: self._positions[tp] for tp in group}, time.monotonic())
            call.add_done_callback(lambda _f: self._fetch_done.set())
        if send_only:
            return
        # Wait until some fetch answers (or the deadline); one hung leader must not hold up the others.
        while not any(call.done() for call, _, _ in self._inflight.values()):
            left = deadline - time.monotonic()
            if left <= 0 or not self._inflight:
                break
            self._fetch_done.wait(left)
            self._fetch_done.clear()
        refresh = False
        for addr, (call, sent, _) in list(self._inflight.items()):
            if not call.done():
                continue  # still in flight: handled by a later poll
            try:
                resp = call.result()
            except grpc.RpcError as e:
                del self._inflight[addr]
                self.metrics_.record_fetch()
                log.debug("fetch from %s failed: %s", addr, transport_error(e))
                refresh = True
                continue
            del self._inflight[addr]
            self.metrics_.record_fetch()
            for p in resp.partitions:
                tp = TopicPartition(p.topic, p.partition)
                if tp not in self._positions or self._positions[tp] != sent.get(tp) or tp in self._buffer:
                    continue  # sought, reassigned or already buffered since the fetch was sent
                if p.error_code:
                    err = errors.for_code(p.error_code, p.error_message)
                    if isinstance(err, errors.OffsetOutOfRangeError):
                        self._handle_out_of_range(tp, err)
                    elif err.invalid_metadata or err.retriable:
                        refresh = True
                    else:
                        raise err
                    continue
                self._high_watermarks[tp] = p.high_watermark
                data = p.records  # a protobuf bytes field is copied on every access: read it once
                if data:
                    with records.gc_paused():
                        recs = self._decode(tp, data, self._positions[tp], p.aborted_transactions)
                    if recs:
                        self._buffer[tp] = recs
                    else:
                        # Only control records / aborted data: step past them.
                        last = None
                        for h, _ in records.iter_batches(data):
                            last = h
                        if last is not None and last.next_offset > self._positions[tp]:
                            self._positions[tp] = last.next_offset
                upto = p.last_stable_offset if self.read_committed else p.high_watermark
                self.metrics_.record_lag(tp, max(0, upto - self._positions[tp]))
        if refresh:
            self._refresh_metadata()

    def _handle_out_of_range(self, tp: TopicPartition, err) -> None:
        policy = self.config.auto_offset_reset
        if policy == "none":
            raise errors.OffsetOutOfRangeError(f"{tp}: {err}")
        log.info("Resetting offset for %s (%s) to %s", tp, err, policy)
        self._reset([tp], EARLIEST if policy == "earliest" else LATEST)

    def _decode(self, tp: TopicPartition, data: bytes, position: int, aborted) -> list[ConsumerRecord]:
        out = []
        aborted_pids = {}
        if self.read_committed and aborted:
            for a in aborted:
                aborted_pids.setdefault(a.producer_id, []).append(a.first_offset)
            for starts in aborted_pids.values():
                starts.sort()
        kd, vd = self.key_deserializer, self.value_deserializer
        check = self.config.check_crcs
        topic, partition = tp.topic, tp.partition
        aborting: set[int] = set()
        for h, raw in records.iter_batches(data):
            if h.last_offset < position:
                continue
            if check:
                records.validate(raw)
            if self.read_committed and h.is_transactional:
                pid = h.producer_id
                starts = aborted_pids.get(pid)
                while starts and starts[0] <= h.base_offset:
                    starts.pop(0)
                    aborting.add(pid)
                if h.is_control:
                    aborting.discard(pid)
                    continue
                if pid in aborting:
                    continue
            if h.is_control:
                continue
            # One pass from bytes to ConsumerRecords (records.decode_consumer_records).
            out += records.decode_consumer_records(raw, topic, partition, position, kd or None, vd or None, h)
        return out

    def _refresh_metadata(self) -> None:
        try:
            self.metadata.refresh()
        except errors.KafkaError as e:
            log.debug("metadata refresh failed: %s", e)

    # -- commits (group) ---------------------------------------------------
    def commit_sync(self, offsets: dict | None = None, timeout: float | None = None) -> None:
        self._require_group().commit_sync(offsets if offsets is not None else self._current_offsets(), timeout)

    def commit_async(self, offsets: dict | None = None, callback=None) -> None:
        self._require_group().commit_async(offsets if offsets is not None else self._current_offsets(), callback)

    commitSync = commit_sync  # the patterns document's spelling
    commitAsync = commit_async

    def committed(self, partitions, timeout: float | None = None):
        group = self._require_group()
        if isinstance(partitions, (TopicPartition, tuple)) and len(partitions) == 2 and isinstance(partitions[1], int):
            res = group.fetch_committed([TopicPartition(*partitions)])
            return next(iter(res.values()), None)
        return group.fetch_committed([TopicPartition(*tp) for tp in partitions])

    def group_metadata(self):
        return self._require_group().group_metadata()

    def _current_offsets(self) -> dict[TopicPartition, OffsetAndMetadata]:
        return {tp: OffsetAndMetadata(off) for tp, off in self._positions.items() if tp in self._assigned}

    def _require_group(self):
        if self.group is None:
            raise errors.InvalidGroupIdError("This operation needs group.id to be set")
        return self.group

    def metrics(self) -> dict[str, float]:
        return self.metrics_.snapshot()

    def close(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        try:
            if self.group is not None:
                self.group.close(timeout)
        finally:
            self._closed = True
            for call, _, _ in self._inflight.values():
                call.cancel()
            self._inflight.clear()
            self.pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        while not self._closed:
            yield from self.poll(1000)
