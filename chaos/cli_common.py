"""Options shared by the chaos commands: where to find the cluster's control token (node.auth)."""
from __future__ import annotations

import click


def _remember(ctx, param, value):
    ctx.meta[f"brokerlab.{param.name}"] = value
    return value


def control_options(f):
    """--control-token and --data-dir: where a command finds the cluster's control token (node.auth)."""
    f = click.option("--data-dir", default=".brokerlab", show_default=True, expose_value=False, callback=_remember,
                     type=click.Path(file_okay=False),
                     help="The cluster's data dir (brokerlab up --data-dir; the Procfile's is .brokerlab): "
                          "its control-token file authorises the calls.")(f)
    return click.option("--control-token", default=None, envvar="BROKERLAB_CONTROL_TOKEN", expose_value=False,
                        callback=_remember,
                        help="The cluster's control token, when its data dir is not here "
                             "(default $BROKERLAB_CONTROL_TOKEN).")(f)


def control_settings() -> dict:
    """control_token and data_dir as given to the current command (for ChaosController / run_experiment)."""
    meta = click.get_current_context().meta
    return {"control_token": meta.get("brokerlab.control_token"), "data_dir": meta.get("brokerlab.data_dir")}
