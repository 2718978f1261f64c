"""Sweeps end to end on a local Ray with real Optuna and a real MLflow store: trials tracked per epoch,
failures recorded, an interrupted sweep resumed, a finished sweep grown."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from cat_ray.platform import tracking
from cat_ray.platform.sweep import SweepRecord, plan_sweep, run_sweep
from cat_ray.platform.trainer import init_ray
from cat_ray.search_space import load_search_space
from conftest import TINY, isolated_sweep_env

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def write_space(folder: Path, params: dict, num_samples: int, **sections) -> Path:
    """A search-space file over the tiny schedule."""
    body = {"name": "tiny", "base": {"set": dict(TINY)}, "params": params,
            "objective": {"metric": "val_pa_mpjpe", "mode": "min"},
            "search": {"sampler": "tpe", "seed": 0, "num_samples": num_samples, "max_concurrent": 1},
            "scheduler": None, "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0}}
    for key, value in sections.items():
        body[key] = {**body[key], **value} if isinstance(body.get(key), dict) else value
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A store, a cache and a local Ray shared by the module; the environment reaches Ray's workers."""
    root = tmp_path_factory.mktemp("sweeps")
    mp = isolated_sweep_env(root)
    tracking.prepare_store(os.environ["MLFLOW_TRACKING_URI"])
    import ray

    init_ray(num_cpus=2, num_gpus=1)  # one GPU as a Ray resource (none is real here): GPU trials are placed by it
    yield root
    ray.shutdown()
    mp.undo()


def children(result) -> list:
    client = MlflowClient(result.uri)
    return client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")


def test_sweep_tracks_every_trial_and_records_a_failing_one_while_going_on(env, tmp_path):
    space_file = write_space(tmp_path, {"model.aggregator": {"type": "categorical", "choices": ["confidence", "average"]},
                                        "optim.lr": {"type": "categorical", "choices": [1.0e-4, 1.0e+12]}}, 4,
                             search={"sampler": "grid", "max_concurrent": 2},
                             scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2})
    space = load_search_space(space_file)
    result = run_sweep(plan_sweep(space, "e2e", tmp_path / "ray"))
    assert not result.interrupted
    runs = children(result)
    client = MlflowClient(result.uri)
    assert len(runs) == 4 and len({r.data.tags[tracking.TRIAL_TAG] for r in runs}) == 4
    for run in runs:
        if run.data.params["optim.lr"] == "1000000000000.0":  # NaN loss: TrainingDiverged
            assert run.info.status == "FAILED"
            assert "TrainingDiverged" in run.data.tags[tracking.ERROR_TAG]
            continue
        assert run.info.status == "FINISHED"
        steps = [int(m.step) for m in client.get_metric_history(run.info.run_id, "val_pa_mpjpe")]
        assert steps == ([1] if run.data.tags.get("stopped_early") == "true" else [1, 2])
        assert {"val_mpjpe", "val_pve", "val_accel_err", "train_loss"} <= set(run.data.metrics)
        assert "best_checkpoint/checkpoint.pt" in [a.path for a in client.list_artifacts(run.info.run_id, "best_checkpoint")]
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    table = Path(client.download_artifacts(result.parent_run_id, "comparison.md", str(tmp_path))).read_text()
    assert "| confidence | 1 |" in table and "| average | 1 |" in table and "2 failed" in table
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{tmp_path / 'ray' / 'e2e' / 'optuna.db'}")
    assert len(study.trials) == 4
    assert sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials) == 2


def _cli(space_file: Path, storage: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", "from cat_ray.cli_tune import tune; tune()", str(space_file), "--storage", str(storage), *args]


def test_interrupted_sweep_resumes_without_repeats_and_a_finished_one_grows(env, tmp_path):
    space_file = write_space(tmp_path, {"optim.lr": {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-3}}, 3,
                             base={"set": {**TINY, "train.epochs": 3}})
    storage = tmp_path / "ray"
    uri = os.environ["MLFLOW_TRACKING_URI"]
    # The driver in its own process, interrupted (Ctrl-C) once its first trial has finished.
    driver = subprocess.Popen(_cli(space_file, storage, "--name", "grow"), cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = MlflowClient(uri)
    deadline = time.time() + 150
    while time.time() < deadline and driver.poll() is None:
        experiment = client.get_experiment_by_name("tiny")
        runs = client.search_runs([experiment.experiment_id], "tags.`cat_ray.role` = 'trial'") if experiment else []
        if any(r.info.status == "FINISHED" for r in runs) and any(r.info.status == "RUNNING" for r in runs):
            break
        time.sleep(0.5)
    driver.send_signal(signal.SIGINT)
    output, _ = driver.communicate(timeout=120)
    assert "interrupted: continue with" in output, output[-3000:]
    before = {r.data.tags[tracking.TRIAL_TAG]: r for r in client.search_runs([experiment.experiment_id], "tags.`cat_ray.role` = 'trial'")}
    assert "RUNNING" not in {r.info.status for r in before.values()}
    finished_before = {t: r.info.run_id for t, r in before.items() if r.info.status == "FINISHED"}
    assert finished_before

    # --resume: the interrupted segment is restored; finished trials are not run again.
    space = load_search_space(space_file)
    result = run_sweep(plan_sweep(space, "grow", storage, must_exist=True))
    runs = children(result)
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags[tracking.TRIAL_TAG] for r in runs}) == 3
    for run in runs:  # one value per epoch, also for the trial that was cut and continued
        assert [int(m.step) for m in client.get_metric_history(run.info.run_id, "val_pa_mpjpe")] == [1, 2, 3]
    for trial_id, run_id in finished_before.items():
        again = client.get_run(run_id)
        assert again.info.end_time == before[trial_id].info.end_time  # untouched
    record = SweepRecord.load(storage / "grow")
    assert [s.done for s in record.segments] == [True]

    # A larger --num-samples grows the finished sweep: a new segment, the Optuna study continues.
    grown = run_sweep(plan_sweep(load_search_space(space_file, num_samples=5), "grow", storage))
    runs = children(grown)
    assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(int(r.data.tags["cat_ray.trial_index"]) for r in runs) == [1, 2, 3, 4, 5]
    assert [s.num_samples for s in SweepRecord.load(storage / "grow").segments] == [3, 2]
    study = optuna.load_study(study_name="grow", storage=f"sqlite:///{storage / 'grow' / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 5
    assert plan_sweep(load_search_space(space_file, num_samples=5), "grow", storage).action == "done"


def test_resume_refuses_a_sweep_started_with_other_settings(tmp_path):
    space_file = write_space(tmp_path, {"optim.lr": {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-3}}, 2)
    plan = plan_sweep(load_search_space(space_file), "s", tmp_path)
    plan.record.segments.append(plan.segment)
    plan.record.save(plan.folder)
    from cat_ray.config import ConfigError

    with pytest.raises(ConfigError, match="overrides"):
        plan_sweep(load_search_space(space_file, overrides=("train.epochs=5",)), "s", tmp_path)
    with pytest.raises(ConfigError, match="no"):
        plan_sweep(load_search_space(space_file), "other", tmp_path, must_exist=True)
    assert plan_sweep(load_search_space(space_file), "s", tmp_path).action == "resume"


def test_multi_objective_sweep_reports_the_pareto_front(env, tmp_path):
    """Two objectives (accuracy and aggregation latency): Optuna keeps both, the parent run gets the front."""
    space_file = write_space(tmp_path, {"model.aggregator": {"type": "categorical", "choices": ["confidence", "average"]}}, 2,
                             objective={"metric": ["val_pa_mpjpe", "agg_latency_ms"], "mode": "min"},
                             search={"sampler": "grid", "max_concurrent": 1})
    result = run_sweep(plan_sweep(load_search_space(space_file), "pareto", tmp_path / "ray"))
    assert {r.info.status for r in children(result)} == {"FINISHED"}
    client = MlflowClient(result.uri)
    table = Path(client.download_artifacts(result.parent_run_id, "comparison.md", str(tmp_path))).read_text()
    assert "## Pareto front" in table and "agg_latency_ms (min)" in table
    study = optuna.load_study(study_name="pareto", storage=f"sqlite:///{tmp_path / 'ray' / 'pareto' / 'optuna.db'}")
    assert len(study.directions) == 2 and all(len(t.values) == 2 for t in study.trials)


def test_a_one_gpu_trial_trains_in_its_own_process_holding_its_gpu(env, tmp_path):
    """A one-worker GPU trial (the paper profiles' shape) pays for no TorchTrainer worker group: the trial
    process reserves the GPU itself and Ray assigns it (CUDA_VISIBLE_DEVICES; on this CPU torch sees none)."""
    space_file = write_space(tmp_path, {"optim.lr": {"type": "categorical", "choices": [1.0e-4, 3.0e-4]}}, 2,
                             search={"sampler": "grid", "max_concurrent": 2},
                             resources={"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1})
    result = run_sweep(plan_sweep(load_search_space(space_file), "gpu", tmp_path / "ray"))
    runs = children(result)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert run.data.tags[tracking.LAUNCH_TAG] == "in-process"
        assert run.data.tags[tracking.GPUS_TAG] == "0"  # Ray gave the trial process the cluster's one GPU
    assert not (tmp_path / "ray" / "gpu" / "train").exists()  # no Ray Train run was made
