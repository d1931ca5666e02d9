"""The Kafka patterns document's "Python Consumer with Manual Offset Management", on brokerlab.

Manual commits (enable.auto.commit=False) after processing, max.poll.records,
read_committed isolation: at-least-once. A record that fails stops its
partition's batch; its offset is not committed, so it is retried after a
rebalance or restart (see client/dlq.py for the retry + dead-letter variant).

    brokerlab up &                      # a local cluster on 127.0.0.1:9100
    brokerlab topics create --topic order-events --partitions 3 --replication-factor 3
    python examples/consumer_manual_commit.py
"""
from __future__ import annotations

import os

from client import Consumer
from client.common.types import OffsetAndMetadata

consumer = Consumer(
    bootstrap_servers=os.environ.get("BROKERLAB_BOOTSTRAP", "127.0.0.1:9100"),
    group_id="order-processor",
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    isolation_level="read_committed",
    max_poll_records=500,
    max_poll_interval_ms=300000,
    session_timeout_ms=45000,
)
consumer.subscribe(["order-events"])


def process_record(record):
    """Process a single record. Raise an exception to trigger a retry."""
    print(f"Processing: topic={record.topic}, partition={record.partition}, "
          f"offset={record.offset}, key={record.key}")
    return True


try:
    while True:
        records = consumer.poll(timeout_ms=100)
        offsets_to_commit = {}
        for tp, records_list in records.items():
            for record in records_list:
                try:
                    process_record(record)
                    offsets_to_commit[tp] = OffsetAndMetadata(record.offset + 1, metadata="processed")
                except Exception as e:  # noqa: BLE001 - the pattern: stop this partition's batch
                    print(f"Failed to process offset {record.offset}: {e}")
                    break
        if offsets_to_commit:
            consumer.commitSync(offsets_to_commit)
            print(f"Committed offsets: {offsets_to_commit}")
except KeyboardInterrupt:
    pass
finally:
    consumer.close()
