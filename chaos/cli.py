"""Click commands of the chaos package; brokerlab_cli adds them to `brokerlab`."""

from __future__ import annotations

import click

from chaos.checker import run_check


@click.command("check")
@click.argument("history", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def check(history: str, as_json: bool) -> None:
    """Check HISTORY (JSON Lines, shared/HISTORY.md) for Kafka anomalies.

    Exit status: 0 valid, 1 invalid, 2 unknown.
    """
    raise SystemExit(run_check(history, as_json))
