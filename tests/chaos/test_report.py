"""report.html is produced from a run folder and every image it references exists."""
from __future__ import annotations

import json
import os
import re

from chaos.checker import check
from chaos.history import HistoryWriter, read_history
from chaos.report import write_report


def _history(path: str) -> None:
    ops = [
        (0, "invoke", "send", [["send", "t0/0", 1]]), (0, "ok", "send", [["send", "t0/0", [0, 1]]]),
        ("nemesis", "info", "kill", {"nodes": ["broker-1"]}),
        (0, "invoke", "send", [["send", "t0/0", 2]]), (0, "ok", "send", [["send", "t0/0", [1, 2]]]),
        (0, "invoke", "send", [["send", "t0/0", 3]]), (0, "ok", "send", [["send", "t0/0", [2, 3]]]),
        ("nemesis", "info", "start", {"nodes": ["broker-1"]}),
        (1, "invoke", "assign", ["t0/0"]), (1, "ok", "assign", ["t0/0"]),
        (1, "invoke", "poll", [["poll"]]), (1, "ok", "poll", [["poll", {"t0/0": [[0, 1], [2, 3]]}]]),
    ]
    with HistoryWriter(path) as w:
        for i, (p, ty, f, v) in enumerate(ops):
            w.append({"time": i * 300_000_000, "process": p, "type": ty, "f": f, "value": v})


def test_report_has_verdict_evidence_and_existing_plots(tmp_path):
    run_dir = str(tmp_path)
    _history(os.path.join(run_dir, "history.jsonl"))
    result = check(read_history(os.path.join(run_dir, "history.jsonl")))
    assert "lost-write" in result["anomaly_types"]  # value 2 at offset 1 was never read
    with open(os.path.join(run_dir, "results.json"), "w") as fh:
        json.dump(result, fh)
    path = write_report(run_dir)
    with open(path, encoding="utf-8") as fh:
        page = fh.read()
    assert "INVALID" in page.split("<h2>", 1)[0]  # the verdict comes first
    assert "lost-write" in page and "t0/0" in page
    images = re.findall(r"<img src='([^']+)'", page)
    assert {"plots/latency.png", "plots/throughput.png", "plots/unseen.png", "plots/key-t0_0.png"} <= set(images)
    for img in images:
        p = os.path.join(run_dir, img)
        with open(p, "rb") as fh:
            assert os.path.getsize(p) > 1000 and fh.read(8) == b"\x89PNG\r\n\x1a\n", img
    assert "kill broker-1" in page  # the fault table


def test_per_key_marks_sit_at_the_op_that_revealed_them(tmp_path):
    from chaos.report import _affected
    path = os.path.join(str(tmp_path), "history.jsonl")
    _history(path)
    result = check(read_history(path))
    marks = _affected(result)["t0/0"]["lost-write"]
    # lost value 2 at offset 1, revealed by the poll's completion (index 11), not placed at the run's end
    assert marks == [(1, 2, 11)]


def test_report_says_first_why_a_run_is_unknown_and_that_its_heal_failed(tmp_path):
    from chaos.run import _caveats, _excuse_unread
    run_dir = str(tmp_path)
    path = os.path.join(run_dir, "history.jsonl")
    with HistoryWriter(path) as w:
        for i, (p, ty, f, v) in enumerate([
                (0, "invoke", "send", [["send", "t0/0", 1]]), (0, "ok", "send", [["send", "t0/0", [0, 1]]]),
                ("nemesis", "info", "heal", {"healed": ["broker-1"], "failed": {"broker-2": "no answer"}})]):
            w.append({"time": i * 300_000_000, "process": p, "type": ty, "f": f, "value": v})
    result = check(read_history(path))
    _excuse_unread(result, _caveats(["heal failed: broker-2 never confirmed (no answer) after 6 attempts"], None))
    with open(os.path.join(run_dir, "results.json"), "w") as fh:
        json.dump(result, fh)
    with open(write_report(run_dir), encoding="utf-8") as fh:
        head = fh.read().split("<h2>", 1)[0]
    assert "UNKNOWN" in head and "Unknown because</b> only unseen" in head
    assert "caveat:</b> heal failed: broker-2 never confirmed" in head


def test_the_group_members_report_shows_each_killed_members_partitions_reassignment(tmp_path):
    from chaos.workloads.group_members import GroupMembersWorkload
    run_dir = str(tmp_path)
    ops = [(0, "invoke", "poll", [["poll"]], {}), (0, "ok", "poll", [["poll", {}]], {"assignment": ["t0/0", "t0/1"]}),
           (0, "invoke", "crash", None, {}),
           (0, "info", "crash", None, {"kill": "SIGKILL", "pid": 1, "member_id": "m-0", "group_instance_id": "g-w0-1",
                                       "assignment": ["t0/0", "t0/1"]}),
           (1, "invoke", "poll", [["poll"]], {}),
           (1, "ok", "poll", [["poll", {"t0/0": [[0, 1]]}]], {"assignment": ["t0/0"]}),
           (1, "invoke", "send", [["send", "t0/0", 2]], {}), (1, "ok", "send", [["send", "t0/0", [1, 2]]], {})]
    with HistoryWriter(os.path.join(run_dir, "history.jsonl")) as w:
        for i, (p, ty, f, v, extra) in enumerate(ops):
            w.append({"time": i * 2_000_000_000, "process": p, "type": ty, "f": f, "value": v, **extra})
    history = read_history(os.path.join(run_dir, "history.jsonl"))
    result = check(history)
    workload = GroupMembersWorkload({"group": "g", "rebalance_allowance_ms": 4000}, [("t0", 2)])
    workload.set_clients({}, {"session.timeout.ms": 3000})
    found, stats = workload.check(history)
    result["stats"]["group-members"] = stats
    with open(os.path.join(run_dir, "results.json"), "w") as fh:
        json.dump(result, fh)
    with open(write_report(run_dir), encoding="utf-8") as fh:
        page = fh.read()
    assert found["not-reassigned"][0]["key"] == "t0/1"  # t0/0 was owned again 4 s after the kill
    assert "Partitions reassigned after member kills" in page and "g-w0-1 (static)" in page
    rows = re.findall(r"<tr><td>6\.0</td><td>3</td><td>g-w0-1 \(static\)</td><td>(t0/\d)</td><td>([^<]*)</td>"
                      r"<td>([^<]*)</td><td>7000</td><td>(\w+)</td></tr>", page)
    assert rows == [("t0/0", "4000", "4000", "ok"), ("t0/1", "-", "-", "LATE")]
    assert "plots/reassignments.png" in re.findall(r"<img src='([^']+)'", page)
    assert os.path.getsize(os.path.join(run_dir, "plots", "reassignments.png")) > 1000
