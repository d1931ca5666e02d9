"""RecordAccumulator with a manual clock: linger, batch.size, buffer.memory, expiry, muting, retries,
and the idempotent producer's sequence numbers."""
from __future__ import annotations

import pytest

from client.accumulator import RecordAccumulator, SequenceNumbers, record_size
from client.common.clock import ManualClock
from client.common.errors import BufferExhaustedError
from client.common.records import decode_records, validate
from client.common.types import TopicPartition

TP0 = TopicPartition("t", 0)
TP1 = TopicPartition("t", 1)
TP2 = TopicPartition("t", 2)


def acc(batch_size=1024, linger_ms=10, buffer_memory=1 << 20, delivery_timeout_ms=1000):
    return RecordAccumulator(batch_size, linger_ms, buffer_memory, "none", delivery_timeout_ms)


def append(a, tp, clock, value=b"v" * 10, key=None):
    return a.append(tp, clock.wall_ms(), key, value, None, clock.monotonic_ms())


def test_linger_holds_a_batch_until_linger_ms_has_passed():
    clock = ManualClock()
    a = acc(linger_ms=10)
    append(a, TP0, clock)
    assert a.ready(clock.monotonic_ms()) == ([], 10)
    clock.advance(4)
    append(a, TP0, clock)          # more records do not restart the linger
    assert a.ready(clock.monotonic_ms()) == ([], 6)
    clock.advance(6)
    assert a.ready(clock.monotonic_ms())[0] == [TP0]


def test_linger_zero_is_ready_at_once():
    clock = ManualClock()
    a = acc(linger_ms=0)
    append(a, TP0, clock)
    assert a.ready(0)[0] == [TP0]


def test_batch_size_makes_a_full_batch_ready_before_linger():
    clock = ManualClock()
    a = acc(batch_size=200, linger_ms=1000)
    # 61 bytes of batch header + 2 records of 50 bytes and 19 of overhead = 199: a third does not fit.
    r = [append(a, TP0, clock, b"x" * 50) for _ in range(2)]
    assert r[0].new_batch and not r[1].new_batch and not r[1].batch_full
    assert a.ready(0) == ([], 1000)
    r3 = append(a, TP0, clock, b"x" * 50)
    assert r3.new_batch and r3.batch_full       # the first batch is done: send it now
    assert a.ready(0)[0] == [TP0]
    assert [b.record_count for b in a.batches[TP0]] == [2, 1]


def test_a_record_bigger_than_batch_size_gets_its_own_batch():
    clock = ManualClock()
    a = acc(batch_size=100)
    r = append(a, TP0, clock, b"x" * 500)
    assert r.new_batch and r.batch_full and r.batch.record_count == 1
    assert a.used_bytes == record_size(None, b"x" * 500)


def test_each_new_batch_reserves_batch_size_until_it_completes():
    clock = ManualClock()
    a = acc(batch_size=1000, buffer_memory=2000)
    r0 = append(a, TP0, clock)
    append(a, TP0, clock)              # same open batch: no more memory
    assert a.available_bytes() == 1000
    r1 = append(a, TP1, clock)
    assert a.available_bytes() == 0
    assert append(a, TP2, clock).batch is None           # exhausted: the caller must wait
    assert append(a, TP0, clock).batch is r0.batch       # an open batch still takes records
    a.drain(TP1, 1 << 20)
    assert append(a, TP2, clock).batch is None           # draining does not free memory...
    a.complete(r1.batch)                                 # ...completion does
    assert append(a, TP2, clock).batch is not None
    a.complete(r1.batch)                                 # completing twice frees nothing twice
    assert a.available_bytes() == 0


def test_waiters_on_memory_make_every_batch_ready():
    clock = ManualClock()
    a = acc(linger_ms=10_000)
    append(a, TP0, clock)
    assert a.ready(0)[0] == []
    a.waiters = 1
    assert a.ready(0)[0] == [TP0]


def test_buffer_exhausted_error_names_buffer_memory_and_max_block_ms():
    a = acc(batch_size=1000, buffer_memory=2000)
    e = a.buffer_exhausted_error(max_block_ms=250)
    assert isinstance(e, BufferExhaustedError)
    assert "buffer.memory=2000" in str(e) and "max.block.ms" in str(e) and "250 ms" in str(e)


def test_flush_and_close_make_lingering_batches_ready():
    clock = ManualClock()
    a = acc(linger_ms=10_000)
    append(a, TP0, clock)
    a.flushes_in_progress += 1
    assert a.ready(0)[0] == [TP0]
    a.flushes_in_progress -= 1
    assert a.ready(0)[0] == []
    a.closing = True
    assert a.ready(0)[0] == [TP0]


def test_incomplete_tracks_batches_until_completed_for_flush():
    clock = ManualClock()
    a = acc()
    b0 = append(a, TP0, clock).batch
    b1 = append(a, TP1, clock).batch
    assert a.incomplete == {b0, b1}
    a.drain(TP0, 1 << 20)
    assert a.incomplete == {b0, b1}        # in flight is still incomplete: flush waits for it
    a.complete(b0)
    assert a.incomplete == {b1}


def test_delivery_timeout_expires_queued_batches():
    clock = ManualClock()
    a = acc(linger_ms=10_000, delivery_timeout_ms=1000)
    old = append(a, TP0, clock).batch
    clock.advance(600)
    a.append(TP0, 0, None, b"x" * 2000, None, clock.monotonic_ms())  # too big for old: a newer batch
    assert a.expired(999) == []
    assert a.next_expiry_ms(999) == 1
    assert a.expired(1000) == [old]
    assert [b.created_ms for b in a.batches[TP0]] == [600]
    assert a.expired(1600)[0].created_ms == 600
    assert not a.has_undrained()


def test_drain_mutes_the_partition_until_the_response():
    clock = ManualClock()
    a = acc(linger_ms=0)
    append(a, TP0, clock)
    sent = a.drain(TP0, 1 << 20)
    append(a, TP0, clock)
    assert a.ready(0)[0] == []            # one request in flight per partition
    a.unmute(TP0)
    assert a.ready(0)[0] == [TP0]
    assert len(sent) == 1


def test_drain_takes_several_batches_up_to_max_bytes():
    clock = ManualClock()
    a = acc(batch_size=200, linger_ms=0)
    for _ in range(20):
        append(a, TP0, clock, b"x" * 60)
    n_batches = len(a.batches[TP0])
    assert n_batches > 3
    first = a.drain(TP0, 450)
    assert 1 <= len(first) < n_batches
    assert sum(b.builder.estimated_size for b in first) <= 450 or len(first) == 1


def test_a_retry_goes_back_to_the_head_alone_after_its_backoff():
    clock = ManualClock()
    a = acc(linger_ms=0)
    append(a, TP0, clock, b"first")
    [b] = a.drain(TP0, 1 << 20)
    b.attempts = 1
    append(a, TP0, clock, b"second")
    a.reenqueue([b], retry_after_ms=100)
    assert a.ready(50) == ([], 50)
    assert a.ready(100)[0] == [TP0]
    assert a.drain(TP0, 1 << 20) == [b]           # alone, ahead of the newer batch
    # Records are never added to a batch that was already sent.
    r = append(a, TP0, clock, b"third")
    assert r.batch is not b


def test_needs_new_batch_for_the_sticky_partitioner():
    clock = ManualClock()
    a = acc(batch_size=200)
    assert a.needs_new_batch(TP0, None, b"x")
    append(a, TP0, clock, b"x" * 50)
    assert not a.needs_new_batch(TP0, None, b"x" * 50)
    assert a.needs_new_batch(TP0, None, b"x" * 500)
    a.drain(TP0, 1 << 20)
    assert a.needs_new_batch(TP0, None, b"x")


def test_abort_all_and_batch_contents():
    clock = ManualClock()
    a = acc(linger_ms=0)
    for i in range(3):
        a.append(TP0, 1000 + i, b"k%d" % i, b"v%d" % i, [("h", b"1")], 0)
    [b] = a.drain(TP0, 1 << 20)
    data = b.builder.build()
    validate(data)
    recs = decode_records(data)
    assert [(r.key, r.value, r.timestamp) for r in recs] == [(b"k0", b"v0", 1000), (b"k1", b"v1", 1001),
                                                             (b"k2", b"v2", 1002)]
    append(a, TP1, clock)
    assert [x.tp for x in a.abort_all()] == [TP1]
    assert not a.has_undrained()


# ---------------------------------------------------------------- sequences

def _batch(a, tp, n, clock):
    b = None
    for _ in range(n):
        b = append(a, tp, clock).batch
    return b


def test_sequences_are_assigned_per_partition_at_first_drain_and_kept_on_retry():
    clock = ManualClock()
    a = acc(linger_ms=0)
    seqs = SequenceNumbers()
    b0 = _batch(a, TP0, 3, clock)
    a.drain(TP0, 1 << 20)
    assert seqs.assign(b0) == 0
    assert seqs.assign(b0) == 0          # a retry keeps its sequence
    a.unmute(TP0)
    b1 = _batch(a, TP0, 2, clock)
    c0 = _batch(a, TP1, 4, clock)
    assert seqs.assign(b1) == 3
    assert seqs.assign(c0) == 0          # each partition counts on its own
    assert seqs.next == {TP0: 5, TP1: 4}
    seqs.clear()
    assert seqs.next == {}


def test_sequences_wrap_at_int32_max_like_kafka():
    clock = ManualClock()
    a = acc(linger_ms=0)
    seqs = SequenceNumbers()
    seqs.next[TP0] = 2**31 - 2
    b = _batch(a, TP0, 5, clock)
    assert seqs.assign(b) == 2**31 - 2
    assert seqs.next[TP0] == 3           # ..., MAX-1, MAX, 0, 1, 2 -> next is 3


@pytest.mark.parametrize("key,value,headers,expected", [
    (None, None, None, 21),
    (b"kk", b"vvv", None, 26),
    (None, b"v", [("h", b"12")], 21 + 1 + 1 + 2 + 10),
])
def test_record_size_estimate(key, value, headers, expected):
    assert record_size(key, value, headers) == expected


# -- several batches in flight per partition (idempotent producer)


def _filled(a, clock, n, tp=TP0):
    """n batches queued for tp (each record fills one: batch_size is tiny), and a sequence counter."""
    seqs = SequenceNumbers()
    out = []
    for i in range(n):
        r = append(a, tp, clock, b"r%d" % i * 20)
        out.append(r.batch)
    return out, seqs


def test_idempotent_cap_counts_batches_in_flight_per_partition():
    clock = ManualClock()
    a = acc(batch_size=64, linger_ms=0)
    a.max_in_flight_per_partition, a.sequenced = 5, True
    queued, _ = _filled(a, clock, 7)
    first = a.drain(TP0, 3 * queued[0].builder.estimated_size)   # the request's byte budget takes 3
    assert first == queued[:3] and a.in_flight[TP0] == 3
    assert a.ready(clock.monotonic_ms())[0] == [TP0]
    second = a.drain(TP0, 1 << 20)               # the cap leaves room for 2 more
    assert second == queued[3:5] and a.in_flight[TP0] == 5
    assert a.ready(clock.monotonic_ms())[0] == []     # 5 in flight: the 6th waits
    a.unmute(TP0, 3)                             # the first request answered
    assert a.ready(clock.monotonic_ms())[0] == [TP0] and a.drain(TP0, 1 << 20) == queued[5:]


def test_plain_producer_keeps_one_request_per_partition():
    clock = ManualClock()
    a = acc(batch_size=64, linger_ms=0)
    queued, _ = _filled(a, clock, 3)
    assert a.drain(TP0, 1 << 20) == queued          # one request takes them all
    append(a, TP0, clock, b"x" * 40)
    assert a.ready(clock.monotonic_ms())[0] == []   # nothing more while it is in flight


def test_retries_come_back_in_sequence_order_and_go_alone_once_nothing_is_in_flight():
    clock = ManualClock()
    a = acc(batch_size=64, linger_ms=0)
    a.max_in_flight_per_partition, a.sequenced = 5, True
    queued, seqs = _filled(a, clock, 5)
    sent = [a.drain(TP0, 1)[0] for _ in range(4)]    # four requests of one batch each
    for b in sent:
        seqs.assign(b)
        b.attempts = 1
    # Answers arrive out of order: batch 2 fails (NOT_LEADER), then 3 and 1 (OUT_OF_ORDER_SEQUENCE).
    a.reenqueue([sent[2]], retry_after_ms=0)
    a.reenqueue([sent[3]], retry_after_ms=0)
    a.reenqueue([sent[1]], retry_after_ms=0)
    assert list(a.batches[TP0])[:4] == [sent[1], sent[2], sent[3], queued[4]]
    assert a.in_flight[TP0] == 1 and a.ready(clock.monotonic_ms())[0] == []   # batch 0 still out
    a.unmute(TP0, 1)
    assert a.ready(clock.monotonic_ms())[0] == [TP0]
    assert a.drain(TP0, 1 << 20) == [sent[1]]         # a retry goes alone
    assert a.ready(clock.monotonic_ms())[0] == []     # and the next retry waits for it


def test_a_sequenced_request_never_carries_more_than_the_duplicate_window():
    # One request in flight (a transactional producer), but at most 5 of its batches: a retry after
    # a lost reply must find every one of them among the broker's last 5 to be a duplicate.
    clock = ManualClock()
    a = acc(batch_size=64, linger_ms=0)
    a.sequenced = True
    queued, _ = _filled(a, clock, 8)
    assert a.drain(TP0, 1 << 20) == queued[:5]
    assert a.ready(clock.monotonic_ms())[0] == []
    a.unmute(TP0, 5)
    assert a.drain(TP0, 1 << 20) == queued[5:]
