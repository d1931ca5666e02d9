"""Small value types shared by client and node."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class TopicPartition(NamedTuple):
    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}-{self.partition}"


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    topic: str
    partition: int
    offset: int
    timestamp: int
    serialized_key_size: int = -1
    serialized_value_size: int = -1

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class ConsumerRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: object
    value: object
    headers: tuple = ()
    leader_epoch: int = -1
    timestamp_type: int = 0


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    offset: int
    metadata: str = ""
    leader_epoch: int = -1


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    topic: str
    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader_epoch: int = 0


@dataclass(slots=True)
class BrokerInfo:
    node_id: int
    host: str
    port: int
    agent: str = ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(slots=True)
class ClusterMetadata:
    """What a client knows of the cluster; handed to custom partitioners as Kafka's `Cluster`."""
    brokers: dict[int, BrokerInfo] = field(default_factory=dict)
    partitions: dict[str, list[PartitionInfo]] = field(default_factory=dict)
    controller: str = ""
    metadata_epoch: int = 0

    def partitions_for_topic(self, topic: str) -> list[PartitionInfo]:
        return self.partitions.get(topic, [])

    def available_partitions_for_topic(self, topic: str) -> list[PartitionInfo]:
        return [p for p in self.partitions.get(topic, []) if p.leader >= 0]

    def leader_for(self, tp: TopicPartition) -> int:
        parts = self.partitions.get(tp.topic)
        if parts is None or tp.partition >= len(parts):
            return -1
        return parts[tp.partition].leader
