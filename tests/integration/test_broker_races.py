"""Races in the broker drivers (issue 20, items 1-4 and 9), each forced deterministically.

Every test drives the real Broker / FetcherThread / servicer code in-process and
steps in at a hook (a fake leader's answer, a wrapped append, a deferred
AlterPartition, a failing store write) to make the interleaving happen — no
sleeps, no threads.
"""
from __future__ import annotations

import pytest

from client.common import errors
from client.common.pb import broker_pb2 as bpb
from node.broker_service import BrokerServicer
from node.coordinator import ControllerServicer
from node.fetcher import FetcherThread, _Fetched
from tests.broker_driver import (
    TOPIC,
    Context,
    ServicerStub,
    batch,
    manual_coordinator,
    metadata,
    partition_with_lagging_follower,
    stored_values,
)


def _idle_fetcher(b, leader_id: int) -> FetcherThread:
    """The real fetcher code, run step by step by the test (its thread is not started)."""
    return FetcherThread(b, leader_id, "127.0.0.1:1")


class FakeLeader:
    """The leader's side of OffsetForLeaderEpoch; `before_answer` runs while the request is in flight."""

    def __init__(self, answer: tuple[int, int], before_answer):
        self.answer, self.before_answer = answer, before_answer

    def OffsetForLeaderEpoch(self, request, timeout=None):
        self.before_answer()
        p = request.partitions[0]
        resp = bpb.OffsetForLeaderEpochResponse()
        resp.partitions.add(topic=p.topic, partition=p.partition, leader_epoch=self.answer[0],
                            end_offset=self.answer[1])
        return resp


# ---------------------------------------------------------------- item 1: truncation is fenced

def test_truncation_answer_arriving_after_becoming_leader_does_not_truncate_acked_records(broker):
    b = broker(1)
    b.apply_metadata(metadata(leader=1, leader_epoch=0, isr=[1], replicas=[1, 2]))
    for i in range(3):
        b.append_as_leader(TOPIC, 0, batch(value=b"old"), acks=1)
    r = b.replicas[(TOPIC, 0)]
    # Broker 2 leads at epoch 1: this replica must ask it where their histories diverge.
    b.apply_metadata(metadata(leader=2, leader_epoch=1, isr=[1, 2], replicas=[1, 2], metadata_epoch=2))
    assert b.fetchers.following[(TOPIC, 0)] == (2, 1)

    def meanwhile():
        # Broker 2 dies before answering; this broker leads again at epoch 2 and takes an acks=all write.
        b.apply_metadata(metadata(leader=1, leader_epoch=2, isr=[1], replicas=[1, 2], metadata_epoch=3))
        b.append_as_leader(TOPIC, 0, batch(value=b"acked"), acks=-1)
        assert r.model.high_watermark == 4  # acks=all is answered: the ISR is {1}

    t = _idle_fetcher(b, 2)
    t.stub = lambda: FakeLeader((0, 2), meanwhile)  # broker 2 held epoch 0 only up to offset 2
    f = _Fetched(r, 1)
    t._truncate(f)

    m = r.model
    assert m.is_leader and m.leader_epoch == 2
    assert (m.log_end_offset, m.high_watermark) == (4, 4), "the new leader's acknowledged record was truncated"
    assert [o for o, _ in stored_values(b)] == [0, 1, 2, 3]
    assert stored_values(b)[3][1] == b"acked0"


def test_truncation_answer_for_an_older_leader_epoch_is_ignored(broker):
    b = broker(1)
    b.apply_metadata(metadata(leader=1, leader_epoch=0, isr=[1], replicas=[1, 2, 3]))
    for _ in range(3):
        b.append_as_leader(TOPIC, 0, batch(), acks=1)
    r = b.replicas[(TOPIC, 0)]
    b.apply_metadata(metadata(leader=2, leader_epoch=1, isr=[1, 2, 3], metadata_epoch=2))

    def meanwhile():  # leadership moves on to broker 3 at epoch 2; this replica follows it
        b.apply_metadata(metadata(leader=3, leader_epoch=2, isr=[1, 3], metadata_epoch=3))

    t = _idle_fetcher(b, 2)
    t.stub = lambda: FakeLeader((0, 0), meanwhile)
    t._truncate(_Fetched(r, 1))
    assert r.model.log_end_offset == 3, "an epoch-1 answer truncated a follower of epoch 2"


# ---------------------------------------------------------------- item 2: AlterPartition carries its proposal's epoch

def test_delayed_isr_expansion_is_refused_after_the_partition_epoch_moved(broker, tmp_path):
    coord = manual_coordinator(tmp_path)
    try:
        # x fell behind earlier: the ISR is {leader, y} at partition epoch 1.
        epochs, leader, x, y = partition_with_lagging_follower(coord)
        b = broker(leader)
        b.broker_epoch = epochs[leader]
        b.controller = lambda: ServicerStub(ControllerServicer(coord))
        b.apply_metadata(coord.metadata())
        r = b.replicas[(TOPIC, 0)]
        assert r.model.partition_epoch == 1
        res = b.append_as_leader(TOPIC, 0, batch(3), acks=1)
        b.on_follower_fetch(r, y, res.last_offset + 1)
        # x catches up: the leader proposes {leader, y, x} at partition epoch 1; the call is delayed.
        b.on_follower_fetch(r, x, res.last_offset + 1)
        assert len(b.isr_executor.calls) == 1

        # Meanwhile x and y stop heartbeating: both fenced, y leaves the ISR (partition epoch 2) ...
        coord.clock.advance(2_000)
        coord.mutate(lambda s, now: s.heartbeat(leader, epochs[leader], now))
        coord.mutate(lambda s, now: s.tick(now))
        assert coord.state.topics[TOPIC].partitions[0].isr == [leader]
        b.apply_metadata(coord.metadata())
        assert r.model.isr == (leader,) and r.model.partition_epoch == 2
        # ... and both register again (restarted, lagging). Now the delayed proposal arrives.
        for bid in (x, y):
            coord.mutate(lambda s, now, bid=bid: s.register_broker(bid, "127.0.0.1", bid, "", now))
        b.isr_executor.run_all()

        assert coord.state.topics[TOPIC].partitions[0].isr == [leader], \
            "a proposal made at partition epoch 1 was applied at epoch 2"
        assert r.model.isr == (leader,)
    finally:
        coord.stop()


# ---------------------------------------------------------------- item 3: a produce request is all-or-nothing

def test_rejected_later_batch_leaves_nothing_of_the_request(broker):
    b = broker(1)
    b.apply_metadata(metadata(leader=1, leader_epoch=0, isr=[1], replicas=[1, 2]))
    good = batch(2, producer_id=7, producer_epoch=0, base_sequence=0)
    out_of_order = batch(1, producer_id=7, producer_epoch=0, base_sequence=9)
    with pytest.raises(errors.OutOfOrderSequenceNumberError):
        b.append_as_leader(TOPIC, 0, good + out_of_order, acks=1)
    r = b.replicas[(TOPIC, 0)]
    assert r.model.log_end_offset == 0 and stored_values(b) == []
    assert r.producers.last_entry(7) is None
    # The retry of the good batch is appended, not answered DUPLICATE with nothing stored.
    res = b.append_as_leader(TOPIC, 0, good, acks=1)
    assert (res.base_offset, res.duplicate) == (0, False)
    assert [o for o, _ in stored_values(b)] == [0, 1]


def test_failed_write_leaves_memory_as_it_was(broker):
    b = broker(1)
    b.apply_metadata(metadata(leader=1, leader_epoch=0, isr=[1], replicas=[1, 2]))
    real_write = b.store.write
    calls = []

    def failing_write(puts, deletes=()):
        calls.append(len(puts))
        raise OSError("injected: disk full")

    b.store.write = failing_write
    payload = batch(producer_id=7, producer_epoch=0, base_sequence=0) + batch(
        producer_id=7, producer_epoch=0, base_sequence=1)
    with pytest.raises(OSError):
        b.append_as_leader(TOPIC, 0, payload, acks=1)
    assert len(calls) == 1, "one request must be one write"
    r = b.replicas[(TOPIC, 0)]
    assert r.model.log_end_offset == 0 and r.producers.last_entry(7) is None
    b.store.write = real_write
    res = b.append_as_leader(TOPIC, 0, payload, acks=1)
    assert (res.batch_base_offsets, res.duplicate) == ([0, 1], False)
    assert [o for o, _ in stored_values(b)] == [0, 1]


def test_failed_marker_write_leaves_the_transaction_open(broker):
    b = broker(1)
    b.apply_metadata(metadata(leader=1, leader_epoch=0, isr=[1], replicas=[1, 2]))
    b.append_as_leader(TOPIC, 0, batch(producer_id=5, producer_epoch=0, base_sequence=0, transactional=True),
                       acks=1)
    r = b.replicas[(TOPIC, 0)]
    assert r.producers.first_unstable_offset() == 0
    real_write = b.store.write

    def failing_write(puts, deletes=()):
        raise OSError("injected")

    b.store.write = failing_write
    with pytest.raises(OSError):
        b.txn.append_marker(TOPIC, 0, 5, 0, False, 0)
    assert r.model.log_end_offset == 1
    assert r.producers.first_unstable_offset() == 0, "the ABORT marker is not stored, the txn is still open"
    b.store.write = real_write
    res = b.txn.append_marker(TOPIC, 0, 5, 0, False, 0)
    assert res.last_offset == 1 and r.producers.first_unstable_offset() is None


# ---------------------------------------------------------------- item 4: wait_for_hw uses the append's epoch

def test_acks_all_wait_uses_the_epoch_of_the_append(broker):
    b = broker(1)
    b.apply_metadata(metadata(leader=1, leader_epoch=0, isr=[1, 2], replicas=[1, 2]))
    r = b.replicas[(TOPIC, 0)]
    real_append = b.append_as_leader

    def append_then_lose_it(topic, partition, data, acks):
        res = real_append(topic, partition, data, acks)
        # Between the append and the wait: broker 2 leads (without the record), this broker
        # truncates it away, leads again at epoch 2 and appends another record at the same offset.
        b.apply_metadata(metadata(leader=2, leader_epoch=1, isr=[1, 2], replicas=[1, 2], metadata_epoch=2))
        assert b.truncate(r, 0, 1)
        b.apply_metadata(metadata(leader=1, leader_epoch=2, isr=[1], replicas=[1, 2], metadata_epoch=3))
        real_append(topic, partition, batch(value=b"other"), 1)
        return res

    b.append_as_leader = append_then_lose_it
    svc = BrokerServicer(b)
    resp = svc.Produce(bpb.ProduceRequest(acks=-1, timeout_ms=1000, partitions=[
        bpb.ProducePartition(topic=TOPIC, partition=0, records=batch(value=b"mine"))]), Context())
    out = resp.partitions[0]
    assert stored_values(b) == [(0, b"other0")]
    assert out.error_code == errors.NotLeaderOrFollowerError.code, "a lost record was acknowledged"


# ---------------------------------------------------------------- item 9: replica fetches are authenticated

def _replica_fetch(svc, replica_id: int, replica_epoch: int, offset: int):
    resp = svc.Fetch(bpb.FetchRequest(replica_id=replica_id, replica_epoch=replica_epoch, max_wait_ms=0,
                                      min_bytes=1, max_bytes=1 << 20, partitions=[
                                          bpb.FetchPartition(topic=TOPIC, partition=0, fetch_offset=offset,
                                                             partition_max_bytes=1 << 20,
                                                             current_leader_epoch=-1)]), Context())
    return resp.partitions[0]


@pytest.mark.parametrize("replica_id,replica_epoch,error", [
    (2, 0, errors.StaleBrokerEpochError),        # right id, no epoch (a client faking a follower)
    (2, 11, errors.StaleBrokerEpochError),       # an old incarnation of broker 2
    (3, 13, errors.NotLeaderOrFollowerError),    # a live broker that is not a replica
    (9, 19, errors.NotLeaderOrFollowerError),    # not a broker at all
])
def test_forged_replica_fetch_does_not_move_the_high_watermark(broker, replica_id, replica_epoch, error):
    b = broker(1)
    b.apply_metadata(metadata(leader=1, leader_epoch=0, isr=[1, 2], replicas=[1, 2],
                              broker_epochs={1: 11, 2: 12, 3: 13}))
    res = b.append_as_leader(TOPIC, 0, batch(), acks=-1)
    r = b.replicas[(TOPIC, 0)]
    svc = BrokerServicer(b)
    out = _replica_fetch(svc, replica_id, replica_epoch, res.last_offset + 1)
    assert out.error_code == error.code
    assert out.records == b""
    assert r.model.high_watermark == 0, "an acks=all write was acknowledged without replication"
    # The registered follower with its current epoch is served and moves the HW.
    out = _replica_fetch(svc, 2, 12, res.last_offset + 1)
    assert out.error_code == 0 and r.model.high_watermark == 1


# ---------------------------------------------------------------- item 10: no whole-partition copy under the store lock

class _CountingLock:
    """Stands in for the store-wide lock: records how many batches each hold of it read."""

    def __init__(self, lock):
        self._lock, self.reads, self.max_reads = lock, 0, 0

    def __enter__(self):
        self._lock.__enter__()
        self.reads = 0

    def __exit__(self, *exc):
        self.max_reads = max(self.max_reads, self.reads)
        return self._lock.__exit__(*exc)


class _CountingDb:
    def __init__(self, db, lock: _CountingLock):
        self._db, self._lock = db, lock

    def iter(self):
        return _CountingIter(self._db.iter(), self._lock)

    def __getattr__(self, name):
        return getattr(self._db, name)


class _CountingIter:
    def __init__(self, it, lock: _CountingLock):
        self._it, self._lock = it, lock

    def value(self):
        self._lock.reads += 1
        return self._it.value()

    def __getattr__(self, name):
        return getattr(self._it, name)


def _count_store_reads(b) -> _CountingLock:
    lock = _CountingLock(b.store._lock)
    b.store._lock, b.store._db = lock, _CountingDb(b.store._db, lock)
    return lock


N_BATCHES = 600  # > 2 chunks of node.store.ITER_CHUNK


@pytest.mark.parametrize("operation", ["list_offsets_by_timestamp", "read_committed_index", "truncation"])
def test_partition_scans_hold_the_store_lock_one_chunk_at_a_time(broker, operation):
    from node.store import ITER_CHUNK
    b = broker(1)
    b.apply_metadata(metadata(leader=1, leader_epoch=0, isr=[1], replicas=[1, 2]))
    payload = b"".join(batch() for _ in range(N_BATCHES // 2))
    b.append_as_leader(TOPIC, 0, payload, acks=1)
    b.append_as_leader(TOPIC, 0, payload, acks=1)
    r = b.replicas[(TOPIC, 0)]
    assert r.model.log_end_offset == N_BATCHES
    lock = _count_store_reads(b)
    if operation == "list_offsets_by_timestamp":
        assert b.list_offset(TOPIC, 0, 10**15, 0) == (-1, -1)  # after every record: reads the whole log
    elif operation == "read_committed_index":
        assert b.txn.aborted_transactions(r, 0, N_BATCHES) == []
    else:
        b.apply_metadata(metadata(leader=2, leader_epoch=1, isr=[1, 2], replicas=[1, 2], metadata_epoch=2))
        assert b.truncate(r, N_BATCHES - 5, 1)
        assert r.model.log_end_offset == N_BATCHES - 5
        assert [o for o, _ in stored_values(b)][-1] == N_BATCHES - 6
    assert 0 < lock.max_reads <= ITER_CHUNK, f"{lock.max_reads} batches read under one hold of the store lock"
