"""Shared fixtures: small generated inputs, every run writing under tmp_path."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Generated files of tests never land in the user's own cache.
os.environ.setdefault("CAT_RAY_CACHE", tempfile.mkdtemp(prefix="cat-ray-test-cache-"))


@pytest.fixture(scope="session")
def body_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in body model (seed 0), generated once per test session into a tmp folder."""
    from cat_ray.body.standin import make_standin

    return make_standin(tmp_path_factory.mktemp("body") / "standin", seed=0)


TINY = {
    "model.predictor_hidden": 32, "model.variance_hidden": 8, "model.regressor_hidden": 32,
    "model.temporal_hidden": 16, "model.temporal_layers": 1,
    "data.feature_dim": 32, "data.seq_len": 8, "data.stride": 4, "data.train_videos": 4, "data.val_videos": 2,
    "data.test_videos": 2, "data.frames_per_video": 24,
    "train.epochs": 2, "train.iters_per_epoch": 3, "train.batch_size": 4, "train.eval_batch_size": 8,
    "optim.lr": 1e-3,
}


@pytest.fixture()
def tiny_overrides(body_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Dotted overrides for a run of a few seconds: small widths, few videos, 2 epochs x 3 steps."""
    return {**TINY, "body.model_path": str(body_dir), "data.root": str(tmp_path_factory.getbasetemp() / "synthetic")}


def isolated_sweep_env(root: Path) -> pytest.MonkeyPatch:
    """A test's own cache and MLflow store under ``root`` (the env reaches Ray's workers), and no RAY_ADDRESS.

    Module-scoped fixtures call it and ``undo()`` the returned MonkeyPatch when done.
    """
    mp = pytest.MonkeyPatch()
    mp.setenv("CAT_RAY_CACHE", str(root / "cache"))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mp.delenv("RAY_ADDRESS", raising=False)
    return mp
