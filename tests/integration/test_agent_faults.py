"""An agent never acknowledges rules its running node did not take (issue 19 item 7).

A real Agent (its gRPC server on port 0) supervising a stand-in node process (a sleeping Python,
its own session, so signals reach nothing else); the channel to the node is a fake that refuses.
"""
from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from client.common.pb import agent_pb2 as apb
from client.common.pb import agent_pb2_grpc as agrpc
from node.agent import Agent
from node.auth import call_metadata

TOKEN = "test-token"


class _Refused(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.DEADLINE_EXCEEDED

    def details(self):
        return "node did not answer"


class _DeadNodePool:
    """Channels to the node whose SetFaults never succeeds."""

    def __init__(self):
        self.pushes = 0

    def answer(self, request):
        raise _Refused()

    def get(self, address):
        pool = self

        class _Channel:
            def unary_unary(self, path, *a, **kw):
                def call(request, timeout=None, **kw2):
                    pool.pushes += 1
                    return pool.answer(request)
                return call
        return _Channel()

    def close(self):
        pass


@pytest.fixture
def agent(tmp_path):
    a = Agent("broker-9", "broker", data_dir=str(tmp_path), port=1, control_token=TOKEN)
    a.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    a.state = "running"
    a.pool = _DeadNodePool()
    try:
        yield a
    finally:
        a.proc.kill()
        a.proc.wait(10)
        a._closing = True
        a.proc = None
        a.server.stop(grace=0)


def test_set_faults_to_a_running_node_that_refuses_is_an_error(agent):
    spec = apb.FaultRules(clock_offset_ms=5000)
    channel = grpc.insecure_channel(agent.agent_address)
    try:
        with pytest.raises(grpc.RpcError) as e:
            agrpc.AgentStub(channel).SetFaults(spec, timeout=10, metadata=call_metadata(TOKEN))
    finally:
        channel.close()
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "broker-9 is running but did not take the rules (DEADLINE_EXCEEDED)" in e.value.details()
    assert agent.pool.pushes == 1
    assert agent.faults == spec  # kept for the node's next start


def test_rules_kept_while_paused_and_not_taken_on_resume_are_reported(agent):
    agent.pause()
    spec = apb.FaultRules(clock_offset_ms=5000)
    assert agent.set_faults(spec) == spec  # paused: kept, handed over on resume
    assert agent.pool.pushes == 0
    channel = grpc.insecure_channel(agent.agent_address)
    try:
        st = agrpc.AgentStub(channel).Resume(apb.AgentRequest(node="broker-9"), timeout=10,
                                             metadata=call_metadata(TOKEN))
    finally:
        channel.close()
    assert agent.pool.pushes == 1
    assert st.state == "running" and "did not take the rules" in st.error


class _StartingNodePool(_DeadNodePool):
    """A node that is not listening yet for its first two pushes."""

    def __init__(self):
        super().__init__()
        self.got = None

    def answer(self, request):
        if self.pushes <= 2:
            raise _Unavailable()
        self.got = request
        return request


class _Unavailable(_Refused):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE


def test_a_node_still_starting_gets_its_rules_once_it_listens(agent):
    agent.pool = _StartingNodePool()
    spec = apb.FaultRules(clock_offset_ms=7000)
    assert agent.set_faults(spec) == spec
    assert agent.pool.pushes == 3 and agent.pool.got == spec
