"""Sweep overhead and multi-node scaling (issue 7, item 5), through cat-ray's real sweep driver.

**Overhead per trial.** A local Ray (started before the clock runs) sweeps ``--trials`` small
configurations one at a time (``max_concurrent`` 1) through ``run_sweep``: Tune, Optuna, MLflow
(a SQLite store), checkpoints. A trial's training is the sum of its epochs' ``epoch_time_s``
(the steps and validation); everything else is overhead: the trial process, the worker group (for
``workers`` > 1), building the data and the model, MLflow logging, checkpoints, Tune's bookkeeping,
the driver's parent run and comparison table. Overhead per trial = (sweep wall time - total training)
/ trials. Goal: < 5 s per trial.

**Two nodes against one.** ``ray.cluster_utils.Cluster`` starts real Ray nodes (a raylet each) on this
machine: "1 node" is a head of 1 CPU, "2 nodes" the head and one more node of 1 CPU. The same sweep of
``--scaling-trials`` one-CPU trials runs on each, and the ratio of wall times is the speed-up. The
nodes share this machine's cores, so the figure is only meaningful on a machine with at least
2 idle cores (the load average is printed). Goal: >= 1.7x.

    python benchmarks/sweep.py [--trials 4] [--workers 1,2] [--scaling-trials 8] [--skip-scaling]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml

from common import goal_line, machine_line

# A trial of a few seconds: the benchmark's small widths, a short schedule. Scaling trials train longer
# (``--scaling-iters``), so that the measured ratio is about placing trials, not about start-up.
SMALL = {
    "model.predictor_hidden": 64, "model.variance_hidden": 16, "model.regressor_hidden": 64,
    "data.feature_dim": 64, "data.seq_len": 8, "data.stride": 4, "data.train_videos": 4, "data.val_videos": 2,
    "data.test_videos": 2, "data.frames_per_video": 32,
    "train.epochs": 2, "train.iters_per_epoch": 10, "train.batch_size": 8, "train.eval_batch_size": 16,
}


def write_space(folder: Path, name: str, trials: int, workers: int, concurrent: int, iters: int) -> Path:
    body = {
        "name": name,
        "base": {"set": {**SMALL, "train.iters_per_epoch": iters}},
        "params": {"optim.lr": {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-3}},
        "objective": {"metric": "val_pa_mpjpe", "mode": "min"},
        "search": {"sampler": "tpe", "seed": 0, "num_samples": trials, "max_concurrent": concurrent},
        "scheduler": None,
        "resources": {"workers": workers, "cpus_per_worker": 1, "gpus_per_worker": 0},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def warm_cache(iters: int) -> None:
    """Generate the synthetic data and the stand-in body before the clock runs: a sweep pays for them once,
    in its first trial, and every later trial (and sweep) reads them back."""
    from cat_ray.config import build_config
    from cat_ray.data.sources import load_body, load_splits

    cfg = build_config(overrides={**SMALL, "train.iters_per_epoch": iters})
    load_body(cfg)
    load_splits(cfg)


def timed_sweep(space_file: Path, storage: Path, address: str | None = None):
    """Run the sweep; return (wall seconds, its trials' MLflow runs)."""
    from mlflow import MlflowClient

    from cat_ray.platform.sweep import plan_sweep, run_sweep
    from cat_ray.search_space import load_search_space

    plan = plan_sweep(load_search_space(space_file), None, storage)
    start = time.perf_counter()
    result = run_sweep(plan, address=address)
    wall = time.perf_counter() - start
    client = MlflowClient(result.uri)
    runs = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    if len(finished) != plan.space.search.num_samples:
        raise SystemExit(f"{space_file.name}: {len(finished)} of {plan.space.search.num_samples} trials finished")
    return wall, finished


def training_seconds(run) -> float:
    from mlflow import MlflowClient

    history = MlflowClient().get_metric_history(run.info.run_id, "epoch_time_s")
    return sum(m.value for m in history)


def overhead(workers: int, trials: int, iters: int, root: Path) -> float:
    """Seconds per trial outside training, for trials of ``workers`` DDP ranks, on a fresh local Ray."""
    import ray

    from cat_ray.platform.trainer import init_ray

    start = time.perf_counter()
    init_ray(address="local", num_cpus=2)
    print(f"  local Ray started in {time.perf_counter() - start:.1f} s (once per sweep; not counted per trial)")
    try:
        space = write_space(root, f"overhead-w{workers}", trials, workers, 1, iters)
        wall, runs = timed_sweep(space, root / "ray")
    finally:
        ray.shutdown()
    train = [training_seconds(r) for r in runs]
    per_trial = (wall - sum(train)) / trials
    print(f"  {workers} worker(s): {trials} trials in {wall:.1f} s; training {sum(train):.1f} s "
          f"({min(train):.2f}-{max(train):.2f} s a trial); outside training {per_trial:.2f} s a trial", flush=True)
    return per_trial


def sweep_on_nodes(nodes: int, trials: int, iters: int, root: Path) -> tuple[float, int]:
    """Wall seconds of a sweep of one-CPU trials on ``nodes`` one-CPU Ray nodes, and the nodes its trials used."""
    import ray
    from ray.cluster_utils import Cluster

    from cat_ray.platform import tracking

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        space = write_space(root, f"scaling-n{nodes}", trials, 1, nodes, iters)
        wall, runs = timed_sweep(space, root / "ray", address=cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()
    used = {node for r in runs for node in r.data.tags.get(tracking.NODES_TAG, "").split(",") if node}
    train = sum(training_seconds(r) for r in runs)
    print(f"  {nodes} node(s): {trials} trials in {wall:.1f} s (training {train:.1f} s in all), "
          f"on {len(used)} distinct node(s)", flush=True)
    return wall, len(used)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4, help="trials per overhead sweep (default 4)")
    parser.add_argument("--workers", default="1,2", help="DDP workers per trial to measure (default 1,2)")
    parser.add_argument("--iters", type=int, default=10, help="iterations per epoch in overhead trials (default 10)")
    parser.add_argument("--scaling-trials", type=int, default=8, help="trials per scaling sweep (default 8)")
    parser.add_argument("--scaling-iters", type=int, default=300,
                        help="iterations per epoch in scaling trials (default 300: about 15 s of training a trial)")
    parser.add_argument("--skip-scaling", action="store_true", help="measure the overhead only")
    parser.add_argument("--skip-overhead", action="store_true", help="measure the scaling only")
    args = parser.parse_args()
    print(machine_line(torch.device("cpu")), flush=True)

    with tempfile.TemporaryDirectory(prefix="cat-ray-bench-sweep-") as tmp:
        root = Path(tmp)
        # The benchmark's own store and data cache (the environment reaches Ray's workers); the
        # synthetic data and the stand-in body are generated by the first trial and read back after.
        os.environ["CAT_RAY_CACHE"] = str(root / "cache")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        os.environ.pop("RAY_ADDRESS", None)
        from cat_ray.platform import tracking

        tracking.prepare_store(os.environ["MLFLOW_TRACKING_URI"])
        warm_cache(args.iters)

        if not args.skip_overhead:
            print(f"\nOverhead: {args.trials} trials a sweep, one at a time, on a local Ray of 2 CPUs", flush=True)
        figures = {} if args.skip_overhead else {
            w: overhead(w, args.trials, args.iters, root) for w in (int(x) for x in args.workers.split(","))}

        if not args.skip_scaling:
            print(f"\nScaling: {args.scaling_trials} one-CPU trials on 1 node, then on 2 nodes (1 CPU each)", flush=True)
            one, _ = sweep_on_nodes(1, args.scaling_trials, args.scaling_iters, root)
            two, used = sweep_on_nodes(2, args.scaling_trials, args.scaling_iters, root)

    print()
    for workers, seconds in figures.items():
        print(goal_line(f"seconds per trial outside training, {workers} worker(s)", seconds, "< 5 s", seconds < 5))
    if not args.skip_scaling:
        ratio = one / two
        print(goal_line(f"2-node sweep speed-up over 1 node (1-node {one:.1f} s / 2-node {two:.1f} s, "
                        f"trials on {used} nodes)", ratio, ">= 1.7", ratio >= 1.7))


if __name__ == "__main__":
    main()
