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


def test_drop_response_defaults_to_every_broker_and_produce():
    c = FakeController()
    done = Nemesis(c).invoke({"f": "drop-response", "value": {"p": 0.25}})
    assert c.calls == [("drop-response", ["broker-1", "broker-2", "broker-3"], 0.25, "Produce")]
    assert done["type"] == "info" and done["value"]["nodes"] == ["broker-1", "broker-2", "broker-3"]


def test_drop_response_bad_node_is_recorded_as_an_error():
    done = Nemesis(FakeController()).invoke({"f": "drop-response", "value": {"nodes": ["broker-9"]}})
    assert "broker-9" in done["error"]
