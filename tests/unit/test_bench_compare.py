"""`brokerlab bench compare OLD.json NEW.json`: ratios per scenario of two `bench table --json` results."""
from __future__ import annotations

import json

from click.testing import CliRunner

from chaos.bench import bench


def _row(name, rate, p99, client_us, broker_us, records=1000):
    return {"scenario": name, "records": records, "throughput_msg_s": rate, "p99_ms": p99,
            "client_cpu_us_per_record": client_us, "broker_cpu_us_per_record": broker_us, "load_avg_1m": 3.0}


def _write(path, rows, **extra):
    path.write_text(json.dumps({"format": 2, "git_commit": "abc1234", "cpu_count": 2, "rows": rows, **extra}))
    return str(path)


def _run(*args):
    return CliRunner().invoke(bench, ["compare", *args])


def _line(out: str, scenario: str) -> list[str]:
    [line] = [ln for ln in out.splitlines() if ln.startswith(f"| {scenario} |")]
    return [c.strip() for c in line.strip("|").split("|")]


def test_ratios_per_scenario(tmp_path):
    old = _write(tmp_path / "old.json", [_row("Async", 100_000, 20.0, 4.0, 3.0), _row("Consumer", 200_000, 5.0, 2.0, 1.0),
                                         _row("Gone", 1, 1, 1, 1)])
    new = _write(tmp_path / "new.json", [_row("Consumer", 700_000, 2.5, 0.5, 1.0), _row("Async", 250_000, 10.0, 2.0, 3.3),
                                         _row("Added", 1, 1, 1, 1)])
    res = _run(old, new)
    assert res.exit_code == 0, res.output
    assert _line(res.output, "Async") == ["Async", "100,000 → 250,000", "2.50x", "20.0 → 10.0", "0.50x",
                                          "4.00 → 2.00", "0.50x", "3.00 → 3.30", "1.10x"]
    assert _line(res.output, "Consumer")[1:3] == ["200,000 → 700,000", "3.50x"]
    assert _line(res.output, "Gone")[1] == "only in OLD" and _line(res.output, "Added")[1] == "only in NEW"
    assert "OLD: commit abc1234, 2 cores, load average 3.0-3.0" in res.output


def test_format_1_rows_get_cpu_per_record_from_cpu_pct(tmp_path):
    # Results written before the per-record fields existed: client CPU % of wall time.
    v1 = {"scenario": "Async", "records": 100_000, "throughput_msg_s": 100_000.0, "p99_ms": 10.0,
          "client_cpu_pct": 40.0, "broker_cpu_pct": 80.0, "wall_s": 1.0}
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"rows": [v1]}))
    new = _write(tmp_path / "new.json", [_row("Async", 100_000, 10.0, 2.0, 4.0)])
    res = _run(str(old), new)
    assert res.exit_code == 0, res.output
    assert _line(res.output, "Async")[5:9] == ["4.00 → 2.00", "0.50x", "8.00 → 4.00", "0.50x"]


def test_skipped_and_failed_scenarios_say_why(tmp_path):
    old = _write(tmp_path / "old.json", [{"scenario": "Txn", "skipped": "n/a: transactions not available"}])
    new = _write(tmp_path / "new.json", [{"scenario": "Txn", "error": "exit 1: boom"}])
    res = _run(old, new)
    assert res.exit_code == 0, res.output
    assert _line(res.output, "Txn")[1] == "OLD: n/a: transactions not available; NEW: exit 1: boom"


def test_bad_input_names_the_problem(tmp_path):
    good = _write(tmp_path / "good.json", [_row("Async", 1, 1, 1, 1)])
    res = _run(str(tmp_path / "missing.json"), good)
    assert res.exit_code != 0 and "cannot read" in res.output and "missing.json" in res.output
    (tmp_path / "text.json").write_text("not json")
    res = _run(good, str(tmp_path / "text.json"))
    assert res.exit_code != 0 and "text.json is not JSON" in res.output
    (tmp_path / "other.json").write_text(json.dumps({"records": 3}))
    res = _run(good, str(tmp_path / "other.json"))
    assert res.exit_code != 0 and "other.json is not a bench table result" in res.output
