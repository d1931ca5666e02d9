"""What `brokerlab serve` lists: every run and campaign folder under a runs directory.

A run folder is one `brokerlab chaos run` wrote (run.json beside results.json, history.jsonl and
report.html); a campaign folder is one `brokerlab chaos campaign` wrote (campaign.json,
index.html, and its runs in NAME/seed-S/). Only reads files: the web layer serves what this finds.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

MAX_DEPTH = 4  # runs/<campaign>/<experiment>/seed-S is the deepest layout written
MAX_RUNS = 5000  # a runs dir is listed whole; past this the oldest are left out


@dataclass(frozen=True, slots=True)
class RunEntry:
    path: str  # relative to the runs dir, with "/"
    experiment: str
    client: str
    seed: int | None
    verdict: str  # valid / invalid / unknown
    verdict_text: str  # the run's own verdict: "valid", "lost-write+duplicate", "unknown"
    anomalies: tuple[str, ...]
    ops: int  # client operations completed (ok, fail or info)
    date_ms: int  # when the run finished (run.json written)
    expect: str = ""
    behaved: bool | None = None
    interrupted: bool = False
    campaign: str = ""  # path of the campaign folder it belongs to, "" for a lone run
    has_report: bool = False


@dataclass(slots=True)
class CampaignEntry:
    path: str
    command: str
    state: str
    date_ms: int
    rows: list[dict] = field(default_factory=list)
    runs: list[RunEntry] = field(default_factory=list)
    has_index: bool = False


def _load(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def _completed_ops(stats: dict) -> int:
    by_f = stats.get("ops_by_f")
    if isinstance(by_f, dict):
        return sum(int(n) for counts in by_f.values() if isinstance(counts, dict)
                   for ty, n in counts.items() if ty in ("ok", "fail", "info"))
    return int(stats.get("ops", 0) or 0)


def _expect_text(expect) -> str:
    if expect is None or isinstance(expect, str):
        return expect or ""
    return json.dumps(expect, sort_keys=True)


def read_run(runs_dir: str, run_dir: str, campaign: str = "", campaign_client: str = "") -> RunEntry:
    run = _load(os.path.join(run_dir, "run.json"))
    result = _load(os.path.join(run_dir, "results.json"))
    valid = result.get("valid", run.get("valid"))
    verdict = {True: "valid", False: "invalid"}.get(valid, "unknown")
    try:
        date_ms = int(os.path.getmtime(os.path.join(run_dir, "run.json")) * 1000)
    except OSError:
        date_ms = 0
    seed = run.get("seed")
    rel = os.path.relpath(run_dir, runs_dir).replace(os.sep, "/")
    return RunEntry(
        path=rel, experiment=str(run.get("name") or os.path.basename(run_dir)),
        # Runs from before run.json named the client library all drove brokerlab's own client.
        client=_client_text(run.get("client")) or campaign_client or "brokerlab",
        seed=int(seed) if isinstance(seed, int) else None, verdict=verdict,
        verdict_text=str(run.get("verdict") or verdict),
        anomalies=tuple(str(a) for a in result.get("anomaly_types", [])),
        ops=_completed_ops(result.get("stats") or {}), date_ms=date_ms, expect=_expect_text(run.get("expect")),
        behaved=run.get("behaved") if isinstance(run.get("behaved"), bool) else None,
        interrupted=bool(run.get("interrupted")), campaign=campaign,
        has_report=os.path.exists(os.path.join(run_dir, "report.html")))


def _client_text(client) -> str:
    """run.json's client: {"library": "kafka-python", "version": "2.2.15"} (or a plain name)."""
    if isinstance(client, dict):
        return " ".join(str(client[k]) for k in ("library", "version") if client.get(k))
    return str(client or "")


def _client_of_campaign(doc: dict) -> str:
    if doc.get("client"):
        return str(doc["client"])
    words = str(doc.get("command", "")).split()
    for i, w in enumerate(words[:-1]):
        if w == "--client":
            return words[i + 1]
        if w.startswith("--client="):
            return w.split("=", 1)[1]
    return ""


def scan(runs_dir: str) -> tuple[list[RunEntry], list[CampaignEntry]]:
    """Every run (newest first) and every campaign under `runs_dir`; ([], []) if it does not exist."""
    runs: list[RunEntry] = []
    campaigns: list[CampaignEntry] = []
    if not os.path.isdir(runs_dir):
        return runs, campaigns
    stack: list[tuple[str, int, CampaignEntry | None, str]] = [(runs_dir, 0, None, "")]
    while stack and len(runs) < MAX_RUNS:
        d, depth, camp, camp_client = stack.pop()
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        if "campaign.json" in names and camp is None:
            doc = _load(os.path.join(d, "campaign.json"))
            camp = CampaignEntry(path=os.path.relpath(d, runs_dir).replace(os.sep, "/"),
                                 command=str(doc.get("command", "")), state=str(doc.get("state", "")),
                                 date_ms=int(os.path.getmtime(os.path.join(d, "campaign.json")) * 1000),
                                 rows=[r for r in doc.get("rows", []) if isinstance(r, dict)],
                                 has_index="index.html" in names)
            camp_client = _client_of_campaign(doc)
            campaigns.append(camp)
        if "run.json" in names:
            entry = read_run(runs_dir, d, camp.path if camp else "", camp_client)
            runs.append(entry)
            if camp is not None:
                camp.runs.append(entry)
            continue
        if depth >= MAX_DEPTH:
            continue
        for n in names:
            sub = os.path.join(d, n)
            if n not in ("logs", "plots") and not n.startswith(".") and os.path.isdir(sub):
                stack.append((sub, depth + 1, camp, camp_client))
    runs.sort(key=lambda r: (-r.date_ms, r.path))
    campaigns.sort(key=lambda c: (-c.date_ms, c.path))
    for c in campaigns:
        c.runs.sort(key=lambda r: (r.experiment, r.seed if r.seed is not None else -1))
    return runs, campaigns


def date_text(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else ""
