"""The checker: finds HISTORY.md's anomalies in a history of a Kafka workload.

Modelled on Jepsen's Kafka checker (jepsen/tests/kafka.clj) so that its
verdicts read the same way; names and evidence rules are HISTORY.md's.

The checker reads nothing but the history. It is a few linear passes over
plain dicts, lists and tuples (no per-op objects) so that a million-op
history checks in seconds:

1. `_scan`: parse each completion once into a record `(index, process, type,
   f, writes, reads, extra)`; gather written / read values by type, the
   per-key logs (offset -> value) from every poll and from the sends that
   must have happened, writer-of, commits.
2. `_version_orders`: per key, the known offsets in order; a value's *dense
   index* is its position among them (offsets are sparse).
3. Log anomalies (lost-write, unseen, duplicate, inconsistent-offsets, G1a).
4. `_order_pass`: per-op and per-process order checks (int-/poll-skip,
   -nonmonotonic-poll, -send).
5. `_cycles`: write-read / write-write graph between transactions, Tarjan.

`check` never raises: a crash inside becomes verdict "unknown".
"""

from __future__ import annotations

import bisect
import gc
import json
import sys
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from chaos.history import HistoryReader

__all__ = ["ALLOWED", "ALLOWED_UNDER_SUBSCRIBE", "ANOMALY_NAMES", "check", "run_check"]

ANOMALY_NAMES = (
    "lost-write", "unseen", "duplicate", "inconsistent-offsets", "G1a", "precommitted-read",
    "G1c", "G1c-ww", "G0", "int-send-skip", "int-nonmonotonic-send", "nonmonotonic-send",
    "poll-skip", "nonmonotonic-poll", "int-poll-skip", "int-nonmonotonic-poll", "offset-regression",
)
# Reported, never fatal: Kafka does not isolate writes between transactions.
ALLOWED = frozenset({"G1c-ww", "G0", "int-send-skip"})
# Fatal only when the reading process was not under subscribe (rebalances
# legitimately move a subscribed consumer's position).
ALLOWED_UNDER_SUBSCRIBE = frozenset({"poll-skip", "nonmonotonic-poll"})

# Bounds on evidence so that a systematic bug in a long run does not produce
# gigabytes of JSON; full counts go to stats["anomaly_counts"].
MAX_EVIDENCE = 1000
MAX_SKIPPED = 32
MAX_CYCLE_TRIES = 16

_CLIENT_FS = frozenset({"send", "poll", "txn"})
_INF = float("inf")


# --------------------------------------------------------------------------
# Public API


def check(history: Iterable[dict]) -> dict:
    """Checks a history; returns {"valid", "anomaly_types", "anomalies", "stats"}.

    `history` is a list of ops or a `HistoryReader`, which is scanned as it is read (one pass), so
    the ops themselves are never all in memory; a reader's errors become verdict "unknown"."""
    t0 = time.perf_counter()
    # The analysis builds millions of tuples and none of them are cyclic
    # garbage; the cyclic collector would only rescan them over and over.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        result = _Checker(history).run()
    except Exception as e:  # noqa: BLE001 -- a checker never raises: the verdict becomes unknown
        result = {
            "valid": "unknown",
            "anomaly_types": [],
            "anomalies": {},
            "stats": {"error": f"{type(e).__name__}: {e}"},
        }
    finally:
        if was_enabled:
            gc.enable()
    result["stats"]["check_time_ms"] = int((time.perf_counter() - t0) * 1000)
    return result


def run_check(path: str, as_json: bool = False) -> int:
    """Reads and checks a history file; prints it; 0 valid, 1 invalid, 2 unknown."""
    result = check(HistoryReader(path))
    if as_json:
        print(json.dumps(result, indent=1, sort_keys=True, default=str))
    else:
        print(summarize(result))
    return {True: 0, False: 1}.get(result["valid"], 2)


def summarize(result: dict, examples: int = 3) -> str:
    """A short human summary: the verdict first, then each anomaly type."""
    verdict = {True: "VALID", False: "INVALID"}.get(result["valid"], "UNKNOWN")
    stats = result.get("stats", {})
    lines = [verdict]
    if "error" in stats:
        lines.append(f"  error: {stats['error']}")
    if stats.get("truncated"):
        lines.append("  history is truncated (its last line is partial)")
    counts = stats.get("anomaly_counts", {})
    for name in result["anomaly_types"]:
        evidence = result["anomalies"][name]
        allowed = _allowed(name, evidence)
        tag = " (allowed)" if allowed else ""
        lines.append(f"{name}{tag}: {counts.get(name, len(evidence))}")
        for ev in evidence[:examples]:
            lines.append("  " + json.dumps(ev, sort_keys=True, default=str))
    brief = {k: stats[k] for k in ("ops", "keys", "values_acknowledged", "values_read",
                                   "lost_count", "unseen_count", "check_time_ms") if k in stats}
    lines.append("stats: " + json.dumps(brief, sort_keys=True))
    return "\n".join(lines)


def _allowed(name: str, evidence: list[dict]) -> bool:
    if name in ALLOWED:
        return True
    if name in ALLOWED_UNDER_SUBSCRIBE:
        return all(ev.get("subscribe") for ev in evidence)
    return False


# --------------------------------------------------------------------------
# Parsing


def _parse_mops(value: Any) -> tuple[list, dict | None]:
    """Returns (writes [(key, offset|None, v)], reads {key: [[offset, v], ...]})."""
    writes: list = []
    reads: dict | None = None
    copied = False
    if not isinstance(value, list):
        return writes, reads
    for mop in value:
        if not isinstance(mop, list) or not mop:
            continue
        tag = mop[0]
        if tag == "send":
            if len(mop) < 3:
                continue
            x = mop[2]
            if isinstance(x, list):
                writes.append((mop[1], x[0], x[1]))
            else:
                writes.append((mop[1], None, x))
        elif tag == "poll" and len(mop) > 1 and mop[1]:
            r = mop[1]
            if reads is None:
                reads = r  # the common single-poll case: no copy
            else:
                if not copied:
                    reads = {k: list(ps) for k, ps in reads.items()}
                    copied = True
                for k, ps in r.items():
                    reads.setdefault(k, []).extend(ps)
    return writes, reads


# --------------------------------------------------------------------------
# The analysis


class _Checker:
    def __init__(self, history: Iterable[dict]) -> None:
        self.history = history
        self.truncated = False  # known once _scan has read the whole history
        self.n_ops = 0
        self.anomalies: dict[str, list[dict]] = {}
        self.counts: dict[str, int] = {}
        # Filled by _scan.
        self.recs: list[tuple] = []
        self.writer: dict[str, dict] = {}  # key -> value -> rec position
        self.ok_sent: dict[str, set] = {}
        self.info_sent: dict[str, set] = {}
        self.failed: dict[str, set] = {}
        self.ok_read: dict[str, set] = {}
        self.logs: dict[str, dict] = {}  # key -> offset -> value
        self.conflicts: dict[tuple, set] = {}  # (key, offset) -> values
        self.info_committed: set[int] = set()  # rec positions of info ops proven written
        self.ops_by_f: dict[str, dict[str, int]] = {}
        self.n_client_completions = 0
        self.has_assign = False
        self.has_subscribe = False
        # Filled by _version_orders: key -> (offsets, by_index values, first index, last index)
        self.orders: dict[str, tuple] = {}

    # -- reporting

    def add(self, name: str, evidence: dict) -> None:
        n = self.counts.get(name, 0)
        self.counts[name] = n + 1
        if n < MAX_EVIDENCE:
            self.anomalies.setdefault(name, []).append(evidence)

    def run(self) -> dict:
        self._scan()
        self._version_orders()
        self._log_anomalies()
        self._order_pass()
        self._cycles()
        return self._result()

    def _result(self) -> dict:
        types = sorted(self.anomalies)
        if self.truncated or self.n_client_completions == 0:
            valid: bool | str = "unknown"
        else:
            valid = not any(not _allowed(n, self.anomalies[n]) for n in types)
        stats = self._stats()
        return {
            "valid": valid,
            "anomaly_types": types,
            "anomalies": {n: self.anomalies[n] for n in types},
            "stats": stats,
        }

    def _stats(self) -> dict:
        def total(d: dict[str, set]) -> int:
            return sum(len(s) for s in d.values())

        keys = set(self.logs) | set(self.ok_sent) | set(self.info_sent) | set(self.failed) | set(self.ok_read)
        written = total(self.ok_sent) + sum(
            1 for r in self.info_committed for _ in self.recs[r][4])
        return {
            "ops": self.n_ops,
            "ops_by_f": self.ops_by_f,
            "keys": len(keys),
            "values_sent": total(self.ok_sent) + total(self.info_sent) + total(self.failed),
            "values_acknowledged": total(self.ok_sent),
            "values_written": written,
            "values_failed": total(self.failed),
            "values_read": total(self.ok_read),
            "lost_count": self.counts.get("lost-write", 0),
            "unseen_count": self.counts.get("unseen", 0),
            "anomaly_counts": dict(sorted(self.counts.items())),
            "truncated": self.truncated,
            "default_subscribe": self._default_subscribe(),
        }

    def _default_subscribe(self) -> bool:
        # A process that never assigned nor subscribed (e.g. renumbered after
        # an info) reads in the history's only consumer mode, if it has one.
        return self.has_subscribe and not self.has_assign

    # -- pass 1

    def _scan(self) -> None:
        recs = self.recs
        writer = self.writer
        ok_sent, info_sent, failed, ok_read = self.ok_sent, self.info_sent, self.failed, self.ok_read
        logs, conflicts = self.logs, self.conflicts
        ops_by_f = self.ops_by_f
        pending: dict[Any, tuple] = {}  # process -> (invoke op, its index, extra)
        info_recs: list[int] = []
        commits = _Commits()
        committed_checks: list[tuple] = []

        # A list is the caller's (run.py reads it again after the check): its ops stay as they are.
        canon: dict | None = None if isinstance(self.history, list) else {}
        pos = -1
        for pos, op in enumerate(self.history):
            typ = op.get("type")
            f = op.get("f")
            byf = ops_by_f.get(f)
            if byf is None:
                byf = ops_by_f[f] = {}
            byf[typ] = byf.get(typ, 0) + 1
            proc = op.get("process")
            if proc == "nemesis":
                continue
            idx = op.get("index", pos)
            if typ == "invoke":
                extra = commits.invoke(op, idx) if f == "commit" else None
                pending[proc] = (op, idx, extra)
                continue
            if typ not in ("ok", "info", "fail"):
                continue
            self.n_client_completions += 1
            inv, inv_idx, extra = pending.pop(proc, (None, None, None))
            if f in _CLIENT_FS:
                value = op.get("value")
                if typ != "ok" and not isinstance(value, list) and inv is not None:
                    value = inv.get("value")
                writes, reads = _parse_mops(value)
                r = len(recs)
                recs.append((idx, proc, typ, f, writes, reads, None))
                if writes:
                    target = ok_sent if typ == "ok" else info_sent if typ == "info" else failed
                    for k, off, v in writes:
                        kw = writer.get(k)
                        if kw is None:
                            kw = writer[k] = {}
                        kw[v] = r
                        s = target.get(k)
                        if s is None:
                            s = target[k] = set()
                        s.add(v)
                        if typ == "ok" and off is not None:
                            log = logs.get(k)
                            if log is None:
                                log = logs[k] = {}
                            cur = log.get(off)
                            if cur is None:
                                log[off] = v
                            elif cur != v:
                                conflicts.setdefault((k, off), {cur}).add(v)
                    if typ == "info":
                        info_recs.append(r)
                if reads:
                    for k, pairs in reads.items():
                        log = logs.get(k)
                        if log is None:
                            log = logs[k] = {}
                        if typ == "ok":
                            okr = ok_read.get(k)
                            if okr is None:
                                okr = ok_read[k] = set()
                        else:
                            okr = None
                        if okr is not None:
                            okr.update([pair[1] for pair in pairs])
                        setdefault = log.setdefault
                        if canon is None:
                            for pair in pairs:
                                off = pair[0]
                                if off is not None:
                                    v = pair[1]
                                    cur = setdefault(off, v)
                                    if cur != v:
                                        conflicts.setdefault((k, off), {cur}).add(v)
                            continue
                        # Ops read from a file are the checker's own: each read (offset, value) is
                        # replaced by one tuple shared by every read of it, as a value is read
                        # several times (a pair list and two ints per read were half the memory).
                        ck = canon.get(k)
                        if ck is None:
                            ck = canon[k] = {}
                        cget = ck.get
                        shared: list = []
                        add_shared = shared.append
                        for pair in pairs:
                            off = pair[0]
                            v = pair[1]
                            c = cget(off)
                            if c is None:
                                c = (off, v)
                                if off is not None:
                                    ck[off] = c
                            elif c[1] != v:
                                c = (off, v)
                            add_shared(c)
                            if off is not None:
                                cur = setdefault(off, v)
                                if cur != v:
                                    conflicts.setdefault((k, off), {cur}).add(v)
                        reads[k] = shared
                    if writes and f == "txn":
                        self._precommitted(idx, writes, reads)
            else:
                keys = None
                if f in ("assign", "subscribe"):
                    if typ != "fail":
                        v = op.get("value")
                        if not isinstance(v, list) and inv is not None:
                            v = inv.get("value")
                        keys = v if isinstance(v, list) else []
                    if typ == "ok":
                        if f == "assign":
                            self.has_assign = True
                        else:
                            self.has_subscribe = True
                elif f == "commit" and extra is not None:
                    commits.complete(inv, op, idx, typ, inv_idx, extra)
                elif f == "committed" and typ == "ok" and inv is not None:
                    committed_checks.append((inv, op, idx, inv_idx))
                recs.append((idx, proc, typ, f, None, None, keys))

        self.n_ops = pos + 1
        self.truncated = bool(getattr(self.history, "truncated", False))
        self.history = None  # a reader's ops are not kept: recs hold what later passes need
        # An info send counts as written if some ok op read one of its values.
        for r in info_recs:
            for k, off, v in recs[r][4]:
                okr = ok_read.get(k)
                if okr is not None and v in okr:
                    self.info_committed.add(r)
                    break
        for r in self.info_committed:
            for k, off, v in recs[r][4]:
                if off is None:
                    continue
                log = logs.setdefault(k, {})
                cur = log.get(off)
                if cur is None:
                    log[off] = v
                elif cur != v:
                    conflicts.setdefault((k, off), {cur}).add(v)
        commits.close(pending)
        for check_args in committed_checks:
            self._offset_regression(*check_args, commits)

    def _precommitted(self, idx: int, writes: list, reads: dict) -> None:
        sent = {(k, v): off for k, off, v in writes}
        for k, pairs in reads.items():
            for pair in pairs:
                off = sent.get((k, pair[1]), False)
                if off is not False:
                    self.add("precommitted-read", {
                        "key": k, "value": pair[1], "offsets": [off, pair[0]], "indexes": [idx]})

    # -- commits

    def _offset_regression(self, inv: dict, op: dict, idx: int, inv_idx: int, commits: _Commits) -> None:
        """A `committed` answer below what was committed ok before it began, or without a key that
        had such a commit (the invoke names the keys asked; the answer may leave some out)."""
        value = op.get("value")
        if not isinstance(value, dict):
            value = {}
        group = _group(inv, op)
        asked = inv.get("value")
        keys = list(asked) if isinstance(asked, (list, dict)) else []
        keys += [k for k in value if k not in keys]
        for k in keys:
            prior = commits.best_before(group, k, inv_idx)
            if prior is None:
                continue
            best, commit_idx, commit_inv = prior
            got = value.get(k)
            if got is not None and got >= best:
                continue
            # Kafka lets a group commit a lower offset; a later (or concurrent)
            # commit of exactly what we read explains it.
            explained = got is not None and any(
                a[3] == got and a[2] != "fail" and a[1] > commit_inv and a[0] < idx
                for a in commits.attempts.get((group, k), ()))
            if not explained:
                self.add("offset-regression", {
                    "key": k, "group": group, "offset": got, "committed_offset": best,
                    "missing": k not in value, "indexes": [commit_idx, idx]})

    # -- version orders

    def _version_orders(self) -> None:
        conflicts = self.conflicts
        by_key_conflicts: dict[str, dict] = {}
        for (k, off), vs in conflicts.items():
            by_key_conflicts.setdefault(k, {})[off] = vs
        dups: list[tuple] = []
        for k, log in self.logs.items():
            offs = sorted(log)
            kc = by_key_conflicts.get(k)
            first: dict = {}
            last: dict = {}
            if kc is None:
                by_index = [log[o] for o in offs]
                for i, v in enumerate(by_index):
                    if v in first:
                        last[v] = i
                    else:
                        first[v] = i
            else:
                by_index = []
                for i, o in enumerate(offs):
                    vs = kc.get(o)
                    if vs is None:
                        by_index.append(log[o])
                        vs = (log[o],)
                    else:
                        by_index.append(min(vs))
                    for v in vs:
                        if v in first:
                            last[v] = i
                        else:
                            first[v] = i
            # A duplicated value has several offsets: order checks place a
            # read or send by its own offset, by value only when it has none.
            self.orders[k] = (offs, by_index, first, last, {o: i for i, o in enumerate(offs)})
            for v in last:
                dups.append((k, v))
        self._dups = dups

    # -- log anomalies

    def _log_anomalies(self) -> None:
        recs = self.recs
        wanted_kv: set = set()
        # inconsistent-offsets
        for (k, off), vs in sorted(self.conflicts.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            wanted_kv.update((k, v) for v in vs)
        for k, v in self._dups:
            wanted_kv.add((k, v))
        # G1a: ok reads of definitely failed sends.
        g1a = []
        for k, fs in self.failed.items():
            okr = self.ok_read.get(k)
            if okr:
                for v in fs & okr:
                    g1a.append((k, v))
                    wanted_kv.add((k, v))
        # lost-write
        lost = []
        ok_types = ("ok",)
        for k, okr in self.ok_read.items():
            order = self.orders.get(k)
            if order is None:
                continue
            offs, by_index, first, last, _ = order
            bound = -1
            vmax = None
            for v in okr:
                i = first.get(v)
                if i is not None and i > bound:
                    bound, vmax = i, v
            if bound < 0:
                continue
            kw = self.writer.get(k, {})
            kc = self.conflicts
            for i in range(bound + 1):
                o = offs[i]
                vs = kc.get((k, o)) or (by_index[i],)
                for v in vs:
                    if v in okr or last.get(v, first[v]) > bound:
                        continue
                    w = kw.get(v)
                    if w is None:
                        continue
                    wt = recs[w][2]
                    if wt in ok_types or (wt == "info" and w in self.info_committed):
                        lost.append((k, v, o, i, bound, vmax, w))
                        wanted_kv.add((k, vmax))
        touch = self._touching(wanted_kv) if wanted_kv else {}

        for (k, off), vs in sorted(self.conflicts.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            idxs = sorted({i for v in vs for (i, o, t, rw) in touch.get((k, v), ()) if o == off})
            self.add("inconsistent-offsets", {
                "key": k, "offset": off, "values": sorted(vs), "indexes": idxs})
        for k, v in self._dups:
            seen = touch.get((k, v), ())
            offs = sorted({o for (i, o, t, rw) in seen if o is not None})
            self.add("duplicate", {
                "key": k, "value": v, "offsets": offs, "count": len(offs),
                "indexes": sorted({i for (i, o, t, rw) in seen})})
        for k, v in sorted(g1a, key=lambda kv: (str(kv[0]), kv[1])):
            w = self.writer[k][v]
            readers = [(i, o) for (i, o, t, rw) in touch.get((k, v), ()) if rw == "r" and t == "ok"]
            self.add("G1a", {
                "key": k, "value": v, "offsets": sorted({o for i, o in readers if o is not None}),
                "writer": recs[w][0], "readers": [i for i, o in readers],
                "indexes": [recs[w][0]] + [i for i, o in readers]})
        for k, v, o, i, bound, vmax, w in lost:
            max_read = next((ri for (ri, ro, t, rw) in touch.get((k, vmax), ())
                             if rw == "r" and t == "ok"), None)
            self.add("lost-write", {
                "key": k, "value": v, "offset": o, "dense_index": i,
                "max_read_value": vmax, "max_read_offset": self.orders[k][0][bound],
                "max_read_dense_index": bound, "writer": recs[w][0], "max_read": max_read,
                "indexes": [recs[w][0]] + ([max_read] if max_read is not None else [])})
        # unseen: ok sends that no ok poll ever returned.
        for k in sorted(self.ok_sent, key=str):
            okr = self.ok_read.get(k, ())
            kw = self.writer[k]
            for v in sorted(self.ok_sent[k] - set(okr)):
                r = recs[kw[v]]
                off = next((o for kk, o, vv in r[4] if kk == k and vv == v), None)
                self.add("unseen", {"key": k, "value": v, "offset": off, "indexes": [r[0]]})

    def _touching(self, wanted: set) -> dict:
        """(key, value) -> [(op index, offset, type, "w"|"r")] for the wanted pairs."""
        out: dict = {}
        for idx, proc, typ, f, writes, reads, extra in self.recs:
            if writes:
                for k, off, v in writes:
                    if (k, v) in wanted:
                        out.setdefault((k, v), []).append((idx, off, typ, "w"))
            if reads:
                for k, pairs in reads.items():
                    for pair in pairs:
                        if (k, pair[1]) in wanted:
                            out.setdefault((k, pair[1]), []).append((idx, pair[0], typ, "r"))
        return out

    # -- order checks

    def _order_pass(self) -> None:
        orders = self.orders
        default_sub = self._default_subscribe()
        # process -> [subscribe?, last_reads {k: (idx, off, v)}, last_sends {k: (idx, off, v)}]
        procs: dict[Any, list] = {}
        add = self.add
        for idx, proc, typ, f, writes, reads, extra in self.recs:
            st = procs.get(proc)
            if st is None:
                st = procs[proc] = [None, {}, {}]
            if writes is None:
                if extra is not None:  # assign / subscribe that may have happened
                    st[1] = {}
                    if typ == "ok":
                        st[0] = f == "subscribe"
            else:
                if len(writes) > 1:
                    self._int_sends(idx, writes)
                if reads:
                    self._int_polls(idx, reads)
                    # A poll inside a fail/info op (an aborted transaction) still moved the
                    # consumer: it counts for the process's read order too.
                    last_reads = st[1]
                    sub = default_sub if st[0] is None else st[0]
                    for k, pairs in reads.items():
                        if not pairs:
                            continue
                        prev = last_reads.get(k)
                        o2, v2 = pairs[0][0], pairs[0][1]
                        if prev is not None:
                            order = orders.get(k)
                            if order is not None:
                                i1 = order[4].get(prev[1])  # _dense, inlined: it runs per key per poll
                                if i1 is None:
                                    i1 = order[2].get(prev[2])
                                i2 = order[4].get(o2)
                                if i2 is None:
                                    i2 = order[2].get(v2)
                                if i1 is not None and i2 is not None:
                                    delta = i2 - i1
                                    if delta > 1:
                                        add("poll-skip", {
                                            "key": k, "values": [prev[2], v2], "offsets": [prev[1], o2],
                                            "delta": delta,
                                            "skipped": order[1][i1 + 1:min(i2, i1 + 1 + MAX_SKIPPED)],
                                            "process": proc, "subscribe": sub,
                                            "indexes": [prev[0], idx]})
                                    elif delta < 1:
                                        add("nonmonotonic-poll", {
                                            "key": k, "values": [prev[2], v2], "offsets": [prev[1], o2],
                                            "delta": delta, "process": proc, "subscribe": sub,
                                            "indexes": [prev[0], idx]})
                        last = pairs[-1]
                        last_reads[k] = (idx, last[0], last[1])
                if writes and typ in ("ok", "info"):
                    last_sends = st[2]
                    firsts: dict = {}
                    lasts: dict = {}
                    for w in writes:
                        if w[0] not in firsts:
                            firsts[w[0]] = w
                        lasts[w[0]] = w
                    for k, (_, o2, v2) in firsts.items():
                        prev = last_sends.get(k)
                        if prev is None:
                            continue
                        order = orders.get(k)
                        if order is None:
                            continue
                        i1 = _dense(order, prev[1], prev[2])
                        i2 = _dense(order, o2, v2)
                        if i1 is not None and i2 is not None and i2 - i1 < 1:
                            add("nonmonotonic-send", {
                                "key": k, "values": [prev[2], v2], "offsets": [prev[1], o2],
                                "delta": i2 - i1, "process": proc, "indexes": [prev[0], idx]})
                    for k, (_, o, v) in lasts.items():
                        last_sends[k] = (idx, o, v)
            if typ == "info":
                # The worker continues as a new process: order never spans an
                # op of unknown outcome, even if the history reuses the number.
                del procs[proc]

    def _int_sends(self, idx: int, writes: list) -> None:
        orders = self.orders
        prev: dict = {}
        for k, off, v in writes:
            p = prev.get(k)
            prev[k] = (off, v)
            if p is None:
                continue
            order = orders.get(k)
            if order is None:
                continue
            i1 = _dense(order, p[0], p[1])
            i2 = _dense(order, off, v)
            if i1 is None or i2 is None:
                continue
            delta = i2 - i1
            if delta > 1:
                self.add("int-send-skip", {
                    "key": k, "values": [p[1], v], "offsets": [p[0], off], "delta": delta,
                    "skipped": order[1][i1 + 1:min(i2, i1 + 1 + MAX_SKIPPED)], "indexes": [idx]})
            elif delta < 1:
                self.add("int-nonmonotonic-send", {
                    "key": k, "values": [p[1], v], "offsets": [p[0], off], "delta": delta,
                    "indexes": [idx]})

    def _int_polls(self, idx: int, reads: dict) -> None:
        orders = self.orders
        for k, pairs in reads.items():
            if len(pairs) < 2:
                continue
            order = orders.get(k)
            if order is None:
                continue
            # Fast paths, nearly every poll: contiguous offsets (all known, so nothing lies between
            # them), or offsets whose dense indexes are consecutive (markers between them). Offsets
            # not in the index (None) or a gap take the careful loop below, which reports.
            first = pairs[0][0]
            if isinstance(first, int) and pairs[-1][0] == first + len(pairs) - 1 \
                    and [pair[0] for pair in pairs] == list(range(first, first + len(pairs))):
                continue
            at = order[4].get
            dense = [at(pair[0]) for pair in pairs]
            i0 = dense[0]
            if i0 is not None and dense == list(range(i0, i0 + len(dense))):
                continue
            prev = pairs[0]
            i1 = _dense(order, prev[0], prev[1])
            for n in range(1, len(pairs)):
                pair = pairs[n]
                i2 = _dense(order, pair[0], pair[1])
                if i1 is not None and i2 is not None and i2 - i1 != 1:
                    delta = i2 - i1
                    if delta > 1:
                        self.add("int-poll-skip", {
                            "key": k, "values": [prev[1], pair[1]], "offsets": [prev[0], pair[0]],
                            "delta": delta, "skipped": order[1][i1 + 1:min(i2, i1 + 1 + MAX_SKIPPED)],
                            "indexes": [idx]})
                    else:
                        self.add("int-nonmonotonic-poll", {
                            "key": k, "values": [prev[1], pair[1]], "offsets": [prev[0], pair[0]],
                            "delta": delta, "indexes": [idx]})
                prev = pair
                i1 = i2

    # -- dependency cycles

    def _cycles(self) -> None:
        recs = self.recs
        # Nodes: transactions known to have committed.
        node_of: dict[int, int] = {}
        nodes: list[int] = []
        for r, rec in enumerate(recs):
            if rec[3] == "txn" and (rec[2] == "ok" or r in self.info_committed):
                node_of[r] = len(nodes)
                nodes.append(r)
        if len(nodes) < 2:
            return
        wr_why: dict[tuple, tuple] = {}
        writer = self.writer
        for b, r in enumerate(nodes):
            reads = recs[r][5]
            if not reads:
                continue
            for k, pairs in reads.items():
                kw = writer.get(k)
                if kw is None:
                    continue
                for pair in pairs:
                    w = kw.get(pair[1])
                    if w is None or w == r:
                        continue
                    a = node_of.get(w)
                    if a is not None and (a, b) not in wr_why:
                        wr_why[(a, b)] = (k, pair[1])
        ww_why: dict[tuple, tuple] = {}
        for k, (offs, by_index, first, last, _) in self.orders.items():
            kw = writer.get(k)
            if kw is None:
                continue
            prev_node = prev_v = None
            for v in by_index:
                w = kw.get(v)
                a = node_of.get(w) if w is not None else None
                if a is None:
                    continue  # reachability passes through non-transactional writers
                if prev_node is not None and prev_node != a and (prev_node, a) not in ww_why:
                    ww_why[(prev_node, a)] = (k, prev_v, v)
                prev_node, prev_v = a, v
        if not wr_why and not ww_why:
            return
        n = len(nodes)
        wr_adj: list[list[int]] = [[] for _ in range(n)]
        ww_adj: list[list[int]] = [[] for _ in range(n)]
        for a, b in wr_why:
            wr_adj[a].append(b)
        for a, b in ww_why:
            ww_adj[a].append(b)

        def step(a: int, b: int, kind: str) -> dict:
            if kind == "wr":
                k, v = wr_why[(a, b)]
                return {"from": recs[nodes[a]][0], "to": recs[nodes[b]][0], "type": "wr",
                        "key": k, "value": v}
            k, v1, v2 = ww_why[(a, b)]
            return {"from": recs[nodes[a]][0], "to": recs[nodes[b]][0], "type": "ww",
                    "key": k, "values": [v1, v2]}

        def evidence(cycle: list[tuple]) -> dict:
            steps = [step(a, b, kind) for a, b, kind in cycle]
            return {"cycle": [s["from"] for s in steps] + [steps[0]["from"]], "steps": steps,
                    "indexes": sorted({s["from"] for s in steps})}

        for comp in tarjan_scc(n, wr_adj):
            cyc = _find_cycle(comp, wr_adj, None, "wr")
            if cyc:
                self.add("G1c", evidence(cyc))
        for comp in tarjan_scc(n, ww_adj):
            cyc = _find_cycle(comp, None, ww_adj, "ww")
            if cyc:
                self.add("G0", evidence(cyc))
        if wr_why and ww_why:
            both = [wr_adj[i] + ww_adj[i] for i in range(n)]
            for comp in tarjan_scc(n, both):
                cyc = _find_mixed_cycle(comp, wr_adj, ww_adj)
                if cyc:
                    self.add("G1c-ww", evidence(cyc))


def _group(inv: dict | None, op: dict):
    """A commit's or committed read's group: on the completion, else on the invoke (HISTORY.md allows
    either or both); None is the history's one default group."""
    g = op.get("group")
    if g is None and inv is not None:
        g = inv.get("group")
    return g


class _Commits:
    """Commit attempts by (group, key), with their group known only once the op completes."""

    def __init__(self) -> None:
        # (group, key) -> attempts [invoke index, completion index, type, offset]
        self.attempts: dict[tuple, list] = {}
        # (group, key) -> ok commits [(completion index, offset, invoke index)], in history order
        self.ok: dict[tuple, list] = {}
        self._best: dict[tuple, tuple] = {}

    @staticmethod
    def invoke(op: dict, idx: int) -> list | None:
        value = op.get("value")
        if not isinstance(value, dict):
            return None
        return [[idx, _INF, "invoke", off, k] for k, off in value.items()]

    def complete(self, inv: dict, op: dict, idx: int, typ: str, inv_idx: int, mine: list) -> None:
        group = _group(inv, op)
        for a in mine:
            a[1], a[2] = idx, typ
            self.attempts.setdefault((group, a[4]), []).append(a)
        if typ != "ok":
            return
        value = op.get("value")
        if not isinstance(value, dict):
            value = inv.get("value")
        for k, off in value.items():
            if off is not None:
                self.ok.setdefault((group, k), []).append((idx, off, inv_idx))

    def close(self, pending: dict) -> None:
        """Commits still open at the end of the history are attempts of their invoke's group."""
        for inv, _, extra in pending.values():
            if inv.get("f") == "commit" and extra is not None:
                for a in extra:
                    self.attempts.setdefault((inv.get("group"), a[4]), []).append(a)
        for gk, oks in self.ok.items():
            # Running maximum, so that best_before is one bisect.
            idxs, best, cur = [], [], None
            for c_idx, off, c_inv in oks:
                if cur is None or off > cur[0]:
                    cur = (off, c_idx, c_inv)
                idxs.append(c_idx)
                best.append(cur)
            self._best[gk] = (idxs, best)

    def best_before(self, group, key, before_idx: int) -> tuple | None:
        """(highest offset, its completion index, its invoke index) of the ok commits that completed
        before `before_idx`."""
        got = self._best.get((group, key))
        if got is None:
            return None
        i = bisect.bisect_left(got[0], before_idx)
        return got[1][i - 1] if i else None


def _dense(order: tuple, offset, value) -> int | None:
    """A read's or send's dense index: by its offset when known (a duplicated
    value sits at several), else by the value's first offset."""
    i = order[4].get(offset)  # offsets are ints: None is never a key
    if i is not None:
        return i
    return order[2].get(value)


def tarjan_scc(n: int, adj: list[list[int]]) -> list[list[int]]:
    """Strongly connected components (more than one node) of a graph on 0..n-1.

    Iterative Tarjan, so deep graphs do not hit Python's recursion limit.
    """
    index = [-1] * n
    low = [0] * n
    on_stack = [False] * n
    stack: list[int] = []
    sccs: list[list[int]] = []
    counter = 0
    for s in range(n):
        if index[s] != -1 or not adj[s]:
            continue
        index[s] = low[s] = counter
        counter += 1
        stack.append(s)
        on_stack[s] = True
        work = [(s, 0)]
        while work:
            v, i = work[-1]
            nbrs = adj[v]
            if i < len(nbrs):
                work[-1] = (v, i + 1)
                w = nbrs[i]
                if index[w] == -1:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack[w] = True
                    work.append((w, 0))
                elif on_stack[w] and index[w] < low[v]:
                    low[v] = index[w]
            else:
                work.pop()
                if work:
                    u = work[-1][0]
                    low[u] = min(low[u], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack[w] = False
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        sccs.append(comp)
    return sccs


def _find_cycle(comp: list[int], wr_adj: list | None, ww_adj: list | None,
                kind: str) -> list[tuple] | None:
    """A shortest cycle through comp[0] over one edge kind, as [(a, b, kind)]."""
    adj = wr_adj if kind == "wr" else ww_adj
    members = set(comp)
    start = min(comp)
    parent: dict[int, int] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in adj[v]:
            if w not in members:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                path.reverse()
                path.append(start)
                return [(path[i], path[i + 1], kind) for i in range(len(path) - 1)]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    return None


def _find_mixed_cycle(comp: list[int], wr_adj: list, ww_adj: list) -> list[tuple] | None:
    """A simple cycle in comp that uses both a wr and a ww edge, if one is found.

    For a wr edge c->d, breadth-first search from d back to c over states
    (node, used-a-ww-edge); a walk that revisits a node is not a simple
    cycle, so the next wr edge is tried.
    """
    members = set(comp)
    tries = 0
    for c in sorted(comp):
        for d in wr_adj[c]:
            if d not in members:
                continue
            tries += 1
            if tries > MAX_CYCLE_TRIES:
                return None
            start = (d, False)
            parent: dict[tuple, tuple] = {start: None}  # type: ignore[dict-item]
            queue = deque([start])
            goal = (c, True)
            found = False
            while queue and not found:
                state = queue.popleft()
                v, used = state
                for adj, kind in ((wr_adj, "wr"), (ww_adj, "ww")):
                    for w in adj[v]:
                        if w not in members:
                            continue
                        nxt = (w, used or kind == "ww")
                        if nxt not in parent:
                            parent[nxt] = (state, kind)
                            if nxt == goal:
                                found = True
                                break
                            queue.append(nxt)
                    if found:
                        break
            if not found:
                continue
            edges = []
            s = goal
            while parent[s] is not None:
                prev, kind = parent[s]
                edges.append((prev[0], s[0], kind))
                s = prev
            edges.reverse()
            cycle = [(c, d, "wr")] + edges
            visited = [a for a, b, k in cycle]
            if len(set(visited)) == len(visited):
                return cycle
    return None


def main(argv: list[str] | None = None) -> int:
    """`python -m chaos.checker HISTORY [--json]`."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args
    paths = [a for a in args if a != "--json"]
    if len(paths) != 1:
        print("usage: python -m chaos.checker HISTORY [--json]", file=sys.stderr)
        return 2
    return run_check(paths[0], as_json)


if __name__ == "__main__":
    sys.exit(main())
