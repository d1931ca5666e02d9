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
"""
from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

from node.faults import Rule

log = logging.getLogger(__name__)

TABLE = "brokerlab"
KERNEL_KINDS = ("drop", "loss")


class KernelFaultsError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class NodeHost:
    """What the kernel rules of one node need: its name, the nodes' addresses, its service ports."""
    name: str
    hosts: dict[str, str]  # node name -> IP
    service_ports: tuple[int, ...]  # gRPC, Kafka: what clients reach (not the agent's, not metrics)


def kernel_expressible(rule: Rule, nodes) -> bool:
    """Can this rule be a packet filter? Only whole links between addresses: no method filter, and the
    source a node or every client (a client id is invisible to the kernel)."""
    if rule.kind not in KERNEL_KINDS or rule.method:
        return False
    if rule.dst not in nodes:
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
        if r.layer != "kernel" or r.dst != node.name:
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


def has_netem() -> bool:
    """Whether this kernel has the netem qdisc (tried on a dummy device of this host's namespace)."""
    dev = f"blnetem{os.getpid() % 100000}"
    try:
        if _run(["ip", "link", "add", dev, "type", "dummy"]).returncode:
            return False
        try:
            return _run(["tc", "qdisc", "add", "dev", dev, "root", "netem", "delay", "1ms"]).returncode == 0
        finally:
            _run(["ip", "link", "del", dev])
    except (OSError, subprocess.TimeoutExpired):
        return False
