"""The Kafka patterns document's "Python Producer with Idempotence and Transactions", on brokerlab.

Changed from the document: the import (brokerlab's client instead of kafka-python) and the config
spelling (Kafka's dotted keys instead of kafka-python's keyword arguments); setup code around it
creates the two topics and picks the bootstrap address (env BROKERLAB_BOOTSTRAP).

The document sends its callback example on the transactional producer after the commit; Kafka
refuses a send outside a transaction on a transactional producer, so that part runs on a producer
with the same config minus transactional.id. The transactional part runs when brokerlab's client has
transactions (client.transactions); BROKERLAB_EXAMPLE_TRANSACTIONS=0 or 1 forces it off or on.

    brokerlab up &          # a local cluster on 127.0.0.1:9100
    python examples/producer_example.py
"""
import importlib.util
import json
import os

from client import Admin, NewTopic, Producer
from client.common.errors import KafkaError, TopicAlreadyExistsError

BOOTSTRAP = os.environ.get("BROKERLAB_BOOTSTRAP", "127.0.0.1:9100")

# Producer with idempotence and transaction support
config = {
    "bootstrap.servers": BOOTSTRAP.split(","),
    "key.serializer": lambda k: k.encode('utf-8') if k else None,
    "value.serializer": lambda v: json.dumps(v).encode('utf-8'),
    "acks": "all",
    "retries": 5,
    "retry.backoff.ms": 100,
    "batch.size": 65536,
    "linger.ms": 10,
    "compression.type": "lz4",
    "enable.idempotence": True,
}


def transactional_part():
    producer = Producer({**config, "transactional.id": "my-transactional-producer-1"})

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
    producer.close()


def callback_part():
    producer = Producer(config)

    # Callback-based send with error handling
    def on_send_success(record_metadata):
        print(f"Sent to {record_metadata.topic} partition {record_metadata.partition} "
              f"offset {record_metadata.offset}")

    def on_send_error(ex):
        print(f"Error: {ex}")

    # Non-transactional send with callbacks
    producer.send('user-events', key='user-123', value={'action': 'login'}) \
        .add_callback(on_send_success) \
        .add_errback(on_send_error)

    producer.flush()
    producer.close()


def transactions_available() -> bool:
    forced = os.environ.get("BROKERLAB_EXAMPLE_TRANSACTIONS")
    if forced in ("0", "1"):
        return forced == "1"
    return importlib.util.find_spec("client.transactions") is not None


def create_topics():
    with Admin({"bootstrap.servers": config["bootstrap.servers"]}) as admin:
        for name in ("order-events", "user-events"):
            try:
                admin.create_topics([NewTopic(name, 3, 1)])
            except TopicAlreadyExistsError:
                pass


if __name__ == "__main__":
    create_topics()
    if transactions_available():
        transactional_part()
    else:
        print("transactions not available in this client; skipping the transactional part")
    callback_part()
