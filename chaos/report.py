"""report.html for a run folder: the verdict, each anomaly with its evidence, and plots.

Everything is rebuilt from the folder's history.jsonl, results.json and
run.json (`brokerlab chaos report RUN_DIR`). Plots are PNGs in RUN_DIR/plots,
drawn with matplotlib's Agg backend (no display needed):

- latency.png     op latency over time, per f, fault windows shaded
- throughput.png  completions per second by type, fault windows shaded
- unseen.png      acknowledged sends not yet seen by any poll, over time
- key-<k>.png     per affected key: offsets against time, sends / polls / anomalies
"""
from __future__ import annotations

import html
import json
import os
from collections import defaultdict

from chaos.history import read_history
from chaos.runner import FAULT_FS, HEAL_FS

__all__ = ["fault_windows", "unseen_series", "write_report"]

MAX_KEY_PLOTS = 6
MAX_EVIDENCE_ROWS = 50
_COLORS = {"ok": "tab:green", "fail": "tab:orange", "info": "tab:red"}
_FAULT_COLORS = {"kill": "tab:red", "pause": "tab:purple", "partition": "tab:blue", "delay": "tab:olive",
                 "heartbeat-delay": "tab:cyan", "clock": "tab:brown", "drop-response": "tab:pink"}


def fault_windows(history: list[dict]) -> list[tuple[float, float, str]]:
    """(start_s, end_s, label) for each fault: from its op until the op that undoes it, or the end.
    Faults may overlap (several schedules): a start / resume closes the windows of its nodes only,
    a heal of one fault ({"of": f}) closes that kind only, a plain heal closes everything."""
    end_s = history[-1]["time"] / 1e9 if history else 0.0
    open_: dict[tuple[str, str], tuple[float, str, frozenset]] = {}
    out = []
    undo = {"start": ("kill", "stop"), "resume": ("pause",), "restart": ("kill", "stop")}
    for op in history:
        if op.get("process") != "nemesis":
            continue
        f, t = op["f"], op["time"] / 1e9
        value = op.get("value") if isinstance(op.get("value"), dict) else {}
        nodes = frozenset(value.get("nodes") or ())
        if f in FAULT_FS or f == "stop":
            label = _label(op)
            open_.setdefault((f, label), (t, label, nodes))
        elif f in HEAL_FS:
            if f == "heal":
                kinds = {value["of"]} if value.get("of") else None
            else:
                kinds = set(undo.get(f, ()))
            for key, (start, label, opened) in list(open_.items()):
                if kinds is not None and key[0] not in kinds:
                    continue
                if f != "heal" and nodes and opened and not opened & nodes:
                    continue
                del open_[key]
                out.append((start, t, label))
    for start, label, _ in open_.values():
        out.append((start, end_s, label))
    return sorted(out)


def _delay_layer(run: dict) -> str:
    """With network netns, where delay and jitter were applied (netem, or the edge and why)."""
    layer = (run.get("layers") or {}).get("delay, jitter")
    return f" (delay, jitter: {html.escape(str(layer))})" if layer and run.get("network") == "netns" else ""


def _label(op: dict) -> str:
    v = op.get("value")
    target = ""
    if isinstance(v, dict):
        if v.get("nodes"):
            target = " " + ",".join(v["nodes"])
        elif v.get("groups"):
            target = " " + " | ".join(",".join(g) for g in v["groups"])
        if v.get("layer"):  # which layer applied it: the nodes' gRPC edge or the kernel (nftables, netem)
            target += f" ({v['layer']})"
    return op["f"] + target


def unseen_series(history: list[dict], step_s: float = 1.0) -> tuple[list[float], list[int]]:
    """For t on a grid: acknowledged sends by t that no ok poll had returned by t."""
    acked: dict[tuple, float] = {}
    seen: dict[tuple, float] = {}
    for op in history:
        if op.get("process") == "nemesis" or op.get("type") != "ok" or not isinstance(op.get("value"), list):
            continue
        t = op["time"] / 1e9
        for mop in op["value"]:
            if not isinstance(mop, list) or not mop:
                continue
            if mop[0] == "send" and len(mop) > 2:
                x = mop[2]
                v = x[1] if isinstance(x, list) else x
                acked.setdefault((mop[1], v), t)
            elif mop[0] == "poll" and len(mop) > 1 and isinstance(mop[1], dict):
                for k, pairs in mop[1].items():
                    for pair in pairs:
                        seen.setdefault((k, pair[1]), t)
    if not history:
        return [], []
    end = history[-1]["time"] / 1e9
    grid = [i * step_s for i in range(int(end / step_s) + 2)]
    # events: +1 at ack, -1 when first seen (if seen after ack)
    events = []
    for kv, ta in acked.items():
        events.append((ta, 1))
        ts = seen.get(kv)
        if ts is not None:
            events.append((max(ts, ta), -1))
    events.sort()
    out, n, i = [], 0, 0
    for g in grid:
        while i < len(events) and events[i][0] <= g:
            n += events[i][1]
            i += 1
        out.append(n)
    return grid, out


# -- plots -------------------------------------------------------------------

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _shade(ax, windows) -> None:
    seen = set()
    for start, end, label in windows:
        f = label.split(" ", 1)[0]
        ax.axvspan(start, max(end, start + 0.05), color=_FAULT_COLORS.get(f, "tab:gray"), alpha=0.15,
                   label=None if f in seen else f)
        seen.add(f)


def _latencies(history):
    pending = {}
    out = defaultdict(list)  # f -> [(t_s, latency_ms, type)]
    for op in history:
        p = op.get("process")
        if p == "nemesis":
            continue
        if op["type"] == "invoke":
            pending[p] = op
        else:
            inv = pending.pop(p, None)
            if inv is not None:
                out[op["f"]].append((inv["time"] / 1e9, (op["time"] - inv["time"]) / 1e6, op["type"]))
    return out


def plot_latency(history, windows, path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 4))
    _shade(ax, windows)
    markers = {"send": "o", "poll": "s", "txn": "D", "assign": "^", "crash": "x", "commit": "v",
               "committed": "<", "subscribe": ">"}
    for f, pts in sorted(_latencies(history).items()):
        for ty in ("ok", "fail", "info"):
            xs = [p[0] for p in pts if p[2] == ty]
            ys = [max(p[1], 0.01) for p in pts if p[2] == ty]
            if xs:
                ax.scatter(xs, ys, s=6, marker=markers.get(f, "."), color=_COLORS[ty], alpha=0.6,
                           label=f"{f} {ty}")
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency by operation (shaded: faults)")
    ax.legend(fontsize=7, ncol=4, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_throughput(history, windows, path, step_s: float = 1.0) -> None:
    plt = _plt()
    counts = defaultdict(lambda: defaultdict(int))
    end = 0.0
    for op in history:
        if op.get("process") == "nemesis" or op["type"] == "invoke":
            continue
        b = int(op["time"] / 1e9 / step_s)
        counts[op["type"]][b] += 1
        end = max(end, op["time"] / 1e9)
    fig, ax = plt.subplots(figsize=(11, 3.5))
    _shade(ax, windows)
    n = int(end / step_s) + 1
    for ty in ("ok", "fail", "info"):
        ax.plot([i * step_s for i in range(n)], [counts[ty][i] / step_s for i in range(n)],
                color=_COLORS[ty], label=ty, linewidth=1.2)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("ops / s")
    ax.set_title("Throughput: completions per second (shaded: faults)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_unseen(history, windows, path) -> None:
    plt = _plt()
    xs, ys = unseen_series(history)
    fig, ax = plt.subplots(figsize=(11, 3))
    _shade(ax, windows)
    ax.step(xs, ys, where="post", color="tab:red")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("unseen sends")
    ax.set_title("Acknowledged sends no poll had returned yet")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_reassignments(rows: list[dict], windows, path) -> None:
    """Per partition of a SIGKILLed member: how long until another member owned it (dots; crosses at
    the bound when it never was), each kill's bound as a short line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 3.5))
    _shade(ax, windows)
    done = [(r["time_s"], r["reassigned_ms"]) for r in rows if r.get("reassigned_ms") is not None]
    never = [(r["time_s"], r["bound_ms"]) for r in rows if r.get("reassigned_ms") is None]
    if done:
        ax.scatter(*zip(*done), color="tab:green", s=18, label="reassigned after (ms)", zorder=3)
    if never:
        ax.scatter(*zip(*never), color="tab:red", marker="x", s=30, label="not reassigned", zorder=3)
    for t, bound in sorted({(r["time_s"], r["bound_ms"]) for r in rows}):
        ax.hlines(bound, t - 0.4, t + 0.4, color="tab:gray", linestyles="dashed")
    ax.set_xlabel("kill time (s)")
    ax.set_ylabel("ms after the kill")
    ax.set_ylim(bottom=0)
    ax.set_title("Partitions of killed members: owned and polled again by another member (bound dashed)")
    if done or never:
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_key(history, windows, key: str, marks: dict[str, list[tuple[int, object, int | None]]], path) -> None:
    """Offsets of `key` against time: ok sends (dots), polls (vertical spans), anomalies (crosses)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 4))
    _shade(ax, windows)
    sx, sy, sc = [], [], []
    for op in history:
        if op.get("process") == "nemesis" or op["type"] == "invoke" or not isinstance(op.get("value"), list):
            continue
        t = op["time"] / 1e9
        for mop in op["value"]:
            if not isinstance(mop, list) or not mop:
                continue
            if mop[0] == "send" and len(mop) > 2 and mop[1] == key and isinstance(mop[2], list) \
                    and mop[2][0] is not None:
                sx.append(t)
                sy.append(mop[2][0])
                sc.append(_COLORS.get(op["type"], "gray"))
            elif mop[0] == "poll" and len(mop) > 1 and isinstance(mop[1], dict) and mop[1].get(key):
                offs = [p[0] for p in mop[1][key]]
                ax.vlines(t, min(offs), max(offs), color="tab:blue", alpha=0.3, linewidth=1)
    ax.scatter(sx, sy, s=8, c=sc, label="send (ok green, info red)")
    styles = {"lost-write": ("X", "red"), "duplicate": ("D", "darkorange"),
              "inconsistent-offsets": ("P", "magenta"), "unseen": ("x", "gray"), "G1a": ("*", "black")}
    end = history[-1]["time"] / 1e9 if history else 0
    wanted = {p[2] for pts in marks.values() for p in pts}
    time_of = {op.get("index", i): op["time"] / 1e9 for i, op in enumerate(history)
               if op.get("index", i) in wanted}
    # unseen first, so the rarer, graver marks are drawn on top of it
    for name, pts in sorted(marks.items(), key=lambda x: x[0] != "unseen"):
        m, c = styles.get(name, ("o", "black"))
        xs = [time_of.get(p[2], end) for p in pts]
        ax.scatter(xs, [p[0] for p in pts], marker=m, s=50, color=c, label=f"{name} ({len(pts)})", zorder=5)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("offset")
    ax.set_title(f"Key {key}: offsets written and read over time (polls: blue spans; "
                 f"anomalies at the op that revealed them)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- html --------------------------------------------------------------------

def _affected(result: dict) -> dict[str, dict[str, list]]:
    """key -> anomaly name -> [(offset, value, op index)] for anomalies that name a key; the op is
    the evidence's last (the one that revealed it: the read past a lost write, the writer of an unseen one)."""
    out: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for name, evs in result.get("anomalies", {}).items():
        if name in ("int-send-skip", "G0", "G1c-ww"):
            continue
        for ev in evs:
            k = ev.get("key")
            if k is None:
                continue
            offs = ev.get("offsets") or ([ev["offset"]] if ev.get("offset") is not None else [])
            idxs = [i for i in ev.get("indexes") or [] if isinstance(i, int)]
            at = max(idxs) if idxs else None
            for o in offs or []:
                if isinstance(o, int):
                    out[k][name].append((o, ev.get("value"), at))
    return out


def write_report(run_dir: str) -> str:
    """Writes RUN_DIR/report.html (and RUN_DIR/plots/*.png); returns the report's path."""
    hist_path = os.path.join(run_dir, "history.jsonl")
    history = read_history(hist_path)
    res_path = os.path.join(run_dir, "results.json")
    if os.path.exists(res_path):
        with open(res_path, encoding="utf-8") as fh:
            result = json.load(fh)
    else:
        from chaos.checker import check
        result = check(history)
    run = {}
    if os.path.exists(os.path.join(run_dir, "run.json")):
        with open(os.path.join(run_dir, "run.json"), encoding="utf-8") as fh:
            run = json.load(fh)
    plots_dir = os.path.join(run_dir, "plots")
    os.makedirs(plots_dir, exist_ok=True)
    windows = fault_windows(history)
    plots = [("Latency", "latency.png"), ("Throughput", "throughput.png"), ("Unseen messages", "unseen.png")]
    plot_latency(history, windows, os.path.join(plots_dir, "latency.png"))
    plot_throughput(history, windows, os.path.join(plots_dir, "throughput.png"))
    plot_unseen(history, windows, os.path.join(plots_dir, "unseen.png"))
    rows = (result.get("stats", {}).get("group-members") or {}).get("reassignments")
    if rows:
        plot_reassignments(rows, windows, os.path.join(plots_dir, "reassignments.png"))
    key_plots = []
    for key, marks in list(_affected(result).items())[:MAX_KEY_PLOTS]:
        fn = "key-" + key.replace("/", "_") + ".png"
        plot_key(history, windows, key, marks, os.path.join(plots_dir, fn))
        key_plots.append((key, fn))
    path = os.path.join(run_dir, "report.html")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(_html(result, run, windows, plots, key_plots))
    return path


def _reassignment_view(stats: dict) -> list[str]:
    """The group-members workload's table: per partition of a SIGKILLed member, when another member
    owned it (a poll whose assignment has it) and returned records of it, against the bound."""
    g = stats.get("group-members") or {}
    rows = g.get("reassignments")
    if rows is None:
        return []
    esc = html.escape
    intro = (f"<h2>Partitions reassigned after member kills</h2><p>{g.get('member_kills', 0)} members SIGKILLed "
             f"right after a commit; bound = session.timeout.ms {g.get('session_timeout_ms')} + rebalance allowance "
             f"{g.get('rebalance_allowance_ms')} ms, extended while the coordinator was down and by later kills. "
             f"Slowest reassignment: {g.get('reassigned_ms_max')} ms; late: {g.get('not_reassigned', 0)}.</p>")
    head = ("<table><tr><th>kill at (s)</th><th>op</th><th>member</th><th>partition</th>"
            "<th>reassigned after (ms)</th><th>records after (ms)</th><th>bound (ms)</th><th></th></tr>")
    out = [intro]
    if rows:
        out.append("<img src='plots/reassignments.png' alt='reassignment after member kills' width='100%'>")
    out.append(head)
    for r in rows:
        member = r.get("group_instance_id") or (r.get("member_id") or "")[-12:]
        kind = "static" if r.get("group_instance_id") else "dynamic"
        verdict = "LATE" if r.get("late") else ("ok" if r.get("reassigned_ms") is not None else "run ended")
        out.append(f"<tr><td>{r['time_s']:.1f}</td><td>{r['kill_index']}</td><td>{esc(member)} ({kind})</td>"
                   f"<td>{esc(r['key'])}</td><td>{_ms(r.get('reassigned_ms'))}</td><td>{_ms(r.get('records_ms'))}</td>"
                   f"<td>{r['bound_ms']}</td><td>{verdict}</td></tr>")
    out.append("</table>")
    return out


def _ms(v) -> str:
    return "-" if v is None else str(v)


def _html(result, run, windows, plots, key_plots) -> str:
    from chaos.checker import _allowed
    from chaos.workloads import WORKLOAD_ANOMALIES
    esc = html.escape
    valid = result.get("valid")
    verdict = {True: "VALID", False: "INVALID"}.get(valid, "UNKNOWN")
    color = {True: "#1a7f37", False: "#cf222e"}.get(valid, "#9a6700")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>brokerlab run {esc(str(run.get('name', '')))}: {verdict}</title>",
        ("<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}"
         "code,pre{background:#f6f8fa}.verdict{font-size:2.2em;font-weight:bold}</style></head><body>"),
        f"<div class='verdict' style='color:{color}'>{verdict}</div>",
    ]
    if result.get("unknown_reason"):
        parts.append(f"<p><b>Unknown because</b> {esc(str(result['unknown_reason']))}</p>")
    for c in result.get("caveats", []):
        # A failed heal or an incomplete final read limits what the verdict can say: said first.
        parts.append(f"<p style='color:#cf222e'><b>caveat:</b> {esc(str(c))}</p>")
    if run:
        beh = run.get("behaved")
        client = run.get("client") or {"library": "brokerlab"}
        parts.append(f"<p>experiment <b>{esc(str(run.get('name')))}</b>, seed <b>{run.get('seed')}</b>, "
                     f"client library <b>{esc(str(client.get('library')))} {esc(str(client.get('version', '')))}</b>, "
                     f"network <b>{esc(str(run.get('network', 'edge')))}</b>"
                     + _delay_layer(run) + ", "
                     f"{run.get('duration_s')} s of workload, {run.get('elapsed_s', 0):.0f} s end to end. "
                     f"Expected: <b>{esc(json.dumps(run.get('expect')))}</b>; got <b>{esc(str(run.get('verdict')))}"
                     f"</b> — {'as expected' if beh else 'NOT as expected'}.</p>")
        parts.append(f"<p>Replay: <code>{esc(str(run.get('replay', '')))}</code></p>")
        for n in run.get("notes") or []:
            parts.append(f"<p><b>note:</b> {esc(n)}</p>")
    stats = result.get("stats", {})
    brief = {k: stats[k] for k in ("ops", "keys", "values_acknowledged", "values_read", "lost_count",
                                   "unseen_count", "check_time_ms", "error") if k in stats}
    parts.append("<h2>Stats</h2><pre>" + esc(json.dumps(brief, indent=1, sort_keys=True)) + "</pre>")
    parts.append("<h2>Anomalies</h2>")
    names = result.get("anomaly_types", [])
    if not names:
        parts.append("<p>None found.</p>")
    counts = stats.get("anomaly_counts", {})
    for name in names:
        evs = result["anomalies"].get(name, [])
        tag = " (allowed by Kafka's model: reported, not fatal)" if _allowed(name, evs) else ""
        parts.append(f"<h3>{esc(name)}{tag}: {counts.get(name, len(evs))}</h3>")
        if name in WORKLOAD_ANOMALIES:
            parts.append(f"<p>{esc(WORKLOAD_ANOMALIES[name])} (the workload's own check: docs/checks.md)</p>")
        parts.append("<table><tr><th>key</th><th>evidence</th><th>op indexes</th></tr>")
        for ev in evs[:MAX_EVIDENCE_ROWS]:
            rest = {k: v for k, v in ev.items() if k not in ("key", "indexes")}
            parts.append(f"<tr><td>{esc(str(ev.get('key', '')))}</td><td><code>"
                         f"{esc(json.dumps(rest, sort_keys=True, default=str))}</code></td>"
                         f"<td>{esc(str(ev.get('indexes', '')))}</td></tr>")
        if len(evs) > MAX_EVIDENCE_ROWS:
            parts.append(f"<tr><td colspan=3>... {len(evs) - MAX_EVIDENCE_ROWS} more in results.json</td></tr>")
        parts.append("</table>")
    if key_plots:
        parts.append("<h2>Affected keys: offsets against operations</h2>")
        for key, fn in key_plots:
            parts.append(f"<h3>{esc(key)}</h3><img src='plots/{esc(fn)}' alt='key {esc(key)}' width='100%'>")
    for title, fn in plots:
        parts.append(f"<h2>{esc(title)}</h2><img src='plots/{esc(fn)}' alt='{esc(title)}' width='100%'>")
    parts.extend(_reassignment_view(stats))
    parts.append("<h2>Faults</h2><table><tr><th>from (s)</th><th>to (s)</th><th>fault</th></tr>")
    for start, end, label in windows:
        parts.append(f"<tr><td>{start:.1f}</td><td>{end:.1f}</td><td>{esc(label)}</td></tr>")
    parts.append("</table><p>Files: <a href='history.jsonl'>history.jsonl</a>, "
                 "<a href='results.json'>results.json</a>, <a href='experiment.yaml'>experiment.yaml</a>, "
                 "<a href='logs/'>logs/</a></p></body></html>")
    return "\n".join(parts)
