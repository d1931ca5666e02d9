"""`brokerlab serve`: a local web UI (Flask) over a runs directory and, when reachable, a live cluster.

Pages: `/` every run and campaign (chaos/runs_index.py), `/campaign/<path>` one campaign's runs,
`/files/<path>` the run folders' own files (report.html, plots, a campaign's index.html), `/live`
the cluster (chaos/live.py), refreshed from `/api/live`. The web layer only renders what those
modules give it.
"""
from __future__ import annotations

import logging
import os
import threading

import click
from flask import Flask, abort, jsonify, render_template, send_from_directory
from werkzeug.serving import make_server

from chaos import runs_index
from chaos.cli_common import control_options, control_settings

log = logging.getLogger(__name__)

VERDICT_COLOURS = {"valid": "#1a7f37", "invalid": "#cf222e", "unknown": "#bf8700"}


def create_app(runs_dir: str, live=None, refresh_ms: int = 1000) -> Flask:
    runs_dir = os.path.abspath(runs_dir)
    app = Flask(__name__, template_folder="templates")
    app.jinja_env.globals.update(date_text=runs_index.date_text, colours=VERDICT_COLOURS)

    @app.get("/")
    def runs_page():
        runs, campaigns = runs_index.scan(runs_dir)
        return render_template("runs.html", runs=runs, campaigns=campaigns, runs_dir=runs_dir,
                               live=live is not None, title="runs")

    @app.get("/campaign/<path:rel>")
    def campaign_page(rel: str):
        _, campaigns = runs_index.scan(runs_dir)
        camp = next((c for c in campaigns if c.path == rel), None)
        if camp is None:
            abort(404, f"no campaign folder {rel} under {runs_dir}")
        return render_template("campaign.html", camp=camp, live=live is not None, title=f"campaign {rel}")

    @app.get("/files/<path:rel>")
    def files(rel: str):
        return send_from_directory(runs_dir, rel)  # refuses paths that leave runs_dir

    @app.get("/api/runs")
    def api_runs():
        runs, campaigns = runs_index.scan(runs_dir)
        return jsonify(runs=[_run_json(r) for r in runs],
                       campaigns=[{"path": c.path, "state": c.state, "runs": len(c.runs)} for c in campaigns])

    @app.get("/live")
    def live_page():
        if live is None:
            abort(404, "no cluster given (brokerlab serve --bootstrap-server HOST:PORT)")
        return render_template("live.html", bootstrap=live.bootstrap, refresh_ms=refresh_ms, live=True,
                               title="live")

    @app.get("/api/live")
    def api_live():
        if live is None:
            abort(404)
        return jsonify(live.snapshot())

    return app


def _run_json(r: runs_index.RunEntry) -> dict:
    return {"path": r.path, "experiment": r.experiment, "client": r.client, "seed": r.seed,
            "verdict": r.verdict, "verdict_text": r.verdict_text, "anomalies": list(r.anomalies), "ops": r.ops,
            "date": runs_index.date_text(r.date_ms), "campaign": r.campaign}


class WebServer:
    """The app on werkzeug's threaded WSGI server (Flask's own), bound to host:port (0: a free port)."""

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 8080):
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access line per live-page poll
        self.server = make_server(host, port, app, threaded=True)
        self.host, self.port = host, self.server.server_port
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> WebServer:
        self._thread = threading.Thread(target=self.server.serve_forever, name="serve", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(5)


@click.command("serve")
@click.argument("runs_dir", default="runs", required=False, type=click.Path(file_okay=False))
@click.option("--port", default=8080, show_default=True, type=click.IntRange(min=0, max=65535),
              help="Port of the web UI (0: a free one).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--bootstrap-server", "bootstrap", envvar="BROKERLAB_BOOTSTRAP", default="127.0.0.1:9100",
              show_default=True, help="Any node of the cluster the live page shows (default $BROKERLAB_BOOTSTRAP).")
@click.option("--no-live", is_flag=True, help="Only the runs; do not poll a cluster.")
@control_options
def serve(runs_dir: str, port: int, host: str, bootstrap: str, no_live: bool) -> None:
    """A local web UI: every run and campaign under RUNS_DIR (default runs/), and the live cluster.

    The runs page lists each run (experiment, client library, seed, verdict, anomalies, ops, date;
    click a column to sort) linked to its report, and each campaign's summary. The live page shows
    the cluster at --bootstrap-server: nodes (up, paused, killed, fenced), partitions with leader,
    ISR and high watermark, the fault rules in force and produce/consume rates, refreshed every second.
    """
    live = None
    if not no_live:
        from chaos.live import LiveView
        live = LiveView(bootstrap, **control_settings()).start()
    try:
        web = WebServer(create_app(runs_dir, live), host, port)
    except OSError as e:
        if live is not None:
            live.stop()
        raise click.UsageError(f"cannot listen on {host}:{port}: {e}") from None
    click.echo(f"brokerlab serve: runs in {os.path.abspath(runs_dir)} at {web.url}/"
               + (f"; live cluster {bootstrap} at {web.url}/live" if live else ""))
    try:
        web.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        web.server.server_close()
        if live is not None:
            live.stop()
