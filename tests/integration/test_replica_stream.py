"""Issue 21: replication over a long-lived ReplicaFetch stream (a fetch session per follower stream).

The driver tests run the real leader session (node.fetch_session), the real follower fetcher
(node.fetcher.FetcherThread) and the real fault interceptor in-process, round by round, with hooks
where the interleaving matters: no sleeps, no threads. Two cluster tests then kill a leader and cut a
follower off under an acks=all stream.
"""
from __future__ import annotations

import threading

import grpc
import pytest

from client.common import errors
from client.common.pb import broker_pb2 as bpb
from node.broker_service import _encode_fetched
from node.faults import FaultState, Rule, RuleTable
from node.fetcher import FetcherThread
from tests.broker_driver import TOPIC, batch, metadata, stored_values


def _message(replica_id=2, replica_epoch=12, parts=(), forgotten=(), max_wait_ms=0):
    req = bpb.ReplicaFetchRequest(replica_id=replica_id, replica_epoch=replica_epoch, max_wait_ms=max_wait_ms,
                                  max_bytes=1 << 20)
    for partition, offset, epoch in parts:
        req.partitions.add(topic=TOPIC, partition=partition, fetch_offset=offset, partition_max_bytes=1 << 20,
                           current_leader_epoch=epoch)
    for partition in forgotten:
        req.forgotten.add(topic=TOPIC, partition=partition)
    return req


def _answer(session, req) -> bpb.ReplicaFetchResponse:
    resp = bpb.ReplicaFetchResponse()
    _encode_fetched(resp, session.handle(req))
    return resp


def _leader(broker, partitions=1, isr=(1, 2)):
    b = broker(1)
    md = metadata(leader=1, leader_epoch=0, isr=list(isr), replicas=[1, 2], broker_epochs={1: 11, 2: 12, 3: 13})
    for p in range(1, partitions):
        md.topics[0].partitions.add(partition=p, leader=1, leader_epoch=0, partition_epoch=0, replicas=[1, 2],
                                    isr=list(isr))
    b.apply_metadata(md)
    return b


# ---------------------------------------------------------------- leader: the session

def test_reported_log_end_moves_the_hw_before_the_leader_reads_anything(broker):
    b = _leader(broker)
    r = b.replicas[(TOPIC, 0)]
    res = b.append_as_leader(TOPIC, 0, batch(), acks=-1)
    session = b.replica_fetch_session(2)
    first = _answer(session, _message(parts=[(0, 0, 0)]))
    assert first.partitions[0].records and r.model.high_watermark == 0
    hw_at_read = []
    real_read = b.read_partition

    def read(*a, **kw):
        hw_at_read.append(r.model.high_watermark)
        return real_read(*a, **kw)

    b.read_partition = read
    # The follower appended and reports its log end: the acks=all write is replicated at once.
    _answer(session, _message(parts=[(0, res.last_offset + 1, 0)], max_wait_ms=0))
    assert r.model.high_watermark == 1
    assert all(hw == 1 for hw in hw_at_read), "the leader read before applying the reported position"
    b.wait_for_hw(TOPIC, 0, res.last_offset, 0, leader_epoch=res.leader_epoch)  # no wait left: returns


@pytest.mark.parametrize("replica_id,replica_epoch,error", [
    (2, 0, errors.StaleBrokerEpochError),        # no epoch (a client faking a follower)
    (2, 11, errors.StaleBrokerEpochError),       # an old incarnation of broker 2
    (3, 13, errors.NotLeaderOrFollowerError),    # a live broker that is not a replica
])
def test_every_stream_message_is_checked_against_the_registration(broker, replica_id, replica_epoch, error):
    b = _leader(broker)
    r = b.replicas[(TOPIC, 0)]
    res = b.append_as_leader(TOPIC, 0, batch(), acks=-1)
    session = b.replica_fetch_session(replica_id)
    out = _answer(session, _message(replica_id, replica_epoch, parts=[(0, res.last_offset + 1, 0)]))
    assert [p.error_code for p in out.partitions] == [error.code]
    assert out.partitions[0].records == b""
    assert r.model.high_watermark == 0, "an acks=all write was acknowledged by an unregistered follower"
    if replica_id == 2:  # the same stream, once it carries the registered epoch, is served
        out = _answer(session, _message(2, 12, parts=[(0, res.last_offset + 1, 0)]))
        assert r.model.high_watermark == 1 and not any(p.error_code for p in out.partitions)


def test_an_idle_session_reads_nothing_and_answers_only_what_changed(broker):
    b = _leader(broker, partitions=40)
    session = b.replica_fetch_session(2)
    first = _answer(session, _message(parts=[(p, 0, 0) for p in range(40)]))
    assert len(first.partitions) == 40  # a new partition is always answered once
    reads = []
    real_read = b.read_partition
    b.read_partition = lambda *a, **kw: reads.append(a[:2]) or real_read(*a, **kw)
    assert _answer(session, _message()).partitions == []  # max_wait 0, nothing new
    assert reads == []
    b.append_as_leader(TOPIC, 7, batch(3), acks=1)
    out = _answer(session, _message())
    assert [(p.partition, len(p.records) > 0) for p in out.partitions] == [(7, True)]
    assert reads == [(TOPIC, 7)]


def test_a_forgotten_partition_is_no_longer_answered(broker):
    b = _leader(broker, partitions=2)
    session = b.replica_fetch_session(2)
    _answer(session, _message(parts=[(0, 0, 0), (1, 0, 0)]))
    _answer(session, _message(forgotten=[1]))
    b.append_as_leader(TOPIC, 1, batch(), acks=1)
    assert _answer(session, _message()).partitions == []
    assert session not in b.replicas[(TOPIC, 1)].listeners
    session.close()
    assert session not in b.replicas[(TOPIC, 0)].listeners


def test_a_follower_out_of_the_isr_is_proposed_again_on_every_message(broker):
    """An idle, caught-up follower reports nothing new; a refused expansion must still be retried."""
    b = _leader(broker, isr=(1,))
    r = b.replicas[(TOPIC, 0)]
    session = b.replica_fetch_session(2)
    _answer(session, _message(parts=[(0, 0, 0)]))
    assert len(b.isr_executor.calls) == 1  # expansion to [1, 2] proposed
    _fn, (_replica, change) = b.isr_executor.calls.pop()
    assert change.new_isr == (1, 2)
    with r.lock:
        r.model.on_isr_change_failed()  # the controller refused it (e.g. broker 2 still fenced)
    _answer(session, _message())  # an empty keep-alive message
    assert [c[1][1].new_isr for c in b.isr_executor.calls] == [(1, 2)], "expansion not proposed again"


# ---------------------------------------------------------------- follower and leader, round by round

class _Link:
    """The follower's FetcherThread and the leader's session joined without gRPC, one round per step."""

    def __init__(self, follower, leader, epoch=0):
        self.t = FetcherThread(follower, 1, "127.0.0.1:1")  # its thread is not started
        self.follower, self.leader = follower, leader
        self.fetched = {}
        for r in follower.replicas.values():
            self.t.add(r, epoch)
        for f in self.t.parts.values():
            self.t._truncate(f)  # empty logs: nothing to ask the leader
        self.reconnect()

    def reconnect(self):
        """A new stream: a new session at the leader, and the follower names everything again."""
        self.session = self.leader.replica_fetch_session(self.follower.broker_id)
        self.view = {}
        with self.t.lock:
            self.t.pending = set(self.t.parts)
        for f in self.t.parts.values():
            f.sent_offset, f.ask_again = None, False

    def round(self):
        req = self.t.next_request(self.view)
        resp = _answer(self.session, req)
        self.t.on_answer(resp, self.view)
        return req, resp


def _pair(broker, partitions=1):
    # max wait 0: a round with nothing new answers at once (no test waits on the clock)
    leader, follower = broker(1), broker(2, configs={"replica.fetch.wait.max.ms": 0})
    md = metadata(leader=1, leader_epoch=0, isr=[1, 2], replicas=[1, 2], broker_epochs={1: 11, 2: 12})
    for p in range(1, partitions):
        md.topics[0].partitions.add(partition=p, leader=1, leader_epoch=0, partition_epoch=0, replicas=[1, 2],
                                    isr=[1, 2])
    follower.broker_epoch = 12
    for b in (leader, follower):
        b.apply_metadata(md)
    return leader, follower, _Link(follower, leader)


def test_acks_all_write_is_replicated_in_two_rounds_and_requests_name_only_changes(broker):
    leader, follower, link = _pair(broker, partitions=20)
    req, _ = link.round()
    assert len(req.partitions) == 20  # the stream's first message names every partition
    link.round()
    res = leader.append_as_leader(TOPIC, 5, batch(2), acks=-1)
    req, resp = link.round()  # the records come
    assert [p.partition for p in req.partitions] == [] and [p.partition for p in resp.partitions] == [5]
    assert leader.replicas[(TOPIC, 5)].model.high_watermark == 0
    req, _ = link.round()  # the follower reports its new log end: replicated
    assert [(p.partition, p.fetch_offset) for p in req.partitions] == [(5, 2)]
    assert leader.replicas[(TOPIC, 5)].model.high_watermark == res.last_offset + 1
    leader.wait_for_hw(TOPIC, 5, res.last_offset, 0, leader_epoch=res.leader_epoch)
    assert stored_values(follower, TOPIC, 5) == stored_values(leader, TOPIC, 5)


def test_follower_append_is_one_write_with_its_new_epoch_entry(broker):
    leader, follower, link = _pair(broker)
    link.round()
    leader.append_as_leader(TOPIC, 0, batch(2), acks=1)
    writes = []
    real_write = follower.store.write
    follower.store.write = lambda puts, *a, **kw: writes.append([k for k, _ in puts]) or real_write(puts, *a, **kw)
    link.round()
    assert len(writes) == 1, f"one answer made {len(writes)} writes"
    assert follower.store.get_meta(TOPIC, 0, "epochs") == [[0, 0]]  # went with the batches
    assert len(stored_values(follower)) == 2
    # Same epoch again: batches only; the HW the leader sent is left to the periodic checkpoint.
    leader.append_as_leader(TOPIC, 0, batch(1), acks=1)
    writes.clear()
    link.round()
    assert len(writes) == 1 and all(k.startswith(b"L") for k in writes[0])
    r = follower.replicas[(TOPIC, 0)]
    link.round()
    assert r.model.high_watermark == 3
    assert r in follower._checkpoint_dirty
    follower._checkpoint_all({r})
    assert follower.store.get_meta(TOPIC, 0, "hw") == 3


def test_follower_reconnecting_after_a_lost_stream_resumes_from_its_log_end(broker):
    leader, follower, link = _pair(broker)
    link.round()
    leader.append_as_leader(TOPIC, 0, batch(3), acks=1)
    link.round()
    link.session.close()  # the stream broke (a partition, a leader restart of the stream)
    for i in range(3):
        leader.append_as_leader(TOPIC, 0, batch(1, value=b"w%d" % i), acks=1)
    link.reconnect()
    req, _resp = link.round()
    assert [(p.partition, p.fetch_offset) for p in req.partitions] == [(0, 3)]
    link.round()
    assert stored_values(follower) == stored_values(leader) and len(stored_values(leader)) == 6
    assert leader.replicas[(TOPIC, 0)].model.high_watermark == 6


def test_an_error_answer_is_asked_again_and_a_new_leader_epoch_is_fenced(broker):
    leader, follower, link = _pair(broker)
    link.round()
    # The leader moves to epoch 1 (still leader): the follower's epoch-0 session partition is fenced.
    md = metadata(leader=1, leader_epoch=1, isr=[1, 2], replicas=[1, 2], broker_epochs={1: 11, 2: 12},
                  metadata_epoch=2)
    leader.apply_metadata(md)
    leader.append_as_leader(TOPIC, 0, batch(), acks=1)
    _, resp = link.round()
    assert [p.error_code for p in resp.partitions] == [errors.FencedLeaderEpochError.code]
    assert stored_values(follower) == []
    req, _ = link.round()
    assert [p.partition for p in req.partitions] == [0], "the failed partition was not asked again"


# ---------------------------------------------------------------- faults apply per stream message

class _Aborted(Exception):
    pass


class _Ctx:
    def __init__(self):
        self.code = None

    def abort(self, code, details):
        self.code = code
        raise _Aborted(details)

    def is_active(self):
        return True


class _EchoHandler:
    """A stream handler answering each request at once."""
    request_deserializer = response_serializer = None
    unary_unary = None

    @staticmethod
    def stream_stream(request_iterator, context):
        yield from request_iterator


def _stream_under(state: FaultState):
    handler = state.server_interceptor()._stream(_EchoHandler, "broker-2", "/brokerlab.Broker/ReplicaFetch")
    return handler.stream_stream


def test_a_partition_made_while_the_stream_is_open_cuts_its_next_message():
    state = FaultState("broker-1")
    ctx = _Ctx()
    answers = _stream_under(state)(iter(["m1", "m2"]), ctx)
    assert next(answers) == "m1"
    state.table = RuleTable([Rule("drop", "broker-2", "broker-1", tag="partition")])
    with pytest.raises(_Aborted):
        next(answers)
    assert ctx.code == grpc.StatusCode.UNAVAILABLE


def test_a_partition_of_the_reply_direction_drops_the_answer():
    state = FaultState("broker-1")
    state.table = RuleTable([Rule("drop", "broker-1", "broker-2", tag="partition")])
    ctx = _Ctx()
    with pytest.raises(_Aborted):
        next(_stream_under(state)(iter(["m1"]), ctx))
    assert ctx.code == grpc.StatusCode.UNAVAILABLE


# ---------------------------------------------------------------- periodic work follows what changed

def test_checkpoint_and_isr_check_visit_only_changed_partitions(broker):
    b = _leader(broker, partitions=30)
    session = b.replica_fetch_session(2)
    _answer(session, _message(parts=[(p, 0, 0) for p in range(30)]))
    b._checkpoint_all(b._checkpoint_dirty)  # settle what creating them wrote
    b._checkpoint_dirty.clear()
    b.maybe_shrink_isrs(b.clock.monotonic_ms(), 10_000)
    assert b._isr_watch == set()  # every follower at the log end: nothing to watch
    res = b.append_as_leader(TOPIC, 3, batch(), acks=-1)
    r3 = b.replicas[(TOPIC, 3)]
    assert b._isr_watch == {r3}
    _answer(session, _message(parts=[(3, res.last_offset + 1, 0)]))
    assert b._checkpoint_dirty == {r3}
    b._checkpoint_all(set(b._checkpoint_dirty))
    assert b.store.get_meta(TOPIC, 3, "hw") == 1
    b.maybe_shrink_isrs(b.clock.monotonic_ms(), 10_000)
    assert b._isr_watch == set()


def test_new_metadata_is_applied_only_to_the_partitions_it_changes(broker):
    b = _leader(broker, partitions=30)
    applied = []
    real = b._apply_partition_state
    b._apply_partition_state = lambda r, ps, now: applied.append(r.partition) or real(r, ps, now)
    md = metadata(leader=1, leader_epoch=0, isr=[1, 2], replicas=[1, 2], broker_epochs={1: 11, 2: 12, 3: 13},
                  metadata_epoch=2)
    for p in range(1, 30):
        md.topics[0].partitions.add(partition=p, leader=1, leader_epoch=0, partition_epoch=0, replicas=[1, 2],
                                    isr=[1, 2])
    md.topics[0].partitions[4].isr[:] = [1]
    md.topics[0].partitions[4].partition_epoch = 1
    b.apply_metadata(md)
    assert applied == [4]
    assert b.replicas[(TOPIC, 4)].model.isr == (1,)


# ---------------------------------------------------------------- a real cluster

SAFE = {"min.insync.replicas": "2"}


def test_streamed_replication_survives_a_leader_kill_and_a_follower_cut_off(cluster):
    """acks=all under the streamed fetcher: a follower cut off from everyone reconnects after the heal
    and catches up; then the leader is killed mid-stream; nothing acknowledged is lost."""
    from tests.helpers import partition_state, read_all, replica_log, wait_until
    from tests.integration.test_replication import _create, _heal, _isolate, _stream
    _create(cluster, "rs")
    leader, _epoch, replicas, _ = partition_state(cluster, "rs", 0)
    follower = next(r for r in replicas if r != leader)
    acked, errs = [], []
    _stream(cluster.bootstrap_servers, "rs", 300, acked, errs)
    ctl = _isolate(cluster, f"broker-{follower}")
    try:
        wait_until(lambda: follower not in partition_state(cluster, "rs", 0)[3], 30, what="cut-off follower out")
        _stream(cluster.bootstrap_servers, "rs", 300, acked, errs)  # min.insync.replicas=2 still met
    finally:
        _heal(ctl)
    wait_until(lambda: follower in partition_state(cluster, "rs", 0)[3], 30, what="follower back in the ISR")
    wait_until(lambda: replica_log(cluster, follower, "rs", 0).log_end_offset
               == replica_log(cluster, leader, "rs", 0).log_end_offset, 30, what="follower caught up")
    t = threading.Thread(target=_stream, args=(cluster.bootstrap_servers, "rs", 3000, acked, errs))
    t.start()
    wait_until(lambda: replica_log(cluster, leader, "rs", 0).high_watermark > 1200, 30, what="stream under way")
    cluster.agents[f"broker-{leader}"].kill()
    t.join(120)
    assert not t.is_alive()
    assert not errs, f"producer saw errors: {errs[:3]}"
    assert len(acked) == 3600
    assert partition_state(cluster, "rs", 0)[0] != leader
    # Each phase sends values 0..n-1: compare by offset. Every acknowledged write is where it was acked.
    got = {r.offset: int(r.value) for r in next(iter(read_all(cluster.bootstrap_servers, "rs", [0]).values()))}
    lost = [(v, o) for v, o in acked if got.get(o) != v]
    assert not lost, f"acknowledged writes lost: {lost[:10]}"
    assert sorted(got) == list(range(len(got))), "gaps in offsets"



def test_with_acls_on_only_the_cluster_action_opens_a_replica_fetch_stream():
    """A client principal (ACLs on) may not open the replica stream without CLUSTER_ACTION."""
    from node.security.grpc_authz import authorized_handler

    class Gate:
        def __init__(self, allow):
            self.allow, self.asked = allow, []

        def authorize(self, session, op, rtype, name):
            self.asked.append((session.principal, op.name, rtype.name))
            return self.allow

    class Ctx(_Ctx):
        def peer(self):
            return "ipv4:127.0.0.1:5555"

    for allow in (False, True):
        gate, ctx = Gate(allow), Ctx()
        h = authorized_handler(gate, "User:mallory", "/brokerlab.Broker/ReplicaFetch", _EchoHandler)
        answers = h.stream_stream(iter(["m1"]), ctx)
        if allow:
            assert list(answers) == ["m1"]
        else:
            with pytest.raises(_Aborted):
                next(answers)
            assert ctx.code == grpc.StatusCode.PERMISSION_DENIED
        assert gate.asked == [("User:mallory", "CLUSTER_ACTION", "CLUSTER")]


def test_a_replica_made_while_the_follower_first_asks_still_wakes_the_session(broker):
    """The follower's first request can arrive while the leader is still applying the metadata that
    creates the partition: the session must listen to the replica that exists when it reads."""
    b = broker(1)
    md = metadata(leader=1, leader_epoch=0, isr=[1, 2], replicas=[1, 2], broker_epochs={1: 11, 2: 12})
    session = b.replica_fetch_session(2)
    real = b.on_replica_position

    def metadata_lands_meanwhile(*a, **kw):
        b.apply_metadata(md)  # made between the session's first look and the position check
        return real(*a, **kw)

    b.on_replica_position = metadata_lands_meanwhile
    first = _answer(session, _message(parts=[(0, 0, 0)]))
    assert [p.error_code for p in first.partitions] == [0]
    b.on_replica_position = real
    b.append_as_leader(TOPIC, 0, batch(2), acks=-1)
    out = _answer(session, _message())
    assert [(p.partition, len(p.records) > 0) for p in out.partitions] == [(0, True)], \
        "the session never heard of the append"
