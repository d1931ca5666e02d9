"""Verdicts when the run went wrong (issue 19 item 8).

The real Runner's final read against a scripted fake cluster log: transaction markers still pending
(the LSO below the high watermark), an `info` poll, a transaction that never completes. Then the
run's verdict: a failed heal or an incomplete final read turns `unseen` alone into unknown, with the
reason, and never hides another anomaly. No sockets, no sleeps (polls are bounded by count).
"""
from __future__ import annotations

from chaos import history as h
from chaos import run as chaos_run
from chaos.checker import check
from chaos.experiment import Experiment
from chaos.runner import Runner
from chaos.workloads import Outcome
from chaos.workloads.log import LogGenerator

X = "t0/0"


class FakeLog:
    """One partition: data records (offset, value), a last stable offset and a high watermark.
    `lso_after` polls after the start, the LSO jumps to the high watermark (the commit markers land)."""

    def __init__(self, records, lso, hw, lso_after=None, info_polls=()):
        self.records, self.lso, self.hw = records, lso, hw
        self.lso_after = lso_after
        self.info_polls = set(info_polls)  # poll numbers (over all clients) that end as info
        self.polls = 0


class FakeClient:
    def __init__(self, log: FakeLog):
        self.log = log
        self.position = None
        self.closed = False

    def invoke(self, f, value, extra):
        log = self.log
        if f == "assign":
            self.position = 0
            return Outcome("ok", value)
        if f == "poll":
            log.polls += 1
            if log.lso_after is not None and log.polls > log.lso_after:
                log.lso = log.hw
            if log.polls in log.info_polls:
                return Outcome("info", value, "timeout")
            got = [[o, v] for o, v in log.records if self.position <= o < log.lso][:2]
            if got:
                self.position = got[-1][0] + 1
            elif self.position < log.lso:
                self.position = log.lso  # past the markers (control records) below the LSO
            return Outcome("ok", [["poll", {X: got} if got else {}]])
        raise AssertionError(f"unexpected op {f}")

    def end_offsets(self, keys):  # read_committed: the LSO
        return {X: self.log.lso}

    def high_watermarks(self, keys):
        return {X: self.log.hw}

    def positions(self, keys):
        return {X: self.position}

    def close(self):
        self.closed = True


class FakeWorkload:
    name = "log"
    keys = (X,)

    def __init__(self, log: FakeLog):
        self.log = log
        self.clients: list[FakeClient] = []

    def generator(self, rng):
        return LogGenerator(self.keys, rng)

    def client(self, bootstrap, producer_props, consumer_props, worker):
        self.clients.append(FakeClient(self.log))
        return self.clients[-1]


def _runner(tmp_path, log):
    workload = FakeWorkload(log)
    writer = h.HistoryWriter(str(tmp_path / "history.jsonl"))
    runner = Runner(workload, writer, "bootstrap:0", producer_props={}, consumer_props={})
    # The workload acknowledged every value before the final read.
    for o, v in log.records:
        inv = runner.record(h.invoke(0, "send", [["send", X, v]], runner.now_ns()))
        runner.record(h.complete(inv, "ok", [["send", X, [o, v]]], runner.now_ns()))
    return runner, writer, workload


def _history(writer):
    writer.close()
    return h.read_history(writer.path)


RECORDS = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]  # 3 and 4: a committed transaction, marker at 5


def test_final_read_waits_for_pending_markers_and_reads_to_the_high_watermark(tmp_path):
    log = FakeLog(RECORDS, lso=3, hw=6, lso_after=5)
    runner, writer, workload = _runner(tmp_path, log)
    final = runner.final_reads(timeout_s=60, max_polls=50)
    assert final == {"complete": True, "reason": None, "ends": {X: 6}}
    history = _history(writer)
    read = [pair for op in history if op["f"] == "poll" and op["type"] == "ok"
            for pair in op["value"][0][1].get(X, [])]
    assert read == [[o, v] for o, v in RECORDS]
    assert check(history)["valid"] is True
    assert all(c.closed for c in workload.clients)


def test_an_info_poll_ends_that_process_and_a_new_one_reads_to_the_end(tmp_path):
    log = FakeLog(RECORDS, lso=6, hw=6, info_polls={2})
    runner, writer, _ = _runner(tmp_path, log)
    assert runner.final_reads(timeout_s=60, max_polls=50)["complete"] is True
    history = _history(writer)
    assigns = [op["process"] for op in history if op["f"] == "assign" and op["type"] == "invoke"]
    info = [op for op in history if op["f"] == "poll" and op["type"] == "info"]
    assert len(assigns) == 2 and assigns[0] != assigns[1] and info[0]["process"] == assigns[0]
    assert check(history)["valid"] is True


def test_a_final_read_that_cannot_reach_the_end_says_so_and_why(tmp_path):
    log = FakeLog(RECORDS, lso=3, hw=6)  # a transaction that never completes holds the LSO at 3
    runner, writer, _ = _runner(tmp_path, log)
    final = runner.final_reads(timeout_s=60, max_polls=12)
    assert final["complete"] is False
    assert "did not reach the end" in final["reason"] and f"{X} (at 3 of 6)" in final["reason"]
    assert sum(op["f"] == "poll" and op["type"] == "invoke" for op in _history(writer)) == 12


# -- the run's verdict


def _unseen_history():
    # Value 2 acknowledged, never read back.
    return [{"index": 0, "process": 0, "type": "invoke", "f": "send", "value": [["send", X, 1], ["send", X, 2]]},
            {"index": 1, "process": 0, "type": "ok", "f": "send", "value": [["send", X, [0, 1]], ["send", X, [1, 2]]]},
            {"index": 2, "process": 1, "type": "invoke", "f": "poll", "value": [["poll"]]},
            {"index": 3, "process": 1, "type": "ok", "f": "poll", "value": [["poll", {X: [[0, 1]]}]]}]


def test_unseen_alone_after_a_failed_heal_is_unknown_with_the_reason():
    notes = ["heal failed: broker-2 never confirmed (SetFaults broker-2: ...) after 6 attempts"]
    result = check(_unseen_history())
    assert result["valid"] is False  # what the old run reported: INVALID
    chaos_run._excuse_unread(result, chaos_run._caveats(notes, {"complete": True, "reason": None}))
    assert result["valid"] == "unknown"
    assert result["unknown_reason"].startswith("only unseen, which may be values never read back: heal failed")
    assert result["caveats"] == notes
    outcome = chaos_run.RunOutcome("x", 1, "/tmp/x", result, "valid", 1.0)
    assert outcome.verdict == "unknown" and "heal failed: broker-2" in outcome.verdict_line()


def test_an_incomplete_final_read_makes_unseen_unknown_but_not_a_real_loss():
    final = {"complete": False, "reason": "the final read did not reach the end: behind on t0/0 (at 3 of 6)"}
    result = check(_unseen_history())
    chaos_run._excuse_unread(result, chaos_run._caveats([], final))
    assert result["valid"] == "unknown" and "behind on t0/0" in result["unknown_reason"]
    # A lost write is not explained by an unfinished read: still invalid, with the caveat shown.
    lost = _unseen_history()[:2] + [
        {"index": 2, "process": 1, "type": "invoke", "f": "poll", "value": [["poll"]]},
        {"index": 3, "process": 1, "type": "ok", "f": "poll", "value": [["poll", {X: [[1, 2]]}]]}]
    result = check(lost)
    chaos_run._excuse_unread(result, chaos_run._caveats([], final))
    assert result["valid"] is False and "lost-write" in result["anomaly_types"] and result["caveats"]
    # Without caveats, unseen stays what it is.
    result = check(_unseen_history())
    chaos_run._excuse_unread(result, chaos_run._caveats(["run error: boom"], {"complete": True, "reason": None}))
    assert result["valid"] is False and "caveats" not in result


def test_a_valid_run_whose_heal_failed_says_so_in_its_verdict_line():
    history = _unseen_history()[:1] + [dict(_unseen_history()[1], value=[["send", X, [0, 1]]])]
    history[0]["value"] = [["send", X, 1]]
    history += _unseen_history()[2:]
    result = check(history)
    notes = ["heal failed: coordinator never confirmed (Status coordinator: ...) after 6 attempts"]
    chaos_run._excuse_unread(result, chaos_run._caveats(notes, {"complete": True, "reason": None}))
    line = chaos_run.RunOutcome("x", 1, "/tmp/x", result, "valid", 1.0).verdict_line()
    assert line.startswith("VALID (valid); heal failed: coordinator never confirmed")


class _Controller:
    def wait_healthy(self, timeout_s):
        return False  # a node never came back


class _FinalReader:
    def __init__(self):
        self.calls = 0

    def final_reads(self, timeout_s):
        self.calls += 1
        return {"complete": False, "reason": "the final read did not reach the end: behind on t0/0", "ends": {}}


def test_the_final_read_runs_even_when_the_run_has_notes():
    runner = _FinalReader()
    notes = ["heal failed: broker-2 never confirmed (...) after 6 attempts"]
    final = chaos_run._final_read(runner, _Controller(), Experiment(title="t"), notes, False, 5.0)
    assert runner.calls == 1 and final["complete"] is False
    assert notes[1:] == ["cluster not fully healthy (ISR not full) before the final read", final["reason"]]
    assert chaos_run._final_read(runner, _Controller(), Experiment(title="t"), [], True, 5.0) == {
        "complete": False, "reason": "interrupted: no final read"}
    assert runner.calls == 1

