"""One replica of one topic-partition on one broker: Kafka's Partition.scala as a pure model.

No I/O, no clock, no threads: the driver passes `now_ms`, applies the returned
effects (persist, then send, then complete futures) and owns the lock.

Leader side
-----------
`become_leader(leader_epoch, partition_epoch, isr, replicas, now_ms) -> BecomeLeaderResult`
    Stale metadata (lower leader epoch, or same epoch with a lower partition
    epoch) is ignored (`applied=False`). On a new leader epoch the epoch cache
    gets (leader_epoch, log_end_offset) right away, as Kafka's makeLeader does,
    so a follower holding entries of a later epoch than anything in this log
    still finds a larger epoch to truncate against; followers' fetch state is
    reset (last_caught_up_ms = now for ISR members, 0 otherwise).
`check_append(acks, min_insync_replicas) -> KafkaError | None`
    NOT_LEADER_OR_FOLLOWER, INVALID_REQUIRED_ACKS, NOT_ENOUGH_REPLICAS (acks=-1
    and the committed ISR is smaller than min.insync.replicas).
`on_leader_append(base_offset, last_offset, now_ms) -> int | None`
    Advances the log end offset; returns the new high watermark if it moved.
`on_follower_fetch(follower_id, fetch_offset, now_ms, *, follower_leader_epoch=None) -> FetchDecision`
    Kafka's updateFollowerFetchState + maybeExpandIsr + maybeIncrementLeaderHW.
    The follower's current leader epoch, when given, is checked first
    (FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH).
`maybe_shrink_isr(now_ms, replica_lag_time_max_ms) -> IsrChange | None`
`on_isr_change_committed(new_isr, partition_epoch) -> int | None` / `on_isr_change_failed()`
    The first also takes a newer ISR arriving in metadata for the same leader
    epoch; stale partition epochs are ignored.
`acks_satisfied(offset)`, `check_enough_replicas_reach_offset(required_offset, min_isr)`
`check_replica_fetch(follower_id, follower_broker_epoch, registered_broker_epoch) -> KafkaError | None`
    A replica fetch is served only to a replica with its current broker epoch.
`end_offset_for_leader_epoch(current_leader_epoch, leader_epoch) -> EpochEndOffset`
    The leader's answer to OffsetForLeaderEpoch.

Follower side
-------------
`become_follower(leader, leader_epoch, partition_epoch, isr, replicas) -> BecomeFollowerResult`
    `truncation_needed` tells the driver to run OffsetForLeaderEpoch (asking for
    `leader_epoch_cache.latest_epoch`) and `truncation_offset` before fetching.
`on_follower_append(base_offset, last_offset, batch_leader_epoch)`
`update_high_watermark_from_leader(hw)`: follower HW = min(leader HW, own LEO).
    Like Kafka's UnifiedLog.updateHighWatermark this may move back (a newly
    elected leader's HW can lag the old leader's).
`is_follower_at(leader_epoch)`: a follower step computed at that epoch still applies.
`truncate_to(offset)` (never on the leader), `truncate_fully_and_start_at(offset)`,
`maybe_increment_log_start_offset(offset)`

Loading
-------
`restore(log_start_offset, log_end_offset, high_watermark, epoch_entries)` after a
restart, from the log and the checkpoints; the epoch cache is trimmed to the
log as Kafka does on load. `epoch_cache` is the same object as
`leader_epoch_cache`; `leader_id` is `leader` in wire form (NO_LEADER = -1).

ISR changes in flight
---------------------
`partition_state` is `CommittedPartitionState`, `PendingExpandIsr` or
`PendingShrinkIsr`, as in Kafka. While an AlterPartition is in flight no
other ISR change is proposed, `isr` is still the last committed ISR (used by
min.insync.replicas) and the high watermark is computed over `maximal_isr`:
committed ISR plus the replica being added, or the committed ISR still holding
the replicas being removed. That way the HW never passes a replica that the
controller may yet (re)confirm as in sync.

High watermark: min log end offset over the maximal ISR, leader included;
never goes down on the leader, never above the leader's LEO.

Epoch cache and truncation
--------------------------
`LeaderEpochCache` is Kafka's LeaderEpochFileCache: `assign`, `end_offset_for`,
`truncate_from_end`, `truncate_from_start`, `latest_epoch`, `to_json`/`from_json`.
`end_offset_for` follows current Kafka: a requested epoch below the first known
one answers (requested epoch, start offset of the first epoch) rather than
UNDEFINED, so a follower truncates to where the leader's history begins.
`truncation_offset(cache, leo, (epoch, end_offset), hw) -> OffsetTruncationState`
is the follower's side of KIP-101/KIP-279: the driver truncates to `.offset`
and, while `.truncation_completed` is False, asks the leader again with its
new latest epoch before fetching.

`check_invariant(cond, msg)` raises AssertionError even under `python -O`.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

from client.common.errors import (
    FencedLeaderEpochError,
    InvalidRequiredAcksError,
    KafkaError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderOrFollowerError,
    OffsetOutOfRangeError,
    StaleBrokerEpochError,
    UnknownLeaderEpochError,
)

log = logging.getLogger(__name__)

UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1
UNKNOWN_OFFSET = -1
NO_LEADER = -1


def check_invariant(cond: object, msg: str) -> None:
    """An assert that `python -O` does not strip."""
    if not cond:
        raise AssertionError(msg)


# ---------------------------------------------------------------- leader epoch cache

@dataclass(frozen=True, slots=True)
class EpochEntry:
    epoch: int
    start_offset: int


class EpochEndOffset(NamedTuple):
    """OffsetForLeaderEpoch answer for one partition."""
    error: KafkaError | None
    leader_epoch: int
    end_offset: int


class LeaderEpochCache:
    """(epoch, start_offset) pairs, both strictly increasing."""

    def __init__(self, entries: Iterable[tuple[int, int]] = ()) -> None:
        self._entries: list[EpochEntry] = []
        for epoch, start in entries:
            self.assign(epoch, start)

    @property
    def entries(self) -> list[tuple[int, int]]:
        return [(e.epoch, e.start_offset) for e in self._entries]

    @property
    def latest_epoch(self) -> int:
        return self._entries[-1].epoch if self._entries else UNDEFINED_EPOCH

    def __len__(self) -> int:
        return len(self._entries)

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that `epoch` starts at `start_offset`; True if the cache changed.

        Entries that would break monotonicity (epoch >= the new one, or start
        offset >= the new one) are dropped first, as Kafka does.
        """
        check_invariant(epoch >= 0 and start_offset >= 0,
                        f"epoch entry ({epoch}, {start_offset}) must not be negative")
        if self._entries:
            latest = self._entries[-1]
            if latest.epoch == epoch and latest.start_offset <= start_offset:
                return False
        while self._entries and (self._entries[-1].epoch >= epoch
                                 or self._entries[-1].start_offset >= start_offset):
            dropped = self._entries.pop()
            log.info("Removed epoch entry %s to keep the cache monotonic for (%d, %d)",
                     dropped, epoch, start_offset)
        self._entries.append(EpochEntry(epoch, start_offset))
        return True

    def end_offset_for(self, requested_epoch: int, log_end_offset: int) -> tuple[int, int]:
        """(largest epoch <= requested, its end offset), as Kafka's endOffsetFor.

        The end offset is the start offset of the next higher epoch, or the log
        end offset when the requested epoch is the latest. UNDEFINED (-1, -1)
        for an undefined or empty request and for an epoch above every known
        one. Below the first known epoch: (requested, first start offset).
        """
        undefined = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
        if requested_epoch == UNDEFINED_EPOCH or not self._entries:
            return undefined
        if self._entries[-1].epoch == requested_epoch:
            return requested_epoch, log_end_offset
        higher = next((e for e in self._entries if e.epoch > requested_epoch), None)
        if higher is None:
            return undefined
        floor = None
        for e in self._entries:
            if e.epoch > requested_epoch:
                break
            floor = e
        if floor is None:
            return requested_epoch, higher.start_offset
        return floor.epoch, higher.start_offset

    def truncate_from_end(self, end_offset: int) -> None:
        """Drop entries starting at or after `end_offset` (the log was truncated there)."""
        if end_offset < 0:
            return
        while self._entries and self._entries[-1].start_offset >= end_offset:
            self._entries.pop()

    def truncate_from_start(self, start_offset: int) -> None:
        """The log now starts at `start_offset`: the epoch covering it starts there."""
        last_removed = None
        while self._entries and self._entries[0].start_offset <= start_offset:
            last_removed = self._entries.pop(0)
        if last_removed is not None:
            self._entries.insert(0, EpochEntry(last_removed.epoch, start_offset))

    def clear(self) -> None:
        self._entries.clear()

    def to_json(self) -> list[list[int]]:
        return [[e.epoch, e.start_offset] for e in self._entries]

    @classmethod
    def from_json(cls, data: Iterable[Iterable[int]]) -> LeaderEpochCache:
        cache = cls()
        for item in data:
            epoch, start = (int(x) for x in item)
            if cache._entries:
                prev = cache._entries[-1]
                check_invariant(epoch > prev.epoch and start > prev.start_offset,
                                f"epoch checkpoint not monotonic at ({epoch}, {start}) after {prev}")
            cache.assign(epoch, start)
        return cache


class OffsetTruncationState(NamedTuple):
    offset: int
    # False: truncated to an intermediate point; ask the leader again with the
    # (now lower) latest epoch, as KIP-279 does.
    truncation_completed: bool


def truncation_offset(local_cache: LeaderEpochCache, local_leo: int, leader_epoch_end: tuple[int, int],
                      local_hw: int) -> OffsetTruncationState:
    """Where a follower truncates, given the leader's OffsetForLeaderEpoch answer.

    The follower asked for its `latest_epoch`; the leader answered (epoch E,
    end offset O) with E the largest epoch <= the requested one in its cache.
    - O undefined: the leader knows nothing of our history: truncate to our HW.
    - We know E: truncate to min(O, our end offset for E, our LEO): done.
    - We do not know E (we skipped it): truncate to the end of our largest
      epoch below E and ask again (not completed).
    """
    leader_epoch, leader_end = leader_epoch_end
    if leader_end == UNDEFINED_EPOCH_OFFSET:
        return OffsetTruncationState(min(local_hw, local_leo), True)
    if leader_epoch == UNDEFINED_EPOCH:
        return OffsetTruncationState(min(leader_end, local_leo), True)
    follower_epoch, follower_end = local_cache.end_offset_for(leader_epoch, local_leo)
    if follower_end == UNDEFINED_EPOCH_OFFSET:
        return OffsetTruncationState(min(leader_end, local_leo), True)
    if follower_epoch != leader_epoch:
        return OffsetTruncationState(min(follower_end, local_leo), False)
    return OffsetTruncationState(min(follower_end, leader_end, local_leo), True)


# ---------------------------------------------------------------- ISR states

@dataclass(frozen=True, slots=True)
class CommittedPartitionState:
    isr: tuple[int, ...]

    @property
    def maximal_isr(self) -> tuple[int, ...]:
        return self.isr

    @property
    def is_inflight(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class PendingExpandIsr:
    new_in_sync_replica_id: int
    last_committed_state: CommittedPartitionState

    @property
    def isr(self) -> tuple[int, ...]:
        return self.last_committed_state.isr

    @property
    def maximal_isr(self) -> tuple[int, ...]:
        return self.isr + (self.new_in_sync_replica_id,)

    @property
    def is_inflight(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class PendingShrinkIsr:
    out_of_sync_replica_ids: tuple[int, ...]
    last_committed_state: CommittedPartitionState

    @property
    def isr(self) -> tuple[int, ...]:
        return self.last_committed_state.isr

    @property
    def maximal_isr(self) -> tuple[int, ...]:
        return self.isr

    @property
    def is_inflight(self) -> bool:
        return True


PartitionState = CommittedPartitionState | PendingExpandIsr | PendingShrinkIsr


# ---------------------------------------------------------------- results and effects

@dataclass(slots=True)
class FollowerState:
    """The leader's view of one follower (Kafka's ReplicaState)."""
    log_end_offset: int = UNKNOWN_OFFSET
    last_caught_up_ms: int = 0
    last_fetch_ms: int = 0
    last_fetch_leader_log_end_offset: int = UNKNOWN_OFFSET

    def is_caught_up(self, leader_log_end_offset: int, now_ms: int, replica_lag_time_max_ms: int) -> bool:
        return (leader_log_end_offset == self.log_end_offset
                or now_ms - self.last_caught_up_ms <= replica_lag_time_max_ms)


@dataclass(frozen=True, slots=True)
class IsrChange:
    """Effect: send AlterPartition(leader_epoch, partition_epoch, new_isr) to the controller."""
    topic: str
    partition: int
    leader_id: int
    leader_epoch: int
    partition_epoch: int
    new_isr: tuple[int, ...]
    added: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchDecision:
    """The leader's verdict on one replica fetch.

    `high_watermark`/`log_start_offset`/`log_end_offset` go into the fetch
    response; `new_high_watermark` is set when the HW moved (complete delayed
    acks=all produces); `isr_change` is an AlterPartition to send.
    """
    error: KafkaError | None
    high_watermark: int
    log_start_offset: int
    log_end_offset: int
    new_high_watermark: int | None = None
    isr_change: IsrChange | None = None


@dataclass(frozen=True, slots=True)
class BecomeLeaderResult:
    applied: bool
    is_new_leader_epoch: bool = False
    new_high_watermark: int | None = None


@dataclass(frozen=True, slots=True)
class BecomeFollowerResult:
    applied: bool
    is_new_leader_epoch: bool = False
    # Run OffsetForLeaderEpoch against `leader` and truncate before fetching.
    truncation_needed: bool = False
    leader: int | None = None
    leader_epoch: int = UNDEFINED_EPOCH


# ---------------------------------------------------------------- the partition

class Partition:
    def __init__(self, topic: str, partition: int, broker_id: int, *, log_start_offset: int = 0,
                 log_end_offset: int = 0, high_watermark: int = 0,
                 leader_epoch_cache: LeaderEpochCache | None = None) -> None:
        self.topic = topic
        self.partition = partition
        self.broker_id = broker_id
        self.replicas: list[int] = []
        self.leader: int | None = None
        self.leader_epoch = UNDEFINED_EPOCH
        self.partition_epoch = -1
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset
        self.high_watermark = min(high_watermark, log_end_offset)
        self.leader_epoch_cache = leader_epoch_cache if leader_epoch_cache is not None else LeaderEpochCache()
        self.partition_state: PartitionState = CommittedPartitionState(())
        self.followers: dict[int, FollowerState] = {}
        # LEO when this broker became leader of the current epoch (Kafka's
        # leaderEpochStartOffsetOpt); None while a follower.
        self.leader_epoch_start_offset: int | None = None
        self._check_state()

    def __repr__(self) -> str:
        return (f"Partition({self.topic}-{self.partition} on {self.broker_id}: leader={self.leader} "
                f"epoch={self.leader_epoch} isr={list(self.isr)} leo={self.log_end_offset} "
                f"hw={self.high_watermark})")

    def restore(self, *, log_start_offset: int, log_end_offset: int, high_watermark: int,
                epoch_entries: Iterable[Iterable[int]] = ()) -> None:
        """Load the log's offsets and checkpoints after a restart (before any role)."""
        check_invariant(self.leader is None and self.leader_epoch == UNDEFINED_EPOCH,
                        f"{self._tp}: restore after a role was set")
        cache = LeaderEpochCache.from_json(epoch_entries)
        cache.truncate_from_end(log_end_offset)
        cache.truncate_from_start(log_start_offset)
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset
        self.high_watermark = max(log_start_offset, min(high_watermark, log_end_offset))
        self.leader_epoch_cache = cache
        self._check_state()

    # -- views -----------------------------------------------------------
    @property
    def epoch_cache(self) -> LeaderEpochCache:
        return self.leader_epoch_cache

    @property
    def leader_id(self) -> int:
        return NO_LEADER if self.leader is None else self.leader

    @property
    def is_leader(self) -> bool:
        return self.leader == self.broker_id

    @property
    def isr(self) -> tuple[int, ...]:
        """The last committed ISR."""
        return self.partition_state.isr

    @property
    def maximal_isr(self) -> tuple[int, ...]:
        return self.partition_state.maximal_isr

    def acks_satisfied(self, offset: int) -> bool:
        """acks=all for a batch whose last offset is `offset` is done."""
        return self.high_watermark > offset

    def check_enough_replicas_reach_offset(self, required_offset: int,
                                           min_insync_replicas: int) -> tuple[bool, KafkaError | None]:
        """Kafka's delayed-produce check; `required_offset` is last offset + 1.

        (done, error): the ISR may have shrunk below min.insync.replicas after
        the append, then the batch is replicated but NOT_ENOUGH_REPLICAS_AFTER_APPEND.
        """
        if not self.is_leader:
            return False, NotLeaderOrFollowerError(f"{self.broker_id} is not leader of {self._tp}")
        if self.high_watermark < required_offset:
            return False, None
        if len(self.maximal_isr) < min_insync_replicas:
            return True, NotEnoughReplicasAfterAppendError(
                f"ISR {list(self.maximal_isr)} below min.insync.replicas={min_insync_replicas}")
        return True, None

    @property
    def _tp(self) -> str:
        return f"{self.topic}-{self.partition}"

    # -- leadership ------------------------------------------------------
    def _is_stale(self, leader_epoch: int, partition_epoch: int) -> bool:
        if leader_epoch != self.leader_epoch:
            return leader_epoch < self.leader_epoch
        return partition_epoch < self.partition_epoch

    def become_leader(self, leader_epoch: int, partition_epoch: int, isr: Iterable[int],
                      replicas: Iterable[int], now_ms: int) -> BecomeLeaderResult:
        isr_t, replicas_l = tuple(isr), list(replicas)
        if self._is_stale(leader_epoch, partition_epoch):
            log.info("Ignoring stale become-leader for %s: epoch %d/%d below %d/%d", self._tp,
                     leader_epoch, partition_epoch, self.leader_epoch, self.partition_epoch)
            return BecomeLeaderResult(applied=False)
        check_invariant(self.broker_id in isr_t, f"{self._tp}: leader {self.broker_id} not in ISR {isr_t}")
        check_invariant(self.broker_id in replicas_l and set(isr_t) <= set(replicas_l),
                        f"{self._tp}: leader {self.broker_id} and ISR {isr_t} must be within replicas "
                        f"{replicas_l}")
        was_leader = self.is_leader
        is_new_leader_epoch = leader_epoch > self.leader_epoch or not was_leader
        self.replicas = replicas_l
        self.leader = self.broker_id
        self.leader_epoch = leader_epoch
        self.partition_epoch = partition_epoch
        self.partition_state = CommittedPartitionState(isr_t)
        old = self.followers
        self.followers = {r: old.get(r) or FollowerState() for r in replicas_l if r != self.broker_id}
        if is_new_leader_epoch:
            start = self.log_end_offset
            self.leader_epoch_cache.assign(leader_epoch, start)
            self.leader_epoch_start_offset = start
            for r, st in self.followers.items():
                self._reset_follower(st, now_ms, start, in_sync=r in isr_t, is_new_leader=not was_leader)
            log.info("%s starts at leader epoch %d from offset %d with partition epoch %d, "
                     "high watermark %d, ISR %s", self._tp, leader_epoch, start, partition_epoch,
                     self.high_watermark, list(isr_t))
        self._check_state()
        return BecomeLeaderResult(True, is_new_leader_epoch, self._maybe_increment_high_watermark())

    @staticmethod
    def _reset_follower(st: FollowerState, now_ms: int, leader_end_offset: int, *, in_sync: bool,
                        is_new_leader: bool) -> None:
        # A follower outside the ISR gets 0 so it cannot hold the HW back.
        st.last_caught_up_ms = now_ms if in_sync else 0
        if is_new_leader:
            st.log_end_offset = UNKNOWN_OFFSET
            st.last_fetch_leader_log_end_offset = UNKNOWN_OFFSET
            st.last_fetch_ms = 0
        else:
            st.last_fetch_leader_log_end_offset = leader_end_offset

    def become_follower(self, leader: int | None, leader_epoch: int, partition_epoch: int,
                        isr: Iterable[int], replicas: Iterable[int]) -> BecomeFollowerResult:
        if leader is not None and leader < 0:
            leader = None
        if self._is_stale(leader_epoch, partition_epoch):
            log.info("Ignoring stale become-follower for %s: epoch %d/%d below %d/%d", self._tp,
                     leader_epoch, partition_epoch, self.leader_epoch, self.partition_epoch)
            return BecomeFollowerResult(applied=False, leader=self.leader, leader_epoch=self.leader_epoch)
        check_invariant(leader != self.broker_id, f"{self._tp}: become_follower of itself")
        isr_t, replicas_l = tuple(isr), list(replicas)
        check_invariant(set(isr_t) <= set(replicas_l), f"{self._tp}: ISR {isr_t} not within {replicas_l}")
        is_new_leader_epoch = leader_epoch > self.leader_epoch
        self.replicas = replicas_l
        self.leader = leader
        self.leader_epoch = leader_epoch
        self.partition_epoch = partition_epoch
        self.partition_state = CommittedPartitionState(isr_t)
        self.followers = {}
        self.leader_epoch_start_offset = None
        if is_new_leader_epoch:
            log.info("%s follows leader %s at epoch %d from offset %d", self._tp, leader,
                     leader_epoch, self.log_end_offset)
        self._check_state()
        return BecomeFollowerResult(True, is_new_leader_epoch,
                                    truncation_needed=is_new_leader_epoch and leader is not None,
                                    leader=leader, leader_epoch=leader_epoch)

    # -- leader: produce -------------------------------------------------
    def check_append(self, acks: int, min_insync_replicas: int) -> KafkaError | None:
        if not self.is_leader:
            return NotLeaderOrFollowerError(f"{self.broker_id} is not leader of {self._tp}")
        if acks not in (-1, 0, 1):
            return InvalidRequiredAcksError(f"acks={acks}")
        if acks == -1 and len(self.isr) < min_insync_replicas:
            return NotEnoughReplicasError(
                f"ISR {list(self.isr)} for {self._tp} is smaller than min.insync.replicas={min_insync_replicas}")
        return None

    def on_leader_append(self, base_offset: int, last_offset: int, now_ms: int) -> int | None:
        """The leader appended [base_offset, last_offset]; returns the new HW if it moved.

        `now_ms` is the append time; the HW rule used here does not need it.
        """
        check_invariant(self.is_leader, f"{self._tp}: leader append on a non-leader")
        check_invariant(base_offset == self.log_end_offset and last_offset >= base_offset,
                        f"{self._tp}: append [{base_offset}, {last_offset}] at LEO {self.log_end_offset}")
        self.leader_epoch_cache.assign(self.leader_epoch, base_offset)
        self.log_end_offset = last_offset + 1
        new_hw = self._maybe_increment_high_watermark()
        self._check_state()
        return new_hw

    # -- leader: replica fetches -----------------------------------------
    def _validate_leader_epoch(self, current_leader_epoch: int | None) -> KafkaError | None:
        if current_leader_epoch is None or current_leader_epoch == UNDEFINED_EPOCH:
            return None
        if current_leader_epoch < self.leader_epoch:
            return FencedLeaderEpochError(
                f"{self._tp}: request epoch {current_leader_epoch} < current {self.leader_epoch}")
        if current_leader_epoch > self.leader_epoch:
            return UnknownLeaderEpochError(
                f"{self._tp}: request epoch {current_leader_epoch} > current {self.leader_epoch}")
        return None

    def _fetch_decision(self, error: KafkaError | None, new_hw: int | None = None,
                        isr_change: IsrChange | None = None) -> FetchDecision:
        return FetchDecision(error, self.high_watermark, self.log_start_offset, self.log_end_offset,
                             new_hw, isr_change)

    def on_follower_fetch(self, follower_id: int, fetch_offset: int, now_ms: int, *,
                          follower_leader_epoch: int | None = None) -> FetchDecision:
        if not self.is_leader:
            return self._fetch_decision(NotLeaderOrFollowerError(f"{self.broker_id} is not leader of {self._tp}"))
        err = self._validate_leader_epoch(follower_leader_epoch)
        if err is not None:
            return self._fetch_decision(err)
        st = self.followers.get(follower_id)
        if st is None:
            # Not (or no longer) a replica: NOT_LEADER_OR_FOLLOWER makes it refresh metadata.
            return self._fetch_decision(NotLeaderOrFollowerError(
                f"{follower_id} is not a replica of {self._tp} (replicas {self.replicas})"))
        if fetch_offset < self.log_start_offset or fetch_offset > self.log_end_offset:
            return self._fetch_decision(OffsetOutOfRangeError(
                f"{self._tp}: fetch offset {fetch_offset} outside [{self.log_start_offset}, "
                f"{self.log_end_offset}]"))
        leader_leo = self.log_end_offset
        # Caught up now, or caught up to where the leader was at the previous
        # fetch (so a steady stream of appends does not make it look lagging).
        if fetch_offset >= leader_leo:
            st.last_caught_up_ms = max(st.last_caught_up_ms, now_ms)
        elif fetch_offset >= st.last_fetch_leader_log_end_offset:
            st.last_caught_up_ms = max(st.last_caught_up_ms, st.last_fetch_ms)
        st.log_end_offset = fetch_offset
        st.last_fetch_leader_log_end_offset = max(leader_leo, st.last_fetch_leader_log_end_offset)
        st.last_fetch_ms = now_ms
        isr_change = self._maybe_expand_isr(follower_id)
        new_hw = self._maybe_increment_high_watermark()
        self._check_state()
        return self._fetch_decision(None, new_hw, isr_change)

    def check_replica_fetch(self, follower_id: int, follower_broker_epoch: int,
                            registered_broker_epoch: int | None) -> KafkaError | None:
        """Only a replica of this partition, with the broker epoch it is registered with now, may
        fetch as a follower: its fetch offset moves the high watermark and acknowledges acks=all
        writes. NOT_LEADER_OR_FOLLOWER for a non-replica (as Kafka's followerReplicaOrThrow);
        STALE_BROKER_EPOCH for a missing or old epoch (an old incarnation, or a forged fetch)."""
        if not self.is_leader:
            return NotLeaderOrFollowerError(f"{self.broker_id} is not leader of {self._tp}")
        if follower_id not in self.followers:
            return NotLeaderOrFollowerError(
                f"broker {follower_id} is not a replica of {self._tp} (replicas {self.replicas})")
        if registered_broker_epoch is None or follower_broker_epoch != registered_broker_epoch:
            return StaleBrokerEpochError(
                f"replica fetch for {self._tp} from broker {follower_id} with broker epoch "
                f"{follower_broker_epoch}; its registered epoch is {registered_broker_epoch}")
        return None

    def end_offset_for_leader_epoch(self, current_leader_epoch: int | None,
                                    leader_epoch: int) -> EpochEndOffset:
        if not self.is_leader:
            return EpochEndOffset(NotLeaderOrFollowerError(f"{self.broker_id} is not leader of {self._tp}"),
                                  UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
        err = self._validate_leader_epoch(current_leader_epoch)
        if err is not None:
            return EpochEndOffset(err, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
        epoch, end = self.leader_epoch_cache.end_offset_for(leader_epoch, self.log_end_offset)
        return EpochEndOffset(None, epoch, end)

    # -- leader: high watermark and ISR ----------------------------------
    def _maybe_increment_high_watermark(self) -> int | None:
        if not self.is_leader:
            return None
        candidate = self.log_end_offset
        for r in self.maximal_isr:
            if r != self.broker_id:
                candidate = min(candidate, self.followers[r].log_end_offset)
        if candidate <= self.high_watermark:
            return None
        self.high_watermark = candidate
        return candidate

    def _isr_change(self, new_isr: tuple[int, ...], added: tuple[int, ...] = (),
                    removed: tuple[int, ...] = ()) -> IsrChange:
        return IsrChange(self.topic, self.partition, self.broker_id, self.leader_epoch, self.partition_epoch,
                         new_isr, added, removed)

    def _maybe_expand_isr(self, follower_id: int) -> IsrChange | None:
        state = self.partition_state
        if state.is_inflight or follower_id in state.isr or follower_id not in self.replicas:
            return None
        follower_leo = self.followers[follower_id].log_end_offset
        epoch_start = self.leader_epoch_start_offset
        if follower_leo < self.high_watermark or epoch_start is None or follower_leo < epoch_start:
            return None
        assert isinstance(state, CommittedPartitionState)
        new_isr = state.isr + (follower_id,)
        self.partition_state = PendingExpandIsr(follower_id, state)
        log.info("Expanding ISR of %s from %s to %s", self._tp, list(state.isr), list(new_isr))
        return self._isr_change(new_isr, added=(follower_id,))

    def maybe_shrink_isr(self, now_ms: int, replica_lag_time_max_ms: int) -> IsrChange | None:
        state = self.partition_state
        if not self.is_leader or state.is_inflight:
            return None
        out_of_sync = tuple(
            r for r in state.isr
            if r != self.broker_id and (r not in self.followers or not self.followers[r].is_caught_up(
                self.log_end_offset, now_ms, replica_lag_time_max_ms)))
        if not out_of_sync:
            return None
        assert isinstance(state, CommittedPartitionState)
        new_isr = tuple(r for r in state.isr if r not in out_of_sync)
        self.partition_state = PendingShrinkIsr(out_of_sync, state)
        log.info("Shrinking ISR of %s from %s to %s (out of sync: %s), leader LEO %d, HW %d",
                 self._tp, list(state.isr), list(new_isr), list(out_of_sync), self.log_end_offset,
                 self.high_watermark)
        return self._isr_change(new_isr, removed=out_of_sync)

    def on_isr_change_committed(self, new_isr: Iterable[int], partition_epoch: int) -> int | None:
        """The controller accepted an AlterPartition (or metadata brought a newer
        ISR for this leader epoch); returns the new HW if it moved."""
        isr_t = tuple(new_isr)
        if not self.is_leader:
            return None
        if not self.partition_state.is_inflight and partition_epoch <= self.partition_epoch:
            return None
        if partition_epoch < self.partition_epoch:
            log.info("Ignoring stale AlterPartition response for %s: partition epoch %d < %d",
                     self._tp, partition_epoch, self.partition_epoch)
            return None
        check_invariant(self.broker_id in isr_t, f"{self._tp}: committed ISR {isr_t} lacks the leader")
        log.info("ISR of %s updated to %s and partition epoch updated to %d", self._tp, list(isr_t),
                 partition_epoch)
        self.partition_state = CommittedPartitionState(isr_t)
        self.partition_epoch = partition_epoch
        new_hw = self._maybe_increment_high_watermark()
        self._check_state()
        return new_hw

    def on_isr_change_failed(self) -> None:
        """The AlterPartition failed: back to the last committed ISR; the next
        fetch or shrink check proposes again (or new metadata arrives)."""
        state = self.partition_state
        if isinstance(state, (PendingExpandIsr, PendingShrinkIsr)):
            log.info("Failed to alter ISR of %s; reverting to %s", self._tp, list(state.isr))
            self.partition_state = state.last_committed_state

    # -- follower --------------------------------------------------------
    def on_follower_append(self, base_offset: int, last_offset: int, batch_leader_epoch: int) -> None:
        check_invariant(not self.is_leader, f"{self._tp}: follower append on the leader")
        check_invariant(base_offset == self.log_end_offset and last_offset >= base_offset,
                        f"{self._tp}: append [{base_offset}, {last_offset}] at LEO {self.log_end_offset}")
        if batch_leader_epoch >= 0:
            self.leader_epoch_cache.assign(batch_leader_epoch, base_offset)
        self.log_end_offset = last_offset + 1
        self._check_state()

    def update_high_watermark_from_leader(self, leader_high_watermark: int) -> int:
        check_invariant(not self.is_leader, f"{self._tp}: leader takes no HW from others")
        self.high_watermark = max(self.log_start_offset, min(leader_high_watermark, self.log_end_offset))
        self._check_state()
        return self.high_watermark

    def is_follower_at(self, leader_epoch: int) -> bool:
        """A follower step decided at `leader_epoch` (a truncation point, fetched data) still applies."""
        return not self.is_leader and self.leader_epoch == leader_epoch

    def truncate_to(self, offset: int) -> bool:
        """Drop everything at and above `offset`; True if anything was dropped.

        Followers only: a leader's log holds what it acknowledged. The driver checks
        `is_follower_at(epoch)` first, under the same lock, for the epoch the truncation
        point was computed at."""
        check_invariant(not self.is_leader, f"{self._tp}: truncation on the leader")
        if offset >= self.log_end_offset:
            return False
        if offset < self.log_start_offset:
            self.truncate_fully_and_start_at(offset)
            return True
        log.info("Truncating %s to offset %d (LEO %d, HW %d)", self._tp, offset, self.log_end_offset,
                 self.high_watermark)
        self.log_end_offset = offset
        self.high_watermark = min(self.high_watermark, offset)
        self.leader_epoch_cache.truncate_from_end(offset)
        self._check_state()
        return True

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Empty log starting at `offset` (a follower behind the leader's log start)."""
        log.info("Truncating %s fully and starting at offset %d", self._tp, offset)
        self.log_start_offset = self.log_end_offset = self.high_watermark = offset
        self.leader_epoch_cache.clear()
        self._check_state()

    def maybe_increment_log_start_offset(self, offset: int) -> KafkaError | None:
        """Retention / DeleteRecords moved the log start; never past the HW."""
        if offset <= self.log_start_offset:
            return None
        if offset > self.high_watermark:
            return OffsetOutOfRangeError(
                f"{self._tp}: log start {offset} would pass high watermark {self.high_watermark}")
        self.log_start_offset = offset
        self.leader_epoch_cache.truncate_from_start(offset)
        self._check_state()
        return None

    # -- invariants ------------------------------------------------------
    def _check_state(self) -> None:
        # Runs after every change of the model: the messages are built only when a check fails (their
        # f-strings made up most of its cost on the produce path).
        if not 0 <= self.log_start_offset <= self.high_watermark <= self.log_end_offset:
            check_invariant(False, f"{self._tp}: need log start {self.log_start_offset} <= hw "
                                   f"{self.high_watermark} <= leo {self.log_end_offset}")
        replicas = self.replicas
        if replicas:
            isr = self.isr
            if not set(isr) <= set(replicas):
                check_invariant(False, f"{self._tp}: ISR {list(isr)} not within replicas {replicas}")
            maximal = self.maximal_isr
            if maximal is not isr and not set(maximal) <= set(replicas):
                check_invariant(False, f"{self._tp}: maximal ISR {list(maximal)} not within replicas {replicas}")
        cache = self.leader_epoch_cache
        if self.is_leader:
            if self.broker_id not in self.isr:
                check_invariant(False, f"{self._tp}: leader {self.broker_id} not in ISR")
            if cache.latest_epoch > self.leader_epoch:
                check_invariant(False, f"{self._tp}: cached epoch {cache.latest_epoch} above leader "
                                       f"epoch {self.leader_epoch}")
        entries = cache.entries
        for (e1, s1), (e2, s2) in pairwise(entries):
            if not (e1 < e2 and s1 < s2):
                check_invariant(False, f"{self._tp}: epoch cache not monotonic: {entries}")
        if entries and entries[-1][1] > self.log_end_offset:
            check_invariant(False, f"{self._tp}: epoch {entries[-1]} starts beyond LEO {self.log_end_offset}")
