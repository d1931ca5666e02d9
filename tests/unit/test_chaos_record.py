"""The chaos record is the truth (issue 19 item 7): nemesis ops say, per node, what was applied and
what failed; the final heal retries until every node confirms and the run notes any that never did.

The real ChaosController, Nemesis, Runner and run._heal drive fake agents behind a fake gRPC
channel: no sockets, no processes, no sleeps.
"""
from __future__ import annotations

import grpc
import pytest

from chaos import history as h
from chaos import run as chaos_run
from chaos.controller import ChaosController, NodeInfo, PartialFaultError
from chaos.nemesis import Nemesis
from chaos.runner import Runner
from chaos.workloads import make_workload
from client.common.pb import agent_pb2 as apb
from node.faults import rules_from_pb

NODES = ("broker-1", "broker-2", "broker-3", "coordinator")


class _RpcError(grpc.RpcError):
    def __init__(self, code, details):
        super().__init__(details)
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


class FakeAgent:
    """One node's agent as the controller sees it over gRPC. `unreachable`: every call fails;
    `refuse_rules`: this many SetFaults calls fail as a real agent's do when its running node did
    not take the rules (-1: always)."""

    def __init__(self, name: str, state: str = "running"):
        self.name, self.state = name, state
        self.faults = apb.FaultRules()
        self.unreachable = False
        self.refuse_rules = 0
        self.lost_answers: set[str] = set()  # methods it carries out whose answer never arrives
        self.rules_error = ""  # a resumed node that did not take the rules set while it was paused
        self.calls: list[str] = []

    def handle(self, method: str, request):
        self.calls.append(method)
        if self.unreachable:
            raise _RpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: "
                            "UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused")
        if method == "SetFaults":
            if self.refuse_rules:
                self.refuse_rules -= self.refuse_rules > 0
                raise _RpcError(grpc.StatusCode.UNAVAILABLE,
                                f"{self.name} is running but did not take the rules (DEADLINE_EXCEEDED)")
            self.faults = request
            return request
        if method == "GetFaults":
            return self.faults
        if method == "Status":
            return self._status()
        self.state = {"Kill": "killed", "Stop": "stopped", "Pause": "paused", "Resume": "running",
                      "Start": "running", "Restart": "running"}[method]
        if method in self.lost_answers:
            raise _RpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        st = self._status()
        if method == "Resume" and self.rules_error:
            st.rules_error = self.rules_error
        return st

    def _status(self):
        return apb.AgentStatus(node=self.name, state=self.state, pid=100)


class _Channel:
    def __init__(self, agent: FakeAgent):
        self.agent = agent

    def unary_unary(self, path, *args, **kwargs):
        method = path.rsplit("/", 1)[1]
        return lambda request, timeout=None, **kw: self.agent.handle(method, request)


class _Pool:
    def __init__(self, agents: dict[str, FakeAgent]):
        self.by_address = {f"agent-{n}": a for n, a in agents.items()}

    def get(self, address: str):
        return _Channel(self.by_address[address])

    def close(self) -> None:
        pass


class FakeController(ChaosController):
    """The real controller; only its channels and the cluster metadata are fakes."""

    def __init__(self, tmp_path, agents: dict[str, FakeAgent]):
        super().__init__("bootstrap:0", state_path=str(tmp_path / "state.json"))
        self.pool = _Pool(agents)
        self.nodes = {n: NodeInfo(n, f"node-{n}", f"agent-{n}") for n in agents}

    def metadata(self, timeout_s: float = 2.0):
        return None


@pytest.fixture
def agents():
    return {n: FakeAgent(n) for n in NODES}


@pytest.fixture
def ctl(tmp_path, agents):
    return FakeController(tmp_path, agents)


# -- controller and nemesis: per node, what was applied


def test_heal_names_only_the_nodes_that_confirmed(ctl, agents):
    agents["broker-1"].faults = apb.FaultRules(clock_offset_ms=60000)
    agents["broker-2"].refuse_rules = -1
    agents["broker-3"].state = "paused"
    out = ctl.heal()
    assert out["healed"] == ["broker-1", "broker-3", "coordinator"]
    assert out["resumed"] == ["broker-3"]
    assert list(out["failed"]) == ["broker-2"] and "did not take the rules" in out["failed"]["broker-2"]
    assert agents["broker-1"].faults == apb.FaultRules()


def test_a_rule_change_reaches_every_node_it_can_and_the_op_records_which(ctl, agents):
    agents["broker-1"].unreachable = True
    done = Nemesis(ctl).invoke({"process": "nemesis", "type": "info", "f": "partition",
                                "value": {"groups": [["broker-3"], ["broker-1", "broker-2", "coordinator"]]}})
    assert done["type"] == "info"
    assert done["value"]["applied"] == ["broker-2", "broker-3", "coordinator"]
    assert list(done["value"]["failed"]) == ["broker-1"] and "UNAVAILABLE" in done["value"]["failed"]["broker-1"]
    assert "broker-1" in done["error"]
    # The nodes after the failing one still got the whole rule set.
    for n in ("broker-2", "broker-3", "coordinator"):
        assert {(r.src, r.dst) for r in rules_from_pb(agents[n].faults.rules)} >= {("broker-3", "broker-2"),
                                                                                   ("broker-2", "broker-3")}


def test_a_process_fault_is_tried_on_every_target_and_tracks_only_those_it_reached(ctl, agents):
    agents["broker-1"].unreachable = True
    nem = Nemesis(ctl)
    done = nem.invoke({"process": "nemesis", "type": "info", "f": "kill", "value": {"nodes": ["broker-1", "broker-2"]}})
    assert agents["broker-2"].state == "killed"
    assert done["value"]["nodes"] == ["broker-1", "broker-2"]
    assert done["value"]["applied"] == ["broker-2"] and list(done["value"]["failed"]) == ["broker-1"]
    assert nem.down == {"broker-2"}
    with pytest.raises(PartialFaultError) as e:
        ctl.kill("broker-1", "broker-3")
    assert e.value.applied == ["broker-3"] and list(e.value.failed) == ["broker-1"]


def test_clock_skew_on_several_nodes_records_each(ctl, agents):
    agents["broker-2"].refuse_rules = -1
    done = Nemesis(ctl).invoke({"process": "nemesis", "type": "info", "f": "clock",
                                "value": {"nodes": ["broker-1", "broker-2", "broker-3"], "offset_ms": 5000}})
    assert done["value"]["applied"] == ["broker-1", "broker-3"] and list(done["value"]["failed"]) == ["broker-2"]
    assert agents["broker-3"].faults.clock_offset_ms == 5000


def test_a_fault_every_node_took_records_them_all(ctl, agents):
    done = Nemesis(ctl).invoke({"process": "nemesis", "type": "info", "f": "delay",
                                "value": {"nodes": ["broker-1"], "ms": 100}})
    assert "error" not in done and done["value"]["applied"] == list(NODES)


# -- the final heal: retried until every node confirms, bounded, noted


def _runner(tmp_path, ctl):
    writer = h.HistoryWriter(str(tmp_path / "history.jsonl"))
    runner = Runner(make_workload("log", {}, [("t0", 1)]), writer, "bootstrap:0", producer_props={},
                    consumer_props={}, nemesis=Nemesis(ctl).invoke)
    return runner, writer


def _heals(writer):
    writer.close()
    return [op for op in h.read_history(writer.path) if op["f"] == "heal"]


def test_final_heal_retries_the_nodes_that_did_not_confirm(tmp_path, ctl, agents, monkeypatch):
    slept = []
    monkeypatch.setattr(chaos_run.time, "sleep", slept.append)
    agents["broker-2"].faults = apb.FaultRules(clock_offset_ms=60000)
    agents["broker-2"].refuse_rules = 2
    runner, writer = _runner(tmp_path, ctl)
    notes: list[str] = []
    chaos_run._heal(runner, ctl, notes)
    assert notes == []
    assert agents["broker-2"].faults == apb.FaultRules()
    heals = _heals(writer)
    assert len(heals) == 3 and len(slept) == 2
    assert list(heals[0]["value"]["failed"]) == ["broker-2"] and heals[0]["error"]
    assert heals[0]["value"]["healed"] == ["broker-1", "broker-3", "coordinator"]
    assert heals[1]["value"]["healed"] == [] and heals[1]["value"]["failed"]
    assert heals[2]["value"] == {"healed": ["broker-2"], "resumed": [], "started": []} and "error" not in heals[2]
    assert all(op["process"] == "nemesis" and op["type"] == "info" for op in heals)


def test_final_heal_is_bounded_and_notes_the_node_that_never_confirmed(tmp_path, ctl, agents, monkeypatch):
    monkeypatch.setattr(chaos_run.time, "sleep", lambda s: None)
    agents["broker-3"].refuse_rules = -1
    runner, writer = _runner(tmp_path, ctl)
    notes: list[str] = []
    assert chaos_run._heal(runner, ctl, notes) is False
    heals = _heals(writer)
    assert len(heals) == chaos_run.HEAL_ATTEMPTS
    assert all(list(op["value"]["failed"]) == ["broker-3"] for op in heals)
    (note,) = notes
    assert note.startswith("heal failed: broker-3 never confirmed") and "did not take the rules" in note


def test_the_recovery_of_a_partial_fault_undoes_it_where_it_was_applied(ctl, agents):
    agents["broker-1"].unreachable = True
    nem = Nemesis(ctl)
    nem.invoke({"f": "kill", "value": {"nodes": ["broker-1", "broker-2"]}, "fault_id": "0"})
    agents["broker-1"].unreachable = False
    done = nem.invoke({"f": "start", "value": None, "recovers": "0"})
    assert done["value"] == {"nodes": ["broker-2"], "applied": ["broker-2"]} and "error" not in done
    assert agents["broker-1"].calls.count("Start") == 0 and agents["broker-2"].state == "running"


# -- a process fault whose outcome is unknown is not recorded as failed


def test_a_resume_whose_answer_was_lost_is_unknown_not_failed(ctl, agents):
    nem = Nemesis(ctl)
    nem.invoke({"process": "nemesis", "type": "info", "f": "pause", "value": {"nodes": ["broker-3"]}})
    agents["broker-3"].lost_answers = {"Resume"}
    done = nem.invoke({"process": "nemesis", "type": "info", "f": "resume", "value": {"nodes": ["broker-3"]}})
    assert agents["broker-3"].state == "running"  # it did resume
    assert done["type"] == "info" and "failed" not in done["value"]
    assert done["value"]["applied"] == [] and list(done["value"]["unknown"]) == ["broker-3"]
    assert "DEADLINE_EXCEEDED" in done["value"]["unknown"]["broker-3"] and "unknown on broker-3" in done["error"]
    assert nem.paused == {"broker-3"}  # not confirmed running: a later heal still resumes it


def test_a_pause_whose_answer_was_lost_is_tracked_and_undone_by_its_recovery(ctl, agents):
    nem = Nemesis(ctl)
    agents["broker-2"].lost_answers = {"Pause"}
    done = nem.invoke({"process": "nemesis", "type": "info", "f": "pause", "value": {"nodes": ["broker-2"]},
                       "fault_id": 7})
    assert list(done["value"]["unknown"]) == ["broker-2"] and nem.paused == {"broker-2"}
    agents["broker-2"].lost_answers = set()
    back = nem.invoke({"process": "nemesis", "type": "info", "f": "resume", "recovers": 7})
    assert back["value"] == {"nodes": ["broker-2"], "applied": ["broker-2"]} and "error" not in back
    assert agents["broker-2"].state == "running" and nem.paused == set()


def test_an_agent_that_cannot_be_reached_did_not_resume(ctl, agents):
    agents["broker-1"].state = "paused"
    agents["broker-1"].unreachable = True  # "connection refused": never sent
    with pytest.raises(PartialFaultError) as e:
        ctl.resume("broker-1")
    assert list(e.value.failed) == ["broker-1"] and e.value.unknown == {}


def test_a_resume_without_the_rules_set_while_paused_is_applied_and_says_so(ctl, agents):
    nem = Nemesis(ctl)
    nem.invoke({"process": "nemesis", "type": "info", "f": "pause", "value": {"nodes": ["broker-1"]}})
    agents["broker-1"].rules_error = "broker-1 is running but did not take the rules (UNAVAILABLE)"
    done = nem.invoke({"process": "nemesis", "type": "info", "f": "resume", "value": {"nodes": ["broker-1"]}})
    assert "error" not in done and done["value"]["applied"] == ["broker-1"]
    assert done["value"]["rules_not_taken"] == {"broker-1": agents["broker-1"].rules_error}
    assert nem.paused == set()


def test_heal_does_not_count_a_node_resumed_without_its_rules(ctl, agents):
    agents["broker-1"].state = "paused"
    agents["broker-1"].rules_error = "broker-1 is running but did not take the rules (UNAVAILABLE)"
    out = ctl.heal()
    assert out["healed"] == ["broker-2", "broker-3", "coordinator"] and out["resumed"] == []
    assert "did not take the rules" in out["failed"]["broker-1"]
