"""GPU paths: the same training on CUDA as on the CPU, bf16 autocast, data on the device, torch.compile.

Skipped where torch sees no GPU (this workplace's CPUs and CI); ``benchmarks/gpu.sh`` runs them on a
lent GPU next to the GPU benchmarks.
"""
from __future__ import annotations

import pytest
import torch

from cat_ray.config import build_config
from cat_ray.data.mixing import MixedWindowSampler
from cat_ray.data.sources import load_splits
from cat_ray.train_loop import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU that torch sees")

NO_DROPOUT = {"model.dropout": 0.0, "model.regressor_dropout": 0.0, "train.epochs": 1}


def test_a_run_on_the_gpu_gets_the_numbers_of_the_cpu(tiny_overrides, tmp_path):
    """Same seed, same data, no dropout: CUDA and the CPU differ by float summation order only."""
    cpu = train(build_config(None, {**tiny_overrides, **NO_DROPOUT, "train.device": "cpu"}), tmp_path / "cpu",
                progress=False)
    gpu = train(build_config(None, {**tiny_overrides, **NO_DROPOUT, "train.device": "cuda"}), tmp_path / "gpu",
                progress=False)
    for key in ("train_loss", "val_mpjpe", "val_pa_mpjpe", "val_pve"):
        assert gpu[key] == pytest.approx(cpu[key], rel=1e-3), key


def test_bf16_on_the_gpu_stays_close_to_fp32(tiny_overrides, tmp_path):
    fp32 = train(build_config(None, {**tiny_overrides, **NO_DROPOUT, "train.device": "cuda"}), tmp_path / "fp32",
                 progress=False)
    bf16 = train(build_config(None, {**tiny_overrides, **NO_DROPOUT, "train.device": "cuda", "train.precision": "bf16"}),
                 tmp_path / "bf16", progress=False)
    assert bf16["train_loss"] != fp32["train_loss"]  # autocast ran
    assert bf16["train_loss"] == pytest.approx(fp32["train_loss"], rel=0.05)


def test_training_batches_are_drawn_on_the_device(tiny_overrides):
    """The synthetic data lives on the GPU: sampling a batch copies nothing from the host."""
    cfg = build_config(None, {**tiny_overrides, "train.device": "cuda"})
    splits = {name: split.to(torch.device("cuda")) for name, split in load_splits(cfg).items()}
    sampler = MixedWindowSampler.from_config(cfg.data, splits, seed=0, rank=0, world_size=1)
    batch = sampler.sample(cfg.train.batch_size)
    assert all(t.device.type == "cuda" for t in batch.__dict__.values() if isinstance(t, torch.Tensor))


def test_compiled_training_on_the_gpu_equals_eager(tiny_overrides, tmp_path):
    eager = train(build_config(None, {**tiny_overrides, **NO_DROPOUT, "train.device": "cuda"}), tmp_path / "eager",
                  progress=False)
    compiled = train(build_config(None, {**tiny_overrides, **NO_DROPOUT, "train.device": "cuda", "train.compile": True}),
                     tmp_path / "compiled", progress=False)
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-3)
