"""GroupMetadata: Kafka's classic group protocol, driven with explicit now_ms."""
from __future__ import annotations

import json

import pytest

from client.common import errors as E
from node.group import (
    NONE,
    GroupMetadata,
    GroupState,
    JoinComplete,
    JoinGroupResponse,
    MemberIdentity,
    MemberRemoved,
    PersistAssignment,
    PersistGroup,
    PersistOffsets,
    RebalanceStarted,
    SyncComplete,
    SyncGroupResponse,
    counter_member_ids,
    record_key,
    txn_handed_over_record,
)

PROTOS = [("range", b"sub-r"), ("roundrobin", b"sub-rr")]
SESSION = 10_000
REBALANCE = 30_000


def make_group(delay: int = 0, **kw) -> GroupMetadata:
    return GroupMetadata("g", member_id_generator=counter_member_ids(), initial_rebalance_delay_ms=delay,
                         min_session_timeout_ms=100, max_session_timeout_ms=60_000, **kw)


def join(g, member_id="", now=0, *, instance=None, client="c", session=SESSION, rebalance=REBALANCE,
         protocol_type="consumer", protocols=PROTOS):
    return g.handle_join_group(member_id, instance, client, "/10.0.0.1", session, rebalance,
                               protocol_type, protocols, now)


def join_new(g, now=0, **kw):
    """A new dynamic member: MEMBER_ID_REQUIRED round trip, then the real join."""
    r = join(g, "", now, **kw)
    if kw.get("instance") is None:
        assert r.response is not None and r.response.error_code == E.MemberIdRequiredError.code
        r = join(g, r.member_id, now, **kw)
    return r


def completions(effects, kind) -> dict:
    out = {}
    for fx in effects:
        if isinstance(fx, kind):
            for resp in fx.responses:
                out[resp.member_id] = resp
    return out


def joins(effects) -> dict[str, JoinGroupResponse]:
    return completions(effects, JoinComplete)


def syncs(effects) -> dict[str, SyncGroupResponse]:
    return completions(effects, SyncComplete)


def stored(g, effects, now: int = 0, error: int = NONE) -> list:
    """What a driver does once the effects' records are written (or failed with `error`): apply the
    commits, report the assignment; returns the effects plus what the outcome produced."""
    out = list(effects)
    for fx in effects:
        if isinstance(fx, PersistOffsets) and error == NONE:
            g.on_offsets_stored(fx.records)
        elif isinstance(fx, PersistAssignment):
            out += g.on_assignment_stored(fx.generation_id, fx.assignments, error, now)
    return out


def commit(g, member_id, generation_id, offsets, now, **kw):
    """A commit whose records were written."""
    res = g.commit_offsets(member_id, generation_id, offsets, now, **kw)
    stored(g, res.effects, now)
    return res


def settle(g, t: int) -> list:
    """Fire the initial-delay timer twice: it is extended once when members kept arriving."""
    return g.tick(t - 100) + g.tick(t)


def stable_group(n: int, now: int = 0, delay: int = 100) -> tuple[GroupMetadata, list[str]]:
    """n dynamic members joined in one round; member i gets assignment b"a<i>"."""
    g = make_group(delay)
    ids = []
    for _ in range(n):
        r = join_new(g, now)
        assert r.pending
        ids.append(r.member_id)
    fx = settle(g, now + 1_000)
    assert set(joins(fx)) == set(ids)
    assert g.state is GroupState.COMPLETING_REBALANCE
    for mid in ids[1:]:
        assert g.handle_sync_group(mid, g.generation_id, None, None, now + 1_000).pending
    res = g.handle_sync_group(ids[0], g.generation_id, None,
                              {mid: f"a{i}".encode() for i, mid in enumerate(ids)}, now + 1_000)
    assert syncs(res.effects) == {} and g.state is GroupState.COMPLETING_REBALANCE  # not yet written
    assert set(syncs(stored(g, res.effects, now + 1_000))) == set(ids)
    assert g.state is GroupState.STABLE
    return g, ids


# ------------------------------------------------------------ join / sync


def test_single_member_becomes_leader_then_stable():
    g = make_group()
    r = join(g, "", 0)
    assert r.response.error_code == E.MemberIdRequiredError.code
    assert r.response.member_id == r.member_id == "c-1"
    assert g.state is GroupState.EMPTY and not g.members

    r = join(g, "c-1", 5)
    assert r.pending
    assert any(isinstance(fx, RebalanceStarted) for fx in r.effects)
    resp = joins(r.effects)["c-1"]
    assert resp.error_code == NONE
    assert (resp.generation_id, resp.leader, resp.protocol_name, resp.protocol_type) == \
        (1, "c-1", "range", "consumer")
    assert [(m.member_id, m.metadata) for m in resp.members] == [("c-1", b"sub-r")]
    assert g.state is GroupState.COMPLETING_REBALANCE

    s = g.handle_sync_group("c-1", 1, None, {"c-1": b"assign"}, 6)
    assert s.pending
    (persist,) = [fx for fx in s.effects if isinstance(fx, PersistAssignment)]
    assert persist.record["generation_id"] == 1 and persist.record["members"][0]["member_id"] == "c-1"
    assert syncs(stored(g, s.effects, 6))["c-1"].assignment == b"assign"
    assert g.state is GroupState.STABLE
    assert g.handle_heartbeat("c-1", 1, None, 7).error_code == NONE


def test_three_members_in_one_round_with_initial_delay():
    g = make_group(delay=100)
    a = join_new(g, 0).member_id
    assert g.state is GroupState.PREPARING_REBALANCE and g.rebalance_deadline_ms == 100
    b = join_new(g, 10).member_id
    c = join_new(g, 20).member_id
    assert g.tick(99) == []
    # New members arrived during the delay: wait another delay.
    assert g.tick(100) == [] and g.rebalance_deadline_ms == 200
    fx = g.tick(200)
    responses = joins(fx)
    assert set(responses) == {a, b, c}
    assert all(r.generation_id == 1 and r.leader == a for r in responses.values())
    assert [m.member_id for m in responses[a].members] == [a, b, c]
    assert responses[b].members == () and responses[c].members == ()

    assert g.handle_sync_group(b, 1, None, None, 210).pending
    assert g.handle_sync_group(c, 1, None, None, 210).pending
    s = g.handle_sync_group(a, 1, None, {a: b"A", b: b"B"}, 220)
    got = syncs(stored(g, s.effects, 220))
    assert {m: r.assignment for m, r in got.items()} == {a: b"A", b: b"B", c: b""}
    # A follower syncing after the leader gets its answer at once.
    assert g.handle_sync_group(b, 1, None, None, 230).response.assignment == b"B"


def test_rejoin_during_completing_with_same_metadata_resends_response():
    g = make_group()
    a = join_new(g, 0).member_id
    r = join(g, a, 1)
    assert r.response.generation_id == 1 and r.response.leader == a
    assert g.state is GroupState.COMPLETING_REBALANCE


def test_join_during_stable_triggers_rebalance_and_heartbeat_says_rejoin():
    g, (a, b) = stable_group(2)
    c = join_new(g, 1_000)
    assert c.pending and g.state is GroupState.PREPARING_REBALANCE
    assert g.handle_heartbeat(a, 1, None, 1_100).error_code == E.RebalanceInProgressError.code
    assert g.handle_sync_group(a, 1, None, None, 1_100).response.error_code == \
        E.RebalanceInProgressError.code
    assert join(g, a, 1_200).pending
    r = join(g, b, 1_300)
    responses = joins(r.effects)  # the last member to rejoin completes the round
    assert set(responses) == {a, b, c.member_id}
    assert {x.generation_id for x in responses.values()} == {2}
    assert responses[a].leader == a and len(responses[a].members) == 3


def test_member_joining_during_completing_rebalance_voids_the_round():
    g = make_group()
    a = join_new(g, 0).member_id
    assert g.handle_sync_group(a, 1, None, None, 1).pending  # leader parks without assignment
    r = join_new(g, 2)
    assert syncs(r.effects)[a].error_code == E.RebalanceInProgressError.code
    assert g.state is GroupState.PREPARING_REBALANCE


def test_leader_rejoining_stable_group_starts_a_rebalance():
    g, (a, b) = stable_group(2)
    assert join(g, b, 100).response.generation_id == 1  # follower, same metadata: no rebalance
    assert g.state is GroupState.STABLE
    assert join(g, a, 200).pending
    assert g.state is GroupState.PREPARING_REBALANCE


def test_changed_subscription_starts_a_rebalance():
    g, (_a, b) = stable_group(2)
    assert join(g, b, 100, protocols=[("range", b"new-topics")]).pending
    assert g.state is GroupState.PREPARING_REBALANCE


def test_protocol_vote_picks_the_common_protocol():
    g = make_group(delay=100)
    a = join_new(g, 0, protocols=[("roundrobin", b"x"), ("range", b"y")]).member_id
    join_new(g, 0, protocols=[("range", b"y"), ("sticky", b"z")])
    resp = joins(settle(g, 1_000))[a]
    assert resp.protocol_name == "range"
    assert {m.metadata for m in resp.members} == {b"y"}


# ------------------------------------------------------------------ timers


def test_session_expiry_removes_member_and_rebalances():
    g, (a, b) = stable_group(2)
    assert g.handle_heartbeat(b, 1, None, 5_000).error_code == NONE
    assert g.tick(SESSION + 1_000 - 1) == []  # last heard from a at t=1000
    fx = g.tick(SESSION + 1_000)
    removed = [e for e in fx if isinstance(e, MemberRemoved)]
    assert [(e.member_id, e.reason) for e in removed] == [(a, "session timeout expired")]
    assert g.state is GroupState.PREPARING_REBALANCE and g.leader_id == b
    assert g.handle_heartbeat(b, 1, None, SESSION + 1_001).error_code == E.RebalanceInProgressError.code
    resp = joins(join(g, b, SESSION + 1_002).effects)[b]
    assert resp.generation_id == 2 and resp.leader == b
    assert g.handle_heartbeat(a, 1, None, SESSION + 1_003).error_code == E.UnknownMemberIdError.code


def test_rebalance_timeout_removes_members_that_did_not_rejoin():
    g, (a, b) = stable_group(2)
    c = join_new(g, 2_000, rebalance=REBALANCE).member_id
    assert g.rebalance_deadline_ms == 2_000 + REBALANCE
    assert join(g, a, 2_100).pending
    # b keeps heartbeating but never rejoins (stuck in poll processing).
    for t in range(3_000, 2_000 + REBALANCE, 3_000):
        assert g.handle_heartbeat(b, 1, None, t).error_code == E.RebalanceInProgressError.code
        assert not any(isinstance(e, JoinComplete) for e in g.tick(t))
    fx = g.tick(2_000 + REBALANCE)
    assert [e.member_id for e in fx if isinstance(e, MemberRemoved)] == [b]
    assert set(joins(fx)) == {a, c}
    assert g.state is GroupState.COMPLETING_REBALANCE and g.generation_id == 2


def test_member_not_syncing_in_time_triggers_another_rebalance():
    g = make_group(delay=100)
    a = join_new(g, 0).member_id
    b = join_new(g, 0).member_id
    settle(g, 1_000)
    assert g.sync_deadline_ms == 1_000 + REBALANCE
    assert g.handle_sync_group(b, 1, None, None, 1_100).pending
    # The leader heartbeats (so its session holds) but never sends SyncGroup.
    for t in range(5_000, 1_000 + REBALANCE, 5_000):
        assert g.handle_heartbeat(a, 1, None, t).error_code == NONE
        assert g.tick(t) == []
    assert g.next_deadline_ms() == 1_000 + REBALANCE
    fx = g.tick(1_000 + REBALANCE)
    assert [e.member_id for e in fx if isinstance(e, MemberRemoved)] == [a]
    assert syncs(fx)[b].error_code == E.RebalanceInProgressError.code
    assert g.state is GroupState.PREPARING_REBALANCE and g.leader_id == b


def test_a_parked_sync_answered_late_restarts_the_members_session():
    """Kafka's propagateAssignment: the members whose SyncGroup was parked get a fresh session when it is
    answered (over the Kafka protocol a parked request also holds back the member's heartbeats)."""
    g = make_group(delay=100)
    a = join_new(g, 0).member_id
    b = join_new(g, 0).member_id
    settle(g, 1_000)
    assert g.handle_sync_group(b, 1, None, None, 1_100).pending  # b waits for the leader's assignment
    late = 1_100 + SESSION + 500
    for t in range(3_000, late, 3_000):  # the leader heartbeats, so its own session holds
        assert g.handle_heartbeat(a, 1, None, t).error_code == NONE
        assert g.tick(t) == []
    res = g.handle_sync_group(a, 1, None, {a: b"a0", b: b"a1"}, late)
    assert syncs(stored(g, res.effects, late))[b].assignment == b"a1"
    assert not [e for e in g.tick(late + 1) if isinstance(e, MemberRemoved)]
    assert g.next_deadline_ms() == late + SESSION
    assert g.state is GroupState.STABLE and set(g.members) == {a, b}


def test_member_id_required_pending_member_expires():
    g = make_group()
    pending_id = join(g, "", 0).member_id
    assert g.pending_members == {pending_id: SESSION}
    fx = g.tick(SESSION)
    assert [e.member_id for e in fx if isinstance(e, MemberRemoved)] == [pending_id]
    assert join(g, pending_id, SESSION + 1).response.error_code == E.UnknownMemberIdError.code


def test_pending_member_id_holds_the_round_until_it_joins():
    g, (a,) = stable_group(1)
    newcomer = join(g, "", 100).member_id  # MEMBER_ID_REQUIRED
    join(g, a, 200)  # a rejoins (as leader) but the pending member is not in yet
    assert g.state is GroupState.PREPARING_REBALANCE
    r = join(g, newcomer, 300)
    assert set(joins(r.effects)) == {a, newcomer}


# ------------------------------------------------------------- validation


def test_stale_generation_is_illegal():
    g, (a, _b) = stable_group(2)
    assert g.handle_heartbeat(a, 0, None, 1).error_code == E.IllegalGenerationError.code
    assert g.handle_sync_group(a, 0, None, None, 1).response.error_code == E.IllegalGenerationError.code
    assert g.commit_offsets(a, 0, {("t", 0): (5, "")}, 1).error_code == E.IllegalGenerationError.code


def test_unknown_member():
    g, _ = stable_group(1)
    assert g.handle_heartbeat("ghost", 1, None, 1).error_code == E.UnknownMemberIdError.code
    assert g.handle_sync_group("ghost", 1, None, None, 1).response.error_code == \
        E.UnknownMemberIdError.code
    assert join(g, "ghost", 1).response.error_code == E.UnknownMemberIdError.code
    assert g.commit_offsets("ghost", 1, {("t", 0): (1, "")}, 1).error_code == E.UnknownMemberIdError.code


@pytest.mark.parametrize("session", [99, 60_001])
def test_invalid_session_timeout(session):
    r = join(make_group(), "", 0, session=session)
    assert r.response.error_code == E.InvalidSessionTimeoutError.code


@pytest.mark.parametrize("kw", [
    {"protocol_type": "connect"},
    {"protocols": [("sticky", b"")]},
])
def test_inconsistent_group_protocol(kw):
    g, _ = stable_group(1)
    r = join(g, "", 1, instance="x", **kw)
    assert r.response.error_code == E.InconsistentGroupProtocolError.code


def test_empty_protocols_are_inconsistent():
    r = join(make_group(), "", 0, protocols=[])
    assert r.response.error_code == E.InconsistentGroupProtocolError.code


def test_group_max_size():
    g, _ = stable_group(2)
    g.max_size = 2
    assert join(g, "", 1).response.error_code == E.GroupMaxSizeReachedError.code


# ------------------------------------------------------- static membership


def static_stable_group():
    g = make_group(delay=100)
    a = join(g, "", 0, instance="i-a").member_id
    b = join(g, "", 0, instance="i-b").member_id
    settle(g, 1_000)
    g.handle_sync_group(b, 1, "i-b", None, 1_000)
    stored(g, g.handle_sync_group(a, 1, "i-a", {a: b"A", b: b"B"}, 1_000).effects, 1_000)
    assert g.state is GroupState.STABLE
    return g, a, b


def test_static_member_gets_no_member_id_required():
    g = make_group()
    r = join(g, "", 0, instance="i-a")
    assert r.pending and r.member_id == "i-a-1"
    assert joins(r.effects)["i-a-1"].generation_id == 1


def test_static_member_restart_keeps_assignment_without_rebalance():
    g, a, b = static_stable_group()
    r = join(g, "", 5_000, instance="i-b", client="c2")  # restarted process, within session
    resp = r.response
    assert resp is not None and resp.error_code == NONE
    new_b = r.member_id
    assert new_b != b and resp.member_id == new_b
    assert (resp.generation_id, resp.leader, resp.protocol_name) == (1, a, "range")
    assert g.state is GroupState.STABLE and g.generation_id == 1
    assert any(isinstance(e, MemberRemoved) and e.member_id == b for e in r.effects)
    assert any(isinstance(e, PersistGroup) for e in r.effects)
    assert g.handle_sync_group(new_b, 1, "i-b", None, 5_001).response.assignment == b"B"
    assert g.handle_heartbeat(new_b, 1, "i-b", 5_002).error_code == NONE
    # The old incarnation is fenced.
    assert g.handle_heartbeat(b, 1, "i-b", 5_003).error_code == E.FencedInstanceIdError.code
    assert g.handle_sync_group(b, 1, "i-b", None, 5_003).response.error_code == \
        E.FencedInstanceIdError.code
    assert g.commit_offsets(b, 1, {("t", 0): (1, "")}, 5_003, group_instance_id="i-b").error_code == \
        E.FencedInstanceIdError.code
    assert join(g, b, 5_003, instance="i-b").response.error_code == E.FencedInstanceIdError.code
    assert g.handle_heartbeat(b, 1, None, 5_003).error_code == E.UnknownMemberIdError.code


def test_static_leader_restart_is_told_to_skip_assignment():
    g, _a, b = static_stable_group()
    r = join(g, "", 2_000, instance="i-a")
    assert r.response.skip_assignment and r.response.leader == r.member_id
    assert [m.member_id for m in r.response.members] == [r.member_id, b]
    assert g.state is GroupState.STABLE


def test_static_member_restart_with_new_subscription_rebalances():
    g, _a, _b = static_stable_group()
    r = join(g, "", 2_000, instance="i-b", protocols=[("range", b"other")])
    assert r.pending and g.state is GroupState.PREPARING_REBALANCE


def test_static_member_replaced_while_parked_in_join_is_fenced():
    g = make_group(delay=100)
    old = join(g, "", 0, instance="i-a").member_id
    r = join(g, "", 50, instance="i-a")
    assert joins(r.effects)[old].error_code == E.FencedInstanceIdError.code
    fx = settle(g, 1_000)
    assert set(joins(fx)) == {r.member_id}


# ------------------------------------------------------------------- leave


def test_leave_triggers_rebalance_and_last_leave_empties_group():
    g, (a, b) = stable_group(2)
    res = g.handle_leave_group(a, 100)
    assert res.error_code == NONE and res.members[0].error_code == NONE
    assert g.state is GroupState.PREPARING_REBALANCE and g.leader_id == b
    assert any(isinstance(e, MemberRemoved) and e.member_id == a for e in res.effects)
    fx = joins(join(g, b, 200).effects)
    assert fx[b].generation_id == 2
    res = g.handle_leave_group(b, 300)  # in CompletingRebalance
    assert g.state is GroupState.EMPTY and g.generation_id == 3 and not g.members
    assert any(isinstance(e, PersistGroup) for e in res.effects)


def test_leave_of_member_parked_in_join_answers_it():
    g, (a, _b) = stable_group(2)
    join(g, a, 100)
    res = g.handle_leave_group(a, 200)
    assert joins(res.effects)[a].error_code == E.UnknownMemberIdError.code


def test_batch_leave_by_instance_id():
    g, a, b = static_stable_group()
    res = g.handle_leave_group([MemberIdentity("", "i-a"), MemberIdentity("wrong", "i-b"),
                                MemberIdentity("", "i-zzz"), MemberIdentity("ghost")], 100)
    assert [(m.member_id, m.error_code) for m in res.members] == [
        (a, NONE), ("wrong", E.FencedInstanceIdError.code), ("", E.UnknownMemberIdError.code),
        ("ghost", E.UnknownMemberIdError.code)]
    assert set(g.members) == {b}
    assert "i-a" not in g.static_members


# ----------------------------------------------------------------- offsets


def test_simple_commit_only_when_empty():
    g = make_group()
    res = g.commit_offsets("", -1, {("t", 0): (10, "m")}, 50, commit_timestamp_ms=1_700_000_000_050)
    assert res.error_code == NONE and res.partitions == {("t", 0): NONE}
    (persist,) = [e for e in res.effects if isinstance(e, PersistOffsets)]
    assert (persist.records[0]["offset"], persist.records[0]["commit_timestamp_ms"]) == (10, 1_700_000_000_050)
    assert g.committed([("t", 0)]) == {("t", 0): None}  # readable only once written
    stored(g, res.effects, 50)
    assert g.committed([("t", 0), ("t", 1)]) == {("t", 0): g.offsets[("t", 0)], ("t", 1): None}
    assert g.committed([("t", 0)])[("t", 0)].metadata == "m"

    g2, _ = stable_group(1)
    res = g2.commit_offsets("", -1, {("t", 0): (10, "")}, 50)
    assert res.error_code == E.UnknownMemberIdError.code
    assert res.partitions == {("t", 0): E.UnknownMemberIdError.code}
    assert g2.committed([("t", 0)]) == {("t", 0): None}


def test_member_commit_validation_by_state():
    g, (a, b) = stable_group(2)
    assert commit(g, a, 1, {("t", 0): (7, "")}, 10).error_code == NONE
    assert g.committed([("t", 0)])[("t", 0)].offset == 7
    join_new(g, 20)  # PreparingRebalance: eager members commit while revoking
    assert commit(g, a, 1, {("t", 0): (8, "")}, 30).error_code == NONE
    join(g, a, 40)
    join(g, b, 40)  # round completes: CompletingRebalance, generation 2
    assert g.state is GroupState.COMPLETING_REBALANCE
    assert g.commit_offsets(a, 2, {("t", 0): (9, "")}, 50).error_code == E.RebalanceInProgressError.code
    assert g.committed([("t", 0)])[("t", 0)].offset == 8


def test_delete_only_when_empty():
    g, (a,) = stable_group(1)
    commit(g, a, 1, {("t", 0): (3, "")}, 10)
    assert g.delete().error_code == E.NonEmptyGroupError.code
    g.handle_leave_group(a, 20)
    assert g.state is GroupState.EMPTY
    res = g.delete()
    assert res.error_code == NONE and g.state is GroupState.DEAD
    tombstones = [r for e in res.effects if isinstance(e, PersistOffsets) for r in e.records]
    assert tombstones == [{"type": "offset_commit", "group_id": "g", "topic": "t", "partition": 0,
                           "deleted": True}]
    assert g.committed([("t", 0)]) == {("t", 0): None}
    assert g.delete().error_code == E.GroupIdNotFoundError.code
    assert join(g, "", 30).response.error_code == E.CoordinatorNotAvailableError.code
    assert g.handle_heartbeat(a, 1, None, 30).error_code == E.CoordinatorNotAvailableError.code
    assert g.commit_offsets("", -1, {("t", 0): (1, "")}, 30).error_code == \
        E.CoordinatorNotAvailableError.code


# ------------------------------------------------------- describe, records


def test_describe():
    g, (a, b) = stable_group(2)
    d = g.describe()
    assert (d.state, d.protocol_type, d.protocol) == (GroupState.STABLE, "consumer", "range")
    assert [(m.member_id, m.client_id, m.client_host, m.assignment, m.metadata) for m in d.members] == [
        (a, "c", "/10.0.0.1", b"a0", b"sub-r"), (b, "c", "/10.0.0.1", b"a1", b"sub-r")]
    join_new(g, 10)
    d = g.describe()
    assert d.state is GroupState.PREPARING_REBALANCE and d.protocol == ""
    assert d.state.value == "PreparingRebalance"


def test_records_round_trip_through_json():
    g, (a, b) = stable_group(2)
    commit(g, a, 1, {("t", 0): (11, "x"), ("t", 1): (12, "")}, 10)
    commit(g, b, 1, {("t", 0): (13, "y")}, 20)
    log = [json.loads(json.dumps(r)) for r in [g.to_record(), *g.offset_records()]]
    assert len({record_key(r) for r in log}) == 3
    g2 = GroupMetadata.from_records("g", log, now_ms=100_000, member_id_generator=counter_member_ids(50))
    assert g2.state is GroupState.STABLE and g2.generation_id == 1
    assert g2.leader_id == a and g2.protocol_name == "range"
    assert [m.assignment for m in g2.members.values()] == [b"a0", b"a1"]
    assert g2.committed([("t", 0)])[("t", 0)].offset == 13
    # Sessions restart at load time.
    assert g2.handle_heartbeat(b, 1, None, 100_001).error_code == NONE
    assert g2.tick(100_000 + SESSION - 1) == []


def test_from_records_replays_tombstones():
    g, (a,) = stable_group(1)
    commit(g, a, 1, {("t", 0): (1, "")}, 1)
    log = [g.to_record(), *g.offset_records()]
    g.handle_leave_group(a, 2)
    log.append(g.to_record())
    assert GroupMetadata.from_records("g", log, 10).state is GroupState.EMPTY
    log += [e.record for e in g.delete().effects if isinstance(e, PersistGroup)]
    log += [r for e in GroupMetadata.from_records("g", log, 10).delete().effects
            if isinstance(e, PersistOffsets) for r in e.records]
    assert GroupMetadata.from_records("g", log, 10) is None
    assert GroupMetadata.from_records("other", log, 10) is None


# ------------------------------------------- the assignment waits for its write


def test_assignment_applies_only_once_written_and_a_failed_write_rebalances():
    g = make_group(delay=100)
    a = join_new(g, 0).member_id
    b = join_new(g, 0).member_id
    settle(g, 1_000)
    assert g.handle_sync_group(b, 1, None, None, 1_000).pending
    s = g.handle_sync_group(a, 1, None, {a: b"A", b: b"B"}, 1_000)
    (persist,) = [fx for fx in s.effects if isinstance(fx, PersistAssignment)]
    assert [(m["member_id"], m["assignment"]) for m in persist.record["members"]] == [(a, "QQ=="), (b, "Qg==")]
    assert g.state is GroupState.COMPLETING_REBALANCE and syncs(s.effects) == {}
    assert g.handle_heartbeat(b, 1, None, 1_001).error_code == NONE
    fx = g.on_assignment_stored(1, persist.assignments, E.CoordinatorNotAvailableError.code, 1_002)
    assert {m: r.error_code for m, r in syncs(fx).items()} == {a: E.CoordinatorNotAvailableError.code,
                                                               b: E.CoordinatorNotAvailableError.code}
    assert any(isinstance(e, RebalanceStarted) for e in fx)
    assert g.state is GroupState.PREPARING_REBALANCE and g.generation_id == 1
    assert [m.assignment for m in g.members.values()] == [b"", b""]
    assert g.handle_heartbeat(b, 1, None, 1_003).error_code == E.RebalanceInProgressError.code
    # A late outcome of a round the group has left is ignored.
    assert g.on_assignment_stored(1, persist.assignments, NONE, 1_004) == []
    assert g.state is GroupState.PREPARING_REBALANCE


def test_offsets_stored_apply_commits_and_tombstones_in_log_order():
    g = make_group()
    oc = {"type": "offset_commit", "group_id": "g", "topic": "t"}
    g.on_offsets_stored([{**oc, "partition": 0, "offset": 4, "metadata": "m", "commit_timestamp_ms": 9},
                         {**oc, "partition": 1, "offset": 5},
                         {**oc, "partition": 1, "deleted": True},
                         txn_handed_over_record("g", "tx", "7")])
    assert g.committed([("t", 0), ("t", 1)]) == {("t", 0): g.offsets[("t", 0)], ("t", 1): None}
    assert (g.offsets[("t", 0)].offset, g.offsets[("t", 0)].metadata) == (4, "m")
