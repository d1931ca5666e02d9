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
from typing import Any, Callable

from chaos import history as h

log = logging.getLogger(__name__)

__all__ = ["Runner", "FAULT_FS", "HEAL_FS"]

# Nemesis fs that open a fault window, and those that close one.
FAULT_FS = frozenset({"kill", "pause", "partition", "delay", "heartbeat-delay", "clock", "faults",
                      "drop-response", "loss", "isolate", "drop"})
HEAL_FS = frozenset({"start", "resume", "heal", "restart"})


class Runner:
    """Runs one workload against one cluster and records the history.

    `nemesis(op) -> op` completes a nemesis op dict ({"f", "value"}) and
    returns it; `schedule` is a list of (at_s, op) in time order.
    """

    def __init__(self, workload, writer: h.HistoryWriter, bootstrap: str, *, producer_props: dict,
                 consumer_props: dict, concurrency: int = 4, ops_limit: int = 100_000,
                 time_limit_s: float = 60.0, seed: int = 0, nemesis: Callable[[dict], dict] | None = None,
                 schedule: list[tuple[float, dict]] | None = None) -> None:
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
        wait_s = timeout_s if timeout_s is not None else \
            int(self.producer_props.get("delivery.timeout.ms", 120000)) / 1000.0 + 5.0
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
                except Exception as e:  # noqa: BLE001 -- an unexpected client error has an unknown outcome
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
        except Exception as e:  # noqa: BLE001 -- keep the run going; the error goes to the report
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
        except Exception as e:  # noqa: BLE001 -- a failed fault is recorded, the run continues
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
            if f == "heal":
                self.faults.clear()
            elif f in FAULT_FS:
                self.faults[f] = rec.get("value")
            elif f == "start":
                self.faults.pop("kill", None)
            elif f == "resume":
                self.faults.pop("pause", None)

    # -- final reads ---------------------------------------------------------
    def final_reads(self, timeout_s: float = 30.0, empty_polls: int = 20) -> dict[str, int]:
        """After heal: one fresh process assigns every key from the beginning and reads to the end.

        Returns the end offsets it aimed for. Bounded by `timeout_s`; keys it
        cannot reach stay unread (their writes then show as unseen).
        """
        keys = list(self.workload.keys)
        with self._lock:
            self._max_process += 1
            process = self._max_process
        deadline = time.monotonic() + timeout_s
        client = None
        while client is None and time.monotonic() < deadline:
            try:
                client = self.workload.client(self.bootstrap, self.producer_props, self.consumer_props,
                                              self.concurrency)
            except Exception as e:  # noqa: BLE001 -- the cluster may still be recovering
                log.info("final read: client not ready (%s)", e)
                time.sleep(0.5)
        if client is None:
            return {}
        try:
            ends: dict[str, int] = {}
            while time.monotonic() < deadline:
                try:
                    ends = client.end_offsets(keys)
                    break
                except Exception as e:  # noqa: BLE001 -- leaders may still be moving
                    log.info("final read: end offsets not ready (%s)", e)
                    time.sleep(0.5)
            inv = self.record(h.invoke(process, "assign", keys, self.now_ns(), seek_to_beginning=True))
            out = client.invoke("assign", keys, {"seek_to_beginning": True})
            self.record(h.complete(inv, out.type, keys, self.now_ns(), out.error))
            if out.type != "ok":
                return ends
            streak = 0
            while time.monotonic() < deadline and streak < empty_polls:
                inv = self.record(h.invoke(process, "poll", [["poll"]], self.now_ns()))
                out = client.invoke("poll", [["poll"]], {})
                self.record(h.complete(inv, out.type, out.value, self.now_ns(), out.error))
                if out.type == "info":
                    break
                got = out.type == "ok" and any(out.value[0][1].values())
                streak = 0 if got else streak + 1
                if not got and ends and self._caught_up(client, ends):
                    break
            self._final_ops(client, process)
            return ends
        finally:
            client.close()

    def _final_ops(self, client, process: int) -> None:
        """The workload's own closing reads (e.g. the group's committed offsets), after the final read."""
        for f, value, extra in getattr(self.workload, "final_ops", lambda: [])():
            inv = self.record(h.invoke(process, f, value, self.now_ns(), **extra))
            try:
                out = client.invoke(f, value, extra)
            except Exception as e:  # noqa: BLE001 -- unknown outcome, recorded
                from chaos.workloads import Outcome
                out = Outcome("info", value, _name(e))
            done = h.complete(inv, out.type, value if out.value is None else out.value, self.now_ns(), out.error)
            self.record(done)
            if out.type == "info":
                return

    @staticmethod
    def _caught_up(client, ends: dict[str, int]) -> bool:
        try:
            pos = client.positions(list(ends))
        except Exception:  # noqa: BLE001 -- not known yet: keep reading
            return False
        return all(pos.get(k, -1) >= end for k, end in ends.items())

    def snapshot(self) -> dict:
        """For the progress display: elapsed, op counts by (f, type), open faults."""
        with self._lock:
            return {"elapsed_s": self.elapsed_s(), "counts": dict(self.counts), "faults": dict(self.faults),
                    "ops_started": self._ops_started}


def _name(e: BaseException) -> str:
    from chaos.workloads.log import error_name
    return error_name(e)
