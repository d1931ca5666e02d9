"""Agent: supervises one node process and carries out process faults on command.

It outlives its node (so a Procfile entry stays up while the node is
killed), serves the Agent gRPC service on its own port, keeps the node's
fault rules and hands them to the node on every (re)start, and pins the
node's port after the first start so a restarted node is found again.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import grpc

from client.common.network import ChannelPool
from client.common.pb import agent_pb2 as apb
from client.common.pb import agent_pb2_grpc as agrpc
from node.auth import TOKEN_ENV, ControlAuthInterceptor, call_metadata
from node.faults import faults_env
from node.rpc import advertisable_host, create_server

log = logging.getLogger(__name__)

PUSH_TIMEOUT_S = 4.0  # a just-started node may take this long to listen (below the controller's 5 s deadline)
# The node's parent pid (this process): node/main.py exits when its parent is gone, even by SIGKILL, so
# no node outlives the process that supervises it (a test run, `brokerlab up`, a Procfile's agent).
PARENT_PID_ENV = "BROKERLAB_PARENT_PID"


def node_argv(kind: str, *, node_id: int, host: str, port: int, data_dir: str, coordinator: str = "",
              configs: dict | None = None, agent: str = "", kafka_port: int | None = None,
              metrics_port: int | None = None, advertised_host: str = "") -> list[str]:
    argv = [sys.executable, "-m", "brokerlab_cli", "node", kind, "--host", host, "--port", str(port),
            "--data-dir", data_dir]
    if advertised_host:
        argv += ["--advertised-host", advertised_host]
    argv += ["--no-kafka"] if kafka_port is None else ["--kafka-port", str(kafka_port)]
    argv += ["--no-metrics"] if metrics_port is None else ["--metrics-port", str(metrics_port)]
    if kind == "broker":
        argv += ["--id", str(node_id), "--coordinator", coordinator]
    if agent:
        argv += ["--agent", agent]
    for k, v in (configs or {}).items():
        argv += ["--config", f"{k}={v}"]
    return argv


class FaultsNotPushed(RuntimeError):
    """The agent kept new rules but its running node did not take them."""


class NodeAddresses:
    """A node's addresses from its host and ports (Agent here, NetnsCluster's NodeProcess)."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def kafka_address(self) -> str:
        """host:port of the node's Kafka listener, "" when it has none (or has not reported it yet)."""
        return f"{self.host}:{self.kafka_port}" if self.kafka_port else ""

    @property
    def metrics_url(self) -> str:
        """The node's Prometheus endpoint, "" when it serves none (or has not reported it yet)."""
        return f"http://{self.host}:{self.metrics_port}/metrics" if self.metrics_port else ""


class Agent(NodeAddresses):
    def __init__(self, name: str, kind: str, *, node_id: int = 0, host: str = "127.0.0.1", port: int = 0,
                 data_dir: str, coordinator: str = "", configs: dict | None = None, log_path: str | None = None,
                 agent_host: str | None = None, agent_port: int = 0, env: dict | None = None,
                 control_token: str, kafka_port: int | None = 0, metrics_port: int | None = 0,
                 kernel_faults: bool = False, advertised_host: str | None = None):
        """control_token: the cluster's (node.auth): required on every call to this agent, handed to the node.
        kernel_faults: this agent applies the kernel-layer rules (node.kernel_faults) in its host's kernel:
        the host must be the node's own (a network namespace, a machine), as it changes its firewall.
        advertised_host: the address others dial for the node and this agent, when `host` (what they
        bind) is not it (a wildcard, or a private address behind NAT)."""
        if not control_token:
            raise ValueError(f"agent {name}: a control token is required (node.auth.ensure_token)")
        self.name, self.kind = name, kind
        self.node_id = node_id
        # The agent binds the node's host: its address is advertised in the metadata.
        self.bind_host = host
        self.advertised_host = advertised_host or ""
        if advertised_host:
            advertisable_host(advertised_host, f"{name}'s advertised host")
            agent_host = agent_host or host
            self.host = advertised_host
        else:
            agent_host = advertisable_host(agent_host or host, f"{name}'s agent host")
            self.host = advertisable_host(host, f"{name}'s host")
        self.port = port
        self.kafka_port = kafka_port  # None: no Kafka listener; 0: a free port, pinned after the first start
        self.metrics_port = metrics_port  # None: no metrics endpoint; 0: a free port, pinned likewise
        self.data_dir = data_dir
        self.coordinator = coordinator
        self.configs = dict(configs or {})
        self.log_path = log_path or os.path.join(data_dir, f"{name}.log")
        self.env = dict(env or {})
        self.lock = threading.RLock()
        self.proc: subprocess.Popen | None = None
        self.state = "stopped"
        self.restarts = 0
        self.exit_code = 0
        self.faults = apb.FaultRules()
        # (process, rules) that process is known to hold: those it started with, or its last push
        self._delivered: tuple[subprocess.Popen | None, apb.FaultRules] = (None, apb.FaultRules())
        self._push_lock = threading.Lock()  # one push to the node at a time
        self._nft_lock = threading.Lock()  # one kernel ruleset change at a time
        self._control_token = control_token
        from node.security.tls import channel_and_server_credentials
        channel_creds, server_creds = channel_and_server_credentials(self.configs)  # (None, None): plaintext
        self.pool = ChannelPool(f"agent:{name}", metadata=call_metadata(control_token),
                                channel_credentials=channel_creds)
        self.server, self.agent_port = create_server(agent_host, agent_port, self._register,
                                                     interceptors=[ControlAuthInterceptor(control_token)],
                                                     max_workers=8, server_credentials=server_creds)
        self.agent_address = f"{advertised_host or agent_host}:{self.agent_port}"
        self.kernel_faults = kernel_faults
        self.netem_missing = "not a netns agent"  # why delay and jitter stay at the edge ("": netem applies them)
        self.tc = None  # node.kernel_faults.TcDelays: the netem delays this agent installed
        if kernel_faults:
            from node import kernel_faults as kf
            missing = kf.missing_tools()
            if missing:
                self.server.stop(0)
                raise ValueError(f"agent {name}: kernel faults need {' and '.join(missing)}")
            kf.remove()  # a table left by an earlier agent of this host is no rule of ours any more
            self.netem_missing = kf.netem_missing()  # asked once: the kernel does not change under us
            if not self.netem_missing:
                kf.remove_leftover_delays()  # likewise an earlier agent's netem delays
                self.tc = kf.TcDelays()
            else:
                log.info("%s: delay and jitter stay at the edge: %s", name, self.netem_missing)
        self._closing = False
        threading.Thread(target=self._watch, name=f"agent-watch-{name}", daemon=True).start()

    def _register(self, server) -> None:
        agrpc.add_AgentServicer_to_server(AgentServicer(self), server)

    # -- process control -------------------------------------------------
    def start(self) -> apb.AgentStatus:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                return self.status()
            os.makedirs(self.data_dir, exist_ok=True)
            port_file = os.path.join(self.data_dir, "port")
            kafka_port_file = os.path.join(self.data_dir, "kafka_port")
            metrics_port_file = os.path.join(self.data_dir, "metrics_port")
            if self.port == 0 and os.path.exists(port_file):
                os.unlink(port_file)
            if self.kafka_port == 0 and os.path.exists(kafka_port_file):
                os.unlink(kafka_port_file)
            if self.metrics_port == 0 and os.path.exists(metrics_port_file):
                os.unlink(metrics_port_file)
            argv = node_argv(self.kind, node_id=self.node_id, host=self.bind_host, port=self.port,
                             data_dir=self.data_dir, coordinator=self.coordinator, configs=self.configs,
                             agent=self.agent_address, kafka_port=self.kafka_port,
                             metrics_port=self.metrics_port, advertised_host=self.advertised_host)
            env = {**os.environ, **self.env, "BROKERLAB_FAULTS": faults_env(self.faults),
                   TOKEN_ENV: self._control_token, PARENT_PID_ENV: str(os.getpid())}
            with open(self.log_path, "ab") as logf:
                self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            self._delivered = (self.proc, self.faults)  # in its environment
            self.state = "running"
            log.info("Started %s (pid %d)", self.name, self.proc.pid)
        if self.port == 0:
            self.port = self._wait_port(port_file)
        if self.kafka_port == 0:
            self.kafka_port = self._wait_port(kafka_port_file)  # written before the port file
        if self.metrics_port == 0:
            self.metrics_port = self._wait_port(metrics_port_file)  # likewise
        return self.status()

    def _wait_port(self, port_file: str, timeout_s: float = 30.0) -> int:
        deadline = time.monotonic() + timeout_s
        delay = 0.01
        while time.monotonic() < deadline:
            try:
                with open(port_file) as f:
                    text = f.read().strip()
                if text:
                    return int(text)
            except FileNotFoundError:
                pass
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}; see {self.log_path}")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        raise TimeoutError(f"{self.name} did not report its port within {timeout_s} s; see {self.log_path}")

    def _signal(self, sig: int, state: str) -> apb.AgentStatus:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    pass
                self.state = state
            return self.status()

    def kill(self) -> apb.AgentStatus:
        with self.lock:
            st = self._signal(signal.SIGKILL, "killed")
            if self.proc is not None:
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            return self.status() if st else st

    def pause(self) -> apb.AgentStatus:
        return self._signal(signal.SIGSTOP, "paused")

    def resume(self) -> apb.AgentStatus:
        """SIGCONT: the node runs again (the status says so, without `error`). Rules set while it was
        paused are pushed to it now; if it does not take them, `rules_error` says so (it runs on with
        the rules it had). A node that holds the current rules gets no push: one paused while still
        starting may need seconds more to listen, and its resume must not wait for that."""
        st = self._signal(signal.SIGCONT, "running")
        if st.state == "running" and self._rules_pending():
            try:
                self._push_faults()
            except FaultsNotPushed as e:
                st.rules_error = str(e)
        return st

    def _rules_pending(self) -> bool:
        """The running process does not hold the current rules."""
        with self.lock:
            proc, rules = self._delivered
            return proc is not self.proc or rules != self.faults

    def stop(self, timeout_s: float = 10.0) -> apb.AgentStatus:
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.state = "stopped" if self.state != "killed" else self.state
                return self.status()
            if self.state == "paused":
                os.killpg(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            self.state = "stopped"
            return self.status()

    def restart(self) -> apb.AgentStatus:
        with self.lock:
            self.stop()
            self.restarts += 1
            return self.start()

    def status(self) -> apb.AgentStatus:
        p = self.proc
        code = p.poll() if p is not None else None
        state = self.state
        if code is not None and state in ("running", "paused"):
            state = "exited"
        return apb.AgentStatus(node=self.name, state=state, pid=p.pid if p else 0, restarts=self.restarts,
                               address=self.address, agent=self.agent_address,
                               exit_code=code if code is not None else 0, metrics_port=self.metrics_port or 0,
                               network="netns" if self.kernel_faults else "edge", netem=self.netem,
                               netem_missing=self.netem_missing if self.kernel_faults else "")

    def _watch(self) -> None:
        while not self._closing:
            time.sleep(0.2)
            with self.lock:
                p = self.proc
                if p is not None and p.poll() is not None and self.state in ("running", "paused"):
                    self.exit_code = p.returncode
                    self.state = "exited"
                    log.warning("%s exited with code %s", self.name, p.returncode)

    # -- faults ----------------------------------------------------------
    def set_faults(self, spec: apb.FaultRules) -> apb.FaultRules:
        """Keeps the rules for restarts and pushes them to the node if it runs. Raises FaultsNotPushed
        when a running node did not take them: the caller must not count them as in force."""
        self._apply_kernel(spec)
        with self.lock:
            self.faults = spec
        self._push_faults()
        return spec

    @property
    def netem(self) -> bool:
        return self.tc is not None

    def _apply_kernel(self, spec: apb.FaultRules) -> None:
        """Kernel-layer rules become this host's nftables table (replaced whole, in one transaction) and
        its netem delays (each device's rebuilt when its delays changed)."""
        from node import kernel_faults as kf
        from node.faults import rules_from_pb
        rules = [r for r in rules_from_pb(spec.rules) if r.layer == "kernel"]
        if not self.kernel_faults:
            if rules:
                raise kf.KernelFaultsError(f"agent {self.name} applies no kernel rules (it was not started "
                                           f"for a netns cluster / with --kernel-faults)")
            return
        if self.tc is None and any(r.kind == "delay" for r in rules):
            raise kf.KernelFaultsError(f"agent {self.name} cannot apply delay as a kernel rule: {self.netem_missing}")
        ports = tuple(p for p in (self.port, self.kafka_port) if p)
        host = kf.NodeHost(self.name, dict(spec.hosts), ports)
        with self._nft_lock:  # one kernel change at a time, in the order the rules came
            kf.apply(kf.ruleset(host, rules))
            if self.tc is not None:
                self.tc.apply(host, rules)

    def _push_faults(self, timeout_s: float = PUSH_TIMEOUT_S) -> None:
        """Hands the current rules to the running node (a stopped or paused one gets them when it
        starts or resumes). A node that is still starting is not listening yet: UNAVAILABLE is
        retried until `timeout_s`. Pushes are serialised and each sends the latest rules, so an
        older push never lands after a newer one."""
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        with self._push_lock:
            while True:
                with self.lock:
                    spec, proc = self.faults, self.proc
                    running = proc is not None and proc.poll() is None and self.state == "running"
                if not running:
                    return
                try:
                    self._send_faults(spec)
                    with self.lock:
                        self._delivered = (proc, spec)
                    return
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() + delay > deadline:
                        raise FaultsNotPushed(f"{self.name} is running but did not take the rules "
                                              f"({e.code().name}); the agent keeps them for its next start") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _send_faults(self, spec: apb.FaultRules) -> None:
        agrpc.FaultsStub(self.pool.get(self.address)).SetFaults(spec, timeout=5)

    def close(self) -> None:
        self._closing = True
        self.stop()
        if self.kernel_faults:
            from node import kernel_faults as kf
            for remove in (kf.remove, self.tc.remove if self.tc is not None else None):
                try:
                    if remove is not None:
                        remove()
                except kf.KernelFaultsError:
                    log.exception("removing %s's kernel rules", self.name)
        self.server.stop(grace=0.5)
        self.pool.close()


class AgentServicer(agrpc.AgentServicer):
    def __init__(self, agent: Agent):
        self.a = agent

    def _guard(self, fn, context):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - reported to the caller as an error status
            return apb.AgentStatus(node=self.a.name, state=self.a.state, error=f"{type(e).__name__}: {e}")

    def Status(self, request, context):
        return self.a.status()

    def Kill(self, request, context):
        return self._guard(self.a.kill, context)

    def Stop(self, request, context):
        return self._guard(self.a.stop, context)

    def Pause(self, request, context):
        return self._guard(self.a.pause, context)

    def Resume(self, request, context):
        return self._guard(self.a.resume, context)

    def Start(self, request, context):
        return self._guard(self.a.start, context)

    def Restart(self, request, context):
        return self._guard(self.a.restart, context)

    def SetFaults(self, request, context):
        from node.kernel_faults import KernelFaultsError
        try:
            return self.a.set_faults(request)
        except FaultsNotPushed as e:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        except (KernelFaultsError, ValueError) as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))

    def GetFaults(self, request, context):
        return self.a.faults
