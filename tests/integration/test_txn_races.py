"""Races in the transaction drivers (issues 19 and 20), each forced by hand, never by sleeps.

The coordinator tests run the real TxnCoordinator and GroupCoordinator of one
coordinator process over in-memory internal topics (`MemoryTopic`); a restart
is a fresh pair of drivers over the same topics. Marker writes are steered
through the drivers' own hooks (`_leader_address`, `_send_markers`).
"""
from __future__ import annotations

import threading

import pytest

from client.common.clock import ManualClock
from client.common.config import BrokerConfig
from client.common.types import TopicPartition
from node.cluster import FAST_CONFIGS
from node.group_coordinator import GroupCoordinator
from node.txn import TxnState
from node.txn_coordinator import TxnCoordinator


class MemoryTopic:
    """Stands in for InternalTopic: an always-available, replicated-enough log in memory."""

    def __init__(self, partitions: int = 1):
        self.partitions = partitions
        self.logs: list[list[tuple[int, bytes | None, bytes | None]]] = [[] for _ in range(partitions)]
        self.lock = threading.Lock()

    def ensure(self) -> bool:
        return True

    def partition_for(self, key: str) -> int:
        return 0

    def append(self, partition: int, entries, timeout_s: float = 10.0) -> int:
        with self.lock:
            log = self.logs[partition]
            base = len(log)
            log.extend((base + i, k, v) for i, (k, v) in enumerate(entries))
            return base

    def read_all(self, partition: int, timeout_s: float = 30.0):
        with self.lock:
            return list(self.logs[partition])


class FakeStore:
    def __init__(self):
        self.d: dict = {}

    def get_json(self, key, default=None):
        return self.d.get(key, default)

    def put_json(self, key, value) -> None:
        self.d[key] = value


class CoordinatorNode:
    """What the two coordinator extensions use of node.coordinator.Coordinator."""

    def __init__(self, store: FakeStore, clock):
        self.config = BrokerConfig.from_props(dict(FAST_CONFIGS))
        self.store = store
        self.clock = clock
        self.extensions: list = []


class CoordinatorProcess:
    """One incarnation of the coordinator's group + transaction drivers over shared topics."""

    def __init__(self, offsets_topic: MemoryTopic, txn_topic: MemoryTopic, store: FakeStore, clock):
        self.node = CoordinatorNode(store, clock)
        self.gc = GroupCoordinator(self.node)
        self.gc.topic = offsets_topic
        self.tc = TxnCoordinator(self.node)
        self.tc.log = txn_topic
        self.node.extensions += [self.gc, self.tc]
        # The group driver's loader and writer threads are the real ones; the transaction
        # driver's worker is not started: the test runs its rounds (_load, _write_markers).
        self.gc.start()
        assert self.gc.loaded.wait(10), "group coordinator did not load"
        self.tc._load()
        self.reachable: set = set()   # partitions whose leader takes markers

    def markers_reach(self, *tps) -> None:
        self.reachable = set(tps)
        self.tc._leader_address = lambda topic, partition: "leader" if (topic, partition) in self.reachable \
            else None
        self.tc._send_markers = lambda addr, items: [(tid, tp) for tid, _rec, tp in items]

    def stop(self) -> None:
        self.gc.stop()
        self.tc.stop()

    def commit_txn(self, tid: str, group: str, offsets: dict, partitions=()) -> None:
        """A whole transaction through the driver's request methods, as the servicer calls them."""
        tc = self.tc
        err, pid, epoch = tc.init_producer_id(tid, 60000)
        assert err is None, err
        if partitions:
            assert tc.add_partitions(tid, pid, epoch, list(partitions)) is None
        assert tc.add_offsets(tid, pid, epoch, group) is None
        assert tc.txn_offset_commit(tid, pid, epoch, group, [(t, p, o, "") for (t, p), o in offsets.items()]) \
            is None
        assert tc.end_txn(tid, pid, epoch, True) is None

    def committed(self, group: str, topic: str, partition: int) -> int | None:
        om = self.gc.fetch_offsets(group, [TopicPartition(topic, partition)])[TopicPartition(topic, partition)]
        return None if om is None else om.offset


@pytest.fixture
def coordinator_topics():
    return MemoryTopic(), MemoryTopic(), FakeStore(), ManualClock()


def test_recovered_prepare_commit_does_not_replay_offsets_over_newer_ones(coordinator_topics):
    """Issue 19 item 3: transaction A's PrepareCommit hands offset 100 to the group, but its markers
    cannot be written yet (the leader of its output partition is down). Transaction B of another
    worker then commits offset 150 for the same input partition and completes. The coordinator
    restarts and completes A: its offsets must not go back over B's 150."""
    offsets_topic, txn_topic, store, clock = coordinator_topics
    first = CoordinatorProcess(offsets_topic, txn_topic, store, clock)
    first.markers_reach()   # no leader for ("out", 0): A stays PrepareCommit
    first.commit_txn("worker-a", "g", {("in", 0): 100}, partitions=[("out", 0)])
    assert first.committed("g", "in", 0) == 100
    first.commit_txn("worker-b", "g", {("in", 0): 150})
    first.tc._write_markers()   # B has no partitions: complete; A's marker still waits
    assert first.tc.txns["worker-b"].state is TxnState.COMPLETE_COMMIT
    assert first.tc.txns["worker-a"].state is TxnState.PREPARE_COMMIT
    assert first.committed("g", "in", 0) == 150
    first.stop()

    second = CoordinatorProcess(offsets_topic, txn_topic, store, clock)
    try:
        assert second.committed("g", "in", 0) == 150
        second.markers_reach(("out", 0))   # the leader is back: A completes after the restart
        second.tc._write_markers()
        assert second.tc.txns["worker-a"].state is TxnState.COMPLETE_COMMIT
        assert second.committed("g", "in", 0) == 150
    finally:
        second.stop()
    third = CoordinatorProcess(offsets_topic, txn_topic, store, clock)   # and from the log alone
    try:
        assert third.committed("g", "in", 0) == 150
    finally:
        third.stop()


def test_prepare_commit_not_yet_handed_over_is_completed_after_a_restart(coordinator_topics):
    """The other side of the idempotence: a PrepareCommit whose offsets never reached the group (the
    coordinator died in between) still hands them over after the restart."""
    offsets_topic, txn_topic, store, clock = coordinator_topics
    first = CoordinatorProcess(offsets_topic, txn_topic, store, clock)
    first.markers_reach()
    first.tc._hand_over_offsets = lambda rec: False   # the group coordinator cannot take them yet
    tc = first.tc
    err, pid, epoch = tc.init_producer_id("worker-a", 60000)
    assert err is None
    assert tc.add_partitions("worker-a", pid, epoch, [("out", 0)]) is None
    assert tc.add_offsets("worker-a", pid, epoch, "g") is None
    assert tc.txn_offset_commit("worker-a", pid, epoch, "g", [("in", 0, 100, "")]) is None
    assert tc.end_txn("worker-a", pid, epoch, True) is not None   # retriable: offsets not handed over
    assert first.committed("g", "in", 0) is None
    first.stop()

    second = CoordinatorProcess(offsets_topic, txn_topic, store, clock)
    try:
        second.markers_reach(("out", 0))
        second.tc._write_markers()
        assert second.tc.txns["worker-a"].state is TxnState.COMPLETE_COMMIT
        assert second.committed("g", "in", 0) == 100
    finally:
        second.stop()
