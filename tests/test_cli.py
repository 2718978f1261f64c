"""The ``cat-ray`` command as a user runs it: one-line errors, the body commands, real-format data end to end."""
from __future__ import annotations

import json

import pytest
import smplx
from click.testing import CliRunner

from cat_ray.cli import main
from fixtures_real import smpl_arrays, write_insta_h5, write_official_smpl, write_vibe_data, write_vibe_db


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def sets(overrides: dict) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]


def test_help_names_every_command():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("train", "tune", "eval", "body", "config"):
        assert command in result.output


def test_bad_config_is_one_line_naming_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  offsets: []\n")
    result = run("train", bad, "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert f"{bad}: model.offsets: a non-empty set" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()  # refused before anything ran


def test_bad_override_is_refused(tmp_path):
    result = run("config", "--set", "optim.lr=-1")
    assert result.exit_code == 1 and "--set: optim.lr: a learning rate > 0" in result.output


def test_config_prints_the_resolved_config():
    result = run("config", "--set", "model.offsets=3..0")
    assert result.exit_code == 0 and "- 3\n  - 2\n  - 1\n  - 0" in result.output


def test_existing_run_is_not_overwritten(tiny_overrides, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    result = run("train", "--out", out, *sets(tiny_overrides))
    assert result.exit_code == 1 and "already holds a run" in result.output
    assert (out / "metrics.json").read_text() == "{}"


def test_make_standin_writes_a_model_smplx_loads(tmp_path):
    result = run("body", "make-standin", "--out", tmp_path / "body")
    assert result.exit_code == 0
    model = smplx.SMPL(model_path=str(tmp_path / "body" / "SMPL_NEUTRAL.pkl"))
    assert model.get_num_verts() == 6890


def test_body_import_reports_a_missing_file(tmp_path):
    (tmp_path / "smpl").mkdir()
    result = run("body", "import", tmp_path / "smpl", "--out", tmp_path / "out")
    assert result.exit_code == 1 and "basicModel_neutral" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_real_format_data_import_train_and_eval(tiny_overrides, tmp_path):
    """Official-format SMPL pickle (chumpy objects) and VIBE dbs -> import -> train a few steps -> cat-ray eval."""
    smpl_dir = tmp_path / "smpl"
    smpl_dir.mkdir()
    write_official_smpl(smpl_dir / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl", smpl_arrays())
    write_vibe_data(smpl_dir)
    assert run("body", "import", smpl_dir, "--out", tmp_path / "body").exit_code == 0

    db = tmp_path / "vibe_db"
    for dataset, split in (("3dpw", "train"), ("3dpw", "val"), ("3dpw", "test"), ("h36m", "train")):
        write_vibe_db(db, dataset, split, lengths=(20, 17), feature_dim=32)
    write_insta_h5(db, lengths=(18, 20), feature_dim=32)
    overrides = {**tiny_overrides, "data.source": "vibe", "data.root": db, "body.model_path": tmp_path / "body",
                 "train.epochs": 1}
    result = run("train", "--out", tmp_path / "run", "--quiet", *sets(overrides))
    assert result.exit_code == 0, result.output
    result = run("eval", tmp_path / "run" / "best", "--data", "3dpw", "--split", "test", "--corrupt", "center:0.2:2")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "eval-3dpw-test.json").read_text())
    assert [v["frames"] for v in report["per_video"]] == [20, 17]
    assert report["corruption"] == {"mode": "center", "ratio": 0.2, "consecutive": 2}
    assert all(report["overall"][k] > 0 for k in ("mpjpe", "pa_mpjpe", "pve", "accel_err"))


def test_eval_logs_its_figures_to_an_mlflow_run(tiny_overrides, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("eval")).info.run_id
    assert run("train", "--out", tmp_path / "run", "--quiet", *sets({**tiny_overrides, "train.epochs": 1})).exit_code == 0
    result = run("eval", tmp_path / "run" / "best", "--split", "val", "--run-id", run_id)
    assert result.exit_code == 0, result.output
    logged = client.get_run(run_id).data.metrics
    report = json.loads((tmp_path / "run" / "eval-synthetic-val.json").read_text())
    assert logged["synthetic_val_pa_mpjpe"] == pytest.approx(report["overall"]["pa_mpjpe"])
    assert "eval-synthetic-val.json" in [a.path for a in client.list_artifacts(run_id)]


@pytest.mark.slow
def test_two_worker_train_prints_each_epoch_line_once(tiny_overrides, tmp_path):
    """Under Ray Train, rank 0's epoch lines reach the terminal through Ray's log forwarding: once each
    (Ray Train's print patch used to log every line a second time)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "CAT_RAY_CACHE": str(tmp_path / "cache"), "RAY_DEDUP_LOGS": "0"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", "from cat_ray.cli import main; main()", "train", "--workers", "2", "--out", str(tmp_path / "run"),
                          *sets(tiny_overrides)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = (out.stdout + out.stderr).splitlines()
    for epoch in (1, 2):
        assert sum(f"epoch {epoch}/2  loss" in line for line in lines) == 1, "\n".join(lines[-40:])
