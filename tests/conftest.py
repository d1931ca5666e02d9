"""Fixtures that start real multi-process clusters on 127.0.0.1 with free ports and temp dirs."""
from __future__ import annotations

import os
import shutil
import tempfile

import psutil
import pytest

from node.cluster import FAST_CONFIGS, Cluster


def _start_cluster(tmp: str, brokers: int = 3, configs: dict | None = None) -> Cluster:
    cfg = dict(FAST_CONFIGS)
    cfg.update(configs or {})
    return Cluster(tmp, brokers=brokers, port=0, configs=cfg).start()


@pytest.fixture(scope="session")
def shared_cluster():
    """One 3-broker cluster for tests that do not break it."""
    tmp = tempfile.mkdtemp(prefix="brokerlab-shared-")
    c = _start_cluster(tmp)
    yield c
    c.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def cluster_factory():
    """Starts fresh clusters for destructive tests; all are stopped at teardown."""
    made: list[tuple[Cluster, str]] = []

    def make(brokers: int = 3, configs: dict | None = None) -> Cluster:
        tmp = tempfile.mkdtemp(prefix="brokerlab-test-")
        c = _start_cluster(tmp, brokers, configs)
        made.append((c, tmp))
        return c

    yield make
    for c, tmp in made:
        c.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def cluster(cluster_factory):
    return cluster_factory()


@pytest.fixture
def broker(tmp_path):
    """make(broker_id=1, **kw): in-process Brokers over fakes (tests/broker_driver.py), stopped at teardown."""
    from tests.broker_driver import make_broker
    made = []

    def make(broker_id=1, **kw):
        b = make_broker(tmp_path, broker_id, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def kafka_cluster(cluster_factory, tmp_path):
    """A fresh cluster and a ChaosController that knows its agents: (cluster, controller)."""
    from chaos.controller import ChaosController
    c = cluster_factory()
    ctl = ChaosController(c.bootstrap_servers, state_path=os.path.join(tmp_path, "chaos-agents.json"),
                          control_token=c.control_token)
    ctl.discover()
    yield c, ctl
    ctl.close()


def pytest_sessionfinish(session, exitstatus):
    """No node process may outlive the test session."""
    me = psutil.Process(os.getpid())
    leftovers = [p for p in me.children(recursive=True) if "brokerlab_cli" in " ".join(_cmd(p))]
    for p in leftovers:
        try:
            p.kill()
        except psutil.Error:
            pass
    if leftovers:
        print(f"\nkilled {len(leftovers)} leaked node process(es)")


def _cmd(p):
    try:
        return p.cmdline()
    except psutil.Error:
        return []


@pytest.fixture(scope="session", autouse=True)
def no_netns_leftovers():
    """Issue 15: after the suite no namespace, veth, bridge or nftables rule made by brokerlab remains:
    none named for this run's processes, none whose owner died, and no brokerlab table on this host."""
    yield
    import shutil
    import subprocess

    if os.geteuid() != 0 or shutil.which("ip") is None:
        return  # nothing of the kind could have been made
    from node import netns
    mine = netns.owned_by(os.getpid())
    dead_ns, dead_links = netns.leftovers(netns.namespaces(), netns.links(),
                                          lambda pid: os.path.exists(f"/proc/{pid}"))
    host_table = ""
    if shutil.which("nft"):
        host_table = subprocess.run(["nft", "list", "table", "inet", "brokerlab"], capture_output=True,
                                    text=True, check=False).stdout
    left = mine["namespaces"] + mine["links"] + dead_ns + dead_links
    assert not left and not host_table, f"brokerlab left network objects behind: {left} {host_table}"
