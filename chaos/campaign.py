"""`brokerlab chaos campaign`: each experiment N times, one seed per run, each on a fresh cluster.

A verdict from one seed is an anecdote; a campaign gives the rate. The campaign folder holds
every run's folder (NAME/seed-S/, as `chaos run` writes it), campaign.json (every run and the
rows) and index.html (the table, each run linked to its report.html). Both files are rewritten
after every run, so a campaign stopped by Ctrl-C (or killed) keeps what finished.
"""
from __future__ import annotations

import html
import json
import os
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from chaos.checker import _allowed

__all__ = ["CLIENTS", "CampaignRow", "RunSummary", "campaign_rows", "check_client", "format_table",
           "run_campaign", "summarize_run", "write_summary"]

from chaos.clients import LIBRARIES as CLIENTS  # client libraries a campaign can drive (chaos/clients/)


def check_client(client: str) -> str:
    if client not in CLIENTS:
        raise ValueError(f"unknown client library '{client}' (one of {', '.join(CLIENTS)})")
    return client


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One finished (or interrupted) run, as the campaign table needs it."""
    experiment: str
    seed: int
    run_dir: str
    verdict: str  # valid / invalid / unknown
    behaved: bool
    anomalies: tuple[str, ...]  # fatal anomaly names found
    ops_per_s: float
    interrupted: bool = False
    notes: tuple[str, ...] = ()


@dataclass(slots=True)
class CampaignRow:
    experiment: str
    expect: str
    runs: int = 0
    valid: int = 0
    invalid: int = 0
    unknown: int = 0
    as_expected: int = 0
    anomalies: Counter = field(default_factory=Counter)  # name -> runs it was seen in
    median_ops_per_s: float = 0.0


def summarize_run(experiment: str, outcome) -> RunSummary:
    """From a chaos.run.RunOutcome (its result, run folder and duration)."""
    r = outcome.result
    verdict = {True: "valid", False: "invalid"}.get(r.get("valid"), "unknown")
    fatal = tuple(sorted(n for n in r.get("anomaly_types", []) if not _allowed(n, r["anomalies"].get(n, []))))
    return RunSummary(experiment, outcome.seed, outcome.run_dir, verdict, bool(outcome.behaved), fatal,
                      _ops_per_s(outcome.run_dir), outcome.interrupted, tuple(outcome.notes))


def _ops_per_s(run_dir: str) -> float:
    """Client ops completed (ok, fail or info) per second of the workload phase (final reads excluded)."""
    try:
        with open(os.path.join(run_dir, "run.json"), encoding="utf-8") as fh:
            duration_s = float(json.load(fh)["duration_s"])
        end_ns = duration_s * 1e9
        n = 0
        with open(os.path.join(run_dir, "history.jsonl"), encoding="utf-8") as fh:
            for line in fh:
                op = json.loads(line)
                if op.get("process") != "nemesis" and op.get("type") != "invoke" and op.get("time", 0) <= end_ns:
                    n += 1
        return n / duration_s if duration_s > 0 else 0.0
    except (OSError, ValueError, KeyError):
        return 0.0


def campaign_rows(runs: list[RunSummary], experiments: list[tuple[str, str]]) -> list[CampaignRow]:
    """One row per experiment (in the given order), over its finished runs; interrupted runs are left out."""
    rows = {name: CampaignRow(name, expect) for name, expect in experiments}
    rates: dict[str, list[float]] = {name: [] for name, _ in experiments}
    for run in runs:
        if run.interrupted or run.experiment not in rows:
            continue
        row = rows[run.experiment]
        row.runs += 1
        setattr(row, run.verdict, getattr(row, run.verdict) + 1)
        row.as_expected += run.behaved
        row.anomalies.update(set(run.anomalies))
        rates[run.experiment].append(run.ops_per_s)
    for name, row in rows.items():
        row.median_ops_per_s = statistics.median(rates[name]) if rates[name] else 0.0
    return list(rows.values())


def _anomalies_text(c: Counter) -> str:
    return ", ".join(f"{n} ({k})" for n, k in sorted(c.items(), key=lambda x: (-x[1], x[0]))) or "-"


HEADER = ("experiment", "runs", "valid", "invalid", "unknown", "as expected", "anomalies seen (runs)",
          "median ops/s")


def _cells(row: CampaignRow) -> tuple[str, ...]:
    return (row.experiment, str(row.runs), str(row.valid), str(row.invalid), str(row.unknown),
            f"{row.as_expected}/{row.runs}", _anomalies_text(row.anomalies), f"{row.median_ops_per_s:.0f}")


def format_table(rows: list[CampaignRow]) -> str:
    lines = [HEADER] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) if i in (0, 6) else c.rjust(w) for i, (c, w) in
                               enumerate(zip(line, widths))).rstrip() for line in lines)


def write_summary(campaign_dir: str, command: str, runs: list[RunSummary], experiments: list[tuple[str, str]],
                  seeds: list[int], state: str, client: str = "brokerlab") -> list[CampaignRow]:
    """campaign.json and index.html for what has finished so far; returns the rows."""
    rows = campaign_rows(runs, experiments)
    doc = {"command": command, "state": state, "seeds": seeds, "client": client,
           "rows": [{**asdict(r), "anomalies": dict(r.anomalies)} for r in rows],
           "runs": [asdict(r) for r in runs]}
    _atomic_write(os.path.join(campaign_dir, "campaign.json"), json.dumps(doc, indent=1))
    _atomic_write(os.path.join(campaign_dir, "index.html"), _html(campaign_dir, command, rows, runs, state))
    return rows


def _atomic_write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


_CSS = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child"
        "{text-align:left}.valid{color:#070}.invalid{color:#b00}.unknown{color:#a60}")


def _html(campaign_dir: str, command: str, rows: list[CampaignRow], runs: list[RunSummary], state: str) -> str:
    e = html.escape
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>brokerlab campaign</title>",
           f"<style>{_CSS}</style></head><body>",
           "<h1>brokerlab chaos campaign</h1>", f"<p><code>{e(command)}</code> &mdash; {e(state)}</p>",
           "<h2>Per experiment</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in HEADER) + "<th>expected</th></tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in _cells(row)) + f"<td>{e(row.expect)}</td></tr>")
    out.append("</table><h2>Runs</h2><table><tr><th>experiment</th><th>seed</th><th>verdict</th>"
               "<th>as expected</th><th>anomalies</th><th>ops/s</th><th>notes</th><th>report</th></tr>")
    for run in runs:
        rel = os.path.relpath(os.path.join(run.run_dir, "report.html"), campaign_dir)
        verdict = "interrupted" if run.interrupted else run.verdict
        out.append(f"<tr><td>{e(run.experiment)}</td><td>{run.seed}</td><td class='{e(run.verdict)}'>{e(verdict)}"
                   f"</td><td>{'yes' if run.behaved else 'NO'}</td><td>{e(', '.join(run.anomalies) or '-')}</td>"
                   f"<td>{run.ops_per_s:.0f}</td><td>{e('; '.join(run.notes))}</td>"
                   f"<td><a href='{e(rel)}'>report</a></td></tr>")
    out.append("</table></body></html>")
    return "\n".join(out)


def run_campaign(names: list[str], seeds: int, *, client: str = "brokerlab", first_seed: int = 1,
                 duration_s: float | None = None, out_dir: str | None = None, command: str = "",
                 echo=print, run=None) -> tuple[str, list[CampaignRow], list[RunSummary], bool]:
    """Runs every experiment `seeds` times (seeds first_seed, first_seed+1, ...), each on a fresh cluster.

    Returns (campaign folder, rows, runs, interrupted). Ctrl-C during a run lets that run heal and
    stop (it is kept, marked interrupted, and left out of the rows); no further run starts.
    `run` is chaos.run.run_experiment (a parameter so the loop can be tested without clusters).
    """
    from chaos.run import describe_expect, load_experiment, run_experiment
    check_client(client)
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1 (got {seeds})")
    run = run or run_experiment
    exps = [load_experiment(n) for n in (names or ["safe"])]  # every name checked before anything runs
    if client != "brokerlab":
        from chaos.clients import resolve_clients
        from chaos.run import expectation_for
        for x in exps:  # a library that cannot run one of them is refused before anything runs
            resolve_clients(x["raw"].get("clients"), str((x["raw"].get("workload") or {}).get("name", "log")), client)
        exps = [{**x, "expect": expectation_for(x, client)} for x in exps]
    experiments = [(x["name"], describe_expect(x["expect"])) for x in exps]
    client_kw = {} if client == "brokerlab" else {"client": client}
    seed_list = list(range(first_seed, first_seed + seeds))
    campaign_dir = os.path.abspath(out_dir or os.path.join("runs", f"campaign-{time.strftime('%Y%m%d-%H%M%S')}"))
    os.makedirs(campaign_dir, exist_ok=True)
    runs: list[RunSummary] = []
    interrupted = False
    write_summary(campaign_dir, command, runs, experiments, seed_list, "running", client)
    try:
        for exp in exps:
            for seed in seed_list:
                echo(f"{exp['name']} seed {seed} ...")
                outcome = run(exp, seed=seed, duration_s=duration_s,
                              out_dir=os.path.join(campaign_dir, exp["name"], f"seed-{seed}"), progress=False,
                              echo=lambda s: None, **client_kw)
                summary = summarize_run(exp["name"], outcome)
                runs.append(summary)
                echo(f"{exp['name']} seed {seed}: {'interrupted' if summary.interrupted else summary.verdict}"
                     f"{' (' + ', '.join(summary.anomalies) + ')' if summary.anomalies else ''}"
                     f"{'' if summary.behaved or summary.interrupted else ' NOT as expected'}")
                write_summary(campaign_dir, command, runs, experiments, seed_list, "running", client)
                if summary.interrupted:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        interrupted = True
    state = "interrupted (Ctrl-C): finished runs kept" if interrupted else "finished"
    rows = write_summary(campaign_dir, command, runs, experiments, seed_list, state, client)
    return campaign_dir, rows, runs, interrupted
