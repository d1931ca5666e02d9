"""Experiment files (YAML), after chaostoolkit's format: title, description, a steady-state
hypothesis checked before and after, a method, rollbacks; plus the cluster, topics, the nemesis
schedule, a time limit and a seed. Loading validates everything and names the bad field.

    title: Kill a leader under acks=all
    description: nothing acknowledged is lost when leaders die
    seed: 42
    time_limit_s: 60
    cluster: {brokers: 3, configs: {min.insync.replicas: 2}}
    network: edge                 # or netns: nodes in network namespaces, faults as kernel rules (root)
    topics:
      - {name: t0, partitions: 3, replication_factor: 3, configs: {min.insync.replicas: "2"}}
    steady_state_hypothesis:
      title: every partition fully replicated
      probes:
        - {name: isr-full, type: isr-full, timeout_s: 30}
    method:                       # nemesis ops applied once, before the schedule
      - {f: delay, value: {links: ["client:*:broker-1"], ms: 50}}
    nemesis: {interval_s: 10, duration_s: 5, faults: [kill, {f: partition, shape: halves}]}
                                  # or a list of such schedules, run side by side (faults overlap)
    rollbacks: [heal]             # default; always applied at the end
    workload: {...}               # read by the runner (workloads); kept as given
"""
from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from chaos.schedule import FAULTS, NemesisSpec, SpecError, parse_nemesis

PROBE_TYPES = ("isr-full", "brokers-unfenced", "healthy")
NEMESIS_FS = tuple(FAULTS) + ("start", "resume", "heal", "drop-response")
PASS_THROUGH = ("workload", "checker", "report", "clients")  # sections other parts of chaos read
KNOWN = ("title", "description", "seed", "time_limit_s", "cluster", "topics", "steady_state_hypothesis",
         "method", "nemesis", "rollbacks", "tags", "network") + PASS_THROUGH
NETWORKS = ("edge", "netns")


class ExperimentError(SpecError):
    pass


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int = 1
    replication_factor: int = 3
    configs: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Probe:
    name: str
    type: str
    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Experiment:
    title: str
    description: str = ""
    seed: int = 0
    time_limit_s: float = 60.0
    brokers: int = 3
    configs: dict = field(default_factory=dict)
    topics: tuple[TopicSpec, ...] = ()
    probes: tuple[Probe, ...] = ()
    method: tuple[dict, ...] = ()  # nemesis ops
    nemesis: NemesisSpec = field(default_factory=lambda: NemesisSpec(faults=()))  # the first of `nemeses`
    nemeses: tuple[NemesisSpec, ...] = ()
    rollbacks: tuple[dict, ...] = ({"process": "nemesis", "type": "info", "f": "heal", "value": None},)
    extra: dict = field(default_factory=dict)  # workload, checker, ... as given
    network: str = "edge"  # where network faults are applied: the gRPC edge, or the kernel (netns)


def _err(path: str, msg: str) -> ExperimentError:
    return ExperimentError(f"{path}: {msg}")


def _int(d: dict, key: str, default: int, lo: int, path: str) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise _err(f"{path}{key}", f"expected an integer >= {lo}, got {v!r}")
    return v


def _mapping(v, path: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _err(path, f"expected a mapping, got {type(v).__name__}")
    return v


def _nemesis_op(raw, path: str) -> dict:
    if isinstance(raw, str):
        raw = {"f": raw}
    if not isinstance(raw, dict) or raw.get("f") not in NEMESIS_FS:
        f = raw.get("f") if isinstance(raw, dict) else raw
        raise _err(f"{path}.f", f"unknown nemesis op {f!r} (one of {', '.join(NEMESIS_FS)})")
    unknown = set(raw) - {"f", "value", "name", "type", "at_s"}
    if unknown:
        raise _err(f"{path}.{min(unknown)}", "unknown field (use f, value, name, at_s)")
    if raw.get("value") is not None and not isinstance(raw["value"], dict):
        raise _err(f"{path}.value", "expected a mapping")
    op = {"process": "nemesis", "type": "info", "f": raw["f"], "value": raw.get("value")}
    if "at_s" in raw:  # a scripted step: applied at this time into the run instead of before it
        at = raw["at_s"]
        if isinstance(at, bool) or not isinstance(at, (int, float)) or at < 0:
            raise _err(f"{path}.at_s", f"expected seconds >= 0, got {at!r}")
        op["at_s"] = float(at)
    return op


def _topic(raw, path: str, brokers: int) -> TopicSpec:
    raw = _mapping(raw, path)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _err(f"{path}.name", "a topic needs a name")
    unknown = set(raw) - {"name", "partitions", "replication_factor", "configs"}
    if unknown:
        raise _err(f"{path}.{min(unknown)}", "unknown field (name, partitions, replication_factor, configs)")
    rf = _int(raw, "replication_factor", min(3, brokers), 1, f"{path}.")
    if rf > brokers:
        raise _err(f"{path}.replication_factor", f"{rf} is more than the cluster's {brokers} brokers")
    configs = {str(k): str(v) for k, v in _mapping(raw.get("configs"), f"{path}.configs").items()}
    return TopicSpec(name, _int(raw, "partitions", 1, 1, f"{path}."), rf, configs)


def _probes(raw, path: str) -> tuple[Probe, ...]:
    raw = _mapping(raw, path)
    probes = raw.get("probes", [])
    if not isinstance(probes, list):
        raise _err(f"{path}.probes", "expected a list")
    out = []
    for i, p in enumerate(probes):
        pp = f"{path}.probes[{i}]"
        p = _mapping(p, pp)
        if p.get("type") not in PROBE_TYPES:
            raise _err(f"{pp}.type", f"unknown probe type {p.get('type')!r} (one of {', '.join(PROBE_TYPES)})")
        t = p.get("timeout_s", 30)
        if isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0:
            raise _err(f"{pp}.timeout_s", f"expected a positive number, got {t!r}")
        out.append(Probe(str(p.get("name", p["type"])), p["type"], float(t)))
    return tuple(out)


def parse_experiment(raw, source: str = "experiment") -> Experiment:
    if not isinstance(raw, dict):
        raise _err(source, "an experiment is a YAML mapping")
    raw = {k.replace("-", "_"): v for k, v in raw.items()}
    unknown = set(raw) - set(KNOWN)
    if unknown:
        raise _err(f"{source}: {min(unknown)}", f"unknown field (known: {', '.join(KNOWN)})")
    title = raw.get("title")
    if not isinstance(title, str) or not title.strip():
        raise _err(f"{source}: title", "an experiment needs a title")
    p = f"{source}: "
    seed = _int(raw, "seed", 0, 0, p)
    limit = raw.get("time_limit_s", 60)
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0:
        raise _err(f"{p}time_limit_s", f"expected a positive number of seconds, got {limit!r}")
    cluster = _mapping(raw.get("cluster"), f"{p}cluster")
    unknown = set(cluster) - {"brokers", "configs"}
    if unknown:
        raise _err(f"{p}cluster.{min(unknown)}", "unknown field (brokers, configs)")
    brokers = _int(cluster, "brokers", 3, 1, f"{p}cluster.")
    network = raw.get("network", "edge")
    if network not in NETWORKS:
        raise _err(f"{p}network", f"expected one of {', '.join(NETWORKS)}, got {network!r}")
    configs = dict(_mapping(cluster.get("configs"), f"{p}cluster.configs"))
    topics = raw.get("topics") or []
    if not isinstance(topics, list):
        raise _err(f"{p}topics", "expected a list of topics")
    tspecs = tuple(_topic(t, f"{p}topics[{i}]", brokers) for i, t in enumerate(topics))
    names = [t.name for t in tspecs]
    if len(set(names)) != len(names):
        raise _err(f"{p}topics", "a topic is listed twice")
    method = raw.get("method") or []
    rollbacks = raw.get("rollbacks", ["heal"]) or []
    for key, v in (("method", method), ("rollbacks", rollbacks)):
        if not isinstance(v, list):
            raise _err(f"{p}{key}", "expected a list of nemesis ops")
    raw_nemesis = raw.get("nemesis")
    try:
        if isinstance(raw_nemesis, list):
            if not raw_nemesis:
                raise ExperimentError(f"{p}nemesis: an empty list (leave it out for no schedule)")
            nemeses = tuple(parse_nemesis(n, seed, f"{p}nemesis[{i}]") for i, n in enumerate(raw_nemesis))
        else:
            nemeses = (parse_nemesis(raw_nemesis, seed, f"{p}nemesis"),)
    except SpecError as e:
        raise ExperimentError(str(e)) from None
    return Experiment(
        title=title.strip(), description=str(raw.get("description") or ""), seed=seed, time_limit_s=float(limit),
        brokers=brokers, configs=configs, topics=tspecs,
        probes=_probes(raw.get("steady_state_hypothesis"), f"{p}steady_state_hypothesis"),
        method=tuple(_nemesis_op(m, f"{p}method[{i}]") for i, m in enumerate(method)),
        nemesis=nemeses[0], nemeses=nemeses,
        rollbacks=tuple(_nemesis_op(m, f"{p}rollbacks[{i}]") for i, m in enumerate(rollbacks)),
        extra={k: raw[k] for k in PASS_THROUGH if k in raw}, network=network)


def load_experiment(path: str) -> Experiment:
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ExperimentError(f"{path}: no such experiment file") from None
    except yaml.YAMLError as e:
        raise ExperimentError(f"{path}: not valid YAML ({e})") from None
    return parse_experiment(raw, path)


def check_probes(exp: Experiment, controller) -> list[tuple[Probe, bool]]:
    """Runs the steady-state probes against a cluster (a ChaosController); each waits up to its timeout."""
    import time

    out = []
    for probe in exp.probes:
        deadline = time.monotonic() + probe.timeout_s
        ok = False
        while not ok and time.monotonic() < deadline:
            ok = _probe_once(probe, controller)
            if not ok:
                time.sleep(0.2)
        out.append((probe, ok))
    return out


def _probe_once(probe: Probe, controller) -> bool:
    md = controller.metadata()
    if md is None:
        return False
    unfenced = all(not b.fenced for b in md.brokers)
    isr_full = all(p.leader >= 0 and set(p.isr) == set(p.replicas) for t in md.topics for p in t.partitions)
    return {"isr-full": isr_full, "brokers-unfenced": unfenced, "healthy": isr_full and unfenced}[probe.type]
