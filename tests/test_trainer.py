"""Training launch: the in-process path (no Ray) and a 2-worker TorchTrainer (gloo) on a local Ray.

Real training of a tiny model, real MLflow store; the Ray Train test starts a local Ray instance.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from cat_ray.config import build_config, set_dotted
from cat_ray.platform import tracking
from cat_ray.platform.trainer import init_ray, run_training
from cat_ray.train_loop import TrainingDiverged
from conftest import TINY

pytestmark = pytest.mark.slow

def tiny_config(**overrides):
    tree: dict = {}
    for key, value in {**TINY, **overrides}.items():
        set_dotted(tree, key, value)
    return build_config(tree)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Generated body model and synthetic data shared by the module's runs (and Ray workers: env)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CAT_RAY_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory) -> tracking.SweepRun:
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    return tracking.SweepRun.open(uri, "trainer", "trainer-test")


def _target(sweep_run, trial_id, cfg):
    run_id = sweep_run.open_trial(trial_id, cfg, trial_id)
    return tracking.TrackingTarget(sweep_run.uri, run_id, "val_pa_mpjpe", "min")


def _epochs(sweep_run, run_id) -> list[int]:
    return [int(m.step) for m in sweep_run.client().get_metric_history(run_id, "val_pa_mpjpe")]


def test_in_process_run_logs_every_epoch_and_the_best_checkpoint(cache, sweep_run, tmp_path):
    cfg = tiny_config()
    target = _target(sweep_run, "inproc", cfg)
    metrics = run_training(cfg, tmp_path / "run", tracking=target, progress=False)
    assert metrics["epoch"] == 2 and metrics["val_pa_mpjpe"] > 0
    assert _epochs(sweep_run, target.run_id) == [1, 2]
    artifacts = [a.path for a in sweep_run.client().list_artifacts(target.run_id, "best_checkpoint")]
    assert "best_checkpoint/checkpoint.pt" in artifacts
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_in_process_run_raises_training_diverged_on_nan(cache, tmp_path):
    with pytest.raises(TrainingDiverged):
        run_training(tiny_config(**{"optim.lr": 1e12, "train.epochs": 1}), tmp_path / "run", progress=False)


@pytest.fixture(scope="module")
def local_ray(cache):
    import ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_torch_trainer_with_two_gloo_workers_logs_from_rank_zero_and_resumes(local_ray, sweep_run, tmp_path):
    cfg = tiny_config()
    target = _target(sweep_run, "ddp", cfg)
    storage = tmp_path / "storage"
    metrics = run_training(cfg, tmp_path / "run", workers=2, storage_path=storage, name="ddp", tracking=target)
    assert metrics["epoch"] == 2
    assert _epochs(sweep_run, target.run_id) == [1, 2]  # one value per epoch: only rank 0 logged
    run = sweep_run.client().get_run(target.run_id)
    assert len(run.data.tags[tracking.NODES_TAG].split(",")) == 2  # one node id per rank
    assert run.data.tags[tracking.LAUNCH_TAG] == "ray-train" and run.data.tags[tracking.GPUS_TAG] == "-;-"
    assert list((storage / "ddp").glob("checkpoint_*/checkpoint.pt"))  # Ray's background upload finished
    assert not list((tmp_path / "run" / "checkpoints").glob("*-*"))  # no folder of links left behind
    # The same name resumes from the Train run's checkpoint: a longer schedule continues at epoch 3.
    longer = tiny_config(**{"train.epochs": 3})
    metrics = run_training(longer, tmp_path / "run", workers=2, storage_path=storage, name="ddp", tracking=target)
    assert metrics["epoch"] == 3
    assert _epochs(sweep_run, target.run_id) == [1, 2, 3]


def test_two_workers_get_the_numbers_of_one_with_the_same_global_batch(local_ray, tmp_path):
    """Each rank trains on its share of one global batch and DDP averages the gradients: without dropout,
    two workers reproduce the single-process run up to float summation order."""
    cfg = tiny_config(**{"model.dropout": 0.0, "model.regressor_dropout": 0.0})
    alone = run_training(cfg, tmp_path / "one", progress=False)
    together = run_training(cfg, tmp_path / "two", workers=2, storage_path=tmp_path / "storage", name="pair")
    for key in ("train_loss", "val_mpjpe", "val_pa_mpjpe"):
        assert together[key] == pytest.approx(alone[key], rel=1e-3), key


def test_torch_trainer_does_not_retry_a_diverged_run(local_ray, tmp_path):
    cfg = tiny_config(**{"optim.lr": 1e12, "train.epochs": 1})
    with pytest.raises(TrainingDiverged, match="loss"):
        run_training(cfg, tmp_path / "run", workers=2, storage_path=tmp_path / "storage", name="nan", max_failures=2)


def test_run_training_refuses_zero_workers(tmp_path):
    with pytest.raises(ValueError, match="workers"):
        run_training(tiny_config(), Path(tmp_path), workers=0)
