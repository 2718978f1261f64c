"""The sweep driver: Ray Tune + OptunaSearch over a search-space file, every trial tracked in MLflow.

A sweep named NAME lives in ``<storage>/NAME/``:

- ``sweep.json``: the space file, profile and overrides it was started with, and its *segments*;
- ``optuna.db``: the Optuna study (RDBStorage, SQLite), readable by ``optuna-dashboard``;
- ``segment-K/``: one Tune experiment per segment (Tune's state, trial folders);
- ``train/<trial id>/``: the Ray Train runs of trials that use a worker group.

**Resume.** Running the sweep again (``--resume NAME``, or the same ``--name``) restores an
interrupted segment with ``Tuner.restore(resume_unfinished=True)``: finished trials are kept, not
repeated; unfinished ones continue from their last checkpoint; trials that failed stay failed (a NaN
fails again; node losses are retried while the sweep runs, by Ray Train's ``FailureConfig``). MLflow
runs left RUNNING by the interruption are set KILLED first and revived by their trial.

**Grow.** Tune's restore cannot add samples. A larger ``--num-samples`` for a finished sweep starts a
new Tune segment whose ``OptunaSearch`` loads the same persisted study, so the sampler continues from
the whole history (and a grid continues with the combinations not run yet).
"""
from __future__ import annotations

import json
import os
import tempfile
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cat_ray.config import ConfigError
from cat_ray.platform import tracking
from cat_ray.platform.trainer import init_ray, run_training, trial_resources
from cat_ray.search_space import SearchSpace, define_by_run, optuna_sampler, trial_config, tune_scheduler

SWEEP_FILE = "sweep.json"


# --------------------------------------------------------------------------- sweep record


@dataclass
class Segment:
    name: str  # the Tune experiment folder, segment-K
    num_samples: int
    first_index: int  # trial numbers in run names continue across segments
    done: bool = False


@dataclass
class SweepRecord:
    """What ``sweep.json`` keeps: enough to resume or grow the sweep and to refuse a mismatched one."""

    name: str
    space: str
    profile: str | None
    overrides: list[list[Any]]
    experiment: str
    segments: list[Segment] = field(default_factory=list)

    @property
    def trials(self) -> int:
        return sum(s.num_samples for s in self.segments)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (SWEEP_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(folder / SWEEP_FILE)

    @classmethod
    def load(cls, folder: Path) -> SweepRecord | None:
        path = folder / SWEEP_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        data["segments"] = [Segment(**s) for s in data["segments"]]
        return cls(**data)


def _overrides(space: SearchSpace) -> list[list[Any]]:
    return [[k, v] for k, v in space.overrides]


def default_storage() -> Path:
    """``<repository or working directory>/results/ray``."""
    return tracking.project_root() / "results" / "ray"


def default_name(space: SearchSpace) -> str:
    """``<space name>-<profile>``: the same command twice continues the same sweep."""
    return f"{space.name}-{space.profile.name}" if space.profile else space.name


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Plan:
    """What a ``tune`` call will do, decided before Ray starts."""

    space: SearchSpace
    name: str
    folder: Path
    record: SweepRecord
    action: str  # "start" | "resume" | "grow" | "done"
    segment: Segment | None  # the segment to restore or start

    def describe(self) -> str:
        what = {"start": f"start sweep {self.name}: {self.space.search.num_samples} trials",
                "resume": f"resume sweep {self.name}: continue {self.segment.name if self.segment else ''}",
                "grow": f"grow sweep {self.name} from {self.record.trials} to {self.space.search.num_samples} trials",
                "done": f"sweep {self.name} already has its {self.record.trials} trials: nothing to run"}[self.action]
        return f"{what}\n  folder: {self.folder}"


def plan_sweep(space: SearchSpace, name: str | None, storage: Path, must_exist: bool = False) -> Plan:
    """Decide between starting, resuming and growing ``name`` (no Ray, no MLflow)."""
    name = name or default_name(space)
    folder = Path(storage).resolve() / name
    record = SweepRecord.load(folder)
    if record is None:
        if must_exist:
            raise ConfigError("--resume", name, f"an existing sweep under {folder.parent}; none is there")
        record = SweepRecord(name, str(Path(space.source).resolve()), space.profile.name if space.profile else None,
                             _overrides(space), space.name)
        return Plan(space, name, folder, record, "start", Segment("segment-0", space.search.num_samples, 0))
    wanted = {"space": str(Path(space.source).resolve()), "profile": space.profile.name if space.profile else None,
              "overrides": _overrides(space)}
    for key, value in wanted.items():
        recorded = getattr(record, key)
        if json.loads(json.dumps(recorded)) != json.loads(json.dumps(value)):
            raise ConfigError(str(folder / SWEEP_FILE), key,
                              f"sweep {name} was started with {key} {recorded!r}; this call has {value!r} "
                              f"(use the same file, --profile and --set, or another --name)")
    unfinished = next((s for s in record.segments if not s.done), None)
    if unfinished is not None:
        return Plan(space, name, folder, record, "resume", unfinished)
    if space.search.num_samples > record.trials:
        segment = Segment(f"segment-{len(record.segments)}", space.search.num_samples - record.trials, record.trials)
        return Plan(space, name, folder, record, "grow", segment)
    return Plan(space, name, folder, record, "done", None)


# --------------------------------------------------------------------------- one trial


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its sampled parameters (picklable; sent to every trial)."""

    space: SearchSpace
    sweep: tracking.SweepRun
    first_index: int
    train_storage: str
    max_failures: int


def trial_dirname(trial: Any) -> str:
    """``0003_<trial id>``: Tune's 1-based trial counter first, so a trial knows its number."""
    return f"{int(trial.experiment_tag.split('_', 1)[0]):04d}_{trial.trial_id}"


def trial_index(trial_dir: str, first_index: int) -> int:
    """The trial's number in the sweep (from :func:`trial_dirname`), continuing across segments."""
    return first_index + int(Path(trial_dir).name.split("_", 1)[0])


def run_trial(params: dict[str, Any], ctx: TrialContext) -> None:
    """One Tune trial: one configuration trained (in this process, or by a TorchTrainer), tracked in MLflow."""
    from ray import tune

    tune_ctx = tune.get_context()
    trial_id = tune_ctx.get_trial_id()
    cfg = trial_config(ctx.space, params)
    index = trial_index(tune_ctx.get_trial_dir(), ctx.first_index)
    run_id = ctx.sweep.open_trial(trial_id, cfg, tracking.trial_run_name(cfg, index),
                                  tags={"cat_ray.trial_index": str(index), "cat_ray.objective": ctx.space.objective.metrics[0]})
    target = tracking.TrackingTarget(ctx.sweep.uri, run_id, ctx.space.objective.metrics[0], ctx.space.objective.modes[0])
    r = ctx.space.resources
    try:
        run_training(cfg, Path(tune_ctx.get_trial_dir()) / "run", workers=r.workers, cpus_per_worker=r.cpus_per_worker,
                     gpus_per_worker=r.gpus_per_worker, storage_path=ctx.train_storage, name=trial_id, tracking=target,
                     max_failures=ctx.max_failures, in_tune=True, progress=False)
    except Exception:
        # Recorded here with the full traceback; the driver confirms FAILED when Tune reports the error.
        ctx.sweep.end_trial(trial_id, "FAILED", error=traceback.format_exc(), only_if_running=True)
        raise
    ctx.sweep.end_trial(trial_id, "FINISHED", only_if_running=True)


# --------------------------------------------------------------------------- driver side


def _trial_status_callback(space: SearchSpace, sweep: tracking.SweepRun):
    """A Tune callback closing each trial's MLflow run from the driver, where the outcome is known."""
    from ray import tune

    class TrialStatus(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            epochs = trial_config(space, trial.config).train.epochs
            last = int((trial.last_result or {}).get("epoch", 0))
            sweep.end_trial(trial.trial_id, "FINISHED", stopped_early=last < epochs)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            error = "trial failed (no error file)"
            if trial.error_file and Path(trial.error_file).is_file():
                error = Path(trial.error_file).read_text()
            run = sweep.child_run(trial.trial_id)
            if run is not None and run.info.status == "FAILED" and tracking.ERROR_TAG in run.data.tags:
                sweep.client().set_terminated(run.info.run_id, status="FAILED")  # keep the trial's own traceback
            else:
                sweep.end_trial(trial.trial_id, "FAILED", error=error)

    return TrialStatus()


def _max_concurrent(space: SearchSpace) -> int:
    """``search.max_concurrent``, lowered to what the cluster can run at once now (PLATFORM.md: extra
    trial drivers only wait and spam logs)."""
    import ray

    wanted = space.search.max_concurrent
    total = ray.cluster_resources()
    need = space.resources.per_trial
    fits = [int(total.get(k, 0) // v) for k, v in need.items() if v > 0]
    capacity = min(fits) if fits else wanted
    return max(1, min(wanted, capacity)) if capacity >= 1 else wanted


def _reporter(space: SearchSpace):
    from ray.tune import CLIReporter

    metrics = ["epoch", *space.objective.metrics, "train_loss"]
    return CLIReporter(metric_columns=list(dict.fromkeys(metrics)), parameter_columns=[p.key for p in space.params],
                       max_report_frequency=30, max_progress_rows=30, max_error_rows=5, sort_by_metric=False)


def _tuner(plan: Plan, sweep: tracking.SweepRun, max_failures: int):
    """The Tuner of ``plan.segment``: new, or restored from its folder when resuming."""
    import optuna
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    space, segment = plan.space, plan.segment
    assert segment is not None
    ctx = TrialContext(space, sweep, segment.first_index, str(plan.folder / "train"), max_failures)
    r = space.resources
    resources = trial_resources(r.workers, r.cpus_per_worker, r.gpus_per_worker)
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), resources)
    segment_path = plan.folder / segment.name
    if plan.action == "resume" and tune.Tuner.can_restore(str(segment_path)):
        return tune.Tuner.restore(str(segment_path), trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=False)
    storage = optuna.storages.RDBStorage(f"sqlite:///{plan.folder / 'optuna.db'}")
    searcher = OptunaSearch(space=define_by_run(space), metric=space.objective.metric, mode=space.objective.mode,
                            sampler=optuna_sampler(space), storage=storage, study_name=plan.name)
    concurrent = _max_concurrent(space)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrent),
                                    scheduler=tune_scheduler(space), num_samples=segment.num_samples,
                                    reuse_actors=True,  # a reused trial process skips Python, torch and MLflow start-up
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=segment.name, storage_path=str(plan.folder), callbacks=[_trial_status_callback(space, sweep)],
            failure_config=tune.FailureConfig(max_failures=0),  # a failed trial stays failed; the sweep goes on
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1), progress_reporter=_reporter(space), verbose=1),
    )


@dataclass(frozen=True)
class SweepResult:
    name: str
    folder: Path
    uri: str
    experiment: str
    experiment_id: str
    parent_run_id: str
    comparison: str
    interrupted: bool

    def where(self) -> str:
        return "\n".join([
            f"MLflow tracking URI: {self.uri}",
            f"experiment: {self.experiment} (id {self.experiment_id}), parent run {self.parent_run_id} ({self.name})",
            f"open the UI: {tracking.ui_command(self.uri)}",
            f"Optuna study: optuna-dashboard sqlite:///{self.folder / 'optuna.db'}",
        ])


def run_sweep(plan: Plan, address: str | None = None, max_failures: int = 2) -> SweepResult:
    """Run ``plan``: resume the unfinished segment and/or start the next one, then write the comparison."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's CLIReporter with our metric columns
    # Checkpointing every epoch of short trials triggers Tune's snapshot-frequency warning: expected here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    space = plan.space
    uri = tracking.tracking_uri()
    sweep = tracking.SweepRun.open(uri, space.name, plan.name,
                                   tags={"space": plan.record.space, "profile": str(plan.record.profile),
                                         "cat_ray.objective": ",".join(space.objective.metrics)})
    # A previous driver may have died with trials in flight: nothing stays RUNNING; the trials that
    # continue set their runs back to RUNNING.
    sweep.kill_running_children("interrupted: the sweep driver stopped while this trial ran")
    interrupted = False
    if plan.action != "done":
        init_ray(address)
        record, todo = plan.record, plan
        while todo.action in ("start", "resume", "grow"):
            segment = todo.segment
            assert segment is not None
            if todo.action != "resume":
                record.segments.append(segment)
            record.save(plan.folder)
            grid = _tuner(todo, sweep, max_failures).fit()
            finished = grid.num_terminated + grid.num_errors
            if finished < len(grid) or len(grid) < segment.num_samples:
                interrupted = True
                break
            segment.done = True
            record.save(plan.folder)
            todo = plan_sweep(space, plan.name, plan.folder.parent)
    if interrupted:
        sweep.kill_running_children("interrupted: resume with `cat-ray tune ... --resume NAME`")
    runs = sweep.child_runs()
    groups = ["aggregator"] + (["offsets"] if any(p.key == "model.offsets" for p in space.params) else [])
    objectives = list(zip(space.objective.metrics, space.objective.modes))
    comparison = f"# Sweep {plan.name} ({space.source})\n\n" + tracking.comparison_table(runs, objectives, groups)
    client = sweep.client()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "comparison.md").write_text(comparison)
        client.log_artifact(sweep.run_id, str(Path(tmp) / "comparison.md"))
    sweep.end("KILLED" if interrupted else "FINISHED")
    return SweepResult(plan.name, plan.folder, uri, space.name, sweep.experiment_id, sweep.run_id, comparison, interrupted)
