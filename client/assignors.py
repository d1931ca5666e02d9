"""Partition assignors for the consumer group leader (pure functions of their input).

The leader of a group gets every member's `Subscription` in its JoinGroup
response and computes `assign(members, partitions_per_topic)`; the result is
sent back in SyncGroup, one `encode_assignment` blob per member.

Kafka's `partition.assignment.strategy` short names:

- ``range``: per topic, contiguous ranges; earlier members get one extra.
- ``roundrobin``: all partitions in (topic, partition) order dealt in turn.
- ``sticky``: balanced, and keeps owned partitions where balance allows (EAGER).
- ``cooperative-sticky``: the sticky result, but KIP-429's two phases: a
  partition moving from A to B is revoked from A now and given to B only in
  the follow-up rebalance, so no partition is ever owned twice (COOPERATIVE).

Member order (range, roundrobin, ties elsewhere) is Kafka's `MemberInfo`
order: static members by group.instance.id first, then dynamic ones by
member id.

Blob format: UTF-8 JSON, version field ``"v": 0``; partitions are written as
``{"topic": [partition, ...]}``, user data as base64. Unknown fields are
ignored on decode, so later versions can add fields.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from client.common.errors import ConfigError
from client.common.types import TopicPartition

Assignments = dict[str, list[TopicPartition]]

EAGER = "EAGER"
COOPERATIVE = "COOPERATIVE"


@dataclass(frozen=True, slots=True)
class Subscription:
    topics: Sequence[str]
    owned_partitions: Sequence[TopicPartition] = ()
    generation_id: int = -1
    group_instance_id: str | None = None
    user_data: bytes = b""


@dataclass(frozen=True, slots=True)
class Assignment:
    partitions: Sequence[TopicPartition]
    user_data: bytes = b""


# ------------------------------------------------------------------ codecs

def _tps_to_json(tps: Iterable[TopicPartition]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for topic, partition in sorted(tps):
        out.setdefault(topic, []).append(int(partition))
    return out


def _tps_from_json(obj: Mapping[str, Sequence[int]]) -> list[TopicPartition]:
    return sorted(TopicPartition(topic, int(p)) for topic, parts in obj.items() for p in parts)


def encode_subscription(sub: Subscription) -> bytes:
    """ConsumerProtocolSubscription as JSON; group_instance_id is not encoded
    (the coordinator reports it next to each member's metadata)."""
    return json.dumps({
        "v": 0,
        "topics": sorted(sub.topics),
        "owned_partitions": _tps_to_json(sub.owned_partitions),
        "generation_id": sub.generation_id,
        "user_data": base64.b64encode(sub.user_data).decode("ascii"),
    }, sort_keys=True).encode("utf-8")


def decode_subscription(data: bytes, group_instance_id: str | None = None) -> Subscription:
    obj = json.loads(data.decode("utf-8")) if data else {}
    return Subscription(
        topics=list(obj.get("topics", [])),
        owned_partitions=_tps_from_json(obj.get("owned_partitions", {})),
        generation_id=int(obj.get("generation_id", -1)),
        group_instance_id=group_instance_id,
        user_data=base64.b64decode(obj.get("user_data", "")),
    )


def encode_assignment(assignment: Assignment | Iterable[TopicPartition]) -> bytes:
    if not isinstance(assignment, Assignment):
        assignment = Assignment(list(assignment))
    return json.dumps({
        "v": 0,
        "partitions": _tps_to_json(assignment.partitions),
        "user_data": base64.b64encode(assignment.user_data).decode("ascii"),
    }, sort_keys=True).encode("utf-8")


def decode_assignment(data: bytes) -> Assignment:
    """An empty blob (member left out by the leader) is an empty assignment."""
    obj = json.loads(data.decode("utf-8")) if data else {}
    return Assignment(_tps_from_json(obj.get("partitions", {})),
                      base64.b64decode(obj.get("user_data", "")))


# --------------------------------------------------------------- helpers

def _member_order(members: Mapping[str, Subscription]) -> list[str]:
    """Kafka's MemberInfo order: static by instance id first, then dynamic by member id."""
    def key(mid: str) -> tuple[int, str, str]:
        inst = members[mid].group_instance_id
        return (0, inst, mid) if inst is not None else (1, mid, mid)
    return sorted(members, key=key)


def _all_partitions(members: Mapping[str, Subscription],
                    partitions_per_topic: Mapping[str, int]) -> list[TopicPartition]:
    """Every existing partition of every subscribed topic, sorted."""
    topics = sorted({t for s in members.values() for t in s.topics if t in partitions_per_topic})
    return [TopicPartition(t, p) for t in topics for p in range(partitions_per_topic[t])]


class PartitionAssignor:
    name: ClassVar[str]
    rebalance_protocol: ClassVar[str] = EAGER
    supported_protocols: ClassVar[tuple[str, ...]] = (EAGER,)

    def assign(self, members: Mapping[str, Subscription],
               partitions_per_topic: Mapping[str, int]) -> Assignments:
        """member_id -> sorted partitions; every member appears, maybe with []."""
        raise NotImplementedError


class RangeAssignor(PartitionAssignor):
    name = "range"

    def assign(self, members: Mapping[str, Subscription],
               partitions_per_topic: Mapping[str, int]) -> Assignments:
        result: Assignments = {mid: [] for mid in members}
        order = _member_order(members)
        for topic in sorted({t for s in members.values() for t in s.topics}):
            n = partitions_per_topic.get(topic)
            if not n:
                continue
            consumers = [mid for mid in order if topic in members[mid].topics]
            per, extra = divmod(n, len(consumers))
            for i, mid in enumerate(consumers):
                start = per * i + min(i, extra)
                length = per + (1 if i < extra else 0)
                result[mid].extend(TopicPartition(topic, p) for p in range(start, start + length))
        return result


class RoundRobinAssignor(PartitionAssignor):
    name = "roundrobin"

    def assign(self, members: Mapping[str, Subscription],
               partitions_per_topic: Mapping[str, int]) -> Assignments:
        result: Assignments = {mid: [] for mid in members}
        order = _member_order(members)
        if not order:
            return result
        i = 0
        for topic, partition in _all_partitions(members, partitions_per_topic):
            # Advance the circle to the next member subscribed to this topic.
            for _ in range(len(order)):
                mid = order[i % len(order)]
                i += 1
                if topic in members[mid].topics:
                    result[mid].append(TopicPartition(topic, partition))
                    break
        return result


class StickyAssignor(PartitionAssignor):
    """Balanced first, then sticky.

    Balanced means no partition could move to another subscribed member that
    has at least two fewer partitions (for equal subscriptions: max - min <=
    1). Stickiness: each member keeps the partitions it owned, if still
    subscribed and not claimed by a member of a newer generation; only the
    excess of over-loaded members moves, to the least-loaded members.
    """
    name = "sticky"

    def assign(self, members: Mapping[str, Subscription],
               partitions_per_topic: Mapping[str, int]) -> Assignments:
        order = _member_order(members)
        rank = {mid: i for i, mid in enumerate(order)}
        all_parts = _all_partitions(members, partitions_per_topic)
        existing = set(all_parts)
        current: dict[str, set[TopicPartition]] = {mid: set() for mid in order}

        # Valid ownership: the partition exists, the member is still
        # subscribed, and no member of a newer generation claims it.
        owner: dict[TopicPartition, tuple[int, str]] = {}
        for mid in order:
            sub = members[mid]
            for tp in sub.owned_partitions:
                tp = TopicPartition(tp[0], int(tp[1]))
                if tp not in existing or tp[0] not in sub.topics:
                    continue
                prev = owner.get(tp)
                if prev is None or sub.generation_id > prev[0]:
                    owner[tp] = (sub.generation_id, mid)
        for tp, (_, mid) in owner.items():
            current[mid].add(tp)

        def eligible(tp: TopicPartition) -> list[str]:
            return [mid for mid in order if tp[0] in members[mid].topics]

        # Unowned partitions go to the least-loaded eligible member.
        for tp in all_parts:
            if tp in owner:
                continue
            candidates = eligible(tp)
            if candidates:
                best = min(candidates, key=lambda m: (len(current[m]), rank[m]))
                current[best].add(tp)

        # Move from the most- to the least-loaded member until no move helps.
        # Each move lowers the sum of squared loads, so this ends.
        while True:
            move = self._best_move(order, rank, members, current)
            if move is None:
                break
            tp, src, dst = move
            current[src].remove(tp)
            current[dst].add(tp)
        return {mid: sorted(current[mid]) for mid in members}

    @staticmethod
    def _best_move(order: list[str], rank: dict[str, int], members: Mapping[str, Subscription],
                   current: dict[str, set[TopicPartition]]) -> tuple[TopicPartition, str, str] | None:
        by_load_desc = sorted(order, key=lambda m: (-len(current[m]), rank[m]))
        by_load_asc = sorted(order, key=lambda m: (len(current[m]), rank[m]))
        for src in by_load_desc:
            for dst in by_load_asc:
                if len(current[src]) - len(current[dst]) < 2:
                    break
                dst_topics = members[dst].topics
                movable = [tp for tp in current[src] if tp[0] in dst_topics]
                if movable:
                    return max(movable), src, dst
        return None


class CooperativeStickyAssignor(StickyAssignor):
    """KIP-429: compute the sticky target, then hold back partitions changing owner."""
    name = "cooperative-sticky"
    rebalance_protocol = COOPERATIVE
    supported_protocols = (COOPERATIVE, EAGER)

    def assign(self, members: Mapping[str, Subscription],
               partitions_per_topic: Mapping[str, int]) -> Assignments:
        target = super().assign(members, partitions_per_topic)
        # Any claimed owner counts: a partition still held by anyone must be
        # revoked by that member before another may take it.
        owned_by: dict[TopicPartition, set[str]] = {}
        for mid, sub in members.items():
            for tp in sub.owned_partitions:
                owned_by.setdefault(TopicPartition(tp[0], int(tp[1])), set()).add(mid)
        return {mid: [tp for tp in tps if not (owned_by.get(tp, set()) - {mid})]
                for mid, tps in target.items()}


_ASSIGNORS: dict[str, type[PartitionAssignor]] = {
    cls.name: cls for cls in (RangeAssignor, RoundRobinAssignor, StickyAssignor, CooperativeStickyAssignor)
}


def get_assignor(name: str) -> PartitionAssignor:
    """The assignor for a `partition.assignment.strategy` short name."""
    cls = _ASSIGNORS.get(name)
    if cls is None:
        raise ConfigError(f"partition.assignment.strategy: unknown assignor {name!r} "
                          f"(known: {', '.join(sorted(_ASSIGNORS))})")
    return cls()


def assignor_names() -> list[str]:
    return list(_ASSIGNORS)
