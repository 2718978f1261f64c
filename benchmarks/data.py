"""The data path against training: how many windows per second the synthetic benchmark is generated,
loaded from its cache and sampled into batches, against how many a training step consumes.

Windows are counted conservatively for generation and loading: a split's frames / T (the distinct,
non-overlapping windows it holds; training draws overlapping ones with stride < T). Sampling is
``MixedWindowSampler.sample`` on the training device (the data stay there). Consumption is the batch
size over the time of cat_ray's training step (benchmarks/train_step.py) on sampled batches.
Generation runs once per data config: its file is cached and read back by every later run and trial.
Goal (issue 7, item 4): the data path >= 10x the consumption.

    python benchmarks/data.py [--config configs/laptop.yaml] [--device cuda]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


from common import ROOT, add_common_args, goal_line, report, setup, time_interleaved

from benchmarks.train_step import training_step
from cat_ray.body.model import BodyModel, resolve_body_dir
from cat_ray.config import load_config
from cat_ray.data.mixing import MixedWindowSampler
from cat_ray.data.synthetic import load_or_generate
from cat_ray.models.model import build_model
from cat_ray.models.regressor import MeanParams

TRAIN_SPLITS = ("train/3dpw", "train/h36m", "train/insta")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "laptop.yaml"), help="run config (default laptop)")
    parser.add_argument("--rounds", type=int, default=2, help="generations of the benchmark timed (default 2)")
    add_common_args(parser, repeats=5)
    args = parser.parse_args()
    device = setup(args)
    cfg = load_config(args.config)
    T, B = cfg.data.seq_len, cfg.train.batch_size
    body_dir = resolve_body_dir(cfg.body.model_path)
    body = BodyModel.from_dir(body_dir)
    print(f"config {args.config}: {cfg.data.train_videos} videos x {cfg.data.frames_per_video} frames per training "
          f"source, {cfg.data.feature_dim}-d features; batch {B} x {T}")

    generated, loaded, times = [], [], {"sample a batch": [], "training step": []}
    step = None
    for _ in range(args.rounds):  # generation, loading and steps interleaved: load from others hits all alike
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            splits = load_or_generate(cfg.data, body_dir, Path(cache))  # generated (and saved)
            generated.append(time.perf_counter() - start)
            start = time.perf_counter()
            splits = load_or_generate(cfg.data, body_dir, Path(cache))  # read back from the cache
            loaded.append(time.perf_counter() - start)
        splits = {name: split.to(device) for name, split in splits.items()}
        sampler = MixedWindowSampler.from_config(cfg.data, splits, seed=0)
        if step is None:
            model = build_model(cfg.model, cfg.data.feature_dim, MeanParams.neutral()).to(device)
            step = training_step(model, body.to(device), cfg, device)
        batch = sampler.sample(B)
        for name, seconds in time_interleaved({"sample a batch": lambda s=sampler: s.sample(B),
                                               "training step": lambda b=batch: step(b)},
                                              args.repeats, device, warmup=1).items():
            times[name] += seconds
    report(times)
    all_windows = sum(s.num_frames for s in splits.values()) / T
    train_windows = sum(splits[n].num_frames for n in TRAIN_SPLITS) / T
    generated, loaded = min(generated), min(loaded)

    consumed = B / min(times["training step"])
    rates = {
        "generate (all splits, incl. saving)": all_windows / generated,
        "load from the cache (all splits)": all_windows / loaded,
        "sample batches on the device": B / min(times["sample a batch"]),
    }
    print(f"generation {generated:.2f} s and cache load {loaded:.2f} s for {all_windows:.0f} windows "
          f"({train_windows:.0f} of them training)")
    print(f"training consumes {consumed:.1f} windows/s")
    for label, rate in rates.items():
        ratio = rate / consumed
        print(f"  {label:<38s} {rate:12.1f} windows/s")
        print(goal_line(f"{label} / training consumption", ratio, ">= 10x", ratio >= 10))


if __name__ == "__main__":
    main()
