"""Consumer groups on a real cluster: ownership, failures, rebalance protocols, commits, tooling.

Members that must be killed or stalled run as separate processes
(group_worker.py) and report their listener calls and records as JSON lines.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from client import Consumer, Producer
from client.admin import Admin
from client.common.types import OffsetAndMetadata, TopicPartition
from tests.helpers import wait_until

WORKER = str(Path(__file__).with_name("group_worker.py"))


class Workers:
    def __init__(self, tmp_path, bootstrap: str, group: str, topic: str):
        self.tmp, self.bootstrap, self.group, self.topic = tmp_path, bootstrap, group, topic
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self, *flags: str, **props) -> int:
        i = len(self.procs)
        out = self.tmp / f"worker-{i}.jsonl"
        with open(self.tmp / f"worker-{i}.log", "w") as logf:  # the worker keeps its own copy of the fd
            p = subprocess.Popen([sys.executable, WORKER, "--bootstrap", self.bootstrap, "--group", self.group,
                                  "--topic", self.topic, "--out", str(out), "--props", json.dumps(props), *flags],
                                 stdout=logf, stderr=subprocess.STDOUT)
        self.procs.append(p)
        self.logs.append(out)
        return i

    def events(self, i: int) -> list[dict]:
        if not self.logs[i].exists():
            return []
        return [json.loads(line) for line in self.logs[i].read_text().splitlines() if line.strip()]

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(10)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


@pytest.fixture
def workers(tmp_path, shared_cluster, request):
    made = []

    def make(group: str, topic: str) -> Workers:
        w = Workers(tmp_path, shared_cluster.bootstrap_servers, group, topic)
        made.append(w)
        return w
    yield make
    for w in made:
        w.stop_all()


def _topic(cluster, name: str, partitions: int, records: int = 0) -> None:
    with Admin({"bootstrap.servers": cluster.bootstrap_servers}) as a:
        a.create_topic(name, partitions, 3)
    if records:
        p = Producer({"bootstrap.servers": cluster.bootstrap_servers, "acks": "all"})
        for i in range(records):
            p.send(name, value=str(i).encode(), partition=i % partitions)
        p.flush()
        p.close()


def _members(cluster, group: str):
    with Admin({"bootstrap.servers": cluster.bootstrap_servers}) as a:
        return a.describe_consumer_groups([group])[group]


def _stable_with(cluster, group: str, n: int, partitions: int):
    """The group's description once Stable with n members owning every partition exactly once."""
    def check():
        d = _members(cluster, group)
        owned = [tp.partition for m in d.members for tp in m.assignment]
        if d.state == "Stable" and len(d.members) == n and sorted(owned) == list(range(partitions)):
            return d
        return None
    return check


def _logged_as_described(cluster, w: Workers, group: str, n: int, partitions: int, since: list[int] | None = None):
    """Once the group is Stable with n members owning every partition and each of the n workers has
    logged (its latest `assigned` event, after event number since[i]) exactly what the coordinator
    says it owns: {worker: tps}. The coordinator answers SyncGroup before the member's listener runs,
    so the group can be Stable while a worker has not yet logged its assignment."""
    def check():
        d = _stable_with(cluster, group, n, partitions)()
        if d is None:
            return None
        owned = {m.member_id: sorted(tp.partition for tp in m.assignment) for m in d.members}
        latest = {}
        for i in range(n):
            assigned = [e for e in w.events(i)[since[i] if since and i < len(since) else 0:]
                        if e["ev"] == "assigned"]
            if not assigned or owned.get(assigned[-1]["member"]) != assigned[-1]["tps"]:
                return None
            latest[i] = assigned[-1]["tps"]
        return latest
    return check


def _assert_disjoint_per_generation(w: Workers, n_workers: int) -> None:
    by_gen: dict[int, dict[int, set]] = {}
    for i in range(n_workers):
        for ev in w.events(i):
            if ev["ev"] == "assigned":
                by_gen.setdefault(ev["gen"], {})[i] = set(ev["tps"])
    for gen, owners in by_gen.items():
        seen: set = set()
        for tps in owners.values():
            assert not (seen & tps), f"generation {gen}: a partition is owned twice: {owners}"
            seen |= tps


def test_ownership_kill_and_poll_timeout(shared_cluster, workers):
    _topic(shared_cluster, "g-own", 6)
    w = workers("g-own", "g-own")
    for _ in range(3):
        w.start(**{"partition.assignment.strategy": "range"})
    d = wait_until(_stable_with(shared_cluster, "g-own", 3, 6), 30, what="3 members owning 6 partitions")
    assert sorted(len(m.assignment) for m in d.members) == [2, 2, 2]

    w.kill(0)  # SIGKILL: no LeaveGroup, only the session timeout notices
    wait_until(_stable_with(shared_cluster, "g-own", 2, 6), 30, what="the killed member's partitions to move")

    # A member that stops polling leaves after max.poll.interval.ms although its heartbeats go on.
    w.start("--stall-after-assign", **{"partition.assignment.strategy": "range", "max.poll.interval.ms": 3000})
    wait_until(lambda: any(e["ev"] == "stalling" for e in w.events(3)), 30, what="the 4th member to stall")
    wait_until(_stable_with(shared_cluster, "g-own", 2, 6), 30, what="the stalled member to be removed")
    assert w.procs[3].poll() is None, "the stalled member's process is still alive"
    _assert_disjoint_per_generation(w, 4)


@pytest.mark.parametrize("strategy", ["sticky", "cooperative-sticky"])
def test_fourth_member_revocations(shared_cluster, workers, strategy):
    group = f"g-rev-{strategy}"
    _topic(shared_cluster, group, 6)
    w = workers(group, group)
    for _ in range(3):
        w.start(**{"partition.assignment.strategy": strategy})
    before = wait_until(_logged_as_described(shared_cluster, w, group, 3, 6), 30,
                        what="3 stable members, each having logged its assignment")
    marks = [len(w.events(i)) for i in range(3)]
    w.start(**{"partition.assignment.strategy": strategy})
    # since=marks: a member that keeps the same partitions must still have logged the new generation
    after = wait_until(_logged_as_described(shared_cluster, w, group, 4, 6, since=marks), 30,
                       what="4 stable members, each having logged its assignment")
    revoked = {i: sorted(p for e in w.events(i)[marks[i]:] if e["ev"] == "revoked" for _, p in e["tps"])
               for i in range(3)}
    if strategy == "sticky":
        assert revoked == {i: sorted(before[i]) for i in range(3)}, "eager revokes everything owned"
    else:
        # Sticky balance 2,2,1,1: the new member takes one partition; only that one is revoked.
        moved = sorted(p for i in range(3) for p in revoked[i])
        assert moved == sorted(after[3]) and len(moved) == 1, f"only moved partitions are revoked: {revoked}"
        for i in range(3):
            assert set(before[i]) - set(revoked[i]) <= set(after[i]), "kept partitions were never revoked"
    _assert_disjoint_per_generation(w, 4)


def test_at_least_once_with_commit_sync_and_killed_consumer(shared_cluster, workers):
    n = 300
    _topic(shared_cluster, "g-alo", 3, records=n)
    w = workers("g-alo", "g-alo")
    props = {"enable.auto.commit": False, "max.poll.records": 10}
    w.start("--commit-sync", "--process-ms", "20", **props)
    wait_until(lambda: sum(e["ev"] == "rec" for e in w.events(0)) >= 60, 30, what="the first consumer to be mid-stream")
    w.kill(0)
    w.start("--commit-sync", **props)

    def seen():
        return {(e["p"], e["o"]) for i in range(2) for e in w.events(i) if e["ev"] == "rec"}
    wait_until(lambda: len(seen()) == n, 60, what="every record to be processed")
    assert seen() == {(i % 3, i // 3) for i in range(n)}


def test_committed_offsets_survive_coordinator_restart(cluster):
    _topic(cluster, "g-dur", 2, records=10)
    props = {"bootstrap.servers": cluster.bootstrap_servers, "group.id": "g-dur", "enable.auto.commit": False}
    tps = [TopicPartition("g-dur", 0), TopicPartition("g-dur", 1)]
    with Consumer(props) as c:
        c.assign(tps)
        c.commit_sync({tps[0]: OffsetAndMetadata(3, "m0"), tps[1]: OffsetAndMetadata(5, "m1")})
    cluster.coordinator.kill()
    cluster.coordinator.start()
    cluster.wait_ready()
    with Consumer(props) as c:
        got = wait_until(lambda: c.committed(tps), 30, what="committed offsets after the restart")
    assert {tp: (om.offset, om.metadata) for tp, om in got.items()} == {tps[0]: (3, "m0"), tps[1]: (5, "m1")}


def _cli(*args):
    from brokerlab_cli import main
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_groups_cli_lag_and_reset(shared_cluster):
    bs = shared_cluster.bootstrap_servers
    _topic(shared_cluster, "g-cli", 2, records=40)
    props = {"bootstrap.servers": bs, "group.id": "g-cli", "enable.auto.commit": False,
             "auto.offset.reset": "earliest", "session.timeout.ms": 3000, "heartbeat.interval.ms": 300}
    c = Consumer(props)
    try:
        c.subscribe(["g-cli"])
        wait_until(lambda: c.poll(200) is not None and len(c.assignment()) == 2, 30, what="assignment")
        c.commit_sync({TopicPartition("g-cli", 0): OffsetAndMetadata(5), TopicPartition("g-cli", 1): 12})

        r = _cli("groups", "--bootstrap-server", bs, "--list")
        assert "g-cli" in r.output.split()
        r = _cli("groups", "--bootstrap-server", bs, "--describe", "--group", "g-cli")
        assert r.exit_code == 0, r.output
        rows = [line.split() for line in r.output.splitlines() if line.startswith("g-cli ")]
        table = {int(row[2]): row for row in rows}
        assert table[0][3:6] == ["5", "20", "15"] and table[1][3:6] == ["12", "20", "8"], r.output
        assert table[0][6] == c.group_metadata().member_id
        r = _cli("groups", "--bootstrap-server", bs, "--describe", "--group", "g-cli", "--state")
        assert "Stable" in r.output and "range" in r.output, r.output

        r = _cli("groups", "--bootstrap-server", bs, "--reset-offsets", "--group", "g-cli", "--topic", "g-cli",
                 "--to-earliest", "--dry-run")
        assert r.exit_code == 0 and "NEW-OFFSET" in r.output, r.output
        r = _cli("groups", "--bootstrap-server", bs, "--reset-offsets", "--group", "g-cli", "--topic", "g-cli",
                 "--to-earliest", "--execute")
        assert r.exit_code == 1 and "inactive" in r.output, r.output
        assert c.committed(TopicPartition("g-cli", 0)).offset == 5, "the refused reset changed nothing"
    finally:
        c.close()
    r = _cli("groups", "--bootstrap-server", bs, "--reset-offsets", "--group", "g-cli", "--topic", "g-cli:0",
             "--to-earliest", "--execute")
    assert r.exit_code == 0, r.output
    with Admin({"bootstrap.servers": bs}) as a:
        got = a.list_consumer_group_offsets("g-cli")
    assert got[TopicPartition("g-cli", 0)].offset == 0 and got[TopicPartition("g-cli", 1)].offset == 12
    r = _cli("groups", "--bootstrap-server", bs, "--delete", "--group", "g-cli")
    assert r.exit_code == 0, r.output
    r = _cli("groups", "--bootstrap-server", bs, "--list")
    assert "g-cli" not in r.output.split()


def test_static_member_restart_keeps_assignment(shared_cluster, workers):
    _topic(shared_cluster, "g-static", 4)
    w = workers("g-static", "g-static")
    props = {"partition.assignment.strategy": "range", "session.timeout.ms": 6000}
    w.start(**props, **{"group.instance.id": "a"})
    w.start(**props, **{"group.instance.id": "b"})
    d = wait_until(_stable_with(shared_cluster, "g-static", 2, 4), 30, what="2 static members")
    before = {m.group_instance_id: sorted(tp.partition for tp in m.assignment) for m in d.members}

    def settled():
        last = [[e for e in w.events(i) if e["ev"] == "assigned"][-1:] for i in range(2)]
        if all(last) and last[0][0]["gen"] == last[1][0]["gen"] and \
                sorted(last[0][0]["tps"] + last[1][0]["tps"]) == [0, 1, 2, 3]:
            return last[0][0]["gen"]
        return None
    gen = wait_until(settled, 20, what="both members to see the same generation")
    mark_b = len(w.events(1))
    w.kill(0)
    w.start(**props, **{"group.instance.id": "a"})
    wait_until(lambda: any(e["ev"] == "assigned" for e in w.events(2)), 30, what="the restarted static member")
    after_ev = [e for e in w.events(2) if e["ev"] == "assigned"][-1]
    assert after_ev["gen"] == gen, "no rebalance: the generation is unchanged"
    assert after_ev["tps"] == before["a"]
    assert not [e for e in w.events(1)[mark_b:] if e["ev"] in ("revoked", "lost")], "b kept its partitions"
