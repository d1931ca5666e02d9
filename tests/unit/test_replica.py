"""Partition (replica) model: HW, ISR, acks, leader epochs and truncation. Time is explicit."""
from __future__ import annotations

import inspect

import pytest

from client.common import errors
from node.replica import (
    UNDEFINED_EPOCH,
    UNDEFINED_EPOCH_OFFSET,
    IsrChange,
    LeaderEpochCache,
    OffsetTruncationState,
    Partition,
    PendingExpandIsr,
    PendingShrinkIsr,
    check_invariant,
    truncation_offset,
)

LAG_MS = 10_000


def make_leader(isr=(1, 2, 3), replicas=(1, 2, 3), leo=0, hw=0, epoch=1, now_ms=0,
                cache=None) -> Partition:
    p = Partition("t", 0, 1, log_end_offset=leo, high_watermark=hw, leader_epoch_cache=cache)
    res = p.become_leader(epoch, 1, isr, replicas, now_ms)
    assert res.applied
    return p


def append(p: Partition, n: int, now_ms: int = 0) -> int | None:
    base = p.log_end_offset
    return p.on_leader_append(base, base + n - 1, now_ms)


def make_follower(leader=2, epoch=1, entries=(), leo=0, hw=0) -> Partition:
    p = Partition("t", 0, 1, log_end_offset=leo, high_watermark=hw,
                  leader_epoch_cache=LeaderEpochCache(entries))
    p.become_follower(leader, epoch, 1, (1, 2, 3), (1, 2, 3))
    return p


# ---------------------------------------------------------------- high watermark

@pytest.mark.parametrize("fetches, expected_hw", [
    ({}, 0),                     # followers unknown after election: HW holds
    ({2: 10}, 0),                # 3 still unknown
    ({2: 10, 3: 4}, 4),
    ({2: 7, 3: 10}, 7),
    ({2: 10, 3: 10}, 10),        # never above the leader's LEO
])
def test_high_watermark_is_min_leo_over_isr(fetches, expected_hw):
    p = make_leader()
    append(p, 10)
    for follower, offset in fetches.items():
        d = p.on_follower_fetch(follower, offset, 100, follower_leader_epoch=1)
        assert d.error is None
    assert p.high_watermark == expected_hw
    assert p.high_watermark <= p.log_end_offset


def test_high_watermark_never_goes_back():
    p = make_leader()
    append(p, 10)
    p.on_follower_fetch(2, 8, 1, follower_leader_epoch=1)
    d = p.on_follower_fetch(3, 8, 1, follower_leader_epoch=1)
    assert d.new_high_watermark == 8 and d.high_watermark == 8
    # A follower that truncated and fetches from a lower offset does not lower the HW.
    d = p.on_follower_fetch(2, 5, 2, follower_leader_epoch=1)
    assert d.new_high_watermark is None and p.high_watermark == 8


def test_single_replica_isr_moves_hw_on_append():
    p = make_leader(isr=(1,), replicas=(1, 2, 3))
    assert append(p, 3) == 3
    assert p.high_watermark == 3
    assert p.acks_satisfied(2) and not p.acks_satisfied(3)


def test_pending_expand_uses_maximal_isr():
    p = make_leader(isr=(1, 2))
    append(p, 10)
    p.on_follower_fetch(2, 10, 1, follower_leader_epoch=1)
    assert p.high_watermark == 10
    append(p, 10)  # LEO 20
    d = p.on_follower_fetch(3, 10, 2, follower_leader_epoch=1)
    assert d.isr_change == IsrChange("t", 0, 1, 1, 1, (1, 2, 3), added=(3,))
    assert isinstance(p.partition_state, PendingExpandIsr)
    assert p.isr == (1, 2) and p.maximal_isr == (1, 2, 3)
    # Over the committed ISR the HW would be 20; replica 3 at 10 holds it.
    d = p.on_follower_fetch(2, 20, 3, follower_leader_epoch=1)
    assert p.high_watermark == 10 and d.new_high_watermark is None
    assert p.on_isr_change_committed((1, 2, 3), 2) is None
    assert p.isr == (1, 2, 3) and p.partition_epoch == 2
    d = p.on_follower_fetch(3, 20, 4, follower_leader_epoch=1)
    assert d.new_high_watermark == 20


def test_pending_shrink_holds_hw_until_committed():
    p = make_leader()
    append(p, 10)
    p.on_follower_fetch(2, 10, 1, follower_leader_epoch=1)
    p.on_follower_fetch(3, 4, 1, follower_leader_epoch=1)
    assert p.high_watermark == 4
    change = p.maybe_shrink_isr(now_ms=LAG_MS + 1, replica_lag_time_max_ms=LAG_MS)
    assert change is not None and change.new_isr == (1, 2) and change.removed == (3,)
    assert isinstance(p.partition_state, PendingShrinkIsr)
    assert p.maximal_isr == (1, 2, 3)
    p.on_follower_fetch(2, 10, LAG_MS + 2, follower_leader_epoch=1)
    assert p.high_watermark == 4
    assert p.on_isr_change_committed((1, 2), 2) == 10
    assert p.high_watermark == 10


# ---------------------------------------------------------------- ISR shrink

def _shrink_fixture():
    p = make_leader(now_ms=0)
    append(p, 10, now_ms=0)
    p.on_follower_fetch(2, 10, 0, follower_leader_epoch=1)  # 2 caught up at t=0
    return p


@pytest.mark.parametrize("name, follower3_fetches, check_ms, expect_removed", [
    ("not fetching, within lag", [], LAG_MS, ()),
    ("not fetching, past lag", [], LAG_MS + 1, (3,)),
    ("fetching but behind", [(1000, 0), (5000, 2), (9000, 5)], LAG_MS + 1, (3,)),
    ("caught up at 6s", [(6000, 11)], LAG_MS + 1, ()),
    ("caught up at 6s, long ago", [(6000, 11)], 6000 + LAG_MS + 1, (3,)),
    ("almost caught up at 6s", [(6000, 10)], LAG_MS + 1, (3,)),
])
def test_maybe_shrink_isr_lag_time(name, follower3_fetches, check_ms, expect_removed):
    p = _shrink_fixture()
    append(p, 1, now_ms=0)  # LEO 11: replica 3 is behind
    for now_ms, offset in follower3_fetches:
        assert p.on_follower_fetch(3, offset, now_ms, follower_leader_epoch=1).error is None
    append(p, 1, now_ms=check_ms)
    p.on_follower_fetch(2, p.log_end_offset, check_ms, follower_leader_epoch=1)  # 2 stays current
    change = p.maybe_shrink_isr(check_ms, LAG_MS)
    removed = change.removed if change else ()
    assert removed == expect_removed, name
    if change:
        assert 1 in change.new_isr  # the leader never removes itself


def test_follower_keeping_up_with_steady_appends_stays_in_sync():
    # It never equals the leader's current LEO, but each fetch reaches the LEO
    # the leader had at its previous fetch.
    p = _shrink_fixture()
    for now_ms in range(1000, 40_001, 1000):
        previous_leo = p.log_end_offset
        append(p, 10, now_ms)
        p.on_follower_fetch(2, previous_leo, now_ms, follower_leader_epoch=1)
        p.on_follower_fetch(3, previous_leo, now_ms, follower_leader_epoch=1)
    assert p.maybe_shrink_isr(40_000 + LAG_MS - 1000, LAG_MS) is None


def test_follower_at_leader_leo_is_in_sync_without_fetching():
    p = make_leader()
    append(p, 5)
    p.on_follower_fetch(2, 5, 0, follower_leader_epoch=1)
    p.on_follower_fetch(3, 5, 0, follower_leader_epoch=1)
    assert p.maybe_shrink_isr(10 * LAG_MS, LAG_MS) is None


def test_shrink_not_proposed_while_in_flight_and_failure_reverts():
    p = _shrink_fixture()
    assert p.maybe_shrink_isr(LAG_MS + 1, LAG_MS) is not None
    assert p.maybe_shrink_isr(LAG_MS + 2, LAG_MS) is None
    p.on_isr_change_failed()
    assert p.isr == (1, 2, 3) and not p.partition_state.is_inflight
    assert p.maybe_shrink_isr(LAG_MS + 3, LAG_MS) is not None


def test_leader_alone_in_isr_never_shrinks():
    p = make_leader(isr=(1,))
    append(p, 10)
    assert p.maybe_shrink_isr(100 * LAG_MS, LAG_MS) is None


def test_newer_isr_from_metadata_applies_without_pending_change():
    p = make_leader()
    append(p, 10)
    p.on_follower_fetch(2, 10, 1, follower_leader_epoch=1)
    assert p.on_isr_change_committed((1, 2), 1) is None      # same partition epoch: nothing new
    assert p.isr == (1, 2, 3)
    assert p.on_isr_change_committed((1, 2), 2) == 10        # the controller dropped 3
    assert p.isr == (1, 2) and p.partition_epoch == 2


def test_restore_trims_epoch_cache_to_the_log():
    p = Partition("t", 0, 1)
    p.restore(log_start_offset=3, log_end_offset=12, high_watermark=20,
              epoch_entries=[[0, 0], [2, 5], [4, 12]])
    assert (p.log_start_offset, p.log_end_offset, p.high_watermark) == (3, 12, 12)
    assert p.epoch_cache.entries == [(0, 3), (2, 5)]
    assert p.leader_id == -1
    p.become_follower(2, 5, 1, (2,), (1, 2))
    assert p.leader_id == 2
    with pytest.raises(AssertionError):
        p.restore(log_start_offset=0, log_end_offset=0, high_watermark=0)


def test_stale_isr_commit_ignored():
    p = make_leader()
    p.become_leader(1, 5, (1, 2, 3), (1, 2, 3), now_ms=0)  # partition epoch 5
    append(p, 1)
    assert p.maybe_shrink_isr(LAG_MS + 1, LAG_MS) is not None
    assert p.on_isr_change_committed((1,), 4) is None
    assert p.partition_state.is_inflight and p.isr == (1, 2, 3)


# ---------------------------------------------------------------- ISR expand

@pytest.mark.parametrize("follower_offset, expect_expand", [
    (3, False),    # below HW 5
    (5, True),     # at HW, at leader epoch start
    (10, True),
])
def test_expand_when_caught_up_to_hw(follower_offset, expect_expand):
    p = make_leader(isr=(1, 2))
    append(p, 10)
    p.on_follower_fetch(2, 5, 1, follower_leader_epoch=1)
    assert p.high_watermark == 5
    d = p.on_follower_fetch(3, follower_offset, 2, follower_leader_epoch=1)
    assert (d.isr_change is not None) == expect_expand
    if expect_expand:
        assert d.isr_change.new_isr == (1, 2, 3) and d.isr_change.added == (3,)
        assert d.isr_change.leader_epoch == 1 and d.isr_change.partition_epoch == 1


def test_expand_needs_leader_epoch_start_offset():
    # New leader with LEO 10, HW 5: a follower at 7 has HW-worth of data but
    # maybe not this leader's history up to its epoch start.
    p = make_leader(isr=(1, 3), leo=10, hw=5, cache=LeaderEpochCache([(0, 0)]), epoch=1)
    assert p.leader_epoch_start_offset == 10 and p.high_watermark == 5
    assert p.on_follower_fetch(2, 7, 1, follower_leader_epoch=1).isr_change is None
    assert p.on_follower_fetch(2, 10, 2, follower_leader_epoch=1).isr_change.new_isr == (1, 3, 2)


# ---------------------------------------------------------------- produce checks

@pytest.mark.parametrize("acks, isr, min_isr, expected", [
    (-1, (1,), 2, errors.NotEnoughReplicasError),
    (-1, (1, 2), 2, None),
    (-1, (1, 2, 3), 2, None),
    (1, (1,), 2, None),
    (0, (1,), 3, None),
    (2, (1, 2, 3), 1, errors.InvalidRequiredAcksError),
])
def test_check_append(acks, isr, min_isr, expected):
    p = make_leader(isr=isr)
    err = p.check_append(acks, min_isr)
    assert (err is None) if expected is None else isinstance(err, expected)


def test_check_append_on_follower_is_not_leader():
    err = make_follower().check_append(1, 1)
    assert isinstance(err, errors.NotLeaderOrFollowerError) and err.code == 6


def test_not_enough_replicas_after_append():
    p = make_leader(isr=(1, 2))
    append(p, 1)
    assert p.check_enough_replicas_reach_offset(1, 2) == (False, None)
    p.on_follower_fetch(2, 1, 1, follower_leader_epoch=1)
    assert p.check_enough_replicas_reach_offset(1, 2) == (True, None)
    p2 = make_leader(isr=(1,))
    append(p2, 1)
    done, err = p2.check_enough_replicas_reach_offset(1, 2)
    assert done and isinstance(err, errors.NotEnoughReplicasAfterAppendError)


# ---------------------------------------------------------------- fetch errors

@pytest.mark.parametrize("follower, offset, epoch, expected", [
    (2, 0, 0, errors.FencedLeaderEpochError),
    (2, 0, 2, errors.UnknownLeaderEpochError),
    (9, 0, 1, errors.NotLeaderOrFollowerError),
    (2, 11, 1, errors.OffsetOutOfRangeError),
    (2, 10, None, None),   # no epoch in the request: not checked
    (2, 10, -1, None),
])
def test_follower_fetch_errors(follower, offset, epoch, expected):
    p = make_leader()
    append(p, 10)
    d = p.on_follower_fetch(follower, offset, 1, follower_leader_epoch=epoch)
    assert (d.error is None) if expected is None else isinstance(d.error, expected)
    if expected is not None:
        assert d.high_watermark == 0 and d.log_end_offset == 10


def test_fetch_on_follower_is_not_leader():
    d = make_follower().on_follower_fetch(3, 0, 0, follower_leader_epoch=1)
    assert isinstance(d.error, errors.NotLeaderOrFollowerError)


# ---------------------------------------------------------------- leadership

def test_become_leader_assigns_epoch_and_ignores_stale():
    p = make_leader(leo=4, hw=4, cache=LeaderEpochCache([(0, 0)]), epoch=3)
    assert p.leader_epoch_cache.entries == [(0, 0), (3, 4)]
    assert not p.become_leader(2, 9, (1,), (1, 2, 3), now_ms=0).applied
    assert not p.become_follower(2, 2, 9, (2,), (1, 2, 3)).applied
    assert p.leader_epoch == 3 and p.is_leader
    append(p, 2)
    assert p.leader_epoch_cache.entries == [(0, 0), (3, 4)]


def test_become_leader_with_single_isr_advances_hw():
    p = Partition("t", 0, 1, log_end_offset=7, high_watermark=3)
    res = p.become_leader(1, 1, (1,), (1, 2), now_ms=0)
    assert res.applied and res.is_new_leader_epoch and res.new_high_watermark == 7


@pytest.mark.parametrize("calls, expect_truncation", [
    ([(2, 1, 1)], True),                 # fresh follower of epoch 1
    ([(2, 1, 1), (2, 1, 2)], False),     # same epoch, only the ISR changed
    ([(2, 1, 1), (3, 2, 3)], True),      # new leader
    ([(2, 1, 1), (-1, 2, 3)], False),    # offline: nobody to ask
])
def test_become_follower_truncation_needed(calls, expect_truncation):
    p = Partition("t", 0, 1)
    for leader, epoch, pepoch in calls:
        res = p.become_follower(leader, epoch, pepoch, (1, 2, 3), (1, 2, 3))
    assert res.applied and res.truncation_needed == expect_truncation


def test_leader_to_follower_drops_leader_state():
    p = make_leader()
    append(p, 3)
    p.maybe_shrink_isr(LAG_MS + 1, LAG_MS)
    res = p.become_follower(2, 2, 2, (2, 3), (1, 2, 3))
    assert res.truncation_needed and not p.is_leader
    assert p.followers == {} and not p.partition_state.is_inflight
    assert p.maybe_shrink_isr(10 * LAG_MS, LAG_MS) is None


# ---------------------------------------------------------------- follower side

def test_follower_append_hw_and_truncate():
    p = make_follower(epoch=3)
    p.on_follower_append(0, 4, 1)
    p.on_follower_append(5, 9, 3)
    assert p.leader_epoch_cache.entries == [(1, 0), (3, 5)]
    assert p.update_high_watermark_from_leader(20) == 10   # capped at own LEO
    assert p.update_high_watermark_from_leader(6) == 6     # follows the leader
    assert p.truncate_to(5)
    assert (p.log_end_offset, p.high_watermark) == (5, 5)
    assert p.leader_epoch_cache.entries == [(1, 0)]
    assert not p.truncate_to(8)


def test_truncate_below_log_start_starts_over():
    p = make_follower(entries=[(0, 0)], leo=10, hw=10)
    assert p.maybe_increment_log_start_offset(4) is None
    assert p.leader_epoch_cache.entries == [(0, 4)]
    p.truncate_to(2)
    assert (p.log_start_offset, p.log_end_offset, p.high_watermark) == (2, 2, 2)
    assert p.leader_epoch_cache.entries == []


def test_log_start_cannot_pass_hw():
    p = make_leader(isr=(1, 2))
    append(p, 10)
    assert isinstance(p.maybe_increment_log_start_offset(1), errors.OffsetOutOfRangeError)


# ---------------------------------------------------------------- leader epoch cache

CACHE = [(0, 0), (2, 5), (4, 10)]


@pytest.mark.parametrize("requested, expected", [
    (UNDEFINED_EPOCH, (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)),
    (0, (0, 5)),
    (1, (0, 5)),       # unknown epoch: the largest below it
    (2, (2, 10)),
    (3, (2, 10)),
    (4, (4, 15)),      # the latest: ends at the LEO
    (5, (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)),
])
def test_end_offset_for(requested, expected):
    assert LeaderEpochCache(CACHE).end_offset_for(requested, 15) == expected


def test_end_offset_for_below_first_epoch_and_empty():
    cache = LeaderEpochCache([(3, 7), (5, 9)])
    assert cache.end_offset_for(1, 12) == (1, 7)
    assert LeaderEpochCache().end_offset_for(1, 12) == (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)


@pytest.mark.parametrize("assign, expected, changed", [
    ((4, 12), CACHE, False),                         # same epoch, later offset: no-op
    ((4, 9), [(0, 0), (2, 5), (4, 9)], True),        # same epoch starts earlier
    ((5, 12), CACHE + [(5, 12)], True),
    ((3, 12), [(0, 0), (2, 5), (3, 12)], True),      # drops the higher epoch
    ((5, 8), [(0, 0), (2, 5), (5, 8)], True),        # drops the later start
])
def test_assign_keeps_monotonic(assign, expected, changed):
    cache = LeaderEpochCache(CACHE)
    assert cache.assign(*assign) == changed
    assert cache.entries == expected


@pytest.mark.parametrize("op, offset, expected", [
    ("end", 10, [(0, 0), (2, 5)]),
    ("end", 7, [(0, 0), (2, 5)]),
    ("end", 5, [(0, 0)]),
    ("end", 20, CACHE),
    ("start", 7, [(2, 7), (4, 10)]),
    ("start", 10, [(4, 10)]),
    ("start", 0, CACHE),
    ("start", 12, [(4, 12)]),
])
def test_cache_truncation(op, offset, expected):
    cache = LeaderEpochCache(CACHE)
    (cache.truncate_from_end if op == "end" else cache.truncate_from_start)(offset)
    assert cache.entries == expected


def test_cache_json_round_trip():
    cache = LeaderEpochCache(CACHE)
    data = cache.to_json()
    assert data == [[0, 0], [2, 5], [4, 10]]
    assert LeaderEpochCache.from_json(data).entries == CACHE
    with pytest.raises(AssertionError):
        LeaderEpochCache.from_json([[2, 5], [1, 6]])


# ---------------------------------------------------------------- truncation (KIP-101 / KIP-279)

@pytest.mark.parametrize("name, follower_cache, follower_leo, follower_hw, leader_answer, expected", [
    # KIP-101 scenario 1: follower restarts with HW 1 but LEO 2; the leader
    # (still epoch 0) says epoch 0 ends at its LEO 2: keep offset 1 instead
    # of truncating to HW and losing it.
    ("hw would lose data", [(0, 0)], 2, 1, (0, 2), (2, True)),
    # Scenario 2: divergent suffix. Follower wrote offset 1 in epoch 0; the
    # new leader (epoch 1) started at 1.
    ("divergent suffix", [(0, 0)], 2, 1, (0, 1), (1, True)),
    # Follower with a longer log in the same epoch.
    ("longer follower log", [(0, 0), (1, 3)], 8, 3, (1, 5), (5, True)),
    # KIP-279: the leader answers an epoch the follower never saw: truncate
    # to the end of the follower's largest epoch below it and ask again.
    ("missing epoch", [(0, 0), (1, 3), (3, 7)], 9, 0, (2, 10), (7, False)),
    ("missing epoch, second round", [(0, 0), (1, 3)], 7, 0, (0, 5), (3, True)),
    ("leader knows nothing", [(0, 0)], 6, 4, (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET), (4, True)),
    ("old leader, offset only", [(0, 0)], 6, 4, (UNDEFINED_EPOCH, 5), (5, True)),
    ("follower has no such epoch", [(3, 2)], 6, 0, (1, 4), (2, True)),
    ("follower without epochs", [], 6, 0, (1, 4), (4, True)),
    ("nothing to truncate", [(0, 0), (1, 3)], 6, 3, (1, 9), (6, True)),
])
def test_truncation_offset(name, follower_cache, follower_leo, follower_hw, leader_answer, expected):
    got = truncation_offset(LeaderEpochCache(follower_cache), follower_leo, leader_answer, follower_hw)
    assert got == OffsetTruncationState(*expected), name


def _sync_follower(follower: Partition, leader: Partition) -> list[int]:
    """The driver's loop: ask with our latest epoch until truncation completes."""
    points = []
    while True:
        ans = leader.end_offset_for_leader_epoch(leader.leader_epoch, follower.leader_epoch_cache.latest_epoch)
        assert ans.error is None
        state = truncation_offset(follower.epoch_cache, follower.log_end_offset,
                                  (ans.leader_epoch, ans.end_offset), follower.high_watermark)
        follower.truncate_to(state.offset)
        points.append(state.offset)
        if state.truncation_completed:
            return points


def test_divergent_suffix_end_to_end():
    # A led epoch 1 and wrote [0,1]; B got only offset 0. Both die; B comes
    # back first and leads epoch 2, writing offset 1 anew. A returns as follower.
    a = Partition("t", 0, 1, log_end_offset=2, high_watermark=1,
                  leader_epoch_cache=LeaderEpochCache([(1, 0)]))
    b = Partition("t", 0, 2, log_end_offset=1, high_watermark=1,
                  leader_epoch_cache=LeaderEpochCache([(1, 0)]))
    b.become_leader(2, 2, (2,), (1, 2), now_ms=0)
    b.on_leader_append(1, 1, now_ms=0)
    assert a.become_follower(2, 2, 2, (2,), (1, 2)).truncation_needed
    assert _sync_follower(a, b) == [1]
    assert a.log_end_offset == 1 and a.leader_epoch_cache.entries == [(1, 0)]


def test_missing_epochs_end_to_end():
    leader = Partition("t", 0, 2, log_end_offset=15, high_watermark=3,
                       leader_epoch_cache=LeaderEpochCache([(0, 0), (2, 5), (4, 10)]))
    leader.become_leader(5, 1, (2,), (1, 2), now_ms=0)
    follower = Partition("t", 0, 1, log_end_offset=9, high_watermark=3,
                         leader_epoch_cache=LeaderEpochCache([(0, 0), (1, 3), (3, 7)]))
    follower.become_follower(2, 5, 1, (2,), (1, 2))
    assert _sync_follower(follower, leader) == [7, 3]
    assert follower.leader_epoch_cache.entries == [(0, 0)] and follower.log_end_offset == 3


def test_offset_for_leader_epoch_errors():
    p = make_leader(epoch=2)
    assert isinstance(p.end_offset_for_leader_epoch(1, 0).error, errors.FencedLeaderEpochError)
    assert isinstance(p.end_offset_for_leader_epoch(3, 0).error, errors.UnknownLeaderEpochError)
    assert isinstance(make_follower().end_offset_for_leader_epoch(1, 0).error,
                      errors.NotLeaderOrFollowerError)


# ---------------------------------------------------------------- invariants

def test_check_invariant_survives_python_O():
    # Compile the helper as `python -O` would (asserts stripped) and call it.
    source = inspect.getsource(check_invariant)
    namespace: dict = {}
    exec(compile(source, "replica_optimized", "exec", optimize=2), namespace)  # noqa: S102 - our own source
    with pytest.raises(AssertionError, match="x"):
        namespace["check_invariant"](False, "x")


@pytest.mark.parametrize("action", [
    lambda p: p.on_leader_append(5, 6, 0),                              # gap in the log
    lambda p: p.become_leader(2, 2, (2, 3), (1, 2, 3), 0),              # leader not in ISR
    lambda p: p.become_leader(2, 2, (1, 4), (1, 2, 3), 0),              # ISR not within replicas
    lambda p: p.on_follower_append(0, 0, 1),                            # follower append on leader
])
def test_invariants_raise(action):
    p = make_leader()
    with pytest.raises(AssertionError):
        action(p)
    check_invariant(True, "no-op")


# -- replica fetches: only registered replicas with their current broker epoch -----------------

@pytest.mark.parametrize("follower,broker_epoch,registered,error", [
    (2, 12, 12, None),
    (2, 11, 12, errors.StaleBrokerEpochError),      # an old incarnation of broker 2
    (2, -1, 12, errors.StaleBrokerEpochError),      # no epoch given
    (2, 12, None, errors.StaleBrokerEpochError),    # not registered (as far as this leader knows)
    (4, 14, 14, errors.NotLeaderOrFollowerError),   # registered, but not a replica
    (1, 11, 11, errors.NotLeaderOrFollowerError),   # the leader itself
])
def test_check_replica_fetch(follower, broker_epoch, registered, error):
    p = make_leader()
    err = p.check_replica_fetch(follower, broker_epoch, registered)
    assert (type(err) if err is not None else None) is error


def test_check_replica_fetch_on_a_follower_is_not_leader():
    p = make_follower()
    assert isinstance(p.check_replica_fetch(3, 13, 13), errors.NotLeaderOrFollowerError)


def test_truncation_is_for_followers_at_the_epoch_it_was_computed_at():
    p = make_follower(epoch=3, entries=[(1, 0)], leo=10, hw=5)
    assert p.is_follower_at(3) and not p.is_follower_at(2)
    p.become_leader(4, 4, (1, 2, 3), (1, 2, 3), 0)
    assert not p.is_follower_at(3) and not p.is_follower_at(4)
    with pytest.raises(AssertionError, match="truncation on the leader"):
        p.truncate_to(5)
    assert p.log_end_offset == 10
