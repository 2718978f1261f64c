"""Training on one machine: the run folder, resume equal to an uninterrupted run, NaN handling, evaluation."""
from __future__ import annotations

import json

import pytest
import torch

from cat_ray.config import build_config, load_config
from cat_ray.eval_protocol import evaluate_checkpoint, parse_corruption
from cat_ray.train_loop import TrainingDiverged, find_resume_checkpoint, reported_metric_names, train


def test_a_run_writes_config_metrics_and_checkpoints(tiny_overrides, tmp_path):
    cfg = build_config(None, tiny_overrides)
    seen = []
    metrics = train(cfg, tmp_path / "run", reporter=lambda e, m, c: seen.append((e, set(m), (c / "checkpoint.pt").is_file())),
                    progress=False)
    run = tmp_path / "run"
    assert load_config(run / "config.yaml") == cfg  # the resolved config, every key
    provenance = json.loads((run / "provenance.json").read_text())
    assert len(provenance["git"]["commit"]) == 40 and provenance["torch"] == torch.__version__
    summary = json.loads((run / "metrics.json").read_text())
    for key in ("mpjpe", "pa_mpjpe", "pve", "accel_err"):
        assert summary[key] > 0 and summary[key] == metrics[f"val_{key}"]
    assert set(summary["agg_weights"]) == {"-2", "-1", "0", "1", "2"}
    assert abs(sum(summary["agg_weights"].values()) - 1) < 1e-5
    assert len(summary["history"]) == 2
    assert (run / "best" / "checkpoint.pt").is_file() and find_resume_checkpoint(run) is not None
    assert [e for e, _, _ in seen] == [1, 2]
    assert all(names == reported_metric_names(cfg) for _, names, _ in seen)  # what search spaces are checked against
    assert all(present for _, _, present in seen)  # the epoch's checkpoint, while the reporter runs


def test_resumed_run_equals_an_uninterrupted_run(tiny_overrides, tmp_path):
    """Model, optimiser, scheduler, sampler and RNG state all come back: the numbers are identical."""
    straight = train(build_config(None, tiny_overrides), tmp_path / "straight", progress=False)
    one_epoch = build_config(None, {**tiny_overrides, "train.epochs": 1})
    train(one_epoch, tmp_path / "split", progress=False)
    resumed = train(build_config(None, tiny_overrides), tmp_path / "split",
                    resume_checkpoint=find_resume_checkpoint(tmp_path / "split"), progress=False)
    for key in ("train_loss", "val_mpjpe", "val_pa_mpjpe"):
        assert resumed[key] == pytest.approx(straight[key], rel=1e-5), key
    history = json.loads((tmp_path / "split" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1.0, 2.0]


def test_nan_loss_stops_with_a_clear_message(tiny_overrides, tmp_path):
    cfg = build_config(None, {**tiny_overrides, "loss.w_3d": 1e38, "loss.w_2d": 1e38, "optim.lr": 10.0})
    with pytest.raises(TrainingDiverged, match="training loss became"):
        train(cfg, tmp_path / "run", progress=False)


@pytest.mark.parametrize("aggregator", ["vibe", "single", "gru"])
def test_baselines_train_and_report(tiny_overrides, tmp_path, aggregator):
    cfg = build_config(None, {**tiny_overrides, "model.aggregator": aggregator, "train.epochs": 1})
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert set(metrics) == reported_metric_names(cfg)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_eval_protocol_predicts_every_frame_once_and_reports_per_video(tiny_overrides, tmp_path):
    train(build_config(None, {**tiny_overrides, "train.epochs": 1}), tmp_path / "run", progress=False)
    report = evaluate_checkpoint(tmp_path / "run" / "best", "synthetic", "test")
    assert len(report.per_video) == tiny_overrides["data.test_videos"]
    assert sum(v["frames"] for v in report.per_video) == tiny_overrides["data.test_videos"] * tiny_overrides["data.frames_per_video"]
    mean_of_videos = sum(v["mpjpe"] * v["frames"] for v in report.per_video) / sum(v["frames"] for v in report.per_video)
    assert report.overall["mpjpe"] == pytest.approx(mean_of_videos)  # equal-length videos: frame mean = video mean
    corrupted = evaluate_checkpoint(tmp_path / "run" / "best", "synthetic", "test", parse_corruption("center:0.33:2"))
    assert corrupted.corruption["ratio"] == 0.33 and corrupted.overall["mpjpe"] != report.overall["mpjpe"]


def test_weight_trace_records_the_aggregation_weights_per_step(tiny_overrides, tmp_path):
    cfg = build_config(None, {**tiny_overrides, "train.weight_trace_every": 2})
    train(cfg, tmp_path / "run", progress=False)
    trace = json.loads((tmp_path / "run" / "metrics.json").read_text())["weight_trace"]
    assert [point["step"] for point in trace] == [2, 4, 6]  # 2 epochs x 3 steps
    for point in trace:
        assert abs(sum(point[str(d)] for d in (-2, -1, 0, 1, 2)) - 1) < 1e-5


def test_blocked_and_clean_source_weights_are_reported_under_corruption(tiny_overrides, tmp_path):
    cfg = build_config(None, {**tiny_overrides, "train.epochs": 1, "data.corruption.mode": "center",
                              "data.corruption.ratio": 0.33, "data.corruption.consecutive": 2})
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert set(metrics) == reported_metric_names(cfg)
    assert 0 < metrics["agg_weight_blocked_source"] < 1 and 0 < metrics["agg_weight_clean_source"] < 1


def test_weights_by_source_separates_blocked_from_clean_predictions():
    from cat_ray.evaluate import SplitPrediction, weights_by_source

    weights = torch.tensor([[0.1, 0.5], [0.9, 0.5]])  # (D = 2, N = 2)
    blocked = torch.tensor([[True, False], [False, False]])
    pred = SplitPrediction(torch.zeros(2, 24, 3, 3), torch.zeros(2, 10), torch.zeros(2, 3), weights,
                           source_corrupted=blocked)
    assert weights_by_source(pred) == pytest.approx({"agg_weight_blocked_source": 0.1,
                                                     "agg_weight_clean_source": (0.5 + 0.9 + 0.5) / 3})


@pytest.mark.slow
def test_compiled_training_equals_eager_training(tiny_overrides, tmp_path, monkeypatch):
    """train.compile runs the step through torch.compile (inductor, a real C++ build) and trains the same
    model: the same losses and validation errors as eager, up to float reassociation."""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config, "fallback_random", True)  # dropout masks from eager's RNG, as in eager
    from torch._dynamo.utils import counters

    eager = train(build_config(None, tiny_overrides), tmp_path / "eager", progress=False)
    counters.clear()
    compiled = train(build_config(None, {**tiny_overrides, "train.compile": True}), tmp_path / "compiled", progress=False)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo did capture the model
    for key in ("train_loss", "val_mpjpe", "val_pa_mpjpe"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-4), key
    assert compiled["train_loss"] != pytest.approx(train(build_config(None, {**tiny_overrides, "train.seed": 1}),
                                                         tmp_path / "other", progress=False)["train_loss"], rel=1e-4)


def test_bf16_precision_trains_under_autocast_on_cpu_close_to_fp32(tiny_overrides, tmp_path):
    """train.precision=bf16 is applied on a CPU too: the numbers move by bf16 rounding, not more."""
    fp32 = train(build_config(None, {**tiny_overrides, "train.epochs": 1}), tmp_path / "fp32", progress=False)
    bf16 = train(build_config(None, {**tiny_overrides, "train.epochs": 1, "train.precision": "bf16"}), tmp_path / "bf16",
                 progress=False)
    assert bf16["train_loss"] != fp32["train_loss"]  # autocast ran: bf16 matmuls round differently
    assert bf16["train_loss"] == pytest.approx(fp32["train_loss"], rel=0.05)
    assert bf16["val_pa_mpjpe"] == pytest.approx(fp32["val_pa_mpjpe"], rel=0.05)
