"""Launch one training run: in the calling process, or data-parallel under a Ray Train ``TorchTrainer``.

Two paths, picked by :func:`run_training`:

- **In-process** (one worker: see :func:`runs_in_process`): ``train_loop.train`` runs in the calling
  process. Outside a sweep this needs no Ray at all; inside a Tune trial it reports each epoch with
  ``ray.tune.report`` and resumes from ``ray.tune.get_checkpoint()``. A one-GPU trial holds its GPU itself
  (Ray sets ``CUDA_VISIBLE_DEVICES`` for the trial process), so the paper profile's one-GPU trials pay no
  worker group either. Start-up cost: only the training's own (no extra process, no placement group);
  measured about 2 s per trial on top of training in a sweep here (benchmarks/sweep.py).
- **Ray Train** (several workers, or a GPU for ``cat-ray train`` outside a sweep, which may have to
  reach a GPU node of the cluster): a ``TorchTrainer`` with one worker actor per rank, DDP over
  gloo (CPU) or NCCL (GPU), each rank sampling its share of the global batch. Every rank calls
  ``ray.train.report`` each epoch (rank 0 with the checkpoint); a restarted worker group, a retried or
  a restored trial resumes from ``ray.train.get_checkpoint()`` because the Train run is named after the
  trial (no timestamp). Start-up cost: a Train controller, a placement group, one actor per worker,
  ``import torch`` in each and the process group: about 15 s per 2-worker trial on a 2-core machine,
  8-9 s of it Ray Train's own (benchmarks/sweep.py).

Only world rank 0 talks to MLflow (:class:`cat_ray.platform.tracking.EpochLogger`).
"""
from __future__ import annotations

import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable

from cat_ray.checkpoints import linked_copy
from cat_ray.config import Config
from cat_ray.platform.tracking import GPUS_TAG, LAUNCH_TAG, NODES_TAG, EpochLogger, TrackingTarget

DIVERGED_FILE = "diverged.txt"
Reporter = Callable[[int, dict[str, float], "Path | None"], None]


# --------------------------------------------------------------------------- Ray start-up


def _live_cluster_address() -> str | None:
    """The address in ``/tmp/ray/ray_current_cluster`` when a cluster answers there.

    A killed cluster leaves the file behind and ``ray.init()`` would follow it (PLATFORM.md).
    """
    marker = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    try:
        address = marker.read_text().strip()
        host, port = address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=1.0):
            return address
    except (OSError, ValueError):
        return None


def init_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Connect to ``address`` (or ``$RAY_ADDRESS``, or a live local cluster from ``ray start``), else start
    a private local instance. Idempotent.

    The dashboard is included: without its State API, trials stopped early leak their workers'
    placement groups (ray-project/ray#54305). ``ray start`` enables token authentication, so a driver
    joining the cluster found through ``ray start``'s marker file uses ``RAY_AUTH_MODE=token`` unless
    told otherwise; for an explicit address, ``RAY_AUTH_MODE`` is the user's (a token-mode driver
    cannot run actors on a cluster started without it).
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        address = _live_cluster_address()
        if address:
            os.environ.setdefault("RAY_AUTH_MODE", "token")
    if address and address != "local":
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=True, log_to_driver=True)


# --------------------------------------------------------------------------- reporters


def _chain(*reporters: Reporter | None) -> Reporter:
    """Call each reporter in turn (each copies what it keeps of the epoch's checkpoint folder)."""
    def report(epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        for reporter in reporters:
            if reporter is not None:
                reporter(epoch, metrics, checkpoint_dir)

    return report


# Ray logs INFO lines per saved checkpoint and per report, i.e. per epoch of every trial and rank:
# the progress table and the epoch lines say it already.
_CHECKPOINT_LOGGERS = ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage")


def _quiet_checkpoint_logs() -> None:
    for name in _CHECKPOINT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:  # Ray Train v2 also logs every rank's whole report dict; its logger is named by file path
        from ray.train.v2._internal.execution import context
    except ImportError:
        return
    context.logger.setLevel(logging.WARNING)


def _tune_reporter(epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
    from ray import tune

    _quiet_checkpoint_logs()
    checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir is not None else None
    tune.report({**metrics, "epoch": epoch}, checkpoint=checkpoint)


def _train_reporter(epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
    """Every rank reports; rank 0's checkpoint is copied into Ray Train's storage on Ray's upload thread.

    The copy (about 1.3 s per 0.95 GB on this disk) would otherwise hold the training each epoch; Ray
    uploads a private folder of hard links (the caller deletes its own at once) and deletes it when done.
    Ray Train then reports the epoch to Tune once its checkpoint is committed, in order.
    """
    import ray.train

    _quiet_checkpoint_logs()
    checkpoint = None
    if checkpoint_dir is not None:
        checkpoint = ray.train.Checkpoint.from_directory(str(linked_copy(checkpoint_dir, "upload-")))
    ray.train.report({**metrics, "epoch": epoch}, checkpoint=checkpoint,
                     checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC,
                     delete_local_checkpoint_after_upload=True)


def _placement() -> tuple[str, str]:
    """This process's Ray node id and the GPU ids Ray assigned to it ("-" for none)."""
    import ray

    gpus = ray.get_gpu_ids()
    return ray.get_runtime_context().get_node_id(), ",".join(str(g) for g in gpus) or "-"


def _set_placement_tags(tracking: TrackingTarget, launch: str, placements: list[tuple[str, str]]) -> None:
    """Where a trial ran, one entry per rank: its launch path, nodes and GPUs (evidence of multi-node runs)."""
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    tags = {LAUNCH_TAG: launch, NODES_TAG: ",".join(node for node, _ in placements),
            GPUS_TAG: ";".join(gpus for _, gpus in placements)}
    MlflowClient(tracking.uri).log_batch(tracking.run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def _restored_checkpoint(checkpoint: Any, scratch: Path) -> Path | None:
    """Copy a Ray checkpoint into ``scratch`` (the training loop reads it once at start)."""
    if checkpoint is None:
        return None
    return Path(checkpoint.to_directory(str(scratch)))


# --------------------------------------------------------------------------- in-process path


def fit_in_process(cfg: Config, run_dir: Path, tracking: TrackingTarget | None = None, in_tune: bool = False,
                   resume_checkpoint: Path | None = None, progress: bool = True) -> dict[str, float]:
    """Train in this process: no worker group. In a Tune trial, report to Tune and resume from its checkpoint."""
    from cat_ray import train_loop

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = EpochLogger(tracking) if tracking is not None else None
    resume = resume_checkpoint
    if in_tune:
        from ray import tune

        resume = _restored_checkpoint(tune.get_checkpoint(), run_dir / "resume")
        if tracking is not None:
            _set_placement_tags(tracking, "in-process", [_placement()])
    return _train_then_close(logger, lambda: train_loop.train(
        cfg, run_dir, reporter=_chain(logger, _tune_reporter if in_tune else None), resume_checkpoint=resume,
        progress=progress))


def _train_then_close(logger: Any, run: Callable[[], Any]) -> Any:
    """``run()``, then wait for the logger's last upload: the trial ends only once MLflow has its best checkpoint."""
    try:
        result = run()
    except BaseException:
        if logger is not None:
            logger.close(raise_errors=False)  # the training's error is the one to raise
        raise
    if logger is not None:
        logger.close()
    return result


# --------------------------------------------------------------------------- Ray Train path


class _BackgroundLogger:
    """Rank 0's :class:`EpochLogger`, opened on a thread: importing MLflow and starting its store take
    about 2 s in a fresh worker, which overlap with building the data and the model instead of
    delaying every rank (benchmarks/sweep.py). The first epoch's report waits for it; an MLflow error
    is raised there."""

    def __init__(self, tracking: TrackingTarget, placements: list[tuple[str, str]]):
        from concurrent.futures import ThreadPoolExecutor

        def open_logger() -> EpochLogger:
            _set_placement_tags(tracking, "ray-train", placements)
            return EpochLogger(tracking)

        pool = ThreadPoolExecutor(1, thread_name_prefix="cat-ray-mlflow")
        self._future = pool.submit(open_logger)
        pool.shutdown(wait=False)  # the thread ends with open_logger

    def __call__(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        self._future.result()(epoch, metrics, checkpoint_dir)

    def close(self, raise_errors: bool = True) -> None:
        try:
            logger = self._future.result()
        except Exception:
            if raise_errors:
                raise
            return
        logger.close(raise_errors)


def _worker_loop(loop_config: dict[str, Any]) -> None:
    """One rank of a TorchTrainer run (the process group is already up: gloo or NCCL)."""
    import ray.train
    import torch.distributed as dist

    from cat_ray import train_loop

    rank = ray.train.get_context().get_world_rank()
    tracking: TrackingTarget | None = loop_config["tracking"]
    run_dir = Path(loop_config["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    # Which node and GPUs each rank runs on, gathered to rank 0 and logged: evidence of a multi-node run.
    placements: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(placements, _placement())
    logger = _BackgroundLogger(tracking, placements) if rank == 0 and tracking is not None else None
    resume = _restored_checkpoint(ray.train.get_checkpoint(), run_dir / f"resume_rank{rank}")
    try:
        _train_then_close(logger, lambda: train_loop.train(
            loop_config["cfg"], run_dir, reporter=_chain(logger, _train_reporter), resume_checkpoint=resume,
            progress=loop_config["progress"]))
    except train_loop.TrainingDiverged as err:
        # A diverged run fails the same way on every retry: the workers end cleanly (no worker-group
        # restart) and rank 0 leaves the reason next to the run's checkpoints for the caller to raise.
        if rank == 0:
            marker = Path(loop_config["diverged_marker"])
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(err))


# Ray Train (v2) settings its controller passes on to the workers; a user's own values win.
RAY_TRAIN_ENV = {
    # The controller polls the worker group every 2 s by default, so a run's end (and a restart after a
    # failure) waits up to 2 s for the next poll: 0.2 s saves about 2 s per trial (benchmarks/sweep.py).
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    # Train's patched print() on the workers logs each line a second time, and the driver showed every
    # epoch line twice; plain print goes to the driver once.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}


def _tune_ray_train_env() -> None:
    for key, value in RAY_TRAIN_ENV.items():
        os.environ.setdefault(key, value)


def fit_with_ray_train(cfg: Config, run_dir: Path, workers: int, cpus_per_worker: float = 1, gpus_per_worker: float = 0,
                       storage_path: str | Path | None = None, name: str = "train", tracking: TrackingTarget | None = None,
                       max_failures: int = 2, in_tune: bool = False, progress: bool = False) -> dict[str, float]:
    """Train data-parallel under a ``TorchTrainer`` and return the last epoch's metrics (rank 0).

    ``progress``: rank 0 prints a line per epoch (for ``cat-ray train``; a sweep shows Tune's table).

    ``name`` must be stable (the trial id in a sweep): the run resumes from its latest checkpoint under
    ``storage_path/name``. ``storage_path`` must be a folder on shared storage (NFS) on a multi-node
    cluster. Worker failures restart the group from the checkpoint up to ``max_failures`` times; a
    diverged run is not retried and raises ``train_loop.TrainingDiverged``.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from cat_ray import train_loop

    init_ray()
    _tune_ray_train_env()
    callbacks = []
    if in_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    use_gpu = gpus_per_worker > 0
    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if use_gpu else {})}
    if _is_uri(storage_path):
        raise ValueError(f"storage_path must be a local or shared (NFS) folder; got {storage_path}")
    storage = Path(storage_path or Path(run_dir) / "ray_train").resolve()
    marker = storage / name / DIVERGED_FILE  # shared storage on a cluster: visible from rank 0's node
    marker.unlink(missing_ok=True)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"cfg": cfg, "run_dir": str(run_dir), "tracking": tracking, "diverged_marker": str(marker),
                           "progress": progress},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(storage), callbacks=callbacks,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1)),
    )
    result = trainer.fit()
    if marker.is_file():
        raise train_loop.TrainingDiverged(marker.read_text())
    return {k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}


def _is_uri(path: str | Path | None) -> bool:
    return isinstance(path, str) and "://" in path


# --------------------------------------------------------------------------- entry point


def runs_in_process(workers: int, gpus_per_worker: float, in_tune: bool) -> bool:
    """Whether a run of ``workers`` ranks trains in the calling process rather than under a TorchTrainer.

    One worker never needs a worker group in a sweep: the Tune trial process is given the worker's CPUs
    and GPUs itself (``trial_resources``). Outside a sweep a GPU run goes through Ray Train, which places
    the worker on a GPU node even when the calling process (a cluster's CPU head) has none.
    """
    return workers == 1 and (gpus_per_worker == 0 or in_tune)


def trial_resources(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> dict[str, float]:
    """What a Tune trial process itself reserves.

    An in-process trial holds its worker's CPUs and GPUs. A trial that launches a TorchTrainer holds no
    CPU itself (its workers reserve them), or 2-worker trials could never fit on 2 cores; Tune refuses
    an empty request, hence one byte of memory.
    """
    if runs_in_process(workers, gpus_per_worker, in_tune=True):
        return {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if gpus_per_worker > 0 else {})}
    return {"CPU": 0, "memory": 1}


def run_training(cfg: Config, run_dir: Path, workers: int = 1, cpus_per_worker: float = 1, gpus_per_worker: float = 0,
                 storage_path: str | Path | None = None, name: str = "train", tracking: TrackingTarget | None = None,
                 max_failures: int = 2, in_tune: bool = False, resume_checkpoint: Path | None = None,
                 progress: bool = True) -> dict[str, float]:
    """Train ``cfg`` into ``run_dir``: in this process for one CPU worker, under Ray Train otherwise.

    Returns the last epoch's metrics. ``tracking`` names the MLflow run rank 0 logs to; ``in_tune`` is
    set by the sweep's trials (report to Tune, resume from Tune's or Train's checkpoint).
    ``resume_checkpoint`` (a checkpoint folder) applies to the in-process path outside Tune; Ray Train
    runs resume from their own storage under ``storage_path/name``.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if runs_in_process(workers, gpus_per_worker, in_tune):
        return fit_in_process(cfg, run_dir, tracking=tracking, in_tune=in_tune, resume_checkpoint=resume_checkpoint,
                              progress=progress)
    return fit_with_ray_train(cfg, run_dir, workers, cpus_per_worker, gpus_per_worker, storage_path=storage_path,
                              name=name, tracking=tracking, max_failures=max_failures, in_tune=in_tune,
                              progress=progress and not in_tune)
