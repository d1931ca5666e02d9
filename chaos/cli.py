"""Click commands of the chaos package; brokerlab_cli adds them to `brokerlab`."""

from __future__ import annotations

import click

from chaos.checker import run_check
from chaos.cli_common import control_options, control_settings


@click.command("check")
@click.argument("history", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def check(history: str, as_json: bool) -> None:
    """Check HISTORY (JSON Lines, shared/HISTORY.md) for Kafka anomalies.

    Exit status: 0 valid, 1 invalid, 2 unknown.
    """
    raise SystemExit(run_check(history, as_json))


# -- brokerlab chaos ... : faults on a running cluster, through its agents ------------------------

def _BOOTSTRAP(f):
    f = click.option("--bootstrap-server", "bootstrap", envvar="BROKERLAB_BOOTSTRAP", default="127.0.0.1:9100",
                     show_default=True, help="Any node of the cluster (default $BROKERLAB_BOOTSTRAP).")(f)
    return control_options(f)


def _controller(bootstrap: str):
    from chaos.controller import ChaosController

    return ChaosController(bootstrap, **control_settings())


def _nodes_arg(ctx, param, value):
    return [n.strip() for v in value for n in v.split(",") if n.strip()]


@click.group("chaos")
def chaos() -> None:
    """Faults on a running cluster (from `brokerlab up` or the Procfile): processes, network, clocks."""


@chaos.command("status")
@_BOOTSTRAP
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def chaos_status(bootstrap: str, as_json: bool) -> None:
    """Nodes, their process state and the faults in force."""
    import json

    with _controller(bootstrap) as c:
        st = c.status()
    if as_json:
        click.echo(json.dumps(st, indent=1))
        return
    for row in st["nodes"]:
        faults = "; ".join(row.get("faults", [])) or "-"
        clock = f" clock {row['clock']}" if row.get("clock") else ""
        click.echo(f"{row['node']:<12} {row.get('state', '?'):<11} pid {row.get('pid', 0):<7} "
                   f"node {row['address']:<16} agent {row['agent']:<16} faults: {faults}{clock}")
    if st.get("layers"):
        click.echo(f"network: {st['network']}; fault layers: "
                   + "; ".join(f"{what}: {layer}" for what, layer in st["layers"].items()))
    if "fenced" in st:
        click.echo(f"fenced brokers: {', '.join(st['fenced']) or '-'}; "
                   f"under-replicated partitions: {', '.join(st['under_replicated']) or '-'}")
    else:
        click.echo("cluster metadata: unreachable")


def _process_command(name: str, method: str, doc: str):
    @chaos.command(name, help=doc)
    @click.argument("nodes", nargs=-1, required=True, callback=_nodes_arg)
    @_BOOTSTRAP
    def cmd(nodes, bootstrap):
        with _controller(bootstrap) as c:
            c.discover()
            for st in getattr(c, method)(*nodes):
                click.echo(f"{st['node']}: {st['state']} (pid {st['pid']}, restarts {st['restarts']})")

    return cmd


for _name, _doc in (("kill", "SIGKILL the NODES (their agents stay up)."),
                    ("start", "Start the NODES again."),
                    ("stop", "SIGTERM the NODES and wait for them to exit."),
                    ("restart", "Stop then start the NODES."),
                    ("pause", "SIGSTOP the NODES."),
                    ("resume", "SIGCONT the NODES.")):
    _process_command(_name, _name, _doc)


@chaos.command("partition")
@click.argument("groups", nargs=-1, required=True)
@click.option("--one-way", is_flag=True, help="Only traffic from the first group is cut.")
@_BOOTSTRAP
def chaos_partition(groups, one_way: bool, bootstrap: str) -> None:
    """Cut traffic between GROUPS of comma-separated nodes, e.g. `broker-1 broker-2,broker-3,coordinator`.

    Nodes in no group keep every link. Replaces an earlier partition."""
    parsed = [[n.strip() for n in g.split(",") if n.strip()] for g in groups]
    with _controller(bootstrap) as c:
        c.discover()
        grudge = c.partition(parsed, one_way)
    for dst, srcs in grudge.items():
        click.echo(f"{dst} refuses traffic from {', '.join(srcs)}")


@chaos.command("isolate")
@click.argument("node")
@_BOOTSTRAP
def chaos_isolate(node: str, bootstrap: str) -> None:
    """Cut NODE off from every other node (clients still reach it)."""
    with _controller(bootstrap) as c:
        c.discover()
        c.isolate(node)
    click.echo(f"{node} isolated")


@chaos.command("delay")
@click.option("--link", "links", multiple=True, required=True, metavar="A:B",
              help="Both directions between A and B (node names, '*', or client:<id>); repeatable.")
@click.option("--ms", type=click.IntRange(0), required=True)
@click.option("--jitter-ms", type=click.IntRange(0), default=0, show_default=True)
@_BOOTSTRAP
def chaos_delay(links, ms: int, jitter_ms: int, bootstrap: str) -> None:
    """Add latency (and jitter) on links: at the nodes' edge, or with netem in a netns cluster whose
    kernel has it (`chaos status` says which)."""
    with _controller(bootstrap) as c:
        c.discover()
        c.delay(list(links), ms, jitter_ms)
        layers = " + ".join(c.last_layers) or "edge"
    click.echo(f"delay {ms} ms ±{jitter_ms} on {', '.join(links)} ({layers})")


@chaos.command("loss")
@click.option("--link", "links", multiple=True, required=True, metavar="A:B")
@click.option("--probability", "-p", type=click.FloatRange(0, 1, min_open=True), required=True)
@_BOOTSTRAP
def chaos_loss(links, probability: float, bootstrap: str) -> None:
    """Refuse a random share of the calls on links."""
    with _controller(bootstrap) as c:
        c.discover()
        c.loss(list(links), probability)
    click.echo(f"loss p={probability:g} on {', '.join(links)}")


@chaos.command("heartbeat-delay")
@click.argument("nodes", nargs=-1, required=True, callback=_nodes_arg)
@click.option("--ms", type=click.IntRange(0), required=True)
@_BOOTSTRAP
def chaos_heartbeat_delay(nodes, ms: int, bootstrap: str) -> None:
    """Delay only heartbeats from NODES (brokers, or client:<id> consumers) at the coordinator."""
    with _controller(bootstrap) as c:
        c.discover()
        c.heartbeat_delay(nodes, ms)
    click.echo(f"heartbeats from {', '.join(nodes)} delayed {ms} ms")


@chaos.command("heartbeat-drop")
@click.argument("nodes", nargs=-1, required=True, callback=_nodes_arg)
@_BOOTSTRAP
def chaos_heartbeat_drop(nodes, bootstrap: str) -> None:
    """Drop only heartbeats from NODES at the coordinator."""
    with _controller(bootstrap) as c:
        c.discover()
        c.heartbeat_drop(nodes)
    click.echo(f"heartbeats from {', '.join(nodes)} dropped")


@chaos.command("cut-clients")
@click.argument("nodes", nargs=-1, required=True, callback=_nodes_arg)
@click.option("--client", "client", default="client:*", show_default=True, help="client:<client.id> or client:*")
@_BOOTSTRAP
def chaos_cut_clients(nodes, client: str, bootstrap: str) -> None:
    """Clients can no longer reach NODES."""
    with _controller(bootstrap) as c:
        c.discover()
        c.cut_clients(nodes, client)
    click.echo(f"{client} cut off from {', '.join(nodes)}")


@chaos.command("clock")
@click.argument("node")
@click.option("--offset-ms", type=int, default=0, show_default=True)
@click.option("--strobe-ms", type=int, default=0, show_default=True, help="Flip between offset and offset+strobe.")
@click.option("--period-ms", type=click.IntRange(0), default=0, show_default=True, help="Strobe period.")
@_BOOTSTRAP
def chaos_clock(node: str, offset_ms: int, strobe_ms: int, period_ms: int, bootstrap: str) -> None:
    """Skew NODE's clock by an offset, or strobe it."""
    with _controller(bootstrap) as c:
        c.discover()
        c.clock(node, offset_ms, strobe_ms, period_ms)
    click.echo(f"{node} clock offset {offset_ms} ms" + (f", strobe {strobe_ms} ms every {period_ms} ms"
                                                       if strobe_ms else ""))


@chaos.command("revoke-user")
@click.argument("user")
@_BOOTSTRAP
def chaos_revoke_user(user: str, bootstrap: str) -> None:
    """USER's SASL authentication fails, and its connections close, until `chaos restore-user USER`
    (its credential is kept). A secured cluster only (docs/security.md)."""
    with _controller(bootstrap) as c:
        c.revoke_user(user)
    click.echo(f"{user} revoked")


@chaos.command("restore-user")
@click.argument("user")
@_BOOTSTRAP
def chaos_restore_user(user: str, bootstrap: str) -> None:
    """USER authenticates again (undoes `chaos revoke-user`)."""
    with _controller(bootstrap) as c:
        c.revoke_user(user, False)
    click.echo(f"{user} restored")


@chaos.command("heal")
@_BOOTSTRAP
@click.option("--wait-s", type=click.FloatRange(0), default=0, show_default=True,
              help="Then wait up to this long for every partition's ISR to be full (exit 1 if not).")
def chaos_heal(bootstrap: str, wait_s: float) -> None:
    """Remove every fault, resume paused nodes, start stopped / killed ones."""
    with _controller(bootstrap) as c:
        out = c.heal()
        click.echo(f"healed {', '.join(out['healed']) or '-'}; resumed {', '.join(out['resumed']) or '-'}; "
                   f"started {', '.join(out['started']) or '-'}")
        for node, e in sorted(out.get("failed", {}).items()):
            click.echo(f"Error: {node} not healed: {e}", err=True)
        if wait_s and not c.wait_healthy(wait_s):
            click.echo(f"Error: the cluster is not fully replicated after {wait_s:g} s", err=True)
            raise SystemExit(1)
        if out.get("failed"):
            raise SystemExit(1)


# -- brokerlab chaos run / report: experiments end to end (chaos/run.py, chaos/report.py) -----------
from chaos.chaos_run_cli import chaos_campaign, chaos_report, chaos_run  # kept in their own module

chaos.add_command(chaos_run)
chaos.add_command(chaos_campaign)
chaos.add_command(chaos_report)
