"""Issue 10: the brokerlab pytest plugin, used from a separate project that only has brokerlab installed.

Each test writes a tiny project into a temp dir and runs `python -m pytest` on it in a subprocess with
this interpreter. TMPDIR points into the temp dir, so every node the inner run starts has that path in
its command line: after the run, no process may carry it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from node.pids import alive as _alive
from tests.helpers import wait_until

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "test_my_app.py")

SESSION_TESTS = '''
import pytest
from client import Producer

seen = {}


def test_first_gets_a_running_cluster_and_breaks_it(brokerlab_cluster):
    seen["bootstrap"] = brokerlab_cluster.bootstrap_servers
    assert brokerlab_cluster.nodes == ["coordinator", "broker-1", "broker-2", "broker-3"]
    brokerlab_cluster.kill("broker-2")
    brokerlab_cluster.partition(["broker-3"])


def test_second_shares_the_session_cluster_restored(brokerlab_cluster):
    assert brokerlab_cluster.bootstrap_servers == seen["bootstrap"]
    assert all(brokerlab_cluster.state(n) == "running" for n in brokerlab_cluster.nodes)
    assert not any(brokerlab_cluster.chaos.faults(n).rules for n in brokerlab_cluster.nodes)
    brokerlab_cluster.create_topic("t2", replication_factor=3)
    with Producer({"bootstrap.servers": brokerlab_cluster.bootstrap_servers}) as p:
        assert p.send("t2", b"v", partition=0).get(10).offset == 0


@pytest.mark.brokerlab_fresh(brokers=1)
def test_marked_fresh_gets_its_own_cluster(brokerlab_cluster):
    assert brokerlab_cluster.bootstrap_servers != seen["bootstrap"]
    assert brokerlab_cluster.brokers == ["broker-1"]


@pytest.mark.brokerlab_fresh(brokers=1, configs={"offsets.topic.replication.factor": 1}, security="SASL_SSL")
def test_marked_fresh_takes_security(brokerlab_cluster):
    brokerlab_cluster.create_user("alice", "alice-secret")
    with Producer({**brokerlab_cluster.client_config("alice", "alice-secret"), "acks": "all"}) as p:
        assert p.send("secured", b"v", partition=0).get(30).offset == 0
'''

FAILING_TEST = '''
def test_fails_with_node_logs(brokerlab_cluster):
    brokerlab_cluster.create_topic("doomed", replication_factor=1)
    assert brokerlab_cluster.leader("doomed", 0) == "broker-99"
'''

HANGING_TEST = '''
import json
import threading


def test_hangs_until_interrupted(brokerlab_cluster):
    brokerlab_cluster.pause("broker-1")  # a paused node, too, must not outlive the run
    with open({pids_file!r}, "w") as f:
        json.dump(brokerlab_cluster.pids(), f)
    threading.Event().wait(120)
'''


def _project(tmp_path, files: dict[str, str]) -> str:
    proj = tmp_path / "myproject"
    proj.mkdir()
    (proj / "pytest.ini").write_text("[pytest]\n")  # pins the rootdir here, away from brokerlab's own
    for name, text in files.items():
        (proj / name).write_text(text)
    (tmp_path / "tmp").mkdir()
    return str(proj)


def _env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k != "PYTHONPATH"}
    env["TMPDIR"] = str(tmp_path / "tmp")
    return env


def _pytest(tmp_path, proj: str, *args: str, timeout_s: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=proj,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=timeout_s, check=False)


def _node_processes(tmp_path) -> list[psutil.Process]:
    mark = str(tmp_path / "tmp")
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.info["cmdline"] and any(mark in a for a in p.info["cmdline"]) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


@pytest.fixture
def no_leftovers(tmp_path):
    yield
    try:
        wait_until(lambda: not _node_processes(tmp_path), 20, what="every node process of the inner run to exit")
    finally:
        for p in _node_processes(tmp_path):  # never leak them into the rest of the suite
            p.kill()


def test_a_separate_project_uses_the_fixture_and_the_example_passes(tmp_path, no_leftovers):
    with open(EXAMPLE) as f:
        example = f.read()
    proj = _project(tmp_path, {"test_my_app.py": example, "test_session.py": SESSION_TESTS})
    r = _pytest(tmp_path, proj)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 passed" in r.stdout
    assert not os.listdir(tmp_path / "tmp"), "the clusters' temp dirs should be gone"


def test_a_failing_test_gets_the_node_logs_and_keep_logs_keeps_them(tmp_path, no_leftovers):
    proj = _project(tmp_path, {"test_fail.py": FAILING_TEST})
    r = _pytest(tmp_path, proj, "--brokerlab-brokers", "1", "--brokerlab-keep-logs")
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert "brokerlab node logs (call)" in out
    assert "=== coordinator ===" in out and "=== broker-1 ===" in out
    assert "Created topic doomed" in out  # what the coordinator logged during the test
    kept = [line.split("node logs kept in ", 1)[1].strip() for line in out.splitlines()
            if "node logs kept in " in line]
    assert len(kept) == 1 and kept[0].startswith(str(tmp_path / "tmp"))
    assert sorted(os.listdir(kept[0])) == ["broker-1.log", "coordinator.log"]
    shutil.rmtree(os.path.dirname(kept[0]))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_no_node_survives_an_interrupted_run(tmp_path, no_leftovers, sig):
    pids_file = str(tmp_path / "pids.json")
    proj = _project(tmp_path, {"test_hang.py": textwrap.dedent(HANGING_TEST).format(pids_file=pids_file)})
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--brokerlab-brokers",
                             "2"], cwd=proj, env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: os.path.exists(pids_file) and os.path.getsize(pids_file) > 0, 60,
                   what="the inner test to start its cluster")
        with open(pids_file) as f:
            pids = json.load(f)
        assert len(pids) == 3
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in out, out
    # SIGINT: the fixture's teardown stops the nodes. SIGKILL: running nodes see their parent gone and
    # exit; the reaper resumes and stops the paused one and removes the data dir.
    wait_until(lambda: not any(_alive(p) for p in pids.values()), 20, what="the nodes to exit")
    wait_until(lambda: not os.listdir(tmp_path / "tmp"), 20, what="the temporary data dir to go")
