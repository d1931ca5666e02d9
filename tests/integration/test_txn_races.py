"""Races in the transaction drivers (issues 19 and 20), each forced by hand, never by sleeps.

The coordinator tests run the real TxnCoordinator and GroupCoordinator of one
coordinator process over in-memory internal topics (`MemoryTopic`); a restart
is a fresh pair of drivers over the same topics. Marker writes are steered
through the drivers' own hooks (`_leader_address`, `_send_markers`).
"""
from __future__ import annotations

import threading

import grpc
import pytest

from client.common import errors, records
from client.common.clock import ManualClock, SkewedClock
from client.common.config import BrokerConfig
from client.common.pb import broker_pb2 as bpb
from client.common.pb import metadata_pb2 as mpb
from client.common.pb import txn_pb2 as tpb
from client.common.types import TopicPartition
from client.producer import Producer
from client.transactions import TxnClientState
from node.broker import Broker
from node.broker_service import BrokerServicer
from node.cluster import FAST_CONFIGS
from node.group_coordinator import GroupCoordinator
from node.txn import TxnState
from node.txn_coordinator import TxnCoordinator, TxnCoordinatorServicer
from tests.broker_driver import batch
from tests.group_driver import unknown_partitions
from tests.helpers import wait_until


class MemoryTopic:
    """Stands in for InternalTopic: an always-available, replicated-enough log in memory."""

    def __init__(self, partitions: int = 1):
        self.partitions = partitions
        self.logs: list[list[tuple[int, bytes | None, bytes | None]]] = [[] for _ in range(partitions)]
        self.lock = threading.Lock()
        self.unavailable = None  # InternalTopic's: why the coordinator cannot serve yet

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
        self.topics = {"in": 1, "out": 1, "t": 1}  # the cluster's topics: {name: partition count}

    def unknown_partitions(self, tps) -> set:
        return unknown_partitions(self.topics, tps)


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


class _NewLeaderStub:
    """The gRPC Fetch of a partition leader elected a moment ago: it holds every record of `log`, but
    its high watermark still stands at `hw` (its followers have not fetched from it yet). After
    `catch_up_after` empty answers at that high watermark, a follower's fetch moves it to the log end."""

    def __init__(self, log, hw: int, catch_up_after: int = 1):
        self.log, self.hw, self.left = log, hw, catch_up_after
        self.fetches = 0

    def Fetch(self, req, timeout=None):
        self.fetches += 1
        fp = req.partitions[0]
        part = bpb.FetchPartitionResponse(topic=fp.topic, partition=fp.partition, high_watermark=self.hw,
                                          log_end_offset=len(self.log))
        batches = [records.set_base_offset(records.build_batch([(0, k, v, None)]), off)
                   for off, k, v in self.log if fp.fetch_offset <= off < self.hw]
        part.records = b"".join(batches)
        if not batches and fp.fetch_offset >= self.hw:
            self.left -= 1
            if self.left < 0:
                self.hw = len(self.log)
        return bpb.FetchResponse(partitions=[part])


def test_a_reload_reads_records_a_new_leader_does_not_know_are_committed_yet(coordinator_topics, monkeypatch):
    """librdkafka's abort after a coordinator restart got INVALID_TXN_STATE (fatal) where the
    transaction was Ongoing: the restarted coordinator read `__transaction_state` only up to the high
    watermark of a leader elected a moment ago (the restart fenced brokers), below the acknowledged
    AddPartitionsToTxn record, and came back one transaction behind (CompleteCommit)."""
    offsets_topic, txn_topic, store, clock = coordinator_topics
    first = CoordinatorProcess(offsets_topic, txn_topic, store, clock)
    first.markers_reach(("out", 0))
    tc = first.tc
    err, pid, epoch = tc.init_producer_id("worker-2", 60000)
    assert err is None
    assert tc.add_partitions("worker-2", pid, epoch, [("out", 0)]) is None
    assert tc.end_txn("worker-2", pid, epoch, True) is None
    tc._write_markers()
    assert tc.txns["worker-2"].state is TxnState.COMPLETE_COMMIT
    assert tc.add_partitions("worker-2", pid, epoch, [("out", 0)]) is None  # the next one, acknowledged
    first.stop()

    from node.internal_log import InternalTopic
    monkeypatch.setattr("node.internal_log.time.sleep", lambda s: None)
    log = txn_topic.logs[0]
    leader = _NewLeaderStub(log, hw=len(log) - 1)  # the Ongoing record is above its high watermark
    second = CoordinatorProcess(offsets_topic, MemoryTopic(), store, clock)
    try:
        reader = InternalTopic(second.node, "__transaction_state", 1, 3, 2)
        reader.ensure = lambda: True  # the topic exists and has a leader
        reader._leader = lambda partition: "new-leader"
        reader._stub = lambda addr: leader
        second.tc.log = reader
        second.tc._load()
        assert second.tc.txns["worker-2"].state is TxnState.ONGOING  # not CompleteCommit, one behind
        assert leader.fetches >= 3  # it waited for the high watermark to reach the log end
        second.tc.log = txn_topic  # loaded; its writes go on to the same log
        # librdkafka's abort (its AddPartitionsToTxn answer was lost with the old coordinator)
        assert second.tc.end_txn("worker-2", pid, epoch, False) is None
        assert second.tc.txns["worker-2"].state is TxnState.PREPARE_ABORT
    finally:
        second.stop()


def test_transitions_in_flight_after_a_reload_answer_what_kafka_answers(coordinator_topics):
    """After a restart the coordinator completes PrepareCommit / PrepareAbort itself; meanwhile the
    client's retries get CONCURRENT_TRANSACTIONS (retriable), as in Kafka. INVALID_TXN_STATE (fatal)
    is Kafka's answer only to an EndTxn that contradicts the decision, or that ends a transaction
    the coordinator never saw begin (TV1, which librdkafka speaks; librdkafka #4849)."""
    offsets_topic, txn_topic, store, clock = coordinator_topics
    first = CoordinatorProcess(offsets_topic, txn_topic, store, clock)
    first.markers_reach()  # no marker can be written: both stay Prepare*
    tc = first.tc
    ids = {}
    for tid, commit in (("c", True), ("a", False)):
        err, pid, epoch = tc.init_producer_id(tid, 60000)
        assert err is None
        assert tc.add_partitions(tid, pid, epoch, [("out", 0)]) is None
        assert tc.end_txn(tid, pid, epoch, commit) is None
        ids[tid] = (pid, epoch)
    err, pid, epoch = tc.init_producer_id("done", 60000)
    assert tc.add_partitions("done", pid, epoch, [("t", 0)]) is None
    ids["done"] = (pid, epoch)
    first.reachable = {("t", 0)}
    tc._write_markers()
    assert tc.end_txn("done", pid, epoch, True) is None
    tc._write_markers()
    assert tc.txns["done"].state is TxnState.COMPLETE_COMMIT
    first.stop()

    second = CoordinatorProcess(offsets_topic, txn_topic, store, clock)
    try:
        t2 = second.tc
        concurrent, invalid = errors.ConcurrentTransactionsError, errors.InvalidTxnStateError
        for tid, same, other in (("c", True, False), ("a", False, True)):
            pid, epoch = ids[tid]
            assert isinstance(t2.end_txn(tid, pid, epoch, same), concurrent)
            assert isinstance(t2.add_partitions(tid, pid, epoch, [("t", 0)]), concurrent)
            assert isinstance(t2.init_producer_id(tid, 60000)[0], concurrent)
            assert isinstance(t2.end_txn(tid, pid, epoch, other), invalid)
        pid, epoch = ids["done"]
        assert t2.end_txn("done", pid, epoch, True) is None  # a retried commit that took effect
        assert isinstance(t2.end_txn("done", pid, epoch, False), invalid)
        t2.loaded.clear()  # still loading: retriable
        assert isinstance(t2.end_txn("c", *ids["c"], True), errors.CoordinatorLoadInProgressError)
    finally:
        second.stop()


# -- issue 18 gaps: partitions that do not exist, committed leader epochs ---------------------------

UNKNOWN, NOT_ATTEMPTED = errors.UnknownTopicOrPartitionError.code, errors.OperationNotAttemptedError.code


def test_add_partitions_naming_a_partition_that_does_not_exist_adds_none(coordinator_topics):
    """As Kafka's KafkaApis: UNKNOWN_TOPIC_OR_PARTITION for the missing partitions, OPERATION_NOT_ATTEMPTED
    for the others, and the transaction is left as it was."""
    proc = CoordinatorProcess(*coordinator_topics)
    try:
        tc = proc.tc
        err, pid, epoch = tc.init_producer_id("k", 60000)
        assert err is None
        err = tc.add_partitions("k", pid, epoch, [("out", 0), ("nope", 0), ("t", 1)])  # t has one partition
        assert isinstance(err, errors.UnknownTopicOrPartitionError)
        assert err.partition_errors == {("out", 0): NOT_ATTEMPTED, ("nope", 0): UNKNOWN, ("t", 1): UNKNOWN}
        assert tc.txns["k"].current.state is TxnState.EMPTY and not tc.txns["k"].current.partitions

        # The gRPC servicer answers the same per partition.
        req = tpb.AddPartitionsToTxnRequest(transactional_id="k", producer_id=pid, producer_epoch=epoch)
        req.topics.add(topic="out", partitions=[0])
        req.topics.add(topic="nope", partitions=[0])
        resp = TxnCoordinatorServicer(tc).AddPartitionsToTxn(req, None)
        assert resp.error_code == UNKNOWN
        assert [(r.topic, r.error_code) for r in resp.results] == [("out", NOT_ATTEMPTED), ("nope", UNKNOWN)]
        assert tc.txns["k"].current.state is TxnState.EMPTY

        assert tc.add_partitions("k", pid, epoch, [("out", 0)]) is None
        assert tc.txns["k"].current.partitions == {("out", 0)}
    finally:
        proc.stop()


def test_txn_offset_commit_refuses_unknown_partitions_and_commits_the_others_with_their_leader_epoch(
        coordinator_topics):
    proc = CoordinatorProcess(*coordinator_topics)
    try:
        proc.markers_reach()
        tc = proc.tc
        err, pid, epoch = tc.init_producer_id("k", 60000)
        assert err is None and tc.add_offsets("k", pid, epoch, "g") is None
        err = tc.txn_offset_commit("k", pid, epoch, "g", [("in", 0, 100, "m", 4), ("nope", 0, 7, "", -1)])
        assert isinstance(err, errors.UnknownTopicOrPartitionError)
        assert err.partition_errors == {("in", 0): 0, ("nope", 0): UNKNOWN}
        # A fenced producer: its own error for the partitions that exist.
        err = tc.txn_offset_commit("k", pid, epoch + 1, "g", [("in", 0, 1, ""), ("nope", 0, 1, "")])
        assert err.partition_errors == {("in", 0): err.code, ("nope", 0): UNKNOWN} and err.code != UNKNOWN

        req = tpb.TxnOffsetCommitRequest(transactional_id="k", group_id="g", producer_id=pid, producer_epoch=epoch,
                                         generation_id=-1)
        req.offsets.add(topic="nope", partition=1, offset=1, leader_epoch=-1)
        resp = TxnCoordinatorServicer(tc).TxnOffsetCommit(req, None)
        assert resp.error_code == UNKNOWN
        assert [(r.topic, r.partition, r.error_code) for r in resp.results] == [("nope", 1, UNKNOWN)]

        assert tc.end_txn("k", pid, epoch, True) is None
        om = proc.gc.fetch_offsets("g", [TopicPartition("in", 0)])[TopicPartition("in", 0)]
        assert (om.offset, om.metadata, om.leader_epoch) == (100, "m", 4)
        assert proc.gc.fetch_offsets("g", None).keys() == {("in", 0)}
    finally:
        proc.stop()
    again = CoordinatorProcess(*coordinator_topics)  # read back from the log
    try:
        om = again.gc.fetch_offsets("g", [TopicPartition("in", 0)])[TopicPartition("in", 0)]
        assert (om.offset, om.leader_epoch) == (100, 4)
    finally:
        again.stop()


# -- issue 19 item 6: a clock fault moves wall time, never a deadline -------------------------------

def test_skewed_clock_moves_wall_time_only():
    base = ManualClock(start_ms=5_000, wall_start_ms=1_700_000_000_000)
    clock = SkewedClock(base)
    clock.set(-60_000)
    assert clock.wall_ms() == base.wall_ms() - 60_000          # what the node reports moves
    assert clock.monotonic_ms() == base.monotonic_ms()         # its timers do not
    clock.set(0, strobe_ms=30_000, strobe_period_ms=1_000)   # flips every second of monotonic time
    walls = []
    for _ in range(2):
        base.advance(1_000)
        walls.append(clock.wall_ms() - base.wall_ms())
        assert clock.monotonic_ms() == base.monotonic_ms()
    assert sorted(walls) == [0, 30_000]


def _begin(tc, tid: str, timeout_ms: int = 10_000):
    err, pid, epoch = tc.init_producer_id(tid, timeout_ms)
    assert err is None
    assert tc.add_partitions(tid, pid, epoch, [("out", 0)]) is None
    return pid, epoch


@pytest.mark.parametrize("offset_ms", [-60_000, 60_000])
def test_transaction_timeout_is_not_moved_by_a_healed_clock_fault(coordinator_topics, offset_ms):
    """A transaction begun under a clock offset that is then healed times out after exactly its
    transaction.timeout.ms: not at once (negative offset), not a minute late (positive one). Its
    start time, which the coordinator reports, still shows the skewed clock."""
    offsets_topic, txn_topic, store, _ = coordinator_topics
    base = ManualClock()
    clock = SkewedClock(base)
    proc = CoordinatorProcess(offsets_topic, txn_topic, store, clock)
    tc = proc.tc
    try:
        clock.set(offset_ms)
        _begin(tc, "t", timeout_ms=10_000)
        assert tc.txns["t"].current.txn_start_ms == base.wall_ms() + offset_ms   # the fault is visible
        clock.set(0)   # healed
        base.advance(10_000)
        tc._abort_timed_out(tc._now())
        assert tc.txns["t"].state is TxnState.ONGOING
        base.advance(1)
        tc._abort_timed_out(tc._now())
        assert tc.txns["t"].state is TxnState.PREPARE_ABORT
    finally:
        proc.stop()


def test_transaction_timeout_carries_over_a_coordinator_restart(coordinator_topics):
    """After a restart the open transaction's timeout continues from its persisted (wall) start,
    on the new process's monotonic clock, whatever that clock's origin."""
    offsets_topic, txn_topic, store, _ = coordinator_topics
    first = CoordinatorProcess(offsets_topic, txn_topic, store, ManualClock(start_ms=0, wall_start_ms=10**12))
    _begin(first.tc, "t", timeout_ms=10_000)
    first.stop()
    clock = ManualClock(start_ms=777_000, wall_start_ms=10**12 + 6_000)   # 6 s later, another origin
    second = CoordinatorProcess(offsets_topic, txn_topic, store, clock)
    try:
        clock.advance(4_000)
        second.tc._abort_timed_out(second.tc._now())
        assert second.tc.txns["t"].state is TxnState.ONGOING
        clock.advance(1)
        second.tc._abort_timed_out(second.tc._now())
        assert second.tc.txns["t"].state is TxnState.PREPARE_ABORT
    finally:
        second.stop()


# -- issue 20 item 5: a late batch of an aborted transaction ----------------------------------------
# The real Producer, TxnCoordinator and Broker talk through `FakeNetwork`, an in-process stand-in for
# gRPC channels: every call goes straight to the real servicer, except that produce requests can be
# held "in the network" and delivered (or timed out on the client side) when the test says so.

class DeadlineExceeded(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.DEADLINE_EXCEEDED

    def details(self):
        return "Deadline Exceeded"


class FakeCall:
    """A grpc.Future whose outcome the network sets."""

    def __init__(self):
        self._done = threading.Event()
        self._callbacks: list = []
        self._lock = threading.Lock()
        self._response = None
        self._exception: Exception | None = None

    def finish(self, response=None, exception: Exception | None = None) -> None:
        with self._lock:
            self._response, self._exception = response, exception
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(self)

    def add_done_callback(self, fn) -> None:
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        fn(self)

    def result(self, timeout=None):
        assert self._done.wait(timeout if timeout is not None else 30)
        if self._exception is not None:
            raise self._exception
        return self._response


class _Ctx:
    def is_active(self) -> bool:
        return True


class FakeNetwork:
    def __init__(self):
        self.services: dict[str, object] = {}   # gRPC service name -> servicer
        self.hold_produce = False
        self.held: list[tuple[FakeCall, object]] = []   # produce requests in the network

    def call(self, service: str, method: str, request):
        return getattr(self.services[service], method)(request, _Ctx())

    def future(self, service: str, method: str, request) -> FakeCall:
        f = FakeCall()
        if method == "Produce" and self.hold_produce:
            self.held.append((f, request))
        else:
            f.finish(self.call(service, method, request))
        return f

    def deliver(self, request):
        """A held produce request reaches the broker now."""
        return self.call("Broker", "Produce", request)


class _MultiCallable:
    def __init__(self, net: FakeNetwork, service: str, method: str):
        self.net, self.service, self.method = net, service, method

    def __call__(self, request, timeout=None, metadata=None, **kwargs):
        return self.net.call(self.service, self.method, request)

    def future(self, request, timeout=None, metadata=None, **kwargs):
        return self.net.future(self.service, self.method, request)


class FakeChannel:
    def __init__(self, net: FakeNetwork):
        self.net = net

    def _method(self, path, *args, **kwargs):
        _, service, method = path.split("/")
        return _MultiCallable(self.net, service.split(".")[-1], method)

    unary_unary = unary_stream = stream_unary = stream_stream = _method

    def close(self) -> None:
        pass


class FakePool:
    def __init__(self, net: FakeNetwork):
        self.channel = FakeChannel(net)

    def get(self, address: str):
        return self.channel

    def reset(self, address: str) -> None:
        pass

    def close(self) -> None:
        pass


BROKER_ADDR, COORDINATOR_ADDR = "broker:1", "coordinator:1"


def _metadata(topic: str, configs: dict | None = None) -> mpb.MetadataResponse:
    md = mpb.MetadataResponse(controller=COORDINATOR_ADDR, metadata_epoch=1)
    md.brokers.add(node_id=1, host="broker", port=1)
    t = md.topics.add(name=topic, configs=configs or {})
    t.partitions.add(partition=0, leader=1, leader_epoch=0, partition_epoch=0, replicas=[1], isr=[1])
    return md


class TxnLab:
    """A one-broker cluster in one process: real Broker (leader of t-0), real coordinator drivers,
    real producers, all over one FakeNetwork."""

    def __init__(self, tmp_path, topics: tuple, broker_clock=None, topic_configs: dict | None = None):
        self.net = FakeNetwork()
        self.pool = FakePool(self.net)
        cfg = BrokerConfig.from_props(dict(FAST_CONFIGS))
        self.broker = Broker(str(tmp_path / "broker-1"), "broker", 1, 1, COORDINATOR_ADDR, cfg,
                             clock=broker_clock or ManualClock())
        self.broker.pool = self.pool
        self.broker.apply_metadata(_metadata("t", topic_configs))
        self.coordinator = CoordinatorProcess(*topics)
        self.coordinator.node.pool = self.pool
        self.coordinator.tc._leader_address = lambda topic, partition: BROKER_ADDR
        self.coordinator.tc.start()   # the real worker: markers, completion, timeouts
        broker_svc = BrokerServicer(self.broker)
        self.net.services.update(Broker=broker_svc, Metadata=broker_svc,
                                 TxnCoordinator=TxnCoordinatorServicer(self.coordinator.tc))
        self.producers: list[Producer] = []

    def producer(self, **props) -> Producer:
        p = Producer({"bootstrap.servers": BROKER_ADDR, "acks": "all", "linger.ms": 0, **props})
        p.pool.close()
        p.pool = p.metadata.pool = self.pool
        self.producers.append(p)
        return p

    def partition(self):
        return self.broker.replicas[("t", 0)]

    def open_transaction_blocks_lso(self) -> bool:
        r = self.partition()
        with r.lock:
            return self.broker.last_stable_offset(r) < r.model.high_watermark

    def values(self) -> list[bytes]:
        return _values(self.broker.store, "t", 0)

    def stop(self) -> None:
        for p in self.producers:
            p.close(5)
        self.coordinator.stop()
        self.broker.stop()


@pytest.fixture
def lab(tmp_path):
    lab = TxnLab(tmp_path, (MemoryTopic(), MemoryTopic(), FakeStore(), ManualClock()))
    yield lab
    lab.stop()


def _in_thread(fn, *args):
    out: list = []

    def run():
        try:
            fn(*args)
            out.append(None)
        except Exception as e:  # noqa: BLE001 - handed to the test
            out.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_abort_with_a_batch_in_flight_leaves_no_transaction_open(lab):
    """Issue 20 item 5, client side: the application aborts while a batch is in flight (its flush
    timed out). The client's request then times out, so the batch's outcome is unknown, and the
    request reaches the broker only after the abort. Aborting with EndTxn at the batch's epoch
    let it open a transaction after the ABORT marker that nobody ends: the LSO stuck there."""
    p = lab.producer(**{"transactional.id": "tx"})
    p.init_transactions(10)
    p.begin_transaction()
    lab.net.hold_produce = True
    fut = p.send("t", b"doomed", partition=0)
    wait_until(lambda: lab.net.held, 10, what="the batch in flight")
    call, request = lab.net.held[0]
    queued = p.send("t", b"queued", partition=0)   # behind it: one request in flight per partition
    t, out = _in_thread(p.abort_transaction, 10)
    wait_until(lambda: p.txn.state is not TxnClientState.IN_TRANSACTION, 20, what="the abort to begin")
    call.finish(exception=DeadlineExceeded())   # the client gives up on the request
    t.join(30)
    assert out == [None]
    late = lab.net.deliver(request).partitions[0]   # ... which reaches the broker only now
    assert not lab.open_transaction_blocks_lso(), "a transaction nobody will end holds the LSO"
    assert late.error_code == errors.InvalidProducerEpochError.code
    assert isinstance(fut.exception(5), errors.TransactionAbortedError | errors.KafkaTimeoutError)
    assert isinstance(queued.exception(5), errors.TransactionAbortedError)   # never sent

    lab.net.hold_produce = False   # the producer goes on with its next transaction
    p.begin_transaction()
    ok = p.send("t", b"kept", partition=0)
    p.commit_transaction(10)
    assert ok.get(5).offset >= 0
    wait_until(lambda: not lab.open_transaction_blocks_lso(), 20, what="the COMMIT marker")
    assert lab.values() == [b"kept"]   # nothing of the aborted transaction leaked into the next one


def _values(store, topic: str, partition: int) -> list[bytes]:
    out = []
    for raw in store.iter_batches(topic, partition):
        if not records.read_header(raw).is_control:
            out.extend(r.value for r in records.decode_records(raw))
    return out


# Broker side: whatever the client does, a transactional batch that would begin a transaction on a
# partition is accepted only if the coordinator says the partition is in that producer's ongoing
# transaction (KIP-890 verification), and no marker came between that answer and the append.

def _produce(lab: TxnLab, tid: str, pid: int, epoch: int, seq: int, value: bytes):
    req = bpb.ProduceRequest(acks=-1, timeout_ms=5000, transactional_id=tid)
    req.partitions.add(topic="t", partition=0, records=batch(value=value, producer_id=pid, producer_epoch=epoch,
                                                             base_sequence=seq, transactional=True))
    return req


def _end(lab: TxnLab, tid: str, pid: int, epoch: int, commit: bool) -> None:
    """EndTxn as a client sends it, then waits until the coordinator completed it (markers written)."""
    tc = lab.coordinator.tc
    assert tc.end_txn(tid, pid, epoch, commit) is None
    done = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
    wait_until(lambda: tc.txns[tid].state is done, 20, what=f"{tid} {done.value}")


def test_broker_refuses_a_late_batch_after_its_transaction_was_aborted(lab):
    """Issue 20 item 5, broker side: a client (a Kafka client, say) sends EndTxn(abort) at the epoch
    of a batch still in the network; the batch reaches the leader after the ABORT marker. It must
    be refused, not open a transaction that holds the LSO. The same producer's next transaction,
    at the same epoch, is still accepted."""
    tc = lab.coordinator.tc
    err, pid, epoch = tc.init_producer_id("k", 60000)
    assert err is None
    assert tc.add_partitions("k", pid, epoch, [("t", 0)]) is None
    late = _produce(lab, "k", pid, epoch, 0, b"late")   # sent, still in the network
    _end(lab, "k", pid, epoch, commit=False)
    resp = lab.net.deliver(late).partitions[0]
    assert not lab.open_transaction_blocks_lso(), "a transaction nobody will end holds the LSO"
    assert resp.error_code == errors.InvalidTxnStateError.code

    assert tc.add_partitions("k", pid, epoch, [("t", 0)]) is None
    assert lab.net.deliver(_produce(lab, "k", pid, epoch, 0, b"next")).partitions[0].error_code == 0
    _end(lab, "k", pid, epoch, commit=True)
    assert not lab.open_transaction_blocks_lso()
    assert lab.values() == [b"next0"]


def test_broker_refuses_a_batch_whose_verification_a_marker_overtook(lab):
    """The verification said "ongoing", but the transaction was aborted (its marker written) before
    the batch's append: the append must still be refused (Kafka's verification guard)."""
    tc = lab.coordinator.tc
    err, pid, epoch = tc.init_producer_id("k", 60000)
    assert err is None
    assert tc.add_partitions("k", pid, epoch, [("t", 0)]) is None
    verify = lab.broker.txn.verify

    def verify_then_abort(*args):
        answer = verify(*args)
        assert answer is None   # in the ongoing transaction, at this moment
        _end(lab, "k", pid, epoch, commit=False)
        return answer
    lab.broker.txn.verify = verify_then_abort
    resp = lab.net.deliver(_produce(lab, "k", pid, epoch, 0, b"overtaken")).partitions[0]
    assert not lab.open_transaction_blocks_lso(), "a transaction nobody will end holds the LSO"
    assert resp.error_code == errors.InvalidTxnStateError.code
    assert lab.values() == []


def test_verification_answers(coordinator_topics):
    """AddPartitionsToTxn(verify_only) through the servicer: only the ongoing transaction's own
    partitions at its current epoch pass, and nothing is added."""
    proc = CoordinatorProcess(*coordinator_topics)
    try:
        tc, svc = proc.tc, TxnCoordinatorServicer(proc.tc)
        err, pid, epoch = tc.init_producer_id("k", 60000)
        assert err is None

        def verify(e=epoch, partition=0):
            req = tpb.AddPartitionsToTxnRequest(transactional_id="k", producer_id=pid, producer_epoch=e,
                                                verify_only=True)
            req.topics.add(topic="t", partitions=[partition])
            return svc.AddPartitionsToTxn(req, _Ctx()).error_code
        assert verify() == errors.InvalidTxnStateError.code          # Empty: nothing ongoing
        assert tc.txns["k"].current.partitions == frozenset()         # and nothing added
        assert tc.add_partitions("k", pid, epoch, [("t", 0)]) is None
        assert verify() == 0
        assert verify(partition=1) == errors.InvalidTxnStateError.code
        assert verify(e=epoch - 1) == errors.InvalidProducerEpochError.code
    finally:
        proc.stop()


def test_a_clock_fault_shows_in_the_timestamps_a_broker_writes(tmp_path):
    """Issue 19 item 6, the other half: with only wall time skewed, the fault must still be
    visible where a node stamps time: LogAppendTime record timestamps, the produce response's
    log_append_time and transaction markers."""
    base = ManualClock(wall_start_ms=1_700_000_000_000)
    clock = SkewedClock(base)
    lab = TxnLab(tmp_path, (MemoryTopic(), MemoryTopic(), FakeStore(), ManualClock()), broker_clock=clock,
                 topic_configs={"message.timestamp.type": "LogAppendTime"})
    try:
        clock.set(3_600_000)   # an hour ahead
        tc = lab.coordinator.tc
        err, pid, epoch = tc.init_producer_id("k", 60000)
        assert err is None
        assert tc.add_partitions("k", pid, epoch, [("t", 0)]) is None
        resp = lab.net.deliver(_produce(lab, "k", pid, epoch, 0, b"stamped")).partitions[0]
        assert resp.error_code == 0 and resp.log_append_time == base.wall_ms() + 3_600_000
        _end(lab, "k", pid, epoch, commit=True)
        stamped = [(records.read_header(raw).is_control, [r.timestamp for r in records.decode_records(raw)])
                   for raw in lab.broker.store.iter_batches("t", 0)]
        skewed = base.wall_ms() + 3_600_000
        assert stamped == [(False, [skewed]), (True, [skewed])]
        assert clock.monotonic_ms() == base.monotonic_ms()
    finally:
        lab.stop()
