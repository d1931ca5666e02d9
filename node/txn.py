"""Transactions as pure models: Kafka's TransactionMetadata state machine and the aborted-transaction index.

Coordinator flow (the driver in node/txn_coordinator.py), per transactional.id:
    outcome = meta.handle_<rpc>(..., now_ms)
    outcome.transit -> meta.pending = transit; persist it (acks=all); meta.complete(transit)
                       (or meta.abort_pending() when the write failed)
    outcome.error   -> the answer, once the transit (if any) is persisted
A transit into PrepareCommit / PrepareAbort starts the markers; once every
partition has its marker, `on_markers_written` gives the CompleteCommit /
CompleteAbort transit. While a transit is pending every other request gets
CONCURRENT_TRANSACTIONS, as in Kafka.

Fencing: InitProducerId bumps the epoch. If a transaction is open, it is first
aborted under the bumped epoch (Ongoing -> PrepareAbort; the caller retries
on CONCURRENT_TRANSACTIONS), so the old producer's writes and its EndTxn
fail with PRODUCER_FENCED / INVALID_PRODUCER_EPOCH. A transaction open for
longer than its timeout is aborted the same way.

Deviation: offsets sent with send_offsets_to_transaction are kept in the
transaction record (persisted) and handed to the group coordinator on
commit, instead of Kafka's transactional writes to `__consumer_offsets`.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import Enum

from client.common import errors

MAX_EPOCH = 32767  # producer epochs are int16 on the wire


class TxnState(Enum):
    EMPTY = "Empty"
    ONGOING = "Ongoing"
    PREPARE_COMMIT = "PrepareCommit"
    PREPARE_ABORT = "PrepareAbort"
    COMPLETE_COMMIT = "CompleteCommit"
    COMPLETE_ABORT = "CompleteAbort"
    DEAD = "Dead"
    PREPARE_EPOCH_FENCE = "PrepareEpochFence"


S = TxnState
# Kafka's TransactionState.validPreviousStates.
VALID_PREVIOUS: dict[TxnState, frozenset[TxnState]] = {
    S.EMPTY: frozenset({S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT}),
    S.ONGOING: frozenset({S.ONGOING, S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT}),
    S.PREPARE_COMMIT: frozenset({S.ONGOING}),
    S.PREPARE_ABORT: frozenset({S.ONGOING, S.PREPARE_EPOCH_FENCE}),
    S.COMPLETE_COMMIT: frozenset({S.PREPARE_COMMIT}),
    S.COMPLETE_ABORT: frozenset({S.PREPARE_ABORT}),
    S.DEAD: frozenset({S.EMPTY, S.COMPLETE_ABORT, S.COMPLETE_COMMIT}),
    S.PREPARE_EPOCH_FENCE: frozenset({S.ONGOING}),
}
PREPARE_STATES = frozenset({S.PREPARE_COMMIT, S.PREPARE_ABORT})
COMPLETE_STATES = frozenset({S.COMPLETE_COMMIT, S.COMPLETE_ABORT})


def is_valid_transition(src: TxnState, dst: TxnState) -> bool:
    return src in VALID_PREVIOUS[dst]


@dataclass(frozen=True, slots=True)
class TxnRecord:
    """One transactional.id's state as persisted in `__transaction_state` (key: the id)."""
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TxnState = S.EMPTY
    partitions: frozenset = frozenset()   # {(topic, partition)}
    groups: frozenset = frozenset()       # consumer groups added with AddOffsetsToTxn
    offsets: tuple = ()                   # ((group, topic, partition, offset, metadata, leader_epoch), ...)
    txn_start_ms: int = -1
    last_update_ms: int = -1
    # KIP-360: the epoch a client's own InitProducerId(producer_id, epoch) bumped from, so its retry
    # (the answer was lost) gets the current epoch instead of PRODUCER_FENCED; -1 otherwise.
    last_producer_epoch: int = -1

    def to_json(self) -> bytes:
        return json.dumps({
            "transactional_id": self.transactional_id, "producer_id": self.producer_id,
            "producer_epoch": self.producer_epoch, "timeout_ms": self.timeout_ms, "state": self.state.value,
            "partitions": sorted([t, p] for t, p in self.partitions), "groups": sorted(self.groups),
            "offsets": [list(o) for o in self.offsets], "txn_start_ms": self.txn_start_ms,
            "last_update_ms": self.last_update_ms, "last_producer_epoch": self.last_producer_epoch},
            separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TxnRecord:
        d = json.loads(raw)
        return cls(d["transactional_id"], int(d["producer_id"]), int(d["producer_epoch"]), int(d["timeout_ms"]),
                   TxnState(d["state"]), frozenset((t, int(p)) for t, p in d["partitions"]),
                   frozenset(d["groups"]), tuple(_offset_entry(*o) for o in d["offsets"]),
                   int(d["txn_start_ms"]), int(d["last_update_ms"]), int(d.get("last_producer_epoch", -1)))


@dataclass(frozen=True, slots=True)
class Outcome:
    transit: TxnRecord | None = None         # persist, then complete
    error: errors.KafkaError | None = None   # the answer (after the transit is persisted)

    @property
    def starts_markers(self) -> bool:
        return self.transit is not None and self.transit.state in PREPARE_STATES


def _fail(cls: type[errors.KafkaError], msg: str) -> Outcome:
    return Outcome(error=cls(msg))


def _offset_entry(group: str, topic: str, partition, offset, metadata: str, leader_epoch=-1) -> tuple:
    """One stored transaction offset; records written before leader epochs were kept have none (-1)."""
    return group, topic, int(partition), int(offset), metadata, int(leader_epoch)


class TransactionMetadata:
    """The coordinator's view of one transactional.id. Owned by the driver's lock."""

    def __init__(self, record: TxnRecord):
        self.current = record
        self.pending: TxnRecord | None = None
        # When the open transaction began on the driver's timer (monotonic) clock: the timeout runs on
        # it, while txn_start_ms is wall time, reported and persisted, and moves with clock faults.
        self.timer_start_ms = record.txn_start_ms

    @classmethod
    def new(cls, transactional_id: str, producer_id: int, timeout_ms: int, now_ms: int) -> TransactionMetadata:
        # Epoch -1 so that the first InitProducerId hands out epoch 0.
        return cls(TxnRecord(transactional_id, producer_id, -1, timeout_ms, S.EMPTY, last_update_ms=now_ms))

    @property
    def state(self) -> TxnState:
        return self.current.state

    # -- transitions -------------------------------------------------------
    def _transit(self, state: TxnState, now_ms: int, **changes) -> TxnRecord:
        if not is_valid_transition(self.current.state, state):
            raise errors.IllegalStateError(
                f"{self.current.transactional_id}: invalid transition {self.current.state.value} -> {state.value}")
        return replace(self.current, state=state, last_update_ms=now_ms, **changes)

    def begin(self, transit: TxnRecord) -> None:
        self.pending = transit

    def complete(self, transit: TxnRecord, timer_ms: int | None = None) -> None:
        """`timer_ms`: the driver's monotonic clock (default: the transit's own wall time)."""
        if self.pending is not transit:
            raise errors.IllegalStateError(f"{transit.transactional_id}: completing a transit that is not pending")
        if transit.state is S.ONGOING and self.current.state is not S.ONGOING:
            self.timer_start_ms = transit.txn_start_ms if timer_ms is None else timer_ms
        self.current, self.pending = transit, None

    def rebase_timer(self, now_ms: int, timer_ms: int) -> None:
        """After a load: the open transaction has run for as long as the persisted wall start says
        (never negative), measured from here on the driver's timer clock."""
        c = self.current
        if c.state is S.ONGOING:
            self.timer_start_ms = timer_ms - max(0, now_ms - c.txn_start_ms)

    def abort_pending(self) -> None:
        self.pending = None

    def _check(self, producer_id: int, producer_epoch: int) -> Outcome | None:
        c = self.current
        if producer_id != c.producer_id:
            return _fail(errors.InvalidProducerIdMappingError,
                         f"producer id {producer_id} does not own transactional.id {c.transactional_id} "
                         f"(now {c.producer_id})")
        if producer_epoch != c.producer_epoch:
            return _fail(errors.ProducerFencedError,
                         f"producer epoch {producer_epoch} of {c.transactional_id} is fenced by epoch "
                         f"{c.producer_epoch}")
        if self.pending is not None:
            return _fail(errors.ConcurrentTransactionsError,
                         f"{c.transactional_id}: a state change to {self.pending.state.value} is in progress")
        return None

    def _bumped(self, new_producer_id: Callable[[], int]) -> tuple[int, int]:
        c = self.current
        if c.producer_epoch + 1 >= MAX_EPOCH:
            return new_producer_id(), 0
        return c.producer_id, c.producer_epoch + 1

    # -- requests ----------------------------------------------------------
    def handle_init_producer_id(self, timeout_ms: int, max_timeout_ms: int, now_ms: int,
                                new_producer_id: Callable[[], int],
                                expected: tuple[int, int] | None = None) -> Outcome:
        """expected: KIP-360's (producer_id, producer_epoch) of a client bumping its own epoch (InitProducerId
        v3+); it must be the current producer (Kafka's isValidProducerId / prepareIncrementProducerEpoch),
        so a fenced zombie cannot take the id back from its successor."""
        c = self.current
        if not 0 < timeout_ms <= max_timeout_ms:
            return _fail(errors.InvalidTransactionTimeoutError,
                         f"transaction.timeout.ms {timeout_ms} must be in (0, transaction.max.timeout.ms "
                         f"{max_timeout_ms}]")
        if self.pending is not None or c.state in PREPARE_STATES:
            return _fail(errors.ConcurrentTransactionsError,
                         f"{c.transactional_id} is completing a transaction ({c.state.value}); retry")
        if expected is not None and c.producer_epoch >= 0 and expected[0] != c.producer_id:
            return _fail(errors.ProducerFencedError, f"{c.transactional_id}: producer {expected[0]} is not the "
                                                     f"current producer {c.producer_id}")
        if c.state is S.ONGOING:
            # Fence: abort the open transaction under a bumped epoch; the caller retries.
            return Outcome(self._transit(S.PREPARE_ABORT, now_ms, producer_epoch=c.producer_epoch + 1),
                           errors.ConcurrentTransactionsError(
                               f"{c.transactional_id}: aborting the open transaction of epoch "
                               f"{c.producer_epoch} first; retry"))
        if c.state is S.DEAD or c.state is S.PREPARE_EPOCH_FENCE:
            return _fail(errors.ConcurrentTransactionsError, f"{c.transactional_id} is {c.state.value}; retry")
        last = -1
        if expected is not None and c.producer_epoch >= 0:
            if expected[1] != c.producer_epoch:
                if expected[1] == c.last_producer_epoch >= 0:
                    return Outcome()  # a retry of a bump that was done: the current epoch
                return _fail(errors.ProducerFencedError, f"{c.transactional_id}: epoch {expected[1]} is fenced "
                                                         f"(current {c.producer_epoch})")
            last = c.producer_epoch
        pid, epoch = self._bumped(new_producer_id)
        return Outcome(self._transit(S.EMPTY, now_ms, producer_id=pid, producer_epoch=epoch, timeout_ms=timeout_ms,
                                     partitions=frozenset(), groups=frozenset(), offsets=(), txn_start_ms=-1,
                                     last_producer_epoch=last if pid == c.producer_id else -1))

    def _begin_or_extend(self, now_ms: int, partitions: Iterable = (), group: str | None = None) -> Outcome:
        c = self.current
        if c.state in PREPARE_STATES:
            return _fail(errors.ConcurrentTransactionsError,
                         f"{c.transactional_id}: the previous transaction is still {c.state.value}; retry")
        if c.state not in (S.EMPTY, S.ONGOING, S.COMPLETE_COMMIT, S.COMPLETE_ABORT):
            return _fail(errors.InvalidTxnStateError, f"{c.transactional_id} is {c.state.value}")
        new_parts = frozenset(partitions)
        if c.state is S.ONGOING and new_parts <= c.partitions and (group is None or group in c.groups):
            return Outcome()
        start = c.txn_start_ms if c.state is S.ONGOING else now_ms
        groups = c.groups | ({group} if group is not None else set())
        return Outcome(self._transit(S.ONGOING, now_ms, partitions=c.partitions | new_parts, groups=groups,
                                     txn_start_ms=start))

    def handle_add_partitions(self, producer_id: int, producer_epoch: int, partitions: Iterable,
                              now_ms: int) -> Outcome:
        return self._check(producer_id, producer_epoch) or self._begin_or_extend(now_ms, partitions=partitions)

    def handle_add_offsets(self, producer_id: int, producer_epoch: int, group_id: str, now_ms: int) -> Outcome:
        if not group_id:
            return _fail(errors.InvalidGroupIdError, "AddOffsetsToTxn needs a group id")
        return self._check(producer_id, producer_epoch) or self._begin_or_extend(now_ms, group=group_id)

    def handle_txn_offset_commit(self, producer_id: int, producer_epoch: int, group_id: str,
                                 offsets: Iterable[tuple], now_ms: int) -> Outcome:
        """offsets: (topic, partition, offset, metadata[, leader_epoch]) each."""
        c = self.current
        bad = self._check(producer_id, producer_epoch)
        if bad is not None:
            return bad
        if c.state is not S.ONGOING or group_id not in c.groups:
            return _fail(errors.InvalidTxnStateError,
                         f"{c.transactional_id}: TxnOffsetCommit for group '{group_id}' before AddOffsetsToTxn "
                         f"(state {c.state.value})")
        latest = {(g, t, p): (o, m, e) for g, t, p, o, m, e in c.offsets}
        for t, p, o, m, *e in offsets:
            if o < 0:
                return _fail(errors.InvalidCommitOffsetSizeError, f"offset {o} for {t}-{p} is negative")
            latest[(group_id, t, p)] = (o, m, int(e[0]) if e else -1)
        merged = tuple(sorted((g, t, p, o, m, e) for (g, t, p), (o, m, e) in latest.items()))
        return Outcome(self._transit(S.ONGOING, now_ms, offsets=merged))

    def handle_verify_partitions(self, producer_id: int, producer_epoch: int, partitions: Iterable) -> Outcome:
        """KIP-890's AddPartitionsToTxn(verify_only), asked by a partition leader before it accepts the
        first transactional batch of a transaction: is that partition in this producer's ongoing
        transaction? A late batch of a transaction that has ended is refused this way."""
        c = self.current
        if producer_id != c.producer_id:
            return _fail(errors.InvalidProducerIdMappingError,
                         f"producer id {producer_id} does not own transactional.id {c.transactional_id}")
        if producer_epoch != c.producer_epoch:
            return _fail(errors.InvalidProducerEpochError,
                         f"producer epoch {producer_epoch} of {c.transactional_id} is not the current "
                         f"{c.producer_epoch}")
        missing = sorted(frozenset(partitions) - c.partitions)
        if c.state is not S.ONGOING or missing or (self.pending is not None and self.pending.state in PREPARE_STATES):
            what = f"{missing[0][0]}-{missing[0][1]} is not" if missing else "nothing is"
            return _fail(errors.InvalidTxnStateError,
                         f"{c.transactional_id}: {what} in an ongoing transaction of epoch {producer_epoch} "
                         f"(state {c.state.value})")
        return Outcome()

    def handle_end_txn(self, producer_id: int, producer_epoch: int, commit: bool, now_ms: int) -> Outcome:
        bad = self._check(producer_id, producer_epoch)
        if bad is not None:
            return bad
        c = self.current
        want = "commit" if commit else "abort"
        if c.state is S.ONGOING:
            return Outcome(self._transit(S.PREPARE_COMMIT if commit else S.PREPARE_ABORT, now_ms))
        if c.state is (S.COMPLETE_COMMIT if commit else S.COMPLETE_ABORT):
            return Outcome()  # a retried EndTxn that already took effect
        if c.state is (S.PREPARE_COMMIT if commit else S.PREPARE_ABORT):
            return _fail(errors.ConcurrentTransactionsError, f"{c.transactional_id}: {want} in progress")
        return _fail(errors.InvalidTxnStateError,
                     f"{c.transactional_id}: cannot {want} in state {c.state.value}")

    # -- coordinator events --------------------------------------------------
    def on_markers_written(self, now_ms: int) -> TxnRecord:
        """Every partition holds its marker (and committed offsets were handed over): complete."""
        c = self.current
        if c.state not in PREPARE_STATES:
            raise errors.IllegalStateError(f"{c.transactional_id}: markers written in state {c.state.value}")
        done = S.COMPLETE_COMMIT if c.state is S.PREPARE_COMMIT else S.COMPLETE_ABORT
        return self._transit(done, now_ms, partitions=frozenset(), groups=frozenset(), offsets=())

    def is_timed_out(self, timer_ms: int) -> bool:
        c = self.current
        return c.state is S.ONGOING and self.pending is None and timer_ms > self.timer_start_ms + c.timeout_ms

    def maybe_abort_timed_out(self, now_ms: int, timer_ms: int | None = None) -> Outcome | None:
        """Kafka's abortTimedOutTransactions: abort under a bumped epoch, so the producer is fenced.
        `timer_ms` is the clock `complete` was given (default: now_ms, one clock for both)."""
        if not self.is_timed_out(now_ms if timer_ms is None else timer_ms):
            return None
        c = self.current
        return Outcome(self._transit(S.PREPARE_ABORT, now_ms, producer_epoch=c.producer_epoch + 1))


# ---------------------------------------------------------------- broker side

def last_stable_offset(first_unstable_offset: int | None, high_watermark: int) -> int:
    """LSO: below it every transaction is decided and replicated."""
    return high_watermark if first_unstable_offset is None else min(first_unstable_offset, high_watermark)


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    producer_id: int
    first_offset: int
    last_offset: int  # the ABORT marker's offset


@dataclass(slots=True)
class AbortedTxnIndex:
    """Aborted transactions of one partition, built by reading the log forward.

    `next_offset` is where reading stopped; `open` holds each producer's first
    transactional offset not yet closed by a marker.
    """
    entries: list[AbortedTxn] = field(default_factory=list)
    open: dict[int, int] = field(default_factory=dict)
    next_offset: int = 0

    def on_batch(self, producer_id: int, base_offset: int, next_offset: int, is_transactional: bool,
                 control: str | None) -> None:
        """`control` is "COMMIT" / "ABORT" for a marker batch, None for data."""
        if base_offset < self.next_offset:
            return
        self.next_offset = next_offset
        if producer_id < 0 or not is_transactional:
            return
        if control is None:
            self.open.setdefault(producer_id, base_offset)
            return
        first = self.open.pop(producer_id, None)
        if control == "ABORT" and first is not None:
            self.entries.append(AbortedTxn(producer_id, first, base_offset))

    def collect(self, start: int, upto: int) -> list[tuple[int, int]]:
        """(producer_id, first_offset) of aborted transactions overlapping [start, upto)."""
        return [(a.producer_id, a.first_offset) for a in self.entries
                if a.last_offset >= start and a.first_offset < upto]
