"""Ceilings on what a request may ask of a broker (node/limits.py, issue 20 item 10): every cap, table-driven."""
from __future__ import annotations

import pytest

from client.common import records
from client.common.config import BrokerConfig
from node import limits

GIB = 1 << 30
HOUR_MS = 3_600_000
DEFAULTS = BrokerConfig.from_props({})


def test_kafka_defaults_of_the_caps():
    c = DEFAULTS
    assert (c.fetch_max_bytes, c.replica_fetch_max_bytes, c.replica_fetch_response_max_bytes,
            c.message_max_bytes) == (57671680, 1048576, 10485760, 1048588)
    assert (c.emu_fetch_purgatory_max_ms, c.emu_produce_purgatory_max_ms) == (1000, 30000)


@pytest.mark.parametrize("replica, max_wait_ms, max_bytes, expect", [
    # a consumer asking 2 GiB for an hour gets fetch.max.bytes for emu.fetch.purgatory.max.ms
    (False, HOUR_MS, 2 * GIB, limits.FetchLimits(1000, 57671680, 57671680)),
    (False, 500, 1 << 20, limits.FetchLimits(500, 1 << 20, 1 << 20)),  # below every cap: as asked
    (False, -5, 0, limits.FetchLimits(0, 57671680, 57671680)),  # 0 bytes: the ceiling; negative wait: none
    # a follower: replica.fetch.response.max.bytes for the response, replica.fetch.max.bytes per partition
    (True, HOUR_MS, 2 * GIB, limits.FetchLimits(1000, 10485760, 1048576)),
    (True, 200, 4096, limits.FetchLimits(200, 4096, 4096)),
])
def test_fetch_limits(replica, max_wait_ms, max_bytes, expect):
    assert limits.fetch_limits(DEFAULTS, replica=replica, max_wait_ms=max_wait_ms, max_bytes=max_bytes) == expect


def test_fetch_caps_follow_the_config():
    c = BrokerConfig.from_props({"fetch.max.bytes": 4096, "replica.fetch.response.max.bytes": 8192,
                                 "replica.fetch.max.bytes": 2048, "emu.fetch.purgatory.max.ms": 50})
    assert limits.fetch_limits(c, replica=False, max_wait_ms=HOUR_MS, max_bytes=2 * GIB) == \
        limits.FetchLimits(50, 4096, 4096)
    assert limits.fetch_limits(c, replica=True, max_wait_ms=HOUR_MS, max_bytes=2 * GIB) == \
        limits.FetchLimits(50, 8192, 2048)


@pytest.mark.parametrize("requested, left, expect", [
    (2 * GIB, 10 * GIB, 1048576),  # a partition asking 2 GiB: the per-partition ceiling
    (0, 10 * GIB, 1048576),  # no own limit: the ceiling
    (1000, 10 * GIB, 1000),  # its own, lower limit
    (2 * GIB, 300, 300),  # what is left of the response
])
def test_partition_budget(requested, left, expect):
    lim = limits.fetch_limits(DEFAULTS, replica=True, max_wait_ms=0, max_bytes=0)
    assert limits.partition_budget(lim, requested, left) == expect


@pytest.mark.parametrize("requested, expect", [(HOUR_MS, 30000), (1500, 1500), (-1, 0), (2**31 - 1, 30000)])
def test_produce_timeout(requested, expect):
    assert limits.produce_timeout_ms(DEFAULTS, requested) == expect


def test_message_max_bytes_topic_overrides_broker():
    assert limits.max_message_bytes(DEFAULTS, {}) == 1048588
    assert limits.max_message_bytes(BrokerConfig.from_props({"message.max.bytes": 100}), {}) == 100
    assert limits.max_message_bytes(DEFAULTS, {"max.message.bytes": "200"}) == 200


def test_oversized_batch_finds_the_first_batch_over_the_limit():
    small = records.build_batch([(0, None, b"x", None)])
    big = records.build_batch([(0, None, b"y" * 500, None)])
    payload = small + big + small
    assert limits.oversized_batch(payload, len(big)) is None
    assert limits.oversized_batch(payload, len(big) - 1) == len(big)
    assert limits.oversized_batch(b"", 0) is None


@pytest.mark.parametrize("requested, expect", [(HOUR_MS, 9000), (2000, 2000), (-3, 0)])
def test_watch_metadata_wait(requested, expect):
    assert limits.watch_max_wait_ms(DEFAULTS, requested) == expect
