"""Ceilings on what a request may ask of a broker (model: config and request values in, clamped values out).

A client chooses how long a fetch long-polls, how many bytes it returns and how long an acks=all
produce waits; the broker clamps each to its config, so no request pins a server thread for an hour
or builds a response of gigabytes. Kafka's names and defaults where Kafka has the limit
(`fetch.max.bytes`, `replica.fetch.response.max.bytes`, `replica.fetch.max.bytes`,
`message.max.bytes` / topic `max.message.bytes`); Kafka bounds a fetch's wait and a produce's timeout
only by the client's own settings, so those two ceilings are emulator configs named after Kafka's
purgatories, where such requests wait: `emu.fetch.purgatory.max.ms`, `emu.produce.purgatory.max.ms`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from client.common.config import BrokerConfig, topic_config

_LENGTH = struct.Struct(">i")
_LENGTH_AT = 8  # a RecordBatch: base offset (8 bytes), then its length (4), counted from byte 12
_LOG_OVERHEAD = 12


@dataclass(frozen=True, slots=True)
class FetchLimits:
    max_wait_ms: int
    max_bytes: int  # the whole response
    partition_max_bytes: int  # ceiling for any one partition (a request's own value may be lower)


def fetch_limits(config: BrokerConfig, *, replica: bool, max_wait_ms: int, max_bytes: int) -> FetchLimits:
    """A fetch's wait and sizes, clamped. max_bytes <= 0 asks for the ceiling. A follower's fetch is bounded
    by replica.fetch.response.max.bytes and, per partition, replica.fetch.max.bytes; a consumer's by
    fetch.max.bytes. The wait is at most emu.fetch.purgatory.max.ms."""
    wait = min(max(max_wait_ms, 0), config.emu_fetch_purgatory_max_ms)
    cap = config.replica_fetch_response_max_bytes if replica else config.fetch_max_bytes
    size = cap if max_bytes <= 0 else min(max_bytes, cap)
    per_partition = min(size, config.replica_fetch_max_bytes) if replica else size
    return FetchLimits(wait, size, per_partition)


def partition_budget(limits: FetchLimits, requested: int, left: int) -> int:
    """Bytes one partition may add: its request's partition_max_bytes (0: no own limit), the per-partition
    ceiling, and what is left of the response."""
    own = requested if requested > 0 else limits.partition_max_bytes
    return min(own, limits.partition_max_bytes, left)


def produce_timeout_ms(config: BrokerConfig, requested: int) -> int:
    """How long an acks=all produce may wait for replication: its timeout, at most emu.produce.purgatory.max.ms."""
    return min(max(requested, 0), config.emu_produce_purgatory_max_ms)


def watch_max_wait_ms(config: BrokerConfig, requested: int) -> int:
    """A WatchMetadata long poll at the controller: at most broker.session.timeout.ms (a watcher silent for
    longer would have lost its session anyway)."""
    return min(max(requested, 0), config.broker_session_timeout_ms)


def max_message_bytes(config: BrokerConfig, topic_configs: dict[str, str]) -> int:
    """The largest record batch a topic takes: its max.message.bytes, else the broker's message.max.bytes."""
    return topic_config(topic_configs, "max.message.bytes", config)


def oversized_batch(payload: bytes, limit: int) -> int | None:
    """The size of the first record batch in `payload` larger than `limit`, or None (framing only)."""
    pos, n = 0, len(payload)
    while n - pos >= _LOG_OVERHEAD:
        size = _LOG_OVERHEAD + _LENGTH.unpack_from(payload, pos + _LENGTH_AT)[0]
        if size > limit:
            return size
        pos += max(size, _LOG_OVERHEAD)
    return None
