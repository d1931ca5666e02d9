"""The txn, group and eos generators (pure, seeded), the eos exactly-once check and the group's
group-skip check."""
from __future__ import annotations

import random

import pytest

from chaos.workloads import make_workload
from chaos.workloads.eos import STRIDE, EosGenerator, check_exactly_once
from chaos.workloads.group import GroupGenerator, check_group_commits
from chaos.workloads.txn import TxnGenerator

KEYS = ["t0/0", "t0/1", "t0/2"]


def _ops(gen, process, n):
    return [gen.next_op(process) for _ in range(n)]


# -- txn


def test_txn_generator_first_assigns_then_mixes_sends_and_polls_with_unique_values():
    gen = TxnGenerator(KEYS, random.Random(1), max_mops=4, poll_probability=0.3, abort_probability=0.2)
    ops = _ops(gen, 0, 300)
    assert ops[0][0] == "assign"
    txns = [op for op in ops if op[0] == "txn"]
    assert txns and all(1 <= len(v) <= 4 for _, v, _ in txns)
    sent = [(m[1], m[2]) for _, v, _ in txns for m in v if m[0] == "send"]
    assert len(sent) == len(set(sent))  # unique per key
    assert any(m == ["poll"] for _, v, _ in txns for m in v)
    aborts = [x for _, _, x in txns if x.get("abort")]
    assert 0 < len(aborts) < len(txns)


def test_txn_generator_is_reproducible_and_renumbered_processes_assign_again():
    a = _ops(TxnGenerator(KEYS, random.Random(5)), 0, 50)
    b = _ops(TxnGenerator(KEYS, random.Random(5)), 0, 50)
    assert a == b
    gen = TxnGenerator(KEYS, random.Random(5))
    gen.next_op(0)
    assert gen.next_op(4)[0] == "assign"


@pytest.mark.parametrize("kw, field", [({"max_mops": 0}, "max_mops"), ({"abort_probability": 2}, "abort_probability"),
                                       ({"weights": {"bogus": 1}}, "bogus")])
def test_txn_generator_bad_input_names_the_problem(kw, field):
    with pytest.raises(ValueError, match=field):
        TxnGenerator(KEYS, random.Random(0), **kw)


# -- group


def test_group_generator_subscribes_first_and_tags_commits_with_the_group():
    gen = GroupGenerator(KEYS, random.Random(2), "g1")
    ops = _ops(gen, 0, 400)
    assert ops[0] == ("subscribe", KEYS, {})
    fs = {op[0] for op in ops}
    assert {"send", "poll", "commit", "committed"} <= fs
    for f, value, extra in ops:
        if f in ("commit", "committed"):
            assert extra == {"group": "g1"}
        if f == "committed":
            assert value and set(value) <= set(KEYS)


def test_group_workload_asks_for_committed_offsets_last():
    w = make_workload("group", {"group": "g9"}, [("t0", 2)])
    assert w.final_ops() == [("committed", ["t0/0", "t0/1"], {"group": "g9"})]
    with pytest.raises(ValueError, match="workload.bogus"):
        make_workload("group", {"bogus": 1}, [("t0", 2)])


# -- eos


def test_eos_generator_splits_producers_and_pipelines_by_worker():
    gen = EosGenerator(["in/0", "in/1"], random.Random(3), concurrency=4, producers=1)
    assert all(op[0] == "send" for op in _ops(gen, 0, 20))
    assert all(op[0] == "send" for op in _ops(gen, 4, 5))  # process 4 is worker 0 renumbered
    pipe = _ops(gen, 2, 200)
    assert pipe[0][0] == "subscribe"
    assert {op[0] for op in pipe[1:]} == {"txn", "crash"}
    assert all(op[1] == [["poll"]] for op in pipe[1:] if op[0] == "txn")


def test_eos_workload_validates_topics():
    with pytest.raises(ValueError, match="workload.output"):
        make_workload("eos", {"input": "in", "output": "out"}, [("in", 2), ("out", 3)], concurrency=4)
    with pytest.raises(ValueError, match="workload.input"):
        make_workload("eos", {"input": "nope"}, [("in", 2), ("out", 2)], concurrency=4)
    with pytest.raises(ValueError, match="workload.producers"):
        make_workload("eos", {"producers": 4}, [("in", 2), ("out", 2)], concurrency=4)


def _poll(reads, index):
    return {"index": index, "process": 9, "type": "ok", "f": "poll", "value": [["poll", reads]]}


def _committed(value, index):
    return {"index": index, "process": 9, "type": "ok", "f": "committed", "value": value, "group": "g"}


@pytest.mark.parametrize("outputs, committed, found", [
    ([[5, 1 * STRIDE + 1], [6, 2 * STRIDE + 2]], 2, []),                        # exactly once
    ([[5, 1 * STRIDE + 1]], 2, ["eos-missing"]),                                 # input 2 never copied
    ([[5, 1 * STRIDE + 1], [6, 2 * STRIDE + 2], [8, 2 * STRIDE + 3]], 2, ["eos-duplicate"]),
    ([[5, 1 * STRIDE + 1], [6, 2 * STRIDE + 2]], 1, ["eos-beyond-committed"]),   # output ahead of offsets
])
def test_exactly_once_check(outputs, committed, found):
    h = [_poll({"in/0": [[0, 1], [1, 2]]}, 0), _poll({"out/0": outputs}, 1), _committed({"in/0": committed}, 2)]
    anomalies, stats = check_exactly_once(h, "in", "out", "g")
    assert sorted(anomalies) == found
    for evs in anomalies.values():
        assert evs[0]["key"] == "in/0" and evs[0]["indexes"] == [2]
    assert stats["inputs_read"] == 2


def test_exactly_once_check_says_nothing_without_committed_offsets():
    anomalies, stats = check_exactly_once([_poll({"in/0": [[0, 1]]}, 0)], "in", "out", "g")
    assert anomalies == {} and stats["committed"] is None


# -- group-skip: a group commits past offsets no member of it read

X = "t0/0"


class _H:
    """A history built op by op: pairs of invoke / completion, indexes in file order."""

    def __init__(self):
        self.ops = []

    def op(self, process, f, inv_value, typ, value, **extra):
        for t, v in (("invoke", inv_value), (typ, value)):
            self.ops.append({"index": len(self.ops), "process": process, "type": t, "f": f, "value": v, **extra})
        return len(self.ops) - 1  # the completion's index

    def send(self, process, *pairs):
        return self.op(process, "send", [["send", X, v] for _, v in pairs], "ok",
                       [["send", X, [o, v]] for o, v in pairs])

    def poll(self, process, *pairs, typ="ok"):
        return self.op(process, "poll", [["poll"]], typ, [["poll", {X: [list(p) for p in pairs]}]])

    def subscribe(self, process):
        return self.op(process, "subscribe", [X], "ok", [X])

    def assign(self, process):
        return self.op(process, "assign", [X], "ok", [X], seek_to_beginning=True)

    def commit(self, process, offset, group="g", typ="ok"):
        return self.op(process, "commit", {X: offset}, typ, {X: offset}, group=group)

    def committed(self, process, offset, group="g"):
        return self.op(process, "committed", [X], "ok", {X: offset}, group=group)


def _log3(h):
    h.send(0, (0, 1), (1, 2), (2, 3))


def test_group_commit_after_members_read_everything_below_it_is_clean():
    h = _H()
    _log3(h)
    h.subscribe(1)
    h.subscribe(2)
    h.poll(1, (0, 1))
    h.poll(2, (1, 2), (2, 3))  # another member read the rest (after a rebalance)
    h.commit(1, 3)
    h.committed(5, 3)
    found, stats = check_group_commits(h.ops, "g")
    assert found == {}
    assert stats == {"commits_checked": 2, "offsets_verified": 3, "offsets_skipped": 0}


def test_group_commit_past_unread_offsets_is_a_group_skip():
    h = _H()
    _log3(h)
    h.subscribe(1)
    h.poll(1, (0, 1))
    at = h.commit(1, 3)  # offsets 1 and 2 were never read by a member
    h.poll(1, (1, 2), (2, 3))  # read after the commit: too late
    h.commit(1, 3)  # reported once, at the first commit past them
    h.assign(7)
    h.poll(7, (0, 1), (1, 2), (2, 3))  # the final read is no member
    found, stats = check_group_commits(h.ops, "g")
    (ev,) = found["group-skip"]
    assert (ev["key"], ev["committed_offset"], ev["count"], ev["skipped"]) == (X, 3, 2, [[1, 2], [2, 3]])
    assert ev["indexes"] == [at] and ev["f"] == "commit" and ev["group"] == "g"
    assert stats["offsets_skipped"] == 2


def test_group_skip_counts_only_members_of_the_group():
    h = _H()
    _log3(h)
    h.assign(1)
    h.poll(1, (0, 1), (1, 2), (2, 3))  # a plain consumer read it all ...
    h.subscribe(2)
    at = h.commit(2, 3)  # ... yet the group's member commits without reading
    assert [ev["indexes"] for ev in check_group_commits(h.ops, "g")[0]["group-skip"]] == [[at]]
    # g's commit says nothing about another group; a commit without a group field is the one group's.
    assert check_group_commits(h.ops, "other")[0] == {}
    at = h.op(2, "commit", {X: 3}, "ok", {X: 3})
    assert [ev["indexes"] for ev in check_group_commits(h.ops, "other")[0]["group-skip"]] == [[at]]


def test_group_skip_seen_in_a_committed_answer():
    # A commit of unknown outcome (info) landed: the coordinator answers 3, no member read 1..2.
    h = _H()
    _log3(h)
    h.subscribe(1)
    h.poll(1, (0, 1))
    h.commit(1, 3, typ="info")
    at = h.committed(5, 3)
    (ev,) = check_group_commits(h.ops, "g")[0]["group-skip"]
    assert ev["indexes"] == [at] and ev["f"] == "committed"


def test_a_members_poll_of_unknown_outcome_still_moved_it():
    h = _H()
    _log3(h)
    h.subscribe(1)
    h.poll(1, (0, 1), (1, 2), (2, 3), typ="info")
    h.subscribe(11)
    h.commit(11, 3)
    assert check_group_commits(h.ops, "g")[0] == {}


def test_group_workload_check_turns_a_group_skip_into_an_invalid_verdict():
    from chaos.checker import check
    from chaos.run import _workload_check, verdict_of
    h = _H()
    _log3(h)
    h.subscribe(1)
    h.poll(1, (0, 1))
    h.commit(1, 3)
    h.assign(7)
    h.poll(7, (0, 1), (1, 2), (2, 3))
    result = check(h.ops)
    assert result["valid"] is True  # HISTORY.md's anomalies do not see it
    workload = make_workload("group", {"group": "g"}, [("t0", 1)])
    notes = []
    _workload_check(workload, h.ops, result, notes)
    assert result["valid"] is False and verdict_of(result) == "group-skip" and notes == []
    assert result["stats"]["anomaly_counts"]["group-skip"] == 1
