"""A node whose pinned Kafka (or metrics) port is taken exits before it serves anything.

Seen in a leader-churn run: a restarted coordinator found its pinned Kafka port taken (an
ephemeral client socket got it while the node was down). Its gRPC server was already serving, the
bind error ended the main thread, and the half-started process never exited: its agent reported it
running while it answered nothing, so no heal could bring the cluster back.
"""
from __future__ import annotations

import socket

import pytest

import node.main as node_main


@pytest.mark.parametrize("which", ["kafka_port", "metrics_port"])
def test_a_taken_pinned_port_fails_the_start_before_the_grpc_server_serves(tmp_path, monkeypatch, which):
    served = []

    def create_server(*a, **kw):  # the real one would start serving calls
        served.append(a)
        raise AssertionError("the gRPC server started although the Kafka port could not be bound")

    monkeypatch.setattr(node_main, "create_server", create_server)
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(OSError, match="Address already in use"):
            node_main.run_node("coordinator", node_id=0, host="127.0.0.1", port=0, data_dir=str(tmp_path / "c"),
                               coordinator="", configs={}, **{which: taken.getsockname()[1]})
    finally:
        taken.close()
    assert not served
    assert not (tmp_path / "c" / "port").exists()  # the agent never saw this start as a running node


_CLUSTER_THEN_BLOCK = """
import json, os, sys
from node.cluster import Cluster
c = Cluster(sys.argv[1], brokers=1, kafka_port=None, metrics_port=None).start()
tmp = sys.argv[2] + ".tmp"
with open(tmp, "w") as f:
    json.dump([a.proc.pid for a in c.agents.values()], f)
os.replace(tmp, sys.argv[2])
sys.stdin.read()  # until SIGKILLed (or the test closes stdin)
"""


def test_nodes_of_a_cluster_exit_when_the_process_that_started_it_is_sigkilled(tmp_path):
    """Cluster (test fixtures, `brokerlab up`) runs its agents in-process: when that process dies by
    SIGKILL nothing stops the nodes, so they must notice their parent is gone (BROKERLAB_PARENT_PID)."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from node.pids import alive as _alive
    from tests.helpers import ROOT, wait_until

    pids_file = tmp_path / "pids.json"
    owner = subprocess.Popen([sys.executable, "-c", _CLUSTER_THEN_BLOCK, str(tmp_path / "data"), str(pids_file)],
                             stdin=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ROOT}, cwd=ROOT)
    pids: list[int] = []
    try:
        wait_until(lambda: pids_file.exists() or owner.poll() is not None, 60, what="the cluster to start")
        assert owner.poll() is None, f"the cluster's process exited with {owner.returncode}"
        pids = json.loads(pids_file.read_text())
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        owner.kill()
        owner.wait(10)
        wait_until(lambda: not any(_alive(p) for p in pids), 15,
                   what=f"the nodes {pids} to exit after their cluster's process was SIGKILLed")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)
        for p in pids:  # on failure: no orphan left behind
            if _alive(p):
                os.killpg(p, signal.SIGKILL)
