"""`brokerlab up`: Kafka-protocol ports that would collide with the gRPC ports are refused up front."""
from __future__ import annotations

from click.testing import CliRunner

from node.cli import up


def test_up_refuses_kafka_ports_overlapping_the_grpc_ports(tmp_path):
    r = CliRunner().invoke(up, ["--brokers", "9", "--data-dir", str(tmp_path / "d")])  # 9092..9101 vs 9100..
    assert r.exit_code == 2
    assert "overlap the gRPC ports 9100..9109" in r.output and "--kafka-port" in r.output
    assert not (tmp_path / "d").exists()  # refused before anything started
