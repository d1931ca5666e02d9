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


def _resume(agent):
    channel = grpc.insecure_channel(agent.agent_address)
    try:
        return agrpc.AgentStub(channel).Resume(apb.AgentRequest(node="broker-9"), timeout=10,
                                               metadata=call_metadata(TOKEN))
    finally:
        channel.close()


def test_rules_kept_while_paused_and_not_taken_on_resume_are_reported_but_the_resume_is_done(agent):
    agent.pause()
    spec = apb.FaultRules(clock_offset_ms=5000)
    assert agent.set_faults(spec) == spec  # paused: kept, handed over on resume
    assert agent.pool.pushes == 0
    st = _resume(agent)
    assert agent.pool.pushes == 1
    # The node runs again: the resume did happen (no error); what it lacks is the rules.
    assert st.state == "running" and st.error == ""
    assert "did not take the rules" in st.rules_error


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


class _BootingNodePool(_DeadNodePool):
    """A node that never listens during the test: every push is refused as a connect failure."""

    def answer(self, request):
        raise _Unavailable()


@pytest.fixture
def started(tmp_path, monkeypatch):
    """An Agent whose real start() launches a stand-in node (a sleeping Python) on a pinned port:
    start() returns at once, before the node would listen, as with a restarted node."""
    real_popen = subprocess.Popen

    def popen(argv, **kw):
        return real_popen([sys.executable, "-c", "import time; time.sleep(120)"], **kw)

    monkeypatch.setattr("node.agent.subprocess.Popen", popen)
    a = Agent("broker-9", "broker", data_dir=str(tmp_path), port=1, control_token=TOKEN, kafka_port=None,
              metrics_port=None)
    a.pool = _BootingNodePool()
    try:
        yield a
    finally:
        a._closing = True
        if a.proc is not None:
            a.proc.kill()
            a.proc.wait(10)
        a.proc = None
        a.server.stop(grace=0)


def test_resume_of_a_node_paused_while_starting_needs_no_push_and_succeeds(started):
    # leader-churn: a broker restarted, then SIGSTOPped before it listened. Its resume used to push
    # the rules it already had, retry UNAVAILABLE for 4 s and answer an error: recorded as failed.
    started.start()
    started.pause()
    st = _resume(started)
    assert st.state == "running" and st.error == "" and st.rules_error == ""
    assert started.pool.pushes == 0  # it started with these rules in its environment


def test_resume_pushes_only_rules_the_node_does_not_hold(started):
    started.start()
    started.pause()
    spec = apb.FaultRules(clock_offset_ms=3000)
    started.set_faults(spec)  # paused: kept for the resume
    started.pool = _StartingNodePool()  # listening by the third try
    assert _resume(started).rules_error == ""
    assert started.pool.pushes == 3 and started.pool.got == spec
    started.pause()
    st = _resume(started)  # nothing changed while paused this time
    assert st.error == "" and st.rules_error == "" and started.pool.pushes == 3
