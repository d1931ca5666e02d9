"""Issue 14: every node serves Prometheus metrics with Kafka's JMX-exporter names (docs/metrics.md)."""
from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chaos import LocalCluster
from client import Consumer, Producer, TopicPartition
from tests.helpers import stop_process_group, wait_until

BROKER_NAMES = [
    "kafka_server_replicamanager_underreplicatedpartitions", "kafka_server_replicamanager_partitioncount",
    "kafka_server_replicamanager_leadercount", "kafka_server_replicamanager_isrshrinks_total",
    "kafka_server_replicamanager_isrexpands_total", "kafka_server_brokertopicmetrics_messagesin_total",
    "kafka_server_brokertopicmetrics_bytesin_total", "kafka_network_requestmetrics_totaltimems_bucket",
    "kafka_controller_kafkacontroller_activecontrollercount",
    "kafka_controller_kafkacontroller_offlinepartitionscount",
]


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape, as Prometheus parses it."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))))


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(brokers=3) as c:
        c.create_topic("metered", partitions=1, replication_factor=3, configs={"min.insync.replicas": 2})
        c.wait_for_isr("metered", 0, 3, timeout=20)
        yield c


def test_every_node_serves_the_kafka_names(cluster):
    urls = cluster.metrics_urls
    assert set(urls) == {"coordinator", "broker-1", "broker-2", "broker-3"}
    with Producer({"bootstrap.servers": cluster.bootstrap_servers, "acks": "all"}) as p:
        for i in range(20):
            p.send("metered", f"m{i}".encode())
        p.flush()
    leader = cluster.leader("metered", 0)
    samples = scrape(urls[leader])
    names = {n for n, _ in samples}
    assert set(BROKER_NAMES) <= names, set(BROKER_NAMES) - names
    assert value(samples, "kafka_server_brokertopicmetrics_messagesin_total", topic="metered") == 20
    assert value(samples, "kafka_server_brokertopicmetrics_bytesin_total", topic="metered") > 20
    assert value(samples, "kafka_server_replicamanager_leadercount") >= 1
    assert value(samples, "kafka_network_requestmetrics_totaltimems_count", request="Produce") >= 1
    assert value(samples, "kafka_controller_kafkacontroller_activecontrollercount") == 0
    coord = scrape(urls["coordinator"])
    assert value(coord, "kafka_controller_kafkacontroller_activecontrollercount") == 1
    assert value(coord, "kafka_controller_kafkacontroller_offlinepartitionscount") == 0


def test_consumer_lag_per_group_and_partition(cluster):
    bs = cluster.bootstrap_servers
    with Producer({"bootstrap.servers": bs, "acks": "all"}) as p:
        for i in range(10):
            p.send("metered", f"lag{i}".encode())
        p.flush()
    tp = TopicPartition("metered", 0)
    with Consumer({"bootstrap.servers": bs, "group.id": "lagging", "enable.auto.commit": False}) as c:
        c.assign([tp])
        end = c.end_offsets([tp])[tp]
        c.commit_sync({tp: end - 4})
    coord = cluster.metrics_url("coordinator")
    lag = wait_until(lambda: value(scrape(coord), "kafka_consumergroup_lag", consumergroup="lagging",
                                   topic="metered", partition=0), what="a lag sample")
    assert lag == 4
    assert value(scrape(coord), "kafka_consumergroup_current_offset", consumergroup="lagging",
                 topic="metered", partition=0) == end - 4


def test_underreplicated_rises_on_the_leader_during_a_chaos_kill_of_a_follower(cluster):
    leader = cluster.leader("metered", 0)
    follower = next(n for n in cluster.replicas("metered", 0) if n != leader)
    url = cluster.metrics_url(leader)

    def urp():
        return value(scrape(url), "kafka_server_replicamanager_underreplicatedpartitions")

    assert urp() == 0
    shrinks_before = value(scrape(url), "kafka_server_replicamanager_isrshrinks_total")
    cli = [sys.executable, "-m", "brokerlab_cli", "chaos"]
    where = ["--bootstrap-server", cluster.bootstrap_servers, "--data-dir", cluster.data_dir]
    out = subprocess.run(cli + ["kill", follower] + where, check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert cluster.state(follower) == "killed"
    # At least 1: the leader may also lead an internal partition (__consumer_offsets-0, ...) the follower is in.
    wait_until(lambda: urp() >= 1, timeout_s=30, what=f"underreplicatedpartitions 1 or more on {leader}")
    out = subprocess.run(cli + ["start", follower] + where, check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: urp() == 0, timeout_s=30, what=f"underreplicatedpartitions back to 0 on {leader}")
    # Back in the ISR through the leader's own AlterPartition: an expansion it proposed.
    assert value(scrape(url), "kafka_server_replicamanager_isrexpands_total") >= 1
    assert value(scrape(url), "kafka_server_replicamanager_isrshrinks_total") >= shrinks_before


# ---------------------------------------------------------------- the broker's collector, driven by hand

def test_replica_manager_gauges_follow_the_replicas_roles_and_isr(tmp_path):
    from tests.broker_driver import TOPIC, batch, make_broker, metadata

    b = make_broker(tmp_path, 1)
    try:
        reg = b.metrics.registry

        def gauge(name, **labels):
            return reg.get_sample_value(name, labels or None)

        assert gauge("kafka_server_replicamanager_partitioncount") == 0
        b.apply_metadata(metadata(leader=1, leader_epoch=0, isr=[1, 2, 3], configs={"min.insync.replicas": "3"}))
        assert gauge("kafka_server_replicamanager_leadercount") == 1
        assert gauge("kafka_server_replicamanager_underreplicatedpartitions") == 0
        data = batch(3)
        b.append_as_leader(TOPIC, 0, data, acks=1)
        assert gauge("kafka_server_brokertopicmetrics_messagesin_total", topic=TOPIC) == 3
        assert gauge("kafka_server_brokertopicmetrics_bytesin_total", topic=TOPIC) == len(data)
        assert gauge("kafka_log_log_logendoffset", topic=TOPIC, partition="0") == 3
        # The controller took broker 3 out of the ISR: under-replicated and below min.insync.replicas.
        b.apply_metadata(metadata(leader=1, leader_epoch=0, partition_epoch=1, isr=[1, 2], metadata_epoch=2,
                                  configs={"min.insync.replicas": "3"}))
        assert gauge("kafka_server_replicamanager_underreplicatedpartitions") == 1
        assert gauge("kafka_server_replicamanager_underminisrpartitioncount") == 1
        # A follower does not count what its leader reports.
        b.apply_metadata(metadata(leader=2, leader_epoch=1, isr=[1, 2], metadata_epoch=3))
        assert gauge("kafka_server_replicamanager_leadercount") == 0
        assert gauge("kafka_server_replicamanager_underreplicatedpartitions") == 0
        assert gauge("kafka_server_replicamanager_partitioncount") == 1
        assert gauge("kafka_controller_kafkacontroller_activecontrollercount") == 0
    finally:
        b.stop()


def test_brokerlab_up_prints_every_nodes_metrics_endpoint(tmp_path):
    import re

    log_path = tmp_path / "up.log"
    with open(log_path, "w") as log:
        up = subprocess.Popen([sys.executable, "-m", "brokerlab_cli", "up", "--port", "0", "--kafka-port", "0",
                               "--metrics-port", "0", "--data-dir", str(tmp_path / "cluster")],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        line = wait_until(lambda: re.search(r"^metrics: (.*)$", log_path.read_text(), re.MULTILINE), 120,
                          what="brokerlab up's metrics line")
        urls = dict(pair.split("=", 1) for pair in line.group(1).split(", "))
        assert set(urls) == {"coordinator", "broker-1", "broker-2", "broker-3"}
        for node, url in urls.items():
            names = {n for n, _ in scrape(url)}
            assert "kafka_controller_kafkacontroller_activecontrollercount" in names, node
            if node != "coordinator":
                assert "kafka_server_replicamanager_underreplicatedpartitions" in names, node
    finally:
        stop_process_group(up, 30, 5)
