"""One training run: loop, evaluation, checkpoints and per-epoch reports.

Runs alone (``cat-ray train``) or inside a Ray Train worker: when ``torch.distributed`` is
initialised, the model is wrapped in DDP and each rank draws its own share of the global batch.
Everything a run leaves is in ``run_dir``: ``config.yaml`` (the resolved config), ``metrics.json``
(rewritten atomically every epoch, so it survives a crash), ``checkpoints/last`` and ``best``
(written by :mod:`cat_ray.checkpoints`: once per epoch, in the background when no reporter waits).
"""
from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from cat_ray.body.model import BodyModel
from cat_ray.checkpoints import (
    CHECKPOINT_FILE, CheckpointWriter, detached_copy, link_checkpoint, linked_copy, remove_linked_copies,
    write_checkpoint, write_json_atomic, write_text_atomic,
)
from cat_ray.config import Config, ConfigError, config_yaml, format_offsets, load_config, save_config
from cat_ray.data.mixing import MixedWindowSampler
from cat_ray.data.sources import load_body, load_mean_params, load_splits
from cat_ray.evaluate import (
    aggregation_latency_ms, evaluate_prediction, mean_weights, per_offset_errors, predict_split, weights_by_source,
)
from cat_ray.losses import make_targets, total_loss
from cat_ray.models.aggregators import AGGREGATORS, effective_offsets
from cat_ray.models.model import TemporalModel, build_model
from cat_ray.provenance import run_provenance

Reporter = Callable[[int, dict[str, float], "Path | None"], None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the run stops instead of training on garbage."""


def weight_metric(offset: int) -> str:
    """MLflow/Tune metric name of an offset's mean aggregation weight: ``agg_weight_d-2``, ``agg_weight_d0``."""
    return f"agg_weight_d{offset}"


def reported_metric_names(cfg: Config) -> set[str]:
    """Every metric a run with ``cfg`` reports each epoch (search spaces are checked against it)."""
    names = {"epoch", "train_loss", "train_loss_offsets", "train_loss_final", "lr", "epoch_time_s",
             "val_mpjpe", "val_pa_mpjpe", "val_pve", "val_accel_err", "agg_latency_ms"}
    aggregator = AGGREGATORS[cfg.model.aggregator]
    offsets = effective_offsets(cfg.model.aggregator, cfg.model.offsets)
    if aggregator.has_weights:
        names |= {weight_metric(d) for d in offsets}
        corrupt = cfg.data.corruption
        if corrupt.mode != "none" and corrupt.ratio > 0:  # weights on predictions from blocked vs clean frames
            names |= {"agg_weight_blocked_source", "agg_weight_clean_source"}
    if aggregator.uses_predictors:  # each P_d alone through G (Table IV)
        names |= {f"val_mpjpe_d{d}" for d in offsets} | {f"val_pa_mpjpe_d{d}" for d in offsets}
    return names


@dataclass
class RunState:
    """What a checkpoint restores besides the modules: where the schedule stands and what it found."""

    epoch: int = 0
    step: int = 0
    best_pa_mpjpe: float = math.inf
    history: list[dict[str, float]] = field(default_factory=list)
    weight_trace: list[dict[str, float]] = field(default_factory=list)  # Fig. 7: {"step", "<d>": weight}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(None, "train.device", "cuda, but no GPU is visible to this process")
    if name == "cuda" and dist.is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _checkpoint_payload(model: TemporalModel, optimizer, scheduler, state: RunState,
                        sampler: MixedWindowSampler) -> dict:
    """Model, optimiser, scheduler, step and RNG state: enough to continue the run exactly where it stopped."""
    return {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "state": state.__dict__, "sampler": sampler.state_dict(), "torch_rng": torch.get_rng_state(),
    }


def find_resume_checkpoint(run_dir: Path) -> Path | None:
    """The last checkpoint a run in ``run_dir`` left, if any."""
    last = Path(run_dir) / "checkpoints" / "last"
    return last if (last / CHECKPOINT_FILE).is_file() else None


def load_trained_model(checkpoint: Path, device: torch.device | str = "cpu") -> tuple[TemporalModel, Config, BodyModel]:
    """A model from a checkpoint folder (or its checkpoint.pt) and the config it was trained with."""
    folder = Path(checkpoint)
    folder = folder if folder.is_dir() else folder.parent
    if not (folder / CHECKPOINT_FILE).is_file():
        raise FileNotFoundError(f"{folder}: no {CHECKPOINT_FILE} (expected a run's best/ or checkpoints/last folder)")
    cfg = load_config(folder / "config.yaml")
    body = load_body(cfg).to(device)
    model = build_model(cfg.model, cfg.data.feature_dim, load_mean_params(cfg)).to(device)
    payload = torch.load(folder / CHECKPOINT_FILE, map_location=device, weights_only=False)
    model.load_state_dict(payload["model"])
    return model.eval(), cfg, body


class _EpochLine:
    """Progress: a live step counter on a terminal, one line per epoch everywhere."""

    def __init__(self, enabled: bool, epochs: int, iters: int):
        self.enabled, self.epochs, self.iters = enabled, epochs, iters
        self.live = enabled and sys.stderr.isatty()

    def step(self, epoch: int, step: int) -> None:
        if self.live and (step % 10 == 0 or step == self.iters):
            print(f"\repoch {epoch}/{self.epochs}  step {step}/{self.iters}", end="", file=sys.stderr, flush=True)

    def epoch(self, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        if self.live:
            print("\r", end="", file=sys.stderr)
        print(f"epoch {int(metrics['epoch'])}/{self.epochs}  loss {metrics['train_loss']:.4g}  "
              f"val MPJPE {metrics['val_mpjpe']:.1f}  PA-MPJPE {metrics['val_pa_mpjpe']:.1f}  "
              f"PVE {metrics['val_pve']:.1f} mm  accel {metrics['val_accel_err']:.1f}  "
              f"lr {metrics['lr']:.2g}  ({metrics['epoch_time_s']:.1f} s)", file=sys.stderr, flush=True)


def train(cfg: Config, run_dir: Path, reporter: Reporter | None = None,
          resume_checkpoint: Path | None = None, progress: bool = True) -> dict[str, float]:
    """Train with ``cfg``'s schedule, evaluating on the validation split every epoch.

    ``reporter(epoch, metrics, checkpoint_dir)`` is called on every rank after each epoch;
    ``checkpoint_dir`` is a folder holding that epoch's checkpoint on rank 0 (hard links to
    ``checkpoints/last``, deleted when the reporter returns: copy what is to be kept), None elsewhere.
    Returns the last epoch's metrics.
    Raises TrainingDiverged on a NaN/inf loss.
    """
    run_dir = Path(run_dir)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if cfg.train.batch_size % world:
        raise ConfigError(None, "train.batch_size", f"a multiple of the number of workers ({world}); got {cfg.train.batch_size}")
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed * 1000 + rank)  # ranks differ in dropout; the global batch is the same size
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        write_json_atomic(run_dir / "provenance.json", run_provenance())  # commit, command, machine, versions
        remove_linked_copies(run_dir / "checkpoints")  # a reporter's or an upload's folder left by a crash

    body = load_body(cfg).to(device)
    splits = {name: split.to(device) for name, split in load_splits(cfg).items()}
    sampler = MixedWindowSampler.from_config(cfg.data, splits, seed=cfg.train.seed, rank=rank, world_size=world)
    model = build_model(cfg.model, cfg.data.feature_dim, load_mean_params(cfg)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.optim.lr_decay, patience=cfg.optim.lr_patience)
    state = RunState()
    if resume_checkpoint is not None:
        payload = torch.load(Path(resume_checkpoint) / CHECKPOINT_FILE, map_location=device, weights_only=False)
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        state = RunState(**payload["state"])
        sampler.load_state_dict(payload["sampler"])
        torch.set_rng_state(payload["torch_rng"])
    net = DistributedDataParallel(model) if world > 1 else model
    if cfg.train.compile:  # the step's forward only; validation and checkpoints use the eager `model` (same weights)
        net = torch.compile(net)
    with_mesh = cfg.loss.w_mesh > 0
    use_bf16 = cfg.train.precision == "bf16"  # autocast: matmuls in bf16, weights and loss in fp32
    line = _EpochLine(progress and rank == 0, cfg.train.epochs, cfg.train.iters_per_epoch)
    # Without a reporter nobody reads an epoch's checkpoint right away: it is written while the next epoch trains.
    writer = CheckpointWriter(background=reporter is None)
    config_text = config_yaml(cfg)
    metrics: dict[str, float] = state.history[-1] if state.history else {}
    try:
        for epoch in range(state.epoch + 1, cfg.train.epochs + 1):
            started = time.perf_counter()
            model.train()
            sums = torch.zeros(3, device=device)  # total, per-offset, final: summed on device, read once per epoch
            for step in range(1, cfg.train.iters_per_epoch + 1):
                batch = sampler.sample(cfg.train.batch_size)  # this rank's share of the global batch
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    out = net(batch.features)
                terms = total_loss(out, make_targets(batch, body, with_mesh), body, cfg.loss, cfg.model.edge_policy)
                optimizer.zero_grad(set_to_none=True)
                terms.total.backward()
                if cfg.train.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                optimizer.step()
                every = cfg.train.weight_trace_every
                if every and out.weights is not None and (state.step + 1) % every == 0:  # reads the weights: a sync, off by default
                    mean = out.weights.detach().float().mean((1, 2)).tolist()
                    state.weight_trace.append({"step": state.step + 1, **{str(d): w for d, w in zip(model.offsets, mean)}})
                sums += torch.stack([terms.total.detach(), terms.per_offset.detach(), terms.final.detach()]).float()
                state.step += 1
                line.step(epoch, step)
            if world > 1:
                dist.all_reduce(sums)
                sums /= world
            total, per_offset, final = (sums / cfg.train.iters_per_epoch).tolist()
            if not math.isfinite(total):
                raise TrainingDiverged(
                    f"epoch {epoch}: the training loss became {total} (per-offset {per_offset}, final {final}); "
                    f"try a lower optim.lr (now {optimizer.param_groups[0]['lr']:g}) or train.grad_clip > 0")
            scheduler.step(total)  # plateau decay on the training loss, as the paper

            metrics = {"epoch": float(epoch), "train_loss": total, "train_loss_offsets": per_offset,
                       "train_loss_final": final, "lr": optimizer.param_groups[0]["lr"]}
            metrics.update(_validate(model, splits["val"], body, cfg, device, rank, world))
            metrics["epoch_time_s"] = time.perf_counter() - started
            state.epoch = epoch
            state.history.append(metrics)
            checkpoint_dir = None
            if rank == 0:
                _persist_epoch(writer, run_dir, cfg, config_text, model, optimizer, scheduler, state, sampler, metrics)
                if reporter is not None:
                    checkpoint_dir = _reporter_folder(writer, run_dir)
            line.epoch(metrics)
            if reporter is not None:
                try:
                    reporter(epoch, metrics, checkpoint_dir)
                finally:
                    if checkpoint_dir is not None:  # the reporters copied what they keep
                        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        return metrics
    finally:
        writer.wait()  # the last epoch's files are on disk before train() returns or raises


def _validate(model: TemporalModel, split, body: BodyModel, cfg: Config, device: torch.device,
              rank: int, world: int) -> dict[str, float]:
    """Rank 0 evaluates; the other ranks receive the same numbers so that every rank reports alike."""
    result: list[dict[str, float] | None] = [None]
    if rank == 0:
        pred = predict_split(model, split, cfg.data.seq_len, cfg.train.eval_batch_size)
        found = {f"val_{k}": v for k, v in evaluate_prediction(pred, split, body).as_dict().items()}
        found.update({weight_metric(d): w for d, w in mean_weights(pred, model.offsets).items()})
        found.update(weights_by_source(pred))
        for d, (mpjpe, pa_mpjpe) in per_offset_errors(pred, split, body, model.offsets).items():
            found[f"val_mpjpe_d{d}"], found[f"val_pa_mpjpe_d{d}"] = mpjpe, pa_mpjpe
        found["agg_latency_ms"] = aggregation_latency_ms(model, cfg.data.feature_dim, device)
        result = [found]
    if world > 1:
        dist.broadcast_object_list(result, src=0)
    assert result[0] is not None
    return result[0]


def _persist_epoch(writer: CheckpointWriter, run_dir: Path, cfg: Config, config_text: str, model: TemporalModel,
                   optimizer, scheduler, state: RunState, sampler: MixedWindowSampler, metrics: dict[str, float]) -> None:
    """Write the last checkpoint, link it as the best one when the epoch improved, then metrics.json.

    In that order, so that metrics.json never reports an epoch whose checkpoint is not on disk. A
    background writer gets a copy of the state: training goes on changing the live tensors.
    """
    improved = metrics["val_pa_mpjpe"] < state.best_pa_mpjpe
    if improved:
        state.best_pa_mpjpe = metrics["val_pa_mpjpe"]
    payload = _checkpoint_payload(model, optimizer, scheduler, state, sampler)
    if writer.background:
        payload = detached_copy(payload)
    summary_text = json.dumps(_summary(cfg, model, state, metrics), indent=2)  # the history as of this epoch
    last, best = run_dir / "checkpoints" / "last", run_dir / "best"

    def job() -> None:
        write_checkpoint(last, payload, config_text)
        if improved:
            link_checkpoint(last, best)  # the same bytes: the next epoch replaces last by a new file
        write_text_atomic(run_dir / "metrics.json", summary_text)

    writer.submit(job)


def _reporter_folder(writer: CheckpointWriter, run_dir: Path) -> Path:
    """A folder with the epoch's checkpoint for the reporter (Ray copies it to its storage): links, no copy."""
    writer.wait()
    return linked_copy(run_dir / "checkpoints" / "last", "report-")


def _summary(cfg: Config, model: TemporalModel, state: RunState, metrics: dict[str, float]) -> dict:
    """metrics.json: the latest validation figures, the best PA-MPJPE and the whole history."""
    summary = {key.removeprefix("val_"): metrics[key] for key in ("val_mpjpe", "val_pa_mpjpe", "val_pve", "val_accel_err")}
    summary.update({
        "epoch": state.epoch, "best_pa_mpjpe": state.best_pa_mpjpe, "aggregator": cfg.model.aggregator,
        "offsets": format_offsets(model.offsets), "units": "mm (accel_err: mm/frame^2)",
        "agg_weights": {k.removeprefix("agg_weight_d"): v for k, v in metrics.items() if k.startswith("agg_weight_d")},
        "history": state.history, "weight_trace": state.weight_trace,
    })
    return summary
