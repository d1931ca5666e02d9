"""Reading and writing histories in the format of shared/HISTORY.md.

A history is JSON Lines, one operation per line, in the order things
happened. Operations are plain dicts with exactly HISTORY.md's fields
(`index`, `time`, `process`, `type`, `f`, `value`, optional `error`, and the
per-f extras `seek_to_beginning` / `group`); nothing here adds other fields,
because other tools read the same files.

Only the runner writes a history (through one `HistoryWriter`); the checker
reads it back with `read_history`.
"""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Iterator
from typing import IO, Any, Self

import orjson

__all__ = [
    "CLIENT_FS",
    "FAIL",
    "INFO",
    "INVOKE",
    "NEMESIS",
    "OK",
    "History",
    "HistoryReader",
    "HistoryWriter",
    "complete",
    "fail",
    "info",
    "invoke",
    "nemesis_op",
    "ok",
    "poll_mop",
    "read_history",
    "send_mop",
]

INVOKE = "invoke"
OK = "ok"
FAIL = "fail"
INFO = "info"
NEMESIS = "nemesis"
# The fs whose values the checker reads for sends and polls.
CLIENT_FS = ("send", "poll", "txn")

# Order in which fields are written, so that files diff and grep nicely.
_FIELD_ORDER = ("index", "time", "process", "type", "f", "value", "error")


class History(list):
    """A list of op dicts that remembers whether the file ended mid-line.

    A run killed while writing leaves a partial last line; such a history is
    a prefix of what happened, so the checker answers "unknown" for it.
    """

    truncated: bool = False
    path: str | None = None


class HistoryReader:
    """Streams a history's ops, one `orjson.loads` per line, holding one line at a time.

    The checker scans ops as they are read (`check(HistoryReader(path))`), so a long history is
    never in memory twice (the file's bytes and the parsed ops, or the ops and the checker's
    records). `truncated` is known once iteration has finished: a bad last line is a partial
    write by a killed runner; a bad line anywhere else raises ValueError naming the line."""

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self.truncated = False

    def __iter__(self) -> Iterator[dict]:
        loads = orjson.loads
        self.truncated = False
        with open(self.path, "rb") as fh:
            for n, line in enumerate(fh, 1):
                try:
                    op = loads(line)
                except orjson.JSONDecodeError as e:
                    if not line.strip():
                        continue
                    if _rest_blank(fh):
                        self.truncated = True
                        return
                    raise ValueError(f"{self.path}:{n}: not a JSON line: {e}") from None
                if type(op) is not dict:
                    if _rest_blank(fh):
                        self.truncated = True
                        return
                    raise ValueError(f"{self.path}:{n}: not a JSON object")
                yield op


def _rest_blank(fh) -> bool:
    return all(not line.strip() for line in fh)


def read_history(path: str) -> History:
    """Reads a JSON Lines history into a list. A bad last line marks it truncated.

    A bad line anywhere else is a corrupt file and raises ValueError naming
    the line, since silently skipping operations could hide anomalies.
    """
    history = History()
    history.path = str(path)
    reader = HistoryReader(path)
    # Millions of small containers, none garbage: the cyclic collector would
    # rescan them all again and again (it triples the load time).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        history.extend(reader)
    finally:
        if was_enabled:
            gc.enable()
    history.truncated = reader.truncated
    return history


class HistoryWriter:
    """Appends ops to a JSON Lines file; assigns `index`; thread-safe.

    Every append is flushed so that a killed runner leaves at most one
    partial line behind.
    """

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._fh: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 -- guarded by _lock
        self._next_index = 0  # guarded by _lock

    def append(self, op: dict) -> dict:
        """Writes `op` with the next index and returns it (a new dict)."""
        with self._lock:
            if self._fh is None:
                raise ValueError(f"history {self.path} is closed")
            out = {"index": self._next_index}
            for field in _FIELD_ORDER[1:]:
                if field in op:
                    out[field] = op[field]
            for field, v in op.items():
                if field not in out and field != "index":
                    out[field] = v
            self._fh.write(json.dumps(out, separators=(",", ":")) + "\n")
            self._fh.flush()
            self._next_index += 1
            return out

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def invoke(process: int | str, f: str, value: Any, time: int, **extra: Any) -> dict:
    """An invoke op; `extra` carries `seek_to_beginning` or `group`."""
    return {"time": time, "process": process, "type": INVOKE, "f": f, "value": value, **extra}


def complete(inv: dict, type_: str, value: Any, time: int, error: str | None = None) -> dict:
    """The completion of `inv`: same process, f and extras; new type/value."""
    op = {k: v for k, v in inv.items() if k not in ("index", "error")}
    op.update(time=time, type=type_, value=value)
    if error is not None:
        op["error"] = error
    return op


def ok(inv: dict, value: Any, time: int) -> dict:
    return complete(inv, OK, value, time)


def fail(inv: dict, time: int, error: str, value: Any = None) -> dict:
    """A definite failure: the op certainly did not take effect."""
    return complete(inv, FAIL, inv["value"] if value is None else value, time, error)


def info(inv: dict, time: int, error: str, value: Any = None) -> dict:
    """An indefinite outcome; the worker must continue under a new process."""
    return complete(inv, INFO, inv["value"] if value is None else value, time, error)


def nemesis_op(f: str, value: Any, time: int) -> dict:
    """A fault, recorded as an `info` op of process "nemesis"."""
    return {"time": time, "process": NEMESIS, "type": INFO, "f": f, "value": value}


def send_mop(key: str, value: int, offset: int | None = None, done: bool = False) -> list:
    """`["send", key, v]` on invoke; `["send", key, [offset, v]]` once done."""
    return ["send", key, [offset, value]] if done else ["send", key, value]


def poll_mop(result: dict[str, list] | None = None) -> list:
    """`["poll"]` on invoke; `["poll", {key: [[offset, v], ...]}]` once done."""
    return ["poll"] if result is None else ["poll", result]
