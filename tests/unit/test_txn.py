"""TransactionMetadata transitions, fencing, timeouts; LSO and the aborted-transaction index."""
from __future__ import annotations

import itertools
import json

import pytest

from client.common import errors
from node.producer_state import ProducerStateManager
from node.txn import (
    VALID_PREVIOUS,
    AbortedTxnIndex,
    TransactionMetadata,
    TxnRecord,
    is_valid_transition,
    last_stable_offset,
)
from node.txn import TxnState as S

MAX_TIMEOUT = 900_000


def ids(start=100):
    c = itertools.count(start)
    return lambda: next(c)


def apply(meta, out):
    """What the driver does: persist (nothing here), then complete."""
    if out.transit is not None:
        meta.begin(out.transit)
        meta.complete(out.transit)
    return out


def ready(tid="t", now=0, timeout_ms=1000):
    meta = TransactionMetadata.new(tid, 7, timeout_ms, now)
    out = apply(meta, meta.handle_init_producer_id(timeout_ms, MAX_TIMEOUT, now, ids()))
    assert out.error is None
    return meta


def ongoing(now=0, parts=(("a", 0), ("b", 1))):
    meta = ready(now=now)
    apply(meta, meta.handle_add_partitions(7, 0, parts, now))
    return meta


@pytest.mark.parametrize("src,dst,ok", [
    (S.EMPTY, S.ONGOING, True), (S.ONGOING, S.ONGOING, True), (S.ONGOING, S.PREPARE_COMMIT, True),
    (S.ONGOING, S.PREPARE_ABORT, True), (S.PREPARE_COMMIT, S.COMPLETE_COMMIT, True),
    (S.PREPARE_ABORT, S.COMPLETE_ABORT, True), (S.COMPLETE_COMMIT, S.ONGOING, True),
    (S.COMPLETE_ABORT, S.EMPTY, True), (S.ONGOING, S.PREPARE_EPOCH_FENCE, True),
    (S.PREPARE_EPOCH_FENCE, S.PREPARE_ABORT, True), (S.COMPLETE_COMMIT, S.DEAD, True),
    (S.EMPTY, S.PREPARE_COMMIT, False), (S.PREPARE_COMMIT, S.COMPLETE_ABORT, False),
    (S.PREPARE_ABORT, S.COMPLETE_COMMIT, False), (S.PREPARE_COMMIT, S.ONGOING, False),
    (S.ONGOING, S.EMPTY, False), (S.ONGOING, S.COMPLETE_COMMIT, False), (S.DEAD, S.EMPTY, False),
    (S.PREPARE_EPOCH_FENCE, S.PREPARE_COMMIT, False),
])
def test_transition_table(src, dst, ok):
    assert is_valid_transition(src, dst) is ok


def test_every_state_has_previous_states():
    assert set(VALID_PREVIOUS) == set(S)


def test_first_init_gives_epoch_0_and_next_bumps():
    meta = ready()
    assert (meta.current.producer_id, meta.current.producer_epoch, meta.state) == (7, 0, S.EMPTY)
    apply(meta, meta.handle_init_producer_id(1000, MAX_TIMEOUT, 1, ids()))
    assert meta.current.producer_epoch == 1


def test_epoch_exhausted_takes_a_new_producer_id():
    meta = TransactionMetadata(TxnRecord("t", 7, 32766, 1000, S.EMPTY))
    apply(meta, meta.handle_init_producer_id(1000, MAX_TIMEOUT, 0, ids(500)))
    assert (meta.current.producer_id, meta.current.producer_epoch) == (500, 0)


def test_invalid_timeout():
    meta = TransactionMetadata.new("t", 7, 1000, 0)
    out = meta.handle_init_producer_id(MAX_TIMEOUT + 1, MAX_TIMEOUT, 0, ids())
    assert isinstance(out.error, errors.InvalidTransactionTimeoutError) and out.transit is None


def test_commit_path():
    meta = ongoing(now=5)
    assert meta.state is S.ONGOING and meta.current.txn_start_ms == 5
    assert meta.current.partitions == {("a", 0), ("b", 1)}
    out = apply(meta, meta.handle_end_txn(7, 0, True, 6))
    assert out.starts_markers and meta.state is S.PREPARE_COMMIT
    assert isinstance(meta.handle_end_txn(7, 0, True, 6).error, errors.ConcurrentTransactionsError)
    assert isinstance(meta.handle_end_txn(7, 0, False, 6).error, errors.InvalidTxnStateError)
    assert isinstance(meta.handle_add_partitions(7, 0, [("c", 0)], 6).error, errors.ConcurrentTransactionsError)
    t = meta.on_markers_written(7)
    meta.begin(t)
    meta.complete(t)
    assert meta.state is S.COMPLETE_COMMIT and not meta.current.partitions
    assert meta.handle_end_txn(7, 0, True, 8).error is None  # a retry that already took effect
    assert isinstance(meta.handle_end_txn(7, 0, False, 8).error, errors.InvalidTxnStateError)


def test_abort_path_and_next_transaction():
    meta = ongoing()
    apply(meta, meta.handle_end_txn(7, 0, False, 1))
    assert meta.state is S.PREPARE_ABORT
    t = meta.on_markers_written(2)
    meta.begin(t)
    meta.complete(t)
    assert meta.state is S.COMPLETE_ABORT
    apply(meta, meta.handle_add_partitions(7, 0, [("a", 0)], 10))
    assert meta.state is S.ONGOING and meta.current.txn_start_ms == 10


def test_end_txn_in_empty_is_invalid():
    meta = ready()
    assert isinstance(meta.handle_end_txn(7, 0, True, 0).error, errors.InvalidTxnStateError)


def test_add_known_partitions_is_a_noop():
    meta = ongoing()
    out = meta.handle_add_partitions(7, 0, [("a", 0)], 1)
    assert out.transit is None and out.error is None


def test_pending_transit_blocks_other_requests():
    meta = ready()
    out = meta.handle_add_partitions(7, 0, [("a", 0)], 1)
    meta.begin(out.transit)
    assert isinstance(meta.handle_end_txn(7, 0, True, 1).error, errors.ConcurrentTransactionsError)
    meta.abort_pending()  # the write failed: nothing changed
    assert meta.state is S.EMPTY


@pytest.mark.parametrize("pid,epoch,err", [
    (7, 1, errors.ProducerFencedError), (7, -1, errors.ProducerFencedError),
    (8, 0, errors.InvalidProducerIdMappingError),
])
def test_wrong_producer_is_refused(pid, epoch, err):
    meta = ongoing()
    for out in (meta.handle_add_partitions(pid, epoch, [("c", 0)], 1), meta.handle_end_txn(pid, epoch, True, 1),
                meta.handle_add_offsets(pid, epoch, "g", 1)):
        assert isinstance(out.error, err) and out.transit is None


def test_init_fences_an_open_transaction():
    meta = ongoing()
    out = apply(meta, meta.handle_init_producer_id(1000, MAX_TIMEOUT, 1, ids()))
    assert isinstance(out.error, errors.ConcurrentTransactionsError)
    assert meta.state is S.PREPARE_ABORT and meta.current.producer_epoch == 1 and out.starts_markers
    # The old producer is fenced from here on.
    assert isinstance(meta.handle_end_txn(7, 0, True, 2).error, errors.ProducerFencedError)
    assert isinstance(meta.handle_init_producer_id(1000, MAX_TIMEOUT, 2, ids()).error,
                      errors.ConcurrentTransactionsError)
    t = meta.on_markers_written(3)
    meta.begin(t)
    meta.complete(t)
    out = apply(meta, meta.handle_init_producer_id(1000, MAX_TIMEOUT, 4, ids()))
    assert out.error is None and meta.current.producer_epoch == 2 and meta.state is S.EMPTY


def test_kip360_epoch_bump_by_the_current_producer_and_its_retry():
    meta = ready()  # producer 7 epoch 0
    apply(meta, meta.handle_add_partitions(7, 0, [("a", 0)], 1))
    apply(meta, meta.handle_end_txn(7, 0, False, 2))
    t = meta.on_markers_written(3)
    meta.begin(t)
    meta.complete(t)
    out = apply(meta, meta.handle_init_producer_id(1000, MAX_TIMEOUT, 4, ids(), expected=(7, 0)))
    assert out.error is None and (meta.current.producer_id, meta.current.producer_epoch) == (7, 1)
    # The answer was lost and the client retries with the epoch it had: the current epoch, no second bump.
    out = meta.handle_init_producer_id(1000, MAX_TIMEOUT, 5, ids(), expected=(7, 0))
    assert out.error is None and out.transit is None and meta.current.producer_epoch == 1
    # A plain InitProducerId (no expected id) still bumps, and forgets the retry epoch.
    apply(meta, meta.handle_init_producer_id(1000, MAX_TIMEOUT, 6, ids()))
    assert (meta.current.producer_epoch, meta.current.last_producer_epoch) == (2, -1)
    assert TxnRecord.from_json(meta.current.to_json()) == meta.current


@pytest.mark.parametrize("expected", [(7, 0), (8, 1)])
def test_kip360_epoch_bump_from_a_fenced_producer_is_refused(expected):
    """A zombie (epoch 0) bumping its own epoch after its successor's InitProducerId (epoch 1) is fenced,
    not handed epoch 2 over its successor; so is another producer id."""
    meta = ready()
    apply(meta, meta.handle_init_producer_id(1000, MAX_TIMEOUT, 1, ids()))  # the successor: epoch 1
    out = meta.handle_init_producer_id(1000, MAX_TIMEOUT, 2, ids(), expected=expected)
    assert isinstance(out.error, errors.ProducerFencedError) and out.transit is None
    assert meta.current.producer_epoch == 1


def test_records_written_before_last_producer_epoch_existed_load():
    raw = (b'{"transactional_id":"t","producer_id":7,"producer_epoch":3,"timeout_ms":1000,"state":"Empty",'
           b'"partitions":[],"groups":[],"offsets":[],"txn_start_ms":-1,"last_update_ms":5}')
    assert TxnRecord.from_json(raw).last_producer_epoch == -1


def test_timeout_aborts_with_a_bumped_epoch():
    meta = ongoing(now=100)  # timeout 1000 ms
    assert meta.maybe_abort_timed_out(1100) is None
    out = apply(meta, meta.maybe_abort_timed_out(1101))
    assert meta.state is S.PREPARE_ABORT and meta.current.producer_epoch == 1 and out.starts_markers
    assert meta.maybe_abort_timed_out(5000) is None
    assert isinstance(meta.handle_end_txn(7, 0, True, 1102).error, errors.ProducerFencedError)


def test_empty_transaction_does_not_time_out():
    assert ready(now=0).maybe_abort_timed_out(10**9) is None


def test_offsets_keep_their_leader_epoch_and_old_records_read_as_unknown_epoch():
    meta = ongoing()
    apply(meta, meta.handle_add_offsets(7, 0, "g", 1))
    apply(meta, meta.handle_txn_offset_commit(7, 0, "g", [("in", 0, 5, "", 3)], 1))
    rec = meta.current
    assert rec.offsets == (("g", "in", 0, 5, "", 3),) and TxnRecord.from_json(rec.to_json()) == rec
    old = json.loads(rec.to_json())
    old["offsets"] = [["g", "in", 0, 5, ""]]  # as written before leader epochs were kept
    assert TxnRecord.from_json(json.dumps(old).encode()).offsets == (("g", "in", 0, 5, "", -1),)


def test_offsets_need_add_offsets_first_and_merge():
    meta = ongoing()
    assert isinstance(meta.handle_txn_offset_commit(7, 0, "g", [("in", 0, 5, "")], 1).error,
                      errors.InvalidTxnStateError)
    apply(meta, meta.handle_add_offsets(7, 0, "g", 1))
    apply(meta, meta.handle_txn_offset_commit(7, 0, "g", [("in", 0, 5, ""), ("in", 1, 3, "m")], 1))
    apply(meta, meta.handle_txn_offset_commit(7, 0, "g", [("in", 0, 9, "")], 2))
    assert meta.current.offsets == (("g", "in", 0, 9, "", -1), ("g", "in", 1, 3, "m", -1))
    assert isinstance(meta.handle_txn_offset_commit(7, 0, "g", [("in", 0, -1, "")], 3).error,
                      errors.InvalidCommitOffsetSizeError)
    assert isinstance(meta.handle_add_offsets(7, 0, "", 3).error, errors.InvalidGroupIdError)


def test_record_round_trip():
    meta = ongoing()
    apply(meta, meta.handle_add_offsets(7, 0, "g", 1))
    apply(meta, meta.handle_txn_offset_commit(7, 0, "g", [("in", 0, 5, "x")], 1))
    assert TxnRecord.from_json(meta.current.to_json()) == meta.current


def test_complete_requires_the_pending_transit():
    meta = ongoing()
    out = meta.handle_end_txn(7, 0, True, 1)
    with pytest.raises(errors.IllegalStateError):
        meta.complete(out.transit)
    with pytest.raises(errors.IllegalStateError):
        meta.on_markers_written(1)  # still Ongoing


# ---------------------------------------------------------------- LSO and aborted index

@pytest.mark.parametrize("first_unstable,hw,lso", [(None, 10, 10), (4, 10, 4), (12, 10, 10), (0, 0, 0)])
def test_last_stable_offset(first_unstable, hw, lso):
    assert last_stable_offset(first_unstable, hw) == lso


def test_lso_follows_open_transactions():
    psm = ProducerStateManager()
    psm.on_append(1, 0, 0, 1, 0, 1, is_transactional=True)      # pid 1 opens at 0
    psm.on_append(2, 0, 0, 0, 2, 2, is_transactional=False)     # plain data
    psm.on_append(3, 0, 0, 0, 3, 3, is_transactional=True)      # pid 3 opens at 3
    assert last_stable_offset(psm.first_unstable_offset(), 10) == 0
    psm.on_control_marker(1, 0, 4)
    assert last_stable_offset(psm.first_unstable_offset(), 10) == 3
    psm.on_control_marker(3, 0, 5)
    assert last_stable_offset(psm.first_unstable_offset(), 10) == 10


def build_index(log):
    idx = AbortedTxnIndex()
    for pid, base, nxt, txn, control in log:
        idx.on_batch(pid, base, nxt, txn, control)
    return idx


LOG = [  # (producer_id, base_offset, next_offset, transactional, control)
    (1, 0, 2, True, None),      # pid 1: 0-1
    (2, 2, 3, True, None),      # pid 2: 2
    (-1, 3, 4, False, None),    # plain
    (1, 4, 5, True, "ABORT"),   # pid 1 aborted [0, 4]
    (2, 5, 6, True, "COMMIT"),  # pid 2 committed
    (1, 6, 7, True, None),      # pid 1 again: 6
    (1, 7, 8, True, "ABORT"),   # aborted [6, 7]
    (3, 8, 9, True, "ABORT"),   # marker with no data here: not indexed
]


def test_aborted_index_from_the_log():
    idx = build_index(LOG)
    assert [(a.producer_id, a.first_offset, a.last_offset) for a in idx.entries] == [(1, 0, 4), (1, 6, 7)]
    assert idx.next_offset == 9 and idx.open == {}


@pytest.mark.parametrize("start,upto,want", [
    (0, 9, [(1, 0), (1, 6)]), (0, 1, [(1, 0)]), (4, 5, [(1, 0)]), (5, 6, []), (5, 7, [(1, 6)]),
    (8, 9, []), (0, 0, []),
])
def test_aborted_index_collect(start, upto, want):
    assert build_index(LOG).collect(start, upto) == want


def test_aborted_index_reads_forward_only():
    idx = build_index(LOG[:4])
    idx.on_batch(1, 0, 2, True, None)  # re-read of an indexed batch is ignored
    idx = build_index(LOG)
    assert len(idx.entries) == 2


def test_verify_partitions_only_for_the_ongoing_transaction():
    meta = ongoing(parts=(("a", 0),))
    assert meta.handle_verify_partitions(7, 0, [("a", 0)]).error is None
    assert meta.current.partitions == frozenset({("a", 0)})   # a verification adds nothing
    assert isinstance(meta.handle_verify_partitions(7, 0, [("b", 1)]).error, errors.InvalidTxnStateError)
    assert isinstance(meta.handle_verify_partitions(7, 1, [("a", 0)]).error, errors.InvalidProducerEpochError)
    assert isinstance(meta.handle_verify_partitions(8, 0, [("a", 0)]).error, errors.InvalidProducerIdMappingError)
    apply(meta, meta.handle_end_txn(7, 0, False, 1))   # PrepareAbort: the transaction has ended
    assert isinstance(meta.handle_verify_partitions(7, 0, [("a", 0)]).error, errors.InvalidTxnStateError)
