"""A group member in its own process: the runner's kill is a real SIGKILL, a close is polite."""
from __future__ import annotations

import signal

import psutil

from chaos.workloads.group_members import GroupMembersWorkload


def _client(tmp_path, worker=0):
    w = GroupMembersWorkload({"group": "g", "static_members": 1, "log_dir": str(tmp_path)}, [("t0", 2)],
                             concurrency=2)
    # Nothing listens on port 1: subscribing is local, so the member process starts and answers.
    return w.client("127.0.0.1:1", {}, {"session.timeout.ms": 3000, "heartbeat.interval.ms": 500}, worker)


def test_the_crash_op_sigkills_the_member_process_and_records_what_it_was(tmp_path):
    c = _client(tmp_path)
    try:
        assert c.invoke("subscribe", ["t0/0", "t0/1"], {}).type == "ok"
        proc = c.member.proc
        assert psutil.Process(proc.pid).is_running() and proc.pid != psutil.Process().pid
        out = c.invoke("crash", None, {})
        assert (out.type, out.error) == ("info", "crash")
        assert out.extra["kill"] == "SIGKILL" and out.extra["pid"] == proc.pid
        assert out.extra["group_instance_id"] == "g-w0-1" and out.extra["assignment"] == []
        assert proc.returncode == -signal.SIGKILL  # killed, not exited: no LeaveGroup could be sent
        assert c.member is None
        assert c.invoke("commit", {"t0/0": 1}, {}).type == "fail"  # no member: nothing was sent
        assert c.invoke("subscribe", ["t0/0"], {}).type == "ok" and c.member.proc.pid != proc.pid
    finally:
        c.close()
    assert (tmp_path / "group-members-0.log").exists()


def test_close_stops_the_member_process(tmp_path):
    c = _client(tmp_path, worker=1)
    assert c.invoke("subscribe", ["t0/0"], {}).type == "ok"
    proc = c.member.proc
    c.close()
    assert proc.poll() is not None and c.member is None
