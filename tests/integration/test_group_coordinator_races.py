"""GroupCoordinator driver: durability and ordering of group state (issue 19 items 1, 2, 5; issue 20 item 7).

The real driver with its writer thread, over a fake `__consumer_offsets`
(which can fail or hold an append) and a manual clock; interleavings are
forced with a lock hook, never waited for.
"""
from __future__ import annotations

import json
import threading

import pytest

from client.common import errors as E
from client.common.clock import ManualClock
from client.common.pb import group_pb2 as gpb
from node import group as G
from node.group_coordinator import GroupServicer
from tests.group_driver import WAIT_S, Harness, replayed, snapshot


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.close()


# ------------------------------------------------ issue 19 item 1: one clock


@pytest.mark.parametrize("instance", [None, "i-a"], ids=["dynamic", "static"])
def test_member_killed_right_after_a_commit_expires_after_its_session(instance):
    """A commit counts as a heartbeat on the session clock, not at its wall-clock time."""
    h = Harness(clock=ManualClock(start_ms=1_000, wall_start_ms=1_700_000_000_000))
    try:
        a, gen = h.stable_member("g", instance=instance, session_ms=10_000)
        h.clock.advance(5_000)
        assert h.commit("g", {("t", 0): 5}, a, gen, instance).error_code == 0
        # The process is killed now: no heartbeat, no LeaveGroup.
        h.clock.advance(9_999)
        h.gc.tick()
        assert a in h.gc.groups["g"].members
        h.clock.advance(1)
        h.gc.tick()
        assert a not in h.gc.groups["g"].members
        assert h.gc.groups["g"].state is G.GroupState.EMPTY
    finally:
        h.close()


def test_commit_stores_wall_clock_time():
    h = Harness(clock=ManualClock(start_ms=1_000, wall_start_ms=1_700_000_000_000))
    try:
        h.commit("g", {("t", 0): 5})
        (om,) = h.gc.fetch_offsets("g", None).values()
        assert om.commit_timestamp_ms == 1_700_000_000_000
    finally:
        h.close()


# ------------------------------- issue 19 item 2: SyncGroup after the write


def _second_generation(h: Harness) -> tuple[str, str, int]:
    """A (leader) and B joined into generation 2, neither synced yet."""
    a, _ = h.stable_member("g")
    b_join = h.in_thread(h.join_new, "g")
    h.wait_parked("g", None, "join")
    ja = h.join("g", a)  # A rejoins: the round completes
    jb = b_join.result(WAIT_S)
    assert ja.error_code == jb.error_code == 0 and ja.generation_id == jb.generation_id == 2
    assert ja.leader == a
    return a, jb.member_id, 2


def test_failed_assignment_write_fails_sync_group_and_rebalances(h):
    a, b, gen = _second_generation(h)
    b_sync = h.in_thread(h.sync, "g", b, gen)
    h.wait_parked("g", b, "sync")
    h.topic.fail = lambda _p: E.NotEnoughReplicasError("ISR too small")

    sa = h.sync("g", a, gen, {a: b"A", b: b"B"})

    sb = b_sync.result(WAIT_S)
    # Nobody holds an assignment of a generation that is not in the log.
    assert (sa.error_code, sa.assignment) == (E.CoordinatorNotAvailableError.code, b"")
    assert (sb.error_code, sb.assignment) == (E.CoordinatorNotAvailableError.code, b"")
    g = h.gc.groups["g"]
    assert g.state is G.GroupState.PREPARING_REBALANCE and g.generation_id == gen
    hb = gpb.HeartbeatRequest(group_id="g", member_id=b, generation_id=gen)
    assert h.gc.heartbeat(hb) == E.RebalanceInProgressError.code
    assert replayed(h.topic, "g") == (G.GroupState.STABLE, 1, [a], {})

    # Once the log takes writes again, the members rejoin into a generation that is written.
    h.topic.fail = lambda _p: None
    b_join = h.in_thread(h.join, "g", b)
    h.wait_parked("g", b, "join")
    ja = h.join("g", a)
    assert ja.generation_id == 3 and b_join.result(WAIT_S).generation_id == 3
    b_sync = h.in_thread(h.sync, "g", b, 3)
    h.wait_parked("g", b, "sync")
    assert h.sync("g", a, 3, {a: b"A", b: b"B"}).assignment == b"A"
    assert b_sync.result(WAIT_S).assignment == b"B"
    assert replayed(h.topic, "g") == (G.GroupState.STABLE, 3, sorted([a, b]), {})


def test_sync_group_waits_for_the_assignment_write(h):
    a, b, gen = _second_generation(h)
    b_sync = h.in_thread(h.sync, "g", b, gen)
    h.wait_parked("g", b, "sync")
    h.topic.hold = threading.Event()
    h.topic.appending.clear()
    a_sync = h.in_thread(h.sync, "g", a, gen, {a: b"A", b: b"B"})
    assert h.topic.appending.wait(WAIT_S)
    assert not b_sync.done() and not a_sync.done()
    assert h.gc.groups["g"].state is G.GroupState.COMPLETING_REBALANCE
    h.topic.hold.set()
    assert a_sync.result(WAIT_S).assignment == b"A" and b_sync.result(WAIT_S).assignment == b"B"
    assert h.gc.groups["g"].state is G.GroupState.STABLE


# ----------------------------- issue 18 gaps: unknown partitions, committed leader epochs


def test_commit_to_a_partition_that_does_not_exist_answers_unknown_and_commits_the_others(h):
    """As Kafka's KafkaApis: per partition UNKNOWN_TOPIC_OR_PARTITION, the others committed."""
    unknown = E.UnknownTopicOrPartitionError.code
    res = h.commit("g", {("t", 0): 5, ("nope", 0): 6, ("t", 3): 7})  # t has partitions 0-2
    assert (res.error_code, dict(res.partitions)) == (0, {("t", 0): 0, ("nope", 0): unknown, ("t", 3): unknown})
    assert h.committed("g") == {("t", 0): 5}
    assert [(r["topic"], r["partition"]) for r in h.topic.records()] == [("t", 0)]  # nothing else written

    # The same on the gRPC path brokerlab's own client takes.
    resp = GroupServicer(h.gc).OffsetCommit(h.commit_request("g", {("nope", 1): 1, ("t", 1): 2}), None)
    assert resp.error_code == 0
    assert {(p.topic, p.partition): p.error_code for p in resp.partitions} == {("nope", 1): unknown, ("t", 1): 0}
    assert h.committed("g") == {("t", 0): 5, ("t", 1): 2}

    # Only unknown partitions: answered without the group (Kafka does not reach the coordinator either).
    res = h.commit("other", {("nope", 0): 1})
    assert dict(res.partitions) == {("nope", 0): unknown} and "other" not in h.gc.groups


def test_committed_leader_epoch_is_stored_and_survives_a_restart(h):
    h.commit("g", {("t", 0): (5, 3), ("t", 1): 6})  # (offset, leader epoch); t-1 names none
    offsets = h.gc.fetch_offsets("g", None)
    assert {tp: (om.offset, om.leader_epoch) for tp, om in offsets.items()} == {("t", 0): (5, 3), ("t", 1): (6, -1)}
    req = gpb.OffsetFetchRequest(group_id="g")
    req.partitions.add(topic="t", partition=0)
    req.partitions.add(topic="t", partition=2)  # nothing committed: -1
    resp = GroupServicer(h.gc).OffsetFetch(req, None)
    assert [(p.partition, p.committed_offset, p.committed_leader_epoch) for p in resp.partitions] == [
        (0, 5, 3), (2, -1, -1)]
    restarted = h.restarted()
    try:
        om = restarted.gc.fetch_offsets("g", [("t", 0)])[("t", 0)]
        assert (om.offset, om.leader_epoch) == (5, 3)
    finally:
        restarted.close()


def test_offset_records_written_before_leader_epochs_were_stored_read_as_unknown_epoch():
    h = Harness()
    h.commit("g", {("t", 0): (5, 3)})
    log = h.topic.log[h.topic.partition_for("g")]
    key, value = log[-1]
    old = json.loads(value)
    del old["leader_epoch"]  # a record as the code before this change wrote it
    log[-1] = (key, json.dumps(old).encode())
    restarted = h.restarted()
    try:
        om = restarted.gc.fetch_offsets("g", [("t", 0)])[("t", 0)]
        assert (om.offset, om.leader_epoch) == (5, -1)
    finally:
        restarted.close()


# ------------------------- issue 20 item 7: a commit is readable once durable


def test_commit_is_not_readable_while_its_write_is_in_flight(h):
    h.commit("g", {("t", 0): 1})
    h.topic.hold = threading.Event()
    h.topic.appending.clear()
    pending = h.in_thread(h.commit, "g", {("t", 0): 2})
    assert h.topic.appending.wait(WAIT_S)
    assert h.committed("g") == {("t", 0): 1}
    h.topic.hold.set()
    assert pending.result(WAIT_S).error_code == 0
    assert h.committed("g") == {("t", 0): 2}


def test_commit_whose_write_failed_is_not_readable_and_not_a_definite_failure(h):
    h.commit("g", {("t", 0): 1})
    # What InternalTopic raises when its acks=all retries ran out: an attempt may have been appended.
    h.topic.fail = lambda _p: E.CoordinatorNotAvailableError("could not write __consumer_offsets-0")
    with pytest.raises(E.KafkaError) as failed:
        h.commit("g", {("t", 0): 2})
    assert failed.value.retriable and not failed.value.definite
    assert h.committed("g") == {("t", 0): 1}

    # On the wire (what the client maps to its error classes): REQUEST_TIMED_OUT, indefinite.
    resp = GroupServicer(h.gc).OffsetCommit(h.commit_request("g", {("t", 0): 3}), None)
    assert resp.error_code == E.RequestTimedOutError.code
    assert [p.error_code for p in resp.partitions] == [E.RequestTimedOutError.code]
    assert not E.class_for_code(resp.error_code).definite
    assert h.committed("g") == {("t", 0): 1}

    h.topic.fail = lambda _p: None
    restarted = h.restarted()
    try:
        assert restarted.committed("g") == {("t", 0): 1}
    finally:
        restarted.close()


def test_commit_too_large_to_write_is_a_definite_failure(h):
    h.topic.fail = lambda _p: E.RecordListTooLargeError("batch too large")
    with pytest.raises(E.InvalidCommitOffsetSizeError) as failed:
        h.commit("g", {("t", 0): 2})
    assert failed.value.definite
    assert h.committed("g") == {}


def test_failed_group_record_write_is_coordinator_not_available(h):
    """Kafka's storeGroup mapping: clients find the coordinator again and rejoin (REQUEST_TIMED_OUT on a
    JoinGroup would be fatal to a Kafka client)."""
    h.stable_member("g", instance="i-a")
    h.topic.fail = lambda _p: E.NotEnoughReplicasError("ISR too small")
    with pytest.raises(E.CoordinatorNotAvailableError):
        h.join("g", instance="i-a")  # a static member's restart writes the group with its new member id
    resp = GroupServicer(h.gc).LeaveGroup(gpb.LeaveGroupRequest(
        group_id="g", members=[gpb.LeaveGroupMember(group_instance_id="i-a")]), None)
    assert resp.error_code == E.CoordinatorNotAvailableError.code


def test_failed_write_on_one_partition_fails_only_its_groups(h):
    others = [gid for gid in (f"g{i}" for i in range(50))
              if h.topic.partition_for(gid) != h.topic.partition_for("g")]
    bad = h.topic.partition_for("g")
    h.topic.fail = lambda p: E.NotEnoughReplicasError("ISR too small") if p == bad else None
    h.topic.hold = threading.Event()
    h.topic.appending.clear()
    first = h.in_thread(h.commit, others[0], {("t", 0): 1})  # holds the writer: the next two share a batch
    assert h.topic.appending.wait(WAIT_S)
    failing = h.in_thread(h.commit, "g", {("t", 0): 1})
    fine = h.in_thread(h.commit, others[1], {("t", 0): 1})
    for gid in ("g", others[1]):
        _wait_queued(h, gid)
    h.topic.hold.set()
    assert first.result(WAIT_S).error_code == 0
    assert fine.result(WAIT_S).error_code == 0 and h.committed(others[1]) == {("t", 0): 1}
    with pytest.raises(E.RequestTimedOutError):
        failing.result(WAIT_S)
    assert h.committed("g") == {}


def _wait_queued(h: Harness, group_id: str) -> None:
    for _ in range(int(WAIT_S * 100)):
        with h.gc.lock:
            if any(rec.get("group_id") == group_id for job in list(h.gc.jobs.queue) if job is not None
                   for fx in job.effects for rec in getattr(fx, "records", ())):
                return
        threading.Event().wait(0.01)
    raise AssertionError(f"no write of {group_id} queued")


# ------------------------------------ issue 19 item 5: log order = apply order


def _commit_then_commit(h):
    h.commit("g", {("t", 0): 1})
    return lambda: h.commit("g", {("t", 0): 100}), lambda: h.commit("g", {("t", 0): 150})


def _leave_then_new_round(h):
    a, _ = h.stable_member("g")
    return lambda: h.leave("g", a), lambda: h.stable_member("g")


def _session_expiry_then_new_round(h):
    h.stable_member("g", session_ms=10_000)
    h.clock.advance(10_000)
    return h.gc.tick, lambda: h.stable_member("g")


def _delete_then_commit(h):
    h.commit("g", {("t", 0): 5})
    return lambda: h.gc.delete("g"), lambda: h.commit("g", {("t", 0): 7})


def _static_rejoin_then_leave(h):
    h.stable_member("g", instance="i-a")
    return lambda: h.join("g", instance="i-a"), lambda: h.leave("g", instance="i-a")


@pytest.mark.parametrize("scenario", [_commit_then_commit, _leave_then_new_round, _session_expiry_then_new_round,
                                      _delete_then_commit, _static_rejoin_then_leave],
                         ids=["commit", "leave", "tick", "delete", "join"])
def test_log_order_is_the_order_of_the_changes(h, scenario):
    """The second operation runs right after the first released the lock, before the first could queue
    its records outside it; a restart (replaying the log) must restore what the coordinator holds."""
    first, second = scenario(h)
    ran = []
    h.gc.lock.after_next_release(lambda: ran.append(second()))
    first()
    assert ran, "the second operation did not run"
    assert replayed(h.topic, "g") == snapshot(h.gc.groups.get("g"))
    restarted = h.restarted()
    try:
        assert snapshot(restarted.gc.groups.get("g")) == replayed(h.topic, "g")
    finally:
        restarted.close()
