"""Consumer commits (issue 19 items 4 and 9): the real ConsumerCoordinator over a scripted coordinator.

No cluster: `_rpc` (the one place the member calls the coordinator) is
replaced by a script that plays the coordinator, so a rebalance can land
exactly between two attempts of one commit, or before commit_async's worker
sends it.
"""
from __future__ import annotations

import threading

import pytest

from chaos.workloads.group import GroupClient
from client import Consumer, TopicPartition, group_member
from client.common import errors as E
from client.common.pb import group_pb2 as gpb
from client.common.types import OffsetAndMetadata

WAIT_S = 10.0
OFFSETS = {TopicPartition("t", 0): OffsetAndMetadata(10)}


class ScriptedCoordinator:
    """Answers OffsetCommit from `script` (one step per attempt: a response error code, or an exception
    to raise as the transport would); the coordinator's group is at `generation`."""

    def __init__(self, coord, script=(), generation: int = 5):
        self.coord = coord
        self.script = list(script)
        self.generation = generation
        self.sent: list[gpb.OffsetCommitRequest] = []
        self.before_answer = None  # called with the attempt number before answering

    def __call__(self, name, request, timeout_s):
        if name != "OffsetCommit":
            return getattr(gpb, f"{name}Response")()
        self.sent.append(request)
        if self.before_answer is not None:
            self.before_answer(len(self.sent))
        step = self.script.pop(0) if self.script else 0
        if isinstance(step, Exception):
            raise step
        if step == 0 and request.generation_id != self.generation:
            step = E.IllegalGenerationError.code  # what the coordinator says to a stale generation
        out = gpb.OffsetCommitResponse(error_code=step)
        for p in request.partitions:
            out.partitions.add(topic=p.topic, partition=p.partition, error_code=step)
        return out


@pytest.fixture
def member(monkeypatch):
    """A subscribed consumer in generation 5 whose coordinator is a script."""
    monkeypatch.setattr(group_member, "RETRY_BACKOFF_S", 0)
    consumer = Consumer({"bootstrap.servers": "127.0.0.1:1", "group.id": "g", "enable.auto.commit": False})
    consumer.metadata.refresh = lambda *a, **k: None  # no cluster to ask
    coord = consumer.group
    coord.subscription = {"t"}
    coord.member_id, coord.generation_id, coord.stable, coord.rejoin_needed = "m-1", 5, True, False
    coord._rpc = ScriptedCoordinator(coord)
    yield consumer
    consumer.close(timeout=1)


# ------------------------------------ item 4: a commit keeps its generation


def test_retried_commit_keeps_the_generation_it_was_taken_in(member):
    coord = member.group
    script = coord._rpc
    script.script = [E.CoordinatorLoadInProgressError.code]

    def rebalance_meanwhile(attempt):
        if attempt == 1:  # the group moves to generation 6 while the first attempt is out
            script.generation = 6
            with coord.lock:
                coord.generation_id = 6

    script.before_answer = rebalance_meanwhile
    with pytest.raises(E.IllegalGenerationError):
        member.commit_sync(OFFSETS, timeout=5)
    assert [r.generation_id for r in script.sent] == [5, 5]
    assert not coord.rejoin_needed  # the member is already in the new generation


def test_commit_async_carries_the_generation_it_was_taken_in(member):
    coord = member.group
    script = coord._rpc
    busy = threading.Event()
    coord._async.submit(busy.wait, WAIT_S)  # the worker is busy: the commit waits in its queue
    done = threading.Event()
    outcome = []
    member.commit_async(OFFSETS, lambda offsets, exc: (outcome.append(exc), done.set()))
    script.generation = 6  # a rebalance completes before the worker sends the commit
    with coord.lock:
        coord.generation_id = 6
    busy.set()
    assert done.wait(WAIT_S)
    assert [r.generation_id for r in script.sent] == [5]
    assert isinstance(outcome[0], E.IllegalGenerationError)


def test_commit_async_outside_a_generation_fails_at_once(member):
    coord = member.group
    with coord.lock:
        coord.generation_id = -1
    done = threading.Event()
    outcome = []
    member.commit_async(OFFSETS, lambda offsets, exc: (outcome.append(exc), done.set()))
    assert done.wait(WAIT_S)
    assert isinstance(outcome[0], E.RebalanceInProgressError) and coord._rpc.sent == []


# ---------------------- item 9: a commit that may have landed is not a `fail`


@pytest.mark.parametrize("first", [E.KafkaTimeoutError("deadline exceeded"), E.RequestTimedOutError.code],
                         ids=["transport-timeout", "REQUEST_TIMED_OUT"])
@pytest.mark.parametrize("last", [E.UnknownMemberIdError, E.RebalanceInProgressError, E.IllegalGenerationError])
def test_commit_failing_after_an_attempt_of_unknown_outcome_is_indefinite(member, first, last):
    script = member.group._rpc
    script.script = [first, last.code]
    with pytest.raises(last) as failed:
        member.commit_sync(OFFSETS, timeout=5)
    assert len(script.sent) == 2
    assert not failed.value.definite

    # The group workload records it as `info`, not `fail`.
    client = GroupClient("127.0.0.1:1", {}, {}, group="g")
    client.consumer = member
    script.script = [first, last.code]
    assert client.commit({"t/0": 10}).type == "info"


def test_commit_failing_at_its_only_attempt_stays_definite(member):
    script = member.group._rpc
    script.script = [E.UnknownMemberIdError.code]
    with pytest.raises(E.UnknownMemberIdError) as failed:
        member.commit_sync(OFFSETS, timeout=5)
    assert failed.value.definite
    client = GroupClient("127.0.0.1:1", {}, {}, group="g")
    client.consumer = member
    script.script = [E.UnknownMemberIdError.code]
    assert client.commit({"t/0": 10}).type == "fail"
