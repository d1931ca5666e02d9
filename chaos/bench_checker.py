"""Benchmark: generate a valid synthetic log-workload history and time the checker.

    python -m chaos.bench_checker [--ops 1000000] [--seed 7] [--keep PATH] [--time-read]

The history simulates producers (sends, some failing, some timing out but
landing), transactional workers (sends and polls in one txn, commit markers
making offsets sparse) and assigned consumers polling each key in order, then
a final drain so that every acknowledged value is read. It is valid by
construction, so the checker must say so; the script exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

from chaos.checker import check
from chaos.history import HistoryReader, read_history

N_KEYS = 8
N_PRODUCERS = 6
N_TXN = 3
N_CONSUMERS = 6


class _Gen:
    def __init__(self, rng: random.Random, out) -> None:
        self.rng = rng
        self.out = out
        self.index = 0
        self.time = 0
        self.keys = [f"t{k // 4}/{k % 4}" for k in range(N_KEYS)]
        self.logs: dict[str, list[tuple[int, int]]] = {k: [] for k in self.keys}
        self.next_offset = {k: 0 for k in self.keys}
        self.next_value = {k: 1 for k in self.keys}
        self.n_workers = N_PRODUCERS + N_TXN + N_CONSUMERS
        self.process = list(range(self.n_workers))  # worker -> current process number
        self.positions = [dict.fromkeys(self.keys, 0) for _ in range(self.n_workers)]
        self.assigned = [False] * self.n_workers
        self._dump = json.JSONEncoder(separators=(",", ":")).encode

    def emit(self, process, type_: str, f: str, value, error: str | None = None) -> None:
        self.time += self.rng.randint(1_000, 200_000)
        op = {"index": self.index, "time": self.time, "process": process, "type": type_, "f": f,
              "value": value}
        if error:
            op["error"] = error
        self.out.write(self._dump(op))
        self.out.write("\n")
        self.index += 1

    def append(self, k: str, v: int) -> int:
        off = self.next_offset[k]
        self.next_offset[k] = off + 1
        self.logs[k].append((off, v))
        return off

    def new_value(self, k: str) -> int:
        v = self.next_value[k]
        self.next_value[k] = v + 1
        return v

    def send(self, w: int) -> None:
        p = self.process[w]
        mops = []
        for _ in range(self.rng.randint(1, 3)):
            k = self.rng.choice(self.keys)
            mops.append(["send", k, self.new_value(k)])
        self.emit(p, "invoke", "send", mops)
        roll = self.rng.random()
        if roll < 0.01:
            self.emit(p, "fail", "send", mops, "NOT_LEADER_OR_FOLLOWER")
        elif roll < 0.02:
            for _, k, v in mops:  # timed out, but it landed
                self.append(k, v)
            self.emit(p, "info", "send", mops, "timeout")
            self.process[w] += self.n_workers
        else:
            self.emit(p, "ok", "send", [["send", k, [self.append(k, v), v]] for _, k, v in mops])

    def poll_result(self, w: int, keys: list[str], limit: int) -> dict:
        result = {}
        pos = self.positions[w]
        for k in keys:
            i = pos[k]
            got = self.logs[k][i:i + limit]
            if got:
                result[k] = [[o, v] for o, v in got]
                pos[k] = i + len(got)
        return result

    def ensure_assigned(self, w: int) -> None:
        if not self.assigned[w]:
            p = self.process[w]
            self.emit(p, "invoke", "assign", self.keys)
            self.emit(p, "ok", "assign", self.keys)
            self.assigned[w] = True

    def poll(self, w: int, limit: int | None = None) -> None:
        self.ensure_assigned(w)
        p = self.process[w]
        keys = self.rng.sample(self.keys, 3) if limit is None else self.keys
        self.emit(p, "invoke", "poll", [["poll"]])
        before = dict(self.positions[w])
        result = self.poll_result(w, keys, limit or self.rng.randint(1, 8))
        if limit is None and self.rng.random() < 0.005:
            self.emit(p, "info", "poll", [["poll", result]], "timeout")
            # The new client resumes where the old one was before this poll.
            self.positions[w] = before
            self.process[w] += self.n_workers
            self.assigned[w] = False
        else:
            self.emit(p, "ok", "poll", [["poll", result]])

    def txn(self, w: int) -> None:
        self.ensure_assigned(w)
        p = self.process[w]
        inv = []
        sent = []
        for _ in range(self.rng.randint(1, 2)):
            k = self.rng.choice(self.keys)
            inv.append(["send", k, self.new_value(k)])
        inv.append(["poll"])
        self.emit(p, "invoke", "txn", inv)
        # Polls see only committed data, never this txn's own sends.
        polled = self.poll_result(w, self.rng.sample(self.keys, 2), 4)
        done = []
        for mop in inv:
            if mop[0] == "send":
                _, k, v = mop
                off = self.append(k, v)
                sent.append(k)
                done.append(["send", k, [off, v]])
            else:
                done.append(["poll", polled])
        for k in set(sent):  # the commit marker takes an offset
            self.next_offset[k] += 1
        self.emit(p, "ok", "txn", done)

    def run(self, n_ops: int) -> None:
        rng = self.rng
        consumers = range(N_PRODUCERS + N_TXN, self.n_workers)
        while self.index < n_ops:
            w = rng.randrange(self.n_workers)
            if w < N_PRODUCERS:
                self.send(w)
            elif w < N_PRODUCERS + N_TXN:
                self.txn(w)
            else:
                self.poll(w)
            if rng.random() < 0.0005:
                self.emit("nemesis", "info", "partition", {"groups": [["broker-1"], ["broker-2"]]})
        # Final drain: the first consumer reads everything it has not.
        w = consumers[0]
        while any(self.positions[w][k] < len(self.logs[k]) for k in self.keys):
            self.poll(w, limit=1000)


def generate(path: str, n_ops: int, seed: int) -> int:
    with open(path, "w", encoding="utf-8") as out:
        gen = _Gen(random.Random(seed), out)
        gen.run(n_ops)
    return gen.index


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ops", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", help="write the history here instead of a temp file")
    ap.add_argument("--time-read", action="store_true",
                    help="also time read_history (the whole file into a list) after the check")
    args = ap.parse_args(argv)
    print(f"seed {args.seed}", flush=True)
    fd, path = tempfile.mkstemp(suffix=".jsonl") if not args.keep else (None, args.keep)
    if fd is not None:
        os.close(fd)
    try:
        t0 = time.perf_counter()
        n = generate(path, args.ops, args.seed)
        t1 = time.perf_counter()
        # What `brokerlab check` does: the reader streams into the checker's scan.
        result = check(HistoryReader(path))
        t2 = time.perf_counter()
        if args.time_read:
            read_history(path)
        t3 = time.perf_counter()
    finally:
        if not args.keep:
            os.unlink(path)
    print(f"generated {n} ops in {t1 - t0:.1f}s")
    if args.time_read:
        print(f"read_history alone {t3 - t2:.1f}s")
    print(f"read+check {t2 - t1:.1f}s (check_time_ms {result['stats']['check_time_ms']}); "
          f"verdict {result['valid']}; anomalies {result['anomaly_types']}")
    if result["valid"] is not True:
        print(json.dumps(result["stats"], default=str)[:2000])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
