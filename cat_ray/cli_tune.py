"""``cat-ray tune SPACE.yaml``: a Ray Tune + Optuna sweep, every trial tracked in MLflow.

Registered in the ``cat-ray`` group by ``cat_ray.cli``. The space is validated before Ray starts;
errors in it are one-line messages naming the file and the key.
"""
from __future__ import annotations

from pathlib import Path

import click

from cat_ray.config import ConfigError


@click.command()
@click.argument("space_file", metavar="SPACE.yaml", type=click.Path(dir_okay=False))
@click.option("--profile", default=None, help="Scale profile of the file (e.g. laptop, paper). Default: the file's default_profile.")
@click.option("--num-samples", type=click.IntRange(min=1), default=None,
              help="Trials in the sweep (default: the file's). Larger than a finished sweep's count: grows it.")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=None,
              help="Trials at once (default: the file's; lowered to what the cluster can run).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Dotted config override for every trial, repeatable (e.g. --set train.epochs=3).")
@click.option("--name", default=None,
              help="Sweep name (default: <space name>-<profile>). An existing sweep of that name is continued.")
@click.option("--resume", "resume", default=None, metavar="NAME",
              help="Continue the sweep NAME: finish an interrupted run, or grow it with a larger --num-samples.")
@click.option("--storage", type=click.Path(file_okay=False), envvar="CAT_RAY_STORAGE", default=None,
              help="Folder of sweeps (Tune state, Optuna study, Ray Train checkpoints); shared storage on a "
                   "cluster. Env CAT_RAY_STORAGE. Default: <repo>/results/ray.")
@click.option("--address", envvar="RAY_ADDRESS", default=None,
              help="Ray cluster to join (env RAY_ADDRESS). Default: a running local cluster, else a private one.")
@click.option("--max-failures", type=click.IntRange(min=0), default=2, show_default=True,
              help="Restarts of a trial's worker group after a worker or node loss (Ray Train FailureConfig).")
@click.option("--dry-run", is_flag=True, help="Validate the space, print the plan and exit (Ray is not started).")
def tune(space_file, profile, num_samples, max_concurrent, overrides, name, resume, storage, address, max_failures,
         dry_run) -> None:
    """Sweep the search space in SPACE.yaml with Ray Tune and Optuna, tracked in MLflow.

    \b
    cat-ray tune search_spaces/offsets.yaml                     # laptop profile
    cat-ray tune search_spaces/offsets.yaml --profile paper     # on a GPU cluster
    cat-ray tune search_spaces/offsets.yaml --resume offsets-laptop
    cat-ray tune search_spaces/lr.yaml --num-samples 40         # grow the finished sweep to 40 trials

    MLflow: $MLFLOW_TRACKING_URI, else sqlite:///<repo>/results/mlflow.db.
    """
    from cat_ray.platform.sweep import default_storage, plan_sweep
    from cat_ray.search_space import describe, load_search_space

    if name and resume and name != resume:
        raise click.UsageError("--name and --resume name different sweeps; give one of them")
    try:
        space = load_search_space(space_file, profile, tuple(overrides), num_samples=num_samples,
                                  max_concurrent=max_concurrent)
        plan = plan_sweep(space, resume or name, Path(storage) if storage else default_storage(), must_exist=bool(resume))
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    click.echo(describe(space))
    click.echo(plan.describe())
    if dry_run:
        return
    from cat_ray.platform.sweep import run_sweep

    result = run_sweep(plan, address=address, max_failures=max_failures)
    click.echo("")
    click.echo(result.comparison)
    click.echo(result.where())
    if result.interrupted:
        click.echo(f"interrupted: continue with  cat-ray tune {space_file} --resume {result.name}"
                   + "".join(f" --set {o}" for o in overrides) + (f" --profile {profile}" if profile else ""))
