"""`brokerlab chaos run` and `brokerlab chaos report` (added to the `chaos` group in chaos/cli.py)."""
from __future__ import annotations

import os
import sys

import click

from chaos.cli_common import control_options, control_settings


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
@control_options
def chaos_run(experiment, run_all, seed, duration, bootstrap, out_dir, no_progress) -> None:
    """Run EXPERIMENT (a name from chaos/experiments or a YAML path; default: safe) and check it.

    Prints the seed first, then the verdict and the report's path. Exit status: 0 when
    the run behaved as the experiment expects, 1 when not, 2 when the verdict is unknown.
    """
    import logging

    from chaos.run import describe_expect, experiment_paths, load_experiment, run_experiment
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if run_all:
        if experiment:
            raise click.UsageError("give an EXPERIMENT or --all, not both")
        rows, ok = [], True
        for name in experiment_paths():
            exp = load_experiment(name)
            sub = os.path.join(out_dir, name) if out_dir else None
            outcome = run_experiment(exp, seed=seed, duration_s=duration, bootstrap=None, out_dir=sub,
                                     progress=not no_progress, echo=lambda s: click.echo(s, err=True))
            line = (f"{name:32} expected {describe_expect(exp['expect']):40} got {outcome.verdict:28} "
                    f"{'OK' if outcome.behaved else 'NOT AS EXPECTED'}  {outcome.run_dir}"
                    + "".join(f"  [{c}]" for c in outcome.caveats))
            rows.append(line)
            click.echo(line)
            ok = ok and outcome.behaved
        sys.exit(0 if ok else 1)
    exp = load_experiment(experiment)
    outcome = run_experiment(exp, seed=seed, duration_s=duration, bootstrap=bootstrap, out_dir=out_dir,
                             progress=not no_progress, **control_settings())
    click.echo(f"verdict: {outcome.verdict_line()}; expected {describe_expect(exp['expect'])}: "
               f"{'as expected' if outcome.behaved else 'NOT as expected'}")
    for n in outcome.notes:
        click.echo(f"note: {n}")
    click.echo(f"report: {os.path.join(outcome.run_dir, 'report.html')}")
    click.echo(f"replay: {outcome.replay_command()}")
    click.echo(f"took {outcome.elapsed_s:.0f} s end to end")
    if outcome.result["valid"] not in (True, False):
        sys.exit(2)
    sys.exit(0 if outcome.behaved else 1)


@click.command("campaign")
@click.argument("experiments", nargs=-1)
@click.option("--seeds", type=click.IntRange(min=1), required=True, help="Runs per experiment, one seed each.")
@click.option("--client", default="brokerlab", show_default=True,
              help="The client library the workloads use (brokerlab; others come later).")
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
