"""The leader's ISR expansion counter counts every expansion it proposed and the controller
committed, also when metadata brings the committed ISR before the AlterPartition answer.

The controller wakes metadata watchers before it answers AlterPartition, so the leader often learns
its own committed proposal from metadata first; that path did not count it, and
test_metrics.py's `isrexpands_total >= 1` after a follower restart failed whenever it won.
Driven in-process: the real Broker and controller servicer, the answer held until metadata landed.
"""
from __future__ import annotations

from node.coordinator import ControllerServicer
from tests.broker_driver import (
    TOPIC,
    ServicerStub,
    batch,
    make_broker,
    manual_coordinator,
    partition_with_lagging_follower,
)


class MetadataFirst(ServicerStub):
    """The controller's AlterPartition, with the broker applying the new metadata before the answer."""

    def __init__(self, servicer, coord, broker):
        super().__init__(servicer)
        self.coord, self.broker = coord, broker

    def __getattr__(self, name):
        call = super().__getattr__(name)
        if name != "AlterPartition":
            return call

        def alter(request, timeout=None, metadata=None):
            resp = call(request, timeout)
            self.broker.apply_metadata(self.coord.metadata())  # the watch wakes before the answer lands
            return resp
        return alter


def _expands(b) -> float:
    return b.metrics.isr_expands._value.get()


def test_an_expansion_committed_through_metadata_first_is_counted_once(tmp_path):
    coord = manual_coordinator(tmp_path)
    b = None
    try:
        epochs, leader, x, y = partition_with_lagging_follower(coord)
        b = make_broker(tmp_path, leader)
        b.broker_epoch = epochs[leader]
        b.controller = lambda: MetadataFirst(ControllerServicer(coord), coord, b)
        b.apply_metadata(coord.metadata())
        r = b.replicas[(TOPIC, 0)]
        res = b.append_as_leader(TOPIC, 0, batch(3), acks=1)
        b.on_follower_fetch(r, y, res.last_offset + 1)
        b.on_follower_fetch(r, x, res.last_offset + 1)  # x caught up: the leader proposes {leader, y, x}
        b.isr_executor.run_all()

        assert sorted(coord.state.topics[TOPIC].partitions[0].isr) == sorted([leader, x, y])
        assert sorted(r.model.isr) == sorted([leader, x, y])
        assert _expands(b) == 1
        b.apply_metadata(coord.metadata())  # the same state again: no second count
        assert _expands(b) == 1
    finally:
        if b is not None:
            b.stop()
        coord.stop()
