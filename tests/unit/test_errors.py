"""The error table: Kafka's codes and names, flags, and no code ever dropped."""
from __future__ import annotations

import grpc
import pytest

from client.common import errors
from client.common.network import transport_error

# (code, name, retriable) as in Kafka's protocol error table.
KAFKA = [
    (-1, "UNKNOWN_SERVER_ERROR", False), (1, "OFFSET_OUT_OF_RANGE", False), (2, "CORRUPT_MESSAGE", True),
    (3, "UNKNOWN_TOPIC_OR_PARTITION", True), (5, "LEADER_NOT_AVAILABLE", True),
    (6, "NOT_LEADER_OR_FOLLOWER", True), (7, "REQUEST_TIMED_OUT", True), (10, "MESSAGE_TOO_LARGE", False),
    (14, "COORDINATOR_LOAD_IN_PROGRESS", True), (15, "COORDINATOR_NOT_AVAILABLE", True),
    (16, "NOT_COORDINATOR", True), (19, "NOT_ENOUGH_REPLICAS", True),
    (20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND", True), (22, "ILLEGAL_GENERATION", False),
    (25, "UNKNOWN_MEMBER_ID", False), (27, "REBALANCE_IN_PROGRESS", False), (36, "TOPIC_ALREADY_EXISTS", False),
    (38, "INVALID_REPLICATION_FACTOR", False), (40, "INVALID_CONFIG", False),
    (45, "OUT_OF_ORDER_SEQUENCE_NUMBER", False), (46, "DUPLICATE_SEQUENCE_NUMBER", False),
    (47, "INVALID_PRODUCER_EPOCH", False), (48, "INVALID_TXN_STATE", False), (51, "CONCURRENT_TRANSACTIONS", True),
    (74, "FENCED_LEADER_EPOCH", True), (75, "UNKNOWN_LEADER_EPOCH", True), (79, "MEMBER_ID_REQUIRED", False),
    (82, "FENCED_INSTANCE_ID", False), (88, "UNSTABLE_OFFSET_COMMIT", True), (90, "PRODUCER_FENCED", False),
]


@pytest.mark.parametrize("code,name,retriable", KAFKA)
def test_kafka_codes_names_and_retriable(code, name, retriable):
    e = errors.for_code(code, "why")
    assert (e.code, e.name, e.retriable) == (code, name, retriable)
    assert "why" in str(e) and name in str(e)


@pytest.mark.parametrize("cls", errors.all_errors())
def test_every_code_round_trips(cls):
    e = errors.for_code(cls.code)
    assert type(e) is cls
    assert errors.class_for_name(cls.name) is cls
    assert cls.name == cls.name.upper() and " " not in cls.name


def test_invalid_metadata_errors_are_retriable():
    for cls in errors.all_errors():
        if cls.invalid_metadata:
            assert cls.retriable, cls.name


def test_unknown_code_is_kept_not_dropped():
    e = errors.for_code(9999, "from the future")
    assert isinstance(e, errors.UnknownServerError) and e.code == 9999 and not e.definite


def test_definite_flags_for_history_fail_vs_info():
    assert errors.NotLeaderOrFollowerError.definite  # refused: surely not appended
    assert not errors.RequestTimedOutError.definite  # may or may not have happened
    assert not errors.KafkaTimeoutError.definite and not errors.KafkaConnectionError.definite


class _Rpc(grpc.RpcError):
    def __init__(self, code):
        self._code = code

    def code(self):
        return self._code

    def details(self):
        return "x"


def test_transport_errors_map_to_indefinite_client_errors():
    assert isinstance(transport_error(_Rpc(grpc.StatusCode.DEADLINE_EXCEEDED)), errors.KafkaTimeoutError)
    e = transport_error(_Rpc(grpc.StatusCode.UNAVAILABLE), "127.0.0.1:1")
    assert isinstance(e, errors.KafkaConnectionError) and e.retriable and not e.definite and "127.0.0.1:1" in str(e)
