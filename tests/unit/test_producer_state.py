"""Idempotent producer dedup and sequence rules, per partition."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from client.common import errors
from node.producer_state import (
    INT32_MAX,
    MAX_BATCHES_PER_PRODUCER,
    Accept,
    CompletedTxn,
    DuplicateBatch,
    ProducerStateManager,
    Reject,
    in_sequence,
)

PID = 1000


@dataclass(frozen=True)
class Header:
    """Just the batch-header fields the manager reads."""
    base_offset: int
    last_offset: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    last_sequence: int
    is_transactional: bool = False
    is_control: bool = False


class Log:
    """A log of headers driven through the leader's flow: check, append, record."""

    def __init__(self) -> None:
        self.psm = ProducerStateManager()
        self.headers: list[Header] = []
        self.next_offset = 0

    def produce(self, pid: int, epoch: int, first_seq: int, count: int, txn: bool = False):
        last_seq = (first_seq + count - 1) % (INT32_MAX + 1)
        decision = self.psm.check_and_update(pid, epoch, first_seq, last_seq, txn)
        if isinstance(decision, Accept):
            base = self.next_offset
            self.next_offset += count
            self.psm.on_append(pid, epoch, first_seq, last_seq, base, base + count - 1, txn)
            self.headers.append(Header(base, base + count - 1, pid, epoch, first_seq, last_seq, txn))
        return decision

    def marker(self, pid: int, epoch: int):
        offset = self.next_offset
        self.next_offset += 1
        self.headers.append(Header(offset, offset, pid, epoch, -1, -1, True, True))
        return self.psm.on_control_marker(pid, epoch, offset)


def _six_batches() -> Log:
    log = Log()
    for i in range(6):
        assert log.produce(PID, 0, i * 10, 10) == Accept()
    return log


@pytest.mark.parametrize("batch_index", range(1, 6))
def test_duplicate_of_each_of_last_five(batch_index):
    log = _six_batches()
    got = log.psm.check_and_update(PID, 0, batch_index * 10, batch_index * 10 + 9, False)
    assert got == DuplicateBatch(batch_index * 10, batch_index * 10 + 9)


def test_sixth_oldest_is_no_longer_deduplicated():
    log = _six_batches()
    assert MAX_BATCHES_PER_PRODUCER == 5
    got = log.psm.check_and_update(PID, 0, 0, 9, False)
    assert isinstance(got, Reject) and isinstance(got.error, errors.OutOfOrderSequenceNumberError)


@pytest.mark.parametrize("name, pid, epoch, first_seq, count, expected", [
    ("next in sequence", PID, 0, 60, 5, Accept),
    ("gap", PID, 0, 61, 5, errors.OutOfOrderSequenceNumberError),
    ("overlap, not a retained batch", PID, 0, 55, 5, errors.OutOfOrderSequenceNumberError),
    ("same first, other last", PID, 0, 50, 5, errors.OutOfOrderSequenceNumberError),
    ("new epoch from 0", PID, 1, 0, 5, Accept),
    ("new epoch not from 0", PID, 1, 60, 5, errors.OutOfOrderSequenceNumberError),
    ("unknown producer from 0", PID + 1, 0, 0, 5, Accept),
    ("unknown producer not from 0", PID + 1, 0, 7, 5, errors.OutOfOrderSequenceNumberError),
])
def test_sequence_rules(name, pid, epoch, first_seq, count, expected):
    got = _six_batches().produce(pid, epoch, first_seq, count)
    if expected is Accept:
        assert got == Accept(), name
    else:
        assert isinstance(got, Reject) and isinstance(got.error, expected), name


@pytest.mark.parametrize("name, pid, epoch, first_seq, ahead", [
    ("a gap: the batches between may be in flight", PID, 0, 61, True),
    ("far ahead", PID, 0, 60 + 2**29, True),
    ("next in sequence", PID, 0, 60, False),
    ("behind, not a retained batch", PID, 0, 55, False),
    ("behind, older than the window", PID, 0, 0, False),
    ("new epoch not from 0", PID, 1, 3, True),
    ("new epoch from 0", PID, 1, 0, False),
    ("older epoch", PID, -1, 61, False),
    ("unknown producer not from 0", PID + 1, 0, 7, True),
    ("unknown producer from 0", PID + 1, 0, 0, False),
    ("not idempotent", -1, -1, -1, False),
])
def test_awaits_predecessor_only_for_a_batch_ahead_of_the_next_sequence(name, pid, epoch, first_seq, ahead):
    assert _six_batches().psm.awaits_predecessor(pid, epoch, first_seq) is ahead, name


def test_awaits_predecessor_across_the_int32_wrap():
    psm = ProducerStateManager()
    psm.on_append(PID, 0, INT32_MAX - 9, INT32_MAX - 1, 0, 8)  # next is INT32_MAX
    assert not psm.awaits_predecessor(PID, 0, INT32_MAX)
    assert psm.awaits_predecessor(PID, 0, 0) and psm.awaits_predecessor(PID, 0, 5)
    assert not psm.awaits_predecessor(PID, 0, INT32_MAX - 20)


@pytest.mark.parametrize("first_seq", [0, 60, 5])
def test_older_epoch_is_invalid_producer_epoch(first_seq):
    log = _six_batches()
    assert log.produce(PID, 3, 0, 1) == Accept()
    got = log.produce(PID, 2, first_seq, 1)
    assert isinstance(got, Reject) and isinstance(got.error, errors.InvalidProducerEpochError)
    assert got.error.code == 47


def test_duplicate_needs_same_epoch():
    log = _six_batches()
    assert log.produce(PID, 1, 0, 10) == Accept()
    # Epoch 0's batch (50..59) is no duplicate any more: the epoch is fenced.
    got = log.psm.check_and_update(PID, 0, 50, 59, False)
    assert isinstance(got, Reject) and isinstance(got.error, errors.InvalidProducerEpochError)
    # And the new epoch's first batch is deduplicated.
    assert log.psm.check_and_update(PID, 1, 0, 9, False) == DuplicateBatch(60, 69)


def test_wrap_around_at_int32_max():
    assert in_sequence(INT32_MAX, 0) and not in_sequence(INT32_MAX - 1, 0) and not in_sequence(INT32_MAX, 1)
    log = Log()
    log.psm.on_append(PID, 0, INT32_MAX - 9, INT32_MAX, 0, 9)
    log.next_offset = 10
    assert log.produce(PID, 0, 0, 3) == Accept()
    assert log.psm.check_and_update(PID, 0, 0, 2, False) == DuplicateBatch(10, 12)
    got = log.psm.check_and_update(PID, 0, 1, 3, False)
    assert isinstance(got, Reject) and isinstance(got.error, errors.OutOfOrderSequenceNumberError)
    # A batch that itself wraps: first INT32_MAX-1, last 1.
    log2 = Log()
    log2.psm.on_append(PID, 0, 0, INT32_MAX - 2, 0, 0)
    assert log2.produce(PID, 0, INT32_MAX - 1, 4) == Accept()
    assert log2.psm.last_entry(PID).last_seq == 1
    assert log2.produce(PID, 0, 2, 1) == Accept()


def test_non_idempotent_batches_pass():
    psm = ProducerStateManager()
    assert psm.check_and_update(-1, -1, -1, -1, False) == Accept()
    psm.on_append(-1, -1, -1, -1, 0, 4)
    assert psm.producers == {}


# ---------------------------------------------------------------- transactions

def test_first_unstable_offset_and_markers():
    log = Log()
    assert log.produce(1, 0, 0, 2) == Accept()                # offsets 0-1, not transactional
    assert log.psm.first_unstable_offset() is None
    assert log.produce(2, 0, 0, 3, txn=True) == Accept()      # 2-4
    assert log.produce(3, 0, 0, 1, txn=True) == Accept()      # 5
    assert log.produce(2, 0, 3, 1, txn=True) == Accept()      # 6
    assert log.psm.first_unstable_offset() == 2
    assert log.marker(2, 0) == CompletedTxn(2, 2, 7)
    assert log.psm.first_unstable_offset() == 5
    assert log.marker(3, 0) == CompletedTxn(3, 5, 8)
    assert log.psm.first_unstable_offset() is None
    assert log.marker(3, 0) is None                           # nothing open


def test_non_transactional_write_during_transaction():
    log = Log()
    assert log.produce(2, 0, 0, 3, txn=True) == Accept()
    got = log.produce(2, 0, 3, 1, txn=False)
    assert isinstance(got, Reject) and isinstance(got.error, errors.InvalidTxnStateError)


def test_marker_with_new_epoch_resets_sequences():
    log = Log()
    assert log.produce(2, 0, 0, 3, txn=True) == Accept()
    log.marker(2, 1)  # the coordinator bumped the epoch and aborted
    got = log.produce(2, 1, 3, 1, txn=True)
    assert isinstance(got, Reject) and isinstance(got.error, errors.OutOfOrderSequenceNumberError)
    assert log.produce(2, 1, 0, 1, txn=True) == Accept()


# ---------------------------------------------------------------- rebuild, truncate, snapshot

def _mixed_log() -> Log:
    log = Log()
    for i in range(7):
        log.produce(PID, 0, i * 2, 2)                          # 0..13
    log.produce(7, 0, 0, 1, txn=True)                          # 14
    log.produce(PID, 1, 0, 2)                                  # 15-16, new epoch
    log.produce(8, 0, 0, 2)                                    # 17-18
    return log


def test_rebuild_equals_live_state():
    log = _mixed_log()
    rebuilt = ProducerStateManager()
    rebuilt.rebuild(log.headers)
    assert rebuilt.snapshot() == log.psm.snapshot()


@pytest.mark.parametrize("offset, pid_epoch, last_seq, unstable, pid8", [
    (17, 1, 1, 14, False),     # producer 8 gone
    (15, 0, 13, 14, False),    # epoch 1 gone: back to epoch 0, as only the log can tell
    (14, 0, 13, None, False),  # the transaction is gone
    (0, None, None, None, False),
])
def test_truncate_to_rebuilds_from_remaining(offset, pid_epoch, last_seq, unstable, pid8):
    log = _mixed_log()
    log.psm.truncate_to(offset, log.headers)
    entry = log.psm.last_entry(PID)
    if pid_epoch is None:
        assert entry is None
    else:
        assert (entry.producer_epoch, entry.last_seq) == (pid_epoch, last_seq)
        assert len(entry.batches) <= MAX_BATCHES_PER_PRODUCER
    assert log.psm.first_unstable_offset() == unstable
    assert (log.psm.last_entry(8) is not None) == pid8


def test_truncate_then_retry_is_accepted_again():
    log = _six_batches()                  # batches at 0..59
    log.psm.truncate_to(50, log.headers)  # the last one was not replicated
    log.headers = [h for h in log.headers if h.last_offset < 50]
    log.next_offset = 50
    assert log.produce(PID, 0, 50, 10) == Accept()


def test_snapshot_restore_round_trip():
    log = _mixed_log()
    snap = json.loads(json.dumps(log.psm.snapshot()))
    restored = ProducerStateManager.restore(snap)
    assert restored.snapshot() == log.psm.snapshot()
    assert restored.check_and_update(PID, 1, 0, 1, False) == DuplicateBatch(15, 16)
    assert restored.first_unstable_offset() == 14
    assert restored.check_and_update(PID, 1, 2, 3, False) == Accept()


# -- one request's batches: all or nothing --------------------------------------------------------

def test_pending_append_sees_its_own_batches_and_changes_nothing_until_committed():
    psm = ProducerStateManager()
    psm.on_append(PID, 0, 0, 4, 0, 4)
    pending = psm.begin_append()
    assert pending.check_and_update(PID, 0, 5, 9) == Accept()
    pending.on_append(PID, 0, 5, 9, 5, 9)
    # The request's second batch is checked against its first one ...
    assert pending.check_and_update(PID, 0, 10, 14) == Accept()
    assert isinstance(pending.check_and_update(PID, 0, 5, 9), DuplicateBatch)
    pending.on_append(PID + 1, 0, 0, 0, 10, 10, is_transactional=True)
    # ... while the manager itself is untouched until the write succeeded.
    assert psm.last_entry(PID).last_seq == 4 and psm.last_entry(PID + 1) is None
    assert psm.first_unstable_offset() is None
    psm.commit_append(pending)
    assert psm.last_entry(PID).last_seq == 9 and psm.first_unstable_offset() == 10


def test_abandoned_pending_append_leaves_the_manager_as_it_was():
    psm = ProducerStateManager()
    psm.on_append(PID, 0, 0, 4, 0, 4)
    before = psm.snapshot()
    pending = psm.begin_append()
    pending.on_append(PID, 1, 0, 0, 5, 5)  # a new epoch clears the batches of the copy only
    pending.on_control_marker(PID, 1, 6)
    assert psm.snapshot() == before


def test_verification_guard_is_needed_to_begin_a_transaction_and_dropped_by_a_marker():
    psm = ProducerStateManager()
    assert not psm.needs_verification(1, False) and not psm.needs_verification(-1, True)
    assert psm.needs_verification(1, True)
    guard = psm.begin_verification(1)
    assert psm.check_verification(1, 0, guard) is None
    assert psm.check_verification(1, 0, object()) is not None and psm.check_verification(1, 0, None) is not None
    psm.on_append(1, 0, 0, 0, 10, 10, is_transactional=True)
    assert not psm.needs_verification(1, True)    # open here: later batches need none
    psm.on_control_marker(1, 0, 11)
    assert psm.needs_verification(1, True)
    refused = psm.check_verification(1, 0, guard)   # the marker made the old guard stale
    assert refused is not None and isinstance(refused.error, errors.InvalidTxnStateError)
