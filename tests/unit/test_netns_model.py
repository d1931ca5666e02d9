"""Issue 15, the models: namespace plans, subnet choice, leftovers, kernel rulesets and which layer
applies a fault. No I/O."""
from __future__ import annotations

import ipaddress

import pytest

from client.common.pb import agent_pb2 as apb
from node import netns
from node.faults import FaultState, Rule, rules_from_pb, rules_to_pb
from node.kernel_faults import KernelFaultsError, NodeHost, kernel_expressible, ruleset

NODES = ("coordinator", "broker-1", "broker-2", "broker-3")
HOSTS = {"coordinator": "10.213.0.2", "broker-1": "10.213.0.3", "broker-2": "10.213.0.4", "broker-3": "10.213.0.5"}


def test_plan_names_addresses_and_commands():
    plan = netns.NetnsPlan("bl4194304a-", ipaddress.ip_network("10.213.7.0/24"), NODES)
    assert plan.bridge == "bl4194304a-br" and len(plan.bridge) <= 15
    assert plan.host_ip == "10.213.7.1"
    assert [plan.ip(n) for n in NODES] == ["10.213.7.2", "10.213.7.3", "10.213.7.4", "10.213.7.5"]
    assert plan.namespace("broker-2") == "bl4194304a-broker-2"
    cmds = plan.commands()
    assert cmds[:3] == [["link", "add", "bl4194304a-br", "type", "bridge"],
                        ["addr", "add", "10.213.7.1/24", "dev", "bl4194304a-br"],
                        ["link", "set", "bl4194304a-br", "up"]]
    assert ["-n", "bl4194304a-broker-3", "addr", "add", "10.213.7.5/24", "dev", "eth0"] in cmds
    # No route anywhere but the subnet: no command adds a default route.
    assert not any("route" in c for c in cmds)


@pytest.mark.parametrize("prefix,subnet,why", [
    ("x1a-", "10.1.0.0/24", "bad netns prefix"),
    ("bl1a-", "10.1.0.0/30", "no room"),
])
def test_plan_rejects(prefix, subnet, why):
    with pytest.raises(ValueError, match=why):
        netns.NetnsPlan(prefix, ipaddress.ip_network(subnet), NODES)


def test_pick_subnet_skips_every_network_in_use():
    used = [ipaddress.ip_network("10.213.0.0/24"), ipaddress.ip_network("10.213.1.7/32"),
            ipaddress.ip_network("192.0.2.0/24")]
    assert str(netns.pick_subnet(used)) == "10.213.2.0/24"
    with pytest.raises(netns.NetnsError, match="give --subnet"):
        netns.pick_subnet([ipaddress.ip_network("10.213.0.0/16")])


@pytest.mark.parametrize("text,ok", [("10.9.0.0/24", True), ("192.168.50.0/24", True), ("8.8.8.0/24", False),
                                     ("127.0.0.0/8", False), ("10.9.0.1/24", False), ("fd00::/64", False)])
def test_parse_subnet(text, ok):
    if ok:
        assert str(netns.parse_subnet(text)) == text
    else:
        with pytest.raises(ValueError, match="--subnet"):
            netns.parse_subnet(text)


def test_leftovers_are_ours_with_a_dead_owner():
    ns = ["bl100a-coordinator", "bl100a-broker-1", "bl200b-broker-1", "docker-ns", "blx-1"]
    links = ["bl100a-br", "bl100a-0", "bl200b-br", "eth0", "bltest"]
    dead_ns, dead_links = netns.leftovers(ns, links, alive=lambda pid: pid == 200)
    assert dead_ns == ["bl100a-broker-1", "bl100a-coordinator"]
    assert dead_links == ["bl100a-0", "bl100a-br"]


def me(name="broker-1", ports=(9100, 9092)):
    return NodeHost(name, HOSTS, ports)


def test_ruleset_partition_both_ways_one_way_loss_and_cut_clients():
    rules = [Rule("drop", "broker-2", "broker-1", tag="partition", layer="kernel"),
             Rule("drop", "broker-1", "broker-2", tag="partition", layer="kernel"),  # enforced at broker-2
             Rule("loss", "broker-3", "broker-1", probability=0.25, tag="loss", layer="kernel"),
             Rule("drop", "client:*", "broker-1", tag="client", layer="kernel"),
             Rule("delay", "broker-3", "broker-1", 100, tag="delay")]  # edge: not here
    text = ruleset(me(), rules)
    assert text.startswith("table inet brokerlab\ndelete table inet brokerlab\ntable inet brokerlab {")
    body = [ln.strip() for ln in text.splitlines() if "saddr" in ln]
    assert body == ['ip saddr 10.213.0.4 drop comment "partition broker-2"',
                    'ip saddr 10.213.0.5 numgen random mod 10000 < 2500 drop comment "loss broker-3"',
                    ('ip saddr != { 10.213.0.2, 10.213.0.3, 10.213.0.4, 10.213.0.5 } tcp dport { 9092, 9100 } '
                     'drop comment "client client:*"')]
    # At broker-2 only the rule aimed at it: a one-way partition is one rule on one side.
    assert [ln.strip() for ln in ruleset(me("broker-2"), rules).splitlines() if "saddr" in ln] == [
        'ip saddr 10.213.0.3 drop comment "partition broker-1"']


def test_ruleset_without_rules_removes_the_table_only():
    assert ruleset(me(), []) == "table inet brokerlab\ndelete table inet brokerlab\n"


def test_ruleset_needs_addresses():
    with pytest.raises(KernelFaultsError, match="no address known for broker-9"):
        ruleset(me(), [Rule("drop", "broker-9", "broker-1", layer="kernel")])
    with pytest.raises(KernelFaultsError, match="not an IP address"):
        ruleset(NodeHost("broker-1", {**HOSTS, "broker-2": "node2.example"}, (9100,)),
                [Rule("drop", "broker-2", "broker-1", layer="kernel")])


@pytest.mark.parametrize("rule,kernel", [
    (Rule("drop", "broker-1", "broker-2"), True),
    (Rule("loss", "coordinator", "broker-2", probability=0.5), True),
    (Rule("drop", "client:*", "broker-2"), True),
    (Rule("drop", "client:p1", "broker-2"), False),  # a client id is not an address
    (Rule("drop", "broker-1", "coordinator", method="BrokerHeartbeat"), False),  # a method is not a packet
    (Rule("delay", "broker-1", "broker-2", 100), False),
    (Rule("drop-response", "client:*", "broker-2", probability=0.5), False),
])
def test_which_rules_the_kernel_can_express(rule, kernel):
    assert kernel_expressible(rule, set(NODES)) is kernel


def test_layer_survives_the_wire_and_the_edge_ignores_kernel_rules():
    rules = [Rule("drop", "broker-2", "broker-1", tag="partition", layer="kernel"),
             Rule("drop", "broker-3", "broker-1", tag="partition")]
    assert rules_from_pb(rules_to_pb(rules)) == rules
    st = FaultState("broker-1")
    st.apply(apb.FaultRules(rules=rules_to_pb(rules)))
    assert st.decide("broker-2", "/brokerlab.Broker/Fetch").action == "pass"  # the kernel drops it, not the edge
    assert st.decide("broker-3", "/brokerlab.Broker/Fetch").action == "refuse"
    with pytest.raises(ValueError, match="unknown fault layer"):
        rules_from_pb([apb.FaultRule(kind="drop", layer="tc")])


def test_controller_makes_expressible_rules_kernel_rules_under_netns_only():
    from chaos.controller import ChaosController, NodeInfo
    for network, want in (("netns", ["kernel", "edge", "edge"]), ("edge", ["edge", "edge", "edge"])):
        ctl = ChaosController("10.213.0.2:9100", state_path="/nonexistent/x.json", control_token="t", network=network)
        ctl.nodes = {n: NodeInfo(n, f"{h}:9100", f"{h}:9190") for n, h in HOSTS.items()}
        ctl._netem = False  # what the agents would have said
        out = ctl._layered([Rule("drop", "broker-1", "broker-2"), Rule("drop", "client:p1", "broker-2"),
                            Rule("delay", "broker-1", "broker-2", 5)])
        assert [r.layer or "edge" for r in out] == want
        assert ctl._hosts() == HOSTS
        ctl.close()
    with pytest.raises(ValueError, match="network must be one of"):
        ChaosController("x:1", control_token="t", network="tc")


def test_experiments_say_where_network_faults_go():
    from chaos.experiment import ExperimentError, parse_experiment
    assert parse_experiment({"title": "t"}).network == "edge"
    assert parse_experiment({"title": "t", "network": "netns"}).network == "netns"
    with pytest.raises(ExperimentError, match="network: expected one of edge, netns, got 'tc'"):
        parse_experiment({"title": "t", "network": "tc"})


def test_new_prefix_takes_the_first_letter_no_live_cluster_of_this_process_has():
    taken = {"bl42a-", "bl42b-"}
    assert netns.new_prefix(42, taken=lambda p: p in taken) == "bl42c-"
    with pytest.raises(netns.NetnsError, match="runs 26 netns clusters"):
        netns.new_prefix(42, taken=lambda p: True)
    assert netns.owner_pid("bl42c-broker-1") == 42 and netns.owner_pid("bl42-x") is None


def test_controller_asks_the_agents_again_when_none_answered():
    from chaos.controller import ChaosController, ChaosError, NodeInfo
    ctl = ChaosController("10.213.0.2:9100", state_path="/nonexistent/x.json", control_token="t")
    ctl.nodes = {n: NodeInfo(n, f"{h}:9100", f"{h}:9190") for n, h in HOSTS.items()}
    answers = {"up": False}

    def call(name, method, request=None, timeout_s=None):
        if not answers["up"]:
            raise ChaosError(f"{method} {name}: agent unreachable")
        return apb.AgentStatus(node=name, network="netns")
    ctl._agent_call = call
    assert ctl.network == "edge"  # nothing known yet: edge, not remembered
    answers["up"] = True
    assert ctl.network == "netns"
    ctl.close()
