"""`brokerlab chaos run` and `brokerlab chaos report` (added to the `chaos` group in chaos/cli.py)."""
from __future__ import annotations

import os
import sys

import click

from chaos.cli_common import control_options, control_settings
from chaos.clients import LIBRARIES
from chaos.run import describe_expect


@click.command("run")
@click.argument("experiment", required=False)
@click.option("--all", "run_all", is_flag=True, help="Run every named experiment; one line each; exit 0 only "
                                                     "if every one behaved as it states.")
@click.option("--seed", type=int, default=None, help="Replay with this seed (default: the file's, else random).")
@click.option("--duration", type=click.FloatRange(min=1), default=None, help="Seconds of workload (default: "
                                                                             "the experiment's time_limit_s).")
@click.option("--bootstrap-server", "bootstrap", default=None,
              help="Use this running cluster (its nodes' agents must be reachable) instead of starting one.")
@click.option("--out", "out_dir", default=None, help="Run folder (default runs/NAME-TIME-seedN); with --all, "
                                                     "the parent of one folder per experiment.")
@click.option("--no-progress", is_flag=True, help="No live display.")
@click.option("--client", "client", type=click.Choice(LIBRARIES), default=None,
              help="The client library the workload drives (default: the experiment's clients.library, "
                   "else brokerlab).")
@click.option("--clients", "clients", default=None, metavar="all|LIB,LIB",
              help="Run under several client libraries ('all', or a comma-separated list); prints "
                   "experiment x library -> expected / got.")
@click.option("--network", type=click.Choice(["edge", "netns"]), default=None,
              help="Where network faults are applied: the nodes' gRPC edge, or kernel rules with every node in "
                   "a network namespace (root) (default: the experiment's `network`, else edge).")
@control_options
def chaos_run(experiment, run_all, seed, duration, bootstrap, out_dir, no_progress, client, clients,
              network) -> None:
    """Run EXPERIMENT (a name from chaos/experiments or a YAML path; default: safe) and check it.

    Prints the seed first, then the verdict and the report's path. Exit status: 0 when
    the run behaved as the experiment expects, 1 when not, 2 when the verdict is unknown.
    """
    import logging

    from chaos.clients import ClientUnsupported
    from chaos.run import experiment_paths, load_experiment
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if client and clients:
        raise click.UsageError("give --client or --clients, not both")
    libraries = _libraries(clients) if clients else None
    if run_all or libraries:
        if run_all and experiment:
            raise click.UsageError("give an EXPERIMENT or --all, not both")
        names = list(experiment_paths()) if run_all else [experiment or "safe"]
        if bootstrap and (run_all or len(libraries or [client]) > 1):
            raise click.UsageError("--bootstrap-server runs one experiment under one library (runs need fresh topics)")
        ok = _run_table(names, libraries or [client], seed=seed, duration=duration, out_dir=out_dir,
                        progress=not no_progress, bootstrap=None if run_all else bootstrap, network=network)
        sys.exit(0 if ok else 1)
    exp = load_experiment(experiment)
    from node.netns import NetnsError
    try:
        outcome = _run_one(exp, client, seed=seed, duration_s=duration, bootstrap=bootstrap, out_dir=out_dir,
                           progress=not no_progress, network=network, **control_settings())
    except (ClientUnsupported, NetnsError) as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"verdict: {outcome.verdict_line()}; expected {describe_expect(outcome.expect)}: "
               f"{'as expected' if outcome.behaved else 'NOT as expected'}")
    for n in outcome.notes:
        click.echo(f"note: {n}")
    click.echo(f"report: {os.path.join(outcome.run_dir, 'report.html')}")
    click.echo(f"replay: {outcome.replay_command()}")
    click.echo(f"took {outcome.elapsed_s:.0f} s end to end")
    click.echo(outcome.client_note())
    if outcome.result["valid"] not in (True, False):
        sys.exit(2)
    sys.exit(0 if outcome.behaved else 1)


def _libraries(spec: str) -> list[str]:
    if spec == "all":
        return list(LIBRARIES)
    libs = [x.strip() for x in spec.split(",") if x.strip()]
    bad = [x for x in libs if x not in LIBRARIES]
    if bad or not libs:
        raise click.BadParameter(f"unknown client library {bad[0] if bad else spec!r} (one of "
                                 f"{', '.join(LIBRARIES)}, or all)", param_hint="--clients")
    return libs


def _run_one(exp: dict, library: str | None, **kw):
    """One run; the experiment's expectation for this library (checker.by_client) replaces its own."""
    from chaos.clients import resolve_clients
    from chaos.run import expectation_for, run_experiment
    # Refused here (ClientUnsupported) before anything starts; run_experiment checks again.
    resolve_clients(exp["raw"].get("clients"), str((exp["raw"].get("workload") or {}).get("name", "log")), library)
    exp = {**exp, "expect": expectation_for(exp, library)}
    return run_experiment(exp, client=library, **kw)


def _run_table(names: list[str], libraries: list, *, seed, duration, out_dir, progress, bootstrap,
               network=None) -> bool:
    """Every experiment under every library; one line each (experiment x library -> expected / got).
    A library that cannot run an experiment is a row saying why, not a failure."""
    from chaos.clients import ClientUnsupported
    from chaos.run import expectation_for, load_experiment
    ok = True
    several = len(libraries) > 1 or libraries[0] is not None
    click.echo(f"{'experiment':32} {'client':16} {'expected':40} {'got':28}")
    for name in names:
        exp = load_experiment(name)
        for lib in libraries:
            label = lib or (exp["raw"].get("clients") or {}).get("library") or "brokerlab"
            sub = None
            if out_dir:
                sub = os.path.join(out_dir, name, label) if several else os.path.join(out_dir, name)
            expected = describe_expect(expectation_for(exp, lib))
            try:
                outcome = _run_one(exp, lib, seed=seed, duration_s=duration, bootstrap=bootstrap, out_dir=sub,
                                   network=network,
                                   progress=progress, echo=lambda s: click.echo(s, err=True))
            except ClientUnsupported as e:
                click.echo(f"{name:32} {label:16} {expected:40} {'-':28} NOT RUN: {e}")
                continue
            click.echo(f"{name:32} {label:16} {expected:40} {outcome.verdict:28} "
                       f"{'OK' if outcome.behaved else 'NOT AS EXPECTED'}  {outcome.run_dir}"
                       + "".join(f"  [{c}]" for c in outcome.caveats))
            ok = ok and outcome.behaved
    return ok


@click.command("campaign")
@click.argument("experiments", nargs=-1)
@click.option("--seeds", type=click.IntRange(min=1), required=True, help="Runs per experiment, one seed each.")
@click.option("--client", type=click.Choice(LIBRARIES), default="brokerlab", show_default=True,
              help="The client library the workloads drive.")
@click.option("--first-seed", type=click.IntRange(min=0), default=1, show_default=True,
              help="Seeds are FIRST, FIRST+1, ... (so a campaign can be replayed run by run).")
@click.option("--duration", type=click.FloatRange(min=1), default=None,
              help="Seconds of workload per run (default: each experiment's time_limit_s).")
@click.option("--out", "out_dir", default=None, help="Campaign folder (default runs/campaign-TIME).")
def chaos_campaign(experiments, seeds, client, first_seed, duration, out_dir) -> None:
    """Run each EXPERIMENT (default: safe) --seeds times, each on a fresh cluster, and tabulate the verdicts.

    One row per experiment: runs, valid, invalid, unknown, runs that behaved as the experiment
    expects, the anomalies seen (in how many runs), median ops/s. The campaign folder holds every
    run's folder, campaign.json and index.html linking the runs' reports. Ctrl-C stops after
    healing the current run and keeps the finished ones. Exit status: 0 when every run behaved
    as expected, 1 when one did not, 130 when interrupted.
    """
    import logging
    import shlex

    from chaos.campaign import check_client, format_table, run_campaign
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_client(client)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--client") from None
    command = "brokerlab chaos campaign " + " ".join(shlex.quote(a) for a in sys.argv[3:]) \
        if sys.argv[1:3] == ["chaos", "campaign"] else "brokerlab chaos campaign"
    try:
        folder, rows, runs, interrupted = run_campaign(
            list(experiments), seeds, client=client, first_seed=first_seed, duration_s=duration, out_dir=out_dir,
            command=command, echo=lambda s: click.echo(s, err=True))
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    click.echo(format_table(rows))
    click.echo(f"campaign folder: {folder}")
    click.echo(f"summary: {os.path.join(folder, 'index.html')}")
    if interrupted:
        click.echo(f"interrupted: {sum(not r.interrupted for r in runs)} finished runs kept")
        sys.exit(130)
    sys.exit(0 if all(r.behaved for r in runs) else 1)


@click.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
def chaos_report(run_dir: str) -> None:
    """Rebuild RUN_DIR/report.html (and its plots) from the run folder's history and results."""
    from chaos.report import write_report
    if not os.path.exists(os.path.join(run_dir, "history.jsonl")):
        raise click.UsageError(f"{run_dir} has no history.jsonl: not a run folder")
    click.echo(write_report(run_dir))
