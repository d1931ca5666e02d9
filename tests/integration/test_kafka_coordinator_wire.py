"""Issue 18 on a real 3-broker cluster: FindCoordinator, group membership and producer ids on the wire.

Raw requests (tests/kafka_wire.py) to the coordinator's and the brokers' Kafka listeners pin what the
client libraries rely on: every node names the coordinator node; KIP-394 from JoinGroup v4 only; a
static member that restarts takes its place back without a rebalance and fences the old instance; an
idempotent producer gets a cluster-unique id from any node.
"""
from __future__ import annotations

import datetime

from confluent_kafka.admin import AdminClient, NewTopic

from client.common import errors as E
from node.kafka import COORDINATOR_NODE_ID
from tests.helpers import unique_name, wait_until
from tests.kafka_wire import WireClient

METADATA, FIND_COORDINATOR, JOIN_GROUP, HEARTBEAT, SYNC_GROUP, INIT_PRODUCER_ID = 3, 10, 11, 12, 14, 22
OFFSET_FETCH, ADD_PARTITIONS_TO_TXN, ADD_OFFSETS_TO_TXN, END_TXN, TXN_OFFSET_COMMIT = 9, 24, 25, 26, 28


def _kafka_nodes(bs: str) -> dict[int, str]:
    with WireClient(bs) as c:
        md = c.call(METADATA, 12, {"topics": [], "allow_auto_topic_creation": False})
    return {b.node_id: f"{b.host}:{b.port}" for b in md.brokers}


_COORDINATOR_SETTLING = {E.CoordinatorLoadInProgressError.code, E.CoordinatorNotAvailableError.code}


def _join(c: WireClient, version: int, group: str, member_id: str = "", instance: str | None = None):
    # A fresh shared cluster's coordinator may still be loading its groups: retry as clients do.
    def attempt():
        r = c.call(JOIN_GROUP, version, {
            "group_id": group, "session_timeout": datetime.timedelta(seconds=10),
            "rebalance_timeout": datetime.timedelta(seconds=10), "member_id": member_id,
            "group_instance_id": instance, "protocol_type": "consumer",
            "protocols": [{"name": "range", "metadata": b"subscription"}]})
        return None if r.error_code in _COORDINATOR_SETTLING else r
    return wait_until(attempt, 30, what=f"JoinGroup v{version} past the coordinator's loading")


def _init_producer_id(c: WireClient, tid: str, version: int = 4, own: tuple[int, int] = (-1, -1)):
    def attempt():  # a fresh shared cluster may still be loading its transactions: retry as clients do
        r = c.call(INIT_PRODUCER_ID, version, {
            "transactional_id": tid, "transaction_timeout": datetime.timedelta(seconds=60),
            "producer_id": own[0], "producer_epoch": own[1]})
        return None if r.error_code in _COORDINATOR_SETTLING else r
    return wait_until(attempt, 30, what=f"InitProducerId v{version} past the coordinator's loading")


def test_every_node_names_the_coordinator_node_for_groups_and_transactions(shared_cluster):
    nodes = _kafka_nodes(shared_cluster.kafka_bootstrap_servers)
    assert len(nodes) == 4 and COORDINATOR_NODE_ID in nodes
    want = nodes[COORDINATOR_NODE_ID]
    for address in nodes.values():
        with WireClient(address) as c:
            def found(version: int, body: dict, c=c):
                # COORDINATOR_NOT_AVAILABLE until the internal topic exists and this node's metadata shows
                # it (a fresh cluster): retried, as clients do.
                r = c.call(FIND_COORDINATOR, version, body)
                codes = [x.error_code for x in r.coordinators] if version >= 4 else [r.error_code]
                return None if E.CoordinatorNotAvailableError.code in codes else r
            for version in range(4):  # one key
                r = wait_until(lambda v=version: found(v, {"key": "some-group", "key_type": 0}), 30,
                               what="FindCoordinator for a group")
                assert (r.error_code, r.node_id, f"{r.host}:{r.port}") == (0, COORDINATOR_NODE_ID, want)
            for version in (4, 6):  # KIP-699 batches
                r = wait_until(lambda v=version: found(v, {"key_type": 1, "coordinator_keys": ["tid-a", "tid-b"]}),
                               30, what="FindCoordinator for transactions")
                assert [(x.key, x.error_code, x.node_id, f"{x.host}:{x.port}") for x in r.coordinators] == [
                    ("tid-a", 0, COORDINATOR_NODE_ID, want), ("tid-b", 0, COORDINATOR_NODE_ID, want)]


def test_producer_ids_from_any_node_and_coordinator_requests_on_a_broker(shared_cluster):
    nodes = _kafka_nodes(shared_cluster.kafka_bootstrap_servers)
    pids = []
    for address in nodes.values():  # idempotent: any node answers (a broker asks the coordinator)
        with WireClient(address) as c:
            r = c.call(INIT_PRODUCER_ID, 4, {"transactional_id": None,
                                             "transaction_timeout": datetime.timedelta(milliseconds=-1)})
            assert (r.error_code, r.producer_epoch) == (0, 0) and r.producer_id >= 0
            pids.append(r.producer_id)
    assert len(set(pids)) == len(pids)
    broker = next(a for n, a in nodes.items() if n != COORDINATOR_NODE_ID)
    with WireClient(broker) as c:
        r = c.call(INIT_PRODUCER_ID, 4, {"transactional_id": unique_name("tid"),
                                         "transaction_timeout": datetime.timedelta(seconds=60)})
        assert r.error_code == E.NotCoordinatorError.code
        assert _join(c, 7, unique_name("g")).error_code == E.NotCoordinatorError.code


def test_member_id_required_only_from_join_group_v4(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    with WireClient(bs) as c:
        # v3: admitted at once (a v0-3 client does not know MEMBER_ID_REQUIRED); alone, it leads.
        r = _join(c, 3, unique_name("old"))
        assert r.error_code == 0 and r.member_id and r.leader == r.member_id and r.generation_id == 1
        # v4: first the id with MEMBER_ID_REQUIRED, then the join with it.
        group = unique_name("kip394")
        first = _join(c, 4, group)
        assert first.error_code == E.MemberIdRequiredError.code and first.member_id
        r = _join(c, 4, group, first.member_id)
        assert (r.error_code, r.member_id, r.leader) == (0, first.member_id, first.member_id)
        assert [m.member_id for m in r.members] == [first.member_id]


def test_a_restarted_static_member_takes_its_place_back_and_fences_the_old_instance(shared_cluster):
    bs = shared_cluster.kafka_bootstrap_servers
    group = unique_name("static")
    with WireClient(bs) as c:
        r = _join(c, 5, group, instance="instance-1")  # static members skip MEMBER_ID_REQUIRED
        assert r.error_code == 0
        old, generation = r.member_id, r.generation_id
        s = c.call(SYNC_GROUP, 3, {"group_id": group, "generation_id": generation, "member_id": old,
                                   "group_instance_id": "instance-1",
                                   "assignments": [{"member_id": old, "assignment": b"partitions"}]})
        assert (s.error_code, s.assignment) == (0, b"partitions")

        # The same instance restarts (a new process, no member id): it gets a new id in the same
        # generation, without a rebalance, and keeps its assignment.
        r = _join(c, 5, group, instance="instance-1")
        assert r.error_code == 0 and r.member_id != old and r.generation_id == generation

        def heartbeat(member_id: str) -> int:
            return c.call(HEARTBEAT, 3, {"group_id": group, "generation_id": generation, "member_id": member_id,
                                         "group_instance_id": "instance-1"}).error_code
        assert heartbeat(r.member_id) == 0
        assert heartbeat(old) == E.FencedInstanceIdError.code  # the old instance is a zombie
        s = c.call(SYNC_GROUP, 3, {"group_id": group, "generation_id": generation, "member_id": r.member_id,
                                   "group_instance_id": "instance-1", "assignments": []})
        assert (s.error_code, s.assignment) == (0, b"partitions")


def test_kip360_epoch_bumps_fence_a_zombie_and_tolerate_a_retry(shared_cluster):
    tid = unique_name("kip360")

    def init(version: int, own: tuple[int, int] | None):
        with WireClient(shared_cluster.kafka_bootstrap_servers) as c:
            return _init_producer_id(c, tid, version, own if own is not None else (-1, -1))

    zombie = init(4, None)
    assert zombie.error_code == 0
    pid = zombie.producer_id
    successor = init(4, None)  # a new instance with the same transactional.id: epoch + 1
    assert (successor.producer_id, successor.producer_epoch) == (pid, zombie.producer_epoch + 1)
    # The zombie bumping its own epoch (KIP-360) is fenced, not handed the id over its successor.
    assert init(4, (pid, zombie.producer_epoch)).error_code == E.ProducerFencedError.code
    assert init(3, (pid, zombie.producer_epoch)).error_code == E.InvalidProducerEpochError.code  # before KIP-588
    # The successor bumps its own epoch; a retry of that call (its answer lost) gets the same epoch.
    bumped = init(4, (pid, successor.producer_epoch))
    assert (bumped.error_code, bumped.producer_epoch) == (0, successor.producer_epoch + 1)
    again = init(4, (pid, successor.producer_epoch))
    assert (again.error_code, again.producer_epoch) == (0, bumped.producer_epoch)


def test_missing_partitions_in_add_partitions_to_txn_and_txn_offset_commit_are_answered_as_kafka(shared_cluster):
    """AddPartitionsToTxn naming a partition that does not exist adds nothing: UNKNOWN_TOPIC_OR_PARTITION there,
    OPERATION_NOT_ATTEMPTED for the rest. TxnOffsetCommit refuses that partition only and the transaction
    commits the others' offsets, with their leader epoch."""
    unknown, not_attempted = E.UnknownTopicOrPartitionError.code, E.OperationNotAttemptedError.code
    bs = shared_cluster.kafka_bootstrap_servers
    topic, missing, tid, group = unique_name("txn-gaps"), unique_name("nope"), unique_name("tid"), unique_name("g")
    admin = AdminClient({"bootstrap.servers": bs})  # kept: its futures fail once it is collected
    admin.create_topics([NewTopic(topic, 1, 3)])[topic].result(30)
    with WireClient(bs) as c:
        init = _init_producer_id(c, tid)
        assert init.error_code == 0
        ids = {"producer_id": init.producer_id, "producer_epoch": init.producer_epoch}

        def add_partitions(version: int, topics: list) -> dict:
            r = c.call(ADD_PARTITIONS_TO_TXN, version, {
                "v3_and_below_transactional_id": tid, "v3_and_below_producer_id": init.producer_id,
                "v3_and_below_producer_epoch": init.producer_epoch, "v3_and_below_topics": topics})
            return {(t.name, p.partition_index): p.partition_error_code
                    for t in r.results_by_topic_v3_and_below for p in t.results_by_partition}

        for version in (0, 3):  # librdkafka's and kafka-python's
            assert add_partitions(version, [{"name": topic, "partitions": [0, 1]}, {"name": missing, "partitions": [0]}]) \
                == {(topic, 0): not_attempted, (topic, 1): unknown, (missing, 0): unknown}
        end = {"transactional_id": tid, "committed": True, **ids}
        assert c.call(END_TXN, 3, end).error_code == E.InvalidTxnStateError.code  # nothing was added
        assert add_partitions(3, [{"name": topic, "partitions": [0]}]) == {(topic, 0): 0}

        assert c.call(ADD_OFFSETS_TO_TXN, 3, {"transactional_id": tid, "group_id": group, **ids}).error_code == 0
        r = c.call(TXN_OFFSET_COMMIT, 3, {
            "transactional_id": tid, "group_id": group, "generation_id": -1, "member_id": "", **ids, "topics": [
                {"name": topic, "partitions": [{"partition_index": 0, "committed_offset": 0,
                                                "committed_leader_epoch": 2, "committed_metadata": "m"}]},
                {"name": missing, "partitions": [{"partition_index": 0, "committed_offset": 0}]}]})
        assert [(t.name, t.partitions[0].error_code) for t in r.topics] == [(topic, 0), (missing, unknown)]
        assert c.call(END_TXN, 3, end).error_code == 0

        r = c.call(OFFSET_FETCH, 8, {"groups": [{"group_id": group, "topics": None}], "require_stable": True})
        assert [(t.name, p.partition_index, p.committed_offset, p.committed_leader_epoch, p.metadata)
                for t in r.groups[0].topics for p in t.partitions] == [(topic, 0, 0, 2, "m")]
