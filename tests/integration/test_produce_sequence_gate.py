"""A leader applies one producer's batches of a partition in sequence order, whatever order its
requests arrive in (issue 21: with 5 in flight, gRPC serves them on different threads).

The real Broker.produce runs in-process over fakes (tests/broker_driver.py) on a manual clock. The
late predecessor is forced: the successor's request runs on its own thread and the test waits until
it is parked on the partition's condition (RecordingCondition) or has already been answered, then
sends the predecessor. No sleeps; time moves only when the test advances the clock.
"""
from __future__ import annotations

import threading

import pytest

from client.common import errors
from node.broker import PartitionProduce
from tests.broker_driver import TOPIC, RecordingCondition, batch, metadata, stored_values
from tests.helpers import wait_until

PID = 7


def _leader(broker, **configs):
    b = broker(1, configs=configs or None)
    b.apply_metadata(metadata(leader=1, leader_epoch=0, isr=[1], replicas=[1, 2]))
    r = b.replicas[(TOPIC, 0)]
    r.hw_cond = RecordingCondition()
    return b, r


def _produce(b, payload: bytes) -> PartitionProduce:
    return b.produce([PartitionProduce(TOPIC, 0, payload)], acks=1, timeout_ms=1000)[0]


class _InFlight:
    """One produce request being served on its own thread (as by a gRPC worker)."""

    def __init__(self, b, payload: bytes):
        self.outcome: PartitionProduce | None = None
        self._thread = threading.Thread(target=self._run, args=(b, payload), daemon=True)
        self._thread.start()

    def _run(self, b, payload):
        self.outcome = _produce(b, payload)

    def parked_or_answered(self, r) -> bool:
        return r.hw_cond.waits > 0 or self.outcome is not None

    def join(self) -> PartitionProduce:
        self._thread.join(timeout=30)
        assert self.outcome is not None, "the produce request never returned"
        return self.outcome


def _seq(first: int, n: int = 2, value: bytes = b"v") -> bytes:
    return batch(n, value=value, producer_id=PID, producer_epoch=0, base_sequence=first)


@pytest.mark.parametrize("known_producer", [False, True], ids=["first batches", "later batches"])
def test_batch_arriving_before_its_predecessor_is_appended_after_it(broker, known_producer):
    b, r = _leader(broker)
    start = 0
    if known_producer:
        assert _produce(b, _seq(0, value=b"p")).error is None
        start = 2
    # Sequence start+2 arrives first; on the old code it was answered OUT_OF_ORDER_SEQUENCE_NUMBER
    # at once and the producer had to retry it.
    successor = _InFlight(b, _seq(start + 2, value=b"b"))
    wait_until(lambda: successor.parked_or_answered(r), what="the successor parked or answered")
    predecessor = _produce(b, _seq(start, value=b"a"))
    second = successor.join()
    assert predecessor.error is None and second.error is None, second.error
    assert (predecessor.result.base_offset, second.result.base_offset) == (start, start + 2)
    values = [v for _, v in stored_values(b)][start:]
    assert values == [b"a0", b"a1", b"b0", b"b1"]
    assert r.producers.last_entry(PID).last_seq == start + 3


def test_three_held_batches_are_appended_in_sequence_order(broker):
    b, r = _leader(broker)
    held = []
    for first in (6, 2, 4):  # each parks before the next is sent
        seen = r.hw_cond.waits
        held.append(_InFlight(b, _seq(first, value=str(first).encode())))
        wait_until(lambda h=held[-1], seen=seen: r.hw_cond.waits > seen or h.outcome is not None,
                   what=f"sequence {first} parked or answered")
    assert _produce(b, _seq(0, value=b"0")).error is None
    outcomes = {first: h.join() for first, h in zip((6, 2, 4), held, strict=True)}
    assert all(o.error is None for o in outcomes.values()), {f: o.error for f, o in outcomes.items()}
    assert {f: o.result.base_offset for f, o in outcomes.items()} == {2: 2, 4: 4, 6: 6}
    assert [v[:1] for _, v in stored_values(b)] == [b"0", b"0", b"2", b"2", b"4", b"4", b"6", b"6"]


def test_batch_whose_predecessor_never_comes_is_out_of_order_after_the_bound(broker):
    b, r = _leader(broker, **{"emu.produce.sequence.wait.ms": 500})
    assert _produce(b, _seq(0)).error is None
    orphan = _InFlight(b, _seq(4))  # sequence 2-3 is lost
    wait_until(lambda: r.hw_cond.waits > 0 or orphan.outcome is not None, what="the orphan parked")
    assert orphan.outcome is None, "held, not answered at once"
    b.clock.advance(499)
    b.wake(r)  # an unrelated wake (a HW move) before the bound: it waits on
    wait_until(lambda: r.hw_cond.waits > 1, what="the orphan waiting again")
    assert orphan.outcome is None
    b.clock.advance(1)
    b.wake(r)
    out = orphan.join()
    assert isinstance(out.error, errors.OutOfOrderSequenceNumberError)
    assert r.model.log_end_offset == 2 and r.producers.last_entry(PID).last_seq == 1
    # The lost batch's retry, then the orphan's, are appended in order.
    assert _produce(b, _seq(2)).error is None and _produce(b, _seq(4)).result.base_offset == 4


@pytest.mark.parametrize("name, first", [("behind the next sequence, not retained", 1),
                                         ("a gap after the request's own earlier batch", None)])
def test_batches_that_cannot_become_valid_are_answered_at_once(broker, name, first):
    b, r = _leader(broker)
    assert _produce(b, _seq(0, n=4)).error is None

    def must_not_wait():
        raise AssertionError(f"{name}: held for a predecessor that cannot come")

    r.hw_cond.on_wait = must_not_wait
    payload = _seq(1) if first is not None else _seq(4) + _seq(9)
    out = _produce(b, payload)
    assert isinstance(out.error, errors.OutOfOrderSequenceNumberError), name
    assert r.model.log_end_offset == 4


def test_zero_wait_answers_a_gap_at_once(broker):
    b, r = _leader(broker, **{"emu.produce.sequence.wait.ms": 0})
    r.hw_cond.on_wait = lambda: pytest.fail("held with emu.produce.sequence.wait.ms=0")
    assert isinstance(_produce(b, _seq(2)).error, errors.OutOfOrderSequenceNumberError)


def test_held_batch_sees_a_leadership_change(broker):
    b, r = _leader(broker)
    assert _produce(b, _seq(0)).error is None
    successor = _InFlight(b, _seq(2 + 2))
    wait_until(lambda: successor.parked_or_answered(r), what="parked")
    b.apply_metadata(metadata(leader=2, leader_epoch=1, isr=[1, 2], replicas=[1, 2], metadata_epoch=2))
    out = successor.join()
    assert isinstance(out.error, errors.NotLeaderOrFollowerError)
