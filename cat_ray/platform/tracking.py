"""MLflow tracking of sweeps: one experiment per search-space file, one parent run per sweep, one nested
child run per trial.

Store selection follows MLflow: ``MLFLOW_TRACKING_URI`` when set (on a cluster, the tracking server on
the head node, artifacts proxied through it), else a SQLite store ``results/mlflow.db`` under the
repository (or the working directory outside a repository), with artifacts in ``results/mlartifacts``
so that ``mlflow ui --backend-store-uri sqlite:///.../results/mlflow.db`` opens it as it is.

Who writes what:
- the sweep driver makes the store, the experiment and the parent run, closes runs of trials that ended
  (FINISHED, FAILED, stopped early) and, at the end, logs the comparison table on the parent;
- each trial find-or-creates its child run by the tags ``cat_ray.sweep`` + ``cat_ray.trial_id`` (a
  restored trial reuses its run), logs parameters, tags and the resolved config;
- world rank 0 of the trial's training (:class:`EpochLogger`) logs every epoch's metrics (step = epoch)
  and the best checkpoint so far. Other ranks never touch MLflow.

Run states: a trial stopped early by the scheduler ends FINISHED with the tag ``stopped_early=true``
(its metrics are valid, only shorter); a failed trial ends FAILED with the error in the tag
``cat_ray.error`` and the artifact ``error.txt``; runs left RUNNING by an interrupted driver are set
KILLED (and back to RUNNING when ``--resume`` continues their trial).
"""
from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cat_ray.config import Config, config_to_dict, flatten, format_offsets, save_config
from cat_ray.provenance import git_state

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

SWEEP_TAG = "cat_ray.sweep"
TRIAL_TAG = "cat_ray.trial_id"
ROLE_TAG = "cat_ray.role"  # "sweep" (parent) or "trial" (child)
ERROR_TAG = "cat_ray.error"
BEST_VALUE_TAG = "cat_ray.best_value"
BEST_EPOCH_TAG = "cat_ray.best_epoch"
CHECKPOINT_EPOCH_TAG = "cat_ray.best_checkpoint_epoch"  # the epoch whose checkpoint best_checkpoint/ holds
OBJECTIVE_TAG = "cat_ray.objective"
NODES_TAG = "cat_ray.worker_nodes"
LAUNCH_TAG = "cat_ray.launch"  # "in-process" or "ray-train" (a TorchTrainer worker group)
GPUS_TAG = "cat_ray.worker_gpus"  # the GPU ids Ray gave each rank, "-" for none; ";" between ranks
PARENT_TAG = "mlflow.parentRunId"
MAX_TAG_CHARS = 5000  # MLflow caps tag values at 8000 characters


# --------------------------------------------------------------------------- store


def project_root(cwd: Path | None = None) -> Path:
    """The git work tree containing ``cwd`` (default: the working directory), else ``cwd`` itself."""
    cwd = Path(cwd or Path.cwd()).resolve()
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return cwd
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else cwd


def tracking_uri(root: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` or ``sqlite:///<root>/results/mlflow.db`` (root: :func:`project_root`)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(root) if root else project_root()).resolve() / 'results' / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def prepare_store(uri: str) -> str:
    """Create the store once, in the driver, before any worker opens it.

    A fresh SQLite store opened by several processes at once fails in MLflow's schema migration
    (PLATFORM.md); opening it here first runs the migration in one process.
    """
    from mlflow import MlflowClient

    db = _sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    MlflowClient(uri).search_experiments(max_results=1)
    return uri


def artifact_root(uri: str) -> str | None:
    """Where new experiments keep artifacts: next to a SQLite store; the server's choice otherwise."""
    db = _sqlite_path(uri)
    return (db.parent / "mlartifacts").resolve().as_uri() if db is not None else None


def ui_command(uri: str) -> str:
    """The command that opens the store in MLflow's UI (a server URI is opened in a browser instead)."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri}"


def git_tags(cwd: Path | None = None) -> dict[str, str]:
    """``mlflow.source.git.commit`` and ``cat_ray.git_dirty`` of the repository at ``cwd`` (default: cat-ray's code).

    Runs made with ``MlflowClient`` get no commit tag from MLflow (PLATFORM.md), so it is logged here.
    """
    state = git_state(cwd)
    if not state:
        return {}
    return {"mlflow.source.git.commit": state["commit"], "cat_ray.git_dirty": state["dirty"]}


# --------------------------------------------------------------------------- naming


def offsets_label(offsets: tuple[int, ...]) -> str:
    """``(-2, -1, 0, 1, 2)`` -> ``"-2..2"``; sets that are not a consecutive ascending range as listed."""
    if len(offsets) > 1 and list(offsets) == list(range(offsets[0], offsets[-1] + 1)):
        return f"{offsets[0]}..{offsets[-1]}"
    return format_offsets(offsets)


def trial_run_name(cfg: Config, index: int) -> str:
    """A name that reads well in the UI's compare view: ``confidence d=-2..2 seed0 #3``."""
    return f"{cfg.model.aggregator} d={offsets_label(cfg.model.offsets)} seed{cfg.train.seed} #{index}"


def config_tags(cfg: Config) -> dict[str, str]:
    return {"aggregator": cfg.model.aggregator, "seed": str(cfg.train.seed), "offsets": format_offsets(cfg.model.offsets)}


def config_params(cfg: Config) -> dict[str, str]:
    """Flattened dotted parameters (``model.offsets``, ``loss.w_3d``...) as MLflow strings."""
    flat = flatten(config_to_dict(cfg))
    return {key: format_offsets(tuple(v)) if isinstance(v, list) else str(v) for key, v in flat.items()}


# --------------------------------------------------------------------------- runs


def _client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(uri)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def _search(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> list[Run]:
    query = " and ".join(f"tags.`{k}` = {_quote(v)}" for k, v in tags.items())
    return client.search_runs([experiment_id], filter_string=query, max_results=10_000, order_by=["attributes.start_time ASC"])


def _truncate(text: str) -> str:
    return text if len(text) <= MAX_TAG_CHARS else text[: MAX_TAG_CHARS - 20] + "\n...(truncated)"


@dataclass(frozen=True)
class SweepRun:
    """The parent run of one sweep: the handle the driver passes to trials (picklable: ids only)."""

    uri: str
    experiment_id: str
    run_id: str
    sweep: str

    @classmethod
    def open(cls, uri: str, experiment: str, sweep: str, tags: dict[str, str] | None = None) -> SweepRun:
        """Find-or-create the experiment and the sweep's parent run (by tag), and mark it RUNNING."""
        client = _client(prepare_store(uri))
        found = client.get_experiment_by_name(experiment)
        if found is None:
            experiment_id = client.create_experiment(experiment, artifact_location=artifact_root(uri))
        elif found.lifecycle_stage != "active":
            client.restore_experiment(found.experiment_id)
            experiment_id = found.experiment_id
        else:
            experiment_id = found.experiment_id
        runs = _search(client, experiment_id, {SWEEP_TAG: sweep, ROLE_TAG: "sweep"})
        if runs:
            run_id = runs[0].info.run_id
            client.update_run(run_id, status="RUNNING")
        else:
            run_id = client.create_run(experiment_id, run_name=sweep, tags={SWEEP_TAG: sweep, ROLE_TAG: "sweep"}).info.run_id
        for key, value in {**git_tags(), **(tags or {})}.items():
            client.set_tag(run_id, key, value)
        return cls(uri, experiment_id, run_id, sweep)

    def client(self) -> MlflowClient:
        return _client(self.uri)

    def child_runs(self) -> list[Run]:
        return _search(self.client(), self.experiment_id, {PARENT_TAG: self.run_id})

    def child_run(self, trial_id: str) -> Run | None:
        runs = _search(self.client(), self.experiment_id, {PARENT_TAG: self.run_id, TRIAL_TAG: trial_id})
        return runs[0] if runs else None

    def open_trial(self, trial_id: str, cfg: Config, run_name: str, tags: dict[str, str] | None = None) -> str:
        """Find-or-create the child run of ``trial_id`` (a restored trial gets its own run back), RUNNING.

        Parameters, tags and the resolved config are logged on creation and re-set on reuse.
        """
        client = self.client()
        existing = self.child_run(trial_id)
        all_tags = {PARENT_TAG: self.run_id, SWEEP_TAG: self.sweep, TRIAL_TAG: trial_id, ROLE_TAG: "trial",
                    **config_tags(cfg), **git_tags(), **(tags or {})}
        if existing is not None:
            run_id = existing.info.run_id
            client.update_run(run_id, status="RUNNING")
            if ERROR_TAG in existing.data.tags:
                client.delete_tag(run_id, ERROR_TAG)
            for key, value in all_tags.items():
                client.set_tag(run_id, key, value)
            return run_id
        run_id = client.create_run(self.experiment_id, run_name=run_name, tags=all_tags).info.run_id
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in config_params(cfg).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run_id, params=params[start:start + 100])
        with tempfile.TemporaryDirectory() as tmp:
            save_config(cfg, Path(tmp) / "config.yaml")
            client.log_artifact(run_id, str(Path(tmp) / "config.yaml"))
        return run_id

    def end_trial(self, trial_id: str, status: str, error: str | None = None, stopped_early: bool = False,
                  only_if_running: bool = False) -> None:
        """Close a trial's child run: FINISHED (optionally ``stopped_early``), FAILED with ``error``, KILLED."""
        run = self.child_run(trial_id)
        if run is None or (only_if_running and run.info.status != "RUNNING"):
            return
        end_run(self.uri, run.info.run_id, status, error=error, stopped_early=stopped_early)

    def kill_running_children(self, reason: str) -> list[str]:
        """Set every child run still RUNNING to KILLED (an interrupted driver; ``--resume`` revives them)."""
        killed = []
        for run in self.child_runs():
            if run.info.status == "RUNNING":
                end_run(self.uri, run.info.run_id, "KILLED", error=reason)
                killed.append(run.info.run_id)
        return killed

    def end(self, status: str) -> None:
        self.client().set_terminated(self.run_id, status=status)


def end_run(uri: str, run_id: str, status: str, error: str | None = None, stopped_early: bool = False) -> None:
    client = _client(uri)
    if stopped_early:
        client.set_tag(run_id, "stopped_early", "true")
    if error:
        client.set_tag(run_id, ERROR_TAG, _truncate(error))
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "error.txt").write_text(error)
            client.log_artifact(run_id, str(Path(tmp) / "error.txt"))
    elif status == "FINISHED":
        run = client.get_run(run_id)
        if ERROR_TAG in run.data.tags:  # a stopped trial's process may have written an error while dying
            client.delete_tag(run_id, ERROR_TAG)
    client.set_terminated(run_id, status=status)


# --------------------------------------------------------------------------- per-epoch logging (rank 0)


@dataclass(frozen=True)
class TrackingTarget:
    """Where rank 0 logs a trial's epochs: picklable, sent to the training workers."""

    uri: str
    run_id: str
    metric: str  # the objective that decides the best checkpoint
    mode: str  # "min" | "max"


class EpochLogger:
    """Logs each epoch's metrics (step = epoch) and the best checkpoint so far to one MLflow run.

    Built on world rank 0 only. Epochs already in the run (a restarted worker group or a restored trial
    replays from its last checkpoint) are skipped, so the history holds one value per epoch. Whenever
    the objective improves, the tags of the best value and epoch are set at once and the checkpoint is
    uploaded on a background thread (:class:`LatestWinsUploader`: a paper-sized one takes seconds
    through a tracking server), so a trial stopped early by the scheduler or killed still has a best
    checkpoint in MLflow; the tag ``cat_ray.best_checkpoint_epoch`` says which epoch's it is. ``close()``
    waits for the last upload.
    """

    def __init__(self, target: TrackingTarget):
        from cat_ray.platform.uploads import LatestWinsUploader

        self.target = target
        self.client = _client(target.uri)
        run = self.client.get_run(target.run_id)
        history = self.client.get_metric_history(target.run_id, "epoch")
        self.last_logged = max((int(m.step) for m in history), default=0)
        self.best = float(run.data.tags.get(BEST_VALUE_TAG, "nan"))
        self._uploads = LatestWinsUploader(self._upload_best)

    def _upload_best(self, folder: Path, epoch: int) -> None:
        self.client.log_artifacts(self.target.run_id, str(folder), "best_checkpoint")
        self.client.set_tag(self.target.run_id, CHECKPOINT_EPOCH_TAG, str(epoch))

    def close(self, raise_errors: bool = True) -> None:
        """Wait for the best checkpoint's upload; an upload error is raised (or, while another error is
        on its way, only printed)."""
        try:
            self._uploads.close()
        except Exception as err:
            if raise_errors:
                raise
            print(f"cat-ray: the best checkpoint's upload to MLflow failed: {err!r}", file=sys.stderr)

    def _improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if math.isnan(self.best):
            return True
        return value < self.best if self.target.mode == "min" else value > self.best

    def __call__(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        from mlflow.entities import Metric

        if epoch <= self.last_logged:
            return
        run_id, now = self.target.run_id, _now_ms()
        values = {**metrics, "epoch": float(epoch)}
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, epoch) for k, v in values.items()])
        value = float(metrics.get(self.target.metric, float("nan")))
        if checkpoint_dir is not None and self._improves(value):
            from mlflow.entities import RunTag

            tags = {OBJECTIVE_TAG: self.target.metric, BEST_VALUE_TAG: repr(value), BEST_EPOCH_TAG: str(epoch)}
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            self.best = value
            self._uploads.submit(checkpoint_dir, epoch)  # links: the caller may delete its folder now
        self.last_logged = epoch


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


# --------------------------------------------------------------------------- comparison


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def trial_value(run: Run, metric: str, best: bool = True) -> float | None:
    """A trial's best value of its objective ``metric`` over epochs (``best``), else the last value logged."""
    if best and BEST_VALUE_TAG in run.data.tags and metric == run.data.tags.get(OBJECTIVE_TAG):
        return float(run.data.tags[BEST_VALUE_TAG])
    value = run.data.metrics.get(metric)
    return None if value is None or not math.isfinite(value) else float(value)


def comparison_table(runs: list[Run], objectives: list[tuple[str, str]], group_by: list[str]) -> str:
    """Markdown: per group (``aggregator``, and ``offsets`` when searched) the trials, best and mean ± std
    of each objective over finished trials; the Pareto front when there are several objectives."""
    done = [r for r in runs if r.info.status == "FINISHED"]
    lines = [f"Trials: {len(runs)} ({len(done)} finished, "
             f"{sum(r.info.status == 'FAILED' for r in runs)} failed, "
             f"{sum(r.data.tags.get('stopped_early') == 'true' for r in done)} stopped early)", ""]
    for key in group_by:
        header = [key, "trials"] + [f"best {m} ({mode})" for m, mode in objectives] + [f"mean ± std {m}" for m, _ in objectives]
        lines += [f"## By {key}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        groups: dict[str, list[Run]] = {}
        for run in done:
            groups.setdefault(run.data.tags.get(key, "?"), []).append(run)
        rows = []
        for name, members in groups.items():
            best_cells, mean_cells, sort_key = [], [], None
            for metric, mode in objectives:
                values = [v for v in (trial_value(r, metric) for r in members) if v is not None]
                best = (min(values) if mode == "min" else max(values)) if values else None
                best_cells.append(f"{best:.2f}" if best is not None else "-")
                mean_cells.append(_mean_std(values) if values else "-")
                if sort_key is None:
                    sort_key = math.inf if best is None else (best if mode == "min" else -best)
            rows.append((sort_key, [name, str(len(members))] + best_cells + mean_cells))
        lines += ["| " + " | ".join(cells) + " |" for _, cells in sorted(rows, key=lambda row: row[0])]
        lines.append("")
    if len(objectives) > 1:
        lines += pareto_table(done, objectives)
    return "\n".join(lines)


def pareto_front(points: list[tuple[Any, list[float]]], modes: list[str]) -> list[tuple[Any, list[float]]]:
    """The non-dominated points; each value is minimised for mode "min" and maximised for "max"."""
    def key(values: list[float]) -> list[float]:
        return [v if m == "min" else -v for v, m in zip(values, modes)]

    front = []
    for item, values in points:
        mine = key(values)
        dominated = any(all(o <= s for o, s in zip(key(other), mine)) and key(other) != mine for _, other in points)
        if not dominated:
            front.append((item, values))
    return front


def pareto_table(runs: list[Run], objectives: list[tuple[str, str]]) -> list[str]:
    """The Pareto front of the trials' last values, the values the Optuna study was told."""
    points = []
    for run in runs:
        values = [trial_value(run, m, best=False) for m, _ in objectives]
        if all(v is not None for v in values):
            points.append((run, values))
    front = pareto_front(points, [mode for _, mode in objectives])
    header = ["run"] + [f"{m} ({mode})" for m, mode in objectives]
    lines = ["## Pareto front", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run, values in sorted(front, key=lambda item: item[1][0]):
        lines.append("| " + " | ".join([run.info.run_name] + [f"{v:.3f}" for v in values]) + " |")
    return lines + [""]
