"""The checker on small hand-written histories, one table row per anomaly.

Each row gives a history that has the anomaly and one that almost has it.
Histories are built from invoke/complete pairs; pair n's completion has
index 2n+1, which is what the evidence must name.
"""

from __future__ import annotations

import json

import pytest

from chaos.checker import ANOMALY_NAMES, check, run_check, tarjan_scc
from chaos.history import History, HistoryReader, HistoryWriter, read_history

X, Y = "t0/0", "t0/1"


# -- history builders: each returns one (invoke, completion) pair ----------


def _pair(p, f, inv_value, typ, value, **extra):
    inv = {"process": p, "type": "invoke", "f": f, "value": inv_value, **extra}
    done = {"process": p, "type": typ, "f": f, "value": value, **extra}
    if typ in ("fail", "info"):
        done["error"] = "timeout"
    return [inv, done]


def send(p, *sends, typ="ok"):
    """sends: (key, offset, value); a fail/info completion repeats the invoke."""
    inv = [["send", k, v] for k, _, v in sends]
    done = [["send", k, [o, v]] for k, o, v in sends] if typ == "ok" else inv
    return _pair(p, "send", inv, typ, done)


def poll(p, reads, typ="ok"):
    """reads: {key: [(offset, value), ...]}"""
    value = [["poll", {k: [list(x) for x in ps] for k, ps in reads.items()}]]
    return _pair(p, "poll", [["poll"]], typ, value)


def txn(p, *mops, typ="ok"):
    """mops: ("send", key, offset, value) or ("poll", {key: [(offset, value)]})."""
    inv, done = [], []
    for m in mops:
        if m[0] == "send":
            inv.append(["send", m[1], m[3]])
            done.append(["send", m[1], [m[2], m[3]]])
        else:
            inv.append(["poll"])
            done.append(["poll", {k: [list(x) for x in ps] for k, ps in m[1].items()}])
    return _pair(p, "txn", inv, typ, done if typ == "ok" else inv)


def assign(p, keys):
    return _pair(p, "assign", keys, "ok", keys)


def subscribe(p, keys):
    return _pair(p, "subscribe", keys, "ok", keys)


def commit(p, offsets, typ="ok", **extra):
    return _pair(p, "commit", offsets, typ, offsets, **extra)


def committed(p, keys, result, **extra):
    return _pair(p, "committed", keys, "ok", result, **extra)


def crash(p):
    return _pair(p, "crash", None, "info", None)


def hist(*pairs):
    ops = [dict(op) for pair in pairs for op in pair]
    for i, op in enumerate(ops):
        op["index"] = i
        op["time"] = i * 1000
    return ops


def c(n):
    """Index of the completion of pair n."""
    return 2 * n + 1


def read_all(p, log):
    """A final poll of everything, so that no unrelated `unseen` shows up."""
    return poll(p, log)


# -- one row per anomaly: (name, history with it, expected indexes, history almost with it)

XY3 = {X: [(0, 1), (1, 2), (2, 3)]}

CASES = [
    ("lost-write",
     hist(send(0, (X, 0, 1)), send(0, (X, 1, 2)), poll(1, {X: [(1, 2)]})),
     [c(0), c(2)],
     hist(send(0, (X, 0, 1)), send(0, (X, 1, 2)), poll(1, {X: [(0, 1)]}))),
    ("unseen",
     hist(send(0, (X, 0, 1))),
     [c(0)],
     hist(send(0, (X, 0, 1)), poll(1, {X: [(0, 1)]}))),
    ("duplicate",
     hist(send(0, (X, 0, 1)), poll(1, {X: [(0, 1)]}), poll(2, {X: [(1, 1)]})),
     [c(0), c(1), c(2)],
     hist(send(0, (X, 0, 1)), poll(1, {X: [(0, 1)]}), poll(2, {X: [(0, 1)]}))),
    ("inconsistent-offsets",
     hist(send(0, (X, 0, 1)), send(1, (X, 0, 2)), poll(2, {X: [(0, 1)]}), poll(3, {X: [(0, 2)]})),
     [c(0), c(1), c(2), c(3)],
     hist(send(0, (X, 0, 1)), send(1, (X, 1, 2)), poll(2, {X: [(0, 1), (1, 2)]}))),
    ("G1a",
     hist(send(0, (X, None, 1), typ="fail"), poll(1, {X: [(0, 1)]})),
     [c(0), c(1)],
     # A failed op's poll reading it is still only a failed reader.
     hist(send(0, (X, None, 1), typ="fail"), poll(1, {X: [(0, 1)]}, typ="fail"))),
    ("precommitted-read",
     hist(txn(0, ("send", X, 0, 1), ("poll", {X: [(0, 1)]}))),
     [c(0)],
     hist(send(1, (X, 0, 1)), txn(0, ("send", X, 1, 2), ("poll", {X: [(0, 1)]})),
          poll(2, {X: [(0, 1), (1, 2)]}))),
    ("G1c",
     hist(txn(0, ("send", X, 0, 1), ("poll", {Y: [(0, 1)]})),
          txn(1, ("send", Y, 0, 1), ("poll", {X: [(0, 1)]}))),
     [c(0), c(1)],
     hist(txn(0, ("send", X, 0, 1), ("poll", {Y: [(0, 1)]})),
          txn(1, ("send", Y, 0, 1)), poll(2, {X: [(0, 1)]}))),
    ("G1c-ww",
     hist(txn(0, ("send", X, 0, 1), ("poll", {Y: [(0, 1)]})),
          txn(1, ("send", X, 1, 2), ("send", Y, 0, 1)),
          poll(2, {X: [(0, 1), (1, 2)]})),
     [c(0), c(1)],
     hist(txn(0, ("send", X, 0, 1)),
          txn(1, ("send", X, 1, 2), ("send", Y, 0, 1)),
          poll(2, {X: [(0, 1), (1, 2)], Y: [(0, 1)]}))),
    ("G0",
     hist(txn(0, ("send", X, 0, 1), ("send", Y, 1, 2)),
          txn(1, ("send", X, 1, 2), ("send", Y, 0, 1)),
          poll(2, {X: [(0, 1), (1, 2)], Y: [(0, 1), (1, 2)]})),
     [c(0), c(1)],
     hist(txn(0, ("send", X, 0, 1), ("send", Y, 1, 2)),
          txn(1, ("send", X, 1, 2), ("send", Y, 2, 3)),
          poll(2, {X: [(0, 1), (1, 2)], Y: [(1, 2), (2, 3)]}))),
    ("int-send-skip",
     hist(send(0, (X, 0, 1), (X, 2, 3)), send(1, (X, 1, 2)), poll(2, XY3)),
     [c(0)],
     hist(send(0, (X, 0, 1), (X, 1, 2)), send(1, (X, 2, 3)), poll(2, XY3))),
    ("int-nonmonotonic-send",
     hist(send(0, (X, 1, 2), (X, 0, 1)), poll(2, {X: [(0, 1), (1, 2)]})),
     [c(0)],
     hist(send(0, (X, 0, 1), (X, 1, 2)), poll(2, {X: [(0, 1), (1, 2)]}))),
    ("nonmonotonic-send",
     hist(send(0, (X, 1, 2)), send(0, (X, 0, 1)), poll(2, {X: [(0, 1), (1, 2)]})),
     [c(0), c(1)],
     hist(send(0, (X, 1, 2)), send(1, (X, 0, 1)), poll(2, {X: [(0, 1), (1, 2)]}))),
    ("poll-skip",
     hist(send(0, (X, 0, 1), (X, 1, 2), (X, 2, 3)), assign(1, [X]),
          poll(1, {X: [(0, 1)]}), poll(1, {X: [(2, 3)]}), poll(2, XY3)),
     [c(2), c(3)],
     hist(send(0, (X, 0, 1), (X, 1, 2), (X, 2, 3)), assign(1, [X]),
          poll(1, {X: [(0, 1)]}), poll(1, {X: [(1, 2)]}), poll(2, XY3))),
    ("nonmonotonic-poll",
     hist(send(0, (X, 0, 1), (X, 1, 2), (X, 2, 3)), assign(1, [X]),
          poll(1, {X: [(0, 1), (1, 2)]}), poll(1, {X: [(1, 2), (2, 3)]})),
     [c(2), c(3)],
     hist(send(0, (X, 0, 1), (X, 1, 2), (X, 2, 3)), assign(1, [X]),
          poll(1, {X: [(0, 1), (1, 2)]}), poll(1, {X: [(2, 3)]}))),
    ("int-poll-skip",
     hist(send(0, (X, 0, 1), (X, 1, 2), (X, 2, 3)), poll(1, {X: [(0, 1), (2, 3)]}), poll(2, XY3)),
     [c(1)],
     hist(send(0, (X, 0, 1), (X, 1, 2), (X, 2, 3)), poll(1, {X: [(0, 1), (1, 2)]}), poll(2, XY3))),
    ("int-nonmonotonic-poll",
     hist(send(0, (X, 0, 1), (X, 1, 2)), poll(1, {X: [(1, 2), (0, 1)]})),
     [c(1)],
     hist(send(0, (X, 0, 1), (X, 1, 2)), poll(1, {X: [(0, 1), (1, 2)]}))),
    ("offset-regression",
     hist(commit(0, {X: 5}), committed(1, [X], {X: 3})),
     [c(0), c(1)],
     hist(commit(0, {X: 5}), committed(1, [X], {X: 5}))),
]


def _indexes(evidence):
    return sorted({i for ev in evidence for i in ev["indexes"]})


def test_every_anomaly_name_has_a_case():
    assert sorted(name for name, *_ in CASES) == sorted(ANOMALY_NAMES)


@pytest.mark.parametrize("name,history,indexes,almost", CASES, ids=[c[0] for c in CASES])
def test_anomaly_reported_with_evidence(name, history, indexes, almost):
    result = check(history)
    assert name in result["anomaly_types"], result
    evidence = result["anomalies"][name]
    assert evidence and all("indexes" in ev for ev in evidence)
    assert _indexes(evidence) == indexes
    assert result["anomaly_types"] == sorted(result["anomalies"])
    assert result["stats"]["anomaly_counts"][name] == len(evidence)


@pytest.mark.parametrize("name,history,indexes,almost", CASES, ids=[c[0] for c in CASES])
def test_almost_anomaly_not_reported(name, history, indexes, almost):
    result = check(almost)
    assert name not in result["anomaly_types"], result["anomalies"].get(name)


@pytest.mark.parametrize("name,history,indexes,almost", CASES, ids=[c[0] for c in CASES])
def test_evidence_is_json(name, history, indexes, almost):
    result = check(history)
    assert json.loads(json.dumps(result)) == result


# -- evidence details


def test_lost_write_names_key_offsets_values():
    ev = check(CASES[0][1])["anomalies"]["lost-write"][0]
    assert ev["key"] == X and ev["value"] == 1 and ev["offset"] == 0
    assert ev["max_read_value"] == 2 and ev["max_read_offset"] == 1
    assert ev["writer"] == c(0) and ev["max_read"] == c(2)


def test_lost_write_is_also_unseen_but_unseen_alone_is_not_lost():
    lost = check(CASES[0][1])
    assert lost["stats"]["lost_count"] == 1 and lost["stats"]["unseen_count"] == 1
    late = check(hist(send(0, (X, 0, 1)), send(0, (X, 1, 2)), poll(1, {X: [(0, 1)]})))
    assert late["anomaly_types"] == ["unseen"]
    assert late["anomalies"]["unseen"] == [{"key": X, "value": 2, "offset": 1, "indexes": [c(1)]}]


def test_sparse_offsets_reason_by_dense_index():
    # Offsets 1 and 3 are transaction markers: reading 0 then 2 skips nothing.
    h = hist(txn(0, ("send", X, 0, 1)), txn(0, ("send", X, 2, 2)), assign(1, [X]),
             poll(1, {X: [(0, 1), (2, 2)]}), txn(0, ("send", X, 4, 3)), poll(1, {X: [(4, 3)]}))
    result = check(h)
    assert result["valid"] is True, result["anomalies"]


def test_cycle_evidence_has_steps():
    ev = check(CASES[6][1])["anomalies"]["G1c"][0]
    assert {s["type"] for s in ev["steps"]} == {"wr"}
    assert ev["cycle"][0] == ev["cycle"][-1]
    assert {(s["key"], s["value"]) for s in ev["steps"]} == {(X, 1), (Y, 1)}
    ev = check(CASES[7][1])["anomalies"]["G1c-ww"][0]
    assert {s["type"] for s in ev["steps"]} == {"wr", "ww"}


def test_long_cycle_is_found():
    # T0 -> T1 -> ... -> T999 -> T0 by write-read edges over distinct keys.
    n = 1000
    pairs = [txn(i, ("send", f"k{i}", 0, 1), ("poll", {f"k{(i - 1) % n}": [(0, 1)]})) for i in range(n)]
    result = check(hist(*pairs))
    assert result["anomaly_types"] == ["G1c"]
    assert len(result["anomalies"]["G1c"][0]["steps"]) == n


def test_tarjan_is_iterative_and_finds_components():
    n = 200_000
    adj = [[i + 1] for i in range(n - 1)] + [[0]]
    (comp,) = tarjan_scc(n, adj)
    assert len(comp) == n
    assert sorted(map(sorted, tarjan_scc(5, [[1], [0], [3], [4], [2]]))) == [[0, 1], [2, 3, 4]]
    assert tarjan_scc(3, [[1], [2], []]) == []


def test_offset_regression_explained_by_a_later_commit_or_other_group():
    later = hist(commit(0, {X: 5}), commit(2, {X: 3}), committed(1, [X], {X: 3}))
    assert "offset-regression" not in check(later)["anomaly_types"]
    other_group = hist(commit(0, {X: 5}, group="a"), committed(1, [X], {X: 3}, group="b"))
    assert "offset-regression" not in check(other_group)["anomaly_types"]
    failed = hist(commit(0, {X: 5}, typ="fail"), committed(1, [X], {X: 3}))
    assert "offset-regression" not in check(failed)["anomaly_types"]
    lost = hist(commit(0, {X: 5}), committed(1, [X], {X: None}))
    assert "offset-regression" in check(lost)["anomaly_types"]


# -- Jepsen's evidence rules for info / fail


def test_info_send_later_read_counts_as_written():
    h = hist(send(0, (X, None, 1), typ="info"), poll(1, {X: [(0, 1)]}))
    result = check(h)
    assert result["valid"] is True, result["anomalies"]
    assert result["stats"]["values_written"] == 1
    assert result["stats"]["values_acknowledged"] == 0


def test_info_send_never_read_is_neither_lost_nor_unseen():
    # An info poll shows X=1 at offset 0, below the ok read of offset 1.
    h = hist(send(0, (X, None, 1), typ="info"), send(2, (X, 1, 2)),
             poll(3, {X: [(0, 1)]}, typ="info"), poll(1, {X: [(1, 2)]}))
    result = check(h)
    assert "lost-write" not in result["anomaly_types"]
    assert "unseen" not in result["anomaly_types"]


def test_info_send_proven_by_another_key_makes_its_unread_value_lost():
    # The info op's Y value was read ok, so its X value was written too; an
    # info poll puts X=1 at offset 0, below the ok read of X at offset 1.
    h = hist(send(0, (X, None, 1), (Y, None, 1), typ="info"), send(2, (X, 1, 2)),
             poll(3, {X: [(0, 1)]}, typ="info"), poll(1, {X: [(1, 2)], Y: [(0, 1)]}))
    result = check(h)
    assert result["anomaly_types"] == ["lost-write"]
    assert result["anomalies"]["lost-write"][0]["writer"] == c(0)


@pytest.mark.parametrize("typ", ["info", "fail"])
def test_poll_inside_info_or_fail_op_is_evidence(typ):
    h = hist(send(0, (X, 0, 1)), poll(1, {X: [(0, 2)]}, typ=typ), poll(2, {X: [(0, 1)]}))
    result = check(h)
    assert result["anomaly_types"] == ["inconsistent-offsets"]
    assert result["anomalies"]["inconsistent-offsets"][0]["indexes"] == [c(0), c(1), c(2)]


@pytest.mark.parametrize("typ", ["info", "fail"])
def test_polls_of_unknown_or_failed_ops_are_not_ok_reads(typ):
    # Only ok reads satisfy unseen.
    h = hist(send(0, (X, 0, 1)), poll(1, {X: [(0, 1)]}, typ=typ))
    assert check(h)["anomaly_types"] == ["unseen"]


def test_fail_send_is_not_written():
    h = hist(send(0, (X, None, 1), typ="fail"))
    result = check(h)
    assert result["valid"] is True and result["stats"]["values_written"] == 0


# -- process order never spans an info


def test_renumbered_process_does_not_chain_poll_order():
    h = hist(send(0, (X, 0, 1), (X, 1, 2), (X, 2, 3)), assign(1, [X]), poll(1, {X: [(0, 1)]}),
             poll(1, {}, typ="info"), assign(11, [X]), poll(11, {X: [(2, 3)]}), poll(2, XY3))
    assert check(h)["valid"] is True


def test_reused_process_number_after_info_does_not_chain():
    # A history that forgets to renumber: the info still cuts process order.
    polls = hist(send(0, (X, 0, 1), (X, 1, 2), (X, 2, 3)), assign(1, [X]), poll(1, {X: [(0, 1)]}),
                 crash(1), poll(1, {X: [(2, 3)]}), poll(2, XY3))
    assert check(polls)["valid"] is True
    sends = hist(send(0, (X, 1, 2)), send(0, (X, None, 9), typ="info"), send(0, (X, 0, 1)),
                 poll(2, {X: [(0, 1), (1, 2)]}))
    assert "nonmonotonic-send" not in check(sends)["anomaly_types"]


def test_assign_between_polls_resets_poll_order():
    h = hist(send(0, (X, 0, 1), (X, 1, 2), (X, 2, 3)), assign(1, [X]), poll(1, {X: [(0, 1)]}),
             assign(1, [X]), poll(1, {X: [(2, 3)]}), poll(2, XY3))
    assert check(h)["valid"] is True


# -- verdicts


def test_verdict_valid():
    result = check(hist(send(0, (X, 0, 1)), poll(1, {X: [(0, 1)]})))
    assert result == {**result, "valid": True, "anomaly_types": [], "anomalies": {}}
    assert result["stats"]["keys"] == 1 and result["stats"]["values_read"] == 1
    assert result["stats"]["ops_by_f"]["send"] == {"invoke": 1, "ok": 1}
    assert isinstance(result["stats"]["check_time_ms"], int)


def test_verdict_invalid():
    assert check(CASES[0][1])["valid"] is False


@pytest.mark.parametrize("name", ["G1c-ww", "G0", "int-send-skip"])
def test_allowed_anomalies_do_not_invalidate(name):
    (_, history, _, _), = [row for row in CASES if row[0] == name]
    result = check(history)
    assert result["anomaly_types"] == [name] and result["valid"] is True


@pytest.mark.parametrize("name", ["poll-skip", "nonmonotonic-poll"])
def test_poll_order_allowed_only_under_subscribe(name):
    (_, history, _, _), = [row for row in CASES if row[0] == name]
    assert check(history)["valid"] is False  # under assign
    subscribed = [dict(op, f="subscribe") if op["f"] == "assign" else op for op in history]
    result = check(subscribed)
    assert result["anomaly_types"] == [name] and result["valid"] is True
    assert all(ev["subscribe"] for ev in result["anomalies"][name])
    # A later assign (no subscribe since) makes it fatal again.
    reassigned = hist(subscribe(1, [X]), assign(1, [X]))
    shifted = [dict(op, index=op["index"] + 4) for op in subscribed if op["f"] != "subscribe"]
    assert check(reassigned + shifted)["valid"] is False


@pytest.mark.parametrize("history", [[], History(), hist(assign(0, [X]))[:1]])
def test_verdict_unknown_when_empty(history):
    assert check(history)["valid"] == "unknown"


def test_verdict_unknown_when_truncated():
    h = History(hist(send(0, (X, 0, 1)), poll(1, {X: [(0, 1)]})))
    h.truncated = True
    result = check(h)
    assert result["valid"] == "unknown" and result["stats"]["truncated"] is True


@pytest.mark.parametrize("garbage", [[None], 42, [{"type": "ok", "f": "send", "process": 0, "value": [["send"]]}]])
def test_checker_never_raises(garbage):
    result = check(garbage)
    assert result["valid"] in (True, False, "unknown")
    if result["valid"] == "unknown":
        assert "error" in result["stats"] or result["anomaly_types"] == []


def test_crash_inside_becomes_unknown_with_error():
    result = check([None])
    assert result["valid"] == "unknown" and "AttributeError" in result["stats"]["error"]
    assert set(result) == {"valid", "anomaly_types", "anomalies", "stats"}


# -- files, exit codes


def _write(path, ops):
    with HistoryWriter(str(path)) as w:
        return [w.append(op) for op in ops]


def test_writer_assigns_indexes_and_reader_round_trips(tmp_path):
    path = tmp_path / "h.jsonl"
    ops = hist(send(0, (X, 0, 1)), poll(1, {X: [(0, 1)]}))
    for op in ops:
        op["index"] = 99
    written = _write(path, ops)
    assert [op["index"] for op in written] == [0, 1, 2, 3]
    back = read_history(str(path))
    assert back == written and back.truncated is False
    assert list(back[0])[:6] == ["index", "time", "process", "type", "f", "value"]


def test_reader_marks_partial_last_line_truncated(tmp_path):
    path = tmp_path / "h.jsonl"
    _write(path, hist(send(0, (X, 0, 1))))
    with open(path, "a") as fh:
        fh.write('{"index": 2, "time": 5, "proc')
    back = read_history(str(path))
    assert back.truncated is True and len(back) == 2
    assert check(back)["valid"] == "unknown"


def test_reader_rejects_corrupt_middle_line(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text('{"index": 0}\nnot json\n{"index": 1}\n')
    with pytest.raises(ValueError, match=":2:"):
        read_history(str(path))


@pytest.mark.parametrize("ops,code", [
    (hist(send(0, (X, 0, 1)), poll(1, {X: [(0, 1)]})), 0),
    (CASES[0][1], 1),
    ([], 2),
])
def test_run_check_exit_codes(tmp_path, capsys, ops, code):
    path = tmp_path / "h.jsonl"
    _write(path, ops)
    assert run_check(str(path), as_json=False) == code
    out = capsys.readouterr().out
    assert out.split("\n")[0] == {0: "VALID", 1: "INVALID", 2: "UNKNOWN"}[code]
    assert run_check(str(path), as_json=True) == code
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"valid", "anomaly_types", "anomalies", "stats"}


def test_run_check_missing_file_is_unknown(tmp_path, capsys):
    assert run_check(str(tmp_path / "nope.jsonl"), as_json=False) == 2
    assert capsys.readouterr().out.startswith("UNKNOWN")


def test_reader_skips_blank_lines(tmp_path):
    path = tmp_path / "h.jsonl"
    ops = hist(send(0, (X, 0, 1)), poll(1, {X: [(0, 1)]}))
    path.write_text(json.dumps(ops[0]) + "\n\n" + "\n".join(json.dumps(op) for op in ops[1:]) + "\n\n")
    back = read_history(str(path))
    assert back == ops and back.truncated is False


def test_streamed_check_equals_list_check(tmp_path):
    # check(HistoryReader) scans ops as they are read: same verdict, evidence and stats as the list.
    path = tmp_path / "h.jsonl"
    for _name, ops, *_ in CASES[:6]:
        _write(path, ops)
        streamed, listed = check(HistoryReader(str(path))), check(read_history(str(path)))
        for r in (streamed, listed):
            r["stats"].pop("check_time_ms")
        assert streamed == listed and streamed["stats"]["ops"] == len(ops)


def test_streamed_check_partial_last_line_is_unknown(tmp_path):
    path = tmp_path / "h.jsonl"
    _write(path, hist(send(0, (X, 0, 1)), poll(1, {X: [(0, 1)]})))
    with open(path, "a") as fh:
        fh.write('{"index": 4, "time": 5, "proc')
    result = check(HistoryReader(str(path)))
    assert result["valid"] == "unknown" and result["stats"]["truncated"] is True
    assert result["stats"]["ops"] == 4


def test_streamed_check_corrupt_middle_line_names_it(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text('{"index": 0}\n[1, 2]\n{"index": 1}\n')
    result = check(HistoryReader(str(path)))
    assert result["valid"] == "unknown" and ":2: not a JSON object" in result["stats"]["error"]


@pytest.mark.parametrize("seed", [1, 2])
def test_benchmark_history_is_valid(tmp_path, seed):
    from chaos.bench_checker import generate

    path = str(tmp_path / "bench.jsonl")
    n = generate(path, 5000, seed)
    result = check(read_history(path))
    assert result["valid"] is True, result["anomaly_types"]
    assert result["stats"]["ops"] == n >= 5000


# -- duplicates at distinct offsets do not misplace order checks


def test_duplicate_at_distinct_offsets_is_not_a_skip_or_regression():
    # Value 2 was appended twice (a retried batch without idempotence): offsets 1 and 3.
    # Reading straight through 0..4 is in order; only `duplicate` may be reported.
    log = [(0, 1), (1, 2), (2, 3), (3, 2), (4, 4)]
    h = hist(send(0, (X, 0, 1), (X, 1, 2), (X, 2, 3)), send(3, (X, 4, 4)), assign(1, [X]),
             poll(1, {X: log[:4]}), poll(1, {X: log[4:]}), assign(2, [X]), poll(2, {X: log[:3]}),
             poll(2, {X: log[3:]}))
    result = check(h)
    assert result["anomaly_types"] == ["duplicate"], result["anomalies"]
    assert result["anomalies"]["duplicate"][0]["offsets"] == [1, 3]


def test_real_skip_next_to_a_duplicate_is_still_found():
    log = [(0, 1), (1, 2), (2, 3), (3, 2), (4, 4)]
    h = hist(send(0, (X, 0, 1), (X, 1, 2), (X, 2, 3), (X, 4, 4)), assign(1, [X]),
             poll(1, {X: [log[0], log[1], log[3], log[4]]}), poll(2, {X: log}))
    assert "int-poll-skip" in check(h)["anomaly_types"]


def test_poll_inside_an_aborted_txn_advances_the_process_read_order():
    # Process 1's aborted transaction (fail) polled offsets 0..1; its next ok poll starts at 2.
    aborted = _pair(1, "txn", [["poll"]], "fail", [["poll", {X: [[0, 1], [1, 2]]}]])
    h = hist(send(0, (X, 0, 1), (X, 1, 2), (X, 2, 3)), assign(1, [X]), aborted,
             poll(1, {X: [(2, 3)]}), poll(2, {X: [(0, 1), (1, 2), (2, 3)]}))
    result = check(h)
    assert result["valid"] is True, result["anomalies"]
    # ... and an aborted transaction's poll that skips is still a skip.
    skipping = _pair(1, "txn", [["poll"]], "fail", [["poll", {X: [[0, 1]]}]])
    h = hist(send(0, (X, 0, 1), (X, 1, 2), (X, 2, 3)), assign(1, [X]), skipping,
             poll(1, {X: [(2, 3)]}), poll(2, {X: [(0, 1), (1, 2), (2, 3)]}))
    assert "poll-skip" in check(h)["anomaly_types"]


# -- commits: keys left out, and the group on the invoke, the completion or both


def test_committed_answer_without_a_committed_key_is_an_offset_regression():
    # The coordinator forgot X: the answer names only Y.
    h = hist(commit(0, {X: 5, Y: 2}), committed(1, [X, Y], {Y: 2}))
    result = check(h)
    assert result["anomaly_types"] == ["offset-regression"]
    (ev,) = result["anomalies"]["offset-regression"]
    assert (ev["key"], ev["offset"], ev["committed_offset"], ev["missing"]) == (X, None, 5, True)
    assert ev["indexes"] == [c(0), c(1)]
    # A key never committed may be left out.
    assert check(hist(commit(0, {Y: 2}), committed(1, [X, Y], {Y: 2})))["valid"] is True


def _split(pair, invoke_group, done_group):
    inv, done = (dict(op) for op in pair)
    for op, g in ((inv, invoke_group), (done, done_group)):
        op.pop("group", None)
        if g is not None:
            op["group"] = g
    return [inv, done]


@pytest.mark.parametrize("commit_on", ["invoke", "completion", "both"])
@pytest.mark.parametrize("read_on", ["invoke", "completion", "both"])
def test_group_on_invoke_completion_or_both(commit_on, read_on):
    def where(on):
        return ("g" if on in ("invoke", "both") else None), ("g" if on in ("completion", "both") else None)
    regressed = hist(_split(commit(0, {X: 5}), *where(commit_on)),
                     _split(committed(1, [X], {X: 3}), *where(read_on)))
    assert check(regressed)["anomaly_types"] == ["offset-regression"]
    assert check(regressed)["anomalies"]["offset-regression"][0]["group"] == "g"
    # The same ops in another group, or in the default group, are not compared with g's.
    other = hist(_split(commit(0, {X: 5}), *where(commit_on)), committed(1, [X], {X: 3}, group="h"))
    assert check(other)["valid"] is True
    default = hist(_split(commit(0, {X: 5}), *where(commit_on)), committed(1, [X], {X: 3}))
    assert check(default)["valid"] is True


def test_a_lower_commit_still_open_at_the_end_explains_a_lower_committed_read():
    # Process 2's commit of 3 (group only on its invoke) never completed: it may have landed.
    open_commit = [{"process": 2, "type": "invoke", "f": "commit", "value": {X: 3}, "group": "g"}]
    h = hist(commit(0, {X: 5}, group="g"), open_commit, committed(1, [X], {X: 3}, group="g"))
    assert "offset-regression" not in check(h)["anomaly_types"]


def test_commit_completing_after_the_committed_read_began_is_not_required():
    inv_read = {"process": 1, "type": "invoke", "f": "committed", "value": [X], "group": "g"}
    done_read = {"process": 1, "type": "ok", "f": "committed", "value": {X: None}, "group": "g"}
    h = hist([inv_read], commit(0, {X: 5}, group="g"), [done_read])
    assert check(h)["valid"] is True


# -- HISTORY.md precisions: poll order through fail/info ops, G0 only between transactions


@pytest.mark.parametrize("typ", ["info", "fail"])
def test_poll_order_counts_reads_inside_fail_and_info_polls(typ):
    # Process 1 read 0 in an ok poll, then 1 inside a fail/info poll: its consumer moved to 2.
    h = hist(send(0, (X, 0, 1), (X, 1, 2), (X, 2, 3)), assign(1, [X]), poll(1, {X: [(0, 1)]}),
             poll(1, {X: [(1, 2)]}, typ=typ), poll(2, XY3))
    assert check(h)["valid"] is True
    # ... and a fail/info poll that jumps over offset 1 is a skip, with that op as evidence.
    h = hist(send(0, (X, 0, 1), (X, 1, 2), (X, 2, 3)), assign(1, [X]), poll(1, {X: [(0, 1)]}),
             poll(1, {X: [(2, 3)]}, typ=typ), poll(2, XY3))
    result = check(h)
    assert result["anomaly_types"] == ["poll-skip"]
    assert result["anomalies"]["poll-skip"][0]["indexes"] == [c(2), c(3)]


def test_g0_is_only_between_transactions():
    # The same write-write cycle as G0's row, made by plain multi-key sends: no transactions, no G0.
    plain = hist(send(0, (X, 0, 1), (Y, 1, 2)), send(1, (X, 1, 2), (Y, 0, 1)),
                 poll(2, {X: [(0, 1), (1, 2)], Y: [(0, 1), (1, 2)]}))
    assert "G0" not in check(plain)["anomaly_types"]
    # One transaction and one plain send: still no cycle between transactions.
    mixed = hist(txn(0, ("send", X, 0, 1), ("send", Y, 1, 2)), send(1, (X, 1, 2), (Y, 0, 1)),
                 poll(2, {X: [(0, 1), (1, 2)], Y: [(0, 1), (1, 2)]}))
    assert "G0" not in check(mixed)["anomaly_types"]
    # Two transactions whose writes interleave through a plain writer's value are still ordered.
    through = hist(txn(0, ("send", X, 0, 1), ("send", Y, 2, 3)), send(3, (X, 1, 2)),
                   txn(1, ("send", X, 2, 3), ("send", Y, 0, 1)), send(4, (Y, 1, 2)),
                   poll(2, {X: [(0, 1), (1, 2), (2, 3)], Y: [(0, 1), (1, 2), (2, 3)]}))
    assert check(through)["anomaly_types"] == ["G0"]
    assert check(through)["anomalies"]["G0"][0]["indexes"] == [c(0), c(2)]
