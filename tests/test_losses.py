"""Eq. 3-5 (indicators and weights), Eq. 16 (confidence-aware loss), Eq. 20 (their sum) and the edge policy."""
from __future__ import annotations

import math

import pytest
import torch

from cat_ray.body.model import BodyModel
from cat_ray.config import LossConfig
from cat_ray.data.types import Batch
from cat_ray.losses import center_on_pelvis, confidence_loss, frame_mask, make_targets, squared_error, total_loss
from cat_ray.models.model import ModelOutput
from cat_ray.models.regressor import SMPLParams
from cat_ray.rotations import axis_angle_to_rotmat, rotmat_to_axis_angle
from cat_ray.body.camera import project_weak_perspective

B, T = 3, 4


@pytest.fixture(scope="module")
def body(body_dir) -> BodyModel:
    return BodyModel.from_dir(body_dir)


def truth_batch(body: BodyModel, has_smpl=(1, 1, 1), has_3d=(1, 1, 1), has_2d=(1, 1, 1)) -> tuple[Batch, SMPLParams]:
    """A batch whose ground truth is exactly what ``params`` predicts."""
    gen = torch.Generator().manual_seed(0)
    rotmat = axis_angle_to_rotmat(0.3 * torch.randn(B, T, 24, 3, generator=gen))
    betas = torch.randn(B, T, 10, generator=gen)
    cam = torch.tensor([0.9, 0.05, -0.02]).expand(B, T, 3)
    joints = body.joints14(rotmat.reshape(-1, 24, 3, 3), betas.reshape(-1, 10)).reshape(B, T, 14, 3)
    batch = Batch(
        features=torch.zeros(B, T, 8), pose=rotmat_to_axis_angle(rotmat).reshape(B, T, 72), shape=betas,
        joints3d=joints, joints2d=project_weak_perspective(joints, cam), corrupted=torch.zeros(B, T, dtype=torch.bool),
        has_smpl=torch.tensor(has_smpl, dtype=torch.bool), has_3d=torch.tensor(has_3d, dtype=torch.bool),
        has_2d=torch.tensor(has_2d, dtype=torch.bool))
    return batch, SMPLParams(rotmat, betas, cam)


def test_exact_prediction_has_zero_error(body):
    batch, params = truth_batch(body)
    error = squared_error(params, make_targets(batch, body, with_mesh=True), body, LossConfig(w_mesh=1.0))
    assert error.shape == (B, T)
    assert error.abs().max() < 1e-6


@pytest.mark.parametrize("term, weight_key, perturb", [
    ("betas", "w_beta", lambda p: SMPLParams(p.rotmat, p.betas + 0.1, p.cam)),
    ("cam", "w_2d", lambda p: SMPLParams(p.rotmat, p.betas, p.cam + torch.tensor([0.0, 0.1, 0.0]))),
])
def test_each_term_scales_with_its_weight(body, term, weight_key, perturb):
    batch, params = truth_batch(body)
    target = make_targets(batch, body, with_mesh=False)
    zero = LossConfig(w_theta=0, w_beta=0, w_mesh=0, w_3d=0, w_2d=0)
    one = squared_error(perturb(params), target, body, LossConfig(**{**zero.__dict__, weight_key: 1.0}))
    three = squared_error(perturb(params), target, body, LossConfig(**{**zero.__dict__, weight_key: 3.0}))
    assert one.min() > 0
    torch.testing.assert_close(three, 3 * one)


def test_indicators_switch_terms_off_per_sample(body):
    """Sample 0 has everything, sample 1 only 2D+3D joints (H36M-like), sample 2 only 2D (InstaVariety-like)."""
    batch, params = truth_batch(body, has_smpl=(1, 0, 0), has_3d=(1, 1, 0), has_2d=(1, 1, 1))
    target = make_targets(batch, body, with_mesh=False)
    wrong_betas = SMPLParams(params.rotmat, params.betas + 0.5, params.cam)  # changes shape, so joints too
    only_beta = LossConfig(w_theta=0, w_beta=2.0, w_mesh=0, w_3d=0, w_2d=0)
    error = squared_error(wrong_betas, target, body, only_beta)
    torch.testing.assert_close(error[0], torch.full((T,), 2.0 * 0.25))  # w_beta * mean((0.5)^2)
    assert error[1:].abs().max() == 0  # no SMPL ground truth: the beta term is off
    only_3d = LossConfig(w_theta=0, w_beta=0, w_mesh=0, w_3d=1.0, w_2d=0)
    error3d = squared_error(wrong_betas, target, body, only_3d)
    assert error3d[:2].min() > 0 and error3d[2].abs().max() == 0  # 2D-only sample: no 3D term


def test_3d_term_ignores_a_global_translation(body):
    batch, params = truth_batch(body)
    batch.joints3d = batch.joints3d + torch.tensor([0.3, -0.2, 5.0])  # the loss compares pelvis-centred joints
    error = squared_error(params, make_targets(batch, body, False), body, LossConfig(w_theta=0, w_beta=0, w_2d=0))
    assert error.abs().max() < 1e-8


def test_confidence_loss_is_the_gaussian_nll_of_eq16():
    sq, s = torch.tensor([4.0, 4.0, 0.0]), torch.tensor([0.0, math.log(4.0), -1.0])
    torch.testing.assert_close(confidence_loss(sq, s), torch.tensor([4.0, 1.0 + math.log(4.0), -1.0]))
    # For a fixed error, the loss is minimised at s = log(error): the estimated variance matches the error.
    s = torch.linspace(-3, 5, 2001)
    assert abs(s[confidence_loss(torch.tensor(4.0), s).argmin()].item() - math.log(4.0)) < 0.01


def test_total_loss_sums_offsets_and_averages_frames(body):
    batch, params = truth_batch(body)
    target = make_targets(batch, body, False)
    D = 2
    wrong = SMPLParams(params.rotmat, params.betas + 0.2, params.cam)
    per_offset = SMPLParams(*(x.expand(D, *x.shape) for x in (wrong.rotmat, wrong.betas, wrong.cam)))
    log_var = torch.zeros(D, B, T)
    out = ModelOutput(final=params, per_offset=per_offset, log_var=log_var, weights=None,
                      inside=torch.ones(D, T, dtype=torch.bool))
    weights = LossConfig()
    terms = total_loss(out, target, body, weights, "replicate")
    frame_error = squared_error(wrong, target, body, weights)  # (B, T); s = 0 makes L^kl the plain error
    torch.testing.assert_close(terms.per_offset, D * frame_error.mean())
    assert terms.final.abs() < 1e-6
    torch.testing.assert_close(terms.total, terms.per_offset + terms.final)


def test_valid_edge_policy_scores_only_frames_with_all_neighbours():
    inside = torch.tensor([[False, True, True, True], [True, True, True, False]])  # d = -1, +1 in T = 4
    assert frame_mask(inside, "valid", 4, torch.device("cpu")).tolist() == [0.0, 1.0, 1.0, 0.0]
    assert frame_mask(inside, "replicate", 4, torch.device("cpu")).tolist() == [1.0] * 4


def test_valid_policy_ignores_errors_at_the_window_edges(body):
    batch, params = truth_batch(body)
    target = make_targets(batch, body, False)
    betas = params.betas.clone()
    betas[:, 0] += 1.0  # a wrong first frame, which lacks its t-1 neighbour
    out = ModelOutput(SMPLParams(params.rotmat, betas, params.cam), None, None, None,
                      torch.tensor([[False, True, True, True], [True, True, True, True]]))
    out_cfg = LossConfig()
    assert total_loss(out, target, body, out_cfg, "valid").total.abs() < 1e-6
    assert total_loss(out, target, body, out_cfg, "replicate").total > 0


def test_center_on_pelvis_puts_mid_hips_at_origin():
    joints = torch.randn(5, 14, 3)
    centred = center_on_pelvis(joints)
    torch.testing.assert_close(centred[:, [2, 3]].mean(1), torch.zeros(5, 3))
