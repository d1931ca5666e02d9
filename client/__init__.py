"""brokerlab's Kafka client: Producer, Consumer, Admin, configured with Kafka's dotted keys."""
from client.admin import Admin, NewTopic
from client.common.errors import KafkaError
from client.common.types import ConsumerRecord, OffsetAndMetadata, RecordMetadata, TopicPartition
from client.consumer import Consumer
from client.producer import Producer

__all__ = ["Admin", "Consumer", "ConsumerRecord", "KafkaError", "NewTopic", "OffsetAndMetadata", "Producer",
           "RecordMetadata", "TopicPartition"]
