"""Per-epoch checkpoint cost at the paper's sizes: cat_ray's persistence against writing every copy.

A checkpoint of the paper-sized model (80 M parameters, Adam's two moments, RNG states) is about
950 MB, and a run writes one every epoch. On a GPU an epoch of 500 steps takes a few seconds, so the
checkpoint's bytes, not the training, would set the pace of the paper's schedule and of a sweep
(issue 7, items 3 and 5). Both candidates persist an improving epoch (the worst case: ``best/``
changes too), with the real model, optimiser and scheduler after one Adam step:

- **reference**, the straightforward path: ``torch.save`` to ``best/``, again to ``checkpoints/last``,
  and in a sweep a copy of ``last`` for the reporter (Ray then copies that into its storage);
- **cat_ray**, ``train_loop._persist_epoch``: one ``torch.save`` to ``last``, ``best/`` and the
  reporter's folder hard-linked to it. Without a reporter (``cat-ray train``) the write runs on a
  background thread while the next epoch trains: what the training thread waits for is the copy of
  the state (``detached_copy``), timed here; the write's own time is printed too.

Ray's copy into its storage and MLflow's upload of the best checkpoint are the same in both and not
timed. Files are written under ``--dir`` (default: a temporary folder on the working directory's file
system: write where your runs are written).

    python benchmarks/checkpoint.py [--repeats 3] [--dir PATH] [--device cuda]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import add_common_args, goal_line, setup

from cat_ray.checkpoints import CHECKPOINT_FILE, CheckpointWriter
from cat_ray.config import Config, config_yaml
from cat_ray.models.model import build_model
from cat_ray.models.regressor import MeanParams
from cat_ray.train_loop import RunState, _persist_epoch, _reporter_folder


class _Sampler:
    """The sampler's part of a checkpoint (its generator state), without building the data."""

    def __init__(self):
        self.generator = torch.Generator().manual_seed(0)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}


def reference_persist(run_dir: Path, payload: dict, reporter: bool) -> None:
    """Every copy written: best/, last/, and the reporter's copy of last."""
    for folder in (run_dir / "best", run_dir / "checkpoints" / "last"):
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(payload, folder / (CHECKPOINT_FILE + ".tmp"))
        (folder / (CHECKPOINT_FILE + ".tmp")).replace(folder / CHECKPOINT_FILE)
    if reporter:
        copy = Path(tempfile.mkdtemp(prefix="report-", dir=run_dir / "checkpoints"))
        shutil.copytree(run_dir / "checkpoints" / "last", copy, dirs_exist_ok=True)
        shutil.rmtree(copy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=".", help="file system to write on (default: the working directory's)")
    add_common_args(parser, repeats=3)
    args = parser.parse_args()
    device = setup(args)
    cfg = Config()  # the paper's sizes
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data.feature_dim, MeanParams.neutral()).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    for p in model.parameters():  # one step, so that Adam's moments exist (two more tensors per parameter)
        p.grad = torch.randn_like(p)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    sampler, text = _Sampler(), config_yaml(cfg)
    params = sum(p.numel() for p in model.parameters())

    root = Path(tempfile.mkdtemp(prefix="cat-ray-bench-ckpt-", dir=args.dir))
    try:
        def ours(run_dir: Path, reporter: bool, writer: CheckpointWriter) -> float:
            """Seconds the training thread is held; a background write is waited for after the clock stops."""
            state = RunState(epoch=1, step=500)  # best_pa_mpjpe inf: the epoch improves
            metrics = {"val_mpjpe": 90.0, "val_pa_mpjpe": 60.0, "val_pve": 100.0, "val_accel_err": 10.0}
            start = time.perf_counter()
            _persist_epoch(writer, run_dir, cfg, text, model, optimizer, scheduler, state, sampler, metrics)
            if reporter:
                shutil.rmtree(_reporter_folder(writer, run_dir))
            held = time.perf_counter() - start
            writer.wait()
            return held

        def payload() -> dict:
            return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "state": RunState(epoch=1).__dict__, "sampler": sampler.state_dict(), "torch_rng": torch.get_rng_state()}

        times: dict[str, list[float]] = {k: [] for k in ("ref sweep", "ours sweep", "ref train", "ours train held",
                                                         "ours train write")}
        for _ in range(args.repeats):  # interleaved rounds, each in a fresh run folder
            for case in ("sweep", "train"):
                reporter = case == "sweep"
                run_dir = root / f"{case}-ref"
                start = time.perf_counter()
                reference_persist(run_dir, payload(), reporter)
                times[f"ref {case}"].append(time.perf_counter() - start)
                shutil.rmtree(run_dir)
                run_dir = root / f"{case}-ours"
                writer = CheckpointWriter(background=not reporter)
                start = time.perf_counter()
                held = ours(run_dir, reporter, writer)
                if reporter:
                    times["ours sweep"].append(held)
                else:
                    times["ours train held"].append(held)
                    times["ours train write"].append(time.perf_counter() - start)
                shutil.rmtree(run_dir)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"paper sizes: {params / 1e6:.1f} M parameters; a checkpoint with Adam's moments is about "
          f"{3 * params * 4 / 1e9:.2f} GB; an improving epoch, files under {Path(args.dir).resolve()}")
    labels = {"ref sweep": "reference, sweep trial (best, last, reporter copy)",
              "ours sweep": "cat_ray, sweep trial (last; best and reporter linked)",
              "ref train": "reference, cat-ray train (best, last)",
              "ours train held": "cat_ray, cat-ray train: training thread held",
              "ours train write": "cat_ray, cat-ray train: background write"}
    for key, label in labels.items():
        print(f"  {label:<56s} best {min(times[key]):7.2f} s   median {statistics.median(times[key]):7.2f} s")
    sweep = min(times["ref sweep"]) / min(times["ours sweep"])
    train = min(times["ref train"]) / min(times["ours train held"])
    print(goal_line("sweep trial: reference time / cat_ray time per improving epoch", sweep, None))
    print(goal_line("cat-ray train: reference time / time the training thread is held per improving epoch", train, None))


if __name__ == "__main__":
    main()
