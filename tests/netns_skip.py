"""Whether the --netns tests can run here; they need root (CI runs as root).

Not root: skipped with the reason shown. Root but no namespaces under CI=true: a failure, so CI
cannot pass without having run them.
"""
from __future__ import annotations

import os
import subprocess

import pytest


def netns_unavailable() -> str | None:
    from node import netns
    if os.geteuid() != 0:
        return "not root: network namespaces and nftables rules need root or CAP_NET_ADMIN (CI runs as root)"
    missing = netns.missing_privileges()
    if missing:
        return "missing " + " and ".join(missing)
    probe = f"bl{os.getpid()}z-probe"
    p = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if p.returncode:
        return f"cannot create a network namespace: {p.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def netns_mark():
    why = netns_unavailable()
    if why and os.geteuid() == 0 and os.environ.get("CI") == "true":
        pytest.fail(f"CI runs as root but --netns cannot work here: {why}", pytrace=False)
    return pytest.mark.skipif(why is not None, reason=f"--netns tests skipped: {why}")
