"""Issue 20 item 10: the broker clamps what a request asks (wait, bytes, produce timeout) — driven through the
real Broker.fetch / Broker.produce in-process, with a fake clock for the waits (no sleeps, no timing)."""
from __future__ import annotations

import pytest

import node.broker as broker_module
from client.common import errors
from node.broker import FetchPartition, PartitionProduce
from tests.broker_driver import TOPIC, batch, make_broker, metadata

GIB = 1 << 30
HOUR_MS = 3_600_000


class FakeTime:
    """Stands in for the `time` module inside node.broker: time moves only when a wait "sleeps"."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class FakeCondition:
    """A condition whose wait(timeout) returns at once, moving the fake time by the timeout."""

    def __init__(self, clock: FakeTime):
        self.clock = clock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def wait(self, timeout=None):
        self.clock.now += timeout
        return False

    def notify_all(self):
        pass


@pytest.fixture
def broker(tmp_path):
    made = []

    def make(configs=None):
        b = make_broker(tmp_path, 1, configs=configs)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


def _leader_with_data(b, n=20, isr=(1,)):
    b.apply_metadata(metadata(leader=1, leader_epoch=0, isr=list(isr), replicas=[1, 2]))
    for _ in range(n):
        b.append_as_leader(TOPIC, 0, batch(value=b"v" * 200), acks=1)


def test_fetch_asking_2_gib_is_clamped_to_fetch_max_bytes(broker):
    b = broker({"fetch.max.bytes": 2048})
    _leader_with_data(b)
    (res,) = b.fetch([FetchPartition(TOPIC, 0, 0, partition_max_bytes=2 * GIB)], replica_id=-1, isolation_level=0,
                     max_wait_ms=0, min_bytes=1, max_bytes=2 * GIB)
    assert res.error is None and res.high_watermark == 20
    assert 0 < len(res.records) <= 2048  # old code: all 20 batches (about 5 KB)


def test_replica_fetch_asking_2_gib_is_clamped_to_replica_fetch_max_bytes(broker):
    b = broker({"replica.fetch.max.bytes": 1024})
    _leader_with_data(b, isr=(1, 2))
    (res,) = b.fetch([FetchPartition(TOPIC, 0, 0, partition_max_bytes=2 * GIB)], replica_id=2, isolation_level=0,
                     max_wait_ms=0, min_bytes=1, max_bytes=2 * GIB, replica_epoch=12)
    assert res.error is None and 0 < len(res.records) <= 1024


def test_fetch_waiting_an_hour_returns_at_the_purgatory_ceiling(broker, monkeypatch):
    b = broker({"emu.fetch.purgatory.max.ms": 800})
    _leader_with_data(b, n=0)
    clock = FakeTime()
    monkeypatch.setattr(broker_module, "time", clock)
    b.data_cond = FakeCondition(clock)
    start = clock.now
    (res,) = b.fetch([FetchPartition(TOPIC, 0, 0)], replica_id=-1, isolation_level=0, max_wait_ms=HOUR_MS,
                     min_bytes=1, max_bytes=0)
    assert res.error is None and res.records == b""
    assert clock.now - start <= 0.8  # old code: an hour of (fake) waiting


def test_acks_all_produce_waiting_an_hour_times_out_at_the_ceiling(broker, monkeypatch):
    b = broker({"emu.produce.purgatory.max.ms": 2000})
    _leader_with_data(b, n=0, isr=(1, 2))  # follower 2 never fetches: the HW cannot move
    clock = FakeTime()
    monkeypatch.setattr(broker_module, "time", clock)
    b.replicas[(TOPIC, 0)].hw_cond = FakeCondition(clock)
    start = clock.now
    (p,) = b.produce([PartitionProduce(TOPIC, 0, batch())], acks=-1, timeout_ms=HOUR_MS)
    assert isinstance(p.error, errors.RequestTimedOutError)
    assert clock.now - start <= 2.0  # old code: an hour


def test_a_batch_above_max_message_bytes_is_refused(broker):
    b = broker({"message.max.bytes": 300})
    _leader_with_data(b, n=0)
    small, big = batch(value=b"s"), batch(value=b"b" * 400)
    (ok, too_big) = b.produce([PartitionProduce(TOPIC, 0, small), PartitionProduce(TOPIC, 0, big)], acks=1,
                              timeout_ms=1000)
    assert ok.error is None and ok.result.base_offset == 0
    assert isinstance(too_big.error, errors.MessageTooLargeError) and "max.message.bytes=300" in str(too_big.error)
    assert b.replicas[(TOPIC, 0)].model.log_end_offset == 1  # nothing of the big batch was appended
    # A topic's own max.message.bytes overrides the broker's message.max.bytes.
    b.apply_metadata(metadata(leader=1, leader_epoch=0, isr=[1], replicas=[1, 2], metadata_epoch=2,
                              configs={"max.message.bytes": "100000"}))
    (p,) = b.produce([PartitionProduce(TOPIC, 0, big)], acks=1, timeout_ms=1000)
    assert p.error is None and p.result.base_offset == 1
