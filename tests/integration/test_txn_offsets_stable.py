"""KIP-447 on real clusters: a read_committed consumer never starts from offsets a pending transaction will move.

Transactional offsets live in the transaction until it commits (docs/architecture.md, transactions).
Without require_stable a consumer that fetches its group's offsets while another producer's transaction
holds offsets for the partition gets the older offset and, once that transaction commits, processes the
batch a second time (the exactly-once test's duplicated poll batch has this shape).
"""
from __future__ import annotations

import threading

import grpc

from client import Consumer, Producer, TopicPartition
from client.common import errors
from client.common.pb import agent_pb2 as apb
from client.common.pb import group_pb2 as gpb
from client.common.pb import group_pb2_grpc as ggrpc
from tests.helpers import wait_until
from tests.integration.test_transactions import topic, txn_producer


def _commit_offset(p: Producer, group: str, tp: TopicPartition, offset: int, commit: bool = True) -> None:
    p.begin_transaction()
    p.send_offsets_to_transaction({tp: offset}, group)
    if commit:
        p.commit_transaction()


def _offset_fetch(bs: str, group: str, tp: TopicPartition, require_stable: bool) -> gpb.OffsetFetchPartition:
    with grpc.insecure_channel(bs) as ch:
        stub = ggrpc.GroupCoordinatorStub(ch)
        req = gpb.OffsetFetchRequest(group_id=group, require_stable=require_stable)
        req.partitions.add(topic=tp.topic, partition=tp.partition)
        resp = stub.OffsetFetch(req, timeout=10)
    assert resp.error_code == 0, resp.error_message
    (part,) = resp.partitions
    return part


def _group_consumer(bs: str, group: str, isolation: str) -> Consumer:
    return Consumer({"bootstrap.servers": bs, "group.id": group, "isolation.level": isolation,
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})


class _Fetch(threading.Thread):
    """consumer.committed(tp) off the test thread: with require_stable it waits for the transaction."""

    def __init__(self, c: Consumer, tp: TopicPartition):
        super().__init__(daemon=True)
        self.c, self.tp, self.result, self.error = c, tp, None, None

    def run(self) -> None:
        try:
            self.result = self.c.committed(self.tp)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


def test_offset_fetch_is_unstable_while_a_transaction_holds_offsets(shared_cluster):
    bs = shared_cluster.bootstrap_servers
    tp = TopicPartition(topic(bs), 0)
    group = f"g-{tp.topic}"
    p = txn_producer(bs, f"tid-{tp.topic}")
    try:
        _commit_offset(p, group, tp, 5)
        _commit_offset(p, group, tp, 10, commit=False)  # Ongoing, holding offset 10
        assert _offset_fetch(bs, group, tp, require_stable=True).error_code == errors.UnstableOffsetCommitError.code
        plain = _offset_fetch(bs, group, tp, require_stable=False)  # read_uncommitted: the committed one
        assert (plain.error_code, plain.committed_offset) == (0, 5)
        uncommitted = _group_consumer(bs, group, "read_uncommitted")
        committed = _group_consumer(bs, group, "read_committed")
        try:
            assert uncommitted.committed(tp).offset == 5
            fetch = _Fetch(committed, tp)
            fetch.start()
            fetch.join(1.0)
            # The reproduction: before KIP-447 this answered 5 at once, and a consumer starting there
            # would process 5..9 again once the transaction below commits.
            assert fetch.is_alive(), f"read_committed committed() answered during the transaction: {fetch.result}"
            p.commit_transaction()
            fetch.join(30)
            assert fetch.error is None and fetch.result is not None and fetch.result.offset == 10
        finally:
            uncommitted.close()
            committed.close()
        # An aborted transaction's offsets never count; the committed one is stable again afterwards.
        _commit_offset(p, group, tp, 15, commit=False)
        assert _offset_fetch(bs, group, tp, require_stable=True).error_code == errors.UnstableOffsetCommitError.code
        p.abort_transaction()
        wait_until(lambda: _offset_fetch(bs, group, tp, require_stable=True).error_code == 0,
                   what="the aborted transaction's offsets to stop being pending")
        assert _offset_fetch(bs, group, tp, require_stable=True).committed_offset == 10
    finally:
        p.close(0)


def _set_marker_drop(cluster, on: bool) -> None:
    spec = apb.FaultRules()
    if on:
        spec.rules.add(kind="drop", src="coordinator", method="WriteTxnMarkers")
    for name in cluster.broker_names():
        cluster.agents[name].set_faults(spec)


def test_worker_gone_after_commit_successor_starts_from_its_offsets(cluster_factory):
    """The EOS worker killed right after commit_transaction() returned, its transaction still PrepareCommit
    (markers held back): the offsets were handed to the group before the answer, so a fresh read_committed
    consumer of the group gets them at once (not UNSTABLE_OFFSET_COMMIT); the restarted worker's
    init_transactions waits for the commit to complete (CONCURRENT_TRANSACTIONS)."""
    c = cluster_factory()
    bs = c.bootstrap_servers
    tp = TopicPartition(topic(bs), 0)
    out = topic(bs)
    group, tid = f"g-{tp.topic}", f"tid-{tp.topic}"
    with Producer({"bootstrap.servers": bs, "acks": "all"}) as inp:
        for i in range(30):
            inp.send(tp.topic, value=f"in-{i}", partition=0)
        inp.flush(30)
    old = txn_producer(bs, tid)
    _commit_offset(old, group, tp, 10)
    _set_marker_drop(c, True)
    try:
        old.begin_transaction()
        for i in range(10, 20):
            old.send(out, value=f"out-{i}", partition=0)
        old.send_offsets_to_transaction({tp: 20}, group)
        old.commit_transaction()  # answered once PrepareCommit is durable and the offsets handed over
        old.close(0)  # the worker is gone
        fresh = _group_consumer(bs, group, "read_committed")
        assert _offset_fetch(bs, group, tp, require_stable=True).committed_offset == 20
        assert fresh.committed(tp).offset == 20
        successor: list = []
        init = threading.Thread(target=lambda: successor.append(txn_producer(bs, tid)), daemon=True)
        init.start()
        init.join(1.0)
        assert init.is_alive(), "init_transactions returned while the old commit was PrepareCommit"
        _set_marker_drop(c, False)
        init.join(60)
        assert successor, "init_transactions of the restarted worker did not complete"
        successor[0].close(0)
        fresh.assign([tp])
        got: list = []
        wait_until(lambda: got.extend(fresh.poll(200)) or len(got) >= 10, what="the input after the commit")
        assert [r.value for r in got[:10]] == [f"in-{i}".encode() for i in range(20, 30)]
        fresh.close()
    finally:
        _set_marker_drop(c, False)
