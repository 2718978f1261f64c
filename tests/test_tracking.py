"""MLflow tracking: store selection, parent/child runs found by tag, git tags, per-epoch logging, tables.

A real SQLite MLflow store in tmp_path; no Ray.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cat_ray.config import build_config
from cat_ray.platform import tracking

pytestmark = pytest.mark.slow  # MLflow's store start-up costs a few seconds


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    """One store for the module (creating one costs seconds); each test uses its own experiment."""
    return tracking.prepare_store(f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}")


@pytest.fixture
def cfg():
    return build_config({"model": {"aggregator": "gru", "offsets": [-1, 0, 1]}, "train": {"seed": 3}})


def test_store_is_the_env_uri_when_set_else_sqlite_under_results(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://head:5000")
    assert tracking.tracking_uri() == "http://head:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)  # not a git work tree: the working directory is the root
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'results' / 'mlflow.db'}"
    assert tracking.ui_command(tracking.tracking_uri()).startswith("mlflow ui --backend-store-uri sqlite:///")


def test_prepare_store_creates_the_sqlite_database_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    tracking.prepare_store(uri)
    assert (tmp_path / "results" / "mlflow.db").is_file()
    assert tracking.artifact_root(uri) == (tmp_path / "results" / "mlartifacts").as_uri()


def test_git_tags_name_the_commit_and_the_dirty_flag(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git("add", "a.txt")
    git("commit", "-qm", "one")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert tracking.git_tags(tmp_path) == {"mlflow.source.git.commit": head, "cat_ray.git_dirty": "false"}
    (tmp_path / "a.txt").write_text("2")
    assert tracking.git_tags(tmp_path)["cat_ray.git_dirty"] == "true"
    assert tracking.project_root(tmp_path) == tmp_path.resolve()


def test_trial_runs_are_nested_and_found_again_by_trial_id(uri, cfg):
    sweep = tracking.SweepRun.open(uri, "offsets", "offsets-laptop")
    assert tracking.SweepRun.open(uri, "offsets", "offsets-laptop").run_id == sweep.run_id  # find, not create
    name = tracking.trial_run_name(cfg, 3)
    assert name == "gru d=-1..1 seed3 #3"
    run_id = sweep.open_trial("t1", cfg, name)
    sweep.end_trial("t1", "KILLED")
    assert sweep.open_trial("t1", cfg, name) == run_id  # a restored trial gets its run back, RUNNING
    runs = sweep.child_runs()
    assert [r.info.run_id for r in runs] == [run_id]
    run = runs[0]
    assert run.info.status == "RUNNING" and run.info.run_name == name
    assert run.data.tags["mlflow.parentRunId"] == sweep.run_id
    assert {k: run.data.tags[k] for k in ("aggregator", "seed", "offsets")} == {"aggregator": "gru", "seed": "3", "offsets": "-1,0,1"}
    assert run.data.params["model.offsets"] == "-1,0,1" and run.data.params["loss.w_3d"] == "300.0"
    assert [a.path for a in sweep.client().list_artifacts(run_id)] == ["config.yaml"]


def test_epoch_logger_logs_each_epoch_once_and_uploads_the_best_checkpoint(uri, cfg, tmp_path):
    sweep = tracking.SweepRun.open(uri, "logger", "s")
    run_id = sweep.open_trial("t", cfg, "t")
    target = tracking.TrackingTarget(uri, run_id, "val_pa_mpjpe", "min")
    logger = tracking.EpochLogger(target)
    for epoch, value in ((1, 50.0), (2, 40.0), (3, 45.0)):
        ckpt = tmp_path / f"ckpt{epoch}"
        ckpt.mkdir()
        (ckpt / "checkpoint.pt").write_text(f"epoch {epoch}")
        logger(epoch, {"val_pa_mpjpe": value, "train_loss": 1.0 / epoch}, ckpt)
    # A restarted worker group replays from its checkpoint: epochs already logged are skipped.
    logger.close()  # the best checkpoint's upload runs in the background
    restarted = tracking.EpochLogger(target)
    restarted(3, {"val_pa_mpjpe": 45.0, "train_loss": 0.3}, None)
    restarted(4, {"val_pa_mpjpe": 44.0, "train_loss": 0.25}, None)
    restarted.close()
    client = sweep.client()
    assert [(int(m.step), m.value) for m in client.get_metric_history(run_id, "val_pa_mpjpe")] == [(1, 50.0), (2, 40.0), (3, 45.0), (4, 44.0)]
    run = client.get_run(run_id)
    assert run.data.tags[tracking.BEST_EPOCH_TAG] == "2" and float(run.data.tags[tracking.BEST_VALUE_TAG]) == 40.0
    assert run.data.tags[tracking.CHECKPOINT_EPOCH_TAG] == "2"
    assert not list(tmp_path.glob("upload-*"))  # the uploader's private links are gone
    local = client.download_artifacts(run_id, "best_checkpoint", str(tmp_path / "down"))
    assert (Path(local) / "checkpoint.pt").read_text() == "epoch 2"


def test_ending_runs_records_errors_stops_and_interruptions(uri, cfg):
    sweep = tracking.SweepRun.open(uri, "ending", "s")
    for trial in ("ok", "stopped", "failed", "lost"):
        sweep.open_trial(trial, cfg, trial)
    sweep.end_trial("ok", "FINISHED")
    sweep.end_trial("stopped", "FINISHED", stopped_early=True)
    sweep.end_trial("failed", "FAILED", error="TrainingDiverged: loss nan")
    sweep.end_trial("failed", "FINISHED", only_if_running=True)  # a late writer does not undo the failure
    assert sweep.kill_running_children("driver stopped") == [sweep.child_run("lost").info.run_id]
    runs = {r.data.tags[tracking.TRIAL_TAG]: r for r in sweep.child_runs()}
    assert {t: r.info.status for t, r in runs.items()} == {"ok": "FINISHED", "stopped": "FINISHED", "failed": "FAILED", "lost": "KILLED"}
    assert runs["stopped"].data.tags["stopped_early"] == "true"
    assert runs["failed"].data.tags[tracking.ERROR_TAG] == "TrainingDiverged: loss nan"
    assert "error.txt" in [a.path for a in sweep.client().list_artifacts(runs["failed"].info.run_id)]


def test_comparison_table_groups_by_aggregator_with_best_and_spread(uri):
    sweep = tracking.SweepRun.open(uri, "table", "s")
    values = {"confidence": [40.0, 44.0], "gru": [50.0]}
    for aggregator, vals in values.items():
        for seed, value in enumerate(vals):
            cfg = build_config({"model": {"aggregator": aggregator}, "train": {"seed": seed}})
            run_id = sweep.open_trial(f"{aggregator}{seed}", cfg, "x")
            tracking.EpochLogger(tracking.TrackingTarget(uri, run_id, "val_pa_mpjpe", "min"))(
                1, {"val_pa_mpjpe": value, "agg_latency_ms": value / 10}, None)
            sweep.end_trial(f"{aggregator}{seed}", "FINISHED")
    table = tracking.comparison_table(sweep.child_runs(), [("val_pa_mpjpe", "min")], ["aggregator"])
    assert "| confidence | 2 | 40.00 | 42.00 ± 2.83 |" in table
    assert "| gru | 1 | 50.00 | 50.00 |" in table
    assert table.index("| confidence") < table.index("| gru")
    multi = tracking.comparison_table(sweep.child_runs(), [("val_pa_mpjpe", "min"), ("agg_latency_ms", "min")], ["aggregator"])
    assert "## Pareto front" in multi


def test_pareto_front_keeps_only_non_dominated_points():
    points = [("a", [1.0, 5.0]), ("b", [2.0, 2.0]), ("c", [3.0, 3.0]), ("d", [5.0, 1.0])]
    assert [p for p, _ in tracking.pareto_front(points, ["min", "min"])] == ["a", "b", "d"]
    assert [p for p, _ in tracking.pareto_front(points, ["min", "max"])] == ["a"]  # lowest first, highest second
