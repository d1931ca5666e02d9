"""Nemesis shapes the experiments use: a partition around chosen nodes, dropped responses."""
from __future__ import annotations

from chaos.nemesis import Nemesis
from chaos.targets import ClusterView

NODES = ("broker-1", "broker-2", "broker-3", "coordinator")


class FakeController:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def view(self) -> ClusterView:
        return ClusterView(NODES, leaders={"t0/0": "broker-2"},
                           replicas={"t0/0": ("broker-1", "broker-2", "broker-3")})

    def node_names(self) -> list[str]:
        return list(NODES)

    def node(self, name: str):
        if name not in NODES:
            raise ValueError(f"unknown node {name}")

    def partition(self, groups, one_way=False):
        self.calls.append(("partition", groups, one_way))

    def drop_response(self, nodes, p, method):
        self.calls.append(("drop-response", nodes, p, method))


def test_partition_with_a_target_cuts_those_nodes_off_from_all_others():
    c = FakeController()
    done = Nemesis(c).invoke({"f": "partition", "value": {"target": "leader-of", "topic": "t0", "partition": 0}})
    assert "error" not in done
    assert c.calls == [("partition", [["broker-2"], ["broker-1", "broker-3", "coordinator"]], False)]
    assert done["value"]["groups"] == [["broker-2"], ["broker-1", "broker-3", "coordinator"]]
    assert done["value"]["applied"] == list(NODES)  # every node holds the whole rule set


def test_drop_response_defaults_to_every_broker_and_produce():
    c = FakeController()
    done = Nemesis(c).invoke({"f": "drop-response", "value": {"p": 0.25}})
    assert c.calls == [("drop-response", ["broker-1", "broker-2", "broker-3"], 0.25, "Produce")]
    assert done["type"] == "info" and done["value"]["nodes"] == ["broker-1", "broker-2", "broker-3"]


def test_drop_response_bad_node_is_recorded_as_an_error():
    done = Nemesis(FakeController()).invoke({"f": "drop-response", "value": {"nodes": ["broker-9"]}})
    assert "broker-9" in done["error"]


class ProcessController(FakeController):
    """Records process, partition and clock calls, for recoveries of overlapping schedules."""

    def kill(self, *nodes):
        self.calls.append(("kill", list(nodes)))

    def start(self, *nodes):
        self.calls.append(("start", list(nodes)))

    def pause(self, *nodes):
        self.calls.append(("pause", list(nodes)))

    def resume(self, *nodes):
        self.calls.append(("resume", list(nodes)))

    def partition_grudge(self, grudge):
        self.calls.append(("partition", grudge))

    def heal_network(self, tag=None):
        self.calls.append(("heal-network", tag))

    def clock(self, name, offset_ms=0, strobe_ms=0, period_ms=0):
        self.calls.append(("clock", name, offset_ms))

    def heal(self, nodes=None):
        self.calls.append(("heal",))
        return {"healed": list(NODES)}


def test_a_recovery_undoes_only_its_own_fault_when_schedules_overlap():
    c = ProcessController()
    n = Nemesis(c)
    n.invoke({"f": "kill", "value": {"target": "coordinator"}, "fault_id": "n1-0"})
    n.invoke({"f": "kill", "value": {"target": "leader-of", "topic": "t0", "partition": 0}, "fault_id": "0"})
    n.invoke({"f": "partition", "value": {"shape": "leader-isolated-from-followers", "topic": "t0"},
              "fault_id": "1"})
    done = n.invoke({"f": "start", "value": None, "recovers": "0"})
    # not the coordinator the other schedule killed
    assert done["value"] == {"nodes": ["broker-2"], "applied": ["broker-2"]}
    done = n.invoke({"f": "heal", "value": None, "recovers": "1"})
    assert done["value"] == {"of": "partition", "applied": list(NODES)}
    assert c.calls[-2:] == [("start", ["broker-2"]), ("heal-network", "partition")]
    assert ("heal",) not in c.calls and n.down == {"coordinator"}
    n.invoke({"f": "start", "value": None, "recovers": "n1-0"})
    assert c.calls[-1] == ("start", ["coordinator"]) and not n.down


def test_a_clock_recovery_resets_only_the_skewed_node_and_a_failed_fault_has_nothing_to_undo():
    c = ProcessController()
    n = Nemesis(c)
    n.invoke({"f": "clock", "value": {"nodes": ["broker-1"], "offset_ms": 5000}, "fault_id": "0"})
    n.invoke({"f": "heal", "value": None, "recovers": "0"})
    assert c.calls == [("clock", "broker-1", 5000), ("clock", "broker-1", 0)]
    failed = n.invoke({"f": "kill", "value": {"target": "leader-of", "topic": "nope"}, "fault_id": "1"})
    assert "nope" in failed["error"]
    done = n.invoke({"f": "start", "value": None, "recovers": "1"})
    assert done["value"] == {"nodes": []} and c.calls[-1] == ("clock", "broker-1", 0)
