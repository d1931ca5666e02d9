"""LocalCluster: a real brokerlab cluster for your own tests, run from Python.

    from chaos import LocalCluster

    with LocalCluster(brokers=3) as cluster:
        cluster.create_topic("orders", partitions=1, replication_factor=3)
        ...  # Producer({"bootstrap.servers": cluster.bootstrap_servers}) ...
        cluster.kill(cluster.leader("orders", 0))
        cluster.wait_for_leader("orders", 0)

A coordinator and N brokers, each a process under an in-process agent (node.agent.Agent), on free
loopback ports, in a temporary data dir that is removed on exit. Every node is stopped when the
`with` block ends, also on an exception or Ctrl-C; an atexit hook and SIGTERM/SIGHUP handlers stop
clusters left open; each node exits by itself when this process dies (BROKERLAB_PARENT_PID); and a
small reaper process (chaos.reaper) stops paused ones and removes the temporary data dir then, so
even a SIGKILLed test run leaves nothing behind.
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Self

import grpc

from chaos.controller import COORDINATOR, ChaosController, NodeInfo
from chaos.reaper import PARENT_PID_ENV
from node.agent import Agent, FaultsNotPushed
from node.cluster import FAST_CONFIGS, Cluster, with_internal_topic_configs

log = logging.getLogger(__name__)


class LocalCluster:
    def __init__(self, brokers: int = 3, configs: dict | None = None, *, data_dir: str | None = None,
                 fast: bool = True, host: str = "127.0.0.1", keep_data: bool = False,
                 startup_timeout_s: float = 60.0, security=None, network: str = "edge"):
        """brokers: how many brokers. configs: broker/topic defaults as Kafka's dotted keys (on top of
        FAST_CONFIGS when fast=True: failure detection in about a second instead of Kafka's defaults).
        data_dir: where node data and logs go (default: a new temporary dir, removed on stop unless
        keep_data). security: None (off), a protocol name ("SASL_SSL", "SSL", "SASL_PLAINTEXT") or a
        node.security.settings.Security (users, ACLs, super users); see docs/security.md.
        network: "edge", or "netns": every node in a network namespace of its own, network faults as
        kernel rules (root or CAP_NET_ADMIN; docs/netns.md)."""
        if network not in ("edge", "netns"):
            raise ValueError(f"network must be edge or netns, got {network!r}")
        self.network = network
        if not isinstance(brokers, int) or brokers < 1:
            raise ValueError(f"brokers must be an integer >= 1, got {brokers!r}")
        self.n_brokers = brokers
        configs = {**(FAST_CONFIGS if fast else {}), **(configs or {})}
        # A bad key fails here, naming it, not in a node's log; the internal topics' replication factors
        # default to min(3, brokers).
        self.configs = with_internal_topic_configs(configs, brokers)
        from node.security.settings import Security
        self.security = Security.coerce(security)
        self.host = host
        self.keep_data = keep_data
        self.startup_timeout_s = startup_timeout_s
        self._own_dir = data_dir is None
        self.data_dir = os.path.abspath(data_dir) if data_dir else None
        self._cluster: Cluster | None = None
        self._log_paths: dict[str, str] = {}  # kept after stop: logs() still reads a kept data dir
        self._chaos: ChaosController | None = None
        self._reaper: subprocess.Popen | None = None  # chaos.reaper: cleans up if this process dies
        self._lock = threading.RLock()

    # -- lifecycle -------------------------------------------------------
    def start(self, node: str | None = None, timeout_s: float = 30.0) -> LocalCluster:
        """start(): the whole cluster, ready when it returns. start(node): one stopped or killed node,
        back in the cluster (a broker registered and unfenced) when it returns."""
        if node is not None:
            self._agent(node).start()
            self._c().wait_ready(timeout_s)
            return self
        with self._lock:
            if self._cluster is not None:
                raise RuntimeError("this LocalCluster is already started")
            if self.data_dir is None:
                self.data_dir = tempfile.mkdtemp(prefix="brokerlab-local-")
            _register(self)
            try:
                self._start_reaper()
                self._start_nodes()
            except BaseException as e:
                if not isinstance(e, KeyboardInterrupt):
                    e.add_note(_format_logs(self.logs(tail_lines=30), "last lines of each node's log"))
                self.stop()
                raise
        return self

    def _start_nodes(self) -> None:
        if self.network == "netns":
            self._start_netns()
            return
        # Ports chosen up front let every node start at once: a broker need not wait for the
        # coordinator to report its port. A port taken meanwhile by someone else fails the start;
        # one retry with new ports covers that rare race.
        for attempt in (1, 2):
            ports = _free_ports(self.n_brokers + 1, self.host)
            c = Cluster(self.data_dir, brokers=self.n_brokers, host=self.host, configs=self.configs,
                        env={PARENT_PID_ENV: str(os.getpid())}, security=self.security)
            c.write_client_props()
            self._cluster = c
            logs = os.path.join(self.data_dir, "logs")
            self._log_paths = {n: os.path.join(logs, f"{n}.log")
                               for n in [COORDINATOR] + [f"broker-{i}" for i in range(1, self.n_brokers + 1)]}
            os.makedirs(logs, exist_ok=True)
            coordinator = f"{self.host}:{ports[0]}"
            for i, port in enumerate(ports):
                name = COORDINATOR if i == 0 else f"broker-{i}"
                c.agents[name] = Agent(name, "coordinator" if i == 0 else "broker", node_id=i, host=self.host,
                                       port=port, data_dir=os.path.join(self.data_dir, name),
                                       coordinator=coordinator if i else "", configs=c.configs,
                                       log_path=os.path.join(logs, f"{name}.log"), env=c.env,
                                       control_token=c.ensure_control_token())
            try:
                for a in c.agents.values():
                    a.start()
                c.wait_ready(self.startup_timeout_s)
                c.create_users()
                break
            except RuntimeError as e:  # a node exited during startup
                text = self._all_logs_text().lower()
                if attempt == 2 or not ("could not bind" in text or "address already in use" in text):
                    raise
                log.info("a pre-chosen port was taken (%s); starting again with new ports", e)
                _stop_all_at_once(c, kill=True)
                for name in c.agents:  # the coordinator must not remember the old addresses
                    shutil.rmtree(os.path.join(self.data_dir, name), ignore_errors=True)
        self._chaos = ChaosController(self.bootstrap_servers,
                                      state_path=os.path.join(self.data_dir, "chaos-agents.json"),
                                      control_token=c.control_token, channel_credentials=c.channel_credentials())
        self._chaos.nodes = {n: NodeInfo(n, a.address, a.agent_address) for n, a in c.agents.items()}

    def _start_netns(self) -> None:
        from node.netns_cluster import NetnsCluster
        if self.security is not None:
            raise ValueError("network netns does not take security settings yet")
        c = NetnsCluster(self.data_dir, self.n_brokers, self.configs)
        self._cluster = c
        self._log_paths = {n: os.path.join(self.data_dir, "logs", f"{n}.log")
                           for n in [COORDINATOR] + [f"broker-{i}" for i in range(1, self.n_brokers + 1)]}
        c.start(self.startup_timeout_s)
        self._chaos = ChaosController(c.bootstrap_servers, state_path=os.path.join(self.data_dir, "chaos-agents.json"),
                                      control_token=c.control_token)
        self._chaos.nodes = {n: NodeInfo(n, a.address, a.agent_address) for n, a in c.agents.items()}

    def _start_reaper(self) -> None:
        remove = self.data_dir if self._own_dir and not self.keep_data else ""
        self._reaper = subprocess.Popen([sys.executable, "-m", "chaos.reaper", str(os.getpid()), remove],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self, node: str | None = None) -> None:
        """stop(): every node, and the temporary data dir. stop(node): one node, gracefully (SIGTERM)."""
        if node is not None:
            self._agent(node).stop()
            return
        with self._lock:
            c, self._cluster = self._cluster, None
            chaos, self._chaos = self._chaos, None
            _unregister(self)
            if chaos is not None:
                chaos.close()
            remove = self._own_dir and not self.keep_data and self.data_dir
            if c is not None:
                # Data that is about to be deleted needs no clean shutdown: SIGKILL is instant.
                _stop_all_at_once(c, kill=bool(remove))
            reaper, self._reaper = self._reaper, None
            if reaper is not None:
                reaper.terminate()
                reaper.wait(5)
            if remove:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    close = stop

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._cluster is not None

    # -- what is there ---------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        return self._c().bootstrap_servers

    @property
    def kafka_bootstrap_servers(self) -> str:
        """The coordinator's Kafka-protocol address, for Kafka clients (kafka-python, confluent-kafka,
        aiokafka, kcat): `KafkaProducer(bootstrap_servers=cluster.kafka_bootstrap_servers)`."""
        return self._c().kafka_bootstrap_servers

    @property
    def nodes(self) -> list[str]:
        """["coordinator", "broker-1", ..., "broker-N"]."""
        return self._c().node_names()

    @property
    def brokers(self) -> list[str]:
        return self._c().broker_names()

    def address(self, node: str) -> str:
        return self._agent(node).address

    def metrics_url(self, node: str) -> str:
        """The node's Prometheus endpoint, e.g. http://127.0.0.1:40123/metrics (docs/metrics.md)."""
        return self._agent(node).metrics_url

    @property
    def metrics_urls(self) -> dict[str, str]:
        """Every node's Prometheus endpoint: {"coordinator": url, "broker-1": url, ...}."""
        return {n: a.metrics_url for n, a in self._c().agents.items()}

    def state(self, node: str) -> str:
        """running, paused, killed, stopped or exited (crashed)."""
        return self._agent(node).status().state

    def pids(self) -> dict[str, int]:
        """The process id of every node process that is alive."""
        out = {}
        for n, a in self._c().agents.items():
            if self.network == "netns":  # the node runs under its agent, in its namespace
                st = a.status()
                if st.state in ("running", "paused") and st.pid:
                    out[n] = st.pid
                continue
            p = a.proc
            if p is not None and p.poll() is None:
                out[n] = p.pid
        return out

    def metadata(self):
        """The controller's MetadataResponse (brokers, topics, partitions with leader and ISR)."""
        return self._c().metadata()

    # -- security (node/security; docs/security.md) -------------------------
    def security_admin(self):
        """A SecurityAdmin for users and ACLs (create_user, delete_user, create_acls, ...); close it after use."""
        return self._c().security_admin()

    def create_user(self, user: str, password: str) -> None:
        """A SCRAM-SHA-256 and -512 credential for `user`, in force on every node when this returns."""
        with self.security_admin() as admin:
            admin.create_user(user, password)

    def client_config(self, user: str | None = None, password: str | None = None,
                      mechanism: str = "SCRAM-SHA-512") -> dict:
        """bootstrap.servers (gRPC) plus the security settings brokerlab's own client needs here."""
        props = {"bootstrap.servers": self.bootstrap_servers}
        if self.security is not None:
            props.update(self.security.client_props(self.data_dir, user, password, mechanism))
            if user is None and self.security.sasl:  # the cluster's own tools: TLS only, the control token
                props["security.protocol"] = "SSL" if self.security.tls else "PLAINTEXT"
                props["emu.control.token"] = self._c().ensure_control_token()
        return props

    def kafka_client_config(self, user: str | None = None, password: str | None = None,
                            mechanism: str = "SCRAM-SHA-512") -> dict:
        """bootstrap.servers plus the security settings a Kafka client needs here (librdkafka's keys)."""
        props = {"bootstrap.servers": self.kafka_bootstrap_servers}
        if self.security is not None:
            props.update(self.security.client_props(self.data_dir, user, password, mechanism))
        return props

    # -- topics ----------------------------------------------------------
    def create_topic(self, name: str, partitions: int = 1, replication_factor: int | None = None,
                     configs: dict | None = None) -> None:
        """Creates the topic and returns once every partition has a leader. replication_factor
        defaults to min(3, brokers)."""
        from client import Admin
        rf = replication_factor if replication_factor is not None else min(3, self.n_brokers)
        with Admin(self.client_config()) as admin:
            admin.create_topic(name, partitions, rf, configs)

    def _partition(self, topic: str, partition: int):
        md = self.metadata()
        for t in md.topics:
            if t.name == topic:
                for p in t.partitions:
                    if p.partition == partition:
                        return p
                raise ValueError(f"topic '{topic}' has no partition {partition} (it has {len(t.partitions)})")
        raise ValueError(f"unknown topic '{topic}'")

    def leader(self, topic: str, partition: int = 0) -> str | None:
        """The node name of the partition's leader ("broker-2"), None while it has none."""
        p = self._partition(topic, partition)
        return f"broker-{p.leader}" if p.leader >= 0 else None

    def replicas(self, topic: str, partition: int = 0) -> list[str]:
        return [f"broker-{r}" for r in self._partition(topic, partition).replicas]

    def isr(self, topic: str, partition: int = 0) -> list[str]:
        return sorted(f"broker-{r}" for r in self._partition(topic, partition).isr)

    def wait_for_isr(self, topic: str, partition: int, size: int, timeout: float = 30.0) -> list[str]:
        """Waits until the partition has a leader and exactly `size` replicas in its ISR; returns the ISR."""
        def ok():
            p = self._partition(topic, partition)
            return p.leader >= 0 and len(p.isr) == size
        def what():
            return (f"ISR of {topic}-{partition} to have {size} replicas "
                    f"(now {self.isr(topic, partition)}, leader {self.leader(topic, partition)})")
        self._wait(ok, timeout, what)
        return self.isr(topic, partition)

    def wait_for_leader(self, topic: str, partition: int = 0, timeout: float = 30.0,
                        not_on: str | None = None) -> str:
        """Waits until the partition has a leader (other than `not_on`, e.g. the node just killed)."""
        def ok():
            ld = self.leader(topic, partition)
            return ld is not None and ld != not_on
        self._wait(ok, timeout, lambda: f"a leader for {topic}-{partition}"
                                        + (f" other than {not_on}" if not_on else ""))
        return self.leader(topic, partition)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every running broker is registered and unfenced."""
        self._c().wait_ready(timeout)

    # -- process faults --------------------------------------------------
    def kill(self, node: str) -> None:
        """SIGKILL: no shutdown, what is not on disk (and replicated) is lost. Returns once it is dead."""
        self._agent(node).kill()

    def pause(self, node: str) -> None:
        """SIGSTOP: the node freezes with its connections open (a GC pause, a hung VM)."""
        self._agent(node).pause()

    def resume(self, node: str) -> None:
        """SIGCONT. Raises FaultsNotPushed when the node runs again without the rules set while it was paused."""
        st = self._agent(node).resume()
        if st.rules_error:
            raise FaultsNotPushed(st.rules_error)

    def restart(self, node: str, timeout_s: float = 30.0) -> None:
        self._agent(node).restart()
        self._c().wait_ready(timeout_s)

    # -- network faults (rules at each node's gRPC edge, kept across restarts) --
    def partition(self, *groups) -> dict[str, list[str]]:
        """Cuts traffic between groups of nodes: partition(["broker-1"], ["coordinator", "broker-2",
        "broker-3"]). One group alone is cut from every other node; a plain name is a group of one.
        Clients keep reaching every node. Replaces an earlier partition; returns who refuses whom."""
        gs = [[g] if isinstance(g, str) else list(g) for g in groups]
        if len(gs) == 1:
            gs.append([n for n in self.nodes if n not in gs[0]])
        return self._controller().partition(gs)

    def heal(self) -> None:
        """Removes every network fault (partitions, delays, loss). Killed or paused nodes stay so:
        restore() brings those back too."""
        self._controller().heal_network()

    def restore(self, timeout_s: float = 30.0) -> None:
        """Back to a whole, healthy cluster: network healed, paused nodes resumed, stopped ones started."""
        out = self._controller().heal()
        if out.get("failed"):
            raise RuntimeError(f"could not restore the cluster: {out['failed']}")
        self._c().wait_ready(timeout_s)

    @property
    def chaos(self) -> ChaosController:
        """The full ChaosController (delay, loss, heartbeat faults, clock skew ...) for this cluster."""
        return self._controller()

    # -- logs ------------------------------------------------------------
    def log_paths(self) -> dict[str, str]:
        return dict(self._log_paths)

    def log_positions(self) -> dict[str, int]:
        """Each log's current size; pass to logs(since=...) for what was written after this point."""
        return {n: _size(p) for n, p in self.log_paths().items()}

    def logs(self, since: dict[str, int] | None = None, tail_lines: int | None = None) -> dict[str, str]:
        """Each node's log (stdout and stderr of every run of it), optionally only what came after
        `since` (from log_positions()) and only the last `tail_lines` lines."""
        out = {}
        for n, path in self.log_paths().items():
            try:
                with open(path, "rb") as f:
                    f.seek((since or {}).get(n, 0))
                    text = f.read().decode("utf-8", "replace")
            except FileNotFoundError:
                text = ""
            if tail_lines is not None:
                text = "".join(text.splitlines(keepends=True)[-tail_lines:])
            out[n] = text
        return out

    def _all_logs_text(self) -> str:
        return "\n".join(self.logs().values())

    # -- internals -------------------------------------------------------
    def _c(self) -> Cluster:
        c = self._cluster
        if c is None:
            raise RuntimeError("the LocalCluster is not running (use `with LocalCluster() as cluster:` "
                               "or call start())")
        return c

    def _agent(self, node: str) -> Agent:
        agents = self._c().agents
        if node not in agents:
            raise ValueError(f"unknown node {node!r} (nodes: {', '.join(agents)})")
        return agents[node]

    def _controller(self) -> ChaosController:
        self._c()
        return self._chaos

    @staticmethod
    def _wait(cond, timeout_s: float, what) -> None:
        deadline = time.monotonic() + timeout_s
        delay = 0.02
        while True:
            try:
                if cond():
                    return
            except grpc.RpcError:
                pass  # the coordinator may be restarting
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout_s} s waiting for {what()}")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def __repr__(self) -> str:
        where = self.bootstrap_servers if self.running else "stopped"
        return f"LocalCluster(brokers={self.n_brokers}, {where}, data_dir={self.data_dir})"


def _stop_all_at_once(c: Cluster, kill: bool) -> None:
    """Like Cluster.stop, but the nodes shut down side by side (a clean stop takes a second or so)."""
    if hasattr(c, "plan"):  # a NetnsCluster: its agents stop their nodes, then its network goes
        c.stop(graceful=not kill)
        return
    def close(a: Agent) -> None:
        try:
            if kill:
                a.kill()
            a.close()
        except Exception:
            log.exception("stopping %s", a.name)
    threads = [threading.Thread(target=close, args=(a,), name=f"stop-{a.name}") for a in c.agents.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c.pool.close()


def _free_ports(n: int, host: str) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _format_logs(logs: dict[str, str], title: str) -> str:
    parts = [f"--- {title} ---"]
    for name, text in logs.items():
        parts.append(f"=== {name} ===")
        parts.append(text.rstrip("\n") or "(empty)")
    return "\n".join(parts)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# -- cleanup of clusters left running: at exit, and on SIGTERM / SIGHUP ------
_live: set[LocalCluster] = set()
_live_lock = threading.Lock()
_hooks_installed = False


def _register(c: LocalCluster) -> None:
    global _hooks_installed
    with _live_lock:
        _live.add(c)
        if _hooks_installed:
            return
        _hooks_installed = True
    atexit.register(stop_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            # Only where nobody handles the signal yet: the default would end the process without atexit.
            if signal.getsignal(sig) == signal.SIG_DFL:
                signal.signal(sig, _on_signal)


def _unregister(c: LocalCluster) -> None:
    with _live_lock:
        _live.discard(c)


def stop_all() -> None:
    """Stops every LocalCluster of this process that is still running."""
    with _live_lock:
        live = list(_live)
    for c in live:
        try:
            c.stop()
        except Exception:
            log.exception("stopping %r", c)


def _on_signal(signum, frame) -> None:
    stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
