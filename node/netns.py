"""Network namespaces for `brokerlab up --netns`: every node a host of its own on one machine.

A cluster's network is a bridge on the host with a private /24 (the host's address on it is .1, the
nodes' are .2 upward) and one network namespace per node, joined to the bridge by a veth pair. The
namespaces have no default route: their traffic goes to each other and to the host, nowhere else.

Every name starts with the owner's prefix `bl<pid><letter>-` (the bridge `...-br`, the host ends of
the veths `...-<i>`, the namespaces `...-<node>`), so what a dead `up` left behind is found by name:
`clean_leftovers()` removes every namespace and link whose owner pid no longer runs. Removing a
namespace removes its processes' network, its veth pair and its nftables rules with it.

`NetnsPlan` and the helpers above the adapter line are the model (no I/O); `NetnsNetwork` runs `ip`.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from node.pids import alive as _alive

log = logging.getLogger(__name__)

OWNER = re.compile(r"^bl(\d+)([a-z])-")
SUBNET_POOL = ipaddress.ip_network("10.213.0.0/16")  # private; /24s of it, one per cluster
LOCK_PATH = "/run/brokerlab-netns.lock"
LETTERS = "abcdefghijklmnopqrstuvwxyz"


class NetnsError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class NetnsPlan:
    prefix: str  # bl<pid><letter>-
    subnet: ipaddress.IPv4Network
    nodes: tuple[str, ...]

    def __post_init__(self):
        if not OWNER.match(self.prefix):
            raise ValueError(f"bad netns prefix {self.prefix!r}: expected bl<pid><letter>-")
        if len(self.bridge) > 15 or len(self.veth(len(self.nodes) - 1)) > 15:
            raise ValueError(f"prefix {self.prefix!r} makes interface names longer than Linux's 15 characters")
        if self.subnet.num_addresses < len(self.nodes) + 3:
            raise ValueError(f"subnet {self.subnet} has no room for the host and {len(self.nodes)} nodes")

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def host_ip(self) -> str:
        return str(self.subnet.network_address + 1)

    def namespace(self, node: str) -> str:
        return f"{self.prefix}{node}"

    def veth(self, i: int) -> str:
        return f"{self.prefix}{i}"

    def ip(self, node: str) -> str:
        return str(self.subnet.network_address + 2 + self.nodes.index(node))

    def commands(self) -> list[list[str]]:
        """The `ip` commands that build the network, in order."""
        plen = self.subnet.prefixlen
        out = [["link", "add", self.bridge, "type", "bridge"],
               ["addr", "add", f"{self.host_ip}/{plen}", "dev", self.bridge],
               ["link", "set", self.bridge, "up"]]
        for i, node in enumerate(self.nodes):
            ns = self.namespace(node)
            out += [["netns", "add", ns],
                    ["link", "add", self.veth(i), "type", "veth", "peer", "name", "eth0", "netns", ns],
                    ["link", "set", self.veth(i), "master", self.bridge, "up"],
                    ["-n", ns, "addr", "add", f"{self.ip(node)}/{plen}", "dev", "eth0"],
                    ["-n", ns, "link", "set", "eth0", "up"],
                    ["-n", ns, "link", "set", "lo", "up"]]
        return out


def new_prefix(pid: int | None = None, taken=None) -> str:
    """A prefix no other cluster of this machine uses: the pid, and a letter no live cluster of this
    process has (`taken(prefix)`: whether something is named with it; default: look)."""
    taken = taken or (lambda p: any(ours(p).values()))
    pid = pid or os.getpid()
    for letter in LETTERS:
        if not taken(f"bl{pid}{letter}-"):
            return f"bl{pid}{letter}-"
    raise NetnsError(f"this process runs {len(LETTERS)} netns clusters already")


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise ValueError(f"--subnet {text!r}: {e}") from None
    if net.version != 4 or not net.is_private or net.is_loopback:
        raise ValueError(f"--subnet {text}: give a private IPv4 subnet (10/8, 172.16/12, 192.168/16)")
    return net


def pick_subnet(in_use, pool: ipaddress.IPv4Network = SUBNET_POOL) -> ipaddress.IPv4Network:
    """The first /24 of `pool` that overlaps no network in use on this host."""
    for net in pool.subnets(new_prefix=24):
        if not any(net.overlaps(u) for u in in_use):
            return net
    raise NetnsError(f"every /24 of {pool} is in use on this host: give --subnet")


def owner_pid(name: str) -> int | None:
    m = OWNER.match(name)
    return int(m.group(1)) if m else None


def leftovers(namespaces, links, alive) -> tuple[list[str], list[str]]:
    """The namespaces and links of ours whose owner is no longer running (`alive(pid)`)."""
    def dead(name):
        pid = owner_pid(name)
        return pid is not None and not alive(pid)
    return sorted(n for n in namespaces if dead(n)), sorted(n for n in links if dead(n))


# -- adapter ---------------------------------------------------------------------------------------

def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15, check=False)
    if check and p.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed: {p.stderr.strip()}")
    return p


def missing_privileges() -> list[str]:
    """What this process lacks to build a netns cluster ([] = nothing)."""
    from node.kernel_faults import has_cap_net_admin
    out = []
    if os.geteuid() != 0 and not has_cap_net_admin():
        out.append("root or CAP_NET_ADMIN (run as root, or `sudo setcap cap_net_admin,cap_sys_admin+ep` "
                   "on the Python interpreter)")
    if shutil.which("ip") is None:
        out.append("the ip command (Debian package iproute2)")
    if shutil.which("nft") is None:
        out.append("the nft command (Debian package nftables)")
    return out


def require_privileges(what: str = "--netns") -> None:
    missing = missing_privileges()
    if missing:
        raise NetnsError(f"{what} needs {' and '.join(missing)}")


def in_use_networks() -> list[ipaddress.IPv4Network]:
    out = []
    for entry in json.loads(_ip("-j", "addr").stdout or "[]"):
        for a in entry.get("addr_info", []):
            if a.get("family") == "inet":
                out.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
    for r in json.loads(_ip("-j", "route").stdout or "[]"):
        dst = r.get("dst", "")
        if dst and dst != "default":
            out.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    return out


def namespaces() -> list[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


def links() -> list[str]:
    return [e["ifname"] for e in json.loads(_ip("-j", "link").stdout or "[]")]


def ours(prefix: str = "bl") -> dict[str, list[str]]:
    """Every namespace and link whose name says brokerlab made it (or the given prefix's)."""
    return {"namespaces": [n for n in namespaces() if OWNER.match(n) and n.startswith(prefix)],
            "links": [n for n in links() if OWNER.match(n) and n.startswith(prefix)]}


def owned_by(pid: int) -> dict[str, list[str]]:
    """Every namespace and link of ours whose name says process `pid` made it."""
    return {"namespaces": [n for n in namespaces() if owner_pid(n) == pid],
            "links": [n for n in links() if owner_pid(n) == pid]}


def remove_namespace(ns: str) -> None:
    """Kills whatever runs in it (agents, nodes), then deletes it: its veth and rules go with it."""
    pids = _ip("netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    deadline = time.monotonic() + 5
    while any(_alive(int(p)) for p in pids if p.isdigit()) and time.monotonic() < deadline:
        time.sleep(0.02)
    _ip("netns", "del", ns, check=False)


def remove_prefix(prefix: str) -> list[str]:
    """Removes every namespace and link named with `prefix`; returns what it removed."""
    found = ours(prefix)
    for ns in found["namespaces"]:
        remove_namespace(ns)
    for link in found["links"]:
        _ip("link", "del", link, check=False)
    return [f"namespace {n}" for n in found["namespaces"]] + [f"link {n}" for n in found["links"]]


def clean_leftovers() -> list[str]:
    """Removes what netns clusters of processes that no longer run left behind; says what."""
    ns, lk = leftovers(namespaces(), links(), _alive)
    for n in ns:
        remove_namespace(n)
    for link in lk:
        if link in links():  # a veth went with its namespace
            _ip("link", "del", link, check=False)
    return [f"namespace {n}" for n in ns] + [f"link {n}" for n in lk]


class NetnsNetwork:
    """One cluster's bridge and namespaces (built by create(), removed by remove())."""

    def __init__(self, nodes: list[str], subnet: str | None = None, prefix: str | None = None):
        self.nodes = list(nodes)
        self.requested_subnet = parse_subnet(subnet) if subnet else None
        self._given_prefix = prefix
        self.prefix = prefix or ""  # chosen by create(), under the lock
        self.plan: NetnsPlan | None = None

    def create(self) -> NetnsPlan:
        require_privileges()
        # One cluster at a time picks a subnet and claims it, so parallel runs never share one.
        with open(LOCK_PATH, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            in_use = in_use_networks()
            if self.requested_subnet is not None:
                clash = [str(u) for u in in_use if u.overlaps(self.requested_subnet)]
                if clash:
                    raise NetnsError(f"--subnet {self.requested_subnet} overlaps {', '.join(clash)}, "
                                     f"already on this host")
                subnet = self.requested_subnet
            else:
                subnet = pick_subnet(in_use)
            self.prefix = self._given_prefix or new_prefix()
            self.plan = NetnsPlan(self.prefix, subnet, tuple(self.nodes))
            try:
                for cmd in self.plan.commands():
                    _ip(*cmd)
            except BaseException:
                self.remove()
                raise
        log.info("netns network %s: bridge %s, %s", subnet, self.plan.bridge,
                 ", ".join(f"{n}={self.plan.ip(n)}" for n in self.nodes))
        return self.plan

    def exec_argv(self, node: str) -> list[str]:
        return ["ip", "netns", "exec", self.plan.namespace(node)]

    def remove(self) -> list[str]:
        return remove_prefix(self.prefix) if self.prefix else []


def start_reaper(prefix: str) -> subprocess.Popen:
    """A small process that removes the network if this one dies without doing it (SIGKILL, a crash)."""
    return subprocess.Popen([sys.executable, "-m", "node.netns", str(os.getpid()), prefix],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _reap(parent: int, prefix: str) -> None:
    while _alive(parent):
        time.sleep(0.5)
    remove_prefix(prefix)


if __name__ == "__main__":
    _reap(int(sys.argv[1]), sys.argv[2])
