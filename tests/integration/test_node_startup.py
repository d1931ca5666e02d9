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
