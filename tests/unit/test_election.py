"""Controller election and replica placement: pure functions."""
from __future__ import annotations

from collections import Counter

import pytest

from client.common import errors
from node.controller_election import ElectionResult, elect_leader, place_replicas

R = [1, 2, 3]


@pytest.mark.parametrize("name, isr, live, unclean, current, expected", [
    ("all alive: preferred replica", [1, 2, 3], {1, 2, 3}, False, None, (1, [1, 2, 3], False)),
    ("leader dead: next in assignment order", [1, 2, 3], {2, 3}, False, None, (2, [2, 3], False)),
    ("assignment order, not ISR order", [3, 2], {2, 3}, False, None, (2, [3, 2], False)),
    ("live current leader stays", [1, 2, 3], {1, 2, 3}, False, 3, (3, [1, 2, 3], False)),
    ("dead current leader replaced", [1, 3], {1}, False, 3, (1, [1], False)),
    ("only out-of-sync replica alive, clean", [1], {2}, False, None, (None, [1], False)),
    ("last ISR member fenced keeps ISR", [1, 2], {3}, False, None, (None, [1, 2], False)),
    ("unclean: first live replica", [1], {3, 2}, True, None, (2, [2], True)),
    ("unclean not needed when ISR alive", [1, 3], {2, 3}, True, None, (3, [3], False)),
    ("nobody alive, unclean", [1, 2], set(), True, None, (None, [1, 2], False)),
])
def test_elect_leader(name, isr, live, unclean, current, expected):
    got = elect_leader(R, isr, live, unclean, current_leader=current)
    assert got == ElectionResult(*expected), name
    leader, new_isr, _ = got  # unpacks as the controller uses it
    assert new_isr, "the ISR never becomes empty"
    if leader is not None:
        assert leader in new_isr and set(new_isr) <= set(R)


def test_place_replicas_kafka_shape():
    assert place_replicas(6, 3, [3, 1, 2], 0) == [
        [1, 2, 3], [2, 3, 1], [3, 1, 2],
        [1, 3, 2], [2, 1, 3], [3, 2, 1],   # the follower shift grows after each round
    ]
    assert place_replicas(2, 2, [1, 2, 3], 1) == [[2, 1], [3, 2]]


@pytest.mark.parametrize("partitions, rf, brokers, start", [
    (12, 3, [1, 2, 3], 0),
    (10, 2, [0, 1, 2, 3, 4], 3),
    (7, 1, [5, 6], 1),
    (5, 5, [1, 2, 3, 4, 5], 2),
])
def test_place_replicas_spread(partitions, rf, brokers, start):
    assignment = place_replicas(partitions, rf, brokers, start)
    assert len(assignment) == partitions
    for replicas in assignment:
        assert len(replicas) == rf and len(set(replicas)) == rf and set(replicas) <= set(brokers)
    leaders = Counter(r[0] for r in assignment)
    assert max(leaders.values()) - min(leaders.get(b, 0) for b in brokers) <= 1
    load = Counter(b for r in assignment for b in r)
    assert max(load.values()) - min(load.get(b, 0) for b in brokers) <= 1


@pytest.mark.parametrize("partitions, rf, brokers, error", [
    (3, 4, [1, 2, 3], errors.InvalidReplicationFactorError),
    (3, 0, [1, 2, 3], errors.InvalidReplicationFactorError),
    (3, 1, [], errors.InvalidReplicationFactorError),
    (0, 1, [1, 2, 3], errors.InvalidPartitionsError),
])
def test_place_replicas_errors(partitions, rf, brokers, error):
    with pytest.raises(error):
        place_replicas(partitions, rf, brokers, 0)
