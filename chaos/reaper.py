"""The reaper of a LocalCluster: `python -m chaos.reaper PARENT_PID [DATA_DIR]`.

A running node exits by itself when the process that started it dies (node/main.py polls its parent
pid), but a node paused with SIGSTOP cannot poll, and a SIGKILLed parent leaves its temporary data
dir behind. This small process, started next to the nodes in its own session, waits for the parent
to die; then it resumes and stops every node the parent started (they carry BROKERLAB_PARENT_PID in
their environment, restarted ones included) and removes the data dir. A parent that stops its cluster
normally terminates the reaper first.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time

from node.pids import alive as _alive

PARENT_PID_ENV = "BROKERLAB_PARENT_PID"


def orphaned_nodes(parent: int) -> list[int]:
    """Pids of the processes whose environment says `parent` started them."""
    want = f"{PARENT_PID_ENV}={parent}".encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if want in f.read().split(b"\0"):
                    out.append(int(entry))
        except OSError:
            pass
    return out


def reap(parent: int, data_dir: str | None, grace_s: float = 10.0) -> None:
    pids = orphaned_nodes(parent)
    for pid in pids:
        for sig in (signal.SIGCONT, signal.SIGTERM):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_s
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        time.sleep(0.1)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if data_dir:
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    if not argv or not argv[0].isdigit():
        print("usage: python -m chaos.reaper PARENT_PID [DATA_DIR]", file=sys.stderr)
        return 2
    parent = int(argv[0])
    data_dir = argv[1] if len(argv) > 1 else None
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))  # the parent stopped its cluster itself
    while os.getppid() == parent:
        time.sleep(0.5)
    reap(parent, data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
