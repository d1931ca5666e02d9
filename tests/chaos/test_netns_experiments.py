"""Issue 15: the named experiments with `network: netns` — nodes in network namespaces, partitions as
kernel rules (short forms). Needs root; skipped with the reason otherwise (tests/netns_skip.py)."""
from __future__ import annotations

import html
import json
import os

from chaos.run import load_experiment, run_experiment
from node import netns
from tests.netns_skip import netns_mark

pytestmark = netns_mark()


def _run(name: str, seed: int, duration_s: float, tmp_path):
    exp = load_experiment(name)
    out = run_experiment(exp, seed=seed, duration_s=duration_s, out_dir=str(tmp_path / name), progress=False,
                         network="netns")
    print(f"\n{name} (netns): {out.verdict}; run folder {out.run_dir}\nreplay: {out.replay_command()} "
          f"--duration {duration_s:g}")
    with open(os.path.join(out.run_dir, "run.json")) as fh:
        run = json.load(fh)
    assert run["network"] == "netns"
    # Where delay and jitter went: netem, or the edge and why (this machine's kernel has no netem).
    delay_layer = run["layers"]["delay, jitter"]
    assert delay_layer.startswith(("kernel (netem", "edge (")), delay_layer
    assert out.replay_command().endswith("--network netns")
    with open(os.path.join(out.run_dir, "report.html")) as fh:
        assert f"network <b>netns</b> (delay, jitter: {html.escape(delay_layer)})" in fh.read()
    assert netns.owned_by(os.getpid()) == {"namespaces": [], "links": []}  # the run removed its network
    return out


def _nemesis_ops(out):
    with open(os.path.join(out.run_dir, "history.jsonl")) as fh:
        return [op for op in map(json.loads, fh) if op["process"] == "nemesis"]


def test_safe_with_netns_is_valid(tmp_path):
    out = _run("safe", seed=11, duration_s=16, tmp_path=tmp_path)
    assert out.result["valid"] is True, json.dumps(out.result["anomalies"], default=str)[:2000]
    assert out.behaved
    assert out.result["stats"]["values_acknowledged"] > 50
    # Seed 11's 16 s: a pause, then the halves partition (at 11 s), a kernel rule, and the history says so.
    parts = [op for op in _nemesis_ops(out) if op["f"] == "partition" and op["type"] == "info"]
    assert parts and all(op["value"]["layer"] == "kernel" and "error" not in op for op in parts), parts


def test_acks1_leader_isolated_with_netns_finds_lost_writes(tmp_path):
    out = _run("acks1-leader-isolated", seed=1, duration_s=14, tmp_path=tmp_path)
    assert out.result["valid"] is False
    assert "lost-write" in out.result["anomaly_types"]
    assert out.behaved
    parts = [op for op in _nemesis_ops(out) if op["f"] == "partition" and op["type"] == "info"]
    assert parts and all(op["value"]["layer"] == "kernel" for op in parts), parts
    with open(os.path.join(out.run_dir, "report.html")) as fh:
        assert "(kernel)" in fh.read()
