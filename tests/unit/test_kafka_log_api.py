"""The Kafka listener's Fetch adapter (node/kafka/log_api.py) over a fake broker: what it answers per
partition, after a round trip through the wire encoding of the version asked."""
from __future__ import annotations

import pytest
from kio.schema.request_header.v2.header import RequestHeader
from kio.serial import entity_reader

from client.common import errors as E
from node.broker import FetchedPartition
from node.kafka import log_api
from node.kafka.codec import build, encode_response, request_class, response_class


class FakeBroker:
    def __init__(self, fetched):
        self.fetched = fetched

    def fetch(self, parts, **kw):
        return [self.fetched[(p.topic, p.partition)] for p in parts]


class Ctx:
    def __init__(self, broker):
        self.broker = broker

    @staticmethod
    def response_class(header):
        return response_class(header.request_api_key, header.request_api_version)


def fetch(ctx, version: int):
    header = RequestHeader(request_api_key=1, request_api_version=version, correlation_id=5, client_id="c")
    body = {"replica_id": -1, "max_wait": 0, "min_bytes": 1, "max_bytes": 1 << 20, "isolation_level": 1,
            "topics": [{"topic": "t", "partitions": [
                {"partition": p, "fetch_offset": 0, "partition_max_bytes": 1 << 20, "current_leader_epoch": -1,
                 "log_start_offset": -1} for p in (0, 1)]}]}
    handler = log_api.HANDLERS[1][2]
    response = handler(ctx, header, build(request_class(1, version), body))
    cls = type(response)
    decoded, _ = entity_reader(cls)(encode_response(5, response), 4 + 4 + (1 if cls.__flexible__ else 0))
    return {p.partition_index: p for t in decoded.responses for p in t.partitions}


@pytest.mark.parametrize("version", [4, 11, 12])
def test_fetch_error_partition_answers_empty_records_not_null(version):
    """librdkafka fails to parse a partition whose records are null ("invalid MessageSetSize -1",
    Fetch v12 as well) and drops the whole response; Kafka answers an error partition with empty records."""
    ctx = Ctx(FakeBroker({("t", 0): FetchedPartition("t", 0, error=E.NotLeaderOrFollowerError()),
                          ("t", 1): FetchedPartition("t", 1, records=b"", high_watermark=0, last_stable_offset=0,
                                                     log_start_offset=0, aborted=[])}))
    got = fetch(ctx, version)
    assert got[0].error_code == E.NotLeaderOrFollowerError.code
    assert got[0].records == b""
    assert got[1].error_code == 0 and got[1].records == b""


@pytest.mark.parametrize("version", [4, 12])
def test_fetch_on_a_node_without_partitions_answers_empty_records(version):
    got = fetch(Ctx(None), version)
    assert all(p.error_code != 0 and p.records == b"" for p in got.values())
