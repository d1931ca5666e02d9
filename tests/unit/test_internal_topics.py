"""The internal topics (`__consumer_offsets`, `__transaction_state`) and their replication factor, Kafka's way:
created only once `offsets.topic.replication.factor` / `transaction.state.log.replication.factor` brokers are
alive, with exactly that factor; until then the coordinators and FindCoordinator (gRPC and the Kafka listener)
answer COORDINATOR_NOT_AVAILABLE. The real Coordinator, group and transaction drivers on a ManualClock; their
threads are not started, the test calls the loaders' `ensure()` rounds itself (no gRPC, no sleeps)."""
from __future__ import annotations

import logging
import time

import pytest
from kio.schema.request_header.v2.header import RequestHeader

from client.common import errors as E
from client.common.clock import ManualClock
from client.common.config import BrokerConfig
from client.common.pb import group_pb2 as gpb
from node.cluster import with_internal_topic_configs
from node.coordinator import Coordinator
from node.group_coordinator import GroupCoordinator, GroupServicer
from node.internal_log import OFFSETS_TOPIC, TXN_TOPIC, WARN_EVERY_MS, InternalTopic
from node.kafka import coordinator_api
from node.kafka.codec import build, request_class
from node.kafka.context import KafkaContext
from node.txn_coordinator import TxnCoordinator

CFG = {"broker.session.timeout.ms": 60_000, "broker.heartbeat.interval.ms": 100}  # Kafka's RF defaults: 3


class Node:
    """A coordinator with its group and transaction drivers, not started."""

    def __init__(self, path, configs: dict | None = None):
        self.clock = ManualClock(1_000)
        self.coord = Coordinator(str(path), "127.0.0.1", 9100, BrokerConfig.from_props({**CFG, **(configs or {})}),
                                 clock=self.clock)
        self.coord.kafka_port = 19092
        # The old code waited 5 s of process time before creating a topic with fewer replicas: long over.
        self.coord.started_at = time.monotonic() - 60
        self.tc = TxnCoordinator(self.coord)
        self.gc = GroupCoordinator(self.coord)
        self.coord.extensions += [self.tc, self.gc]

    def register(self, *broker_ids: int) -> None:
        for b in broker_ids:
            self.coord.mutate(lambda s, now, b=b: s.register_broker(b, "127.0.0.1", 9100 + b, "", now))

    def ensure_both(self) -> tuple[bool, bool]:
        """One round of each loader: what `_load` of each driver does before it reads its topic."""
        return self.gc.topic.ensure(), self.tc.log.ensure()

    def topic(self, name: str):
        return self.coord.state.topics.get(name)

    def find_grpc(self, key: str, key_type: int):
        return GroupServicer(self.gc).FindCoordinator(gpb.FindCoordinatorRequest(key=key, key_type=key_type), None)

    def find_kafka(self, key: str, key_type: int):
        header = RequestHeader(request_api_key=10, request_api_version=3, correlation_id=1, client_id="c")
        req = build(request_class(10, 3), {"key": key, "key_type": key_type})
        return coordinator_api.handle_find_coordinator(KafkaContext.for_node(self.coord), header, req)

    def join(self):
        r = gpb.JoinGroupRequest(group_id="g", session_timeout_ms=10_000, rebalance_timeout_ms=30_000,
                                 protocol_type="consumer", client_id="c")
        r.protocols.add(name="range", metadata=b"")
        return self.gc.join_group(r, "/127.0.0.1")

    def close(self) -> None:
        self.coord.stop()


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path / "coordinator")
    yield n
    n.close()


def test_too_few_brokers_create_no_internal_topic_and_coordinators_answer_not_available(node):
    node.register(1)
    node.clock.advance(10_000)
    assert node.ensure_both() == (False, False)
    # Never with fewer replicas than configured (the old code made both with replication factor 1 here).
    assert node.topic(OFFSETS_TOPIC) is None and node.topic(TXN_TOPIC) is None

    err, pid, _ = node.tc.init_producer_id("tid", 60_000)
    assert isinstance(err, E.CoordinatorNotAvailableError) and err.retriable and pid == -1
    assert "transaction.state.log.replication.factor" in str(err) and "alive brokers '1'" in str(err)
    with pytest.raises(E.CoordinatorNotAvailableError, match="offsets.topic.replication.factor"):
        node.join()
    for key_type, setting in ((0, "offsets.topic.replication.factor"), (1, "transaction.state.log.replication.factor")):
        g = node.find_grpc("g", key_type)
        assert (g.error_code, g.port) == (E.CoordinatorNotAvailableError.code, 0) and setting in g.error_message
        k = node.find_kafka("g", key_type)
        assert (k.error_code, k.node_id) == (E.CoordinatorNotAvailableError.code, -1) and setting in k.error_message

    node.register(2)
    assert node.ensure_both() == (False, False)
    assert node.topic(OFFSETS_TOPIC) is None and node.topic(TXN_TOPIC) is None

    node.register(3)  # as many alive as configured: created with exactly that factor
    assert node.ensure_both() == (True, True)
    for name, min_isr in ((OFFSETS_TOPIC, "1"), (TXN_TOPIC, "2")):  # min.insync.replicas / transaction...min.isr
        t = node.topic(name)
        assert [sorted(p.replicas) for p in t.partitions] == [[1, 2, 3]] * len(t.partitions)
        assert t.configs["min.insync.replicas"] == min_isr and t.configs["cleanup.policy"] == "compact"
    for key_type in (0, 1):
        g = node.find_grpc("g", key_type)
        assert (g.error_code, g.host, g.port) == (0, "127.0.0.1", 9100)
        k = node.find_kafka("g", key_type)
        assert (k.error_code, k.port) == (0, 19092)
    # Created, not read back yet: the drivers now answer COORDINATOR_LOAD_IN_PROGRESS, as Kafka.
    assert isinstance(node.tc.init_producer_id("tid", 60_000)[0], E.CoordinatorLoadInProgressError)
    with pytest.raises(E.CoordinatorLoadInProgressError):
        node.join()


def test_a_fenced_broker_does_not_count_towards_the_replication_factor(node):
    node.register(1, 2, 3)
    node.coord.mutate(lambda s, now: s.tick(now + CFG["broker.session.timeout.ms"] + 1))  # all three fenced
    node.register(1, 2)
    assert node.ensure_both() == (False, False) and node.topic(TXN_TOPIC) is None
    assert "alive brokers '2'" in str(node.tc.log.unavailable)


def test_an_existing_internal_topic_is_kept_as_it_is(node):
    """A cluster that already has its topic (an older one, with fewer replicas) keeps it: never recreated."""
    node.register(1)
    node.coord.mutate(lambda s, now: s.create_topic(TXN_TOPIC, 1, 1, {"cleanup.policy": "compact"}))
    before = node.coord.state.metadata_epoch
    assert node.tc.log.ensure() is True and node.tc.log.unavailable is None
    assert [p.replicas for p in node.topic(TXN_TOPIC).partitions] == [[1]]
    assert node.coord.state.metadata_epoch == before


def test_leaderless_internal_partition_is_not_available(node):
    node.register(1, 2, 3)
    assert node.ensure_both() == (True, True)
    p = node.topic(TXN_TOPIC).partitions[0]
    p.leader = -1
    assert node.tc.log.ensure() is False
    assert isinstance(node.tc.log.unavailable, E.CoordinatorNotAvailableError)
    assert node.find_kafka("tid", 1).error_code == E.CoordinatorNotAvailableError.code
    assert node.find_grpc("tid", 1).error_code == E.CoordinatorNotAvailableError.code


def test_waiting_topic_warns_naming_the_setting_on_change_and_every_interval(node, caplog):
    caplog.set_level(logging.WARNING, logger="node.internal_log")
    log = InternalTopic(node.coord, TXN_TOPIC, 1, 3, 2)
    node.register(1)

    def lines():
        return [r.getMessage() for r in caplog.records if TXN_TOPIC in r.getMessage()]

    log.ensure()
    log.ensure()
    assert len(lines()) == 1
    assert "'transaction.state.log.replication.factor'" in lines()[0]
    assert "Only 1 broker(s) have ever registered" in lines()[0]
    node.clock.advance(WARN_EVERY_MS)
    log.ensure()
    assert len(lines()) == 2
    node.register(2)  # a change of the alive brokers is said at once
    log.ensure()
    assert len(lines()) == 3 and "alive brokers '2'" in lines()[-1]


@pytest.mark.parametrize("brokers,expected", [(1, 1), (2, 2), (3, 3), (5, 3)])
def test_launchers_set_the_replication_factors_to_at_most_three(brokers, expected):
    out = with_internal_topic_configs({"num.partitions": 2}, brokers)
    assert out == {"num.partitions": 2, "offsets.topic.replication.factor": expected,
                   "transaction.state.log.replication.factor": expected}


def test_launchers_keep_a_given_factor_and_refuse_one_above_the_cluster():
    assert with_internal_topic_configs({"offsets.topic.replication.factor": "1"}, 3)[
        "offsets.topic.replication.factor"] == "1"
    with pytest.raises(E.ConfigError, match="transaction.state.log.replication.factor=3 .* 2 broker"):
        with_internal_topic_configs({"transaction.state.log.replication.factor": 3}, 2)


def test_cluster_launchers_apply_it(tmp_path):
    from chaos.local_cluster import LocalCluster
    from node.cluster import Cluster
    assert Cluster(str(tmp_path), brokers=1).configs["transaction.state.log.replication.factor"] == 1
    lc = LocalCluster(brokers=2, data_dir=str(tmp_path / "lc"))
    assert lc.configs["offsets.topic.replication.factor"] == 2
    with pytest.raises(E.ConfigError, match="offsets.topic.replication.factor"):
        LocalCluster(brokers=1, configs={"offsets.topic.replication.factor": 3})
