"""Network faults in the kernel: nftables rules an agent installs in its node's host (a network
namespace under `brokerlab up --netns`, or a real machine).

The model (`ruleset`) turns the cluster's kernel-layer rules (node.faults.Rule with layer "kernel")
into the nftables ruleset of one node: every rule is enforced where its traffic arrives (the `dst`
node drops packets from the `src` node's address), silently, so connections hang as on a real
network instead of being refused. All of it lives in one table, `inet brokerlab`, replaced whole
in one nft transaction: healing removes exactly that table, nothing else of the host's firewall.

What the kernel can express: drop (a partition, one-way included), loss (a share of packets,
which TCP retransmits: it shows as latency and stalls, not failed calls) and cutting clients off
(every address that is not a node, on the node's service ports). It cannot tell gRPC methods or
client ids apart; those rules stay at the edge (chaos/controller.py decides the layer).

Delay and jitter on a link between nodes are netem qdiscs where the kernel has netem (`netem_missing`
says why not): enforced where the traffic leaves (the `src` node's egress), so `tc_commands` gives
the device a `prio` root qdisc (handle b100:) with one netem band per distinct delay and u32
filters sending the delayed destinations' packets to it; other traffic keeps prio's own bands, so
a delay on one link slows no other. Healing deletes that root qdisc, which takes its bands and
filters with it and gives the device back the kernel's default.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

from node.faults import Rule

log = logging.getLogger(__name__)

TABLE = "brokerlab"
KERNEL_KINDS = ("drop", "loss")  # nftables; "delay" is netem's (tc), when the kernel has it
TC_ROOT = 0xB100  # major of our root qdisc's handle; netem bands get TC_ROOT + band (b104:, b105:, ...)
PRIO_BANDS = 3  # prio's own bands: its priomap sends traffic no filter matched to these, as the stock prio does
MAX_BANDS = 16  # the kernel's limit for prio (TCQ_PRIO_BANDS)
NETEM_LIMIT = 10000  # packets a netem band holds (netem's default 1000 drops a busy link's packets at 100 ms)


class KernelFaultsError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class NodeHost:
    """What the kernel rules of one node need: its name, the nodes' addresses, its service ports."""
    name: str
    hosts: dict[str, str]  # node name -> IP
    service_ports: tuple[int, ...]  # gRPC, Kafka: what clients reach (not the agent's, not metrics)


def kernel_expressible(rule: Rule, nodes, netem: bool = False) -> bool:
    """Can this rule be a packet filter? Only whole links between addresses: no method filter, and the
    source a node or every client (a client id is invisible to the kernel). A delay only with netem
    (`netem`: every node's kernel has it), and only from a node: it is applied where packets leave,
    and clients send from hosts no agent of ours configures."""
    if rule.method or rule.dst not in nodes:
        return False
    if rule.kind == "delay":
        return netem and rule.src in nodes and rule.src != rule.dst
    if rule.kind not in KERNEL_KINDS:
        return False
    return rule.src in nodes or rule.src == "client:*"


def _ip(host: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise KernelFaultsError(f"{what}: '{host}' is not an IP address; kernel rules need the nodes' "
                                f"addresses (give nodes an IP as --host / --advertised-host)") from None


def ruleset(node: NodeHost, rules: list[Rule]) -> str:
    """The nft script that makes `node`'s table exactly these rules (those with dst == node.name);
    with none, it removes the table."""
    lines = []
    for r in rules:
        if r.layer != "kernel" or r.dst != node.name or r.kind not in KERNEL_KINDS:
            continue
        if r.src == "client:*":
            nodes = sorted({_ip(h, f"node {n}") for n, h in node.hosts.items()})
            ports = ", ".join(str(p) for p in sorted(set(node.service_ports)))
            match = f"ip saddr != {{ {', '.join(nodes)} }} tcp dport {{ {ports} }}"
        else:
            if r.src not in node.hosts:
                raise KernelFaultsError(f"rule {r.kind} {r.src} -> {r.dst}: no address known for {r.src}")
            match = f"ip saddr {_ip(node.hosts[r.src], f'node {r.src}')}"
        if r.kind == "loss":
            match += f" numgen random mod 10000 < {round(r.probability * 10000)}"
        lines.append(f"    {match} drop comment \"{r.tag or r.kind} {r.src}\"")
    out = [f"table inet {TABLE}", f"delete table inet {TABLE}"]  # declare, then delete: works when absent
    if lines:
        out += [f"table inet {TABLE} {{", "  chain input {",
                "    type filter hook input priority filter - 10; policy accept;", *lines, "  }", "}"]
    return "\n".join(out) + "\n"


def link_delays(node: NodeHost, rules: list[Rule]) -> dict[str, tuple[int, int]]:
    """Destination IP -> (delay_ms, jitter_ms) of the kernel delay rules `node` sends on (src == node.name).
    Several rules on one link add up, as they do at the edge."""
    out: dict[str, tuple[int, int]] = {}
    for r in rules:
        if r.layer != "kernel" or r.kind != "delay" or r.src != node.name:
            continue
        if r.dst not in node.hosts:
            raise KernelFaultsError(f"rule delay {r.src} -> {r.dst}: no address known for {r.dst}")
        ip = _ip(node.hosts[r.dst], f"node {r.dst}")
        d, j = out.get(ip, (0, 0))
        out[ip] = (d + max(0, r.delay_ms), j + max(0, r.jitter_ms))
    return {ip: dj for ip, dj in out.items() if dj[0] or dj[1]}


def _handle(major: int) -> str:
    return f"{major:x}:"


def tc_commands(dev: str, delays: dict[str, tuple[int, int]]) -> list[list[str]]:
    """The tc commands that give `dev` these per-destination delays (none: no commands): a prio root,
    one netem band per distinct (delay, jitter) after prio's own bands, a u32 filter per destination."""
    if not delays:
        return []
    values = sorted(set(delays.values()))
    bands = PRIO_BANDS + len(values)
    if bands > MAX_BANDS:
        raise KernelFaultsError(f"{dev}: {len(values)} different delays on one node's links; the kernel's prio "
                                f"qdisc holds {MAX_BANDS - PRIO_BANDS} (give links the same delay)")
    root = _handle(TC_ROOT)
    out = [["tc", "qdisc", "add", "dev", dev, "root", "handle", root, "prio", "bands", str(bands)]]
    band_of = {}
    for i, (delay, jitter) in enumerate(values):
        band = PRIO_BANDS + 1 + i  # classes are numbered from 1: b100:1 .. b100:3 are prio's own
        band_of[(delay, jitter)] = band
        netem = ["delay", f"{delay}ms"] + ([f"{jitter}ms"] if jitter else [])
        out.append(["tc", "qdisc", "add", "dev", dev, "parent", f"{root}{band:x}", "handle", _handle(TC_ROOT + band),
                    "netem", *netem, "limit", str(NETEM_LIMIT)])
    for ip in sorted(delays, key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a))):
        v6 = ipaddress.ip_address(ip).version == 6
        out.append(["tc", "filter", "add", "dev", dev, "parent", root, "protocol", "ipv6" if v6 else "ip",
                    "prio", "2" if v6 else "1",  # one filter priority per protocol, as the kernel requires
                    "u32", "match", "ip6" if v6 else "ip", "dst", f"{ip}/{128 if v6 else 32}",
                    "flowid", f"{root}{band_of[delays[ip]]:x}"])
    return out


def tc_remove_command(dev: str) -> list[str]:
    """Deletes our root qdisc (with its bands and filters) and nothing else: tc refuses when the
    root qdisc has another handle."""
    return ["tc", "qdisc", "del", "dev", dev, "root", "handle", _handle(TC_ROOT)]


# -- adapter ---------------------------------------------------------------------------------------

def missing_tools() -> list[str]:
    """What this host lacks to apply kernel rules, as things to install or grant ([] = nothing)."""
    out = []
    if shutil.which("nft") is None:
        out.append("the nft command (Debian package nftables)")
    if os.geteuid() != 0 and not has_cap_net_admin():
        out.append("root or CAP_NET_ADMIN")
    return out


def has_cap_net_admin() -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 12))
    except OSError:
        pass
    return False


def _run(argv: list[str], script: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=script, capture_output=True, text=True, timeout=10, check=False)


def apply(script: str) -> None:
    """One nft transaction: all of the new table or nothing."""
    try:
        p = _run(["nft", "-f", "-"], script)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KernelFaultsError(f"nft failed: {e}") from None
    if p.returncode != 0:
        raise KernelFaultsError(f"nft failed ({p.returncode}): {p.stderr.strip()}")


def remove() -> None:
    apply(f"table inet {TABLE}\ndelete table inet {TABLE}\n")


def installed() -> str:
    """The table as nft lists it ("" when absent)."""
    p = _run(["nft", "list", "table", "inet", TABLE])
    return p.stdout if p.returncode == 0 else ""


def netem_missing(run=None) -> str:
    """"" when this kernel can delay links with netem as `tc_commands` does, else why not. Tried once,
    in a scratch namespace (`bl<pid>z-netem`, so a crash's leftover is found by node.netns) on a veth
    pair: netem alone first (what a kernel usually lacks), then the whole prio + netem + u32 setup."""
    run = run or _run
    if shutil.which("tc") is None:
        return "no tc command (Debian package iproute2)"
    ns = f"bl{os.getpid()}z-netem"
    try:
        p = run(["ip", "netns", "add", ns])
        if p.returncode:
            return f"netem not checked: no scratch namespace ({p.stderr.strip()})"
        try:
            p = run(["ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1"])
            if p.returncode:
                return f"netem not checked: no veth pair ({p.stderr.strip()})"
            p = run(["tc", "-n", ns, "qdisc", "add", "dev", "v1", "root", "netem", "delay", "1ms"])
            if p.returncode:
                why = "" if "unknown" in p.stderr else f": {p.stderr.strip()}"
                return f"this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM){why}"
            for cmd in tc_commands("v0", {"10.0.0.1": (1, 1)}):
                p = run([cmd[0], "-n", ns, *cmd[1:]])
                if p.returncode:
                    return f"this kernel cannot `{' '.join(cmd)}` ({p.stderr.strip()})"
            return ""
        finally:
            run(["ip", "netns", "del", ns])
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"netem not checked: {e}"


class TcDelays:
    """The netem delays this agent installed, per device; `apply` makes them the given rules' (a
    device whose delays did not change is left alone), `remove` deletes all of ours."""

    def __init__(self, run=None):
        self.run = run or _run
        self.installed: dict[str, list[list[str]]] = {}  # device -> the commands that built it

    def _tc(self, cmd: list[str]) -> subprocess.CompletedProcess:
        try:
            return self.run(cmd)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise KernelFaultsError(f"{' '.join(cmd)}: {e}") from None

    def device_of(self, ip: str) -> str:
        p = self._tc(["ip", "-j", "route", "get", ip])
        try:
            return json.loads(p.stdout)[0]["dev"]
        except (ValueError, LookupError, TypeError):
            raise KernelFaultsError(f"no route to {ip} here ({p.stderr.strip() or p.stdout.strip()})") from None

    def apply(self, node: NodeHost, rules: list[Rule]) -> None:
        per_dev: dict[str, dict[str, tuple[int, int]]] = {}
        for ip, dj in link_delays(node, rules).items():
            per_dev.setdefault(self.device_of(ip), {})[ip] = dj
        want = {dev: tc_commands(dev, d) for dev, d in per_dev.items()}
        for dev in sorted(set(self.installed) | set(want)):
            cmds = want.get(dev, [])
            if self.installed.get(dev, []) == cmds:
                continue
            if dev in self.installed:
                self._delete(dev)
            else:
                self._claim(dev)
            for cmd in cmds:
                p = self._tc(cmd)
                if p.returncode:
                    self._tc(tc_remove_command(dev))  # nothing half-built stays
                    raise KernelFaultsError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
            if cmds:
                self.installed[dev] = cmds

    def _delete(self, dev: str) -> None:
        p = self._tc(tc_remove_command(dev))
        self.installed.pop(dev, None)
        # Gone already (the device went, or its root qdisc is no longer ours: tc says "Invalid handle").
        if p.returncode and not any(w in p.stderr for w in ("Cannot find", "Invalid handle", "No such")):
            raise KernelFaultsError(f"{' '.join(tc_remove_command(dev))} failed ({p.returncode}): {p.stderr.strip()}")

    def _claim(self, dev: str) -> None:
        """A device's root qdisc becomes ours only if it is the kernel's default (handle 0:) or an
        earlier agent's of ours (removed first): a qdisc someone configured is not replaced."""
        p = self._tc(["tc", "-j", "qdisc", "show", "dev", dev, "root"])
        try:
            roots = [q for q in json.loads(p.stdout or "[]") if q.get("root")]
        except ValueError:
            roots = []
        for q in roots:
            if q.get("handle") == _handle(TC_ROOT):
                self._tc(tc_remove_command(dev))
            elif q.get("handle") not in (None, "0:"):
                raise KernelFaultsError(f"{dev} has a root qdisc of its own ({q.get('kind')} {q.get('handle')}): "
                                        f"brokerlab adds netem delays only where the kernel's default is")

    def remove(self) -> None:
        for dev in sorted(self.installed):
            self._delete(dev)


def remove_leftover_delays(run=None) -> list[str]:
    """Deletes root qdiscs of ours (handle b100:) an earlier agent of this host left; says on which devices."""
    run = run or _run
    if shutil.which("tc") is None:
        return []
    try:
        p = run(["tc", "-j", "qdisc", "show"])
        found = [q["dev"] for q in json.loads(p.stdout or "[]")
                 if q.get("root") and q.get("handle") == _handle(TC_ROOT) and q.get("dev")]
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError):
        return []
    for dev in found:
        run(tc_remove_command(dev))
    return found
