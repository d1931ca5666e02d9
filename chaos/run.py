"""`brokerlab chaos run`: one experiment end to end, into a run folder.

Launch a cluster (or use one), create the topics, print the seed, run the
workload under the nemesis schedule, ALWAYS heal (also on Ctrl-C or error),
final reads, check, then write the run folder:

    history.jsonl  results.json  experiment.yaml (with its seed)  logs/  report.html  plots/
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Self

import yaml

from chaos import history as h
from chaos.checker import ALLOWED, _allowed, check
from chaos.runner import Runner
from chaos.workloads import make_workload

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_EXPERIMENT",
    "EXPERIMENTS_DIR",
    "RunOutcome",
    "behaved",
    "expectation_for",
    "experiment_paths",
    "load_experiment",
    "run_experiment",
    "verdict_of",
]

EXPERIMENTS_DIR = os.path.join(os.path.dirname(__file__), "experiments")
DEFAULT_EXPERIMENT = "safe"
DEFAULT_TOPICS = [{"name": "t0", "partitions": 3, "replication_factor": 3}, {"name": "t1", "partitions": 3,
                                                                             "replication_factor": 3}]


# -- experiments (files in chaos/experiment.py's format) -----------------------

def experiment_paths() -> dict[str, str]:
    """The named library: name -> path of chaos/experiments/NAME.yaml."""
    out = {}
    for fn in sorted(os.listdir(EXPERIMENTS_DIR)):
        if fn.endswith((".yaml", ".yml")):
            out[fn.rsplit(".", 1)[0]] = os.path.join(EXPERIMENTS_DIR, fn)
    return out


def load_experiment(name_or_path: str | None) -> dict:
    """A named experiment or a YAML path, validated by chaos/experiment.py (errors name the field).

    Returns {"name", "path", "raw" (the YAML as given), "spec" (the parsed Experiment), "expect"}.
    Run-only sections are pass-through: `workload`, `clients: {producer, consumer}`,
    `checker: {expect}`.
    """
    from chaos.experiment import parse_experiment
    name_or_path = name_or_path or DEFAULT_EXPERIMENT
    lib = experiment_paths()
    path = lib.get(name_or_path, name_or_path)
    if not os.path.exists(path):
        raise ValueError(f"no experiment '{name_or_path}': not a file, and not one of {', '.join(lib)}")
    with open(path, encoding="utf-8") as fh:
        try:
            raw = yaml.safe_load(fh)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from None
    spec = parse_experiment(raw, path)
    checker = raw.get("checker") or {}
    expect = checker.get("expect", "valid")
    _expectation(expect)  # validates
    _by_client(checker)  # validates
    return {"name": os.path.basename(path).rsplit(".", 1)[0], "path": os.path.abspath(path), "raw": raw,
            "spec": spec, "expect": expect}


def _by_client(checker: dict) -> dict[str, dict]:
    """`checker.by_client: {LIBRARY: {expect: ..., why: "..."}}`: where a client library is expected to
    behave differently from brokerlab's own client, and why (validated; the why is required)."""
    from chaos.clients import LIBRARIES
    by = checker.get("by_client") or {}
    if not isinstance(by, dict):
        raise ValueError("checker.by_client: a mapping of client library -> {expect, why}")  # noqa: TRY004
    for lib, entry in by.items():
        if lib not in LIBRARIES:
            raise ValueError(f"checker.by_client.{lib}: unknown client library (one of {', '.join(LIBRARIES)})")
        if not isinstance(entry, dict) or set(entry) != {"expect", "why"} or not str(entry["why"]).strip():
            raise ValueError(f"checker.by_client.{lib}: give exactly 'expect' and 'why' (why it differs)")
        _expectation(entry["expect"])
    return by


def expectation_for(exp: dict, library: str | None):
    """The experiment's expectation under `library` (None: the experiment's own clients.library)."""
    lib = library or (exp["raw"].get("clients") or {}).get("library") or "brokerlab"
    entry = _by_client(exp["raw"].get("checker") or {}).get(lib)
    return entry["expect"] if entry else exp["expect"]


def _expectation(expect) -> tuple[str, list[str]]:
    """("valid", []) | ("any_of", names) | ("none_of", names)."""
    if expect == "valid":
        return "valid", []
    if isinstance(expect, dict) and len(expect) == 1:
        (kind, names), = expect.items()
        if kind in ("any_of", "none_of") and isinstance(names, list) and names:
            return kind, [str(n) for n in names]
    raise ValueError(f"checker.expect: 'valid', {{any_of: [anomaly, ...]}} or {{none_of: [...]}}, got {expect!r}")


def verdict_of(result: dict) -> str:
    """'valid', 'unknown', or the fatal anomaly names joined by '+'."""
    if result["valid"] is True:
        return "valid"
    if result["valid"] is not False:
        return "unknown"
    bad = [n for n in result["anomaly_types"] if not _allowed(n, result["anomalies"].get(n, []))]
    return "+".join(bad) or "invalid"


def behaved(expect, result: dict) -> bool:
    kind, names = _expectation(expect)
    if kind == "valid":
        return result["valid"] is True
    if result["valid"] not in (True, False):
        return False
    found = set(result["anomaly_types"]) - ALLOWED
    if kind == "any_of":
        return bool(found & set(names))
    return not (found & set(names))


def describe_expect(expect) -> str:
    kind, names = _expectation(expect)
    if kind == "valid":
        return "valid"
    return ("any of " if kind == "any_of" else "none of ") + "/".join(names)


# -- the schedule ------------------------------------------------------------

def build_schedule(spec, seed: int, duration_s: float) -> list[tuple[float, dict]]:
    """Timed nemesis ops: `method` steps (at their `at_s`, else at 0) then the seeded cycles."""
    import dataclasses

    from chaos.schedule import schedule
    out: list[tuple[float, dict]] = []
    for op in spec.method:
        op = dict(op)
        out.append((float(op.pop("at_s", 0.0)), op))
    heals = []
    for i, nemesis in enumerate(spec.nemeses or (spec.nemesis,)):
        if not nemesis.faults:
            continue
        # One seed per schedule; the first keeps the run's seed, so single-schedule runs replay as before.
        nspec = dataclasses.replace(nemesis, seed=seed if i == 0 else seed * 1009 + i)
        for t in schedule(nspec, int(duration_s * 1000), name=f"n{i}-" if i else ""):
            (heals if t.op["f"] == "heal" and "recovers" not in t.op else out).append((t.at_ms / 1000.0, t.op))
    if heals:  # each schedule ends with a heal-everything; with several, only the last one may run
        out.append(max(heals, key=lambda x: x[0]))
    out.sort(key=lambda x: x[0])
    return out


# -- the run -----------------------------------------------------------------

@dataclass
class RunOutcome:
    name: str
    seed: int
    run_dir: str
    result: dict
    expect: object
    elapsed_s: float
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)
    client: dict = field(default_factory=lambda: {"library": "brokerlab", "version": ""})
    network: str = "edge"

    @property
    def verdict(self) -> str:
        return verdict_of(self.result)

    @property
    def behaved(self) -> bool:
        return behaved(self.expect, self.result)

    @property
    def caveats(self) -> list[str]:
        """What limits the verdict (a failed heal, an incomplete final read); [] for a clean run."""
        return list(self.result.get("caveats", []))

    def verdict_line(self) -> str:
        """VALID / INVALID / UNKNOWN, the verdict, why unknown, and the caveats: one line."""
        word = {True: "VALID", False: "INVALID"}.get(self.result["valid"], "UNKNOWN")
        why = self.result.get("unknown_reason")
        caveats = "" if why else "".join(f"; {c}" for c in self.caveats)
        return f"{word} ({self.verdict}{': ' + why if why else ''}){caveats}"

    def replay_command(self) -> str:
        client = "" if self.client["library"] == "brokerlab" else f" --client {self.client['library']}"
        network = f" --network {self.network}" if self.network != "edge" else ""
        return (f"brokerlab chaos run {self.result.get('_experiment_path', self.name)} --seed {self.seed}"
                f"{client}{network}")

    def client_note(self) -> str:
        """Per library: ops, values acknowledged and read, wall time, and the command that replays it."""
        st = self.result.get("stats", {})
        return (f"client {self.client['library']} {self.client['version']}: {st.get('ops', 0)} ops, "
                f"{st.get('values_acknowledged', 0)} values acknowledged, {st.get('values_read', 0)} read, "
                f"{self.elapsed_s:.0f} s wall ({self.replay_command()})")


def default_run_dir(name: str, seed: int, library: str = "brokerlab") -> str:
    lib = "" if library == "brokerlab" else f"-{library}"
    return os.path.join("runs", f"{name}{lib}-{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}")


def run_experiment(exp: dict, *, seed: int | None = None, duration_s: float | None = None,
                   bootstrap: str | None = None, out_dir: str | None = None, progress: bool = True,
                   echo=print, control_token: str | None = None, data_dir: str | None = None,
                   client: str | None = None, network: str | None = None) -> RunOutcome:
    """control_token / data_dir: for a running cluster (bootstrap), where its control token is
    (ChaosController); a cluster this run starts uses its own. `client`: the client library the
    workload drives (chaos.clients.LIBRARIES; default: the experiment's `clients.library`, else
    brokerlab). A library that cannot run the experiment raises ClientUnsupported before anything
    starts. `network`: "edge" or "netns" (default: the experiment's `network`, else edge); netns without
    the privileges raises NetnsError naming what is missing, before anything starts."""
    from chaos.clients import resolve_clients
    started = time.monotonic()
    network = network or exp["spec"].network
    if network == "netns":
        from node.netns import require_privileges
        require_privileges("network: netns")
    if seed is None:
        raw_seed = exp["raw"].get("seed")
        seed = raw_seed if raw_seed is not None else random.SystemRandom().randrange(1, 2**31)
    seed = int(seed)
    echo(f"seed: {seed}")
    spec = exp["spec"]
    raw = exp["raw"]
    duration_s = float(duration_s if duration_s is not None else spec.time_limit_s)
    name = exp["name"]
    workload_spec = dict(raw.get("workload") or {"name": "log"})
    cspec = resolve_clients(raw.get("clients"), str(workload_spec.get("name", "log")), client)
    topics = [{"name": t.name, "partitions": t.partitions, "replication_factor": t.replication_factor,
               "configs": t.configs} for t in spec.topics] or DEFAULT_TOPICS
    run_dir = os.path.abspath(out_dir or default_run_dir(name, seed, cspec.library))
    os.makedirs(run_dir, exist_ok=True)
    echo(f"experiment: {name} ({duration_s:g} s), client: {cspec.label}, network: {network}, run folder: {run_dir}")
    _write_experiment(exp, seed, duration_s, run_dir, cspec)
    concurrency = int(workload_spec.pop("concurrency", 4))
    final_read_s = float(workload_spec.pop("final_read_s", 30))
    workload = make_workload(workload_spec.pop("name", "log"), workload_spec,
                             [(t["name"], int(t["partitions"])) for t in topics], concurrency)
    schedule = build_schedule(spec, seed, duration_s)
    if hasattr(workload, "set_clients"):  # workloads whose checks depend on the client configs
        workload.set_clients(cspec.producer, cspec.consumer)
    if cspec.library != "brokerlab":
        workload.adapter = cspec.module
    if getattr(workload, "log_dir", False) is None:
        workload.log_dir = os.path.join(run_dir, "member-logs")
        os.makedirs(workload.log_dir, exist_ok=True)

    cluster, cluster_tmp = None, None
    notes: list[str] = list(cspec.notes)
    interrupted = False
    controller = None
    layers: dict[str, str] = {}  # which layer applied which fault (ChaosController.layers), for run.json
    writer = h.HistoryWriter(os.path.join(run_dir, "history.jsonl"))
    runner = None
    old_term = signal.getsignal(signal.SIGTERM) if _main_thread() else None
    client_logs = _ClientLogs(run_dir, cspec.library)
    try:
        client_bootstrap = bootstrap
        if bootstrap is None:
            cluster, cluster_tmp = _start_cluster(spec, echo, network)
            bootstrap = cluster.bootstrap_servers
            client_bootstrap = cluster.all_servers
        from chaos.controller import ChaosController
        from chaos.nemesis import Nemesis
        if cluster is not None:
            control_token = cluster.control_token
        controller = ChaosController(bootstrap, state_path=os.path.join(run_dir, "controller-state.json"),
                                     control_token=control_token, data_dir=data_dir, network=network)
        controller.discover()
        layers = controller.layers()
        if network == "netns":
            echo(f"network netns: partitions, isolate, loss and cut-clients are kernel rules (nftables); "
                 f"delay and jitter: {controller.delay_layer()}")
        if cspec.library != "brokerlab":
            from chaos.clients import kafka_bootstrap
            client_bootstrap = ",".join(a.kafka_address for a in cluster.agents.values() if a.kafka_address) \
                if cluster is not None else kafka_bootstrap(controller.metadata())
        _create_topics(bootstrap, topics)
        failed = _steady_state(spec, controller, "before the method")
        if failed:
            raise RuntimeError(f"steady state not met before the method ({failed}): experiment not run")
        runner = Runner(workload, writer, client_bootstrap, producer_props=cspec.producer,
                        consumer_props=cspec.consumer, concurrency=concurrency,
                        ops_limit=int(workload_spec.get("ops_limit", 1_000_000)), time_limit_s=duration_s, seed=seed,
                        nemesis=_nemesis(Nemesis(controller, seed), workload), schedule=schedule,
                        send_wait_s=None if cspec.library == "brokerlab" else cspec.module.delivery_timeout_s(cspec.producer))
        if _main_thread():
            # SIGTERM behaves like Ctrl-C: stop, heal, report.
            signal.signal(signal.SIGTERM, _raise_interrupt)
        runner.start()
        with _Progress(runner, enabled=progress) as prog:
            runner.wait(on_tick=prog.update)
    except KeyboardInterrupt:
        interrupted = True
        notes.append("interrupted (Ctrl-C): no final read; the verdict covers what was recorded")
        echo("interrupted: healing the cluster and writing what was recorded")
    except Exception as e:
        notes.append(f"run error: {type(e).__name__}: {e}")
        log.exception("run failed")
        echo(f"error: {type(e).__name__}: {e}")
    finally:
        if runner is not None:
            runner.stop_event.set()
            runner.join(timeout_s=2.0 if interrupted else None)
        if controller is not None:
            _heal(runner, controller, notes)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    final = None
    try:
        final = _final_read(runner, controller, spec, notes, interrupted, final_read_s)
    except KeyboardInterrupt:
        interrupted = True
        notes.append("interrupted during the final read")
        final = {"complete": False, "reason": "interrupted during the final read"}
    finally:
        writer.close()
        if controller is not None:
            controller.close()
        if cluster is not None:
            _stop_cluster(cluster, cluster_tmp, run_dir)
    client_logs.close()
    history = h.read_history(writer.path)
    result = check(history)
    _workload_check(workload, history, result, notes)
    _excuse_unread(result, _caveats(notes, final))
    if runner is not None and runner.errors:
        notes += runner.errors
    result["_experiment_path"] = exp["path"]
    client_info = {"library": cspec.library, "version": cspec.version}
    outcome = RunOutcome(name, seed, run_dir, result, exp["expect"],
                         time.monotonic() - started, interrupted, notes, client_info, network)
    with open(os.path.join(run_dir, "results.json"), "w", encoding="utf-8") as fh:
        json.dump({**{k: v for k, v in result.items() if not k.startswith("_")}, "client": client_info}, fh,
                  indent=1, sort_keys=True, default=str)
    with open(os.path.join(run_dir, "run.json"), "w", encoding="utf-8") as fh:
        json.dump({"name": name, "seed": seed, "client": client_info, "network": network, "layers": layers,
                   "duration_s": duration_s,
                   "elapsed_s": outcome.elapsed_s,
                   "expect": outcome.expect, "verdict": outcome.verdict, "behaved": outcome.behaved,
                   "interrupted": interrupted, "notes": notes, "caveats": outcome.caveats,
                   "final_read": final, "replay": outcome.replay_command()},
                  fh, indent=1, default=str)
    from chaos.report import write_report
    write_report(run_dir)
    return outcome


# Anomalies a run cannot tell from values it did not read back (no complete final read, failed heal).
UNSURE_WITHOUT_FINAL_READ = frozenset({"unseen", "eos-missing"})


def _final_read(runner, controller, spec, notes: list[str], interrupted: bool, final_read_s: float) -> dict | None:
    """The final read, after the heal, whatever the run's notes say (a failed heal included): only
    an interrupted run skips it. Returns the runner's {"complete", "reason", "ends"} (None: no
    workload ran); a read that did not reach the end is noted."""
    if runner is None:
        return None
    if interrupted:
        return {"complete": False, "reason": "interrupted: no final read"}
    if not controller.wait_healthy(final_read_s):
        notes.append("cluster not fully healthy (ISR not full) before the final read")
    failed = _steady_state(spec, controller, "after the heal")
    if failed:
        notes.append(f"steady state not restored after the heal: {failed}")
    final = runner.final_reads(timeout_s=final_read_s)
    if not final["complete"]:
        notes.append(final["reason"])
    return final


def _caveats(notes: list[str], final: dict | None) -> list[str]:
    """What limits the verdict: a failed heal, a final read that did not reach the end."""
    out = [n for n in notes if n.startswith("heal failed")]
    if final is not None and not final["complete"]:
        out.append(final["reason"])
    return out


def _excuse_unread(result: dict, caveats: list[str]) -> None:
    """With caveats, a value no poll returned may be lost or only unread: when every fatal anomaly is
    of that kind, the verdict is unknown and says why. Any other fatal anomaly keeps it invalid."""
    if not caveats:
        return
    result["caveats"] = list(caveats)
    if result["valid"] is not False:
        return
    fatal = sorted(n for n in result["anomaly_types"] if not _allowed(n, result["anomalies"].get(n, [])))
    if fatal and set(fatal) <= UNSURE_WITHOUT_FINAL_READ:
        result["valid"] = "unknown"
        result["unknown_reason"] = (f"only {', '.join(fatal)}, which may be values never read back: "
                                    + "; ".join(caveats))


def _workload_check(workload, history, result: dict, notes: list[str]) -> None:
    """A workload's own check (e.g. eos exactly-once) adds its anomalies to the checker's result."""
    own = getattr(workload, "check", None)
    if own is None or result["valid"] not in (True, False):
        return
    try:
        found, stats = own(history)
    except Exception as e:  # noqa: BLE001 -- like the checker: no verdict rather than a crash
        notes.append(f"{workload.name} check failed: {type(e).__name__}: {e}")
        result["valid"] = "unknown"
        return
    result["stats"][workload.name] = stats
    counts = result["stats"].setdefault("anomaly_counts", {})
    for name, evidence in found.items():
        result["anomalies"][name] = evidence[:1000]
        counts[name] = len(evidence)
    if found:
        result["anomaly_types"] = sorted(result["anomalies"])
        result["valid"] = False


CLIENT_LOGGERS = {"kafka-python": ("kafka",), "aiokafka": ("aiokafka",), "confluent-kafka": ("chaos.clients.librdkafka",)}


class _ClientLogs:
    """A client library's own log lines go to RUN_DIR/logs/client.log, not the terminal: under faults
    they are many (reconnects, retries) and belong with the run."""

    def __init__(self, run_dir: str, library: str) -> None:
        self.loggers = [logging.getLogger(n) for n in CLIENT_LOGGERS.get(library, ())]
        self.handler = None
        if self.loggers:
            os.makedirs(os.path.join(run_dir, "logs"), exist_ok=True)
            self.handler = logging.FileHandler(os.path.join(run_dir, "logs", "client.log"), encoding="utf-8")
            self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(threadName)s: %(message)s"))
        self.saved = [(lg, lg.propagate, lg.level) for lg in self.loggers]
        for lg in self.loggers:
            lg.addHandler(self.handler)
            lg.propagate = False
            lg.setLevel(logging.INFO)

    def close(self) -> None:
        for lg, propagate, level in self.saved:
            lg.removeHandler(self.handler)
            lg.propagate, lg.level = propagate, level
        if self.handler is not None:
            self.handler.close()


def _nemesis(nemesis, workload):
    """Cluster faults go to the Nemesis; faults the workload owns (e.g. kill-member) to the workload."""
    own = getattr(workload, "NEMESIS_FS", ())

    def invoke(op: dict) -> dict:
        return workload.nemesis(op) if op.get("f") in own else nemesis.invoke(op)
    return invoke


def _raise_interrupt(*_):
    raise KeyboardInterrupt


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _steady_state(spec, controller, when: str) -> str:
    """Runs the experiment's steady-state probes (chaostoolkit's hypothesis); names the failed ones."""
    from chaos.experiment import check_probes
    results = check_probes(spec, controller)
    for probe, ok in results:
        log.info("steady state %s: probe %s %s", when, probe.name, "ok" if ok else "FAILED")
    return ", ".join(p.name for p, ok in results if not ok)


HEAL_ATTEMPTS = 6
HEAL_BACKOFF_S = 1.0


def _heal(runner, controller, notes: list[str], attempts: int = HEAL_ATTEMPTS, sleep=None) -> bool:
    """Heals whatever the schedule left behind, each attempt recorded as a nemesis op; retries the
    nodes that did not confirm (bounded: `attempts`, backing off) and notes any that never did.
    Returns whether every node confirmed."""
    if runner is None:
        return True  # no workload ran, so no fault was injected
    sleep = sleep or time.sleep
    pending: list[str] | None = None  # every node first, then the ones that did not confirm
    done: dict = {}
    for attempt in range(attempts):
        if attempt:
            sleep(min(HEAL_BACKOFF_S * 2 ** (attempt - 1), 8.0))
        done = runner.apply_fault({"f": "heal", "value": {"nodes": pending} if pending else None})
        if not done.get("error"):
            return True
        value = done.get("value")
        failed = value.get("failed") if isinstance(value, dict) else None
        pending = sorted(failed) if failed else None
    value = done.get("value")
    failed = value.get("failed") if isinstance(value, dict) else None
    if failed:
        notes.append(f"heal failed: {', '.join(f'{n} never confirmed ({e})' for n, e in sorted(failed.items()))}"
                     f" after {attempts} attempts")
    else:
        notes.append(f"heal failed after {attempts} attempts: {done.get('error')}")
    return False


def _write_experiment(exp: dict, seed: int, duration_s: float, run_dir: str, cspec=None) -> None:
    out = dict(exp["raw"])
    out["seed"] = seed
    out["time_limit_s"] = duration_s
    if cspec is not None and cspec.library != "brokerlab":
        # What this run drove, in the library's spelling: replays as is.
        out["clients"] = {"library": cspec.library, "producer": cspec.producer, "consumer": cspec.consumer}
    with open(os.path.join(run_dir, "experiment.yaml"), "w", encoding="utf-8") as fh:
        yaml.safe_dump(out, fh, sort_keys=False)


def _start_cluster(spec, echo, network: str = "edge"):
    from node.cluster import FAST_CONFIGS, Cluster
    configs = {**FAST_CONFIGS, **spec.configs}
    tmp = tempfile.mkdtemp(prefix="brokerlab-run-")
    where = " in network namespaces" if network == "netns" else ""
    echo(f"starting a cluster: coordinator and {spec.brokers} brokers{where} ...")
    try:
        if network == "netns":
            from node.netns_cluster import NetnsCluster
            cluster = NetnsCluster(tmp, brokers=spec.brokers, configs=configs, echo=echo).start()
        else:
            cluster = Cluster(tmp, brokers=spec.brokers, port=0, configs=configs).start()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    echo(f"cluster up at {cluster.bootstrap_servers}")
    return cluster, tmp


def _stop_cluster(cluster, tmp: str, run_dir: str) -> None:
    try:
        cluster.stop()
    finally:
        _copy_logs(tmp, run_dir)
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_logs(tmp: str, run_dir: str | None) -> None:
    src = os.path.join(tmp, "logs")
    if run_dir and os.path.isdir(src):
        shutil.copytree(src, os.path.join(run_dir, "logs"), dirs_exist_ok=True)


def _create_topics(bootstrap: str, topics: list[dict]) -> None:
    from client import Admin
    from client.common import errors
    admin = Admin({"bootstrap.servers": bootstrap})
    try:
        for t in topics:
            try:
                admin.create_topic(t["name"], int(t["partitions"]), int(t["replication_factor"]),
                                   t.get("configs") or {})
            except errors.TopicAlreadyExistsError:
                raise ValueError(f"topic '{t['name']}' already exists on {bootstrap}: a run needs fresh topics "
                                 f"(delete it, or run without --bootstrap-server)") from None
    finally:
        admin.close()


class _Progress:
    """Live progress (chaos.progress): a rich panel on a terminal, redrawn 4 times a second; when
    stderr is piped, a plain line every PLAIN_EVERY_S instead (no cursor codes in logs)."""

    PLAIN_EVERY_S = 5.0

    def __init__(self, runner: Runner, enabled: bool = True, stream=None) -> None:
        from chaos.progress import ProgressModel
        self.runner = runner
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.model = ProgressModel(runner.time_limit_s)
        self.live = None
        self._next_plain_s = self.PLAIN_EVERY_S

    def __enter__(self) -> Self:
        if self.tty:
            from rich.console import Console
            from rich.live import Live
            self.live = Live(self._render(self.model.update(self.runner.snapshot())),
                             console=Console(file=self.stream), refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def update(self) -> None:
        if not self.enabled:
            return
        line = self.model.update(self.runner.snapshot())
        if self.live is not None:
            self.live.update(self._render(line))
        elif line.elapsed_s >= self._next_plain_s:
            self._next_plain_s = line.elapsed_s + self.PLAIN_EVERY_S
            print(line.plain(), file=self.stream, flush=True)

    @staticmethod
    def _render(line):
        from rich.table import Table
        t = Table(title=f"elapsed {line.elapsed_s:5.1f} s, {line.left_s:.0f} s left", expand=False)
        t.add_column("op")
        for ty in ("ok", "fail", "info"):
            t.add_column(ty, justify="right")
        for f, counts in line.by_f.items():
            t.add_row(f, *(str(counts[ty]) for ty in ("ok", "fail", "info")))
        t.add_row("[b]per second[/b]", *(f"[b]{line.per_s[ty]:.0f}[/b]" for ty in ("ok", "fail", "info")))
        t.caption = f"fault in force: {line.faults}"
        return t

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.update(self._render(self.model.update(self.runner.snapshot())))
            self.live.__exit__(None, None, None)
        elif self.enabled:
            print(self.model.update(self.runner.snapshot()).plain(), file=self.stream, flush=True)
