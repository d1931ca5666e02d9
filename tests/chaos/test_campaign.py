"""`brokerlab chaos campaign`: each experiment over several seeds, a table, a folder of runs."""
from __future__ import annotations

import json
import os
import re
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from chaos.campaign import RunSummary, campaign_rows, format_table, run_campaign


def _cli(*args):
    from brokerlab_cli import main
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_two_seeds_of_safe_give_one_row_and_a_folder_linking_both_reports(tmp_path):
    out = tmp_path / "camp"
    r = _cli("chaos", "campaign", "safe", "--seeds", "2", "--duration", "8", "--out", str(out))
    print(r.output)
    row = next(cells for line in r.output.splitlines() if (cells := line.split())[:1] == ["safe"]
               and cells[1].isdigit())
    assert row[1:3] == ["2", "2"], r.output  # runs, valid
    assert row[3:6] == ["0", "0", "2/2"], r.output  # invalid, unknown, as expected
    assert float(row[-1]) > 0  # median ops/s
    assert r.exit_code == 0
    for seed in (1, 2):
        run_dir = out / "safe" / f"seed-{seed}"
        for fn in ("history.jsonl", "results.json", "report.html", "run.json"):
            assert (run_dir / fn).exists(), (seed, fn)
        assert json.loads((run_dir / "run.json").read_text())["seed"] == seed
    page = (out / "index.html").read_text()
    assert re.findall(r"href='([^']+)'", page) == ["safe/seed-1/report.html", "safe/seed-2/report.html"]
    doc = json.loads((out / "campaign.json").read_text())
    assert doc["state"] == "finished" and [x["seed"] for x in doc["runs"]] == [1, 2]


def test_a_library_that_cannot_run_an_experiment_is_refused_before_anything_runs(tmp_path):
    r = _cli("chaos", "campaign", "safe", "group-members-killed", "--seeds", "2", "--client", "kafka-python",
             "--out", str(tmp_path / "c"))
    assert r.exit_code == 2
    assert "kafka-python cannot run the group-members workload" in r.output
    assert not (tmp_path / "c").exists()
    r = _cli("chaos", "campaign", "safe", "--seeds", "1", "--client", "kafka-java", "--out", str(tmp_path / "c"))
    assert r.exit_code == 2 and "kafka-java" in r.output and not (tmp_path / "c").exists()


def test_campaign_drives_the_chosen_library(tmp_path):
    calls = []

    def run(exp, *, seed, duration_s, out_dir, progress, echo, client):
        calls.append((exp["name"], seed, client))
        return _fake_outcome(out_dir, seed, True)

    run_campaign(["safe"], 2, client="aiokafka", out_dir=str(tmp_path), echo=lambda s: None, run=run)
    assert calls == [("safe", 1, "aiokafka"), ("safe", 2, "aiokafka")]
    assert json.loads((tmp_path / "campaign.json").read_text())["client"] == "aiokafka"


def _fake_outcome(run_dir: str, seed: int, valid, anomalies=(), interrupted=False, ops=10, duration_s=2.0):
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "run.json"), "w") as fh:
        json.dump({"duration_s": duration_s}, fh)
    with open(os.path.join(run_dir, "history.jsonl"), "w") as fh:
        # completions inside the workload phase, and one final read after it
        fh.writelines(json.dumps({"process": 0, "type": "ok", "f": "poll", "time": i}) + "\n" for i in range(ops))
        fh.write(json.dumps({"process": 0, "type": "ok", "f": "poll", "time": int(duration_s * 2e9)}) + "\n")
    result = {"valid": valid, "anomaly_types": list(anomalies), "anomalies": {a: [{}] for a in anomalies}}
    return SimpleNamespace(result=result, seed=seed, run_dir=run_dir, behaved=valid is True,
                           interrupted=interrupted, notes=["interrupted (Ctrl-C)"] if interrupted else [])


def test_ctrl_c_stops_the_campaign_and_keeps_the_finished_runs(tmp_path):
    calls = []

    def run(exp, *, seed, duration_s, out_dir, progress, echo):
        calls.append((exp["name"], seed))
        # the third run is interrupted: run_experiment heals and returns it marked
        return _fake_outcome(out_dir, seed, True, interrupted=len(calls) == 3)

    _, rows, _, interrupted = run_campaign(["safe", "min-isr-2-leader-killed"], 2, out_dir=str(tmp_path),
                                           echo=lambda s: None, run=run)
    assert interrupted
    assert calls == [("safe", 1), ("safe", 2), ("min-isr-2-leader-killed", 1)]  # nothing after the Ctrl-C
    assert [(r.experiment, r.runs, r.valid) for r in rows] == [("safe", 2, 2), ("min-isr-2-leader-killed", 0, 0)]
    doc = json.loads((tmp_path / "campaign.json").read_text())
    assert doc["state"].startswith("interrupted") and len(doc["runs"]) == 3 and doc["runs"][2]["interrupted"]
    assert (tmp_path / "index.html").read_text().count("report.html") == 3


def test_ctrl_c_between_runs_keeps_the_finished_ones(tmp_path):
    def run(exp, *, seed, duration_s, out_dir, progress, echo):
        if seed == 2:
            raise KeyboardInterrupt
        return _fake_outcome(out_dir, seed, False, anomalies=["lost-write"])

    _, rows, runs, interrupted = run_campaign(["acks1-leader-isolated"], 3, out_dir=str(tmp_path),
                                              echo=lambda s: None, run=run)
    assert interrupted and [r.seed for r in runs] == [1]
    assert rows[0].runs == 1 and rows[0].invalid == 1 and rows[0].anomalies == {"lost-write": 1}


def test_rows_count_verdicts_anomalies_and_the_median_rate():
    def s(exp, seed, verdict, anomalies=(), ops=1.0, behaved=True, interrupted=False):
        return RunSummary(exp, seed, f"/r/{exp}/{seed}", verdict, behaved, tuple(anomalies), ops, interrupted)
    runs = [s("a", 1, "invalid", ["lost-write"], 10), s("a", 2, "invalid", ["lost-write", "inconsistent-offsets"], 30),
            s("a", 3, "valid", (), 20, behaved=False), s("a", 4, "unknown", (), 1000, interrupted=True),
            s("b", 1, "unknown", (), 5, behaved=False)]
    rows = campaign_rows(runs, [("a", "any of lost-write"), ("b", "valid"), ("c", "valid")])
    a, b, c = rows
    assert (a.runs, a.valid, a.invalid, a.unknown, a.as_expected) == (3, 1, 2, 0, 2)
    assert dict(a.anomalies) == {"lost-write": 2, "inconsistent-offsets": 1}
    assert a.median_ops_per_s == 20
    assert (b.runs, b.unknown, b.as_expected) == (1, 1, 0) and (c.runs, c.median_ops_per_s) == (0, 0.0)
    table = format_table(rows).splitlines()
    assert table[0].split()[:5] == ["experiment", "runs", "valid", "invalid", "unknown"]
    assert "lost-write (2), inconsistent-offsets (1)" in table[1]


def test_bad_seeds_and_unknown_experiments_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="--seeds must be at least 1"):
        run_campaign(["safe"], 0, out_dir=str(tmp_path / "a"), run=lambda *a, **k: None)
    with pytest.raises(ValueError, match="no experiment 'nope'"):
        run_campaign(["safe", "nope"], 1, out_dir=str(tmp_path / "b"), run=lambda *a, **k: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_chaos_run_clients_prints_experiment_by_library_and_rows_for_refusals(tmp_path, monkeypatch):
    """`chaos run --all --clients a,b`: one row per experiment x library (expected / got); a library that
    cannot run an experiment is a row saying why, and the rest still run."""
    import chaos.run
    ran = []

    def fake_run(exp, *, client, seed, duration_s, bootstrap, out_dir, progress, echo, **_):
        ran.append((exp["name"], client))
        r = {"valid": True, "anomaly_types": [], "anomalies": {}}
        return SimpleNamespace(result=r, verdict="valid", behaved=chaos.run.behaved(exp["expect"], r),
                               run_dir=out_dir, caveats=[])

    monkeypatch.setattr(chaos.run, "run_experiment", fake_run)
    r = _cli("chaos", "run", "--all", "--clients", "kafka-python,aiokafka", "--out", str(tmp_path), "--no-progress")
    rows = [line.split() for line in r.output.splitlines()[1:]]
    names = set(chaos.run.experiment_paths())
    assert {(x[0], x[1]) for x in rows} == {(n, lib) for n in names for lib in ("kafka-python", "aiokafka")}
    refused = [x for x in rows if "NOT" in x and "RUN:" in x]
    assert {(x[0], x[1]) for x in refused} == {("group-members-killed", "kafka-python"),
                                               ("group-members-killed", "aiokafka")}
    assert ("safe", "aiokafka") in ran and ("group-members-killed", "aiokafka") not in ran
    safe = next(x for x in rows if x[:2] == ["safe", "kafka-python"])
    assert safe[2:5] == ["valid", "valid", "OK"]
    assert r.exit_code == 1  # the experiments expecting anomalies got "valid" from the fake


def test_sigint_during_the_second_run_keeps_the_first_and_leaves_no_process(tmp_path):
    """A real Ctrl-C (SIGINT to the campaign's process group, as a terminal sends it)."""
    import signal
    import subprocess
    import sys

    import psutil

    from tests.helpers import ROOT, wait_until
    out = tmp_path / "camp"
    proc = subprocess.Popen([sys.executable, "-m", "brokerlab_cli", "chaos", "campaign", "safe", "--seeds", "3",
                             "--duration", "6", "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        second = out / "safe" / "seed-2" / "history.jsonl"
        wait_until(lambda: (out / "safe" / "seed-1" / "run.json").exists() and second.exists()
                   and second.stat().st_size > 0, 180, what="the second run's workload under way")
        descendants = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 130, output
    assert "interrupted: 1 finished runs kept" in output, output
    doc = json.loads((out / "campaign.json").read_text())
    assert doc["state"].startswith("interrupted")
    assert [(r["seed"], r["interrupted"]) for r in doc["runs"]] == [(1, False), (2, True)]
    assert doc["rows"][0]["runs"] == 1
    assert not (out / "safe" / "seed-3").exists()
    wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in descendants), 30,
               what="every process the campaign started to be gone")
