"""Metrics: hand-checkable cases and equality with VIBE's own (loop-based) formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cat_ray.metrics import (
    PoseMetrics,
    accel_error,
    center_on_pelvis,
    compute_similarity_transform,
    compute_similarity_transform_batch,
    evaluate_sequences,
    mpjpe,
    pa_mpjpe,
    pve,
    summarize,
)


# --- Oracle: direct transcriptions of mkocabas/VIBE lib/utils/eval_utils.py (commit 2ba005c) ---------

def _vibe_compute_similarity_transform(S1, S2):
    """eval_utils.compute_similarity_transform, verbatim but for comments."""
    transposed = False
    if S1.shape[0] != 3 and S1.shape[0] != 2:
        S1 = S1.T
        S2 = S2.T
        transposed = True
    mu1 = S1.mean(axis=1, keepdims=True)
    mu2 = S2.mean(axis=1, keepdims=True)
    X1 = S1 - mu1
    X2 = S2 - mu2
    var1 = np.sum(X1**2)
    K = X1.dot(X2.T)
    U, s, Vh = np.linalg.svd(K)
    V = Vh.T
    Z = np.eye(U.shape[0])
    Z[-1, -1] *= np.sign(np.linalg.det(U.dot(V.T)))
    R = V.dot(Z.dot(U.T))
    scale = np.trace(R.dot(K)) / var1
    t = mu2 - scale * (R.dot(mu1))
    S1_hat = scale * R.dot(S1) + t
    if transposed:
        S1_hat = S1_hat.T
    return S1_hat


def _vibe_align_by_pelvis(joints):
    pelvis = (joints[2, :] + joints[3, :]) / 2.0
    return joints - np.expand_dims(pelvis, axis=0)


def _vibe_compute_errors(gt3ds, preds):
    """eval_utils.compute_errors: per-frame MPJPE and PA-MPJPE (metres)."""
    errors, errors_pa = [], []
    for gt3d, pred in zip(gt3ds, preds):
        gt3d = _vibe_align_by_pelvis(gt3d.reshape(-1, 3))
        pred3d = _vibe_align_by_pelvis(pred)
        errors.append(np.mean(np.sqrt(np.sum((gt3d - pred3d) ** 2, axis=1))))
        pred3d_sym = _vibe_compute_similarity_transform(pred3d, gt3d)
        errors_pa.append(np.mean(np.sqrt(np.sum((gt3d - pred3d_sym) ** 2, axis=1))))
    return np.array(errors), np.array(errors_pa)


def _vibe_compute_error_accel(joints_gt, joints_pred, vis=None):
    """eval_utils.compute_error_accel (metres)."""
    accel_gt = joints_gt[:-2] - 2 * joints_gt[1:-1] + joints_gt[2:]
    accel_pred = joints_pred[:-2] - 2 * joints_pred[1:-1] + joints_pred[2:]
    normed = np.linalg.norm(accel_pred - accel_gt, axis=2)
    if vis is None:
        new_vis = np.ones(len(normed), dtype=bool)
    else:
        invis = np.logical_not(vis)
        invis1 = np.roll(invis, -1)
        invis2 = np.roll(invis, -2)
        new_invis = np.logical_or(invis, np.logical_or(invis1, invis2))[:-2]
        new_vis = np.logical_not(new_invis)
    return np.mean(normed[new_vis], axis=1)


def _vibe_compute_error_verts(pred_verts, target_verts):
    """eval_utils.compute_error_verts with given target vertices (metres)."""
    error_per_vert = np.sqrt(np.sum((target_verts - pred_verts) ** 2, axis=2))
    return np.mean(error_per_vert, axis=1)


# --- Fixtures ---------------------------------------------------------------------------------------

@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _body(rng, n: int) -> np.ndarray:
    """(n, 14, 3) random joint sets of body size (metres)."""
    return rng.normal(scale=0.3, size=(n, 14, 3))


# --- Similarity transform ---------------------------------------------------------------------------

def test_similarity_transform_recovers_scale_rotation_translation(rng):
    S2 = _body(rng, 1)[0]
    R = Rotation.from_rotvec([0.3, -1.2, 0.8]).as_matrix()
    s, t = 1.7, np.array([0.5, -2.0, 3.0])
    S1 = (S2 - t) @ R / s  # so that s R S1 + t = S2 (points as rows)
    np.testing.assert_allclose(compute_similarity_transform(S1, S2), S2, atol=1e-12)


def test_similarity_transform_never_reflects(rng):
    # A mirrored copy cannot be matched exactly by a proper rotation.
    S2 = _body(rng, 1)[0]
    S1 = S2 * np.array([-1.0, 1.0, 1.0])
    assert np.abs(compute_similarity_transform(S1, S2) - S2).max() > 1e-3


def test_similarity_transform_equals_vibe_single_and_batched(rng):
    S1, S2 = _body(rng, 20), _body(rng, 20)
    expected = np.stack([_vibe_compute_similarity_transform(a, b) for a, b in zip(S1, S2)])
    np.testing.assert_allclose(compute_similarity_transform_batch(S1, S2), expected, rtol=0, atol=1e-14)
    np.testing.assert_allclose(compute_similarity_transform(S1[0], S2[0]), expected[0], rtol=0, atol=1e-14)


# --- MPJPE / PA-MPJPE -------------------------------------------------------------------------------

def test_center_on_pelvis_puts_hip_midpoint_at_origin(rng):
    centred = center_on_pelvis(_body(rng, 5) + 10.0)
    np.testing.assert_allclose((centred[:, 2] + centred[:, 3]) / 2, 0.0, atol=1e-12)


def test_rigid_scaled_copy_has_zero_pa_mpjpe_but_nonzero_mpjpe(rng):
    gt = _body(rng, 8)
    R = Rotation.from_rotvec([0.0, 0.9, 0.2]).as_matrix()
    pred = 1.3 * gt @ R.T + np.array([0.1, 0.2, 3.0])
    np.testing.assert_allclose(pa_mpjpe(pred, gt), 0.0, atol=1e-9)
    assert (mpjpe(pred, gt) > 10.0).all()


def test_uniform_offset_is_removed_by_pelvis_centring(rng):
    gt = _body(rng, 3)
    np.testing.assert_allclose(mpjpe(gt + np.array([0.5, -1.0, 2.0]), gt), 0.0, atol=1e-9)


def test_known_offset_of_non_pelvis_joints_gives_known_mpjpe(rng):
    # Hips (2, 3) stay put so the pelvis does not move; the other 12 joints move by 10 mm.
    gt = _body(rng, 4)
    direction = rng.normal(size=(4, 14, 3))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    offset = 0.010 * direction
    offset[:, [2, 3]] = 0.0
    np.testing.assert_allclose(mpjpe(gt + offset, gt), 10.0 * 12 / 14, rtol=1e-12)


def test_mpjpe_and_pa_mpjpe_equal_vibe_compute_errors(rng):
    gt = _body(rng, 30)
    pred = gt + rng.normal(scale=0.05, size=gt.shape)
    errors, errors_pa = _vibe_compute_errors(gt, pred)
    np.testing.assert_allclose(mpjpe(pred, gt), errors * 1000, rtol=1e-12)
    np.testing.assert_allclose(pa_mpjpe(pred, gt), errors_pa * 1000, rtol=1e-12)
    assert (pa_mpjpe(pred, gt) <= mpjpe(pred, gt) + 1e-9).all()


def test_shape_mismatch_is_a_clear_error(rng):
    with pytest.raises(ValueError, match="shapes differ"):
        mpjpe(_body(rng, 3), _body(rng, 4))


# --- PVE --------------------------------------------------------------------------------------------

def test_pve_of_known_per_vertex_offset(rng):
    gt = rng.normal(size=(3, 100, 3))
    offset = np.zeros_like(gt)
    offset[:, :50, 0] = 0.004  # half the vertices by 4 mm, half by 3 mm (a 3-4-5 triangle in y, z)
    offset[:, 50:, 1] = 0.0018
    offset[:, 50:, 2] = 0.0024
    np.testing.assert_allclose(pve(gt + offset, gt), 3.5, rtol=1e-9)
    # No centring: a uniform shift counts in full.
    np.testing.assert_allclose(pve(gt + np.array([0.0, 0.0, 0.02]), gt), 20.0, rtol=1e-9)


def test_pve_equals_vibe(rng):
    gt = rng.normal(size=(5, 200, 3))
    pred = gt + rng.normal(scale=0.02, size=gt.shape)
    np.testing.assert_allclose(pve(pred, gt), _vibe_compute_error_verts(pred, gt) * 1000, rtol=1e-12)


# --- Acceleration error -----------------------------------------------------------------------------

def test_constant_velocity_error_has_zero_accel_error(rng):
    gt = _body(rng, 1) + np.zeros((10, 1, 1))
    velocity = rng.normal(scale=0.01, size=(1, 14, 3))
    pred = gt + np.arange(10)[:, None, None] * velocity + 0.3  # offset + linear drift
    err = accel_error(gt, pred)
    assert err.shape == (8,)
    np.testing.assert_allclose(err, 0.0, atol=1e-9)


def test_known_acceleration_gives_known_accel_error(rng):
    # pred_t = gt_t + 0.5 a t^2 with |a| = 2 mm/frame^2 on every joint: second difference is a.
    gt = _body(rng, 1) + rng.normal(scale=0.01, size=(12, 1, 3)).cumsum(axis=0)
    a = np.array([0.0, 0.0012, 0.0016])  # |a| = 2 mm/frame^2
    t = np.arange(12)[:, None, None]
    pred = gt + 0.5 * a * t**2
    np.testing.assert_allclose(accel_error(gt, pred), 2.0, rtol=1e-9)


def test_accel_error_equals_vibe_with_and_without_visibility(rng):
    gt = _body(rng, 25)
    pred = gt + rng.normal(scale=0.03, size=gt.shape)
    vis = np.ones(25, dtype=bool)
    vis[[0, 7, 8, 24]] = False
    np.testing.assert_allclose(accel_error(gt, pred), _vibe_compute_error_accel(gt, pred) * 1000, rtol=1e-12)
    ours = accel_error(gt, pred, vis)
    np.testing.assert_allclose(ours, _vibe_compute_error_accel(gt, pred, vis) * 1000, rtol=1e-12)
    # a_i uses frames i..i+2: frame 0 drops a_0, frames 7-8 drop a_5..a_8, frame 24 drops a_22.
    assert ours.shape == (23 - 6,)


# --- Aggregation ------------------------------------------------------------------------------------

def test_summarize_takes_means():
    out = summarize({"mpjpe": np.array([1.0, 2.0, 6.0]), "pve": np.empty(0)})
    assert out["mpjpe"] == 3.0
    assert math.isnan(out["pve"])


def test_evaluate_sequences_equals_vibe_within_each_video(rng):
    lengths = [7, 10, 5]
    video_ids = np.repeat(["a", "b", "c"], lengths)
    gt = _body(rng, 22)
    pred = gt + rng.normal(scale=0.04, size=gt.shape)
    gt_v = rng.normal(size=(22, 50, 3))
    pred_v = gt_v + rng.normal(scale=0.01, size=gt_v.shape)

    metrics = evaluate_sequences(pred, gt, pred_v, gt_v, video_ids)

    errors, errors_pa = _vibe_compute_errors(gt, pred)
    # VIBE evaluate.py: accel error on pelvis-centred joints; here per video, then over all frames.
    gt_c = np.stack([_vibe_align_by_pelvis(j) for j in gt])
    pred_c = np.stack([_vibe_align_by_pelvis(j) for j in pred])
    bounds = np.cumsum([0, *lengths])
    accel = np.concatenate([_vibe_compute_error_accel(gt_c[s:e], pred_c[s:e]) for s, e in zip(bounds, bounds[1:])])
    assert accel.shape == (22 - 2 * 3,)
    expected = PoseMetrics(
        mpjpe=errors.mean() * 1000,
        pa_mpjpe=errors_pa.mean() * 1000,
        pve=_vibe_compute_error_verts(pred_v, gt_v).mean() * 1000,
        accel_err=accel.mean() * 1000,
    )
    for key, value in expected.as_dict().items():
        assert metrics.as_dict()[key] == pytest.approx(value, rel=1e-12), key
    assert set(metrics.as_dict()) == {"mpjpe", "pa_mpjpe", "pve", "accel_err"}


def test_evaluate_sequences_never_differentiates_across_a_video_boundary(rng):
    # Two perfectly predicted videos whose concatenation jumps: a cross-boundary second
    # difference would see the jump only in pred, so any leak shows as a non-zero error.
    gt = _body(rng, 1) + np.zeros((8, 1, 1))
    pred = gt.copy()
    pred[4:] = 1.2 * pred[4:]  # video 2 predicted at another scale: exact MPJPE offset, zero accel
    metrics = evaluate_sequences(pred, gt, None, None, np.array([0] * 4 + [1] * 4))
    assert metrics.accel_err == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(metrics.pve)
    assert metrics.mpjpe > 0


def test_evaluate_sequences_refuses_non_contiguous_videos(rng):
    gt = _body(rng, 6)
    with pytest.raises(ValueError, match="contiguous"):
        evaluate_sequences(gt, gt, None, None, np.array([0, 0, 1, 1, 0, 0]))
