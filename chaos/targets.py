"""Fault targets and partition shapes, as Jepsen names them. Pure: a cluster view and a seeded rng in,
node names out.

A partition is a *grudge*: for each node, the nodes whose traffic it refuses (every node enforces the
rules for traffic arriving at it). Group-shaped partitions also report their groups, for the history.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

NODE_TARGETS = ("one", "broker", "leader-of", "coordinator", "minority", "majority", "all", "random")
SHAPES = ("isolate-one", "halves", "majorities-ring", "bridge", "leader-isolated-from-followers")


class TargetError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What targeting needs to know: node names and, per "topic/partition", its leader and replicas."""

    nodes: tuple[str, ...]
    coordinator: str = "coordinator"
    leaders: dict[str, str] = field(default_factory=dict)
    replicas: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def brokers(self) -> list[str]:
        return [n for n in self.nodes if n != self.coordinator]


def _key(view: ClusterView, topic: str | None, partition: int | None, rng: random.Random) -> str:
    if topic is None:
        keys = sorted(k for k in view.leaders if not k.startswith("__"))
        if not keys:
            raise TargetError("leader-of: the cluster has no topic partitions with a leader")
        return rng.choice(keys)
    key = f"{topic}/{partition or 0}"
    if key not in view.leaders:
        raise TargetError(f"leader-of: no leader known for {key}")
    return key


def leader_of(view: ClusterView, rng: random.Random, topic: str | None = None,
              partition: int | None = None) -> tuple[str, str]:
    """(key, leader node) for the given partition, or a random partition when topic is None."""
    key = _key(view, topic, partition, rng)
    return key, view.leaders[key]


def majority(n: int) -> int:
    return n // 2 + 1


def resolve_nodes(target: str, view: ClusterView, rng: random.Random, topic: str | None = None,
                  partition: int | None = None) -> list[str]:
    """Node names for a target; a target may also be a node name or a comma-separated list of them."""
    nodes = sorted(view.nodes)
    n = len(nodes)
    if not nodes:
        raise TargetError("the cluster has no nodes")
    if target == "one":
        return [rng.choice(nodes)]
    if target == "broker":
        return [rng.choice(sorted(view.brokers))]
    if target == "leader-of":
        return [leader_of(view, rng, topic, partition)[1]]
    if target == "coordinator":
        return [view.coordinator]
    if target == "minority":
        return sorted(rng.sample(nodes, max(1, (n - 1) // 2)))
    if target == "majority":
        return sorted(rng.sample(nodes, majority(n)))
    if target == "all":
        return nodes
    if target == "random":
        return sorted(rng.sample(nodes, rng.randint(1, n)))
    names = [s.strip() for s in target.split(",") if s.strip()]
    unknown = [s for s in names if s not in view.nodes]
    if not names or unknown:
        raise TargetError(f"unknown target '{target}': use one of {', '.join(NODE_TARGETS)} "
                          f"or node names ({', '.join(nodes)})")
    return names


def grudge_of_groups(groups: list[list[str]], one_way: bool = False) -> dict[str, list[str]]:
    """Each node refuses traffic from nodes outside its group. Nodes in no group keep every link.
    one_way: only traffic *from* the first group is cut (it still hears the others)."""
    grudge: dict[str, list[str]] = {}
    for i, g in enumerate(groups):
        if one_way and i == 0:
            continue
        others = [x for j, h in enumerate(groups) if j != i for x in h if not one_way or j == 0]
        for node in g:
            grudge.setdefault(node, [])
            grudge[node] = sorted(set(grudge[node]) | {o for o in others if o not in g})
    return {k: v for k, v in sorted(grudge.items()) if v}


def check_groups(groups: list[list[str]], known) -> None:
    seen: set[str] = set()
    if len(groups) < 2:
        raise TargetError("a partition needs at least two groups")
    for g in groups:
        if not g:
            raise TargetError("a partition group is empty")
        for node in g:
            if node not in known:
                raise TargetError(f"unknown node '{node}' in partition (known: {', '.join(sorted(known))})")
            if node in seen:
                raise TargetError(f"node '{node}' is in two partition groups")
            seen.add(node)


@dataclass(frozen=True, slots=True)
class PartitionPlan:
    grudge: dict[str, list[str]]
    groups: list[list[str]] | None = None  # None for shapes that are not groups (majorities-ring)


def partition_shape(shape: str, view: ClusterView, rng: random.Random, topic: str | None = None,
                    partition: int | None = None) -> PartitionPlan:
    nodes = sorted(view.nodes)
    n = len(nodes)
    if n < 2:
        raise TargetError("a partition needs at least two nodes")
    if shape == "isolate-one":
        one = rng.choice(nodes)
        groups = [[one], [x for x in nodes if x != one]]
        return PartitionPlan(grudge_of_groups(groups), groups)
    if shape == "halves":
        shuffled = rng.sample(nodes, n)
        groups = [sorted(shuffled[: n // 2]), sorted(shuffled[n // 2:])]
        return PartitionPlan(grudge_of_groups(groups), groups)
    if shape == "bridge":
        if n < 3:
            raise TargetError("bridge needs at least three nodes")
        shuffled = rng.sample(nodes, n)
        a, bridge, b = sorted(shuffled[: n // 2]), shuffled[n // 2], sorted(shuffled[n // 2 + 1:])
        grudge = grudge_of_groups([a, b])
        return PartitionPlan(grudge, [sorted(a + [bridge]), sorted([bridge] + b)])  # the bridge is in both
    if shape == "majorities-ring":
        ring = rng.sample(nodes, n)
        m = majority(n)
        back = (m - 1) // 2
        grudge = {}
        for i, node in enumerate(ring):
            sees = {ring[(i + k) % n] for k in range(-back, m - back)}
            refused = sorted(set(nodes) - sees)
            if refused:
                grudge[node] = refused
        return PartitionPlan(dict(sorted(grudge.items())), None)
    if shape == "leader-isolated-from-followers":
        key, leader = leader_of(view, rng, topic, partition)
        followers = sorted(x for x in view.replicas.get(key, ()) if x != leader)
        if not followers:
            raise TargetError(f"{key} has no followers to isolate its leader from")
        groups = [[leader], followers]
        return PartitionPlan(grudge_of_groups(groups), groups)
    raise TargetError(f"unknown partition shape '{shape}' (one of {', '.join(SHAPES)})")
