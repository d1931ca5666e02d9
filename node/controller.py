"""ControllerState: the cluster metadata the coordinator owns (model, no I/O).

Brokers register and heartbeat; a broker whose session expires is fenced,
removed from every ISR it is in (unless it is the last member, as KRaft
does) and loses leadership; a new leader is elected from the ISR. Every
change bumps `metadata_epoch`; the driver persists `to_json()` and wakes
metadata watchers.

Fencing is persisted, and after a restart (`load_json`) every broker starts
fenced, as in KRaft, until it heartbeats: the new controller has not heard
from anyone, so no broker may be elected, placed or added to an ISR on the
strength of a session it never saw. A broker that does not heartbeat
within a session timeout of the restart is then fenced for good (ISR
shrink, elections), as if its session had expired.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from client.common import errors
from client.common.config import topic_config, validate_topic_configs
from node.controller_election import elect_leader, place_replicas

log = logging.getLogger(__name__)

INTERNAL_TOPICS = ("__consumer_offsets", "__transaction_state")


@dataclass(slots=True)
class BrokerRegistration:
    broker_id: int
    host: str
    port: int
    agent: str
    broker_epoch: int
    fenced: bool = False
    last_heartbeat_ms: int = 0
    kafka_port: int = 0  # its Kafka-protocol listener, 0 if it has none
    # Fenced only because the controller restarted: its next heartbeat unfences it; its ISR places and
    # leaderships are kept until its session (counted from the restart) expires.
    awaiting_heartbeat: bool = False

    def to_json(self) -> dict:
        return {"broker_id": self.broker_id, "host": self.host, "port": self.port, "agent": self.agent,
                "broker_epoch": self.broker_epoch, "kafka_port": self.kafka_port,
                "fenced": self.fenced and not self.awaiting_heartbeat}


@dataclass(slots=True)
class PartitionRecord:
    partition: int
    replicas: list[int]
    isr: list[int]
    leader: int
    leader_epoch: int = 0
    partition_epoch: int = 0

    def to_json(self) -> dict:
        return {"partition": self.partition, "replicas": self.replicas, "isr": self.isr,
                "leader": self.leader, "leader_epoch": self.leader_epoch,
                "partition_epoch": self.partition_epoch}


@dataclass(slots=True)
class TopicRecord:
    name: str
    configs: dict[str, str]
    partitions: list[PartitionRecord] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"name": self.name, "configs": self.configs,
                "partitions": [p.to_json() for p in self.partitions]}


class ControllerState:
    def __init__(self, broker_session_timeout_ms: int, default_unclean: bool = False, *,
                 num_partitions: int = 1, default_replication_factor: int = 1):
        """default_unclean, num_partitions, default_replication_factor: the cluster defaults (Kafka's
        broker configs unclean.leader.election.enable, num.partitions, default.replication.factor)
        that a topic's own configs and a CreateTopics request's explicit counts override."""
        self.session_timeout_ms = broker_session_timeout_ms
        self.default_unclean = default_unclean
        self.num_partitions = num_partitions
        self.default_replication_factor = default_replication_factor
        self.brokers: dict[int, BrokerRegistration] = {}
        self.topics: dict[str, TopicRecord] = {}
        self.metadata_epoch = 1
        self.next_broker_epoch = 1
        self.next_placement = 0

    # -- persistence -----------------------------------------------------
    def to_json(self) -> dict:
        return {"metadata_epoch": self.metadata_epoch, "next_broker_epoch": self.next_broker_epoch,
                "next_placement": self.next_placement,
                "brokers": [b.to_json() for b in self.brokers.values()],
                "topics": [t.to_json() for t in self.topics.values()]}

    def load_json(self, data: dict, now_ms: int) -> None:
        self.metadata_epoch = data["metadata_epoch"] + 1
        self.next_broker_epoch = data["next_broker_epoch"]
        self.next_placement = data.get("next_placement", 0)
        for b in data["brokers"]:
            # Fenced until heard from (KRaft). One fenced before the restart must register again; the
            # others keep their epoch and are unfenced by their first heartbeat.
            was_fenced = b.get("fenced", False)
            self.brokers[b["broker_id"]] = BrokerRegistration(
                b["broker_id"], b["host"], b["port"], b["agent"], b["broker_epoch"],
                fenced=True, last_heartbeat_ms=now_ms, kafka_port=b.get("kafka_port", 0),
                awaiting_heartbeat=not was_fenced)
        for t in data["topics"]:
            self.topics[t["name"]] = TopicRecord(t["name"], t["configs"], [
                PartitionRecord(p["partition"], p["replicas"], p["isr"], p["leader"], p["leader_epoch"],
                                p["partition_epoch"]) for p in t["partitions"]])

    def _bump(self) -> None:
        self.metadata_epoch += 1

    # -- brokers ---------------------------------------------------------
    def live_brokers(self) -> set[int]:
        return {b.broker_id for b in self.brokers.values() if not b.fenced}

    def register_broker(self, broker_id: int, host: str, port: int, agent: str, now_ms: int,
                        kafka_port: int = 0) -> int:
        epoch = self.next_broker_epoch
        self.next_broker_epoch += 1
        prev = self.brokers.get(broker_id)
        if prev is not None and (not prev.fenced or prev.awaiting_heartbeat):
            # A restart inside the session: the old incarnation's leadership is void.
            self._fence(broker_id)
        self.brokers[broker_id] = BrokerRegistration(broker_id, host, port, agent, epoch, False, now_ms,
                                                     kafka_port)
        log.info("Registered broker %d at %s:%d with epoch %d", broker_id, host, port, epoch)
        self._elect_offline()
        self._bump()
        return epoch

    def heartbeat(self, broker_id: int, broker_epoch: int, now_ms: int) -> None:
        b = self.brokers.get(broker_id)
        if b is None or b.broker_epoch != broker_epoch:
            raise errors.StaleBrokerEpochError(f"broker {broker_id} epoch {broker_epoch} is not current")
        if b.fenced and not b.awaiting_heartbeat:
            raise errors.StaleBrokerEpochError(f"broker {broker_id} is fenced; register again")
        b.last_heartbeat_ms = now_ms
        if b.awaiting_heartbeat:
            b.fenced = b.awaiting_heartbeat = False
            log.info("Broker %d heartbeat after the controller restart; unfencing it", broker_id)
            self._elect_offline()
            self._bump()

    def start_sessions(self, now_ms: int) -> None:
        """The controller hears heartbeats from now on: the sessions of brokers read back from disk
        (awaiting their first heartbeat) count from here, not from the read (a start slower than a
        session would fence every broker before one could be heard, and take every leader away)."""
        for b in self.brokers.values():
            if b.awaiting_heartbeat:
                b.last_heartbeat_ms = max(b.last_heartbeat_ms, now_ms)

    def tick(self, now_ms: int) -> list[int]:
        """Fences brokers whose session expired; returns their ids."""
        expired = [b.broker_id for b in self.brokers.values()
                   if (not b.fenced or b.awaiting_heartbeat) and now_ms - b.last_heartbeat_ms > self.session_timeout_ms]
        for bid in expired:
            log.info("Broker %d session expired; fencing it", bid)
            self.brokers[bid].awaiting_heartbeat = False
            self._fence(bid)
        if expired:
            self._bump()
        return expired

    def unclean_enabled(self, t: TopicRecord) -> bool:
        """The topic's unclean.leader.election.enable, else the cluster's."""
        if "unclean.leader.election.enable" in t.configs:
            return topic_config(t.configs, "unclean.leader.election.enable")
        return self.default_unclean

    def _fence(self, broker_id: int) -> None:
        self.brokers[broker_id].fenced = True
        live = self.live_brokers()
        for t in self.topics.values():
            unclean = self.unclean_enabled(t)
            for p in t.partitions:
                if broker_id not in p.replicas:
                    continue
                if p.leader == broker_id:
                    leader, isr, _ = elect_leader(p.replicas, p.isr, live, unclean, p.leader if p.leader in live else None)
                    self._change_leader(t.name, p, leader, isr)
                elif broker_id in p.isr and len(p.isr) > 1:
                    p.isr = [r for r in p.isr if r != broker_id]
                    p.partition_epoch += 1

    def _elect_offline(self) -> None:
        live = self.live_brokers()
        for t in self.topics.values():
            unclean = self.unclean_enabled(t)
            for p in t.partitions:
                if p.leader >= 0 and p.leader in live:
                    continue
                leader, isr, _ = elect_leader(p.replicas, p.isr, live, unclean, p.leader if p.leader in live else None)
                if leader is not None and leader >= 0:
                    self._change_leader(t.name, p, leader, isr)

    def _change_leader(self, topic: str, p: PartitionRecord, leader: int | None, isr: list[int]) -> None:
        new_leader = -1 if leader is None else leader
        log.info("Partition %s-%d: leader %d -> %d, isr %s -> %s", topic, p.partition, p.leader,
                 new_leader, p.isr, isr)
        p.leader = new_leader
        p.isr = list(isr)
        p.leader_epoch += 1
        p.partition_epoch += 1

    # -- topics ----------------------------------------------------------
    def create_topic(self, name: str, num_partitions: int, replication_factor: int,
                     configs: dict[str, str], validate_only: bool = False) -> TopicRecord:
        """num_partitions / replication_factor -1: the cluster's num.partitions / default.replication.factor."""
        if num_partitions == -1:
            num_partitions = self.num_partitions
        if replication_factor == -1:
            replication_factor = self.default_replication_factor
        if not name or len(name) > 249 or any(c not in _LEGAL for c in name) or name in (".", ".."):
            raise errors.InvalidTopicError(f"Topic name '{name}' is illegal: use [a-zA-Z0-9._-], at most 249")
        if name in self.topics:
            raise errors.TopicAlreadyExistsError(f"Topic '{name}' already exists.")
        if num_partitions < 1:
            raise errors.InvalidPartitionsError("Number of partitions must be larger than 0.")
        live = sorted(self.live_brokers())
        if replication_factor < 1:
            raise errors.InvalidReplicationFactorError("Replication factor must be larger than 0.")
        if replication_factor > len(live):
            raise errors.InvalidReplicationFactorError(
                f"Replication factor: {replication_factor} larger than available brokers: {len(live)}.")
        try:
            cfg = validate_topic_configs(configs)
        except errors.ConfigError as e:
            raise errors.InvalidConfigError(str(e)) from None
        if int(cfg.get("min.insync.replicas", "1")) > replication_factor:
            # Kafka allows it (acks=all then always fails); we warn in the log only.
            log.warning("Topic %s: min.insync.replicas above replication factor", name)
        assignment = place_replicas(num_partitions, replication_factor, live, self.next_placement)
        t = TopicRecord(name, cfg, [PartitionRecord(i, reps, list(reps), reps[0], 0, 0)
                                    for i, reps in enumerate(assignment)])
        if validate_only:
            return t
        self.next_placement += 1
        self.topics[name] = t
        log.info("Created topic %s with %d partitions, replication factor %d", name, num_partitions,
                 replication_factor)
        self._bump()
        return t

    def auto_create_topics(self, names: list[str]) -> dict[str, errors.KafkaError | None]:
        """Kafka's auto-creation (a Metadata or Produce request naming an unknown topic), with the cluster's
        num.partitions and default.replication.factor: None per topic created, else why it was not.
        Topics that exist are left out; internal topics are their coordinators' to create."""
        out: dict[str, errors.KafkaError | None] = {}
        for name in dict.fromkeys(names):
            if name in self.topics:
                continue
            if name in INTERNAL_TOPICS:
                out[name] = errors.UnknownTopicOrPartitionError(f"internal topic {name} is created by its coordinator")
                continue
            try:
                self.create_topic(name, -1, -1, {})
                log.info("Auto-created topic %s", name)
                out[name] = None
            except errors.KafkaError as e:
                out[name] = e
        return out

    def unknown_partitions(self, partitions) -> set[tuple[str, int]]:
        """The (topic, partition)s that do not exist (Kafka's `!metadataCache.contains(tp)`)."""
        out = set()
        for topic, partition in partitions:
            t = self.topics.get(topic)
            if t is None or not 0 <= partition < len(t.partitions):
                out.add((topic, partition))
        return out

    def delete_topic(self, name: str) -> None:
        if name not in self.topics:
            raise errors.UnknownTopicOrPartitionError(f"Topic '{name}' does not exist.")
        del self.topics[name]
        self._bump()

    def alter_partition(self, broker_id: int, broker_epoch: int, topic: str, partition: int,
                        leader_epoch: int, partition_epoch: int, new_isr: list[int]) -> PartitionRecord:
        b = self.brokers.get(broker_id)
        if b is None or b.broker_epoch != broker_epoch or b.fenced:
            raise errors.StaleBrokerEpochError(f"broker {broker_id} epoch {broker_epoch} is not current")
        t = self.topics.get(topic)
        if t is None or partition >= len(t.partitions):
            raise errors.UnknownTopicOrPartitionError(f"{topic}-{partition}")
        p = t.partitions[partition]
        if p.leader != broker_id:
            raise errors.NotLeaderOrFollowerError(f"broker {broker_id} does not lead {topic}-{partition}")
        if leader_epoch != p.leader_epoch:
            raise errors.FencedLeaderEpochError(f"leader epoch {leader_epoch} != {p.leader_epoch}")
        if partition_epoch != p.partition_epoch:
            raise errors.InvalidUpdateVersionError(
                f"partition epoch {partition_epoch} != {p.partition_epoch} for {topic}-{partition}")
        if broker_id not in new_isr or not set(new_isr) <= set(p.replicas):
            raise errors.InvalidRequestError(f"ISR {new_isr} must hold the leader and only replicas")
        live = self.live_brokers()
        added = set(new_isr) - set(p.isr)
        if any(r not in live for r in added):
            raise errors.IneligibleReplicaError(f"cannot add fenced brokers {sorted(added - live)} to the ISR")
        log.info("Partition %s-%d: ISR %s -> %s", topic, partition, p.isr, new_isr)
        p.isr = list(new_isr)
        p.partition_epoch += 1
        self._bump()
        return p


_LEGAL = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
