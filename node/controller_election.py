"""The controller's pure choices: who leads a partition, where replicas go.

`elect_leader(replicas, isr, live_brokers, unclean, current_leader=None) -> ElectionResult`
    ElectionResult is a NamedTuple (leader | None, isr, unclean_used), so
    `leader, isr, unclean_used = elect_leader(...)` works. `None` means no
    leader (the wire value is NO_LEADER = -1).

    Follows KRaft's PartitionChangeBuilder when brokers are fenced:
    - Dead brokers leave the ISR, but the ISR never becomes empty: when no
      ISR member is alive the ISR is kept as it was and the partition goes
      offline (leader None). Every member of that ISR held every
      acknowledged record, so whichever comes back first can lead cleanly.
    - The current leader keeps leadership if it is alive and in the new ISR
      (no needless epoch bump); otherwise the first replica in assignment
      order that is in the ISR and alive leads (clean election).
    - Unclean (unclean.leader.election.enable=true), only when no ISR member
      is alive: the first live replica in assignment order leads and the ISR
      becomes just that replica. Records it never got are lost; that is the
      point of the setting.

`place_replicas(num_partitions, replication_factor, broker_ids, start_index) -> list[list[int]]`
    Kafka's rack-unaware assignment shape: brokers sorted; partition p's first
    replica (its preferred leader) is broker[(p + start_index) % n]; the
    others follow at a shift that grows by one after every n partitions, so
    leaders and follower pairs both spread. `start_index` is chosen by the
    caller (Kafka picks it at random; models take no randomness).
"""
from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import NamedTuple

from client.common.errors import InvalidPartitionsError, InvalidReplicationFactorError

NO_LEADER = -1


class ElectionResult(NamedTuple):
    leader: int | None
    isr: list[int]
    unclean_used: bool


def elect_leader(replicas: Iterable[int], isr: Iterable[int], live_brokers: Collection[int],
                 unclean: bool, current_leader: int | None = None) -> ElectionResult:
    replicas_l, isr_l = list(replicas), list(isr)
    live = set(live_brokers)
    live_isr = [r for r in isr_l if r in live and r in replicas_l]
    if live_isr:
        if current_leader is not None and current_leader in live_isr:
            return ElectionResult(current_leader, live_isr, False)
        leader = next(r for r in replicas_l if r in live_isr)
        return ElectionResult(leader, live_isr, False)
    if unclean:
        leader = next((r for r in replicas_l if r in live), None)
        if leader is not None:
            return ElectionResult(leader, [leader], True)
    # Offline: keep the last ISR so a clean election stays possible later.
    return ElectionResult(None, isr_l, False)


def place_replicas(num_partitions: int, replication_factor: int, broker_ids: Iterable[int],
                   start_index: int = 0) -> list[list[int]]:
    if num_partitions < 1:
        raise InvalidPartitionsError("Number of partitions must be larger than 0.")
    if replication_factor < 1:
        raise InvalidReplicationFactorError("Replication factor must be larger than 0.")
    brokers = sorted(set(broker_ids))
    n = len(brokers)
    if replication_factor > n:
        raise InvalidReplicationFactorError(
            f"Replication factor: {replication_factor} larger than available brokers: {n}.")
    start = start_index % n
    assignment = []
    shift = start
    for p in range(num_partitions):
        if p > 0 and p % n == 0:
            shift += 1
        first = (p + start) % n
        replicas = [brokers[first]]
        for j in range(replication_factor - 1):
            # 1..n-1 positions after the first replica: never the first itself,
            # and distinct for distinct j since rf <= n.
            step = 1 + (shift + j) % (n - 1)
            replicas.append(brokers[(first + step) % n])
        assignment.append(replicas)
    return assignment
