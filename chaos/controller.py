"""ChaosController: process and network faults on a running cluster, through its nodes' agents.

It discovers every node and its agent from the cluster metadata and saves what it learned to a small
state file, so a later invocation can still reach the agent of a coordinator that is down. Network
faults are rule sets kept by each agent (which hands them to its node, also after a restart); every
node holds the whole rule set and checks the requests it receives and the replies it sends.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from typing import Self

import grpc

from chaos.targets import ClusterView, TargetError, check_groups, grudge_of_groups
from client.common.network import ChannelPool
from client.common.pb import agent_pb2 as apb
from client.common.pb import agent_pb2_grpc as agrpc
from client.common.pb import metadata_pb2 as mpb
from client.common.pb import metadata_pb2_grpc as mgrpc
from node.auth import ResolvedToken, call_metadata, resolve_token
from node.faults import HEARTBEAT_METHODS, Rule, rules_from_pb, rules_to_pb

log = logging.getLogger(__name__)

COORDINATOR = "coordinator"
NETWORKS = ("edge", "netns")
HEARTBEATS = "|".join(HEARTBEAT_METHODS)
_LINK = re.compile(r"^(client:[^:]+|[^:]+):(client:[^:]+|[^:]+)$")


class ChaosError(RuntimeError):
    pass


class OutcomeUnknown(ChaosError):
    """An agent call that got no answer (deadline, lost connection): the agent may have done it."""


class PartialFaultError(ChaosError):
    """A fault that reached some nodes and not others: every node was tried, `applied` took it,
    `failed` maps each node that certainly did not to its error, `unknown` each node whose agent
    did not answer (it may have)."""

    def __init__(self, what: str, applied: list[str], failed: dict[str, str], unknown: dict[str, str] | None = None):
        self.applied = list(applied)
        self.failed = dict(failed)
        self.unknown = dict(unknown or {})
        parts = [f"{how} {', '.join(f'{n} ({e})' for n, e in sorted(d.items()))}"
                 for how, d in (("failed on", self.failed), ("outcome unknown on", self.unknown)) if d]
        super().__init__(f"{what}: {'; '.join(parts)}"
                         + (f"; applied on {', '.join(applied)}" if applied else "; applied nowhere"))


# gRPC errors after which the call may have been carried out: it left, and no answer came back.
_UNKNOWN_CODES = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
                  grpc.StatusCode.UNAVAILABLE)
# ... except UNAVAILABLE before the call left (no connection), or as the agent's own answer.
_NOT_SENT = ("failed to connect to all addresses", "DNS resolution failed")
_AGENT_REFUSED = "did not take the rules"  # node.agent.FaultsNotPushed, answered UNAVAILABLE


def outcome_unknown(code: grpc.StatusCode, details: str) -> bool:
    """An agent call failed with `code`: may the agent have done it all the same?"""
    if code not in _UNKNOWN_CODES:
        return False
    return code != grpc.StatusCode.UNAVAILABLE or not (details.startswith(_NOT_SENT) or _AGENT_REFUSED in details)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    address: str
    agent: str


def default_state_path() -> str:
    return os.environ.get("BROKERLAB_CHAOS_STATE", os.path.join(".brokerlab", "chaos-agents.json"))


def parse_link(link: str) -> tuple[str, str]:
    """'A:B' (node names, 'client:<id>' or '*') -> (A, B)."""
    m = _LINK.match(link.strip())
    if not m:
        raise TargetError(f"bad link '{link}': expected A:B, e.g. broker-1:broker-2 or client:p1:broker-1")
    return m.group(1), m.group(2)


class ChaosController:
    def __init__(self, bootstrap: str, state_path: str | None = None, rpc_timeout_s: float = 5.0, *,
                 control_token: str | None = None, data_dir: str | None = None, channel_credentials=None,
                 network: str | None = None):
        """control_token: the cluster's (node.auth); default $BROKERLAB_CONTROL_TOKEN, else
        `<data_dir>/control-token` (data_dir default .brokerlab, where `brokerlab up` and the Procfile put it).
        network: where partitions, loss and cut-clients are applied: "edge" (the nodes' gRPC / Kafka edge),
        "netns" (nftables rules in the nodes' hosts, by their agents), None: "netns" when every agent
        can (a `brokerlab up --netns` cluster), else "edge"."""
        if network not in (None, *NETWORKS):
            raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {network!r}")
        self.bootstrap = bootstrap
        self.state_path = state_path or default_state_path()
        self.rpc_timeout_s = rpc_timeout_s
        self._token_args = (control_token, data_dir)
        self._token = resolve_token(control_token, data_dir)
        if channel_credentials is None:  # a TLS cluster started by `brokerlab up --tls` says so in its data dir
            from client.common.security import channel_credentials_from_config
            from node.security.settings import read_client_props
            channel_credentials = channel_credentials_from_config(read_client_props(data_dir))
        self.pool = ChannelPool("chaos", metadata=lambda: call_metadata(self.token.token),
                                channel_credentials=channel_credentials)
        self._channel_credentials = channel_credentials
        self.revoked_users: set[str] = set()  # users revoke_user took away (restored by heal)
        self.nodes: dict[str, NodeInfo] = {}
        self.last_metadata: mpb.MetadataResponse | None = None
        self._network = network
        self._netem: bool | None = None
        self._netem_missing = ""  # why the agents cannot apply delay with netem ("" when they can)
        self.last_layers: list[str] = []  # the layers of the rules the last fault added ("edge", "kernel")
        # node -> why: nodes the last resume set running again that did not take the rules set meanwhile
        self.last_rules_not_taken: dict[str, str] = {}

    @property
    def token(self) -> ResolvedToken:
        """The control token; looked for again until found (the cluster may write it after we start)."""
        if self._token.token is None:
            self._token = resolve_token(*self._token_args)
        return self._token

    # -- discovery -------------------------------------------------------
    def _load_state(self) -> dict:
        try:
            with open(self.state_path) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return {}

    def _save_state(self) -> None:
        state = self._load_state()
        state[self.bootstrap] = {"nodes": {n: asdict(i) for n, i in sorted(self.nodes.items())},
                                 "updated_ms": int(time.time() * 1000)}
        os.makedirs(os.path.dirname(os.path.abspath(self.state_path)), exist_ok=True)
        tmp = f"{self.state_path}.tmp"
        with open(tmp, "w") as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, self.state_path)

    def metadata(self, timeout_s: float = 2.0) -> mpb.MetadataResponse | None:
        """From the bootstrap server, else from any known node (a broker answers from its cache)."""
        addrs = [self.bootstrap] + [i.address for i in self.nodes.values() if i.address != self.bootstrap]
        for addr in addrs:
            try:
                md = mgrpc.MetadataStub(self.pool.get(addr)).GetMetadata(
                    mpb.MetadataRequest(include_internal=True), timeout=timeout_s)
                self.last_metadata = md
                return md
            except grpc.RpcError:
                continue
        return None

    def discover(self) -> dict[str, NodeInfo]:
        saved = self._load_state().get(self.bootstrap, {}).get("nodes", {})
        found = {n: NodeInfo(**i) for n, i in saved.items()}
        found.update(self.nodes)
        self.nodes = found
        md = self.metadata()
        if md is not None:
            if md.controller_agent:
                found[COORDINATOR] = NodeInfo(COORDINATOR, md.controller or self.bootstrap, md.controller_agent)
            for b in md.brokers:
                if b.agent:
                    name = f"broker-{b.node_id}"
                    found[name] = NodeInfo(name, f"{b.host}:{b.port}", b.agent)
            self.nodes = found
            self._save_state()
        if not self.nodes:
            raise ChaosError(f"no node agents known for {self.bootstrap}: the cluster did not answer and "
                             f"{self.state_path} has nothing saved for it")
        return self.nodes

    def _known(self) -> dict[str, NodeInfo]:
        return self.nodes or self.discover()

    def node_names(self) -> list[str]:
        return sorted(self._known())

    def node(self, name: str) -> NodeInfo:
        nodes = self._known()
        if name not in nodes:
            raise TargetError(f"unknown node '{name}' (known: {', '.join(sorted(nodes))})")
        return nodes[name]

    def view(self) -> ClusterView:
        """Node names, leaders and replicas, for targeting."""
        nodes = self._known()
        md = self.metadata() or self.last_metadata
        leaders, replicas = {}, {}
        for t in md.topics if md is not None else ():
            for p in t.partitions:
                key = f"{t.name}/{p.partition}"
                if p.leader >= 0:
                    leaders[key] = f"broker-{p.leader}"
                replicas[key] = tuple(f"broker-{r}" for r in p.replicas)
        return ClusterView(tuple(sorted(nodes)), COORDINATOR, leaders, replicas)

    # -- process faults --------------------------------------------------
    def _agent_call(self, name: str, method: str, request=None, timeout_s: float | None = None):
        info = self.node(name)
        stub = agrpc.AgentStub(self.pool.get(info.agent))
        try:
            return getattr(stub, method)(request if request is not None else apb.AgentRequest(node=name),
                                         timeout=timeout_s or self.rpc_timeout_s)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise ChaosError(f"{method} {name}: agent {info.agent} refused: {e.details()} "
                                 f"(token from {self.token.source})") from None
            details = (e.details() if callable(getattr(e, "details", None)) else "") or ""
            cls = OutcomeUnknown if outcome_unknown(e.code(), details) else ChaosError
            raise cls(f"{method} {name}: agent {info.agent} answered {e.code().name}"
                      + (f": {details}" if details else "")) from None

    def _process(self, method: str, names: list[str], timeout_s: float = 30.0) -> list[dict]:
        """Every node is tried, also after one fails; PartialFaultError names which did not take it
        and which may have (its agent did not answer). A node that runs again without the rules set
        while it was paused is applied, and named in `last_rules_not_taken`."""
        out, applied, failed, unknown = [], [], {}, {}
        self.last_rules_not_taken = {}
        for name in names:
            try:
                st = self._agent_call(name, method, timeout_s=timeout_s)
                if st.error:
                    raise ChaosError(f"{method} {name}: {st.error}")
            except OutcomeUnknown as e:
                unknown[name] = str(e)
                continue
            except ChaosError as e:
                failed[name] = str(e)
                continue
            applied.append(name)
            if st.rules_error:
                self.last_rules_not_taken[name] = st.rules_error
            out.append(_status_dict(st))
        if failed or unknown:
            raise PartialFaultError(method, applied, failed, unknown)
        return out

    def kill(self, *names: str) -> list[dict]:
        return self._process("Kill", list(names))

    def start(self, *names: str) -> list[dict]:
        return self._process("Start", list(names), timeout_s=60)

    def stop(self, *names: str) -> list[dict]:
        return self._process("Stop", list(names))

    def restart(self, *names: str) -> list[dict]:
        return self._process("Restart", list(names), timeout_s=60)

    def pause(self, *names: str) -> list[dict]:
        return self._process("Pause", list(names))

    def resume(self, *names: str) -> list[dict]:
        return self._process("Resume", list(names))

    # -- fault layers ----------------------------------------------------
    @property
    def network(self) -> str:
        """"netns" or "edge" (see __init__); asked of the agents once."""
        if self._network is None or self._netem is None:
            statuses = {}
            for name in sorted(self._known()):
                try:
                    statuses[name] = self._agent_call(name, "Status", timeout_s=2)
                except ChaosError:
                    continue
            if not statuses:  # no agent answered: nothing learned, ask again next time
                return self._network or "edge"
            kernel = all(st.network == "netns" for st in statuses.values())
            self._netem = kernel and all(st.netem for st in statuses.values())
            without = {n: st.netem_missing or "this kernel has no netem" for n, st in statuses.items()
                       if kernel and not st.netem}
            reasons = sorted(set(without.values()))
            self._netem_missing = "" if not without else (
                reasons[0] if len(reasons) == 1 and len(without) == len(statuses)
                else "; ".join(f"{n}: {why}" for n, why in sorted(without.items())))
            if self._network is None:
                self._network = "netns" if kernel else "edge"
            elif self._network == "netns" and not kernel:
                edge = sorted(n for n, st in statuses.items() if st.network != "netns")
                raise ChaosError("network netns: the agents of " + (", ".join(edge) or "every node")
                                 + " apply no kernel rules (start the cluster with `brokerlab up --netns`, "
                                   "or agents with --kernel-faults)")
        return self._network

    def delay_layer(self) -> str:
        """Where delay and jitter between nodes are applied, and why."""
        if self.network != "netns":
            return "edge"
        if self._netem:
            return "kernel (netem; from clients: edge)"
        return f"edge ({self._netem_missing or 'this kernel has no netem'})"

    def layers(self) -> dict[str, str]:
        """Which layer applies which fault: for `chaos status` and a run's run.json / report."""
        return {"partition, isolate, loss, cut-clients": "kernel" if self.network == "netns" else "edge",
                "delay, jitter": self.delay_layer(),
                "heartbeat-*, drop-response, clock, client:<id> links": "edge"}

    def _layered(self, rules: list[Rule]) -> list[Rule]:
        """With network netns, the rules the kernel can express become kernel rules (delays only
        where every agent has netem)."""
        if self.network != "netns":
            return rules
        from node.kernel_faults import kernel_expressible
        nodes = set(self._known())
        return [dataclasses.replace(r, layer="kernel") if kernel_expressible(r, nodes, bool(self._netem)) else r
                for r in rules]

    def _hosts(self) -> dict[str, str]:
        return {n: i.address.rsplit(":", 1)[0].strip("[]") for n, i in self._known().items()}

    # -- rules -----------------------------------------------------------
    def faults(self, name: str) -> apb.FaultRules:
        return self._agent_call(name, "GetFaults", apb.Empty())

    def _set_rules(self, edit, what: str = "faults") -> list[str]:
        """Every node holds the whole rule set (it checks requests to it and replies from it):
        each node's rules become edit(current rules); its clock skew is kept. Every node is tried;
        returns the nodes that took it, else raises PartialFaultError naming the ones that did not."""
        applied, failed, unknown = [], {}, {}
        hosts = self._hosts()
        for name in sorted(self._known()):
            try:
                current = self.faults(name)
                spec = apb.FaultRules()
                spec.CopyFrom(current)
                spec.refused = spec.delayed = 0
                del spec.rules[:]
                spec.rules.extend(rules_to_pb(edit(rules_from_pb(current.rules))))
                spec.hosts.clear()
                spec.hosts.update(hosts)
                self._agent_call(name, "SetFaults", spec)
            except OutcomeUnknown as e:
                unknown[name] = str(e)
                continue
            except ChaosError as e:
                failed[name] = str(e)
                continue
            applied.append(name)
        if failed or unknown:
            raise PartialFaultError(what, applied, failed, unknown)
        return applied

    def _replace(self, tag: str, rules: list[Rule]) -> list[str]:
        rules = self._layered(rules)
        self.last_layers = sorted({r.layer or "edge" for r in rules})
        return self._set_rules(lambda cur: [r for r in cur if r.tag != tag] + rules, tag)

    def _add(self, rules: list[Rule]) -> list[str]:
        rules = self._layered(rules)
        self.last_layers = sorted({r.layer or "edge" for r in rules})
        return self._set_rules(lambda cur: cur + [r for r in rules if r not in cur],
                               "+".join(sorted({r.tag for r in rules})) or "faults")

    def _expand(self, name: str) -> list[str]:
        if name == "*":
            return sorted(self._known())
        if not name.startswith("client:"):
            self.node(name)
        return [name]

    def partition(self, groups: list[list[str]], one_way: bool = False) -> dict[str, list[str]]:
        """Cut traffic between groups (nodes in no group keep every link); returns the grudge."""
        check_groups(groups, self._known())
        grudge = grudge_of_groups(groups, one_way)
        self.partition_grudge(grudge)
        return grudge

    def partition_grudge(self, grudge: dict[str, list[str]]) -> list[str]:
        """grudge[node] = the nodes whose traffic `node` refuses. Replaces any earlier partition.
        Returns the nodes that took the new rule set."""
        for dst, srcs in grudge.items():
            for n in [dst, *srcs]:
                self.node(n)
        return self._replace("partition", [Rule("drop", src, dst, tag="partition")
                                    for dst, srcs in sorted(grudge.items()) for src in srcs])

    def isolate(self, name: str) -> dict[str, list[str]]:
        return self.partition([[name], [n for n in sorted(self._known()) if n != name]])

    def _link_rules(self, links: list[str], make) -> list[Rule]:
        out: list[Rule] = []
        for link in links:
            a, b = parse_link(link)
            pairs = [(s, d) for s in self._expand(a) for d in self._expand(b)]
            pairs += [(s, d) for s in self._expand(b) for d in self._expand(a)]
            for src, dst in pairs:
                if src != dst and not dst.startswith("client:"):  # a client serves nothing to refuse at
                    out.append(make(src, dst))
        return out

    def delay(self, links: list[str], ms: int, jitter_ms: int = 0) -> list[str]:
        """Latency both ways on each link 'A:B' (adds to earlier delays on other links)."""
        rules = self._link_rules(links, lambda s, d: Rule("delay", s, d, ms, jitter_ms, tag="delay"))
        return self._add(rules)

    def loss(self, links: list[str], p: float) -> list[str]:
        if not 0 < p <= 1:
            raise TargetError(f"loss probability must be in (0, 1], got {p}")
        return self._add(self._link_rules(links, lambda s, d: Rule("loss", s, d, probability=p, tag="loss")))

    def _sources(self, sources: list[str]) -> list[str]:
        for s in sources:
            self._expand(s)  # validates node names; client ids are free-form
        return list(sources)

    def heartbeat_delay(self, sources: list[str], ms: int) -> list[str]:
        """Delay only heartbeats from these brokers (or `client:<id>` consumers) at the coordinator."""
        rules = [Rule("delay", s, COORDINATOR, ms, method=HEARTBEATS, tag="heartbeat") for s in self._sources(sources)]
        return self._add(rules)

    def heartbeat_drop(self, sources: list[str]) -> list[str]:
        rules = [Rule("drop", s, COORDINATOR, method=HEARTBEATS, tag="heartbeat") for s in self._sources(sources)]
        return self._add(rules)

    def cut_clients(self, nodes: list[str], clients: str = "client:*") -> list[str]:
        """Clients (`client:*` or `client:<id>`) can no longer reach these nodes."""
        for n in nodes:
            self.node(n)
        return self._add([Rule("drop", clients, n, tag="client") for n in nodes])

    def drop_response(self, nodes: list[str], p: float, method: str = "Produce",
                      clients: str = "client:*") -> list[str]:
        """These nodes do the work of `method` calls from clients, then drop the reply with probability p."""
        for n in nodes:
            self.node(n)
        return self._add([Rule("drop-response", clients, n, probability=p, method=method, tag="drop-response")
                   for n in nodes])

    def clock(self, name: str, offset_ms: int = 0, strobe_ms: int = 0, period_ms: int = 0) -> None:
        if strobe_ms and period_ms <= 0:
            raise TargetError("a clock strobe needs period_ms > 0")
        spec = apb.FaultRules()
        spec.CopyFrom(self.faults(name))
        spec.refused = spec.delayed = 0
        spec.clock_offset_ms, spec.clock_strobe_ms, spec.clock_strobe_period_ms = offset_ms, strobe_ms, period_ms
        self._agent_call(name, "SetFaults", spec)

    def heal_network(self, tag: str | None = None) -> list[str]:
        """Removes the rules of one fault (tag), or every rule and clock skew; every node is tried."""
        if tag is not None:
            return self._replace(tag, [])
        applied, failed, unknown = [], {}, {}
        for name in sorted(self._known()):
            try:
                self._agent_call(name, "SetFaults", apb.FaultRules())
            except OutcomeUnknown as e:
                unknown[name] = str(e)
                continue
            except ChaosError as e:
                failed[name] = str(e)
                continue
            applied.append(name)
        if failed or unknown:
            raise PartialFaultError("heal-network", applied, failed, unknown)
        return applied

    # -- heal and status -------------------------------------------------
    # -- credential fault (node/security) ---------------------------------
    def revoke_user(self, user: str, revoked: bool = True) -> None:
        """The user's SASL authentication fails (and its connections close) until restored; its
        credential is kept. Cluster-wide: the coordinator's security state."""
        from node.security.admin import SecurityAdmin
        with SecurityAdmin(self.bootstrap, self.token.token, channel_credentials=self._channel_credentials) as a:
            a.revoke_user(user, revoked)
        (self.revoked_users.add if revoked else self.revoked_users.discard)(user)

    def restore_users(self) -> list[str]:
        users = sorted(self.revoked_users)
        for u in users:
            self.revoke_user(u, False)
        return users

    def heal(self, nodes: list[str] | None = None) -> dict:
        """Every rule and clock skew removed, paused nodes resumed, stopped / killed nodes started:
        on every known node (or these). A node is `healed` only when its agent confirmed each step
        (rules cleared and, for a running node, pushed to it; the node running); any other node is in
        `failed` with the step's error. Never raises for one node's failure."""
        self.discover_quietly()
        if not self.nodes:
            raise ChaosError(f"no node agents known for {self.bootstrap}")
        healed, resumed, started, failed = [], [], [], {}
        for name in sorted(nodes if nodes is not None else self.nodes):
            try:
                self._agent_call(name, "SetFaults", apb.FaultRules())
                st = self._agent_call(name, "Status")
                if st.state == "paused":
                    self.resume(name)
                    if name in self.last_rules_not_taken:  # it runs with the rules it had when paused
                        raise ChaosError(f"Resume {name}: {self.last_rules_not_taken[name]}")
                    resumed.append(name)
                elif st.state in ("killed", "stopped", "exited"):
                    self.start(name)
                    started.append(name)
            except (ChaosError, TargetError) as e:
                failed[name] = str(e)
                continue
            healed.append(name)
        out = {"healed": healed, "resumed": resumed, "started": started}
        if nodes is None and self.revoked_users:  # a full heal gives revoked users back too
            try:
                out["restored_users"] = self.restore_users()
            except Exception as e:  # noqa: BLE001 - reported with the heal, as a node's failure is
                failed["security"] = f"restoring users {sorted(self.revoked_users)}: {e}"
        if failed:
            out["failed"] = failed
        return out

    def discover_quietly(self) -> None:
        try:
            self.discover()
        except ChaosError:
            pass

    def status(self) -> dict:
        self.discover_quietly()
        nodes = []
        for name in sorted(self._known()):
            row = {"node": name, "address": self.nodes[name].address, "agent": self.nodes[name].agent}
            try:
                row.update(_status_dict(self._agent_call(name, "Status", timeout_s=2)))
                spec = self.faults(name)
                row["faults"] = [_rule_text(r) for r in rules_from_pb(spec.rules)]
                if spec.clock_offset_ms or spec.clock_strobe_ms:
                    row["clock"] = {"offset_ms": spec.clock_offset_ms, "strobe_ms": spec.clock_strobe_ms,
                                    "period_ms": spec.clock_strobe_period_ms}
            except ChaosError as e:
                row.update({"state": "unreachable", "error": str(e)})
            nodes.append(row)
        out = {"bootstrap": self.bootstrap, "nodes": nodes}
        try:
            out["network"] = self.network
            out["layers"] = self.layers()
        except ChaosError as e:
            out["network"] = f"unknown ({e})"
        md = self.metadata()
        if md is not None:
            out["fenced"] = sorted(f"broker-{b.node_id}" for b in md.brokers if b.fenced)
            out["under_replicated"] = sorted(f"{t.name}/{p.partition}" for t in md.topics for p in t.partitions
                                             if set(p.isr) != set(p.replicas) or p.leader < 0)
        return out

    def healthy(self) -> bool:
        """Every known broker registered and unfenced, every partition led with its full ISR."""
        md = self.metadata()
        if md is None:
            return False
        brokers = {f"broker-{b.node_id}": b for b in md.brokers}
        if any(n not in brokers or brokers[n].fenced for n in self._known() if n != COORDINATOR):
            return False
        return all(p.leader >= 0 and set(p.isr) == set(p.replicas) for t in md.topics for p in t.partitions)

    def wait_healthy(self, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while time.monotonic() < deadline:
            if self.healthy():
                return True
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        return False

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _status_dict(st: apb.AgentStatus) -> dict:
    d = {"node": st.node, "state": st.state, "pid": st.pid, "restarts": st.restarts}
    if st.rules_error:
        d["rules_error"] = st.rules_error
    if st.metrics_port:  # the node's Prometheus endpoint, on the node's host
        d["metrics_url"] = f"http://{st.address.rsplit(':', 1)[0]}:{st.metrics_port}/metrics"
    return d


def _rule_text(r: Rule) -> str:
    what = {"delay": f"delay {r.delay_ms}ms" + (f"±{r.jitter_ms}" if r.jitter_ms else ""),
            "loss": f"loss p={r.probability:g}"}.get(r.kind, r.kind)
    method = f" [{r.method}]" if r.method else ""
    return f"{what} {r.src} -> {r.dst}{method} ({r.layer or 'edge'})"
