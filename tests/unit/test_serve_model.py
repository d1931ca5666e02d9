"""Issue 14: what `brokerlab serve` lists and shows, from files and polled state (no cluster, no browser)."""
from __future__ import annotations

import json
import os

from chaos import runs_index
from chaos.live import Rates, build_snapshot, node_state, parse_scrape
from client.common.pb import metadata_pb2 as mpb
from node.metrics import request_name


def _run(d, name, seed, valid, anomalies=(), ops_by_f=None, **run_extra):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "run.json"), "w") as f:
        json.dump({"name": name, "seed": seed, "verdict": "valid" if valid is True else "+".join(anomalies) or "unknown",
                   "expect": "valid", "behaved": valid is True, "interrupted": False, **run_extra}, f)
    with open(os.path.join(d, "results.json"), "w") as f:
        json.dump({"valid": valid, "anomaly_types": list(anomalies), "anomalies": {},
                   "stats": {"ops": 999, "ops_by_f": ops_by_f or {"send": {"invoke": 5, "ok": 4, "info": 1}}}}, f)
    open(os.path.join(d, "report.html"), "w").close()


def test_scan_lists_lone_runs_and_campaign_runs(tmp_path):
    runs = tmp_path / "runs"
    _run(runs / "safe-20260101-seed3", "safe", 3, True)
    camp = runs / "campaign-x"
    _run(camp / "leader-churn" / "seed-1", "leader-churn", 1, False, ["lost-write"],
         {"send": {"invoke": 3, "ok": 2, "fail": 1}, "poll": {"invoke": 1, "info": 1}})
    _run(camp / "leader-churn" / "seed-2", "leader-churn", 2, "unknown")
    (camp / "campaign.json").write_text(json.dumps({
        "command": "brokerlab chaos campaign leader-churn --seeds 2 --client brokerlab", "state": "finished",
        "rows": [{"experiment": "leader-churn", "runs": 2}]}))
    (camp / "index.html").write_text("<html></html>")
    os.makedirs(runs / "empty" / "logs")
    found, campaigns = runs_index.scan(str(runs))
    by_path = {r.path: r for r in found}
    assert set(by_path) == {"safe-20260101-seed3", "campaign-x/leader-churn/seed-1", "campaign-x/leader-churn/seed-2"}
    lone = by_path["safe-20260101-seed3"]
    assert (lone.experiment, lone.seed, lone.verdict, lone.ops, lone.campaign) == ("safe", 3, "valid", 5, "")
    bad = by_path["campaign-x/leader-churn/seed-1"]
    assert (bad.verdict, bad.anomalies, bad.ops, bad.campaign, bad.client) == (
        "invalid", ("lost-write",), 4, "campaign-x", "brokerlab")
    assert by_path["campaign-x/leader-churn/seed-2"].verdict == "unknown"
    assert [c.path for c in campaigns] == ["campaign-x"]
    assert campaigns[0].has_index and [r.seed for r in campaigns[0].runs] == [1, 2]
    from chaos.serve import create_app
    page = create_app(str(runs)).test_client().get("/campaign/campaign-x").get_data(as_text=True)
    assert "/files/campaign-x/index.html" in page and "data-run=\"campaign-x/leader-churn/seed-1\"" in page
    assert "data-run=\"safe-20260101-seed3\"" not in page


def test_scan_names_a_recorded_client_and_survives_a_missing_dir(tmp_path):
    _run(tmp_path / "r1", "safe", 1, True, client={"library": "confluent-kafka", "version": "2.16.0"})
    (found, _) = runs_index.scan(str(tmp_path))
    assert found[0].client == "confluent-kafka 2.16.0"
    assert runs_index.scan(str(tmp_path / "nope")) == ([], [])


def test_node_state_names():
    assert [node_state(p, f) for p, f in [("running", False), ("running", True), ("paused", False),
                                          ("killed", True), ("unreachable", False)]] == [
        "up", "fenced", "paused", "killed", "unreachable"]


def test_rates_between_polls_with_a_restarted_node():
    m_in = "kafka_server_brokertopicmetrics_messagesin_total"
    r = Rates()
    assert r.update(10.0, {"broker-1": {m_in: 100}, "broker-2": {m_in: 50}})["messages_in_per_s"] == 0
    # broker-1 +200 in 2 s; broker-2 restarted (counter back to 10): its 10 count as new.
    out = r.update(12.0, {"broker-1": {m_in: 300}, "broker-2": {m_in: 10}})
    assert out["messages_in_per_s"] == (200 + 10) / 2
    # broker-2 not scraped this time (killed): adds nothing, and starts afresh when it is back.
    assert r.update(13.0, {"broker-1": {m_in: 300}})["messages_in_per_s"] == 0
    assert r.update(14.0, {"broker-1": {m_in: 300}, "broker-2": {m_in: 5}})["messages_in_per_s"] == 0


def test_snapshot_shows_fenced_nodes_faults_and_the_leaders_high_watermark():
    md = mpb.MetadataResponse()
    md.brokers.add(node_id=1, fenced=False)
    md.brokers.add(node_id=2, fenced=True)
    t = md.topics.add(name="t0")
    t.partitions.add(partition=0, leader=1, replicas=[1, 2], isr=[1])
    t.partitions.add(partition=1, leader=-1, replicas=[2], isr=[2])
    rule = "drop broker-1 -> broker-2"
    status = {"nodes": [
        {"node": "broker-1", "state": "running", "faults": [rule]},
        {"node": "broker-2", "state": "running", "faults": [rule], "clock": {"offset_ms": 30000, "strobe_ms": 0}},
        {"node": "broker-3", "state": "paused", "faults": []},
        {"node": "coordinator", "state": "killed", "error": "unreachable"}]}
    snap = build_snapshot("h:1", status, md, {("t0", 0): 42}, {"messages_in_per_s": 1.0}, 5)
    assert [(n["node"], n["state"]) for n in snap["nodes"]] == [
        ("broker-1", "up"), ("broker-2", "fenced"), ("broker-3", "paused"), ("coordinator", "killed")]
    # Each rule once, with the nodes that hold it (a paused node gets its rules when resumed).
    assert snap["faults"] == [
        {"rule": rule, "nodes": ["broker-1", "broker-2"], "everywhere": False},
        {"rule": "clock of broker-2 offset 30000 ms", "nodes": ["broker-2"], "everywhere": False}]
    status["nodes"][2]["faults"] = [rule]
    assert build_snapshot("h:1", status, md, {}, {}, 5)["faults"][0]["everywhere"] is True
    p0, p1 = snap["partitions"]
    assert (p0["leader"], p0["isr"], p0["high_watermark"], p0["under_replicated"]) == ("broker-1", ["broker-1"], 42, True)
    assert (p1["leader"], p1["offline"], p1["high_watermark"]) == ("none", True, None)
    assert build_snapshot("h:1", None, None, {}, {}, 0)["reachable"] is False


def test_parse_scrape_sums_topics():
    text = ("kafka_server_brokertopicmetrics_messagesin_total{topic=\"a\"} 3\n"
            "kafka_server_brokertopicmetrics_messagesin_total{topic=\"b\"} 4\n"
            "kafka_cluster_partition_highwatermark{topic=\"a\",partition=\"0\"} 7\n")
    totals, hws = parse_scrape(text)
    assert totals["kafka_server_brokertopicmetrics_messagesin_total"] == 7 and hws == {("a", 0): 7}


def test_request_names_split_fetches_like_kafka():
    class Req:
        replica_id = 2
    assert request_name("/brokerlab.Broker/Fetch", Req()) == "FetchFollower"
    assert request_name("/brokerlab.Broker/Fetch", object()) == "FetchConsumer"
    assert request_name("/brokerlab.GroupCoordinator/JoinGroup") == "JoinGroup"


def test_app_pages_and_file_serving(tmp_path):
    from chaos.serve import create_app
    _run(tmp_path / "safe-seed3", "safe", 3, False, ["duplicate"])
    client = create_app(str(tmp_path)).test_client()
    page = client.get("/").get_data(as_text=True)
    assert "data-run=\"safe-seed3\"" in page and "duplicate" in page and "/files/safe-seed3/report.html" in page
    assert client.get("/files/safe-seed3/report.html").status_code == 200
    assert client.get("/files/../../etc/passwd").status_code == 404
    assert client.get("/campaign/nope").status_code == 404
    assert client.get("/live").status_code == 404  # no cluster given
    assert client.get("/api/runs").get_json()["runs"][0]["verdict"] == "invalid"
