"""Issue 20 item 11: broker settings as Kafka names them; topic configs fall back to the broker's defaults."""
from __future__ import annotations

import pytest

from client.common import errors
from client.common.config import BrokerConfig, topic_config


def test_kafka_defaults():
    c = BrokerConfig.from_props({})
    assert c.auto_create_topics_enable is True  # Kafka's default
    assert (c.num_partitions, c.default_replication_factor, c.unclean_leader_election_enable) == (1, 1, False)


def test_an_unknown_setting_is_an_error_naming_it():
    with pytest.raises(errors.ConfigError, match="'no.such.setting'"):
        BrokerConfig.from_props({"no.such.setting": "1"})
    with pytest.raises(errors.ConfigError, match="num.partitions"):
        BrokerConfig.from_props({"num.partitions": "0"})


@pytest.mark.parametrize("key, broker_value, topic_configs, expect", [
    ("min.insync.replicas", 2, {}, 2),
    ("min.insync.replicas", 2, {"min.insync.replicas": "1"}, 1),
    ("unclean.leader.election.enable", True, {}, True),
    ("unclean.leader.election.enable", True, {"unclean.leader.election.enable": "false"}, False),
])
def test_topic_config_falls_back_to_the_broker_default(key, broker_value, topic_configs, expect):
    broker = BrokerConfig.from_props({key: broker_value})
    assert topic_config(topic_configs, key, broker) == expect
    assert topic_config(topic_configs, key) == (expect if topic_configs else {"min.insync.replicas": 1,
                                                 "unclean.leader.election.enable": False}[key])
