"""``cat-ray report SWEEP...``: tables, CSV and plots of finished sweeps, from MLflow, into results/.

Registered in the ``cat-ray`` group by ``cat_ray.cli``. Errors (an unknown sweep, key or metric) are
one-line messages.
"""
from __future__ import annotations

import shlex
from pathlib import Path

import click


def _command(sweeps, out, metric, baseline, group_by, where, x, at, weight_trace, title) -> str:
    """The canonical command line of this report, written into it."""
    parts = ["cat-ray", "report", *sweeps, "--out", str(out), "--metric", metric, "--baseline", baseline]
    if group_by:
        parts += ["--group-by", group_by]
    for clause in where:
        parts += ["--where", clause]
    if x:
        parts += ["--x", x]
    if at != "best":
        parts += ["--at", at]
    if weight_trace:
        parts.append("--weight-trace")
    if title:
        parts += ["--title", title]
    return shlex.join(parts)


@click.command()
@click.argument("sweeps", nargs=-1, required=True, metavar="SWEEP...")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Report folder (default: results/<first sweep>).")
@click.option("--metric", default="val_pa_mpjpe", show_default=True, help="Metric of the plot and the paired tests.")
@click.option("--baseline", default="confidence", show_default=True,
              help="Reference of the paired comparisons: an aggregator, or KEY=VALUE (e.g. offsets=-2..2).")
@click.option("--group-by", default="", metavar="KEY,KEY",
              help="Config keys (params of the trial runs) that make the table rows, e.g. aggregator,CR. "
                   "Default: the aggregator and every other parameter that varies, the seed excepted.")
@click.option("--where", multiple=True, metavar="KEY=VALUE",
              help="Keep only trials with this parameter value (repeatable; VALUE may be a|b).")
@click.option("--x", "x", default=None, metavar="KEY", help="A numeric grouped key for the plot's x axis (e.g. CR).")
@click.option("--at", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Each trial's values at the epoch of its best objective (its best checkpoint) or at its last epoch.")
@click.option("--weight-trace", is_flag=True,
              help="Also plot the aggregation weights over training steps (Fig. 7; runs with train.weight_trace_every > 0).")
@click.option("--title", default=None, help="Title of report.md.")
@click.option("--no-log", is_flag=True, help="Do not log the files to the sweeps' parent runs.")
def report(sweeps, out, metric, baseline, group_by, where, x, at, weight_trace, title, no_log) -> None:
    """Report the finished sweeps SWEEP... (names as given to cat-ray tune) from MLflow.

    \b
    cat-ray report aggregators-laptop --group-by aggregator,CR
    cat-ray report offsets-laptop --baseline offsets=-2..2 --weight-trace

    Writes report.md, CSV and PNG files into --out and logs them to each sweep's parent run.
    MLflow: $MLFLOW_TRACKING_URI, else sqlite:///<repo>/results/mlflow.db.
    """
    from cat_ray.platform import tracking
    from cat_ray.report import ReportError, ReportSpec, make_report

    folder = Path(out) if out else tracking.project_root() / "results" / sweeps[0]
    spec = ReportSpec(tuple(sweeps), folder, metric, baseline, tuple(k.strip() for k in group_by.split(",") if k.strip()),
                      tuple(where), x, at, weight_trace, title,
                      _command(sweeps, out or f"results/{sweeps[0]}", metric, baseline, group_by, where, x, at,
                               weight_trace, title))
    try:
        result = make_report(spec, log=not no_log)
    except ReportError as err:
        raise click.ClickException(str(err)) from None
    for path in result.files:
        click.echo(f"wrote {path}")
    if not no_log:
        click.echo("logged to the parent run(s): " + ", ".join(f"{s.name} ({s.run_id})" for s in result.sweeps)
                   + f" under report/{folder.name}")
