"""Admin client: topics (and, with the group and transaction parts, groups and transactions)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from client.common import errors
from client.common.config import AdminConfig
from client.common.network import ChannelPool, transport_error
from client.common.pb import metadata_pb2 as mpb
from client.common.pb import metadata_pb2_grpc as mgrpc
from client.common.security import channel_credentials_from_config, sasl_metadata
from client.common.types import PartitionInfo
from client.metadata import Metadata


@dataclass(frozen=True, slots=True)
class NewTopic:
    """num_partitions / replication_factor -1: the cluster's num.partitions / default.replication.factor."""
    name: str
    num_partitions: int = -1
    replication_factor: int = -1
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TopicDescription:
    name: str
    internal: bool
    partitions: list[PartitionInfo]
    configs: dict[str, str]


class Admin:
    def __init__(self, config: dict[str, Any] | None = None, **kwargs):
        self.config = AdminConfig.from_props(config, **kwargs)  # kwargs: linger_ms=5 -> linger.ms
        self.client_id = self.config.client_id or "admin"
        self.pool = ChannelPool(f"client:{self.client_id}", metadata=sasl_metadata(self.config),
                                channel_credentials=channel_credentials_from_config(self.config))
        self.metadata = Metadata(self.config.bootstrap_servers, self.pool,
                                 request_timeout_ms=self.config.request_timeout_ms)

    def _controller(self):
        return mgrpc.ControllerStub(self.pool.get(self.metadata.controller_address()))

    def _call(self, fn, what: str):
        try:
            return fn(timeout=self.config.request_timeout_ms / 1000.0)
        except grpc.RpcError as e:
            raise transport_error(e, what) from None

    def create_topics(self, topics: list[NewTopic], validate_only: bool = False,
                      wait: bool = True) -> None:
        req = mpb.CreateTopicsRequest(validate_only=validate_only)
        for t in topics:
            req.topics.add(name=t.name, num_partitions=t.num_partitions,
                           replication_factor=t.replication_factor,
                           configs={k: str(v).lower() if isinstance(v, bool) else str(v)
                                    for k, v in (t.configs or {}).items()})
        resp = self._call(lambda timeout: self._controller().CreateTopics(req, timeout=timeout), "CreateTopics")
        for r in resp.results:
            if r.error_code:
                raise errors.for_code(r.error_code, r.error_message)
        if wait and not validate_only:
            self._wait_for(lambda: all(self._leaders_ready(t.name) for t in topics))

    def create_topic(self, name: str, num_partitions: int = -1, replication_factor: int = -1,
                     configs: dict | None = None) -> None:
        self.create_topics([NewTopic(name, num_partitions, replication_factor, dict(configs or {}))])

    def delete_topics(self, names: list[str]) -> None:
        resp = self._call(lambda timeout: self._controller().DeleteTopics(
            mpb.DeleteTopicsRequest(names=names), timeout=timeout), "DeleteTopics")
        for r in resp.results:
            if r.error_code:
                raise errors.for_code(r.error_code, r.error_message)

    def list_topics(self, include_internal: bool = False) -> list[str]:
        self.metadata.refresh()
        return sorted(t for t in self.metadata.cluster.partitions
                      if include_internal or not t.startswith("__"))

    def describe_topics(self, names: list[str] | None = None) -> list[TopicDescription]:
        md = self.metadata.fetch()
        self.metadata.update(md)
        out = []
        for t in md.topics:
            if names and t.name not in names:
                continue
            if t.error_code:
                raise errors.for_code(t.error_code, f"Topic '{t.name}' does not exist")
            parts = [PartitionInfo(t.name, p.partition, p.leader, tuple(p.replicas), tuple(p.isr), p.leader_epoch)
                     for p in sorted(t.partitions, key=lambda p: p.partition)]
            out.append(TopicDescription(t.name, t.internal, parts, dict(t.configs)))
        if names:
            missing = set(names) - {d.name for d in out}
            if missing:
                raise errors.UnknownTopicOrPartitionError(f"Topic '{min(missing)}' does not exist")
        return out

    def describe_cluster(self) -> mpb.MetadataResponse:
        return self.metadata.fetch()

    def _leaders_ready(self, topic: str) -> bool:
        """True once every broker hosting the topic reports leaders for it (the topic is usable)."""
        md = self.metadata.fetch([topic])
        self.metadata.update(md)
        for t in md.topics:
            if t.error_code or any(p.leader < 0 for p in t.partitions):
                return False
        for b in md.brokers:
            if b.fenced:
                continue
            try:
                bm = mgrpc.MetadataStub(self.pool.get(f"{b.host}:{b.port}")).GetMetadata(
                    mpb.MetadataRequest(topics=[topic]), timeout=2)
            except grpc.RpcError:
                continue
            if any(t.error_code for t in bm.topics):
                return False
        return True

    def _wait_for(self, cond, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        delay = 0.02
        while not cond():
            if time.monotonic() > deadline:
                raise errors.KafkaTimeoutError("timed out waiting for the topic's partitions to get leaders")
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def close(self) -> None:
        self.pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- consumer groups (issue D) ----------------------------------------------

    def list_consumer_groups(self, states: list[str] | None = None) -> list[tuple[str, str]]:
        """[(group_id, state)] as Kafka's listConsumerGroups."""
        from client.common.pb import group_pb2 as gpb

        def run():
            stub, _ = _group_stub(self)
            resp = self._call(lambda timeout: stub.ListGroups(gpb.ListGroupsRequest(states_filter=states or []),
                                                              timeout=timeout), "ListGroups")
            _raise_for(resp.error_code, resp.error_message)
            return [(g.group_id, g.group_state) for g in resp.groups]
        return _retry_loading(run)

    def describe_consumer_groups(self, group_ids: list[str]) -> dict[str, ConsumerGroupDescription]:
        from client.assignors import decode_assignment
        from client.common.pb import group_pb2 as gpb
        from client.common.types import TopicPartition

        def run():
            stub, addr = _group_stub(self)
            resp = self._call(lambda timeout: stub.DescribeGroups(gpb.DescribeGroupsRequest(group_ids=group_ids),
                                                                  timeout=timeout), "DescribeGroups")
            out = {}
            for g in resp.groups:
                _raise_for(g.error_code, g.error_message)
                members = [MemberDescription(
                    m.member_id, m.group_instance_id if m.HasField("group_instance_id") else None, m.client_id,
                    m.client_host, [TopicPartition(t, p) for t, p in decode_assignment(m.member_assignment).partitions])
                    for m in g.members]
                out[g.group_id] = ConsumerGroupDescription(g.group_id, g.group_state, g.protocol_type,
                                                           g.protocol_data, members, addr)
            return out
        return _retry_loading(run)

    def list_consumer_group_offsets(self, group_id: str, partitions=None) -> dict:
        """{TopicPartition: OffsetAndMetadata} of the group's committed offsets."""
        from client.common.pb import group_pb2 as gpb
        from client.common.types import OffsetAndMetadata, TopicPartition

        def run():
            stub, _ = _group_stub(self)
            req = gpb.OffsetFetchRequest(group_id=group_id)
            for tp in partitions or []:
                req.partitions.add(topic=tp[0], partition=tp[1])
            resp = self._call(lambda timeout: stub.OffsetFetch(req, timeout=timeout), "OffsetFetch")
            _raise_for(resp.error_code, resp.error_message)
            return {TopicPartition(p.topic, p.partition): OffsetAndMetadata(p.committed_offset, p.metadata,
                                                                            p.committed_leader_epoch)
                    for p in resp.partitions if p.committed_offset >= 0}
        return _retry_loading(run)

    def alter_consumer_group_offsets(self, group_id: str, offsets: dict) -> None:
        """Commits offsets as a standalone member; the coordinator refuses (UNKNOWN_MEMBER_ID) unless the
        group is empty, as Kafka's alterConsumerGroupOffsets."""
        from client.common.pb import group_pb2 as gpb
        from client.common.types import OffsetAndMetadata

        def run():
            stub, _ = _group_stub(self)
            req = gpb.OffsetCommitRequest(group_id=group_id, generation_id=-1, member_id="")
            for tp, om in offsets.items():
                om = om if isinstance(om, OffsetAndMetadata) else OffsetAndMetadata(int(om))
                part = req.partitions.add(topic=tp[0], partition=tp[1], committed_offset=om.offset,
                                          committed_metadata=om.metadata)
                if om.leader_epoch >= 0:
                    part.committed_leader_epoch = om.leader_epoch
            resp = self._call(lambda timeout: stub.OffsetCommit(req, timeout=timeout), "OffsetCommit")
            code = resp.error_code or next((p.error_code for p in resp.partitions if p.error_code), 0)
            _raise_for(code, resp.error_message)
        _retry_loading(run)

    def delete_consumer_groups(self, group_ids: list[str]) -> None:
        from client.common.pb import group_pb2 as gpb

        def run():
            stub, _ = _group_stub(self)
            resp = self._call(lambda timeout: stub.DeleteGroups(gpb.DeleteGroupsRequest(group_ids=group_ids),
                                                                timeout=timeout), "DeleteGroups")
            for r in resp.results:
                _raise_for(r.error_code, r.error_message or f"group {r.group_id}")
        _retry_loading(run)

    def list_offsets(self, partitions, spec: int) -> dict:
        """{TopicPartition: offset} for spec -2 (earliest), -1 (latest) or a timestamp in ms (-1: none)."""
        from client.common.types import TopicPartition
        from client.consumer import Consumer
        with Consumer({"bootstrap.servers": self.config.bootstrap_servers}) as c:
            return c._list_offsets([TopicPartition(*tp) for tp in partitions], spec)


# -- consumer group types and helpers (issue D) ------------------------------

@dataclass(frozen=True, slots=True)
class MemberDescription:
    member_id: str
    group_instance_id: str | None
    client_id: str
    host: str
    assignment: list  # [TopicPartition]


@dataclass(frozen=True, slots=True)
class ConsumerGroupDescription:
    group_id: str
    state: str
    protocol_type: str
    partition_assignor: str
    members: list[MemberDescription]
    coordinator: str


def _group_stub(admin: Admin):
    from client.common.pb import group_pb2 as gpb
    from client.common.pb import group_pb2_grpc as ggrpc
    addr = admin.metadata.controller_address()
    resp = admin._call(lambda timeout: ggrpc.GroupCoordinatorStub(admin.pool.get(addr)).FindCoordinator(
        gpb.FindCoordinatorRequest(key=""), timeout=timeout), "FindCoordinator")
    _raise_for(resp.error_code, resp.error_message)  # COORDINATOR_NOT_AVAILABLE: _retry_loading retries it
    return ggrpc.GroupCoordinatorStub(admin.pool.get(f"{resp.host}:{resp.port}")), f"{resp.host}:{resp.port}"


def _retry_loading(fn, timeout_s: float = 30.0):
    """COORDINATOR_LOAD_IN_PROGRESS (and other retriable codes) are retried for a while."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except errors.KafkaError as e:
            if not e.retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _raise_for(code: int, message: str) -> None:
    if code:
        raise errors.for_code(code, message)
