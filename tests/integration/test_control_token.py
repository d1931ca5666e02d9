"""Issue 20 item 8: the control plane (agents, per-node fault services) obeys only the cluster's token."""
from __future__ import annotations

import os
import subprocess
import sys

import grpc
import pytest

from chaos.controller import ChaosController
from client.common.network import ChannelPool
from client.common.pb import agent_pb2 as apb
from client.common.pb import agent_pb2_grpc as agrpc
from node.agent import Agent
from node.auth import call_metadata
from tests.helpers import ROOT


@pytest.fixture
def agent(tmp_path):
    """An agent whose node is never started: its gRPC service is what is under test."""
    a = Agent("broker-9", "broker", node_id=9, data_dir=str(tmp_path / "b9"), control_token="s3cret")
    yield a
    a.close()


def _stub(address: str, token: str | None):
    pool = ChannelPool("client:test", metadata=call_metadata(token))
    return pool, agrpc.AgentStub(pool.get(address))


@pytest.mark.parametrize("token, why", [(None, "no control token given"), ("wrong", "bad control token")])
def test_agent_refuses_calls_without_the_token(agent, token, why):
    pool, stub = _stub(agent.agent_address, token)
    try:
        for call, req in [(stub.Status, apb.AgentRequest()), (stub.Kill, apb.AgentRequest()),
                          (stub.SetFaults, apb.FaultRules(rules=[apb.FaultRule(kind="drop")])),
                          (stub.GetFaults, apb.Empty())]:
            with pytest.raises(grpc.RpcError) as e:
                call(req, timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert why in e.value.details() and "BROKERLAB_CONTROL_TOKEN" in e.value.details()
        assert not agent.faults.rules  # the refused SetFaults changed nothing
    finally:
        pool.close()


def test_agent_obeys_the_token(agent):
    pool, stub = _stub(agent.agent_address, "s3cret")
    try:
        assert stub.Status(apb.AgentRequest(), timeout=5).node == "broker-9"
        stub.SetFaults(apb.FaultRules(rules=[apb.FaultRule(kind="drop", tag="t")]), timeout=5)
        assert [r.tag for r in agent.faults.rules] == ["t"]
    finally:
        pool.close()


def test_agent_never_advertises_a_wildcard(tmp_path):
    with pytest.raises(ValueError, match="0.0.0.0.*no address to advertise"):
        Agent("broker-1", "broker", node_id=1, host="0.0.0.0", data_dir=str(tmp_path), control_token="t")


def test_cluster_control_plane_needs_the_token(shared_cluster, monkeypatch):
    """On a running cluster: the agents and every node's fault service refuse a caller without the token;
    the ChaosController with it works; the CLI finds it in the data dir, and names it when it cannot."""
    monkeypatch.delenv("BROKERLAB_CONTROL_TOKEN", raising=False)
    c = shared_cluster
    node = c.agents["broker-1"]
    anon = ChannelPool("client:anon")
    try:
        with pytest.raises(grpc.RpcError) as e:
            agrpc.AgentStub(anon.get(node.agent_address)).Kill(apb.AgentRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as e:
            agrpc.FaultsStub(anon.get(node.address)).SetFaults(
                apb.FaultRules(rules=[apb.FaultRule(kind="drop")]), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "no control token" in e.value.details()
    finally:
        anon.close()
    assert node.status().state == "running"

    with ChaosController(c.bootstrap_servers, state_path=os.path.join(c.data_dir, "ct.json"),
                         data_dir=c.data_dir) as ctl:
        assert {r["node"]: r["state"] for r in ctl.status()["nodes"]}["broker-1"] == "running"
        spec = agrpc.FaultsStub(ctl.pool.get(node.address)).GetFaults(apb.Empty(), timeout=5)
        assert not spec.rules

    env = {k: v for k, v in os.environ.items() if k != "BROKERLAB_CONTROL_TOKEN"}
    env["BROKERLAB_CHAOS_STATE"] = os.path.join(c.data_dir, "ct-cli.json")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "brokerlab_cli", "chaos", *args, "--bootstrap-server",
                               c.bootstrap_servers], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT,
                              check=False)

    r = cli("resume", "broker-1", "--data-dir", c.data_dir)
    assert r.returncode == 0 and "broker-1: running" in r.stdout, r.stderr
    r = cli("pause", "broker-1", "--data-dir", os.path.join(c.data_dir, "elsewhere"))
    assert r.returncode == 1 and "no control token given" in r.stderr and "not found" in r.stderr, r.stderr
    r = cli("pause", "broker-1", "--control-token", "wrong")
    assert r.returncode == 1 and "bad control token" in r.stderr and "--control-token" in r.stderr, r.stderr
    assert node.status().state == "running"
