"""The group-members workload's pure parts: kills armed by the nemesis land right after a commit,
and the reassignment measure over a hand-made history."""
from __future__ import annotations

import random

from chaos.workloads.group_members import GroupMembersWorkload, KillAfterCommitGenerator, reassignments

KEYS = ["t0/0", "t0/1"]


def test_an_armed_kill_lands_on_the_next_process_that_just_committed():
    g = KillAfterCommitGenerator(KEYS, random.Random(1), "g", weights={"send": 1, "commit": 1})
    seen = {0: [], 1: []}
    for _ in range(40):
        for p in (0, 1):
            seen[p].append(g.next_op(p)[0])
    assert "crash" not in seen[0] + seen[1]  # nothing armed, no kill
    g.arm()
    ops = seen[0] + [g.next_op(0)[0] for _ in range(40)]
    crash_at = [i for i, f in enumerate(ops) if f == "crash"]
    assert len(crash_at) == 1 and ops[crash_at[0] - 1] == "commit"  # once, right after a commit
    assert crash_at[0] >= 40 and not g.armed
    assert g.next_op(5)[0] == "subscribe"  # the next process starts a new member


def test_the_workload_arms_kills_through_its_nemesis_op():
    w = GroupMembersWorkload({"group": "g"}, [("t0", 2)])
    g = w.generator(random.Random(1))
    done = w.nemesis({"process": "nemesis", "type": "info", "f": "kill-member", "value": {}})
    assert done["value"] == {"armed": True} and g.armed
    w.set_clients({}, {"session.timeout.ms": 3000})
    assert w.session_timeout_ms == 3000


def _op(i, t_s, process, type_, f, value=None, **extra):
    return {"index": i, "time": int(t_s * 1e9), "process": process, "type": type_, "f": f, "value": value, **extra}


def _poll(i, t_s, process, assignment, records=None):
    return _op(i, t_s, process, "ok", "poll", [["poll", records or {}]], assignment=assignment)


def _kill(i, t_s, process, assignment):
    return _op(i, t_s, process, "info", "crash", None, kill="SIGKILL", member_id=f"m{process}",
               group_instance_id=None, assignment=assignment)


def test_reassignment_is_measured_per_partition_and_late_past_session_plus_allowance():
    h = [_poll(0, 0.5, 0, ["t0/0", "t0/1"]), _kill(1, 1.0, 0, ["t0/0", "t0/1"]),
         _poll(2, 2.0, 0, ["t0/0"]),  # the killed process itself does not count
         _poll(3, 4.0, 1, ["t0/0"]),  # owned 3000 ms after the kill, no records yet
         _poll(4, 4.5, 1, ["t0/0"], {"t0/0": [[7, 70]]}),
         _poll(5, 9.0, 2, ["t0/1"]),  # 8000 ms: past 3000 + 4000
         _op(6, 12.0, 1, "ok", "send", [])]
    rows = reassignments(h, 3000, 4000)
    assert [(r["key"], r["reassigned_ms"], r["records_ms"], r["bound_ms"], r["late"]) for r in rows] == \
        [("t0/0", 3000, 3500, 7000, False), ("t0/1", 8000, None, 7000, True)]
    assert rows[0]["kill_index"] == 1 and rows[0]["member_id"] == "m0"


def test_a_coordinator_outage_or_a_later_kill_inside_the_window_extends_the_bound():
    outage = [_kill(0, 1.0, 0, ["t0/0"]),
              _op(1, 2.0, "nemesis", "info", "kill", {"nodes": ["coordinator"]}),
              _op(2, 5.0, "nemesis", "info", "start", {"nodes": ["coordinator"]}),
              _poll(3, 10.0, 1, ["t0/0"]), _op(4, 20.0, 1, "ok", "send", [])]
    (row,) = reassignments(outage, 3000, 4000)
    assert row["bound_ms"] == 11000 and row["reassigned_ms"] == 9000 and not row["late"]
    later = [_kill(0, 1.0, 0, ["t0/0"]), _kill(1, 3.0, 1, ["t0/1"]),
             _poll(2, 9.5, 2, ["t0/0", "t0/1"]), _op(3, 20.0, 2, "ok", "send", [])]
    rows = reassignments(later, 3000, 4000)
    assert [(r["bound_ms"], r["late"]) for r in rows] == [(9000, False), (7000, False)]


def test_a_partition_not_reassigned_before_the_run_ended_is_not_late():
    h = [_kill(0, 1.0, 0, ["t0/0"]), _op(1, 5.0, 1, "ok", "send", [])]
    (row,) = reassignments(h, 3000, 4000)
    assert row["reassigned_ms"] is None and not row["late"]
    h.append(_op(2, 9.0, 1, "ok", "send", []))
    (row,) = reassignments(h, 3000, 4000)
    assert row["late"]


def test_the_check_names_not_reassigned_and_reports_every_row():
    w = GroupMembersWorkload({"group": "g"}, [("t0", 2)])
    w.set_clients({}, {"session.timeout.ms": 3000})
    h = [_kill(0, 1.0, 0, ["t0/0"]), _op(1, 20.0, 1, "ok", "send", [])]
    found, stats = w.check(h)
    assert [ev["key"] for ev in found["not-reassigned"]] == ["t0/0"]
    assert stats["member_kills"] == 1 and stats["not_reassigned"] == 1 and len(stats["reassignments"]) == 1


def test_the_first_static_members_workers_run_static_members_each_incarnation_under_a_new_id(monkeypatch):
    import chaos.workloads.group_members as gm
    spawned = []

    class FakeMember:
        def __init__(self, props, log):
            spawned.append(props)
            self.pid, self.assignment, self.positions, self.member_id = 1, [], {}, ""

        def call(self, cmd, timeout_s):
            return {"type": "ok"}

        def kill(self):
            pass

    monkeypatch.setattr(gm, "MemberProcess", FakeMember)
    monkeypatch.setattr(gm.MemberProcessClient, "open", lambda self: self)
    w = GroupMembersWorkload({"group": "g", "static_members": 1}, [("t0", 2)], concurrency=2)
    static, dynamic = (w.client("b:1", {}, {}, i) for i in (0, 1))
    for c in (static, dynamic, static):
        assert c.invoke("subscribe", KEYS, {}).type == "ok"
        c.invoke("crash", None, {})
    assert [p.get("group.instance.id") for p in spawned] == ["g-w0-1", None, "g-w0-2"]
    assert all(p["group.id"] == "g" for p in spawned)
