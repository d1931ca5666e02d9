"""Issue 20 item 11: broker settings that are accepted work on a running cluster."""
from __future__ import annotations

import subprocess
import sys

import pytest

from client import Producer
from client.common import errors
from client.common.network import ChannelPool
from client.common.pb import metadata_pb2 as mpb
from client.common.pb import metadata_pb2_grpc as mgrpc
from node.cluster import Cluster
from tests.helpers import ROOT, partition_state, wait_until


def test_cluster_defaults_apply_to_topics_without_their_own(cluster_factory):
    c = cluster_factory(brokers=2, configs={"num.partitions": 3, "default.replication.factor": 2,
                                            "min.insync.replicas": 2})
    bs = c.bootstrap_servers
    # auto.create.topics.enable (default true): a producer's first send creates the topic.
    with Producer({"bootstrap.servers": bs, "acks": "all"}) as p:
        assert p.send("auto-t", b"v", partition=0).get(30).offset == 0
    t = next(t for t in c.metadata().topics if t.name == "auto-t")
    assert len(t.partitions) == 3 and all(len(x.replicas) == 2 for x in t.partitions) and not t.configs
    # A broker forwards an auto-creating Metadata request to the controller.
    pool = ChannelPool("client:test")
    try:
        md = mgrpc.MetadataStub(pool.get(c.agents["broker-1"].address)).GetMetadata(
            mpb.MetadataRequest(topics=["via-broker"], allow_auto_topic_creation=True), timeout=10)
        assert md.topics[0].error_code == 0 and len(md.topics[0].partitions) == 3
    finally:
        pool.close()
    # min.insync.replicas=2 from the broker config: with one replica left, acks=all is refused.
    leader = partition_state(c, "auto-t", 0)[0]
    other = next(b for b in (1, 2) if b != leader)
    c.agents[f"broker-{other}"].kill()
    wait_until(lambda: partition_state(c, "auto-t", 0)[3] == [leader], 20, what="ISR down to the leader")
    with Producer({"bootstrap.servers": bs, "acks": "all", "retries": 0}) as p, \
            pytest.raises(errors.NotEnoughReplicasError):
        p.send("auto-t", b"w", partition=0).get(30)


def test_auto_create_off_names_the_unknown_topic(cluster_factory):
    c = cluster_factory(brokers=1, configs={"auto.create.topics.enable": "false"})
    r = subprocess.run([sys.executable, "-m", "brokerlab_cli", "produce", "--topic", "nope", "--bootstrap-server",
                        c.bootstrap_servers], input="x\n", capture_output=True, text=True, timeout=60, cwd=ROOT,
                       check=False)
    assert r.returncode == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in r.stderr and "nope" in r.stderr, r.stderr
    assert "nope" not in {t.name for t in c.metadata().topics}


def test_an_unknown_setting_fails_before_any_node_starts(tmp_path):
    with pytest.raises(errors.ConfigError, match="'no.such.setting'"):
        Cluster(str(tmp_path), configs={"no.such.setting": "1"})
