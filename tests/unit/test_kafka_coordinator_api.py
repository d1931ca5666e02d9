"""The Kafka listener's group and transaction adapters (node/kafka/coordinator_api.py, group_api.py,
txn_api.py): what they pass to the drivers and what they answer, per version. Drivers are fakes that
record their calls; the real drivers behind a real listener are covered by
tests/integration/test_kafka_client_groups_txns.py."""
from __future__ import annotations

import datetime

import pytest
from kio.schema.request_header.v2.header import RequestHeader
from kio.serial import entity_reader

from client.common import errors as E
from client.common.config import BrokerConfig
from client.common.pb import metadata_pb2 as mpb
from client.common.types import TopicPartition
from node import group as G
from node.internal_log import OFFSETS_TOPIC, TXN_TOPIC
from node.kafka import COORDINATOR_NODE_ID, coordinator_api
from node.kafka.codec import build, encode_response, request_class, response_class
from node.txn import TxnRecord, TxnState

ENDPOINT = (COORDINATOR_NODE_ID, "127.0.0.1", 19092)


class FakeGroups:
    def __init__(self):
        self.calls: list = []
        self.offsets = {TopicPartition("t", 0): G.OffsetAndMetadata(42, "m", 1)}
        self.unstable: set = set()

    def join_group(self, r, client_host, *, require_known_member_id=True):
        self.calls.append(("join", r, require_known_member_id))
        return G.JoinGroupResponse("m-1", 0, 1, "consumer", "range", "m-1", (G.JoinGroupMember("m-1", None, b"x"),))

    def sync_group(self, r):
        self.calls.append(("sync", r))
        return G.SyncGroupResponse("m-1", 0, "consumer", "range", b"assignment")

    def heartbeat(self, r):
        self.calls.append(("heartbeat", r))
        return E.RebalanceInProgressError.code

    def leave_group(self, r):
        self.calls.append(("leave", r))
        return G.LeaveGroupResult(0, tuple(G.LeaveMemberResult(m.member_id, None, E.UnknownMemberIdError.code)
                                           for m in r.members))

    def commit(self, r):
        self.calls.append(("commit", r))
        return G.CommitResult(0, {(p.topic, p.partition): 0 for p in r.partitions})

    def unstable_offsets(self, group_id, tps):
        self.calls.append(("unstable", group_id, tps))
        return {tp for tp in tps if tp in self.unstable}

    def fetch_offsets(self, group_id, tps):
        return {tp: self.offsets.get(tp) for tp in tps} if tps is not None else dict(self.offsets)

    def describe(self, group_id):
        return None

    def list_groups(self):
        return [("g-stable", "consumer", "Stable"), ("g-empty", "consumer", "Empty")]

    def delete(self, group_id):
        return {"g-empty": 0, "g-stable": E.NonEmptyGroupError.code}.get(group_id, E.GroupIdNotFoundError.code)


class FakeTxns:
    def __init__(self, error: E.KafkaError | None = None):
        self.error = error
        self.calls: list = []

    def init_producer_id(self, tid, timeout_ms, expected=None):
        self.calls.append(("init", tid, timeout_ms) + ((expected,) if expected else ()))
        return (self.error, -1, -1) if self.error else (None, 7, 3)

    def add_partitions(self, *args):
        self.calls.append(("add_partitions", *args))
        return self.error

    def add_offsets(self, *args):
        return self.error

    def end_txn(self, *args):
        self.calls.append(("end", *args))
        return self.error

    def txn_offset_commit(self, *args):
        self.calls.append(("txn_offset_commit", *args))
        return self.error

    def list_transactions(self, states, producer_ids):
        self.calls.append(("list", states, producer_ids))
        return [TxnRecord("tid-1", 7, 0, 60000, TxnState.ONGOING, frozenset({("t", 1), ("t", 0)}), txn_start_ms=1000)]

    def describe_transactions(self, tids):
        rec = TxnRecord("tid-1", 7, 2, 60000, TxnState.EMPTY)
        return [(tid, None, rec) if tid == "tid-1" else (tid, E.TransactionalIdNotFoundError(), None)
                for tid in tids]


def internal_topics_metadata(brokers: int = 3, leader: int = 1, topics=(OFFSETS_TOPIC, TXN_TOPIC)):
    """Cluster metadata with `brokers` live brokers and the internal `topics`, one partition each."""
    md = mpb.MetadataResponse()
    for b in range(1, brokers + 1):
        md.brokers.add(node_id=b, host="127.0.0.1", port=9100 + b)
    for name in topics:
        md.topics.add(name=name, internal=True).partitions.add(partition=0, leader=leader, replicas=[1, 2, 3])
    return md


class Ctx:
    """The KafkaContext attributes these handlers use."""

    def __init__(self, groups=None, txns=None, endpoint=ENDPOINT, md=None):
        self.group_coordinator, self.txn_coordinator = groups, txns
        self.broker = None
        self.endpoint = endpoint
        self.md = md if md is not None else internal_topics_metadata()
        self.config = BrokerConfig.from_props({})  # Kafka's replication factors: 3

    @staticmethod
    def response_class(header):
        return response_class(header.request_api_key, header.request_api_version)

    def cluster_metadata(self, topics=()):
        return self.md

    def kafka_nodes(self, md):
        return [(1, "127.0.0.1", 19093)] + ([self.endpoint] if self.endpoint else [])


def call(ctx, api_key: int, version: int, body: dict, *, decode: bool = True):
    """Runs the registered handler on a request built from `body`; returns the response after a
    round trip through its wire encoding (so it is encodable in that version). decode=False: encoded
    only (kio cannot read some values Kafka writes, such as a -1 timestamp)."""
    header = RequestHeader(request_api_key=api_key, request_api_version=version, correlation_id=5,
                           client_id="test-client")
    lo, hi, handler = coordinator_api.HANDLERS[api_key]
    assert lo <= version <= hi
    response = handler(ctx, header, build(request_class(api_key, version), body))
    frame = encode_response(5, response)
    if not decode:
        return response
    cls = type(response)
    header_size = 4 + 4 + (1 if cls.__flexible__ else 0)
    decoded, _ = entity_reader(cls)(frame, header_size)
    assert decoded == response
    return response


def ms(n: int) -> datetime.timedelta:
    return datetime.timedelta(milliseconds=n)


# ---------------------------------------------------------------------------------------------- registry

def test_advertised_ranges_keep_to_the_clients_and_kafka_30():
    ranges = {k: v[:2] for k, v in coordinator_api.HANDLERS.items()}
    assert ranges == {10: (0, 6), 8: (2, 8), 9: (1, 8), 11: (0, 7), 12: (0, 4), 13: (0, 4), 14: (0, 5),
                      15: (0, 5), 16: (0, 4), 22: (0, 4), 24: (0, 3), 25: (0, 3), 26: (0, 3), 28: (0, 3),
                      42: (0, 2), 65: (0, 0), 66: (0, 0)}
    # kafka-python reads JoinGroup 9 as a 3.2 broker; AddPartitionsToTxn 4 (transactions v2) as 3.6.
    assert ranges[11][1] < 9 and ranges[24][1] < 4 and ranges[26][0] == 0


def test_every_registered_version_answers_an_empty_request_with_an_encodable_response():
    ctx = Ctx(FakeGroups(), FakeTxns())
    for api_key, (lo, hi, _handler) in coordinator_api.HANDLERS.items():
        for version in range(lo, hi + 1):
            call(ctx, api_key, version, {}, decode=api_key != 65)


# ------------------------------------------------------------------------------------- FindCoordinator

@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_find_coordinator_single_key_names_the_coordinator_node(version):
    r = call(Ctx(), 10, version, {"key": "group-a", "key_type": 0})
    assert (r.error_code, r.node_id, r.host, r.port) == (0, *ENDPOINT)


@pytest.mark.parametrize("version", [4, 5, 6])
def test_find_coordinator_batched_keys_answer_each_key(version):
    r = call(Ctx(), 10, version, {"key_type": 1, "coordinator_keys": ["tid-1", "tid-2"]})
    assert [(c.key, c.node_id, c.host, c.port, c.error_code) for c in r.coordinators] == [
        ("tid-1", *ENDPOINT, 0), ("tid-2", *ENDPOINT, 0)]


@pytest.mark.parametrize("key_type,topic,setting", [(0, OFFSETS_TOPIC, "offsets.topic.replication.factor"),
                                                     (1, TXN_TOPIC, "transaction.state.log.replication.factor")])
def test_find_coordinator_is_not_available_until_the_internal_topic_has_a_leader(key_type, topic, setting):
    """Kafka: COORDINATOR_NOT_AVAILABLE (retriable) while the internal topic is not created (too few
    brokers alive for its replication factor) or its partition has no leader."""
    others = [t for t in (OFFSETS_TOPIC, TXN_TOPIC) if t != topic]
    r = call(Ctx(md=internal_topics_metadata(brokers=1, topics=others)), 10, 3, {"key": "k", "key_type": key_type})
    assert (r.error_code, r.node_id) == (E.CoordinatorNotAvailableError.code, -1)
    assert "alive brokers '1' does not meet the required replication factor '3'" in r.error_message
    assert setting in r.error_message
    r = call(Ctx(md=internal_topics_metadata(brokers=3, topics=others)), 10, 4,
             {"key_type": key_type, "coordinator_keys": ["k"]})
    assert r.coordinators[0].error_code == E.CoordinatorNotAvailableError.code  # enough brokers: being created
    r = call(Ctx(md=internal_topics_metadata(leader=-1)), 10, 3, {"key": "k", "key_type": key_type})
    assert r.error_code == E.CoordinatorNotAvailableError.code and "no leader" in r.error_message
    r = call(Ctx(md=internal_topics_metadata(topics=[topic])), 10, 3, {"key": "k", "key_type": key_type})
    assert (r.error_code, r.node_id) == (0, COORDINATOR_NODE_ID)


def test_find_coordinator_errors():
    r = call(Ctx(endpoint=None), 10, 1, {"key": "g", "key_type": 0})
    assert (r.error_code, r.node_id) == (E.CoordinatorNotAvailableError.code, -1)
    r = call(Ctx(), 10, 4, {"key_type": 1, "coordinator_keys": [""]})
    assert r.coordinators[0].error_code == E.InvalidRequestError.code
    r = call(Ctx(), 10, 6, {"key_type": 2, "coordinator_keys": ["share"]})
    assert r.coordinators[0].error_code == E.InvalidRequestError.code


# ------------------------------------------------------------------------------------------- JoinGroup

JOIN = {"group_id": "g", "session_timeout": ms(10000), "rebalance_timeout": ms(30000), "member_id": "",
        "protocol_type": "consumer", "protocols": [{"name": "range", "metadata": b"meta"}]}


@pytest.mark.parametrize("version,known_required", [(0, False), (3, False), (4, True), (7, True)])
def test_join_group_requires_a_known_member_id_from_v4(version, known_required):
    groups = FakeGroups()
    r = call(Ctx(groups), 11, version, JOIN)
    _, req, required = groups.calls[-1]
    assert required is known_required  # KIP-394: v0-3 clients do not know MEMBER_ID_REQUIRED
    assert req.client_id == "test-client" and req.session_timeout_ms == 10000
    # v0 has no rebalance timeout: the session timeout stands in, as in Kafka
    assert req.rebalance_timeout_ms == (10000 if version == 0 else 30000)
    assert (r.error_code, r.member_id, r.leader, r.protocol_name) == (0, "m-1", "m-1", "range")
    assert [(m.member_id, m.metadata) for m in r.members] == [("m-1", b"x")]


def test_join_group_static_member_passes_its_instance_id():
    groups = FakeGroups()
    call(Ctx(groups), 11, 5, dict(JOIN, group_instance_id="instance-1"))
    assert groups.calls[-1][1].group_instance_id == "instance-1"
    call(Ctx(groups), 11, 5, JOIN)
    assert not groups.calls[-1][1].HasField("group_instance_id")


# ---------------------------------------------------------------------------- on a broker / other errors

@pytest.mark.parametrize("api_key,version,body,field", [
    (11, 5, JOIN, "error_code"), (14, 3, {"group_id": "g"}, "error_code"), (12, 4, {"group_id": "g"}, "error_code"),
    (13, 4, {"group_id": "g", "members": [{"member_id": "m"}]}, "error_code"),
    (26, 1, {"transactional_id": "t"}, "error_code"), (25, 1, {"transactional_id": "t"}, "error_code"),
    (22, 4, {"transactional_id": "t", "transaction_timeout": ms(1000)}, "error_code"),
])
def test_coordinator_requests_on_a_broker_answer_not_coordinator(api_key, version, body, field):
    r = call(Ctx(), api_key, version, body)
    assert getattr(r, field) == E.NotCoordinatorError.code


def test_offset_commit_on_a_broker_answers_not_coordinator_per_partition():
    r = call(Ctx(), 8, 8, {"group_id": "g", "topics": [{"name": "t", "partitions": [{"partition_index": 0},
                                                                                     {"partition_index": 1}]}]})
    assert [p.error_code for p in r.topics[0].partitions] == [E.NotCoordinatorError.code] * 2


def test_list_groups_on_a_broker_is_empty_and_on_the_coordinator_filters_by_state():
    assert call(Ctx(), 16, 4, {}).groups == ()
    r = call(Ctx(FakeGroups()), 16, 4, {"states_filter": ["stable"]})
    assert [(g.group_id, g.group_state) for g in r.groups] == [("g-stable", "Stable")]


def test_delete_groups_answers_each_group():
    r = call(Ctx(FakeGroups()), 42, 2, {"groups_names": ["g-empty", "g-stable", "nope"]})
    assert [(x.group_id, x.error_code) for x in r.results] == [
        ("g-empty", 0), ("g-stable", E.NonEmptyGroupError.code), ("nope", E.GroupIdNotFoundError.code)]
    r = call(Ctx(), 42, 0, {"groups_names": ["g"]})
    assert r.results[0].error_code == E.NotCoordinatorError.code


def test_leave_group_v0_answers_the_members_code_and_v3_each_members():
    groups = FakeGroups()
    r = call(Ctx(groups), 13, 0, {"group_id": "g", "member_id": "m-9"})
    assert r.error_code == E.UnknownMemberIdError.code
    assert [m.member_id for m in groups.calls[-1][1].members] == ["m-9"]
    r = call(Ctx(groups), 13, 3, {"group_id": "g", "members": [{"member_id": "a"}, {"member_id": "",
                                                                                      "group_instance_id": "i"}]})
    assert r.error_code == 0 and [m.member_id for m in r.members] == ["a", ""]
    assert groups.calls[-1][1].members[1].group_instance_id == "i"


# ----------------------------------------------------------------------------------------- OffsetFetch

def test_offset_fetch_v8_answers_each_group():
    groups = FakeGroups()
    r = call(Ctx(groups), 9, 8, {"groups": [
        {"group_id": "g1", "topics": [{"name": "t", "partition_indexes": [0, 1]}]},
        {"group_id": "g2", "topics": None}]})
    g1, g2 = r.groups
    assert [(p.partition_index, p.committed_offset, p.metadata) for p in g1.topics[0].partitions] == [
        (0, 42, "m"), (1, -1, "")]
    assert [(t.name, [p.committed_offset for p in t.partitions]) for t in g2.topics] == [("t", [42])]
    r = call(Ctx(), 9, 8, {"groups": [{"group_id": "g1", "topics": None}]})
    assert r.groups[0].error_code == E.NotCoordinatorError.code


@pytest.mark.parametrize("version", [7, 8])
def test_offset_fetch_require_stable_answers_unstable_offset_commit_for_pending_transactions(version):
    groups = FakeGroups()
    groups.unstable = {TopicPartition("t", 0)}
    topics = [{"name": "t", "partition_indexes": [0, 1]}]
    body = {"group_id": "g", "topics": topics} if version < 8 else {"groups": [{"group_id": "g", "topics": topics}]}
    r = call(Ctx(groups), 9, version, dict(body, require_stable=True))
    parts = (r.topics if version < 8 else r.groups[0].topics)[0].partitions
    assert [(p.partition_index, p.error_code) for p in parts] == [(0, E.UnstableOffsetCommitError.code), (1, 0)]
    # without require_stable the coordinator is not asked and the committed offset is answered
    r = call(Ctx(groups), 9, version, body)
    parts = (r.topics if version < 8 else r.groups[0].topics)[0].partitions
    assert [(p.committed_offset, p.error_code) for p in parts] == [(42, 0), (-1, 0)]


@pytest.mark.parametrize("version", [5, 6, 8])
def test_offset_commit_passes_the_leader_epoch_from_v6(version):
    groups = FakeGroups()
    call(Ctx(groups), 8, version, {"group_id": "g", "topics": [{"name": "t", "partitions": [
        {"partition_index": 0, "committed_offset": 5, "committed_leader_epoch": 3},
        {"partition_index": 1, "committed_offset": 6, "committed_leader_epoch": -1}]}]})
    p0, p1 = groups.calls[-1][1].partitions
    assert p0.HasField("committed_leader_epoch") == (version >= 6) and not p1.HasField("committed_leader_epoch")
    if version >= 6:
        assert p0.committed_leader_epoch == 3


@pytest.mark.parametrize("version", [4, 5, 8])
def test_offset_fetch_answers_the_committed_leader_epoch_from_v5(version):
    groups = FakeGroups()
    groups.offsets = {TopicPartition("t", 0): G.OffsetAndMetadata(42, "m", 1, 7)}
    topics = [{"name": "t", "partition_indexes": [0, 1]}]
    body = {"group_id": "g", "topics": topics} if version < 8 else {"groups": [{"group_id": "g", "topics": topics}]}
    r = call(Ctx(groups), 9, version, body)
    parts = (r.topics if version < 8 else r.groups[0].topics)[0].partitions
    if version >= 5:
        assert [(p.committed_offset, p.committed_leader_epoch) for p in parts] == [(42, 7), (-1, -1)]
    else:
        assert not hasattr(parts[0], "committed_leader_epoch")


def test_offset_commit_answers_each_partitions_own_code():
    groups = FakeGroups()
    groups.commit = lambda r: G.CommitResult(0, {("t", 0): 0, ("nope", 0): E.UnknownTopicOrPartitionError.code})
    r = call(Ctx(groups), 8, 8, {"group_id": "g", "topics": [
        {"name": "t", "partitions": [{"partition_index": 0}]}, {"name": "nope", "partitions": [{"partition_index": 0}]}]})
    assert [(t.name, t.partitions[0].error_code) for t in r.topics] == [
        ("t", 0), ("nope", E.UnknownTopicOrPartitionError.code)]


def test_offset_fetch_v1_carries_a_coordinator_error_on_every_partition():
    r = call(Ctx(), 9, 1, {"group_id": "g", "topics": [{"name": "t", "partition_indexes": [0, 3]}]})
    assert [p.error_code for p in r.topics[0].partitions] == [E.NotCoordinatorError.code] * 2


# ---------------------------------------------------------------------------------------- transactions

@pytest.mark.parametrize("api_key,old,new", [(26, 1, 2), (24, 1, 2), (25, 1, 2), (28, 1, 2), (22, 3, 4)])
def test_producer_fenced_is_invalid_producer_epoch_for_versions_before_kip_588(api_key, old, new):
    ctx = Ctx(FakeGroups(), FakeTxns(E.ProducerFencedError("fenced")))
    body = {"transactional_id": "t", "v3_and_below_transactional_id": "t",
            "v3_and_below_topics": [{"name": "t", "partitions": [0]}],
            "topics": [{"name": "t", "partitions": [{"partition_index": 0}]}]}

    def code_of(r):
        if api_key == 24:
            return r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
        if api_key == 28:
            return r.topics[0].partitions[0].error_code
        return r.error_code
    assert code_of(call(ctx, api_key, old, body)) == E.InvalidProducerEpochError.code
    assert code_of(call(ctx, api_key, new, body)) == E.ProducerFencedError.code


@pytest.mark.parametrize("version", [0, 3])
def test_add_partitions_to_txn_and_txn_offset_commit_answer_per_partition(version):
    unknown, not_attempted = E.UnknownTopicOrPartitionError.code, E.OperationNotAttemptedError.code
    err = E.UnknownTopicOrPartitionError("nope-0")
    err.partition_errors = {("a", 0): not_attempted, ("nope", 0): unknown}
    ctx = Ctx(FakeGroups(), FakeTxns(err))
    r = call(ctx, 24, version, {"v3_and_below_transactional_id": "tid", "v3_and_below_producer_id": 7,
                                "v3_and_below_producer_epoch": 3, "v3_and_below_topics": [
                                    {"name": "a", "partitions": [0]}, {"name": "nope", "partitions": [0]}]})
    assert [(t.name, t.results_by_partition[0].partition_error_code) for t in r.results_by_topic_v3_and_below] == [
        ("a", not_attempted), ("nope", unknown)]
    err.partition_errors = {("a", 0): 0, ("nope", 0): unknown}
    r = call(ctx, 28, version, {"transactional_id": "tid", "group_id": "g", "producer_id": 7, "producer_epoch": 3,
                                "topics": [{"name": "a", "partitions": [{"partition_index": 0}]},
                                           {"name": "nope", "partitions": [{"partition_index": 0}]}]})
    assert [(t.name, t.partitions[0].error_code) for t in r.topics] == [("a", 0), ("nope", unknown)]


def test_init_producer_id_on_the_coordinator_and_transaction_requests():
    txns = FakeTxns()
    ctx = Ctx(FakeGroups(), txns)
    r = call(ctx, 22, 4, {"transactional_id": None, "transaction_timeout": ms(-1)})
    assert (r.error_code, r.producer_id, r.producer_epoch) == (0, 7, 3) and txns.calls[-1][1] == ""
    call(ctx, 22, 1, {"transactional_id": "tid", "transaction_timeout": ms(60000)})
    assert txns.calls[-1] == ("init", "tid", 60000)
    # KIP-360: v3+ names the producer bumping its own epoch; -1 / -1 is nobody
    call(ctx, 22, 3, {"transactional_id": "tid", "transaction_timeout": ms(60000), "producer_id": 7,
                      "producer_epoch": 3})
    assert txns.calls[-1] == ("init", "tid", 60000, (7, 3))
    call(ctx, 22, 4, {"transactional_id": "tid", "transaction_timeout": ms(60000), "producer_id": -1,
                      "producer_epoch": -1})
    assert txns.calls[-1] == ("init", "tid", 60000)
    call(ctx, 24, 0, {"v3_and_below_transactional_id": "tid", "v3_and_below_producer_id": 7,
                      "v3_and_below_producer_epoch": 3,
                      "v3_and_below_topics": [{"name": "a", "partitions": [0, 2]}, {"name": "b", "partitions": [1]}]})
    assert txns.calls[-1] == ("add_partitions", "tid", 7, 3, [("a", 0), ("a", 2), ("b", 1)])
    call(ctx, 26, 0, {"transactional_id": "tid", "producer_id": 7, "producer_epoch": 3, "committed": True})
    assert txns.calls[-1] == ("end", "tid", 7, 3, True)
    call(ctx, 28, 3, {"transactional_id": "tid", "group_id": "g", "producer_id": 7, "producer_epoch": 3,
                      "generation_id": 4, "member_id": "m-1",
                      "topics": [{"name": "a", "partitions": [{"partition_index": 0, "committed_offset": 10,
                                                               "committed_leader_epoch": 5}]}]})
    assert txns.calls[-1] == ("txn_offset_commit", "tid", 7, 3, "g", [("a", 0, 10, "", 5)], "m-1", 4)
    call(ctx, 28, 0, {"transactional_id": "tid", "group_id": "g", "producer_id": 7, "producer_epoch": 3})
    assert txns.calls[-1][-2:] == ("", -1)  # before KIP-447 the generation is not checked


# ------------------------------------------------------------------------------------------------ codec

def test_build_keeps_a_null_array_null_and_builds_a_nullable_one_from_dicts():
    cls = request_class(9, 8)  # OffsetFetch v8: groups[].topics is a nullable array (null: every partition)
    r = build(cls, {"groups": [{"group_id": "a", "topics": None},
                               {"group_id": "b", "topics": [{"name": "t", "partition_indexes": [0]}]}]})
    assert r.groups[0].topics is None
    assert r.groups[1].topics[0].name == "t" and list(r.groups[1].topics[0].partition_indexes) == [0]


def test_list_transactions_filters_and_reports_unknown_states():
    txns = FakeTxns()
    r = call(Ctx(FakeGroups(), txns), 66, 0, {"state_filters": ["Ongoing", "Bogus"], "producer_id_filters": [7]})
    assert txns.calls[-1] == ("list", {"Ongoing"}, {7})
    assert list(r.unknown_state_filters) == ["Bogus"]
    assert [(t.transactional_id, t.producer_id, t.transaction_state) for t in r.transaction_states] == [
        ("tid-1", 7, "Ongoing")]
    assert call(Ctx(), 66, 0, {}).transaction_states == ()  # a broker has none


def test_describe_transactions_per_id():
    r = call(Ctx(FakeGroups(), FakeTxns()), 65, 0, {"transactional_ids": ["tid-1", "nope"]}, decode=False)
    found, missing = r.transaction_states
    assert (found.error_code, found.transaction_state, found.producer_epoch, found.topics) == (0, "Empty", 2, ())
    assert found.transaction_start_time < datetime.datetime.fromtimestamp(0, datetime.UTC)  # written as -1
    assert missing.error_code == E.TransactionalIdNotFoundError.code
    r = call(Ctx(), 65, 0, {"transactional_ids": ["tid-1"]}, decode=False)
    assert r.transaction_states[0].error_code == E.NotCoordinatorError.code
