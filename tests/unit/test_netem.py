"""Issue 15, delay and jitter in the kernel: netem qdiscs an agent installs where its kernel has netem,
checked against a fake host (it records every command and keeps the qdiscs and filters as the kernel
would, refusing what the kernel refuses); where the kernel lacks netem, delay stays at the edge and
the controller says why."""
from __future__ import annotations

import json
import subprocess

import pytest

from client.common.pb import agent_pb2 as apb
from node import kernel_faults as kf
from node.faults import FaultState, Rule, rules_to_pb

HOSTS = {"coordinator": "10.213.0.2", "broker-1": "10.213.0.3", "broker-2": "10.213.0.4", "broker-3": "10.213.0.5"}
UNKNOWN = "Error: Specified qdisc kind is unknown.\n"


class FakeHost:
    """A host's `ip`, `tc` and `nft` as far as the agent uses them: one device eth0 routes every node."""

    def __init__(self, netem: bool = True, root: tuple[str, str] = ("noqueue", "0:")):
        self.netem = netem
        self.root = {"eth0": root}  # dev -> (kind, handle) of the root qdisc
        self.children: dict[str, list[list[str]]] = {"eth0": []}  # qdiscs and filters under a root of ours
        self.calls: list[list[str]] = []

    def tc_calls(self) -> list[list[str]]:
        """The commands that change qdiscs or filters (not the probe's, which run in its namespace)."""
        return [c for c in self.calls if c[0] == "tc" and c[1] in ("qdisc", "filter") and c[2] in ("add", "del")]

    def __call__(self, argv, script=None):
        self.calls.append(list(argv))
        ok = subprocess.CompletedProcess(argv, 0, "", "")

        def fail(err):
            return subprocess.CompletedProcess(argv, 2, "", err)
        if argv[:2] == ["ip", "netns"] or argv[:2] == ["ip", "-n"] or argv[0] == "nft":
            return ok
        if argv[:3] == ["ip", "-j", "route"]:
            return subprocess.CompletedProcess(argv, 0, json.dumps([{"dst": argv[-1], "dev": "eth0"}]), "")
        if argv[:2] == ["tc", "-n"]:  # the probe, in its scratch namespace
            return ok if self.netem else fail(UNKNOWN)
        if argv[:4] == ["tc", "-j", "qdisc", "show"]:
            return subprocess.CompletedProcess(argv, 0, json.dumps(
                [{"kind": k, "handle": h, "dev": d, "root": True} for d, (k, h) in self.root.items()]), "")
        _, what, verb, _, dev, *rest = argv
        if not self.netem and ("netem" in rest or "prio" in rest):
            return fail(UNKNOWN)
        if what == "qdisc" and verb == "add" and rest[0] == "root":
            if self.root[dev][1] != "0:":
                return fail("Error: Exclusivity flag on, cannot modify.\n")
            self.root[dev] = (rest[3], rest[2])
            return ok
        if what == "qdisc" and verb == "del" and rest[0] == "root":
            if self.root[dev][1] != rest[2]:
                return fail("Error: Invalid handle.\n")
            self.root[dev], self.children[dev] = ("noqueue", "0:"), []
            return ok
        if self.root[dev][1] != rest[1].split(":")[0] + ":":
            return fail("Error: Failed to find specified qdisc.\n")
        self.children[dev].append(argv)
        return ok


@pytest.fixture
def agent_on(monkeypatch, tmp_path):
    """An Agent with kernel faults (no node started) on a FakeHost."""
    from node.agent import Agent
    made = []

    def make(host: FakeHost, name: str = "broker-1") -> Agent:
        monkeypatch.setattr(kf, "_run", host)
        monkeypatch.setattr(kf, "missing_tools", list)
        monkeypatch.setattr(kf.shutil, "which", lambda cmd: f"/usr/sbin/{cmd}")
        a = Agent(name, "broker", node_id=1, data_dir=str(tmp_path / name), control_token="t", kernel_faults=True)
        made.append(a)
        return a
    yield make
    for a in made:
        a.close()


def spec(*rules: Rule) -> apb.FaultRules:
    return apb.FaultRules(rules=rules_to_pb(list(rules)), hosts=HOSTS)


def delay(src, dst, ms, jitter=0):
    return Rule("delay", src, dst, ms, jitter, tag="delay", layer="kernel")


ADD_ROOT = ["tc", "qdisc", "add", "dev", "eth0", "root", "handle", "b100:", "prio", "bands", "4"]
DEL_ROOT = ["tc", "qdisc", "del", "dev", "eth0", "root", "handle", "b100:"]


def test_delay_on_one_link_is_a_netem_band_for_that_destination_and_heal_removes_exactly_it(agent_on):
    host = FakeHost()
    a = agent_on(host)
    assert a.status().netem and a.status().netem_missing == ""
    start = len(host.calls)
    # A link both ways: broker-1's agent delays what broker-1 sends to broker-2, not the way back.
    a.set_faults(spec(delay("broker-1", "broker-2", 100), delay("broker-2", "broker-1", 100)))
    assert host.tc_calls() == [
        ADD_ROOT,
        ["tc", "qdisc", "add", "dev", "eth0", "parent", "b100:4", "handle", "b104:", "netem", "delay", "100ms",
         "limit", "10000"],
        ["tc", "filter", "add", "dev", "eth0", "parent", "b100:", "protocol", "ip", "prio", "1", "u32", "match",
         "ip", "dst", "10.213.0.4/32", "flowid", "b100:4"]]
    # The same rules again (another fault changed): the device is left alone.
    a.set_faults(spec(delay("broker-1", "broker-2", 100), delay("broker-2", "broker-1", 100),
                      Rule("drop", "broker-3", "broker-1", tag="partition", layer="kernel")))
    assert len(host.tc_calls()) == 3
    # Heal: our root qdisc goes, with its band and filter; the device has the kernel's default again.
    a.set_faults(apb.FaultRules())
    assert host.tc_calls()[3:] == [DEL_ROOT]
    assert host.root["eth0"] == ("noqueue", "0:") and host.children["eth0"] == []
    assert a.tc.installed == {}
    assert not any(c[0] == "tc" and "del" in c and c != DEL_ROOT for c in host.calls[start:])


def test_delay_with_jitter_and_links_sharing_a_delay_share_its_band(agent_on):
    host = FakeHost()
    a = agent_on(host)
    a.set_faults(spec(delay("broker-1", "broker-2", 100, 20), delay("broker-1", "broker-3", 100, 20),
                      delay("broker-1", "coordinator", 30), delay("broker-2", "broker-3", 500)))
    assert host.tc_calls() == [
        ["tc", "qdisc", "add", "dev", "eth0", "root", "handle", "b100:", "prio", "bands", "5"],
        ["tc", "qdisc", "add", "dev", "eth0", "parent", "b100:4", "handle", "b104:", "netem", "delay", "30ms",
         "limit", "10000"],
        ["tc", "qdisc", "add", "dev", "eth0", "parent", "b100:5", "handle", "b105:", "netem", "delay", "100ms",
         "20ms", "limit", "10000"],
        *[["tc", "filter", "add", "dev", "eth0", "parent", "b100:", "protocol", "ip", "prio", "1", "u32", "match",
           "ip", "dst", f"{ip}/32", "flowid", band]
          for ip, band in (("10.213.0.2", "b100:4"), ("10.213.0.4", "b100:5"), ("10.213.0.5", "b100:5"))]]


def test_a_second_set_faults_replaces_the_delays_instead_of_stacking_them(agent_on):
    host = FakeHost()
    a = agent_on(host)
    a.set_faults(spec(delay("broker-1", "broker-2", 100)))
    a.set_faults(spec(delay("broker-1", "broker-3", 50, 5)))
    assert host.tc_calls()[3:] == [
        DEL_ROOT,
        ADD_ROOT,
        ["tc", "qdisc", "add", "dev", "eth0", "parent", "b100:4", "handle", "b104:", "netem", "delay", "50ms", "5ms",
         "limit", "10000"],
        ["tc", "filter", "add", "dev", "eth0", "parent", "b100:", "protocol", "ip", "prio", "1", "u32", "match",
         "ip", "dst", "10.213.0.5/32", "flowid", "b100:4"]]
    assert len(host.children["eth0"]) == 2  # one band, one filter: broker-2's are gone
    a.close()  # an agent that stops removes its delays too
    assert host.tc_calls()[-1] == DEL_ROOT and host.root["eth0"] == ("noqueue", "0:")


def test_a_root_qdisc_someone_else_configured_is_not_replaced(agent_on):
    host = FakeHost(root=("htb", "1:"))
    a = agent_on(host)
    with pytest.raises(kf.KernelFaultsError, match=r"eth0 has a root qdisc of its own \(htb 1:\)"):
        a.set_faults(spec(delay("broker-1", "broker-2", 100)))
    assert host.tc_calls() == [] and host.root["eth0"] == ("htb", "1:")


def test_a_failed_tc_command_leaves_nothing_half_built():
    class Refuses(FakeHost):
        def __call__(self, argv, script=None):
            if argv[:3] == ["tc", "filter", "add"]:
                self.calls.append(list(argv))
                return subprocess.CompletedProcess(argv, 2, "", "Error: no u32\n")
            return super().__call__(argv, script)
    host = Refuses()
    tc = kf.TcDelays(run=host)
    with pytest.raises(kf.KernelFaultsError, match="no u32"):
        tc.apply(kf.NodeHost("broker-1", HOSTS, (9100,)), [delay("broker-1", "broker-2", 100)])
    assert host.tc_calls()[-1] == DEL_ROOT and host.root["eth0"] == ("noqueue", "0:") and tc.installed == {}


def test_leftover_delays_of_an_earlier_agent_are_removed():
    host = FakeHost(root=("prio", "b100:"))
    assert kf.remove_leftover_delays(run=host) == ["eth0"]
    assert host.tc_calls() == [DEL_ROOT] and host.root["eth0"] == ("noqueue", "0:")


def test_kernel_delay_rules_are_no_nft_rules_and_no_edge_delay():
    rules = [delay("broker-2", "broker-1", 100)]
    assert kf.ruleset(kf.NodeHost("broker-1", HOSTS, (9100,)), rules) == kf.ruleset(
        kf.NodeHost("broker-1", HOSTS, (9100,)), [])  # not a drop: netem's
    st = FaultState("broker-1")
    st.apply(spec(*rules))
    assert st.decide("broker-2", "/brokerlab.Broker/Fetch").delay_ms == 0


def test_without_netem_delay_stays_at_the_edge_and_status_says_why(agent_on):
    host = FakeHost(netem=False)
    a = agent_on(host)
    st = a.status()
    assert (st.network, st.netem, st.netem_missing) == ("netns", False,
                                                         "this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM)")
    with pytest.raises(kf.KernelFaultsError, match="cannot apply delay as a kernel rule: this kernel has no netem"):
        a.set_faults(spec(delay("broker-1", "broker-2", 100)))
    assert host.tc_calls() == []
    # The controller asks the agents, keeps delay an edge rule and says why; with netem it is a kernel rule.
    for netem, missing, layer, text in (
            (False, st.netem_missing, "edge", "edge (this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM))"),
            (True, "", "kernel", "kernel (netem; from clients: edge)")):
        ctl, set_rules = _controller(apb.AgentStatus(network="netns", netem=netem, netem_missing=missing))
        ctl.delay(["broker-1:broker-2"], 100, 10)
        assert ctl.last_layers == [layer]
        assert {r.layer or "edge" for r in set_rules["broker-1"] if r.kind == "delay"} == {layer}
        assert ctl.delay_layer() == text and ctl.layers()["delay, jitter"] == text
        ctl.delay(["client:*:broker-1"], 100)  # a client's packets leave from no namespace of ours
        assert ctl.last_layers == ["edge"]
        ctl.close()
    # The edge applies what the kernel does not.
    edge = FaultState("broker-2")
    edge.apply(spec(Rule("delay", "broker-1", "broker-2", 100, tag="delay")))
    assert edge.decide("broker-1", "/brokerlab.Broker/Fetch").delay_ms == 100


def test_the_controller_names_the_agents_without_netem_when_only_some_lack_it():
    ctl, _ = _controller(apb.AgentStatus(network="netns", netem=True),
                         broker_2=apb.AgentStatus(network="netns", netem_missing="no tc command"))
    assert ctl.delay_layer() == "edge (broker-2: no tc command)"
    ctl.close()


def _controller(status: apb.AgentStatus, **per_node: apb.AgentStatus):
    """A ChaosController whose agents are fakes answering Status with `status` (per_node: broker_2=...),
    keeping the rules SetFaults gives them."""
    from chaos.controller import ChaosController, NodeInfo
    from node.faults import rules_from_pb
    ctl = ChaosController("10.213.0.2:9100", state_path="/nonexistent/x.json", control_token="t")
    ctl.nodes = {n: NodeInfo(n, f"{h}:9100", f"{h}:9190") for n, h in HOSTS.items()}
    kept = {n: apb.FaultRules() for n in HOSTS}
    set_rules: dict[str, list[Rule]] = {}

    def call(name, method, request=None, timeout_s=None):
        if method == "Status":
            return per_node.get(name.replace("-", "_"), status)
        if method == "GetFaults":
            return kept[name]
        if method == "SetFaults":
            kept[name] = request
            set_rules[name] = rules_from_pb(request.rules)
            return request
        raise AssertionError(method)
    ctl._agent_call = call
    return ctl, set_rules


def test_ipv6_destinations_and_the_limit_of_prio_bands():
    cmds = kf.tc_commands("eth0", {"fd00::5": (10, 0), "10.0.0.5": (10, 0)})
    assert cmds[-2:] == [
        ["tc", "filter", "add", "dev", "eth0", "parent", "b100:", "protocol", "ip", "prio", "1", "u32", "match",
         "ip", "dst", "10.0.0.5/32", "flowid", "b100:4"],
        ["tc", "filter", "add", "dev", "eth0", "parent", "b100:", "protocol", "ipv6", "prio", "2", "u32", "match",
         "ip6", "dst", "fd00::5/128", "flowid", "b100:4"]]
    assert kf.tc_commands("eth0", {}) == []
    many = {f"10.0.0.{i}": (i, 0) for i in range(1, 14)}
    assert kf.tc_commands("eth0", many)[0][-1] == "16"
    with pytest.raises(kf.KernelFaultsError, match="14 different delays on one node's links"):
        kf.tc_commands("eth0", {**many, "10.0.0.99": (99, 0)})
