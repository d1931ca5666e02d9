"""RecordAccumulator: a deque of batches per partition, bounded by buffer.memory (model).

No threads or clocks inside: the producer's driver passes `now_ms` and
holds the lock. A batch is ready when it is full, when linger.ms has passed
since it was opened, when a flush is asked for, when send() is blocked on
buffer.memory, or when the producer closes.

Batches in flight per partition are capped by `max_in_flight_per_partition`:
1 for a plain producer, which keeps send order through retries (the broker
handles requests concurrently, so two in flight could be appended in either
order); up to max.in.flight.requests.per.connection (<= 5) for an idempotent
one, as Kafka: the broker appends a partition's batches in sequence order (it
holds a batch that arrives before its predecessor for a bounded time, then
answers OUT_OF_ORDER_SEQUENCE_NUMBER and the producer retries), and 5
is the broker's duplicate window (the last 5 batches of a producer). A batch
coming back for a retry is put in sequence order and goes out alone, once
nothing else of its partition is in flight.

Memory is accounted as Kafka's BufferPool does: each new batch reserves
max(batch.size, its first record) of buffer.memory, returned when the batch
completes; appending to an open batch needs no memory.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from client.common.errors import BufferExhaustedError
from client.common.records import BatchBuilder
from client.common.types import TopicPartition

# The broker recognises a retry as a duplicate among a producer's last 5 batches of a partition
# (node/producer_state.py MAX_BATCHES_PER_PRODUCER, Kafka's too).
MAX_UNACKED_SEQUENCED = 5
IDLE_MS = 1000  # nothing queued: send() wakes the sender, so this only bounds the sleep


def record_size(key, value, headers=None) -> int:
    """Kafka's upper-bound estimate of one record's size in a batch (for buffer.memory and
    max.request.size checks)."""
    size = 21 + (len(key) if key else 0) + (len(value) if value else 0)
    if headers:
        size += sum(len(k) + (len(v) if v else 0) + 10 for k, v in headers)
    return size


@dataclass(slots=True, eq=False)
class ProducerBatch:
    tp: TopicPartition
    builder: BatchBuilder
    created_ms: int
    attempts: int = 0
    retry_after_ms: int = 0
    base_sequence: int = -1
    producer_epoch: int = -1   # the epoch it was (last) sent under
    reserved_bytes: int = 0
    sent_ms: int = 0
    result: object = None   # the driver's ProduceRequestResult, read by the records' futures

    @property
    def record_count(self) -> int:
        return self.builder.record_count


class SequenceNumbers:
    """The idempotent producer's next sequence per partition (Kafka's TxnPartitionEntry). A batch's
    base sequence is fixed at its first drain and kept through retries; sequences wrap at int32."""

    def __init__(self):
        self.next: dict[TopicPartition, int] = {}

    def assign(self, batch: ProducerBatch) -> int:
        if batch.base_sequence < 0:
            seq = self.next.get(batch.tp, 0)
            batch.base_sequence = seq
            self.next[batch.tp] = (seq + batch.record_count) & 0x7FFFFFFF
        return batch.base_sequence

    def clear(self) -> None:
        self.next.clear()


def _sequence_order(b: ProducerBatch) -> int:
    # Unsequenced retries (a plain producer's, one at a time) keep their place: sort is stable.
    return b.base_sequence


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
        self.max_in_flight_per_partition = 1   # batches (or one request of a plain producer's)
        self.sequenced = False   # an idempotent producer's batches (sequence numbers, duplicate window)
        self.in_flight: dict[TopicPartition, int] = {}   # batches sent and not yet answered
        self.used_bytes = 0
        self.incomplete: set[ProducerBatch] = set()  # appended, not yet completed or failed (flush waits)
        self.flushes_in_progress = 0
        self.waiters = 0   # send() calls blocked on buffer.memory: everything becomes ready
        self.closing = False

    def available_bytes(self) -> int:
        return self.buffer_memory - self.used_bytes

    def buffer_exhausted_error(self, max_block_ms: int) -> BufferExhaustedError:
        return BufferExhaustedError(
            f"Failed to allocate memory within the configured max blocking time {max_block_ms} ms "
            f"(max.block.ms): buffer.memory={self.buffer_memory} bytes are held by batches not yet "
            f"acknowledged ({self.available_bytes()} available, {self.batch_size} needed for a new batch)")

    def needs_new_batch(self, tp: TopicPartition, key, value, headers=None) -> bool:
        """Whether a record for tp would open a new batch (the sticky partitioner then moves on)."""
        dq = self.batches.get(tp)
        if not dq:
            return True
        last = dq[-1]
        return last.attempts > 0 or not last.builder.has_room_for(key, value, headers)

    def try_append_open(self, tp: TopicPartition, timestamp_ms: int, key, value, headers) -> ProducerBatch | None:
        """Appends to tp's open batch; None when the record needs a new batch (then the sticky
        partitioner moves on, as Kafka's abortOnNewBatch, and the caller calls `append`).
        The producer's per-record fast path: no result object, no clock."""
        dq = self.batches.get(tp)
        if dq:
            last = dq[-1]
            if last.attempts == 0 and last.builder.try_append(timestamp_ms, key, value, headers):
                return last
        return None

    def append(self, tp: TopicPartition, timestamp_ms: int, key, value, headers, now_ms: int) -> AppendResult:
        dq = self.batches.get(tp)
        if dq is None:
            dq = self.batches[tp] = deque()
        if dq:
            last = dq[-1]
            if last.attempts == 0 and last.builder.try_append(timestamp_ms, key, value, headers):
                return AppendResult(last, False, last.builder.is_full)
        # Kafka's BufferPool cannot hand out more than buffer.memory; the producer rejects
        # records larger than that before they get here.
        need = min(max(self.batch_size, record_size(key, value, headers)), self.buffer_memory)
        if self.used_bytes + need > self.buffer_memory:
            return AppendResult(None, False, False)
        b = ProducerBatch(tp, BatchBuilder(self.compression, batch_size=self.batch_size), now_ms)
        b.builder.try_append(timestamp_ms, key, value, headers)
        b.reserved_bytes = need
        self.used_bytes += need
        dq.append(b)
        self.incomplete.add(b)
        return AppendResult(b, True, b.builder.is_full or len(dq) > 1)

    def ready(self, now_ms: int) -> tuple[list[TopicPartition], int]:
        """Partitions with a sendable batch, and ms until the next one may become ready."""
        out, next_ms = [], IDLE_MS
        limit = self.max_in_flight_per_partition
        in_flight = self.in_flight
        for tp, dq in self.batches.items():
            if not dq:
                continue
            n = in_flight.get(tp, 0)
            b = dq[0]
            if n >= limit or (n and b.attempts > 0):
                continue
            if b.retry_after_ms > now_ms:
                next_ms = min(next_ms, b.retry_after_ms - now_ms)
                continue
            waited = now_ms - b.created_ms
            full = len(dq) > 1 or b.builder.is_full
            if full or waited >= self.linger_ms or self.flushes_in_progress or self.closing \
                    or self.waiters or b.attempts > 0:
                out.append(tp)
            else:
                next_ms = min(next_ms, self.linger_ms - waited)
        return out, max(next_ms, 1)

    def drain(self, tp: TopicPartition, max_bytes: int) -> list[ProducerBatch]:
        """Takes the sendable batches at the head of tp's deque (a retry goes alone), as many as
        the in-flight cap leaves room for, and counts them in flight."""
        dq = self.batches.get(tp)
        if not dq:
            return []
        # Sequenced batches: never more unanswered than the broker's duplicate window, or a retry
        # after a lost reply would be refused as out of order instead of answered as a duplicate.
        room = MAX_UNACKED_SEQUENCED - self.in_flight.get(tp, 0) if self.sequenced else len(dq)
        out = [dq.popleft()]
        if out[0].attempts == 0:
            size = out[0].builder.estimated_size
            while dq and len(out) < room and dq[0].attempts == 0 \
                    and size + dq[0].builder.estimated_size <= max_bytes:
                b = dq.popleft()
                size += b.builder.estimated_size
                out.append(b)
        self.in_flight[tp] = self.in_flight.get(tp, 0) + len(out)
        return out

    def reenqueue(self, batches: list[ProducerBatch], retry_after_ms: int) -> None:
        """Puts batches back from flight for a retry: at the head, the retries in sequence order
        (an idempotent producer's batches come back from several requests, in any order)."""
        if not batches:
            return
        tp = batches[0].tp
        self.unmute(tp, len(batches))
        dq = self.batches.setdefault(tp, deque())
        for b in batches:
            b.retry_after_ms = retry_after_ms
        retries = list(batches)
        while dq and dq[0].attempts > 0:
            retries.append(dq.popleft())
        retries.sort(key=_sequence_order)
        dq.extendleft(reversed(retries))

    def complete(self, batch: ProducerBatch) -> None:
        """The batch is done (sent, failed or expired): its memory goes back to the pool."""
        self.used_bytes -= batch.reserved_bytes
        batch.reserved_bytes = 0
        self.incomplete.discard(batch)

    def unmute(self, tp: TopicPartition, batches: int | None = None) -> None:
        """`batches` of tp's in-flight batches were answered (None: all of them)."""
        left = 0 if batches is None else self.in_flight.get(tp, 0) - batches
        if left > 0:
            self.in_flight[tp] = left
        else:
            self.in_flight.pop(tp, None)

    def expired(self, now_ms: int) -> list[ProducerBatch]:
        """Queued batches whose delivery.timeout.ms has passed; removed from the deques.
        In-flight batches are not here: their request times out first (delivery.timeout.ms >=
        linger.ms + request.timeout.ms) and the sender expires them then."""
        out = []
        for dq in self.batches.values():
            while dq and now_ms - dq[0].created_ms >= self.delivery_timeout_ms:
                out.append(dq.popleft())
        return out

    def abort_all(self) -> list[ProducerBatch]:
        out = []
        for dq in self.batches.values():
            out.extend(dq)
            dq.clear()
        return out

    def next_expiry_ms(self, now_ms: int) -> int:
        """ms until the oldest queued batch reaches delivery.timeout.ms (a cap on the sender's sleep)."""
        heads = [dq[0].created_ms for dq in self.batches.values() if dq]
        if not heads:
            return self.delivery_timeout_ms
        return max(min(heads) + self.delivery_timeout_ms - now_ms, 0)

    def has_undrained(self) -> bool:
        return any(self.batches.values())
