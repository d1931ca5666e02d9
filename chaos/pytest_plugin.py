"""pytest plugin (entry point `pytest11: brokerlab`): a real brokerlab cluster as a fixture.

    def test_orders(brokerlab_cluster):
        brokerlab_cluster.create_topic("orders", replication_factor=3)
        ... brokerlab_cluster.bootstrap_servers ...        # brokerlab's own client (gRPC)
        ... brokerlab_cluster.kafka_bootstrap_servers ...  # any Kafka client (Kafka protocol)

`brokerlab_cluster` is a chaos.LocalCluster. By default one cluster serves the whole session, and
after every test it is restored (network healed, paused nodes resumed, killed ones started), so a
test may break it freely; topics stay, so give each test its own topic names. A test marked
`@pytest.mark.brokerlab_fresh` (optionally `(brokers=1, configs={...}, security="SASL_SSL")`: a secured
cluster, docs/security.md), or every test with
`--brokerlab-fresh`, gets a cluster of its own. When a test fails, what each node logged during
it is added to the test's report. Nothing starts unless a test uses the fixture.

Options: --brokerlab-brokers N, --brokerlab-fresh, --brokerlab-keep-logs (keep the data dir and
node logs of clusters whose tests failed; the paths are printed at the end), --brokerlab-log-lines N.
"""
from __future__ import annotations

import pytest

_ITEM = pytest.StashKey[tuple]()  # item -> (cluster, log positions at the test's start)
_FAILED = pytest.StashKey[bool]()  # item -> a phase of it failed
_STATE = pytest.StashKey["_State"]()


class _State:
    def __init__(self):
        self.session_failed = False
        self.kept: list[str] = []


def pytest_addoption(parser):
    g = parser.getgroup("brokerlab", "brokerlab embedded cluster (brokerlab_cluster fixture)")
    g.addoption("--brokerlab-brokers", type=int, default=3, metavar="N",
                help="brokers in the brokerlab_cluster fixture's cluster (default 3)")
    g.addoption("--brokerlab-fresh", action="store_true",
                help="a fresh brokerlab cluster for every test instead of one per session")
    g.addoption("--brokerlab-keep-logs", action="store_true",
                help="keep the data dir and node logs of brokerlab clusters whose tests failed")
    g.addoption("--brokerlab-network", choices=("edge", "netns"), default="edge",
                help="netns: every node of the clusters in its own network namespace, network faults as "
                     "kernel rules (root; docs/netns.md)")
    g.addoption("--brokerlab-log-lines", type=int, default=200, metavar="N",
                help="lines of each node's log added to a failing test's report (default 200; 0: none)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "brokerlab_fresh(brokers=None, configs=None): give this test a brokerlab cluster of "
                   "its own, started for it and stopped after it")
    config.stash[_STATE] = _State()


def _new_cluster(config, brokers: int | None = None, configs: dict | None = None, security=None):
    from chaos.local_cluster import LocalCluster
    n = brokers if brokers is not None else config.getoption("brokerlab_brokers")
    if n < 1:
        raise pytest.UsageError(f"--brokerlab-brokers must be >= 1, got {n}")
    return LocalCluster(brokers=n, configs=configs, security=security,
                        network=config.getoption("brokerlab_network")).start()


def _finish(config, cluster, failed: bool) -> None:
    keep = failed and config.getoption("brokerlab_keep_logs")
    cluster.keep_data = keep
    cluster.stop()
    if keep:
        config.stash[_STATE].kept.append(cluster.data_dir)


@pytest.fixture(scope="session")
def brokerlab_session_cluster(request):
    """The session's cluster; tests should use brokerlab_cluster, which also restores it after them."""
    cluster = _new_cluster(request.config)
    try:
        yield cluster
    finally:
        _finish(request.config, cluster, request.config.stash[_STATE].session_failed)


@pytest.fixture
def brokerlab_cluster(request):
    """A running chaos.LocalCluster (see the module doc for session vs fresh clusters)."""
    marker = request.node.get_closest_marker("brokerlab_fresh")
    fresh = marker is not None or request.config.getoption("brokerlab_fresh")
    if fresh:
        kwargs = dict(marker.kwargs) if marker is not None else {}
        unknown = set(kwargs) - {"brokers", "configs", "security"}
        if unknown or (marker is not None and marker.args):
            raise TypeError(f"@pytest.mark.brokerlab_fresh takes only brokers=, configs= and security=, got "
                            f"{sorted(unknown) or list(marker.args)}")
        cluster = _new_cluster(request.config, **kwargs)
    else:
        cluster = request.getfixturevalue("brokerlab_session_cluster")
    request.node.stash[_ITEM] = (cluster, cluster.log_positions())
    try:
        yield cluster
    finally:
        failed = request.node.stash.get(_FAILED, False)
        if fresh:
            _finish(request.config, cluster, failed)
        else:
            if failed:
                request.config.stash[_STATE].session_failed = True
            cluster.restore()  # the next test gets a whole cluster, whatever this one did to it


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    entry = item.stash.get(_ITEM, None)
    if entry is None or not rep.failed:
        return
    item.stash[_FAILED] = True
    lines = item.config.getoption("brokerlab_log_lines")
    if lines <= 0:
        return
    cluster, since = entry
    try:
        logs = cluster.logs(since=since, tail_lines=lines)
    except OSError as e:
        rep.sections.append(("brokerlab node logs", f"could not read the node logs: {e}"))
        return
    keep = item.config.getoption("brokerlab_keep_logs")
    where = f"full logs in {cluster.data_dir}/logs" + (
        "" if keep else " (removed when the cluster stops; keep them with --brokerlab-keep-logs)")
    parts = [f"what each node logged during this test (last {lines} lines each); {where}"]
    for name, text in logs.items():
        parts.append(f"=== {name} ===")
        parts.append(text.rstrip("\n") or "(nothing)")
    rep.sections.append((f"brokerlab node logs ({rep.when})", "\n".join(parts)))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    kept = config.stash[_STATE].kept if _STATE in config.stash else []
    if kept:
        terminalreporter.section("brokerlab")
        for d in kept:
            terminalreporter.write_line(f"node logs kept in {d}/logs")
