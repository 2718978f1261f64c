"""Evaluation metrics, numerically as VIBE computes them (NumPy, float64).

Sources: mkocabas/VIBE ``lib/utils/eval_utils.py`` (``compute_error_accel``,
``compute_error_verts``, ``compute_similarity_transform``) and ``lib/core/evaluate.py``
(pelvis centring, MPJPE, PA-MPJPE, PVE and acceleration error in mm). Inputs are in metres;
every error is returned in millimetres (VIBE's ``m2mm = 1000``). Joints are the 14 LSP
evaluation joints; the pelvis is the mean of joints 2 and 3 (the hips).

One deliberate difference: ``evaluate_sequences`` computes the acceleration error within each
video, whereas VIBE's ``evaluate.py`` runs it over all test frames concatenated, so 2 frames at
each video boundary mix two videos.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

M2MM = 1000.0
PELVIS_JOINTS = (2, 3)  # the hips in LSP-14 order (VIBE's align_by_pelvis)


def _as_float(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _check_same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: prediction and ground truth shapes differ: {a.shape} vs {b.shape}")


def compute_similarity_transform_batch(S1: np.ndarray, S2: np.ndarray) -> np.ndarray:
    """Procrustes-align each S1[n] (N, J, 3) to S2[n] (N, J, 3); returns S1_hat (N, J, 3).

    Solves min_{s,R,t} |s R S1 + t - S2|_F per frame (orthogonal Procrustes with scale):
    X_i = S_i - mean(S_i); K = X1^T X2 (3x3); U S V^T = svd(K); Z = diag(1, 1, sign det(U V^T));
    R = V Z U^T; s = tr(R K) / |X1|_F^2; t = mu2 - s R mu1; S1_hat = s R S1 + t.
    Vectorised over frames; same steps, in the same order, as VIBE's per-frame loop.
    """
    S1, S2 = _as_float(S1), _as_float(S2)
    _check_same_shape(S1, S2, "similarity transform")
    mu1 = S1.mean(axis=1, keepdims=True)  # (N, 1, 3)
    mu2 = S2.mean(axis=1, keepdims=True)
    X1, X2 = S1 - mu1, S2 - mu2
    var1 = np.sum(X1**2, axis=(1, 2))  # (N,)
    K = np.einsum("nji,njk->nik", X1, X2)  # (N, 3, 3): VIBE's X1.dot(X2.T) in its 3 x J layout
    U, _, Vh = np.linalg.svd(K)
    V = np.swapaxes(Vh, 1, 2)
    # Z flips the last singular direction where needed so that det(R) = +1 (no reflections).
    Z = np.broadcast_to(np.eye(3), K.shape).copy()
    Z[:, -1, -1] *= np.sign(np.linalg.det(U @ np.swapaxes(V, 1, 2)))
    R = V @ (Z @ np.swapaxes(U, 1, 2))
    scale = np.trace(R @ K, axis1=1, axis2=2) / var1  # (N,)
    t = np.swapaxes(mu2, 1, 2) - scale[:, None, None] * (R @ np.swapaxes(mu1, 1, 2))  # (N, 3, 1)
    S1_hat = scale[:, None, None] * (R @ np.swapaxes(S1, 1, 2)) + t  # (N, 3, J)
    return np.swapaxes(S1_hat, 1, 2)


def compute_similarity_transform(S1: np.ndarray, S2: np.ndarray) -> np.ndarray:
    """Procrustes-align one point set S1 (J, 3) to S2 (J, 3); returns S1_hat (J, 3).

    See ``compute_similarity_transform_batch`` for the formula. Unlike VIBE, the (J, 3) layout
    is fixed rather than guessed from the shape (VIBE's guess misreads J = 3 joints).
    """
    return compute_similarity_transform_batch(_as_float(S1)[None], _as_float(S2)[None])[0]


def center_on_pelvis(joints: np.ndarray) -> np.ndarray:
    """Subtract the pelvis, (joints[:, 2] + joints[:, 3]) / 2, from (N, 14, 3) joints."""
    joints = _as_float(joints)
    pelvis = joints[:, PELVIS_JOINTS, :].mean(axis=1, keepdims=True)  # (N, 1, 3)
    return joints - pelvis


def _mean_point_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean Euclidean distance over points: (N, P, 3) x 2 -> (N,), in the input's unit."""
    return np.sqrt(np.sum((a - b) ** 2, axis=-1)).mean(axis=-1)


def mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-frame MPJPE (N,) in mm: mean_j |(P_j - P_pelvis) - (G_j - G_pelvis)| * 1000.

    pred, gt: (N, 14, 3) in metres.
    """
    pred, gt = _as_float(pred), _as_float(gt)
    _check_same_shape(pred, gt, "mpjpe")
    return _mean_point_error(center_on_pelvis(pred), center_on_pelvis(gt)) * M2MM


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-frame PA-MPJPE (N,) in mm: mean_j |(s R P_j + t) - G_j| * 1000 after pelvis centring.

    (s, R, t) is the Procrustes fit of the centred prediction to the centred ground truth.
    pred, gt: (N, 14, 3) in metres.
    """
    pred, gt = _as_float(pred), _as_float(gt)
    _check_same_shape(pred, gt, "pa_mpjpe")
    pred_c, gt_c = center_on_pelvis(pred), center_on_pelvis(gt)
    return _mean_point_error(compute_similarity_transform_batch(pred_c, gt_c), gt_c) * M2MM


def pve(pred_verts: np.ndarray, gt_verts: np.ndarray) -> np.ndarray:
    """Per-frame vertex error (N,) in mm: mean_v |P_v - G_v| * 1000, with no alignment.

    As VIBE's ``compute_error_verts``. pred_verts, gt_verts: (N, V, 3) in metres.
    """
    pred_verts, gt_verts = _as_float(pred_verts), _as_float(gt_verts)
    _check_same_shape(pred_verts, gt_verts, "pve")
    return _mean_point_error(pred_verts, gt_verts) * M2MM


def accel_error(gt: np.ndarray, pred: np.ndarray, vis: np.ndarray | None = None) -> np.ndarray:
    """Per-frame acceleration error in mm/frame^2, as VIBE's ``compute_error_accel`` * 1000.

    a_i = X_{i-1} - 2 X_i + X_{i+1} (second finite difference, i = 1..N-2);
    error_i = mean_j |a_i(pred)_j - a_i(gt)_j| * 1000.
    gt, pred: (N, J, 3) in metres, one video in temporal order. vis: optional (N,) bool; an
    acceleration touching an invisible frame is dropped. Returns (N-2,) (fewer with vis).
    Note that the result is not translation-invariant per frame: VIBE evaluates it on
    pelvis-centred joints (``evaluate_sequences`` does the same).
    """
    gt, pred = _as_float(gt), _as_float(pred)
    _check_same_shape(pred, gt, "accel_error")
    accel_gt = gt[:-2] - 2 * gt[1:-1] + gt[2:]  # (N-2, J, 3)
    accel_pred = pred[:-2] - 2 * pred[1:-1] + pred[2:]
    normed = np.linalg.norm(accel_pred - accel_gt, axis=2)  # (N-2, J)
    if vis is None:
        keep = np.ones(len(normed), dtype=bool)
    else:
        invis = ~np.asarray(vis, dtype=bool)
        # a_i uses frames i, i+1, i+2 (0-based, i < N-2).
        keep = ~(invis[:-2] | invis[1:-1] | invis[2:])
    return normed[keep].mean(axis=1) * M2MM


def summarize(per_frame: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean of each per-frame array: {name: (N,)} -> {name: float}; an empty array gives nan."""
    return {k: float(np.mean(v)) if np.size(v) else float("nan") for k, v in per_frame.items()}


@dataclass(frozen=True)
class PoseMetrics:
    """Dataset-level errors in mm (accel_err in mm/frame^2), each a mean over frames."""

    mpjpe: float
    pa_mpjpe: float
    pve: float
    accel_err: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _video_segments(video_ids: np.ndarray) -> list[slice]:
    """Contiguous runs of equal ids -> slices; each video's frames must form one run."""
    ids = np.asarray(video_ids)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    if len(np.unique(ids[starts])) != len(starts):
        raise ValueError("video_ids: each video's frames must be contiguous and in temporal order")
    return [slice(int(s), int(e)) for s, e in zip(starts, ends)]


def evaluate_sequences(
    pred_j3d: np.ndarray,
    gt_j3d: np.ndarray,
    pred_verts: np.ndarray | None,
    gt_verts: np.ndarray | None,
    video_ids: np.ndarray,
) -> PoseMetrics:
    """All four metrics over a test set of concatenated videos, as VIBE's ``evaluate.py``.

    pred_j3d, gt_j3d: (N, 14, 3) m; pred_verts, gt_verts: (N, V, 3) m or None (pve = nan);
    video_ids: (N,) labels, each video's frames contiguous and in temporal order. MPJPE,
    PA-MPJPE and PVE are means over all N frames; the acceleration error is computed on
    pelvis-centred joints within each video (never across a boundary) and averaged over all its
    N - 2 * n_videos frames (videos shorter than 3 frames contribute none).
    """
    pred_j3d, gt_j3d = _as_float(pred_j3d), _as_float(gt_j3d)
    _check_same_shape(pred_j3d, gt_j3d, "evaluate_sequences")
    if len(video_ids) != len(gt_j3d):
        raise ValueError(f"video_ids: {len(video_ids)} labels for {len(gt_j3d)} frames")
    pred_c, gt_c = center_on_pelvis(pred_j3d), center_on_pelvis(gt_j3d)
    accel = [accel_error(gt_c[s], pred_c[s]) for s in _video_segments(video_ids)]
    has_verts = pred_verts is not None and gt_verts is not None
    means = summarize({
        "mpjpe": mpjpe(pred_j3d, gt_j3d),
        "pa_mpjpe": pa_mpjpe(pred_j3d, gt_j3d),
        "pve": pve(pred_verts, gt_verts) if has_verts else np.empty(0),
        "accel_err": np.concatenate([np.empty(0), *accel]),
    })
    return PoseMetrics(**means)
