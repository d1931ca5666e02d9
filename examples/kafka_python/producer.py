# The Kafka patterns document's "Python Producer with Idempotence and Transactions", run unchanged
# (kafka-python against brokerlab's Kafka listener: `brokerlab up` serves localhost:9092) except for
# the corrections marked CORRECTION, which the document's own mistakes force:
#  1. A transactional producer refuses a send outside a transaction (every Kafka client does:
#     kafka-python raises IllegalStateError "Cannot call send in state READY"), so the last,
#     callback-based send gets its own transaction.
#  2. compression_type='lz4' needs the `lz4` package installed (kafka-python raises
#     RuntimeError "Libraries for lz4 compression codec not found" without it); no code change.
#
#     brokerlab up &
#     python examples/kafka_python/producer.py
from kafka import KafkaProducer
from kafka.errors import KafkaError
import json
import time

# Producer with idempotence and transaction support
producer = KafkaProducer(
    bootstrap_servers=['localhost:9092'],
    key_serializer=lambda k: k.encode('utf-8') if k else None,
    value_serializer=lambda v: json.dumps(v).encode('utf-8'),
    acks='all',
    retries=5,
    retry_backoff_ms=100,
    batch_size=65536,
    linger_ms=10,
    compression_type='lz4',  # CORRECTION 2: needs `pip install lz4`
    enable_idempotence=True,
    transactional_id='my-transactional-producer-1',
)

# Initialize transactions
producer.init_transactions()

# Transactional send
try:
    producer.begin_transaction()
    for i in range(100):
        producer.send(
            topic='order-events',
            key=f'order-{i}',
            value={'orderId': i, 'amount': 100.0, 'status': 'pending'}
        )
    # Commit transaction atomically
    producer.commit_transaction()
    print("Transaction committed successfully")
except KafkaError as e:
    # Abort on any failure
    producer.abort_transaction()
    print(f"Transaction aborted: {e}")


# Callback-based send with error handling
def on_send_success(record_metadata):
    print(f"Sent to {record_metadata.topic} partition {record_metadata.partition} "
          f"offset {record_metadata.offset}")


def on_send_error(ex):
    print(f"Error: {ex}")


# Non-transactional send with callbacks
producer.begin_transaction()  # CORRECTION 1: a transactional producer sends only inside a transaction
producer.send('user-events', key='user-123', value={'action': 'login'}) \
    .add_callback(on_send_success) \
    .add_errback(on_send_error)
producer.commit_transaction()  # CORRECTION 1

producer.flush()
producer.close()
