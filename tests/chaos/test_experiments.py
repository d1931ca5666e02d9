"""Short versions of the named experiments: a real cluster, the workload, faults, the checker.

Each run keeps its folder (history.jsonl, experiment.yaml with the seed, node logs,
report.html) under pytest's tmp dir and prints the command that replays it.
"""
from __future__ import annotations

import json
import os

import pytest

from chaos.run import load_experiment, run_experiment


def _run(name: str, seed: int, duration_s: float, tmp_path):
    exp = load_experiment(name)
    out = run_experiment(exp, seed=seed, duration_s=duration_s, out_dir=str(tmp_path / name), progress=False)
    print(f"\n{name}: {out.verdict}; run folder {out.run_dir}\nreplay: {out.replay_command()} "
          f"--duration {duration_s:g}")
    for fn in ("history.jsonl", "results.json", "experiment.yaml", "report.html", "run.json"):
        assert os.path.exists(os.path.join(out.run_dir, fn)), fn
    assert sorted(os.listdir(os.path.join(out.run_dir, "logs"))) == \
        ["broker-1.log", "broker-2.log", "broker-3.log", "coordinator.log"]
    with open(os.path.join(out.run_dir, "experiment.yaml")) as fh:
        assert f"seed: {seed}" in fh.read()
    return out


def test_safe_configuration_under_faults_is_valid(tmp_path):
    out = _run("safe", seed=11, duration_s=16, tmp_path=tmp_path)
    stats = out.result["stats"]
    assert out.result["valid"] is True, json.dumps(out.result["anomalies"], default=str)[:2000]
    assert out.behaved
    # The run did real work under real faults, and the final read saw every acknowledged value.
    assert stats["values_acknowledged"] > 100
    assert stats["unseen_count"] == 0
    with open(os.path.join(out.run_dir, "history.jsonl")) as fh:
        fs = {op["f"] for op in map(json.loads, fh) if op["process"] == "nemesis"}
    assert fs & {"kill", "pause", "partition", "heartbeat-delay"}
    assert "heal" in fs


def test_acks1_leader_isolation_loses_writes(tmp_path):
    out = _run("acks1-leader-isolated", seed=1, duration_s=14, tmp_path=tmp_path)
    assert out.result["valid"] is False
    assert "lost-write" in out.result["anomaly_types"]
    ev = out.result["anomalies"]["lost-write"][0]
    assert ev["key"] == "t0/0" and ev["indexes"]
    assert out.behaved


def test_txn_aborts_under_coordinator_kills_read_nothing_aborted(tmp_path):
    out = _run("txn-aborts-coordinator-kills", seed=3, duration_s=14, tmp_path=tmp_path)
    result = out.result
    assert not {"G1a", "precommitted-read"} & set(result["anomaly_types"]), \
        json.dumps(result["anomalies"], default=str)[:2000]
    txn = result["stats"]["ops_by_f"]["txn"]
    # Transactions committed, and some were aborted on purpose (fail): the check had something to catch.
    assert txn.get("ok", 0) > 10 and txn.get("fail", 0) > 0
    assert result["stats"]["values_failed"] > 0
    assert out.behaved, json.dumps(result["anomalies"], default=str)[:2000]


def test_leader_churn_with_overlapping_coordinator_kills_is_valid(tmp_path):
    out = _run("leader-churn", seed=2, duration_s=16, tmp_path=tmp_path)
    assert out.result["valid"] is True, json.dumps(out.result["anomalies"], default=str)[:2000]
    assert out.result["stats"]["values_acknowledged"] > 100 and out.result["stats"]["unseen_count"] == 0
    with open(os.path.join(out.run_dir, "history.jsonl")) as fh:
        nemesis = [op for op in map(json.loads, fh) if op["process"] == "nemesis" and not op.get("error")]
    assert {"kill", "pause", "partition"} <= {op["f"] for op in nemesis}
    # A leader fault lands while the coordinator is down: elections wait for the controller.
    down, overlapped = False, False
    for op in nemesis:
        nodes = (op.get("value") or {}).get("nodes") or []
        if op["f"] == "kill" and nodes == ["coordinator"]:
            down = True
        elif op["f"] == "start" and nodes == ["coordinator"]:
            down = False
        elif op["f"] in ("kill", "pause", "partition") and down:
            overlapped = True
    assert overlapped


def test_group_members_sigkilled_after_commits_are_replaced_within_the_session_timeout(tmp_path):
    out = _run("group-members-killed", seed=4, duration_s=26, tmp_path=tmp_path)
    gm = out.result["stats"]["group-members"]
    with open(os.path.join(out.run_dir, "history.jsonl")) as fh:
        history = [json.loads(line) for line in fh]
    kills = [op for op in history if op.get("kill") == "SIGKILL"]
    assert len(kills) >= 2 and gm["member_kills"] == len(kills)
    for op in kills:  # a real process, really gone (no LeaveGroup could have been sent)
        with pytest.raises(ProcessLookupError):
            os.kill(op["pid"], 0)
    # Right after a commit: the killed process's previous completed op was a commit.
    for op in kills:
        before = [o for o in history if o["process"] == op["process"] and o["index"] < op["index"]
                  and o["type"] != "invoke"]
        assert before[-1]["f"] == "commit", before[-1]
    assert {op["f"] for op in history if op["process"] == "nemesis"} >= {"kill-member", "clock", "kill", "start"}
    rows = gm["reassignments"]
    assert any(r["reassigned_ms"] is not None for r in rows), rows
    assert not gm["not_reassigned"], [r for r in rows if r["late"]]
    assert out.result["valid"] is True, json.dumps(out.result["anomalies"], default=str)[:2000]
    with open(os.path.join(out.run_dir, "report.html")) as fh:
        assert "Partitions reassigned after member kills" in fh.read()
