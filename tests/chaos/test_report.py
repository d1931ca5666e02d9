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
    page = open(path, encoding="utf-8").read()
    assert "INVALID" in page.split("<h2>", 1)[0]  # the verdict comes first
    assert "lost-write" in page and "t0/0" in page
    images = re.findall(r"<img src='([^']+)'", page)
    assert {"plots/latency.png", "plots/throughput.png", "plots/unseen.png", "plots/key-t0_0.png"} <= set(images)
    for img in images:
        p = os.path.join(run_dir, img)
        assert os.path.getsize(p) > 1000 and open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n", img
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
