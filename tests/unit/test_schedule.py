"""The seeded nemesis schedule and Jepsen-style targets: pure, reproducible."""
from __future__ import annotations

import itertools
import random

import pytest

from chaos.schedule import SpecError, parse_nemesis, schedule
from chaos.targets import ClusterView, TargetError, partition_shape, resolve_nodes

NODES = ("broker-1", "broker-2", "broker-3", "coordinator")
VIEW = ClusterView(NODES, leaders={"t/0": "broker-2", "t/1": "broker-3"},
                   replicas={"t/0": ("broker-2", "broker-1", "broker-3"), "t/1": ("broker-3", "broker-1")})
SPEC = {"interval_s": 10, "duration_s": 4, "start_after_s": 1,
        "faults": ["kill", {"f": "pause", "target": "leader-of", "topic": "t", "partition": 0},
                   {"f": "partition", "shape": "halves", "weight": 2},
                   {"f": "delay", "target": "one", "ms": 200, "jitter_ms": 50}, "restart"]}


def ops(spec, seed, limit_ms=120_000):
    return [(t.at_ms, t.op) for t in schedule(parse_nemesis(spec, seed), limit_ms)]


def test_same_seed_same_schedule_other_seed_other_schedule():
    assert ops(SPEC, 42) == ops(SPEC, 42)
    assert ops(SPEC, 42) != ops(SPEC, 43)
    assert ops({**SPEC, "seed": 5}, 42) == ops(SPEC, 5)  # the spec's own seed wins


def test_schedule_shape_and_recovery_ops():
    got = ops(SPEC, 1)
    times = [t for t, _ in got]
    assert times == sorted(times) and times[0] == 1000 and times[-1] < 120_000
    assert all(op["process"] == "nemesis" and op["type"] == "info" for _, op in got)
    recover = {"kill": "start", "pause": "resume", "partition": "heal", "delay": "heal"}
    faults = [(t, op) for t, op in got if op["f"] not in ("start", "resume", "heal")]
    assert len(faults) == 12  # at 1 s, 11 s, ... 111 s
    for t, op in faults:
        if op["f"] in recover:
            assert (t + 4000, recover[op["f"]]) in [(t2, o2["f"]) for t2, o2 in got]
    assert got[-1][1]["f"] == "heal"
    assert {op["f"] for _, op in faults} == {"kill", "pause", "partition", "delay", "restart"}


def test_pause_op_carries_its_target_params():
    got = [op for _, op in ops(SPEC, 1) if op["f"] == "pause"]
    assert got[0]["value"] == {"target": "leader-of", "topic": "t", "partition": 0}


def test_no_faults_is_just_a_heal():
    assert [op["f"] for _, op in ops({"faults": []}, 0)] == ["heal"]


@pytest.mark.parametrize("spec,field", [
    ({"faults": ["kil"]}, "nemesis.faults[0].f"),
    ({"faults": [{"f": "partition", "shape": "triangle"}]}, "nemesis.faults[0].shape"),
    ({"faults": [{"f": "loss", "p": 2}]}, "nemesis.faults[0].p"),
    ({"faults": [{"f": "delay", "ms": -1}]}, "nemesis.faults[0].ms"),
    ({"faults": [{"f": "kill", "targte": "one"}]}, "nemesis.faults[0].targte"),
    ({"faults": ["kill"], "interval_s": 2, "duration_s": 5}, "nemesis.duration_s"),
    ({"faults": ["kill"], "seed": "x"}, "nemesis.seed"),
    ({"faults": "kill"}, "nemesis.faults"),
    ({"intervall_s": 3}, "nemesis.intervall_s"),
])
def test_bad_spec_names_the_field(spec, field):
    with pytest.raises(SpecError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_nemesis(spec)


@pytest.mark.parametrize("target,check", [
    ("one", lambda r: len(r) == 1 and r[0] in NODES),
    ("broker", lambda r: len(r) == 1 and r[0].startswith("broker-")),
    ("coordinator", lambda r: r == ["coordinator"]),
    ("minority", lambda r: len(r) == 1),
    ("majority", lambda r: len(r) == 3 and len(set(r)) == 3),
    ("all", lambda r: r == sorted(NODES)),
    ("random", lambda r: 1 <= len(r) <= 4),
    ("broker-1,coordinator", lambda r: r == ["broker-1", "coordinator"]),
])
def test_targets(target, check):
    for seed in range(20):
        assert check(resolve_nodes(target, VIEW, random.Random(seed)))
    assert resolve_nodes(target, VIEW, random.Random(9)) == resolve_nodes(target, VIEW, random.Random(9))


def test_leader_of_and_bad_targets():
    assert resolve_nodes("leader-of", VIEW, random.Random(0), "t", 1) == ["broker-3"]
    with pytest.raises(TargetError, match="no leader known for t/7"):
        resolve_nodes("leader-of", VIEW, random.Random(0), "t", 7)
    with pytest.raises(TargetError, match="unknown target 'broker-9'"):
        resolve_nodes("broker-9", VIEW, random.Random(0))


def sees(plan, a, b):
    return a not in plan.grudge.get(b, [])


@pytest.mark.parametrize("seed", range(10))
def test_partition_shapes(seed):
    rng = random.Random(seed)
    iso = partition_shape("isolate-one", VIEW, rng)
    assert len(iso.groups[0]) == 1 and sorted(iso.groups[0] + iso.groups[1]) == sorted(NODES)
    (one,) = iso.groups[0]
    assert all(not sees(iso, one, o) and not sees(iso, o, one) for o in NODES if o != one)

    halves = partition_shape("halves", VIEW, rng)
    assert sorted(map(len, halves.groups)) == [2, 2]

    bridge = partition_shape("bridge", VIEW, rng)
    (b,) = set(bridge.groups[0]) & set(bridge.groups[1])
    assert all(sees(bridge, b, o) and sees(bridge, o, b) for o in NODES)

    ring = partition_shape("majorities-ring", VIEW, rng)
    majorities = {frozenset(o for o in NODES if sees(ring, o, n)) for n in NODES}
    assert all(len(m) == 3 for m in majorities) and len(majorities) == 4  # each sees a majority, no two the same

    lf = partition_shape("leader-isolated-from-followers", VIEW, rng, "t", 0)
    assert lf.groups == [["broker-2"], ["broker-1", "broker-3"]]
    assert sees(lf, "broker-2", "coordinator") and sees(lf, "coordinator", "broker-2")


def test_same_seed_same_partition():
    a = partition_shape("majorities-ring", VIEW, random.Random(4))
    assert a == partition_shape("majorities-ring", VIEW, random.Random(4))


# -- experiment files --------------------------------------------------------------------------------
from chaos.experiment import ExperimentError, load_experiment, parse_experiment

GOOD = """
title: Kill a leader under acks=all
description: nothing acknowledged is lost
seed: 42
time_limit_s: 30
cluster: {brokers: 3, configs: {min.insync.replicas: 2}}
topics:
  - {name: t0, partitions: 3, replication_factor: 3, configs: {min.insync.replicas: 2}}
steady-state-hypothesis:
  title: fully replicated
  probes: [{name: isr, type: isr-full, timeout_s: 10}]
method: [{f: delay, value: {links: ["client:*:broker-1"], ms: 50}}]
nemesis: {interval_s: 5, duration_s: 2, faults: [kill, {f: partition, shape: halves}]}
rollbacks: [heal]
workload: {name: queue}
"""


def test_experiment_loads(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text(GOOD)
    e = load_experiment(str(p))
    assert (e.title, e.seed, e.time_limit_s, e.brokers) == ("Kill a leader under acks=all", 42, 30.0, 3)
    assert e.topics[0].configs == {"min.insync.replicas": "2"} and e.topics[0].partitions == 3
    assert e.probes[0].type == "isr-full" and e.method[0]["f"] == "delay" and e.rollbacks[0]["f"] == "heal"
    assert e.nemesis.seed == 42 and [f.f for f in e.nemesis.faults] == ["kill", "partition"]
    assert e.extra == {"workload": {"name": "queue"}}


@pytest.mark.parametrize("patch,field", [
    ({"title": ""}, "title"),
    ({"colour": "red"}, "colour"),
    ({"time_limit_s": -1}, "time_limit_s"),
    ({"cluster": {"brokers": 0}}, "cluster.brokers"),
    ({"topics": [{"name": "t", "replication_factor": 5}]}, r"topics\[0\].replication_factor"),
    ({"topics": [{"partitions": 1}]}, r"topics\[0\].name"),
    ({"steady_state_hypothesis": {"probes": [{"type": "vibes"}]}}, r"probes\[0\].type"),
    ({"method": [{"f": "explode"}]}, r"method\[0\].f"),
    ({"nemesis": {"faults": [{"f": "kill", "target": ""}]}}, r"nemesis.faults\[0\].target"),
])
def test_bad_experiment_names_the_field(patch, field):
    import yaml
    raw = {**yaml.safe_load(GOOD), **patch}
    with pytest.raises(ExperimentError, match=field):
        parse_experiment(raw, "e.yaml")


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ExperimentError, match="no such experiment file"):
        load_experiment(str(tmp_path / "nope.yaml"))
    (tmp_path / "bad.yaml").write_text("title: [unclosed\n")
    with pytest.raises(ExperimentError, match="not valid YAML"):
        load_experiment(str(tmp_path / "bad.yaml"))


def test_steady_state_probes_judge_cluster_metadata():
    from types import SimpleNamespace as NS

    from chaos.experiment import check_probes, parse_experiment

    exp = parse_experiment({"title": "t", "steady_state_hypothesis": {"probes": [
        {"name": "isr", "type": "isr-full", "timeout_s": 0.01},
        {"name": "fenced", "type": "brokers-unfenced", "timeout_s": 0.01}]}})

    def md(isr, fenced):
        part = NS(leader=1, isr=isr, replicas=[1, 2, 3])
        return NS(brokers=[NS(fenced=fenced)], topics=[NS(partitions=[part])])

    healthy = NS(metadata=lambda: md([1, 2, 3], False))
    broken = NS(metadata=lambda: md([1], True))
    assert [ok for _, ok in check_probes(exp, healthy)] == [True, True]
    assert [ok for _, ok in check_probes(exp, broken)] == [False, False]


def test_an_interval_range_draws_each_gap_from_it_and_recoveries_name_their_fault():
    spec = parse_nemesis({"interval_s": [1, 2], "duration_s": 1, "faults": ["kill", "pause"]}, seed=5)
    ops = list(schedule(spec, 30_000, name="a-"))
    faults = [t for t in ops if "fault_id" in t.op]
    gaps = {b.at_ms - a.at_ms for a, b in itertools.pairwise(faults)}
    assert all(1000 <= g <= 2000 for g in gaps) and len(gaps) > 3  # drawn, not fixed
    for t in faults:
        rec = next(r for r in ops if r.op.get("recovers") == t.op["fault_id"])
        assert rec.at_ms == t.at_ms + 1000 and rec.op["f"] == {"kill": "start", "pause": "resume"}[t.op["f"]]
    assert [t.op["fault_id"] for t in faults][:2] == ["a-0", "a-1"]
    assert ops == list(schedule(spec, 30_000, name="a-"))
    with pytest.raises(SpecError, match=r"nemesis.interval_s: expected seconds or \[low, high\]"):
        parse_nemesis({"interval_s": [2, 1], "faults": ["kill"]})
    with pytest.raises(SpecError, match="duration_s: 1.5 is longer than interval_s 1"):
        parse_nemesis({"interval_s": [1, 2], "duration_s": 1.5, "faults": ["kill"]})


def test_an_experiment_may_run_several_schedules_side_by_side():
    import yaml

    from chaos.run import build_schedule
    exp = parse_experiment(yaml.safe_load("""
title: two schedules
nemesis:
  - {interval_s: [1, 2], duration_s: 1, faults: [{f: kill, target: leader-of}]}
  - {interval_s: 9, duration_s: 3, start_after_s: 5, faults: [{f: kill, target: coordinator}]}
"""))
    assert len(exp.nemeses) == 2 and exp.nemesis == exp.nemeses[0]
    ops = build_schedule(exp, seed=3, duration_s=30)
    kills = [op for _, op in ops if op["f"] == "kill"]
    assert {op["value"]["target"] for op in kills} == {"leader-of", "coordinator"}
    assert len({op["fault_id"] for op in kills}) == len(kills)  # ids differ across schedules
    heals = [(t, op) for t, op in ops if op["f"] == "heal" and "recovers" not in op]
    assert len(heals) == 1 and heals[0] == ops[-1]  # one final heal, after both schedules
    coord = [t for t, op in ops if op["f"] == "kill" and op["value"]["target"] == "coordinator"]
    leader = [t for t, op in ops if op["f"] == "kill" and op["value"]["target"] == "leader-of"]
    assert any(c < t < c + 3 for c in coord for t in leader)  # leader kills while the coordinator is down
    with pytest.raises(ExperimentError, match=r"nemesis\[1\].faults\[0\].f: unknown fault 'nap'"):
        parse_experiment({"title": "x", "nemesis": [{"faults": ["kill"]}, {"faults": ["nap"]}]})
