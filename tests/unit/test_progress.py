"""Issue 14: `brokerlab chaos run` progress: time left, ops ok/fail/info per second, the fault in force;
plain lines when piped, a live panel on a terminal."""
from __future__ import annotations

import io

from chaos.progress import ProgressModel
from chaos.run import _Progress


def snap(elapsed, counts, faults=None):
    return {"elapsed_s": elapsed, "counts": counts, "faults": faults or {}}


def test_rates_over_the_last_window_and_time_left():
    m = ProgressModel(time_limit_s=60)
    m.update(snap(1.0, {("send", "ok"): 10}))
    m.update(snap(2.0, {("send", "ok"): 30, ("send", "info"): 1}))
    line = m.update(snap(3.0, {("send", "ok"): 70, ("send", "info"): 1, ("poll", "fail"): 4},
                         {"kill": {"nodes": ["broker-2"]}}))
    assert line.left_s == 57 and line.totals == {"ok": 70, "fail": 4, "info": 1}
    assert line.per_s == {"ok": (70 - 10) / 2, "fail": 4 / 2, "info": 1 / 2}
    assert line.faults == "kill broker-2"
    # Older samples leave the window: only the last two seconds count.
    line = m.update(snap(5.0, {("send", "ok"): 70, ("send", "info"): 1, ("poll", "fail"): 4}))
    assert line.per_s["ok"] == 0 and line.faults == "none"
    assert "s left" in line.plain() and "faults: none" in line.plain()


class FakeRunner:
    time_limit_s = 20.0

    def __init__(self):
        self.snaps = []

    def snapshot(self):
        return self.snaps[-1]


class Tty(io.StringIO):
    def isatty(self):
        return True


def _drive(stream):
    r = FakeRunner()
    r.snaps.append(snap(0.0, {}))
    with _Progress(r, stream=stream) as p:
        for t in range(1, 12):
            r.snaps.append(snap(float(t), {("send", "ok"): 10 * t}, {"pause": {"nodes": ["broker-1"]}} if t > 6 else {}))
            p.update()
    return stream.getvalue()


def test_piped_output_is_plain_lines_every_few_seconds():
    out = _drive(io.StringIO())
    lines = out.splitlines()
    assert "\x1b" not in out
    assert len(lines) == 3  # at 5 s, 10 s, and the last state on exit
    assert lines[0].startswith("[  5.0 s,   15 s left] ok 10/s")
    assert lines[-1].endswith("faults: pause broker-1")


def test_terminal_gets_the_live_panel():
    out = _drive(Tty())
    assert "s left" in out and "per second" in out and "fault in force: pause broker-1" in out
