"""Issue 20 item 6, through the coordinator driver: its persisted state, reloaded after a restart (manual
clock, real RocksDB store, no threads), never lets a broker it has not heard from lead or be placed."""
from __future__ import annotations

from client.common.clock import ManualClock
from client.common.config import BrokerConfig
from node.coordinator import Coordinator


def _coordinator(data_dir: str, clock: ManualClock) -> Coordinator:
    config = BrokerConfig.from_props({"broker.session.timeout.ms": 1000, "broker.heartbeat.interval.ms": 100})
    return Coordinator(data_dir, "127.0.0.1", 0, config, clock=clock)


def test_restarted_coordinator_does_not_elect_a_dead_broker(tmp_path):
    clock = ManualClock(start_ms=0)
    c = _coordinator(str(tmp_path), clock)
    epochs = {b: c.mutate(lambda s, now, b=b: s.register_broker(b, "127.0.0.1", 9100 + b, "", now)) for b in (1, 2, 3)}
    c.mutate(lambda s, now: s.create_topic("t", 1, 2, {"unclean.leader.election.enable": "true"}))
    p = c.state.topics["t"].partitions[0]
    leader = p.leader
    lagging = next(r for r in p.replicas if r != leader)
    other = ({1, 2, 3} - set(p.replicas)).pop()
    # The follower dies and is fenced out of the ISR; the leader keeps writing alone.
    clock.advance(900)
    for b in (leader, other):
        c.mutate(lambda s, now, b=b: s.heartbeat(b, epochs[b], now))
    clock.advance(200)
    assert c.mutate(lambda s, now: s.tick(now)) == [lagging]
    assert p.isr == [leader]
    c.stop()

    # The coordinator restarts (a fresh monotonic clock) and the leader restarts right after it.
    clock = ManualClock(start_ms=0)
    c = _coordinator(str(tmp_path), clock)
    try:
        clock.advance(50)
        c.mutate(lambda s, now: s.register_broker(leader, "127.0.0.1", 9100 + leader, "", now))
        p = c.state.topics["t"].partitions[0]
        assert p.leader == leader and p.isr == [leader]  # old code: the dead, lagging follower, unclean
        assert {b.node_id for b in c.metadata().brokers if b.fenced} == {1, 2, 3} - {leader}
        c.mutate(lambda s, now: s.heartbeat(other, epochs[other], now))
        assert {b.node_id for b in c.metadata().brokers if not b.fenced} == {leader, other}
    finally:
        c.stop()


def _with_brokers(tmp_path, configs: dict, n: int = 2) -> Coordinator:
    clock = ManualClock(start_ms=0)
    config = BrokerConfig.from_props({"broker.session.timeout.ms": 1000, "broker.heartbeat.interval.ms": 100,
                                      **configs})
    c = Coordinator(str(tmp_path), "127.0.0.1", 0, config, clock=clock)
    for b in range(1, n + 1):
        c.mutate(lambda s, now, b=b: s.register_broker(b, "127.0.0.1", 9100 + b, "", now))
    return c


def test_auto_create_entry_point_uses_num_partitions_and_default_replication_factor(tmp_path):
    """Coordinator.auto_create_topics / metadata(allow_auto_topic_creation=True): what the gRPC Metadata
    service and the Kafka listener call for an unknown topic (issue 20 item 11)."""
    c = _with_brokers(tmp_path, {"num.partitions": 3, "default.replication.factor": 2})
    try:
        md = c.metadata(["orders"])
        assert md.topics[0].error_code != 0 and "orders" not in c.state.topics  # not asked: not created
        md = c.metadata(["orders"], allow_auto_topic_creation=True)
        t = md.topics[0]
        assert t.error_code == 0 and len(t.partitions) == 3 and all(len(p.replicas) == 2 for p in t.partitions)
        assert c.auto_create_topics(["orders"]) == {}  # exists: left out
        assert c.store.get_json("controller")["topics"][-1]["name"] == "orders"  # persisted
    finally:
        c.stop()


def test_auto_create_off_leaves_unknown_topics_unknown(tmp_path):
    c = _with_brokers(tmp_path, {"auto.create.topics.enable": False})
    try:
        out = c.auto_create_topics(["orders"])
        assert "auto.create.topics.enable=false" in str(out["orders"])
        assert c.metadata(["orders"], allow_auto_topic_creation=True).topics[0].error_code == 3
        assert "orders" not in c.state.topics
    finally:
        c.stop()
