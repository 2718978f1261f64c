"""The ``cat-ray`` command: parse, call, print. User errors become one-line messages, never tracebacks."""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import click

from cat_ray.config import ConfigError, config_to_dict, load_config

CONFIG_HELP = "Config YAML (sections model, loss, data, body, optim, train); omitted = the paper's defaults."
SET_HELP = "Dotted override KEY=VALUE, repeatable, applied after the file (e.g. --set loss.w_3d=300 --set model.offsets=-3..3)."


def user_errors(fn):
    """Turn the project's user-error family into click's one-line error and exit code 2/1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from cat_ray.body.model import BodyModelError

        try:
            return fn(*args, **kwargs)
        except (ConfigError, BodyModelError, FileNotFoundError) as err:
            raise click.ClickException(str(err)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="cat-ray")
def main() -> None:
    """Confidence-aware temporal feature aggregation for 3D human pose and shape from video.

    \b
    Train one model:      cat-ray train configs/laptop.yaml --set model.aggregator=gru
    Sweep with Ray Tune:  cat-ray tune search_spaces/offsets.yaml
    Evaluate:             cat-ray eval runs/NAME/best --split test
    Body model:           cat-ray body make-standin --out DIR | cat-ray body import SMPL_DIR --out DIR
    Report a sweep:       cat-ray report offsets-laptop
    Browse results:       mlflow ui --backend-store-uri sqlite:///results/mlflow.db

    Without the licensed SMPL files and datasets, cat-ray uses its own SMPL-compatible
    stand-in body model and a synthetic benchmark (generated once, cached under
    $CAT_RAY_CACHE or ~/.cache/cat-ray).
    """


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run folder (config.yaml, metrics.json, checkpoints/). Default: runs/<aggregator>-<time>.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Data-parallel workers (Ray Train, DDP). 1 trains in this process.")
@click.option("--cpus-per-worker", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0, show_default=True,
              help="GPUs per worker; > 0 trains with NCCL on GPUs through Ray Train.")
@click.option("--quiet", is_flag=True, help="No per-epoch progress lines.")
@user_errors
def train(config, overrides, out, resume, workers, cpus_per_worker, gpus_per_worker, quiet) -> None:
    """Train one model with the schedule in CONFIG and evaluate it every epoch.

    Writes config.yaml (the fully resolved config), metrics.json (MPJPE, PA-MPJPE, PVE in mm,
    acceleration error in mm/frame^2, the mean aggregation weight per offset; rewritten each
    epoch) and checkpoints/last, best/ into the run folder.
    """
    cfg = load_config(config, list(overrides))
    if resume and out is None:
        raise click.UsageError("--resume needs --out, the run folder to continue")
    run_dir = Path(out or f"runs/{cfg.model.aggregator}-{time.strftime('%Y%m%d-%H%M%S')}")
    from cat_ray.train_loop import TrainingDiverged, find_resume_checkpoint

    checkpoint = find_resume_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        raise click.ClickException(f"{run_dir}: no checkpoint to resume from (expected {run_dir}/checkpoints/last)")
    if not resume and (run_dir / "metrics.json").exists():
        raise click.ClickException(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    click.echo(f"run folder: {run_dir}", err=True)
    from cat_ray.platform.trainer import run_training

    try:
        metrics = run_training(cfg, run_dir, workers=workers, cpus_per_worker=cpus_per_worker,
                               gpus_per_worker=gpus_per_worker, resume_checkpoint=checkpoint, progress=not quiet)
    except TrainingDiverged as err:
        raise click.ClickException(f"training stopped: {err}") from None
    click.echo(json.dumps({k: metrics[k] for k in ("val_mpjpe", "val_pa_mpjpe", "val_pve", "val_accel_err")}, indent=2))
    click.echo(f"metrics: {run_dir / 'metrics.json'}", err=True)


@main.command("config")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@user_errors
def show_config(config, overrides) -> None:
    """Print the fully resolved config (defaults <- CONFIG <- --set) as YAML, after validating it."""
    import yaml

    click.echo(yaml.safe_dump(config_to_dict(load_config(config, list(overrides))), sort_keys=False), nl=False)


@main.group()
def body() -> None:
    """The body model: generate the SMPL-compatible stand-in, or import the official SMPL files."""


@body.command("make-standin")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write SMPL_NEUTRAL.pkl, J_regressor_h36m.npy, smpl_mean_params.npz.")
@click.option("--seed", default=0, show_default=True, help="Seed of the stand-in's mesh details.")
@user_errors
def make_standin_cmd(out, seed) -> None:
    """Write an SMPL-compatible stand-in body model that smplx.SMPL loads unchanged.

    Point a config at it with body.model_path=OUT (the default, empty, generates one in the cache).
    """
    from cat_ray.body.standin import make_standin

    path = make_standin(Path(out), seed=seed)
    click.echo(f"stand-in body model written to {path}")


@body.command("import")
@click.argument("smpl_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the converted model; then set body.model_path=OUT.")
@click.option("--vibe-data", type=click.Path(exists=True, file_okay=False), default=None,
              help="VIBE's data folder with J_regressor_h36m.npy, J_regressor_extra.npy, smpl_mean_params.npz (default: look in SMPL_DIR).")
@user_errors
def import_cmd(smpl_dir, out, vibe_data) -> None:
    """Convert the official SMPL .pkl files (which pickle chumpy objects) into files smplx loads without chumpy.

    Reads basicModel_neutral_lbs_10_207_0_v1.0.0.pkl (and the male/female files when present) with a
    restricted unpickler that refuses any class it does not expect, and copies VIBE's regressors and
    mean parameters after checking their shapes.
    """
    from cat_ray.body.smpl_import import SMPLImportError, import_smpl

    try:
        written = import_smpl(Path(smpl_dir), Path(out), Path(vibe_data) if vibe_data else None)
    except SMPLImportError as err:
        raise click.ClickException(str(err)) from None
    for name, path in written.items():
        click.echo(f"{name}: {path}")
    click.echo(f"use it with: --set body.model_path={out}")


@main.command("eval")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--data", default="synthetic", show_default=True, type=click.Choice(["synthetic", "3dpw", "mpii3d", "h36m"]),
              help="synthetic: the benchmark the run was trained on; otherwise VIBE's preprocessed files under --root.")
@click.option("--split", default="test", show_default=True, help="val or test (3dpw: train/val/test; mpii3d: val).")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="Folder of VIBE's *_db.pt files (default: the run's data.root).")
@click.option("--corrupt", default=None, metavar="MODE:CR[:CnSc]",
              help="Apply the paper's blocking at test time, e.g. center:0.33:2 or random:0.2:1 (default: the run's own setting).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="JSON file for overall and per-video figures (default: CHECKPOINT/../eval-DATA-SPLIT.json).")
@click.option("--run-id", default=None, envvar="CAT_RAY_EVAL_RUN_ID", help="Also log the figures (and the JSON) to this MLflow run.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@user_errors
def eval_cmd(checkpoint, data, split, root, corrupt, out, run_id, device) -> None:
    """Evaluate a checkpoint folder (a run's best/ or checkpoints/last) with the paper's protocol.

    Every frame of every video is predicted once; MPJPE and PA-MPJPE on the 14 joints (pelvis-
    centred), PVE and acceleration error, in mm, overall and per video, as VIBE computes them.
    """
    from cat_ray.data.vibe_db import VibeDataError
    from cat_ray.eval_protocol import evaluate_checkpoint, parse_corruption

    corruption = parse_corruption(corrupt) if corrupt else None
    try:
        report = evaluate_checkpoint(Path(checkpoint), data, split, corruption, root, device)
    except VibeDataError as err:
        raise click.ClickException(str(err)) from None
    folder = Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent
    path = Path(out) if out else folder.parent / f"eval-{data}-{split}.json"
    report.write(path)
    if run_id:
        from mlflow import MlflowClient

        from cat_ray.platform.tracking import tracking_uri

        client = MlflowClient(tracking_uri())
        for key, value in report.overall.items():
            client.log_metric(run_id, f"{data}_{split}_{key}", value)
        client.log_artifact(run_id, str(path))
    click.echo(json.dumps(report.overall, indent=2))
    click.echo(f"per-video figures: {path}", err=True)


def _register_optional_commands() -> None:
    """Commands that live in their own modules (kept out of this file's imports until used)."""
    from cat_ray.cli_report import report
    from cat_ray.cli_tune import tune

    main.add_command(tune)
    main.add_command(report)


_register_optional_commands()
