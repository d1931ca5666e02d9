"""Producer configs: Kafka's keys, defaults and idempotence rules."""
from __future__ import annotations

import pytest

from client.common.config import ProducerConfig
from client.common.errors import ConfigError
from client.producer import Producer


def test_kafka_3_defaults():
    c = ProducerConfig.from_props({})
    assert (c.acks_int, c.enable_idempotence, c.max_in_flight_requests_per_connection) == (-1, True, 5)
    assert (c.batch_size, c.buffer_memory, c.max_block_ms, c.delivery_timeout_ms) == (16384, 33554432, 60000, 120000)
    assert (c.retries, c.retry_backoff_ms, c.request_timeout_ms, c.compression_type) == (2147483647, 100, 30000, "none")


@pytest.mark.parametrize("acks", ["1", "0", 1, 0])
def test_explicit_idempotence_with_acks_other_than_all_is_a_config_error(acks):
    with pytest.raises(ConfigError, match="acks to all.*idempotent"):
        ProducerConfig.from_props({"enable.idempotence": True, "acks": acks})


@pytest.mark.parametrize("n", [6, 10])
def test_explicit_idempotence_with_more_than_5_in_flight_is_a_config_error(n):
    with pytest.raises(ConfigError, match="max.in.flight.requests.per.connection to at most 5"):
        ProducerConfig.from_props({"enable.idempotence": "true", "max.in.flight.requests.per.connection": n})


def test_explicit_idempotence_with_zero_retries_is_a_config_error():
    with pytest.raises(ConfigError, match="retries"):
        ProducerConfig.from_props({"enable.idempotence": True, "retries": 0})


@pytest.mark.parametrize("props", [
    {"acks": "1"}, {"acks": 0}, {"max.in.flight.requests.per.connection": 6}, {"retries": 0}])
def test_default_idempotence_gives_way_to_conflicting_settings_as_in_kafka(props):
    assert ProducerConfig.from_props(props).enable_idempotence is False


def test_idempotence_allows_up_to_5_in_flight_with_acks_all():
    c = ProducerConfig.from_props({"acks": "all", "enable.idempotence": True,
                                   "max.in.flight.requests.per.connection": 5})
    assert c.enable_idempotence and c.acks_int == -1


def test_non_idempotent_producer_may_have_more_in_flight():
    c = ProducerConfig.from_props({"acks": "1", "enable.idempotence": False,
                                   "max.in.flight.requests.per.connection": 10})
    assert c.max_in_flight_requests_per_connection == 10


def test_transactional_id_needs_idempotence():
    with pytest.raises(ConfigError, match="transactional.id"):
        ProducerConfig.from_props({"transactional.id": "t", "enable.idempotence": False})
    # and is not quietly turned off by a conflicting default
    with pytest.raises(ConfigError, match="acks"):
        ProducerConfig.from_props({"transactional.id": "t", "acks": "1"})


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="'linger.msec'"):
        ProducerConfig.from_props({"linger.msec": 5})


def test_producer_constructor_names_an_unknown_key_from_dict_or_kwargs():
    with pytest.raises(ConfigError, match="'batch.bytes'"):
        Producer({"bootstrap.servers": "127.0.0.1:1", "batch.bytes": 10})
    with pytest.raises(ConfigError, match="'lingerms'"):
        Producer(bootstrap_servers="127.0.0.1:1", lingerms=10)


@pytest.mark.parametrize("key,value,match", [
    ("acks", "2", "acks"),
    ("compression.type", "brotli", "compression.type"),
    ("batch.size", -1, "batch.size"),
    ("linger.ms", "soon", "linger.ms"),
    ("enable.idempotence", "maybe", "enable.idempotence"),
])
def test_bad_values_name_the_key(key, value, match):
    with pytest.raises(ConfigError, match=match):
        ProducerConfig.from_props({key: value, "enable.idempotence": False} if key != "enable.idempotence"
                                  else {key: value})


def test_delivery_timeout_must_cover_linger_and_request_timeout():
    with pytest.raises(ConfigError, match="delivery.timeout.ms"):
        ProducerConfig.from_props({"delivery.timeout.ms": 1000, "linger.ms": 10, "request.timeout.ms": 1000})


def test_kwargs_spelling_maps_to_dotted_keys():
    c = ProducerConfig.from_props(batch_size=65536, linger_ms=10, compression_type="lz4",
                                  retry_backoff_ms=100, retries=5)
    assert (c.batch_size, c.linger_ms, c.compression_type, c.retries) == (65536, 10, "lz4", 5)
