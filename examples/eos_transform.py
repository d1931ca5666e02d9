"""Exactly-once consume-transform-produce: the Kafka patterns document's
ExactlyOnceProducerConsumerExample, ported to brokerlab.

    python examples/eos_transform.py --bootstrap-server 127.0.0.1:9100 \
        --input input-events --output output-events

Reads `input-events` with read_committed, writes each record transformed to
`output-events`, and commits the consumed offsets inside the same transaction
(send_offsets_to_transaction), so after any crash the output holds every
input record exactly once. Kill it (SIGKILL) and start it again with the same
--transactional-id: init_transactions() fences the old instance and aborts its
open transaction; the group resumes from the offsets of the last commit.

Two changes from the document's Java, both needed for exactly-once:
- no consumer.commitSync() before sendOffsetsToTransaction: that commits the
  offsets outside the transaction, so a crash before commitTransaction loses
  the batch's output for good;
- offsets for every partition in the batch (the document passes only
  partition 0), and after an abort the consumer rewinds to the committed
  offsets so the batch is processed again.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client import Consumer, Producer
from client.common import errors
from client.common.types import OffsetAndMetadata

log = logging.getLogger("eos_transform")


def transform(value: str) -> str:
    # Example transformation: add processed timestamp
    return value.replace("}", f', "processedAt": {int(time.time() * 1000)}}}')


def rewind_to_committed(consumer: Consumer, partitions) -> None:
    for tp in partitions:
        committed = consumer.committed(tp)
        if committed is not None:
            consumer.seek(tp, committed.offset)
        else:
            consumer.seek_to_beginning([tp])


def run(args) -> int:
    producer = Producer({
        "bootstrap.servers": args.bootstrap_server,
        "transactional.id": args.transactional_id,
        "key.serializer": lambda k: k.encode(),
        "value.serializer": lambda v: v.encode(),
        "acks": "all",
        "enable.idempotence": True,
        "transaction.timeout.ms": args.transaction_timeout_ms,
    })
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap_server,
        "group.id": args.group,
        "key.deserializer": lambda b: b.decode(),
        "value.deserializer": lambda b: b.decode(),
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "session.timeout.ms": args.session_timeout_ms,
        "heartbeat.interval.ms": max(args.session_timeout_ms // 5, 50),
        "max.poll.records": args.max_poll_records,
    })
    producer.init_transactions()
    consumer.subscribe([args.input])
    idle_since = time.monotonic()
    try:
        while True:
            records = consumer.poll(500)
            if records.is_empty():
                if args.exit_when_idle_ms and (time.monotonic() - idle_since) * 1000 > args.exit_when_idle_ms:
                    return 0
                continue
            idle_since = time.monotonic()
            producer.begin_transaction()
            try:
                for record in records:
                    # Transform the record and write it to the output topic, with where it came from.
                    producer.send(args.output, key=record.key, value=transform(record.value), headers=[
                        ("source-topic", record.topic.encode()),
                        ("source-partition", str(record.partition).encode()),
                        ("source-offset", str(record.offset).encode()),
                        ("transformed-at", str(int(time.time() * 1000)).encode()),
                    ])
                # Commit offsets atomically with the transaction: process + commit in one transaction.
                offsets = {tp: OffsetAndMetadata(consumer.position(tp)) for tp in records.partitions()}
                producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
                producer.commit_transaction()
                print(f"Committed transaction for {records.count()} records", flush=True)
            except (errors.ProducerFencedError, errors.InvalidProducerEpochError):
                raise  # a newer instance took over: this one must stop
            except errors.KafkaError as e:
                producer.abort_transaction()
                rewind_to_committed(consumer, records.partitions())
                print(f"Transaction aborted: {e}", file=sys.stderr, flush=True)
    finally:
        producer.close()
        consumer.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap-server", default="127.0.0.1:9100")
    ap.add_argument("--input", default="input-events")
    ap.add_argument("--output", default="output-events")
    ap.add_argument("--group", default="eos-transformer-group")
    ap.add_argument("--transactional-id", default="eos-transformer-1")
    ap.add_argument("--transaction-timeout-ms", type=int, default=60000)
    ap.add_argument("--session-timeout-ms", type=int, default=10000)
    ap.add_argument("--max-poll-records", type=int, default=500)
    ap.add_argument("--exit-when-idle-ms", type=int, default=0, help="0: run until killed")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
