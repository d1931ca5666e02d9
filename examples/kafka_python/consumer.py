# The Kafka patterns document's "Python Consumer with Manual Offset Management", run unchanged
# (kafka-python against brokerlab's Kafka listener: `brokerlab up` serves localhost:9092) except for
# the corrections marked CORRECTION, which the document's own mistakes force:
#  1. kafka-python has no `commitSync` (that is the Java client's name); it is `commit`.
#  2. kafka-python's OffsetAndMetadata is (offset, metadata, leader_epoch) since 2.1, where the
#     document's two-argument call is a TypeError; 3.x defaults leader_epoch to -1 (no epoch check),
#     so the record's leader epoch is passed, as kafka-python's own commits do.
#
#     brokerlab up --config group.initial.rebalance.delay.ms=3000 &
#     python examples/kafka_python/producer.py
#     python examples/kafka_python/consumer.py      # Ctrl-C stops it
#
# The 3 s initial rebalance delay is Kafka's default (`up`'s fast settings make it 0). Without it this
# consumer's first join can complete before its metadata has the topic; kafka-python 3.0.12 then rejoins
# and may lose that join if it completes just as poll(timeout_ms=100) runs out (no assignment, no
# heartbeats) -- a client bug, not the example's.
from kafka import KafkaConsumer, TopicPartition, OffsetAndMetadata
import json

consumer = KafkaConsumer(
    'order-events',
    bootstrap_servers=['localhost:9092'],
    group_id='order-processor',
    auto_offset_reset='earliest',
    enable_auto_commit=False,
    isolation_level='read_committed',
    max_poll_records=500,
    max_poll_interval_ms=300000,
    session_timeout_ms=45000,
)


def process_record(record):
    """Process a single record. Raise exception to trigger retry."""
    print(f"Processing: topic={record.topic}, partition={record.partition}, "
          f"offset={record.offset}, key={record.key}")
    # Business logic here
    return True


try:
    while True:
        records = consumer.poll(timeout_ms=100)
        offsets_to_commit = {}
        for tp, records_list in records.items():
            for record in records_list:
                try:
                    process_record(record)
                    # Track successful offset
                    offsets_to_commit[tp] = OffsetAndMetadata(
                        record.offset + 1,  # Next offset to read
                        metadata='processed',
                        leader_epoch=record.leader_epoch,  # CORRECTION 2: the record's leader epoch
                    )
                except Exception as e:
                    print(f"Failed to process offset {record.offset}: {e}")
                    # Don't commit this offset; will be retried on next poll
                    break
        # Commit only successful offsets
        if offsets_to_commit:
            consumer.commit(offsets_to_commit)  # CORRECTION 1: commitSync -> commit
            print(f"Committed offsets: {offsets_to_commit}")
except KeyboardInterrupt:
    consumer.close()
