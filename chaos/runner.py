"""The runner: owns the worker threads, the nemesis thread and the history.

Jepsen's shape (STYLE.md §8): generators are pure, clients do I/O, and only
the runner sleeps, starts threads and writes the history. Each worker is a
logical process doing one op at a time: invoke, then ok / fail / info. After
an `info` the outcome is unknown, so the worker carries on under a new
process number (old + concurrency, as Jepsen does) with fresh clients.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from chaos import history as h

log = logging.getLogger(__name__)

__all__ = ["FAULT_FS", "HEAL_FS", "Runner"]

# Nemesis fs that open a fault window, and those that close one.
FAULT_FS = frozenset({"kill", "pause", "partition", "delay", "heartbeat-delay", "clock", "faults", "revoke-user",
                      "drop-response", "loss", "isolate", "drop"})
HEAL_FS = frozenset({"start", "resume", "heal", "restart", "restore-user"})


class Runner:
    """Runs one workload against one cluster and records the history.

    `nemesis(op) -> op` completes a nemesis op dict ({"f", "value"}) and
    returns it; `schedule` is a list of (at_s, op) in time order.
    """

    def __init__(self, workload, writer: h.HistoryWriter, bootstrap: str, *, producer_props: dict,
                 consumer_props: dict, concurrency: int = 4, ops_limit: int = 100_000,
                 time_limit_s: float = 60.0, seed: int = 0, nemesis: Callable[[dict], dict] | None = None,
                 schedule: list[tuple[float, dict]] | None = None, send_wait_s: float | None = None) -> None:
        """`send_wait_s`: the longest a worker's op may take (the client library's delivery timeout);
        default: brokerlab's delivery.timeout.ms in producer_props."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1 (got {concurrency})")
        self.workload = workload
        self.writer = writer
        self.bootstrap = bootstrap
        self.producer_props = dict(producer_props)
        self.consumer_props = dict(consumer_props)
        self.concurrency = concurrency
        self.ops_limit = ops_limit
        self.time_limit_s = time_limit_s
        self.nemesis = nemesis
        self.schedule = list(schedule or [])
        self.send_wait_s = send_wait_s
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self.generator = workload.generator(random.Random(seed))  # guarded by _lock
        self._ops_started = 0  # guarded by _lock
        self.counts: Counter = Counter()  # (f, type) -> n; guarded by _lock
        self.faults: dict[str, Any] = {}  # open fault windows, f -> value; guarded by _lock
        self.errors: list[str] = []  # worker crashes, for the run's log
        self.t0_ns = time.monotonic_ns()
        self._max_process = concurrency - 1
        self._threads: list[threading.Thread] = []

    # -- clock and history -------------------------------------------------
    def now_ns(self) -> int:
        return time.monotonic_ns() - self.t0_ns

    def elapsed_s(self) -> float:
        return self.now_ns() / 1e9

    def record(self, op: dict) -> dict:
        try:
            out = self.writer.append(op)
        except ValueError:  # the history was closed under a straggling worker
            return op
        if op["process"] != h.NEMESIS:
            with self._lock:
                self.counts[(op["f"], op["type"])] += 1
        return out

    # -- main phase ----------------------------------------------------------
    def start(self) -> None:
        self.t0_ns = time.monotonic_ns()
        for w in range(self.concurrency):
            t = threading.Thread(target=self._worker, args=(w,), name=f"worker-{w}", daemon=True)
            self._threads.append(t)
        if self.nemesis is not None and self.schedule:
            self._threads.append(threading.Thread(target=self._nemesis_loop, name="nemesis", daemon=True))
        for t in self._threads:
            t.start()

    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def wait(self, poll_s: float = 0.2, on_tick: Callable[[], None] | None = None) -> None:
        """Until the time limit or the op limit, then joins the threads (bounded)."""
        deadline = time.monotonic() + self.time_limit_s
        while self.running() and time.monotonic() < deadline and not self.stop_event.is_set():
            if on_tick:
                on_tick()
            time.sleep(poll_s)
        self.stop_event.set()
        self.join()

    def join(self, timeout_s: float | None = None) -> None:
        # A worker may sit in a send for up to delivery.timeout.ms; wait that long, no more.
        if timeout_s is not None:
            wait_s = timeout_s
        elif self.send_wait_s is not None:
            wait_s = self.send_wait_s + 5.0
        else:
            wait_s = int(self.producer_props.get("delivery.timeout.ms", 120000)) / 1000.0 + 5.0
        end = time.monotonic() + wait_s
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.warning("threads still busy after %.0f s: %s (their ops stay open in the history)",
                        wait_s, stuck)

    def _next(self, process: int):
        with self._lock:
            if self.stop_event.is_set() or self._ops_started >= self.ops_limit:
                return None
            self._ops_started += 1
            return self.generator.next_op(process)

    def _new_process(self, process: int) -> int:
        with self._lock:
            self._max_process = max(self._max_process, process + self.concurrency)
            return process + self.concurrency

    def _worker(self, w: int) -> None:
        process = w
        client = None
        try:
            while True:
                nxt = self._next(process)
                if nxt is None:
                    return
                f, value, extra = nxt
                if client is None:
                    try:
                        client = self.workload.client(self.bootstrap, self.producer_props,
                                                      self.consumer_props, w)
                    except Exception as e:  # noqa: BLE001 -- a client that cannot start is an op that did not happen
                        inv = self.record(h.invoke(process, f, value, self.now_ns(), **extra))
                        self.record(h.fail(inv, self.now_ns(), _name(e)))
                        self.stop_event.wait(0.5)
                        continue
                prepare = getattr(client, "prepare", None)
                if prepare is not None:
                    # Local state only (e.g. the positions a commit will carry), read before the invoke.
                    value = prepare(f, value, extra)
                inv = self.record(h.invoke(process, f, value, self.now_ns(), **extra))
                try:
                    out = client.invoke(f, value, extra)
                except Exception as e:  # an unexpected client error has an unknown outcome
                    log.exception("worker %d: %s failed", w, f)
                    from chaos.workloads import Outcome
                    out = Outcome("info", value, _name(e))
                done = h.complete(inv, out.type, inv["value"] if out.value is None else out.value,
                                  self.now_ns(), out.error)
                done.update(out.extra)
                self.record(done)
                if out.type == "info":
                    process = self._new_process(process)
                    if f != "crash":
                        # The clients' state is unknown too: start the new process afresh.
                        client.close()
                        client = None
        except Exception as e:  # keep the run going; the error goes to the report
            log.exception("worker %d died", w)
            self.errors.append(f"worker {w}: {_name(e)}: {e}")
        finally:
            if client is not None:
                client.close()

    # -- nemesis -------------------------------------------------------------
    def _nemesis_loop(self) -> None:
        for at_s, op in self.schedule:
            if self.stop_event.wait(max(0.0, at_s - self.elapsed_s())):
                return
            self.apply_fault(op)

    def apply_fault(self, op: dict) -> dict:
        """Runs one nemesis op and records its completion (process "nemesis", type info)."""
        try:
            done = self.nemesis(dict(op)) if self.nemesis else dict(op)
        except Exception as e:  # a failed fault is recorded, the run continues
            log.exception("nemesis %s failed", op.get("f"))
            done = dict(op, error=_name(e))
        rec = h.nemesis_op(done.get("f", op.get("f")), done.get("value", op.get("value")), self.now_ns())
        if done.get("error"):
            rec["error"] = str(done["error"])
        self.record(rec)
        self._track_fault(rec)
        return rec

    def _track_fault(self, rec: dict) -> None:
        f = rec["f"]
        with self._lock:
            if f == "heal" and rec.get("error"):
                pass  # some node did not heal: its faults are still on
            elif f == "heal":
                self.faults.clear()
            elif f in FAULT_FS:
                self.faults[f] = rec.get("value")
            elif f == "start":
                self.faults.pop("kill", None)
            elif f == "resume":
                self.faults.pop("pause", None)

    # -- final reads ---------------------------------------------------------
    def final_reads(self, timeout_s: float = 30.0, max_polls: int = 100_000) -> dict:
        """After heal: a fresh process assigns every key from the beginning and reads until every
        key's position reaches its high watermark, measured again each time it seems caught up (so
        a transaction acknowledged committed whose markers were still pending is read too, once its
        LSO catches up). An `info` ends that process: the next one starts over under a new process
        number with a new client. Bounded by `timeout_s` and `max_polls`.

        Returns {"complete": bool, "reason": why not (None when complete), "ends": {key: offset}}."""
        keys = list(self.workload.keys)
        deadline = time.monotonic() + timeout_s
        budget = [max_polls]
        reason, ends, last, reached = "no final-read client could be opened", {}, None, False
        while not reached and time.monotonic() < deadline and budget[0] > 0:
            process = self._fresh_process()
            client = self._final_client(deadline)
            if client is None:
                break
            reached, reason, ends, usable = self._read_to_end(client, process, keys, deadline, budget)
            if usable:  # kept for the workload's closing reads
                if last is not None:
                    last[1].close()
                last = (process, client)
            else:
                client.close()
        if last is not None:
            try:
                self._final_ops(last[1], last[0])
            finally:
                last[1].close()
        if reached:
            return {"complete": True, "reason": None, "ends": ends}
        return {"complete": False, "ends": ends,
                "reason": f"the final read did not reach the end (within {timeout_s:g} s, {max_polls} polls): {reason}"}

    def _fresh_process(self) -> int:
        with self._lock:
            self._max_process += 1
            return self._max_process

    def _final_client(self, deadline: float):
        while time.monotonic() < deadline:
            try:
                return self.workload.client(self.bootstrap, self.producer_props, self.consumer_props,
                                            self.concurrency)
            except Exception as e:  # noqa: BLE001 -- the cluster may still be recovering
                log.info("final read: client not ready (%s)", e)
                time.sleep(0.5)
        return None

    def _final_invoke(self, client, process: int, f: str, value, extra: dict):
        inv = self.record(h.invoke(process, f, value, self.now_ns(), **extra))
        try:
            out = client.invoke(f, value, extra)
        except Exception as e:  # noqa: BLE001 -- unknown outcome, recorded
            from chaos.workloads import Outcome
            out = Outcome("info", value, _name(e))
        self.record(h.complete(inv, out.type, value if out.value is None else out.value, self.now_ns(), out.error))
        return out

    def _read_to_end(self, client, process: int, keys: list[str], deadline: float,
                     budget: list[int]) -> tuple[bool, str, dict, bool]:
        """(reached the end, why not, the ends it last measured, whether the client is still usable)."""
        out = self._final_invoke(client, process, "assign", keys, {"seek_to_beginning": True})
        if out.type != "ok":
            return False, f"assign {out.type} ({out.error})", {}, False
        ends: dict[str, int] = {}
        why = "no poll finished"
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            out = self._final_invoke(client, process, "poll", [["poll"]], {})
            if out.type == "info":
                return False, f"poll info ({out.error})", ends, False
            if out.type == "fail":
                why = f"poll failed ({out.error})"
                time.sleep(0.1)
                continue
            if any(out.value[0][1].values()):
                continue
            try:
                ends = client.high_watermarks(keys)
                pos = client.positions(list(ends))
            except Exception as e:  # noqa: BLE001 -- leaders may still be moving: keep reading
                why = f"end offsets unknown ({_name(e)})"
                continue
            behind = {k: (pos.get(k, -1), end) for k, end in sorted(ends.items()) if pos.get(k, -1) < end}
            if not behind and set(ends) >= set(keys):
                return True, "", ends, True
            why = "behind on " + ", ".join(f"{k} (at {p} of {e})" for k, (p, e) in list(behind.items())[:5])
        return False, why, ends, True

    def _final_ops(self, client, process: int) -> None:
        """The workload's own closing reads (e.g. the group's committed offsets), after the final read."""
        for f, value, extra in getattr(self.workload, "final_ops", list)():
            if self._final_invoke(client, process, f, value, extra).type == "info":
                return

    def snapshot(self) -> dict:
        """For the progress display: elapsed, op counts by (f, type), open faults."""
        with self._lock:
            return {"elapsed_s": self.elapsed_s(), "counts": dict(self.counts), "faults": dict(self.faults),
                    "ops_started": self._ops_started}


def _name(e: BaseException) -> str:
    from chaos.workloads.log import error_name
    return error_name(e)
