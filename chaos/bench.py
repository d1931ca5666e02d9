"""`brokerlab bench table | peers | kafka`: the patterns document's performance table, a peer side by
side, and confluent-kafka over the Kafka listener beside brokerlab's own client.

Every scenario runs `brokerlab perf ...` as a child process against a fresh
local cluster (3 brokers, RF=3, min.insync.replicas=2) while this process
samples the client's and the brokers' RSS and CPU time with psutil. The
figures are for the whole cluster and its clients on one machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib.util import find_spec

import click
import psutil

TOPIC = "bench"
PARTITIONS = 8
RECORD_SIZE = 100


@dataclass
class Scenario:
    name: str
    kind: str                       # "produce" | "consume"
    records: int
    quick_records: int
    args: list[str] = field(default_factory=list)
    needs: str = ""                 # a module the scenario needs, e.g. client.transactions
    needs_what: str = ""


def scenarios() -> list[Scenario]:
    base = ["acks=all", "enable.idempotence=false", "linger.ms=5", "batch.size=16384"]
    return [
        Scenario("Async Batch (16KB)", "produce", 300_000, 2000, ["--producer-props", *base]),
        Scenario("Sync (acks=all)", "produce", 3_000, 100,
                 ["--sync", "--producer-props", "acks=all", "enable.idempotence=false", "linger.ms=0"]),
        Scenario("Idempotent", "produce", 300_000, 2000,
                 ["--producer-props", "acks=all", "enable.idempotence=true", "linger.ms=5", "batch.size=16384"]),
        Scenario("Transactional", "produce", 200_000, 2000,
                 ["--transactional-id", "bench-txn", "--transaction-duration-ms", "1000", "--producer-props",
                  "acks=all", "enable.idempotence=true", "linger.ms=5", "batch.size=16384"],
                 needs="client.transactions", needs_what="transactions"),
        Scenario("Compression (gzip)", "produce", 200_000, 2000,
                 ["--producer-props", *base, "compression.type=gzip"]),
        Scenario("Compression (lz4)", "produce", 300_000, 2000,
                 ["--producer-props", *base, "compression.type=lz4"]),
        Scenario("Consumer (single)", "consume", 500_000, 2000, []),
        Scenario("Consumer (group=4)", "consume", 500_000, 2000, ["--processes", "4", "--group", "bench-g4"],
                 needs="client.group_member", needs_what="consumer groups"),
        Scenario("Consumer (group=8)", "consume", 500_000, 2000, ["--processes", "8", "--group", "bench-g8"],
                 needs="client.group_member", needs_what="consumer groups"),
    ]


def available(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class Sampler:
    """Peak RSS and CPU seconds of a client process tree and of fixed broker processes."""

    def __init__(self, broker_pids: list[int]):
        self.brokers = [psutil.Process(p) for p in broker_pids]
        self.cpu0 = sum(self._cpu(p) for p in self.brokers)
        self.broker_rss_peak = 0
        self.client_rss_peak = 0
        self.client_cpu: dict[int, float] = {}

    @staticmethod
    def _cpu(p: psutil.Process) -> float:
        try:
            t = p.cpu_times()
            return t.user + t.system
        except psutil.Error:
            return 0.0

    @staticmethod
    def _rss(p: psutil.Process) -> int:
        try:
            return p.memory_info().rss
        except psutil.Error:
            return 0

    def sample(self, client: psutil.Process) -> None:
        self.broker_rss_peak = max(self.broker_rss_peak, sum(self._rss(p) for p in self.brokers))
        try:
            procs = [client] + client.children(recursive=True)
        except psutil.Error:
            procs = [client]
        self.client_rss_peak = max(self.client_rss_peak, sum(self._rss(p) for p in procs))
        for p in procs:
            c = self._cpu(p)
            if c:
                self.client_cpu[p.pid] = c  # the last reading before it exits

    def broker_cpu(self) -> float:
        return sum(self._cpu(p) for p in self.brokers) - self.cpu0


def run_scenario(s: Scenario, bootstrap: str, broker_pids: list[int], quick: bool, workdir: str,
                 on_line=lambda line: None) -> dict:
    if s.needs and not available(s.needs):
        return {"scenario": s.name, "skipped": f"n/a: {s.needs_what} not available ({s.needs} missing)"}
    n = s.quick_records if quick else s.records
    out = os.path.join(workdir, f"{s.name.replace(' ', '_').replace('/', '_')}.json")
    cmd = [sys.executable, "-m", "brokerlab_cli", "perf", s.kind, "--bootstrap-server", bootstrap,
           "--topic", TOPIC, "--result-json", out]
    if s.kind == "produce":
        cmd += ["--num-records", str(n), "--record-size", str(RECORD_SIZE), "--throughput", "-1"]
    else:
        cmd += ["--messages", str(n), "--timeout", "15000"]
    cmd += s.args
    sampler = Sampler(broker_pids)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    ps = psutil.Process(proc.pid)
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            on_line(lines[-1])
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None:
        sampler.sample(ps)
        time.sleep(0.2)
    reader.join(5)
    wall = time.monotonic() - t0
    if proc.returncode != 0 or not os.path.exists(out):
        return {"scenario": s.name, "error": f"exit {proc.returncode}: " + " | ".join(lines[-3:])}
    with open(out) as f:
        res = json.load(f)
    client_cpu = sum(sampler.client_cpu.values())
    broker_cpu = sampler.broker_cpu()
    # Consumers: fetch.nMsg.sec, i.e. after the group formed (the join is rebalance.time.ms, kept apart).
    rate = res["records_per_sec"] if s.kind == "produce" else res["fetch_records_per_sec"]
    row = {"scenario": s.name, "records": res["records"], "throughput_msg_s": rate,
           "rebalance_ms": res.get("rebalance_ms", 0.0),
           "p99_ms": res.get("p99_ms", res.get("poll_p99_ms")),
           "latency_kind": "produce p99 (send to ack)" if s.kind == "produce" else "poll() p99",
           "client_rss_mb": sampler.client_rss_peak / 2**20, "broker_rss_mb": sampler.broker_rss_peak / 2**20,
           "client_cpu_pct": 100 * client_cpu / wall, "broker_cpu_pct": 100 * broker_cpu / wall,
           "cpu_pct": 100 * (client_cpu + broker_cpu) / wall, "wall_s": wall,
           # CPU per record: what a change of code changes, whatever else the shared machine runs.
           "client_cpu_us_per_record": 1e6 * client_cpu / max(res["records"], 1),
           "broker_cpu_us_per_record": 1e6 * broker_cpu / max(res["records"], 1),
           "load_avg_1m": os.getloadavg()[0], "output": lines[-2:]}
    return row


def markdown(rows: list[dict]) -> str:
    out = ["| Scenario | Throughput (msg/sec) | Latency (p99) | Memory Usage (client + 3 brokers) | CPU Usage |",
           "|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r or "error" in r:
            why = r.get("skipped") or r.get("error")
            out.append(f"| {r['scenario']} | {why} | | | |")
            continue
        out.append(f"| {r['scenario']} | {r['throughput_msg_s']:,.0f} | {r['p99_ms']:.1f}ms | "
                   f"{r['client_rss_mb']:.0f}MB + {r['broker_rss_mb']:.0f}MB | "
                   f"{r['cpu_pct']:.0f}% ({r['client_cpu_pct']:.0f}% client) |")
    return "\n".join(out)


def _broker_pids(cluster) -> list[int]:
    return [cluster.agents[n].status().pid for n in cluster.broker_names()]


def _create_topic(bootstrap: str, partitions: int) -> None:
    from client.admin import Admin, NewTopic
    with Admin({"bootstrap.servers": [bootstrap]}) as admin:
        admin.create_topics([NewTopic(TOPIC, partitions, 3, {"min.insync.replicas": "2"})])


@click.group("bench")
def bench() -> None:
    """Benchmarks: the patterns document's performance table, and a peer side by side."""


@bench.command("table")
@click.option("--out", "out_path", default="bench-results/table.json", show_default=True,
              type=click.Path(dir_okay=False))
@click.option("--quick", is_flag=True, help="Small record counts: checks that every scenario runs.")
@click.option("--partitions", default=PARTITIONS, show_default=True, type=click.IntRange(min=1))
@click.option("--only", multiple=True, help="Run only scenarios whose name contains this (repeatable).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the JSON written to --out (for bench compare) instead of the markdown table.")
def table_cmd(out_path, quick, partitions, only, as_json) -> None:
    """Run every scenario on a fresh 3-broker cluster; print the markdown table and write JSON."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from node.cluster import FAST_CONFIGS, Cluster
    chosen = [s for s in scenarios() if not only or any(o.lower() in s.name.lower() for o in only)]
    console = Console(stderr=True)
    rows: list[dict] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="brokerlab-bench-") as tmp, \
            Cluster(os.path.join(tmp, "cluster"), brokers=3, configs=FAST_CONFIGS) as cluster:
        _create_topic(cluster.bootstrap_servers, partitions)
        pids = _broker_pids(cluster)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            task = progress.add_task("starting", total=len(chosen))
            for s in chosen:
                progress.update(task, description=s.name)
                row = run_scenario(s, cluster.bootstrap_servers, pids, quick, tmp,
                                   on_line=lambda ln, s=s: progress.update(
                                       task, description=f"{s.name}: {ln[:70]}"))
                rows.append(row)
                progress.advance(task)
    result = {"format": TABLE_FORMAT, "git_commit": _git_commit(), "quick": quick, "partitions": partitions, "record_size": RECORD_SIZE, "replication_factor": 3,
              "min_insync_replicas": 2, "cpu_count": os.cpu_count(),
              "elapsed_s": time.monotonic() - started, "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(markdown(rows))
    click.echo(f"\nWrote {out_path} ({result['elapsed_s']:.0f} s). CPU % is of one core "
               f"({os.cpu_count()} cores here); latency is produce send-to-ack p99, or poll() p99 for consumers; consumer throughput is "
               f"fetch.nMsg.sec (group join time excluded).")


@bench.command("compare")
@click.argument("old_path", metavar="OLD.json", type=click.Path(dir_okay=False))
@click.argument("new_path", metavar="NEW.json", type=click.Path(dir_okay=False))
def compare_cmd(old_path, new_path) -> None:
    """Ratios NEW / OLD per scenario of two `bench table --json` results (matched by scenario name):
    throughput, p99 latency and client and broker CPU per record (the last two are what a code
    change moves even on a busy shared machine)."""
    click.echo(compare_markdown(load_table(old_path), load_table(new_path)))


TABLE_FORMAT = 2  # 2: adds format, git_commit, *_cpu_us_per_record, load_avg_1m (compare derives them for 1)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             check=False, cwd=os.path.dirname(os.path.abspath(__file__)))
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def load_table(path: str) -> dict:
    """A `bench table` JSON result; click.ClickException naming the problem if it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise click.ClickException(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise click.ClickException(f"{path} is not JSON: {e}") from None
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("scenario"), str)
                                             for r in rows):
        raise click.ClickException(f"{path} is not a bench table result: no rows with a scenario name")
    return doc


def _per_record(row: dict, who: str) -> float | None:
    v = row.get(f"{who}_cpu_us_per_record")
    if v is None and row.get(f"{who}_cpu_pct") is not None and row.get("wall_s") and row.get("records"):
        v = row[f"{who}_cpu_pct"] / 100 * row["wall_s"] / row["records"] * 1e6  # format 1 results
    return v


def _ratio(old, new) -> str:
    if not isinstance(old, (int, float)) or not isinstance(new, (int, float)) or old <= 0:
        return "n/a"
    return f"{new / old:.2f}x"


def compare_markdown(old: dict, new: dict) -> str:
    out = [("| Scenario | Throughput old → new (msg/s) | ratio | p99 old → new (ms) | ratio "
            "| client CPU µs/rec old → new | ratio | broker CPU µs/rec old → new | ratio |"),
           "|---|---|---|---|---|---|---|---|---|"]
    old_rows = {r["scenario"]: r for r in old["rows"]}
    new_rows = {r["scenario"]: r for r in new["rows"]}
    names = list(old_rows) + [n for n in new_rows if n not in old_rows]
    for name in names:
        a, b = old_rows.get(name), new_rows.get(name)
        if a is None or b is None:
            out.append(f"| {name} | only in {'NEW' if a is None else 'OLD'} | | | | | | | |")
            continue
        bad = [f"{which}: {r.get('skipped') or r.get('error')}" for which, r in (("OLD", a), ("NEW", b))
               if "skipped" in r or "error" in r]
        if bad:
            out.append(f"| {name} | {'; '.join(bad)} | | | | | | | |")
            continue
        cells = [name]
        for old_v, new_v, fmt in ((a.get("throughput_msg_s"), b.get("throughput_msg_s"), "{:,.0f}"),
                                  (a.get("p99_ms"), b.get("p99_ms"), "{:.1f}"),
                                  (_per_record(a, "client"), _per_record(b, "client"), "{:.2f}"),
                                  (_per_record(a, "broker"), _per_record(b, "broker"), "{:.2f}")):
            shown = [fmt.format(v) if isinstance(v, (int, float)) else "n/a" for v in (old_v, new_v)]
            cells += [" → ".join(shown), _ratio(old_v, new_v)]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    for label, doc in (("OLD", old), ("NEW", new)):
        loads = [r["load_avg_1m"] for r in doc["rows"] if isinstance(r.get("load_avg_1m"), (int, float))]
        extra = f", load average {min(loads):.1f}-{max(loads):.1f}" if loads else ""
        out.append(f"{label}: commit {doc.get('git_commit') or '?'}, {doc.get('cpu_count', '?')} cores{extra}")
    return "\n".join(out)


@bench.command("kafka")
@click.option("--num-records", default=200_000, show_default=True, type=click.IntRange(min=1))
@click.option("--partitions", default=PARTITIONS, show_default=True, type=click.IntRange(min=1))
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(min=1),
              help="Runs of each client, interleaved; the figures are each client's median.")
@click.option("--out", "out_path", default="bench-results/kafka.json", show_default=True,
              type=click.Path(dir_okay=False))
def kafka_cmd(num_records, partitions, rounds, out_path) -> None:
    """confluent-kafka (librdkafka) through the Kafka-protocol listener beside brokerlab's own client
    through gRPC: same cluster, same run, acks=all, RF=3, min.insync.replicas=2, 100-byte records."""
    import statistics

    from node.cluster import FAST_CONFIGS, Cluster
    # Each client at its own defaults (an unmodified application's), acks=all; idempotence off in both
    # (librdkafka's default). The third row gives librdkafka brokerlab's batch.size (Kafka's 16 KB).
    # Runs are interleaved so a busy moment of a shared machine does not land on one client only.
    common = ["acks=all", "enable.idempotence=false", "linger.ms=5"]
    clients = (("brokerlab client (gRPC)", False, [*common, "batch.size=16384"]),
               ("confluent-kafka (Kafka protocol)", True, common),
               ("confluent-kafka, batch.size=16384", True, [*common, "batch.size=16384"]))
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in clients}
    with tempfile.TemporaryDirectory(prefix="brokerlab-bench-") as tmp, \
            Cluster(os.path.join(tmp, "cluster"), brokers=3, configs=FAST_CONFIGS) as cluster:
        _create_topic(cluster.bootstrap_servers, partitions)
        pids = _broker_pids(cluster)
        for i in range(rounds):
            for name, kafka, props in clients:
                bootstrap = cluster.kafka_bootstrap_servers if kafka else cluster.bootstrap_servers
                extra = ["--client", "confluent-kafka"] if kafka else []
                s = Scenario(name, "produce", num_records, num_records, [*extra, "--producer-props", *props])
                row = run_scenario(s, bootstrap, pids, False, tmp, on_line=lambda ln: None)
                row["producer_props"] = props
                runs[name].append(row)
                click.echo(f"round {i + 1}, {name}: " + (
                    f"{row['throughput_msg_s']:,.0f} records/s, p99 {row['p99_ms']:.1f} ms"
                    if "error" not in row else row["error"]))
    rows = []
    for name, _, _ in clients:
        good = [r for r in runs[name] if "error" not in r]
        if not good:
            rows.append(runs[name][-1])
            continue
        med = statistics.median(r["throughput_msg_s"] for r in good)
        row = dict(min(good, key=lambda r: abs(r["throughput_msg_s"] - med)))  # the median run's other figures
        row.update(throughput_msg_s=med, rounds=[r["throughput_msg_s"] for r in good])
        rows.append(row)
    ok = all("error" not in r for r in rows)
    ratio = rows[1]["throughput_msg_s"] / rows[0]["throughput_msg_s"] if ok else None
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump({"record_size": RECORD_SIZE, "partitions": partitions, "replication_factor": 3, "acks": "all",
                   "rows": rows, "ratio_confluent_to_brokerlab": ratio}, f, indent=2)
    click.echo(markdown(rows))
    if ratio is not None:
        click.echo(f"\nconfluent-kafka / brokerlab client throughput: {ratio:.2f}x (wrote {out_path})")
    else:
        sys.exit(1)


@bench.command("peers")
@click.option("--num-records", default=200_000, show_default=True, type=click.IntRange(min=1))
@click.option("--out", "out_path", default="bench-results/peers.json", show_default=True,
              type=click.Path(dir_okay=False))
def peers_cmd(num_records, out_path) -> None:
    """The same produce workload (100-byte records, acked after replication to 3 nodes) against
    brokerlab and NATS JetStream R3, in one run; prints both and the ratio."""
    from chaos.bench_peers import run_peers
    res = run_peers(num_records, RECORD_SIZE)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(res, f, indent=2)
