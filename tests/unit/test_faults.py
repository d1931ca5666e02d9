"""The fault rule table: which call is refused, delayed or loses its reply, for a given rule set."""
from __future__ import annotations

import pytest

from chaos.targets import grudge_of_groups
from client.common.pb import agent_pb2 as apb
from node.faults import Rule, RuleTable, rules_from_pb, rules_to_pb

PRODUCE = "/brokerlab.Broker/Produce"
FETCH = "/brokerlab.Broker/Fetch"
BROKER_HB = "/brokerlab.Controller/BrokerHeartbeat"
GROUP_HB = "/brokerlab.Group/Heartbeat"


def partition_rules(groups, one_way=False):
    return [Rule("drop", src, dst, tag="partition")
            for dst, srcs in grudge_of_groups(groups, one_way).items() for src in srcs]


@pytest.mark.parametrize("src,dst,method,action", [
    ("broker-1", "broker-2", FETCH, "refuse"),
    ("broker-2", "broker-1", FETCH, "refuse"),
    ("broker-1", "coordinator", BROKER_HB, "refuse"),
    ("coordinator", "broker-1", PRODUCE, "refuse"),
    ("broker-2", "broker-3", FETCH, "pass"),  # same side
    ("broker-3", "coordinator", BROKER_HB, "pass"),
    ("client:p1", "broker-1", PRODUCE, "pass"),  # clients are not in the partition
])
def test_two_way_partition(src, dst, method, action):
    table = RuleTable(partition_rules([["broker-1"], ["broker-2", "broker-3", "coordinator"]]))
    assert table.decide(src, dst, method).action == action


@pytest.mark.parametrize("src,dst,action", [
    ("broker-1", "broker-2", "refuse"),  # the first group's traffic never arrives
    ("broker-1", "coordinator", "refuse"),
    ("broker-2", "broker-1", "pass"),  # but it still hears the others
    ("coordinator", "broker-1", "pass"),
])
def test_one_way_partition(src, dst, action):
    table = RuleTable(partition_rules([["broker-1"], ["broker-2", "coordinator"]], one_way=True))
    assert table.decide(src, dst, FETCH).action == action


def test_nodes_in_no_group_keep_every_link():
    table = RuleTable(partition_rules([["broker-1"], ["broker-2"]]))
    assert table.decide("broker-3", "broker-1", FETCH).action == "pass"
    assert table.decide("broker-1", "broker-3", FETCH).action == "pass"
    assert table.decide("broker-1", "broker-2", FETCH).action == "refuse"


@pytest.mark.parametrize("src,method,expect", [
    ("broker-2", BROKER_HB, ("pass", 5000)),
    ("broker-2", GROUP_HB, ("pass", 5000)),
    ("broker-2", "/brokerlab.Controller/AlterPartition", ("pass", 0)),  # data / other traffic flows
    ("broker-1", BROKER_HB, ("pass", 0)),
])
def test_heartbeat_delay_filters_by_method(src, method, expect):
    table = RuleTable([Rule("delay", "broker-2", "coordinator", 5000, method="BrokerHeartbeat|Heartbeat")])
    d = table.decide(src, "coordinator", method)
    assert (d.action, d.delay_ms) == expect


def test_heartbeat_drop_for_one_consumer():
    table = RuleTable([Rule("drop", "client:c1", "coordinator", method="Heartbeat")])
    assert table.decide("client:c1", "coordinator", GROUP_HB).action == "refuse"
    assert table.decide("client:c2", "coordinator", GROUP_HB).action == "pass"
    assert table.decide("client:c1", "coordinator", "/brokerlab.Group/OffsetCommit").action == "pass"


def test_client_cut_off_matches_every_client_but_no_node():
    table = RuleTable([Rule("drop", "client:*", "broker-1")])
    assert table.decide("client:p1", "broker-1", PRODUCE).action == "refuse"
    assert table.decide("client:unknown", "broker-1", FETCH).action == "refuse"
    assert table.decide("broker-2", "broker-1", FETCH).action == "pass"
    assert table.decide("client:p1", "broker-2", PRODUCE).action == "pass"


def test_delays_add_up_and_jitter_stays_in_range():
    table = RuleTable([Rule("delay", "*", "broker-1", 100, 20), Rule("delay", "client:*", "broker-1", 50)], seed=3)
    seen = {table.decide("client:p", "broker-1", PRODUCE).delay_ms for _ in range(200)}
    assert min(seen) >= 130 and max(seen) <= 170 and len(seen) > 5
    assert table.decide("broker-2", "broker-1", FETCH).delay_ms in range(80, 121)
    assert table.decide("client:p", "broker-2", PRODUCE).delay_ms == 0


def test_delay_before_a_drop_is_kept():
    table = RuleTable([Rule("delay", "*", "broker-1", 100), Rule("drop", "broker-2", "broker-1")])
    d = table.decide("broker-2", "broker-1", FETCH)
    assert (d.action, d.delay_ms) == ("refuse", 100)


def test_loss_is_seeded_and_near_its_probability():
    rules = [Rule("loss", "client:*", "broker-1", probability=0.3)]
    a = [RuleTable(rules, seed=7).decide("client:p", "broker-1", PRODUCE).action for _ in range(1)]
    t1, t2 = RuleTable(rules, seed=7), RuleTable(rules, seed=7)
    s1 = [t1.decide("client:p", "broker-1", PRODUCE).action for _ in range(1000)]
    s2 = [t2.decide("client:p", "broker-1", PRODUCE).action for _ in range(1000)]
    assert s1 == s2 and a[0] == s1[0]
    assert 200 < s1.count("refuse") < 400


def test_drop_response_handles_then_loses_the_reply():
    table = RuleTable([Rule("drop-response", "client:*", "broker-1", probability=1.0)])
    assert table.decide("client:p", "broker-1", PRODUCE).action == "drop-response"


def test_rules_round_trip_through_protobuf_and_bad_kind_is_named():
    rules = [Rule("delay", "a", "b", 10, 2, 1.0, "Fetch", "delay"), Rule("drop", tag="partition")]
    assert rules_from_pb(rules_to_pb(rules)) == rules
    with pytest.raises(ValueError, match="unknown fault kind 'explode'"):
        rules_from_pb([apb.FaultRule(kind="explode")])
