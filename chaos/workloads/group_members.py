"""The `group-members` workload: the `group` workload with every member in its own OS process,
SIGKILLed right after a commit.

Each worker's consumer-group member runs in a child process (chaos/workloads/member.py), so a kill
is a real SIGKILL: no LeaveGroup, no last commit, only the session timeout tells the coordinator.
Kills are armed by the nemesis schedule (fault `kill-member`, seeded and timed like any fault); the
next worker to finish a `commit` then does a `crash` op that kills its member, recording what it
owned (`assignment`), its `member_id` and `group_instance_id`. Its next process subscribes a fresh
member; half the workers run static members (group.instance.id), each incarnation under a new
instance id, so a killed static member too must expire by session timeout.

Every poll completion carries the member's `assignment`, so the history shows when each partition of
a killed member is owned and polled again by another member: `reassignments` measures it, and the
workload's check names `not-reassigned` when a partition waits longer than session.timeout.ms plus a
rebalance allowance (extended by coordinator outages and later kills, which Kafka also waits for).
"""
from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
from typing import Any

from chaos.workloads import Outcome, key_tp
from chaos.workloads.group import GroupClient, GroupGenerator, GroupWorkload, check_group_commits

__all__ = ["GroupMembersWorkload", "KillAfterCommitGenerator", "MemberProcess", "MemberProcessClient", "reassignments"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NEMESIS_FS = ("kill-member",)


class MemberProcess:
    """The parent's handle on one member process: one command at a time, each answer bounded."""

    def __init__(self, props: dict, log_path: str | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 -- lives with the process
        self.proc = subprocess.Popen([sys.executable, "-m", "chaos.workloads.member"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1, env=env,
                                     start_new_session=True)  # Ctrl-C goes to the runner, which closes it
        self._replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, name=f"member-{self.proc.pid}-reader", daemon=True).start()
        self.assignment: list[str] = []  # as of the last poll answer
        self.positions: dict[str, int] = {}
        self.member_id = ""
        ready = self.call({"props": props}, timeout_s=60.0)  # imports and the consumer's construction
        if ready.get("type") != "ok":
            self.kill()
            raise RuntimeError(f"member process did not start: {ready.get('error')}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._replies.put(json.loads(line))
        self._replies.put(None)  # the process is gone

    def call(self, cmd: dict, timeout_s: float) -> dict:
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
            reply = self._replies.get(timeout=timeout_s)
        except (OSError, ValueError):
            reply = None
        except queue.Empty:
            return {"type": "info", "error": "timeout"}
        if reply is None:
            return {"type": "info", "error": "member-process-exited"}
        if "assignment" in reply:
            self.assignment = reply["assignment"]
            self.positions = reply.get("positions", {})
            self.member_id = reply.get("member_id", self.member_id)
        return reply

    def kill(self) -> None:
        """SIGKILL, and wait for it: the member is gone before the op completes."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._close_pipes()

    def close(self, timeout_s: float = 10.0) -> None:
        """Politely (LeaveGroup); SIGKILL if it does not answer in time."""
        if self.proc.poll() is None:
            self.call({"op": "close"}, timeout_s)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def _close_pipes(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except (OSError, ValueError):
                pass
        if self._log is not subprocess.DEVNULL:
            self._log.close()


class KillAfterCommitGenerator(GroupGenerator):
    """The group generator, plus: once a kill is armed, the next process whose last op was a commit
    crashes (its member is SIGKILLed). Pure but for `arm()`, which the nemesis thread calls."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.armed = False  # set by the nemesis thread, read under the runner's lock
        self._last: dict[Any, str] = {}

    def arm(self) -> None:
        self.armed = True

    def next_op(self, process: Any) -> tuple[str, Any, dict]:
        if self.armed and self._last.get(process) == "commit":
            self.armed = False
            self._last[process] = "crash"
            return "crash", None, {}
        op = super().next_op(process)
        self._last[process] = op[0]
        return op


class MemberProcessClient(GroupClient):
    """A producer in this process; the group member in a child process; a plain consumer (no group)
    for the final read, end offsets and positions."""

    def __init__(self, *a, static_id: str | None = None, log_dir: str | None = None,
                 reply_timeout_s: float = 30.0, **kw) -> None:
        super().__init__(*a, **kw)
        self.static_id = static_id  # group.instance.id prefix for static members
        self.incarnation = 0
        self.log_dir = log_dir
        self.reply_timeout_s = reply_timeout_s
        self.member: MemberProcess | None = None

    def open(self) -> MemberProcessClient:
        from client import Consumer, Producer
        self.producer = Producer(dict(self.producer_props))
        self.consumer = Consumer(dict(self.consumer_props))
        return self

    def close(self) -> None:
        self._drop_member(polite=True)
        super().close()

    def _drop_member(self, polite: bool) -> None:
        m, self.member = self.member, None
        if m is not None:
            m.close() if polite else m.kill()

    def _spawn(self) -> MemberProcess:
        props = dict(self.group_props)
        if self.static_id:
            self.incarnation += 1
            props["group.instance.id"] = f"{self.static_id}-{self.incarnation}"
        log = os.path.join(self.log_dir, f"{props['client.id']}.log") if self.log_dir else None
        self.member = MemberProcess(props, log)
        self.member.instance_id = props.get("group.instance.id")
        return self.member

    def prepare(self, f: str, value: Any, extra: dict) -> Any:
        if f != "commit" or self.member is None:
            return value
        return {k: off for k, off in sorted(self.member.positions.items()) if k in self.member.assignment}

    def invoke(self, f: str, value: Any, extra: dict) -> Outcome:
        if f == "crash":
            return self.kill_member()
        if f == "assign":
            self._drop_member(polite=True)
            return self.assign(value, bool(extra.get("seek_to_beginning")))
        if f == "poll" and self.member is None:
            return super(GroupClient, self).poll(value)  # the final read's plain consumer
        if f in ("subscribe", "commit", "committed", "poll") and (self.member is not None or f == "subscribe"):
            return getattr(self, "member_" + f)(value)
        if f in ("commit", "committed"):
            return Outcome("fail", value, "no-member")  # its subscribe failed: nothing was sent
        return super().invoke(f, value, extra)

    def member_subscribe(self, keys: list[str]) -> Outcome:
        self._drop_member(polite=True)
        try:
            m = self._spawn()
        except Exception as e:  # noqa: BLE001 -- a member that cannot start did not subscribe
            return Outcome("fail", keys, type(e).__name__)
        return self._outcome(m.call({"op": "subscribe", "topics": sorted({key_tp(k)[0] for k in keys})},
                                    self.reply_timeout_s), keys)

    def member_poll(self, value: Any) -> Outcome:
        reply = self.member.call({"op": "poll", "timeout_ms": self.poll_ms}, self.reply_timeout_s)
        if reply["type"] != "ok":
            return self._outcome(reply, value)
        return Outcome("ok", [["poll", reply["records"]]], extra={"assignment": reply["assignment"],
                                                                   "member_id": reply["member_id"]})

    def member_commit(self, offsets: dict[str, int]) -> Outcome:
        if not offsets:
            return Outcome("ok", offsets)
        return self._outcome(self.member.call({"op": "commit", "offsets": offsets}, self.reply_timeout_s), offsets)

    def member_committed(self, keys: list[str]) -> Outcome:
        reply = self.member.call({"op": "committed", "keys": keys}, self.reply_timeout_s)
        return self._outcome(reply, keys, reply.get("offsets"))

    def _outcome(self, reply: dict, value: Any, ok_value: Any = None) -> Outcome:
        if reply["type"] == "ok":
            return Outcome("ok", value if ok_value is None else ok_value)
        if reply["type"] == "info":
            self._drop_member(polite=False)  # its state is unknown: the next process starts afresh
        return Outcome(reply["type"], value, reply.get("error"))

    def kill_member(self) -> Outcome:
        m = self.member
        if m is None:
            return Outcome("info", None, "crash")
        extra = {"kill": "SIGKILL", "pid": m.pid, "member_id": m.member_id, "group_instance_id": m.instance_id,
                 "assignment": list(m.assignment)}
        self._drop_member(polite=False)
        return Outcome("info", None, "crash", extra=extra)


class GroupMembersWorkload(GroupWorkload):
    """Experiment section `workload: {name: group-members, concurrency, group, static_members,
    session_timeout_ms, rebalance_allowance_ms, weights, max_sends, poll_ms}`; kills come from
    the nemesis fault `kill-member`."""

    name = "group-members"
    NEMESIS_FS = NEMESIS_FS
    _FIELDS = GroupWorkload._FIELDS | {"static_members", "rebalance_allowance_ms", "log_dir"}

    def __init__(self, spec: dict, topics: list[tuple[str, int]], **kw) -> None:
        spec = dict(spec or {})
        self.static_members = int(spec.pop("static_members", 0))
        self.rebalance_allowance_ms = int(spec.pop("rebalance_allowance_ms", 5000))
        self.log_dir = spec.pop("log_dir", None)
        super().__init__(spec, topics, **kw)
        self.session_timeout_ms = 45000  # Kafka's default; the run passes the consumer config (set_clients)
        self._generators: list[KillAfterCommitGenerator] = []

    def set_clients(self, producer_props: dict, consumer_props: dict) -> None:
        self.session_timeout_ms = int(consumer_props.get("session.timeout.ms", self.session_timeout_ms))

    def generator(self, rng: random.Random) -> KillAfterCommitGenerator:
        g = KillAfterCommitGenerator(self.keys, rng, self.group, weights=self.weights, max_sends=self.max_sends)
        self._generators.append(g)
        return g

    def nemesis(self, op: dict) -> dict:
        """`kill-member`: arms a kill; the next member to finish a commit is SIGKILLed."""
        for g in self._generators:
            g.arm()
        return {**op, "type": "info", "value": {"armed": True}}

    def client(self, bootstrap: str, producer_props: dict, consumer_props: dict, worker: int) -> MemberProcessClient:
        static = f"{self.group}-w{worker}" if worker < self.static_members else None
        return MemberProcessClient(bootstrap, producer_props, consumer_props, group=self.group,
                                   poll_ms=self.poll_ms, client_id=f"{self.name}-{worker}", static_id=static,
                                   log_dir=self.log_dir).open()

    def check(self, history: list[dict]) -> tuple[dict[str, list[dict]], dict]:
        found, stats = check_group_commits(history, self.group)
        rows = reassignments(history, self.session_timeout_ms, self.rebalance_allowance_ms)
        late = [r for r in rows if r["late"]]
        if late:
            found["not-reassigned"] = late
        measured = [r["reassigned_ms"] for r in rows if r["reassigned_ms"] is not None]
        stats.update({"member_kills": sum(op.get("kill") == "SIGKILL" for op in history),
                      "partitions_of_killed": len(rows), "reassigned_ms_max": max(measured, default=None),
                      "not_reassigned": len(late), "session_timeout_ms": self.session_timeout_ms,
                      "rebalance_allowance_ms": self.rebalance_allowance_ms, "reassignments": rows})
        return found, stats


def _coordinator_outages(history: list[dict]) -> list[tuple[int, int]]:
    """[(down_ns, up_ns)] from nemesis kill / stop / pause of the coordinator until its start / resume / heal."""
    out, down = [], None
    for op in history:
        if op.get("process") != "nemesis":
            continue
        nodes = (op.get("value") or {}).get("nodes", []) if isinstance(op.get("value"), dict) else []
        if op["f"] in ("kill", "stop", "pause") and "coordinator" in nodes and down is None:
            down = op["time"]
        elif down is not None and (op["f"] == "heal" and not (op.get("value") or {}).get("of")
                                   or op["f"] in ("start", "resume", "restart") and "coordinator" in nodes):
            out.append((down, op["time"]))
            down = None
    if down is not None:
        out.append((down, history[-1]["time"] if history else down))
    return out


def reassignments(history: list[dict], session_timeout_ms: int, allowance_ms: int) -> list[dict]:
    """One row per (member kill, partition the member owned): how long until another member's poll
    owned it (`reassigned_ms`) and returned records of it (`records_ms`), against the bound
    session.timeout.ms + allowance, extended while the coordinator was down and by later kills (a
    rebalance waits for every member it knows of). `late`: not reassigned by the bound, although the
    run went on past it."""
    end_ns = max((op["time"] for op in history if op.get("process") != "nemesis"
                  and op.get("f") in ("poll", "send", "commit")), default=0)
    outages = _coordinator_outages(history)
    kills = [(i, op) for i, op in enumerate(history) if op.get("f") == "crash" and op.get("type") == "info"
             and op.get("kill") == "SIGKILL"]
    span_ns = (session_timeout_ms + allowance_ms) * 1_000_000
    rows = []
    for n, (i, kill) in enumerate(kills):
        t0 = kill["time"]
        deadline = t0 + span_ns
        changed = True
        while changed:  # outages and later kills inside the window push the bound out
            changed = False
            for down, up in outages:
                if down < deadline and up > t0 and up + span_ns > deadline:
                    deadline, changed = up + span_ns, True
            for _, later in kills[n + 1:]:
                if t0 < later["time"] < deadline and later["time"] + span_ns > deadline:
                    deadline, changed = later["time"] + span_ns, True
        for key in kill.get("assignment") or []:
            owned = records = None
            for op in history[i + 1:]:
                if op.get("f") != "poll" or op.get("type") != "ok" or op.get("process") == kill["process"]:
                    continue
                if key in (op.get("assignment") or ()):
                    owned = owned if owned is not None else op["time"]
                    got = op["value"][0][1].get(key) if op.get("value") else None
                    if got:
                        records = op["time"]
                        break
            reassigned_ms = (owned - t0) // 1_000_000 if owned is not None else None
            rows.append({"kill_index": kill.get("index", i), "time_s": round(t0 / 1e9, 3), "key": key,
                         "member_id": kill.get("member_id"), "group_instance_id": kill.get("group_instance_id"),
                         "reassigned_ms": reassigned_ms,
                         "records_ms": (records - t0) // 1_000_000 if records is not None else None,
                         "bound_ms": (deadline - t0) // 1_000_000,
                         "late": (owned is None and end_ns > deadline) or (owned is not None and owned > deadline)})
    return rows
