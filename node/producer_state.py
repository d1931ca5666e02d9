"""Idempotent-producer state of one partition: Kafka's ProducerStateManager as a pure model.

Leader flow, under the partition lock:
    decision = psm.check_and_update(pid, epoch, base_sequence, last_sequence, is_transactional)
    Accept -> assign offsets, append, then
              psm.on_append(pid, epoch, base_sequence, last_sequence, base_offset, last_offset,
                            is_transactional)
    DuplicateBatch -> do not append; answer with the original offsets
    Reject -> answer with `decision.error`
`check_and_update` only checks; the state changes in `on_append`, once the
offsets are known. Followers and restarts call `on_append` /
`on_control_marker` directly (or `rebuild`): replicated data is not re-checked.

A request appends all of its batches or none (Kafka's ProducerAppendInfo):
    pending = psm.begin_append()       # same API, over copies of the entries it touches
    ... pending.check_and_update / pending.on_append / pending.on_control_marker per batch ...
    write the log; only if that succeeded: psm.commit_append(pending)
A rejected batch or a failed write then leaves `psm` as it was. So keep whatever
a check reads or an append changes inside `ProducerStateEntry` (copied whole).

Rules (Kafka's ProducerAppendInfo, 2.7+ error codes):
- Duplicate: same producer epoch and (base_sequence, last_sequence) equal to
  one of the last `MAX_BATCHES_PER_PRODUCER` (5) batches of that producer.
- Older epoch: INVALID_PRODUCER_EPOCH (PRODUCER_FENCED is the transaction
  coordinator's answer, not the partition's).
- Newer epoch: must start at sequence 0, else OUT_OF_ORDER_SEQUENCE_NUMBER.
- Same epoch: base_sequence must be last_sequence + 1, wrapping from int32
  max to 0, else OUT_OF_ORDER_SEQUENCE_NUMBER.
- Unknown producer: only base_sequence 0 (stricter than Kafka 2.5+, which
  accepts any sequence there), else OUT_OF_ORDER_SEQUENCE_NUMBER.
- A non-transactional batch from a producer with an open transaction:
  INVALID_TXN_STATE.

Transactions: the first offset of each producer's open transaction is kept
(set by the first transactional batch, cleared by its COMMIT/ABORT marker);
`first_unstable_offset()` is the smallest of them, the base of the LSO.

`truncate_to(offset, batches)`: the state after a truncation is rebuilt from
the batches that remain (the caller passes the log's batch headers; any at or
above `offset` are ignored). Trimming entries in place cannot be right in
general: dropping a producer's newest batches may need batches older than the
5 kept, or an older epoch, to know its state.

`snapshot()` / `restore()`: JSON-able dicts.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from client.common.errors import (
    InvalidProducerEpochError,
    InvalidTxnStateError,
    KafkaError,
    OutOfOrderSequenceNumberError,
)

MAX_BATCHES_PER_PRODUCER = 5
UNCHECKED = object()  # a leader append's verification guard when the caller asks for no KIP-890 check
INT32_MAX = 2**31 - 1
NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1


def in_sequence(last_sequence: int, next_sequence: int) -> bool:
    return next_sequence == last_sequence + 1 or (next_sequence == 0 and last_sequence == INT32_MAX)


class BatchInfo(Protocol):
    """What rebuild needs of a batch header (client.common.records.BatchHeader fits)."""
    base_offset: int
    producer_id: int
    producer_epoch: int
    base_sequence: int

    @property
    def last_offset(self) -> int: ...
    @property
    def last_sequence(self) -> int: ...
    @property
    def is_transactional(self) -> bool: ...
    @property
    def is_control(self) -> bool: ...


# ---------------------------------------------------------------- decisions

@dataclass(frozen=True, slots=True)
class Accept:
    pass


@dataclass(frozen=True, slots=True)
class DuplicateBatch:
    base_offset: int
    last_offset: int


@dataclass(frozen=True, slots=True)
class Reject:
    error: KafkaError


Decision = Accept | DuplicateBatch | Reject
ACCEPT = Accept()


@dataclass(frozen=True, slots=True)
class CompletedTxn:
    producer_id: int
    first_offset: int
    last_offset: int  # the marker's offset


# ---------------------------------------------------------------- state

@dataclass(frozen=True, slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int


@dataclass(slots=True)
class ProducerStateEntry:
    producer_id: int
    producer_epoch: int = NO_PRODUCER_EPOCH
    batches: deque[BatchMetadata] = field(default_factory=lambda: deque(maxlen=MAX_BATCHES_PER_PRODUCER))
    current_txn_first_offset: int | None = None

    def copy(self) -> ProducerStateEntry:
        # replace() carries every field, including ones added later; only the deque is mutable.
        return replace(self, batches=deque(self.batches, maxlen=MAX_BATCHES_PER_PRODUCER))

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else NO_SEQUENCE

    def find_duplicate(self, producer_epoch: int, first_seq: int, last_seq: int) -> BatchMetadata | None:
        if producer_epoch != self.producer_epoch:
            return None
        return next((b for b in self.batches if b.first_seq == first_seq and b.last_seq == last_seq), None)

    def maybe_update_producer_epoch(self, producer_epoch: int) -> None:
        if producer_epoch != self.producer_epoch:
            self.batches.clear()
            self.producer_epoch = producer_epoch

    def to_json(self) -> dict:
        return {"producer_id": self.producer_id, "producer_epoch": self.producer_epoch,
                "batches": [[b.first_seq, b.last_seq, b.base_offset, b.last_offset] for b in self.batches],
                "current_txn_first_offset": self.current_txn_first_offset}

    @classmethod
    def from_json(cls, d: dict) -> ProducerStateEntry:
        e = cls(int(d["producer_id"]), int(d["producer_epoch"]))
        e.batches.extend(BatchMetadata(*(int(x) for x in b)) for b in d["batches"])
        first = d.get("current_txn_first_offset")
        e.current_txn_first_offset = None if first is None else int(first)
        return e


class _CopyOnRead(dict):
    """Entries of one pending append: a copy of the base entry is taken the first time it is read."""

    def __init__(self, base: dict[int, ProducerStateEntry]) -> None:
        super().__init__()
        self._base = base

    def get(self, producer_id, default=None):
        entry = super().get(producer_id)
        if entry is None:
            base = self._base.get(producer_id)
            if base is None:
                return default
            entry = self[producer_id] = base.copy()
        return entry


class ProducerStateManager:
    def __init__(self) -> None:
        self.producers: dict[int, ProducerStateEntry] = {}
        # KIP-890 verification guards: pid -> the guard of the last verification begun for a transaction
        # on this partition. A marker drops it, so a verification answered before a marker cannot admit
        # a batch after it.
        self.verifications: dict[int, object] = {}

    def last_entry(self, producer_id: int) -> ProducerStateEntry | None:
        return self.producers.get(producer_id)

    # -- one request's batches, all or nothing ----------------------------
    def begin_append(self) -> ProducerStateManager:
        """A scratch manager for one request: checks see the request's earlier batches, and
        updates go to copies, until `commit_append`."""
        pending = ProducerStateManager()
        pending.producers = _CopyOnRead(self.producers)
        return pending

    def commit_append(self, pending: ProducerStateManager) -> None:
        """The request's batches are in the log: make their producer state current."""
        self.producers.update(pending.producers)

    # -- transaction verification (KIP-890) ------------------------------
    def needs_verification(self, producer_id: int, is_transactional: bool) -> bool:
        """A transactional batch that would begin a transaction on this partition: the leader must
        first ask the transaction coordinator whether the partition is in an ongoing transaction."""
        if not is_transactional or producer_id == NO_PRODUCER_ID:
            return False
        entry = self.producers.get(producer_id)
        return entry is None or entry.current_txn_first_offset is None

    def begin_verification(self, producer_id: int) -> object:
        guard = object()
        self.verifications[producer_id] = guard
        return guard

    def check_verification(self, producer_id: int, producer_epoch: int, guard: object | None) -> Reject | None:
        """Refuses a batch that begins a transaction without a verification still current (none was
        made, or a marker came after it)."""
        if guard is not None and self.verifications.get(producer_id) is guard:
            return None
        return Reject(InvalidTxnStateError(
            f"producer {producer_id} epoch {producer_epoch} has no verified ongoing transaction on this "
            f"partition (a late batch of a transaction that ended here?)"))

    # -- leader check ----------------------------------------------------
    def check_and_update(self, producer_id: int, producer_epoch: int, base_sequence: int,
                         last_sequence: int, is_transactional: bool = False) -> Decision:
        """Decide on a client batch before it is appended (see module docstring)."""
        if producer_id == NO_PRODUCER_ID:
            return ACCEPT
        entry = self.producers.get(producer_id)
        if entry is None:
            if base_sequence != 0:
                return Reject(OutOfOrderSequenceNumberError(
                    f"unknown producer {producer_id} must start at sequence 0, not {base_sequence}"))
            return ACCEPT
        dup = entry.find_duplicate(producer_epoch, base_sequence, last_sequence)
        if dup is not None:
            return DuplicateBatch(dup.base_offset, dup.last_offset)
        if producer_epoch < entry.producer_epoch:
            return Reject(InvalidProducerEpochError(
                f"producer {producer_id} epoch {producer_epoch} is older than {entry.producer_epoch}"))
        if producer_epoch > entry.producer_epoch:
            if base_sequence != 0:
                return Reject(OutOfOrderSequenceNumberError(
                    f"producer {producer_id} new epoch {producer_epoch} must start at sequence 0, "
                    f"not {base_sequence}"))
        elif not in_sequence(entry.last_seq, base_sequence):
            # last_seq is NO_SEQUENCE (-1) when the epoch is known only from a
            # transaction marker, so the first batch must then be sequence 0.
            return Reject(OutOfOrderSequenceNumberError(
                f"producer {producer_id} epoch {producer_epoch}: sequence {base_sequence} after "
                f"{entry.last_seq}"))
        if not is_transactional and entry.current_txn_first_offset is not None:
            return Reject(InvalidTxnStateError(
                f"expected a transactional write from producer {producer_id}: its transaction is open "
                f"since offset {entry.current_txn_first_offset}"))
        return ACCEPT

    def awaits_predecessor(self, producer_id: int, producer_epoch: int, base_sequence: int) -> bool:
        """The batch is ahead of the producer's next sequence here: the batches between may still be
        in flight (a producer with several requests in flight, served on different threads), so the
        leader may hold it for them instead of answering OUT_OF_ORDER_SEQUENCE_NUMBER at once. A batch
        behind the next sequence (not a duplicate) or of an older epoch can never become valid."""
        if producer_id == NO_PRODUCER_ID or base_sequence < 0:
            return False
        entry = self.producers.get(producer_id)
        if entry is None or producer_epoch > entry.producer_epoch:
            return base_sequence > 0
        if producer_epoch < entry.producer_epoch:
            return False
        gap = (base_sequence - (entry.last_seq + 1)) % (INT32_MAX + 1)
        return 0 < gap <= INT32_MAX // 2

    # -- state updates ---------------------------------------------------
    def on_append(self, producer_id: int, producer_epoch: int, first_seq: int, last_seq: int,
                  base_offset: int, last_offset: int, is_transactional: bool = False) -> None:
        """Record an appended data batch (leader after `check_and_update`, follower, replay)."""
        if producer_id == NO_PRODUCER_ID:
            return
        entry = self.producers.get(producer_id)
        if entry is None:
            entry = self.producers[producer_id] = ProducerStateEntry(producer_id)
        entry.maybe_update_producer_epoch(producer_epoch)
        if first_seq != NO_SEQUENCE:
            entry.batches.append(BatchMetadata(first_seq, last_seq, base_offset, last_offset))
        if is_transactional and entry.current_txn_first_offset is None:
            entry.current_txn_first_offset = base_offset

    def on_control_marker(self, producer_id: int, producer_epoch: int, offset: int) -> CompletedTxn | None:
        """A COMMIT or ABORT marker at `offset`; returns the transaction it closed, if one was open."""
        self.verifications.pop(producer_id, None)
        entry = self.producers.get(producer_id)
        if entry is None:
            entry = self.producers[producer_id] = ProducerStateEntry(producer_id)
        entry.maybe_update_producer_epoch(producer_epoch)
        first = entry.current_txn_first_offset
        entry.current_txn_first_offset = None
        return None if first is None else CompletedTxn(producer_id, first, offset)

    def first_unstable_offset(self) -> int | None:
        firsts = [e.current_txn_first_offset for e in self.producers.values()
                  if e.current_txn_first_offset is not None]
        return min(firsts) if firsts else None

    # -- rebuild / truncate ----------------------------------------------
    def replay(self, batches: Iterable[BatchInfo]) -> None:
        for b in batches:
            if b.producer_id == NO_PRODUCER_ID:
                continue
            if b.is_control:
                self.on_control_marker(b.producer_id, b.producer_epoch, b.base_offset)
            else:
                self.on_append(b.producer_id, b.producer_epoch, b.base_sequence, b.last_sequence,
                               b.base_offset, b.last_offset, b.is_transactional)

    def rebuild(self, batches: Iterable[BatchInfo]) -> None:
        """Forget everything and replay the log's batch headers in offset order."""
        self.producers = {}
        self.replay(batches)

    def truncate_to(self, offset: int, batches: Iterable[BatchInfo]) -> None:
        """The log was truncated at `offset`: rebuild from the batches below it."""
        self.rebuild(b for b in batches if b.last_offset < offset)

    # -- snapshots -------------------------------------------------------
    def snapshot(self) -> dict:
        return {"version": 1, "producers": [e.to_json() for e in self.producers.values()]}

    @classmethod
    def restore(cls, snapshot: dict) -> ProducerStateManager:
        psm = cls()
        for d in snapshot.get("producers", []):
            e = ProducerStateEntry.from_json(d)
            psm.producers[e.producer_id] = e
        return psm
