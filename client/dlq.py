"""Retry and dead-letter pattern: bounded retries with backoff, then `<topic>.DLQ`.

`DeadLetterHandler(handler, producer)` wraps a per-record handler. A record
whose handler keeps raising after `max_attempts` tries (tenacity,
exponential backoff) is published to the dead-letter topic with its key,
value and headers, plus headers naming where it came from and why it
failed; the caller then commits past it, so one poison record never blocks
its partition. `brokerlab dlq replay --topic T.DLQ` sends dead letters
back to their original topic.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import click
from tenacity import RetryError, Retrying, stop_after_attempt, wait_exponential

from client.cli import bootstrap_option, client_props
from client.common.types import ConsumerRecord, OffsetAndMetadata, TopicPartition

log = logging.getLogger(__name__)

# Header names, as Kafka Connect's errors.deadletterqueue.context.headers.enable writes them.
H_TOPIC = "__connect.errors.topic"
H_PARTITION = "__connect.errors.partition"
H_OFFSET = "__connect.errors.offset"
H_TIMESTAMP = "dlq.original.timestamp"
H_ERROR_CLASS = "__connect.errors.exception.class.name"
H_ERROR_MESSAGE = "__connect.errors.exception.message"
H_ATTEMPTS = "dlq.attempts"
DLQ_HEADERS = (H_TOPIC, H_PARTITION, H_OFFSET, H_TIMESTAMP, H_ERROR_CLASS, H_ERROR_MESSAGE, H_ATTEMPTS)


def dlq_topic_for(topic: str, suffix: str = ".DLQ") -> str:
    return topic + suffix


def dead_letter_headers(record: ConsumerRecord, error: BaseException, attempts: int) -> list[tuple[str, bytes]]:
    """The record's own headers followed by the context headers."""
    extra = {
        H_TOPIC: record.topic, H_PARTITION: str(record.partition), H_OFFSET: str(record.offset),
        H_TIMESTAMP: str(record.timestamp), H_ERROR_CLASS: f"{type(error).__module__}.{type(error).__qualname__}",
        H_ERROR_MESSAGE: str(error)[:1000], H_ATTEMPTS: str(attempts),
    }
    own = [(k, v) for k, v in (record.headers or ()) if k not in extra]
    return own + [(k, v.encode()) for k, v in extra.items()]


class DeadLetterHandler:
    """handle(record) -> True when processed, False when dead-lettered."""

    def __init__(self, handler: Callable[[ConsumerRecord], Any], producer, *, max_attempts: int = 3,
                 initial_backoff_ms: int = 100, max_backoff_ms: int = 5000, dlq_suffix: str = ".DLQ",
                 dlq_topic: str | Callable[[str], str] | None = None, sleep: Callable[[float], None] | None = None):
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.handler = handler
        self.producer = producer
        self.max_attempts = max_attempts
        self.initial_backoff_ms = initial_backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self.dlq_suffix = dlq_suffix
        self.dlq_topic = dlq_topic
        self.sleep = sleep
        self.dead_lettered = 0

    def _topic(self, topic: str) -> str:
        if callable(self.dlq_topic):
            return self.dlq_topic(topic)
        return self.dlq_topic or dlq_topic_for(topic, self.dlq_suffix)

    def handle(self, record: ConsumerRecord) -> bool:
        kwargs = {}
        if self.sleep is not None:
            kwargs["sleep"] = self.sleep
        retrying = Retrying(stop=stop_after_attempt(self.max_attempts),
                            wait=wait_exponential(multiplier=self.initial_backoff_ms / 1000.0,
                                                  max=self.max_backoff_ms / 1000.0), **kwargs)
        try:
            retrying(self.handler, record)
            return True
        except RetryError as e:
            attempt = e.last_attempt
            error = attempt.exception()
            attempts = attempt.attempt_number
        topic = self._topic(record.topic)
        log.warning("Dead-lettering %s-%d@%d to %s after %d attempts: %r", record.topic, record.partition,
                    record.offset, topic, attempts, error)
        # Wait for the DLQ write: the caller commits past the record next.
        self.producer.send(topic, key=_raw(record.key), value=_raw(record.value),
                           headers=dead_letter_headers(record, error, attempts)).get(timeout=30)
        self.dead_lettered += 1
        return False

    def process(self, consumer, records) -> dict[TopicPartition, OffsetAndMetadata]:
        """Handles a poll's records and commits past each (processed or dead-lettered)."""
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for r in records:
            self.handle(r)
            offsets[TopicPartition(r.topic, r.partition)] = OffsetAndMetadata(r.offset + 1)
        if offsets:
            consumer.commit_sync(offsets)
        return offsets

    __call__ = handle


def _raw(v):
    if v is None or isinstance(v, bytes):
        return v
    return str(v).encode()


# ------------------------------------------------------------------ command

@click.group("dlq")
def dlq() -> None:
    """Dead-letter topics: replay dead letters to the topics they came from."""


@dlq.command("replay")
@bootstrap_option
@click.option("--topic", required=True, help="the dead-letter topic, e.g. orders.DLQ")
@click.option("--to-topic", default=None, help="send here instead of each record's original topic")
@click.option("--group", default=None, help="commit progress under this group (replays each letter once)")
@click.option("--max-records", type=int, default=None)
@click.option("--timeout-ms", type=int, default=3000, show_default=True, help="stop after this long idle")
def dlq_replay(bootstrap, topic, to_topic, group, max_records, timeout_ms) -> None:
    """Sends each dead letter (key, value, original headers) back to its original topic."""
    from client import Consumer, Producer

    props = {**client_props(bootstrap), "auto.offset.reset": "earliest",
             "enable.auto.commit": False}
    if group:
        props["group.id"] = group
    sent = 0
    with Consumer(props) as c, Producer({**client_props(bootstrap), "acks": "all"}) as p:
        tps = [TopicPartition(topic, n) for n in sorted(c.partitions_for_topic(topic))]
        if group:
            c.subscribe([topic])
        else:
            c.assign(tps)
            c.seek_to_beginning()
        while max_records is None or sent < max_records:
            batch = c.poll(timeout_ms)
            if not batch:
                break
            for r in batch:
                headers = dict(r.headers or ())
                dest = to_topic or (headers.get(H_TOPIC) or b"").decode()
                if not dest:
                    raise click.ClickException(f"{r.topic}-{r.partition}@{r.offset} has no {H_TOPIC} header; "
                                               f"give --to-topic")
                own = [(k, v) for k, v in (r.headers or ()) if k not in DLQ_HEADERS]
                p.send(dest, key=r.key, value=r.value, headers=own)
                sent += 1
                if max_records is not None and sent >= max_records:
                    break
            p.flush()
            if group:
                c.commit_sync()
    click.echo(f"Replayed {sent} dead letter(s) from {topic}.")
