"""Whether a process is still running, for the reapers and cleanup loops."""
from __future__ import annotations


def alive(pid: int) -> bool:
    """Running: a zombie (exited, not yet reaped by its parent) is not."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
