"""RecordAccumulator: a deque of batches per partition, bounded by buffer.memory (model).

No threads or clocks inside: the producer's driver passes `now_ms` and
holds the lock. A batch is ready when it is full, when linger.ms has passed
since it was opened, when a flush is asked for, or when the producer closes.
While a partition has a batch in flight it is muted (one request in flight
per partition), which keeps send order through retries.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from client.common.records import BatchBuilder
from client.common.types import TopicPartition


@dataclass(slots=True, eq=False)
class ProducerBatch:
    tp: TopicPartition
    builder: BatchBuilder
    created_ms: int
    futures: list = field(default_factory=list)   # one per record, in append order
    attempts: int = 0
    retry_after_ms: int = 0
    base_sequence: int = -1
    reserved_bytes: int = 0
    sent_ms: int = 0

    @property
    def record_count(self) -> int:
        return self.builder.record_count


@dataclass(frozen=True, slots=True)
class AppendResult:
    batch: ProducerBatch | None   # None: the buffer is full, the caller must wait
    new_batch: bool
    batch_full: bool


class RecordAccumulator:
    def __init__(self, batch_size: int, linger_ms: int, buffer_memory: int, compression: str,
                 delivery_timeout_ms: int):
        self.batch_size = max(batch_size, 1)
        self.linger_ms = linger_ms
        self.buffer_memory = buffer_memory
        self.compression = compression
        self.delivery_timeout_ms = delivery_timeout_ms
        self.batches: dict[TopicPartition, deque[ProducerBatch]] = {}
        self.muted: set[TopicPartition] = set()
        self.used_bytes = 0
        self.flushing = False
        self.closing = False

    def available_bytes(self) -> int:
        return self.buffer_memory - self.used_bytes

    def append(self, tp: TopicPartition, timestamp_ms: int, key, value, headers, now_ms: int) -> AppendResult:
        dq = self.batches.get(tp)
        if dq is None:
            dq = self.batches[tp] = deque()
        size = 21 + (len(key) if key else 0) + (len(value) if value else 0)
        if dq:
            last = dq[-1]
            if last.attempts == 0 and last.builder.try_append(timestamp_ms, key, value, headers):
                self.used_bytes += size
                last.reserved_bytes += size
                return AppendResult(last, False, last.builder.is_full)
        if self.used_bytes + size > self.buffer_memory and self.used_bytes > 0:
            return AppendResult(None, False, False)
        b = ProducerBatch(tp, BatchBuilder(self.compression, batch_size=self.batch_size), now_ms)
        b.builder.try_append(timestamp_ms, key, value, headers)
        b.reserved_bytes = size
        self.used_bytes += size
        dq.append(b)
        return AppendResult(b, True, b.builder.is_full)

    def ready(self, now_ms: int) -> tuple[list[TopicPartition], int]:
        """Partitions with a sendable batch, and ms until the next one may become ready."""
        out, next_ms = [], self.linger_ms if self.linger_ms > 0 else 100
        for tp, dq in self.batches.items():
            if not dq or tp in self.muted:
                continue
            b = dq[0]
            if b.retry_after_ms > now_ms:
                next_ms = min(next_ms, b.retry_after_ms - now_ms)
                continue
            waited = now_ms - b.created_ms
            full = len(dq) > 1 or b.builder.is_full
            if full or waited >= self.linger_ms or self.flushing or self.closing or b.attempts > 0:
                out.append(tp)
            else:
                next_ms = min(next_ms, self.linger_ms - waited)
        return out, max(next_ms, 1)

    def drain(self, tp: TopicPartition, max_bytes: int) -> list[ProducerBatch]:
        """Takes the sendable batches at the head of tp's deque (a retry goes alone) and mutes tp."""
        dq = self.batches.get(tp)
        if not dq:
            return []
        out = [dq.popleft()]
        if out[0].attempts == 0:
            size = out[0].builder.estimated_size
            while dq and dq[0].attempts == 0 and size + dq[0].builder.estimated_size <= max_bytes:
                b = dq.popleft()
                size += b.builder.estimated_size
                out.append(b)
        self.muted.add(tp)
        return out

    def reenqueue(self, batches: list[ProducerBatch], retry_after_ms: int) -> None:
        """Puts retried batches back at the head, in their order, and unmutes."""
        if not batches:
            return
        tp = batches[0].tp
        dq = self.batches.setdefault(tp, deque())
        for b in reversed(batches):
            b.retry_after_ms = retry_after_ms
            dq.appendleft(b)
        self.muted.discard(tp)

    def complete(self, batch: ProducerBatch) -> None:
        self.used_bytes -= batch.reserved_bytes
        batch.reserved_bytes = 0

    def unmute(self, tp: TopicPartition) -> None:
        self.muted.discard(tp)

    def expired(self, now_ms: int) -> list[ProducerBatch]:
        """Batches not in flight whose delivery.timeout.ms has passed; removed from the deques."""
        out = []
        for tp, dq in self.batches.items():
            if tp in self.muted:
                continue
            while dq and now_ms - dq[0].created_ms >= self.delivery_timeout_ms:
                out.append(dq.popleft())
        return out

    def abort_all(self) -> list[ProducerBatch]:
        out = []
        for dq in self.batches.values():
            out.extend(dq)
            dq.clear()
        return out

    def has_undrained(self) -> bool:
        return any(self.batches.values())

    def partitions_with_batches(self) -> list[TopicPartition]:
        return [tp for tp, dq in self.batches.items() if dq]
