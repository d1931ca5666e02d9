"""The live view of a running cluster that `brokerlab serve` shows: nodes, partitions, faults, rates.

`LiveView` is the driver: one thread polls the cluster every `interval_s` (the agents' status and
fault rules through the ChaosController, the metadata, every node's Prometheus endpoint) and keeps
the last snapshot; web requests only read it. `Rates` and `build_snapshot` are the model: plain
functions of what was polled and when.
"""
from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 1.0
RATE_METRICS = {
    "kafka_server_brokertopicmetrics_messagesin_total": "messages_in_per_s",
    "kafka_server_brokertopicmetrics_bytesin_total": "bytes_in_per_s",
    "kafka_server_brokertopicmetrics_bytesout_total": "bytes_out_per_s",
}
HW_METRIC = "kafka_cluster_partition_highwatermark"


def node_state(process_state: str, fenced: bool) -> str:
    """What the page shows for a node: up, paused, killed, fenced, stopped, exited or unreachable."""
    if process_state == "running":
        return "fenced" if fenced else "up"
    return process_state or "unknown"


def parse_scrape(text: str) -> tuple[dict[str, float], dict[tuple[str, int], int]]:
    """(totals of the rate counters, {(topic, partition): high watermark}) of one node's scrape."""
    totals = dict.fromkeys(RATE_METRICS, 0.0)
    hws: dict[tuple[str, int], int] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in totals:
                totals[s.name] += s.value
            elif s.name == HW_METRIC:
                hws[(s.labels["topic"], int(s.labels["partition"]))] = int(s.value)
    return totals, hws


class Rates:
    """Per-second rates of the cluster's counters between two polls. A node whose counter went down
    (it restarted) counts from zero; a node missing from a poll adds nothing to that interval."""

    def __init__(self) -> None:
        self._prev: dict[str, tuple[float, dict[str, float]]] = {}  # node -> (at_s, totals)

    def update(self, now_s: float, totals_by_node: dict[str, dict[str, float]]) -> dict[str, float]:
        out = dict.fromkeys(RATE_METRICS.values(), 0.0)
        for node, totals in totals_by_node.items():
            prev = self._prev.get(node)
            if prev is not None and now_s > prev[0]:
                dt = now_s - prev[0]
                for metric, key in RATE_METRICS.items():
                    cur, old = totals.get(metric, 0.0), prev[1].get(metric, 0.0)
                    out[key] += (cur - old if cur >= old else cur) / dt
            self._prev[node] = (now_s, totals)
        for node in list(self._prev):
            if node not in totals_by_node:
                del self._prev[node]
        return {k: round(v, 1) for k, v in out.items()}


def build_snapshot(bootstrap: str, status: dict | None, md, hws: dict[tuple[str, int], int],
                   rates: dict[str, float], updated_ms: int, error: str = "") -> dict:
    """The page's JSON: `status` from ChaosController.status(), `md` a MetadataResponse (or None)."""
    fenced = {f"broker-{b.node_id}" for b in md.brokers if b.fenced} if md is not None else set()
    nodes, held = [], {}  # rule text -> nodes holding it (every node holds the whole rule set)
    for row in (status or {}).get("nodes", []):
        name = row["node"]
        state = node_state(row.get("state", "unknown"), name in fenced)
        nodes.append({"node": name, "state": state, "process": row.get("state", ""), "pid": row.get("pid", 0),
                      "address": row.get("address", ""), "restarts": row.get("restarts", 0),
                      "metrics_url": row.get("metrics_url", ""), "error": row.get("error", "")})
        for r in row.get("faults", []):
            held.setdefault(r, []).append(name)
        if row.get("clock"):
            c = row["clock"]
            held.setdefault(f"clock of {name} offset {c.get('offset_ms', 0)} ms"
                            + (f", strobe {c['strobe_ms']} ms every {c['period_ms']} ms" if c.get("strobe_ms") else ""),
                            []).append(name)
    answering = [n["node"] for n in nodes if "faults" in _row(status, n["node"])]
    faults = [{"rule": rule, "nodes": holders, "everywhere": sorted(holders) == sorted(answering)}
              for rule, holders in held.items()]
    partitions = []
    for t in md.topics if md is not None else ():
        for p in t.partitions:
            partitions.append({
                "topic": t.name, "partition": p.partition, "internal": t.internal,
                "leader": f"broker-{p.leader}" if p.leader >= 0 else "none",
                "replicas": [f"broker-{r}" for r in p.replicas], "isr": [f"broker-{r}" for r in p.isr],
                "high_watermark": hws.get((t.name, p.partition)),
                "under_replicated": len(p.isr) < len(p.replicas), "offline": p.leader < 0})
    return {"bootstrap": bootstrap, "reachable": md is not None, "updated_ms": updated_ms, "error": error,
            "nodes": nodes, "partitions": partitions, "faults": faults, "rates": rates}


def _row(status: dict | None, node: str) -> dict:
    return next((r for r in (status or {}).get("nodes", []) if r["node"] == node), {})


def scrape(url: str, timeout_s: float = SCRAPE_TIMEOUT_S) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.read().decode()
    except (OSError, urllib.error.URLError, ValueError):
        return None


class LiveView:
    def __init__(self, bootstrap: str, *, control_token: str | None = None, data_dir: str | None = None,
                 interval_s: float = 1.0) -> None:
        self.bootstrap = bootstrap
        self.interval_s = interval_s
        self._token_args = {"control_token": control_token, "data_dir": data_dir}
        self._rates = Rates()  # owned by the poll thread
        self._lock = threading.Lock()
        self._snapshot = build_snapshot(bootstrap, None, None, {}, self._rates.update(0, {}), 0, "not polled yet")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="live-scrape")
        self.controller = None

    def snapshot(self) -> dict:
        with self._lock:
            return self._snapshot

    def start(self) -> LiveView:
        from chaos.controller import ChaosController
        self.controller = ChaosController(self.bootstrap, rpc_timeout_s=2.0, **self._token_args)
        self._thread = threading.Thread(target=self._run, name="live-poll", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.controller is not None:
            self.controller.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                snap = self.poll_once()
            except Exception as e:  # the page shows the error; polling goes on
                log.exception("live poll failed")
                snap = dict(self.snapshot(), error=f"{type(e).__name__}: {e}", updated_ms=int(time.time() * 1000))
            with self._lock:
                self._snapshot = snap
            self._stop.wait(max(0.05, self.interval_s - (time.monotonic() - started)))

    def poll_once(self) -> dict:
        from chaos.controller import ChaosError
        c = self.controller
        error = ""
        try:
            status = c.status()
        except ChaosError as e:
            status, error = None, str(e)
        md = c.last_metadata if status is not None and "fenced" in status else c.metadata()
        urls = {row["node"]: row["metrics_url"] for row in (status or {}).get("nodes", [])
                if row.get("metrics_url") and row.get("state") == "running"}
        texts = dict(zip(urls, self._pool.map(scrape, urls.values()), strict=True))
        now_s = time.monotonic()
        totals, hws = {}, {}
        leaders = {(t.name, p.partition): f"broker-{p.leader}" for t in (md.topics if md else ()) for p in t.partitions}
        for node, text in texts.items():
            if text is None:
                continue
            node_totals, node_hws = parse_scrape(text)
            totals[node] = node_totals
            hws.update({tp: hw for tp, hw in node_hws.items() if leaders.get(tp) == node})
        if md is None and not error:
            error = f"no cluster reachable at {self.bootstrap}"
        return build_snapshot(self.bootstrap, status, md, hws, self._rates.update(now_s, totals),
                              int(time.time() * 1000), error)
