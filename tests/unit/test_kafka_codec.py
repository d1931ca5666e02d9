"""node/kafka/codec.py: one handler's plain values become any version's response; frames round-trip."""
from __future__ import annotations

import datetime
import io
import struct

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.metadata.v0 import response as md0
from kio.schema.metadata.v12 import response as md12
from kio.schema.produce.v3 import response as p3
from kio.schema.request_header.v2.header import RequestHeader
from kio.serial import entity_reader, entity_writer

from node.kafka import codec
from node.kafka.registry import load_handlers

BROKER = {"node_id": 1, "host": "h", "port": 9093, "rack": None}
TOPIC = {"error_code": 0, "name": "t", "topic_id": codec.ZERO_UUID, "is_internal": False, "partitions": [
    {"error_code": 0, "partition_index": 0, "leader_id": 1, "leader_epoch": 4, "replica_nodes": [1, 2],
     "isr_nodes": [1], "offline_replicas": []}]}


@pytest.mark.parametrize("module,version", [(md0, 0), (md12, 12)])
def test_build_serves_every_version_from_one_dict(module, version):
    resp = codec.build(codec.response_class(3, version), {"throttle_time": 5, "brokers": [BROKER],
                                                          "cluster_id": "c", "controller_id": 0, "topics": [TOPIC]})
    assert isinstance(resp, module.MetadataResponse)
    assert resp.brokers[0].port == 9093 and resp.topics[0].partitions[0].replica_nodes == (1, 2)
    if version == 12:
        assert resp.throttle_time == datetime.timedelta(milliseconds=5)
        assert resp.topics[0].partitions[0].leader_epoch == 4
    else:  # v0 has neither throttle_time nor leader_epoch: dropped, not an error
        assert not hasattr(resp, "throttle_time")
    framed = codec.encode_response(77, resp)
    (size,) = struct.unpack_from(">i", framed)
    assert size == len(framed) - 4 and struct.unpack_from(">i", framed, 4)[0] == 77


def test_build_converts_error_codes_and_times_and_fills_missing_fields():
    resp = codec.build(p3.ProduceResponse, {"responses": [{"name": "t", "partition_responses": [
        {"index": 2, "error_code": 6, "base_offset": -1, "log_append_time": -1}]}]})
    part = resp.responses[0].partition_responses[0]
    assert part.error_code is ErrorCode.not_leader_or_follower
    assert part.log_append_time is None  # -1: CreateTime, written as -1
    assert resp.throttle_time == datetime.timedelta(0)  # not given: zero
    assert codec.build(p3.PartitionProduceResponse, {"index": 0, "error_code": 9999,
                                                     "base_offset": 0}).error_code is ErrorCode.unknown_server_error


def test_error_response_sets_every_error_field():
    resp = codec.error_response(3, 13, 35)  # Metadata v13 has a top-level error code
    assert resp.error_code is ErrorCode.unsupported_version and resp.topics == ()
    assert codec.error_response(9999, 0, 35) is None


def test_request_round_trip_and_malformed_body():
    buf = io.BytesIO()
    entity_writer(RequestHeader)(buf, RequestHeader(request_api_key=3, request_api_version=12, correlation_id=9,
                                                    client_id="app"))
    req_cls = codec.request_class(3, 12)
    entity_writer(req_cls)(buf, codec.build(req_cls, {"topics": None, "allow_auto_topic_creation": True}))
    frame = buf.getvalue()
    assert codec.peek_header(frame) == (3, 12, 9)
    header, body = codec.decode_request(frame, 3, 12)
    assert header.client_id == "app" and body.topics is None and body.allow_auto_topic_creation
    assert codec.decode_request(frame + b"\0", 3, 12)[1] == body  # trailing bytes are ignored, as Kafka does
    with pytest.raises(codec.MalformedRequest):
        codec.decode_request(frame[:-2], 3, 12)
    with pytest.raises(codec.MalformedRequest, match="too short"):
        codec.peek_header(b"\0\3")
    assert entity_reader(RequestHeader)(frame, 0)[0].correlation_id == 9


def test_librdkafka_admin_metadata_v12_with_bytes_after_the_body_decodes():
    # confluent-kafka 2.16's AdminClient.list_topics(), captured: a Kafka broker serves it
    frame = bytes.fromhex("0003000c00000003000772646b61666b610000000000010000")
    header, body = codec.decode_request(frame, 3, 12)
    assert header.client_id == "rdkafka" and body.topics is None


def test_api_names_are_kafkas():
    assert [codec.api_name(k) for k in (0, 1, 12, 18, 22)] == [
        "Produce", "Fetch", "Heartbeat", "ApiVersions", "InitProducerId"]


def test_registry_ranges_are_ones_kio_can_decode_and_encode():
    table = load_handlers()
    for key, (lo, hi, _) in table.items():
        for v in range(lo, hi + 1):
            assert codec.request_class(key, v) is not None and codec.response_class(key, v) is not None, (key, v)
