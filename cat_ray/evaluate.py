"""Evaluation of a model on a split: every frame predicted once, VIBE's metrics, mean aggregation weights."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from cat_ray.body.model import BodyModel
from cat_ray.data.types import VideoSplit, gather_windows
from cat_ray.data.windows import eval_windows
from cat_ray.metrics import PoseMetrics, evaluate_sequences
from cat_ray.models.model import TemporalModel
from cat_ray.rotations import axis_angle_to_rotmat

BODY_CHUNK = 2048  # bodies per body-model call: bounds memory of the mesh (V x 3 per body)


@dataclass
class SplitPrediction:
    """Ga's output for every frame of a split, in frame order."""

    rotmat: Tensor  # (N, 24, 3, 3)
    betas: Tensor  # (N, 10)
    cam: Tensor  # (N, 3)
    weights: Tensor | None  # (D, N) aggregation weight of each offset, where the aggregator has them


@torch.no_grad()
def predict_split(model: TemporalModel, split: VideoSplit, seq_len: int, batch_size: int) -> SplitPrediction:
    """Windows of ``seq_len`` that cover every frame exactly once (windows.eval_windows), frame t+d clamped
    into its window (the edge policy at evaluation time)."""
    was_training = model.training
    model.eval()
    starts, keep = eval_windows(split.video_start.cpu(), seq_len)
    starts, keep = starts.to(split.features.device), keep.to(split.features.device)
    N = split.num_frames
    rotmat = split.features.new_zeros(N, 24, 3, 3)
    betas = split.features.new_zeros(N, 10)
    cam = split.features.new_zeros(N, 3)
    weights = None
    for first in range(0, len(starts), batch_size):
        chunk = starts[first:first + batch_size]
        out = model(gather_windows(split, chunk, seq_len).features)
        frame = (chunk[:, None] + torch.arange(seq_len, device=chunk.device))[keep[first:first + batch_size]]
        mask = keep[first:first + batch_size]
        rotmat[frame] = out.final.rotmat[mask].float()
        betas[frame] = out.final.betas[mask].float()
        cam[frame] = out.final.cam[mask].float()
        if out.weights is not None:
            if weights is None:
                weights = split.features.new_zeros(out.weights.shape[0], N)
            weights[:, frame] = out.weights[:, mask].float()
    model.train(was_training)
    return SplitPrediction(rotmat, betas, cam, weights)


def _in_chunks(fn, rotmat: Tensor, betas: Tensor) -> Tensor:
    return torch.cat([fn(rotmat[i:i + BODY_CHUNK], betas[i:i + BODY_CHUNK]) for i in range(0, len(betas), BODY_CHUNK)])


def video_ids(split: VideoSplit) -> np.ndarray:
    lengths = (split.video_start[1:] - split.video_start[:-1]).cpu().numpy()
    return np.repeat(np.arange(len(lengths)), lengths)


@torch.no_grad()
def evaluate_prediction(pred: SplitPrediction, split: VideoSplit, body: BodyModel, with_pve: bool = True) -> PoseMetrics:
    """MPJPE, PA-MPJPE, PVE (mm) and acceleration error (mm/frame^2) against the split's ground truth."""
    pred_j3d = _in_chunks(body.joints14, pred.rotmat, pred.betas)
    pred_verts = gt_verts = None
    if with_pve and split.has_smpl:
        gt_rot = axis_angle_to_rotmat(split.pose.reshape(-1, 24, 3))
        pred_verts = _in_chunks(body.vertices, pred.rotmat, pred.betas).cpu().numpy()
        gt_verts = _in_chunks(body.vertices, gt_rot, split.shape).cpu().numpy()
    return evaluate_sequences(pred_j3d.cpu().numpy(), split.joints3d.cpu().numpy(), pred_verts, gt_verts, video_ids(split))


def mean_weights(pred: SplitPrediction, offsets: tuple[int, ...]) -> dict[int, float]:
    """Mean aggregation weight of each offset over all frames (the paper's Fig. 7 signal)."""
    if pred.weights is None:
        return {}
    return {d: float(w) for d, w in zip(offsets, pred.weights.mean(1).tolist())}


@torch.no_grad()
def aggregation_latency_ms(model: TemporalModel, feature_dim: int, device: torch.device, repeats: int = 5) -> float:
    """Median time to aggregate 32 frames (2 windows x 16), the paper's Sec. IV-I measurement."""
    was_training = model.training
    model.eval()
    frames = torch.randn(2, 16, feature_dim, device=device)
    times = []
    for i in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model.aggregate(frames)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:  # the first calls warm up allocators and kernels
            times.append(time.perf_counter() - start)
    model.train(was_training)
    return 1000.0 * float(np.median(times))
