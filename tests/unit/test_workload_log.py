"""The log workload's pure parts: generator, key naming, poll results; the report's series."""
from __future__ import annotations

import random
from collections import namedtuple

import pytest

from chaos.report import fault_windows, unseen_series
from chaos.workloads import key_tp, make_keys, tp_key
from chaos.workloads.log import LogGenerator, records_by_key

KEYS = make_keys([("t0", 2), ("t1", 1)])


def test_keys_are_topic_slash_partition():
    assert KEYS == ["t0/0", "t0/1", "t1/0"]
    assert key_tp("t0/1") == ("t0", 1)
    assert key_tp("my/topic/3") == ("my/topic", 3)
    assert tp_key("t1", 0) == "t1/0"


@pytest.mark.parametrize("bad", ["t0", "t0/x", "/1", ""])
def test_bad_key_is_named(bad):
    with pytest.raises(ValueError, match="topic/partition"):
        key_tp(bad)


def test_no_keys_is_an_error():
    with pytest.raises(ValueError):
        make_keys([])
    with pytest.raises(ValueError):
        LogGenerator([], random.Random(1))


def test_every_new_process_starts_with_assign():
    g = LogGenerator(KEYS, random.Random(1))
    for p in (0, 1, 7):
        f, value, extra = g.next_op(p)
        assert f == "assign"
        assert value and set(value) <= set(KEYS)
        assert extra in ({}, {"seek_to_beginning": True})


def test_sent_values_are_unique_and_increasing_per_key():
    g = LogGenerator(KEYS, random.Random(2), max_sends=3)
    g.next_op(0)
    per_key: dict[str, list[int]] = {}
    for _ in range(2000):
        f, value, _ = g.next_op(0)
        if f == "send":
            assert 1 <= len(value) <= 3
            for tag, k, v in value:
                assert tag == "send" and k in KEYS
                per_key.setdefault(k, []).append(v)
    for k, vs in per_key.items():
        assert vs == list(range(1, len(vs) + 1)), k


def test_same_seed_same_ops():
    a, b = LogGenerator(KEYS, random.Random(5)), LogGenerator(KEYS, random.Random(5))
    assert [a.next_op(i % 3) for i in range(300)] == [b.next_op(i % 3) for i in range(300)]


def test_weights_choose_the_mix():
    g = LogGenerator(KEYS, random.Random(3), weights={"send": 1, "poll": 0, "assign": 0, "crash": 0})
    g.next_op(0)
    assert {g.next_op(0)[0] for _ in range(200)} == {"send"}
    g = LogGenerator(KEYS, random.Random(3), weights={"send": 0, "poll": 1, "assign": 0, "crash": 1})
    g.next_op(0)
    fs = [g.next_op(0) for _ in range(400)]
    assert {f for f, _, _ in fs} == {"poll", "crash"}
    assert all(v == [["poll"]] for f, v, _ in fs if f == "poll")
    assert all(v is None for f, v, _ in fs if f == "crash")


def test_unknown_weight_is_named():
    with pytest.raises(ValueError, match="txn"):
        LogGenerator(KEYS, random.Random(1), weights={"txn": 1})


TP = namedtuple("TP", "topic partition")
Rec = namedtuple("Rec", "offset value")


def test_records_by_key_is_the_history_poll_shape():
    out = records_by_key({TP("t0", 1): [Rec(4, b"10"), Rec(5, b"11")], TP("t1", 0): [Rec(0, b"x")]})
    assert out == {"t0/1": [[4, 10], [5, 11]], "t1/0": [[0, "x"]]}


def _op(t_s, process, type_, f, value):
    return {"time": int(t_s * 1e9), "process": process, "type": type_, "f": f, "value": value}


def test_fault_windows_close_on_their_undo_or_heal_or_the_end():
    h = [
        _op(1, "nemesis", "info", "kill", {"nodes": ["broker-1"]}),
        _op(2, "nemesis", "info", "pause", {"nodes": ["broker-2"]}),
        _op(3, "nemesis", "info", "start", {"nodes": ["broker-1"]}),
        _op(5, "nemesis", "info", "heal", None),
        _op(6, "nemesis", "info", "partition", {"groups": [["a"], ["b"]]}),
        _op(9, 0, "ok", "poll", [["poll", {}]]),
    ]
    assert fault_windows(h) == [(1.0, 3.0, "kill broker-1"), (2.0, 5.0, "pause broker-2"),
                                (6.0, 9.0, "partition a | b")]


def test_unseen_series_counts_acked_until_first_read():
    h = [
        _op(0.5, 0, "ok", "send", [["send", "k", [0, 1]], ["send", "k", [1, 2]]]),
        _op(1.5, 1, "ok", "poll", [["poll", {"k": [[0, 1]]}]]),
        _op(2.5, 1, "ok", "poll", [["poll", {"k": [[1, 2]]}]]),
        _op(3.5, 0, "info", "send", [["send", "k", 3]]),  # not acknowledged: never counted
    ]
    xs, ys = unseen_series(h)
    assert xs[:5] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert ys[:5] == [0, 2, 1, 0, 0]


def test_overlapping_fault_windows_close_only_on_their_own_undo():
    h = [
        _op(1, "nemesis", "info", "kill", {"nodes": ["coordinator"]}),
        _op(2, "nemesis", "info", "kill", {"nodes": ["broker-2"]}),
        _op(3, "nemesis", "info", "start", {"nodes": ["broker-2"]}),
        _op(3.5, "nemesis", "info", "partition", {"groups": [["broker-1"], ["broker-2", "broker-3"]]}),
        _op(4, "nemesis", "info", "clock", {"nodes": ["coordinator"], "offset_ms": 5000}),
        _op(4.5, "nemesis", "info", "heal", {"of": "partition"}),
        _op(5, "nemesis", "info", "start", {"nodes": ["coordinator"]}),
        _op(7, "nemesis", "info", "heal", None),
    ]
    assert fault_windows(h) == [(1.0, 5.0, "kill coordinator"), (2.0, 3.0, "kill broker-2"),
                                (3.5, 4.5, "partition broker-1 | broker-2,broker-3"),
                                (4.0, 7.0, "clock coordinator")]
