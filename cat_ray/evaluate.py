"""Evaluation of a model on a split: every frame predicted once, VIBE's metrics, mean aggregation weights."""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from cat_ray.body.model import BodyModel
from cat_ray.data.types import VideoSplit, gather_windows
from cat_ray.data.windows import eval_windows
from cat_ray.metrics import PoseMetrics, evaluate_sequences, mpjpe, pa_mpjpe
from cat_ray.models.model import TemporalModel
from cat_ray.models.predictors import gather_offsets
from cat_ray.rotations import axis_angle_to_rotmat

BODY_CHUNK = 2048  # bodies per body-model call: bounds memory of the mesh (V x 3 per body)


@dataclass
class SplitPrediction:
    """Ga's output for every frame of a split, in frame order."""

    rotmat: Tensor  # (N, 24, 3, 3)
    betas: Tensor  # (N, 10)
    cam: Tensor  # (N, 3)
    weights: Tensor | None  # (D, N) aggregation weight of each offset, where the aggregator has them
    offset_rotmat: Tensor | None = None  # (D, N, 24, 3, 3) G(f^p_{t,t+d}): each predictor P_d alone (Table IV)
    offset_betas: Tensor | None = None  # (D, N, 10)
    source_corrupted: Tensor | None = None  # (D, N) bool: the frame t+d that predicted frame t was blocked


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
    weights = offset_rotmat = offset_betas = source_corrupted = None
    if model.uses_predictors:
        offset_rotmat = split.features.new_zeros(len(model.offsets), N, 24, 3, 3)
        offset_betas = split.features.new_zeros(len(model.offsets), N, 10)
        source_corrupted = torch.zeros(len(model.offsets), N, dtype=torch.bool, device=split.features.device)
    for first in range(0, len(starts), batch_size):
        chunk = starts[first:first + batch_size]
        batch = gather_windows(split, chunk, seq_len)
        out = model(batch.features)
        frame = (chunk[:, None] + torch.arange(seq_len, device=chunk.device))[keep[first:first + batch_size]]
        mask = keep[first:first + batch_size]
        rotmat[frame] = out.final.rotmat[mask].float()
        betas[frame] = out.final.betas[mask].float()
        cam[frame] = out.final.cam[mask].float()
        if out.weights is not None:
            if weights is None:
                weights = split.features.new_zeros(out.weights.shape[0], N)
            weights[:, frame] = out.weights[:, mask].float()
        if out.per_offset is not None:
            offset_rotmat[:, frame] = out.per_offset.rotmat[:, mask].float()
            offset_betas[:, frame] = out.per_offset.betas[:, mask].float()
            blocked, _ = gather_offsets(batch.corrupted[..., None], model.offsets)  # (D, B, T, 1), as the model saw it
            source_corrupted[:, frame] = blocked[:, mask, 0]
    model.train(was_training)
    return SplitPrediction(rotmat, betas, cam, weights, offset_rotmat, offset_betas, source_corrupted)


def _in_chunks(fn, rotmat: Tensor, betas: Tensor) -> Tensor:
    return torch.cat([fn(rotmat[i:i + BODY_CHUNK], betas[i:i + BODY_CHUNK]) for i in range(0, len(betas), BODY_CHUNK)])


def video_ids(split: VideoSplit) -> np.ndarray:
    lengths = (split.video_start[1:] - split.video_start[:-1]).cpu().numpy()
    return np.repeat(np.arange(len(lengths)), lengths)


class GroundTruthMeshes:
    """Ground-truth vertices of a split, skinned once per (split, body model) and then reused.

    The validation split is evaluated every epoch and its ground truth never changes, so its
    meshes (PVE's reference, the costliest part of an evaluation) are computed on first use.
    Entries are keyed by the identity of the split and body objects, checked against the versions
    of the pose and shape tensors (an in-place edit recomputes), and dropped with the split.
    """

    def __init__(self):
        self._entries: dict[int, tuple[tuple, np.ndarray]] = {}

    def __call__(self, split: VideoSplit, body: BodyModel) -> np.ndarray:
        """(N, V, 3) float32 vertices of the split's ground-truth pose and shape."""
        key = id(split)
        stamp = (id(body), id(split.pose), split.pose._version, id(split.shape), split.shape._version)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == stamp:
            return entry[1]
        gt_rot = axis_angle_to_rotmat(split.pose.reshape(-1, 24, 3))
        verts = _in_chunks(body.vertices, gt_rot, split.shape).cpu().numpy()
        verts.setflags(write=False)  # shared by every later evaluation of the split
        if entry is None:
            weakref.finalize(split, self._entries.pop, key, None)  # id(split) may be reused once it is gone
        self._entries[key] = (stamp, verts)
        return verts

    def clear(self) -> None:
        self._entries.clear()


GROUND_TRUTH_MESHES = GroundTruthMeshes()


@dataclass
class FrameArrays:
    """What the metrics compare, per frame in metres (NumPy): predicted and ground-truth joints and meshes."""

    pred_j3d: np.ndarray  # (N, 14, 3)
    gt_j3d: np.ndarray  # (N, 14, 3)
    pred_verts: np.ndarray | None  # (N, V, 3), None without SMPL ground truth (no PVE)
    gt_verts: np.ndarray | None
    video_ids: np.ndarray  # (N,)

    def evaluate(self, frames: slice = slice(None)) -> PoseMetrics:
        """The four metrics over ``frames`` (all by default; one video's frames for per-video figures)."""
        verts = (None, None) if self.pred_verts is None else (self.pred_verts[frames], self.gt_verts[frames])
        return evaluate_sequences(self.pred_j3d[frames], self.gt_j3d[frames], *verts, self.video_ids[frames])


@torch.no_grad()
def frame_arrays(pred: SplitPrediction, split: VideoSplit, body: BodyModel, with_pve: bool = True) -> FrameArrays:
    """Joints (and meshes, where the split has SMPL ground truth) of a prediction and of the ground truth.

    The ground-truth meshes come from :data:`GROUND_TRUTH_MESHES` (computed once per split)."""
    pred_j3d = _in_chunks(body.joints14, pred.rotmat, pred.betas).cpu().numpy()
    pred_verts = gt_verts = None
    if with_pve and split.has_smpl:
        pred_verts = _in_chunks(body.vertices, pred.rotmat, pred.betas).cpu().numpy()
        gt_verts = GROUND_TRUTH_MESHES(split, body)
    return FrameArrays(pred_j3d, split.joints3d.cpu().numpy(), pred_verts, gt_verts, video_ids(split))


def evaluate_prediction(pred: SplitPrediction, split: VideoSplit, body: BodyModel, with_pve: bool = True) -> PoseMetrics:
    """MPJPE, PA-MPJPE, PVE (mm) and acceleration error (mm/frame^2) against the split's ground truth."""
    return frame_arrays(pred, split, body, with_pve).evaluate()


@torch.no_grad()
def per_offset_errors(pred: SplitPrediction, split: VideoSplit, body: BodyModel, offsets: tuple[int, ...]) -> dict[int, tuple[float, float]]:
    """MPJPE and PA-MPJPE (mm) of each predictor P_d alone, ``{d: (mpjpe, pa_mpjpe)}`` (the paper's Table IV)."""
    if pred.offset_rotmat is None:
        return {}
    gt = split.joints3d.cpu().numpy()
    errors = {}
    for d, rotmat, betas in zip(offsets, pred.offset_rotmat, pred.offset_betas):
        joints = _in_chunks(body.joints14, rotmat, betas).cpu().numpy()
        errors[d] = (float(mpjpe(joints, gt).mean()), float(pa_mpjpe(joints, gt).mean()))
    return errors


def weights_by_source(pred: SplitPrediction) -> dict[str, float]:
    """Mean aggregation weight of predictions made from blocked vs clean frames t+d.

    The mean weight per offset stays near 1/D when blocking hits every offset alike; this asks the
    paper's question directly: are predictions from corrupted frames trusted less?
    """
    if pred.weights is None or pred.source_corrupted is None or not pred.source_corrupted.any():
        return {}
    blocked = pred.source_corrupted
    return {"agg_weight_blocked_source": float(pred.weights[blocked].mean()),
            "agg_weight_clean_source": float(pred.weights[~blocked].mean())}


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
