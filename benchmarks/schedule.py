"""The paper's whole training schedule through ``cat-ray train``'s own loop (issue 7, item 3, GPU goal).

Runs ``train_loop.train`` with the paper's config (50 epochs x 500 iterations, batch 32 windows of 16
frames, 2048-d features, the synthetic benchmark at its default size): everything a real run does,
data generation, a validation with meshes every epoch, checkpoints (written in the background) and
metrics.json. The wall time is compared with the goal (under 3 minutes on one H100) and with a
baseline measured in the same run: the straightforward reference step (benchmarks/reference.py,
fp32) timed for ``--reference-steps`` steps and multiplied by the schedule's step count, which is
the reference's training alone, without its validation or checkpoints.

On a CPU the full schedule takes about a day: pass a shorter one (``--epochs 1 --iters 5``); the
goal line is then printed as not applicable.

    python benchmarks/schedule.py --device cuda [--precision bf16] [--compile]
    python benchmarks/schedule.py --epochs 1 --iters 5          # a CPU smoke run of the same path
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from common import add_common_args, goal_line, setup, time_interleaved

from benchmarks.reference import ReferenceModel, reference_loss
from benchmarks.train_step import random_batch
from cat_ray.body.model import BodyModel, resolve_body_dir
from cat_ray.config import Config
from cat_ray.models.model import build_model
from cat_ray.models.regressor import MeanParams
from cat_ray.train_loop import train

PAPER_EPOCHS, PAPER_ITERS, GOAL_S = 50, 500, 180.0


def reference_step_seconds(cfg: Config, body: BodyModel, device: torch.device, steps: int) -> float:
    """Best seconds of one reference training step (fp32) at the schedule's sizes."""
    m = cfg.model
    mean = MeanParams.neutral()
    reference = ReferenceModel(m.offsets, cfg.data.feature_dim, m.predictor_hidden, m.dropout, m.variance_hidden,
                               m.regressor_hidden, m.regressor_iterations, mean, m.regressor_dropout).to(device)
    reference.load_from(build_model(m, cfg.data.feature_dim, mean).to(device))
    optimizer = torch.optim.Adam(reference.parameters(), lr=cfg.optim.lr)
    batch = random_batch(cfg, device)

    def step() -> None:
        loss = reference_loss(reference, batch, body, cfg.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return min(time_interleaved({"reference": step}, steps, device, warmup=1)["reference"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=PAPER_EPOCHS, help=f"epochs (default {PAPER_EPOCHS}, the paper's)")
    parser.add_argument("--iters", type=int, default=PAPER_ITERS, help=f"iterations per epoch (default {PAPER_ITERS})")
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"), help="train.precision (default bf16)")
    parser.add_argument("--compile", action="store_true", help="train.compile")
    parser.add_argument("--reference-steps", type=int, default=3, help="timed reference steps (default 3)")
    parser.add_argument("--dir", default=None, help="where the run folder goes (default: a temporary folder)")
    add_common_args(parser, repeats=1)
    args = parser.parse_args()
    device = setup(args)
    base = Config()
    cfg = replace(base, train=replace(base.train, epochs=args.epochs, iters_per_epoch=args.iters, device=device.type,
                                      precision=args.precision, compile=args.compile))
    steps = args.epochs * args.iters
    print(f"schedule: {args.epochs} epochs x {args.iters} iterations = {steps} steps, batch {cfg.train.batch_size} x "
          f"{cfg.data.seq_len}, features {cfg.data.feature_dim}, {args.precision}{', compiled' if args.compile else ''}",
          flush=True)

    with tempfile.TemporaryDirectory(prefix="cat-ray-bench-schedule-", dir=args.dir) as tmp:
        run_dir = Path(tmp) / "run"
        start = time.perf_counter()
        metrics = train(cfg, run_dir, progress=True)
        wall = time.perf_counter() - start
        history = json.loads((run_dir / "metrics.json").read_text())["history"]
    epoch_times = [h["epoch_time_s"] for h in history]
    print(f"cat-ray train: {wall:.1f} s in all ({steps / wall:.1f} steps/s overall); epochs (steps and validation) "
          f"{sum(epoch_times):.1f} s, median {statistics.median(epoch_times):.2f} s; start-up, checkpoints and the rest "
          f"{wall - sum(epoch_times):.1f} s; final val PA-MPJPE {metrics['val_pa_mpjpe']:.1f} mm", flush=True)

    body = BodyModel.from_dir(resolve_body_dir(cfg.body.model_path)).to(device)
    per_step = reference_step_seconds(cfg, body, device, args.reference_steps)
    print(f"reference step (fp32, straightforward): {1e3 * per_step:.1f} ms; its {steps} steps alone: {per_step * steps:.1f} s")
    print(goal_line("the reference's training steps alone / cat-ray's whole schedule", per_step * steps / wall, None))
    full = args.epochs == PAPER_EPOCHS and args.iters == PAPER_ITERS
    if full:
        print(goal_line("the paper's full schedule, seconds", wall, "< 180 s on one H100", wall < GOAL_S, fmt=".1f"))
    else:
        print(f"RESULT seconds for {args.epochs} x {args.iters}: {wall:.1f} (goal < 180 s applies to the full "
              f"{PAPER_EPOCHS} x {PAPER_ITERS} schedule on a GPU: not applicable)")


if __name__ == "__main__":
    main()
