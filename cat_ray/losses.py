"""Losses: the supervised loss with indicators and scaling (Eq. 3-5), the confidence-aware loss (Eq. 16), their sum (Eq. 20).

Each term of Eq. 4 is the mean squared error over its own elements (as VIBE averages each
term), so Eq. 5's ||S (.) Theta* - S (.) Theta^||^2 for one frame is
``sum_k 1_k w_k mean((x*_k - x^_k)^2)`` with k over theta (rotation matrices), beta, mesh,
3D joints (pelvis-centred) and 2D joints.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cat_ray.body.camera import project_weak_perspective
from cat_ray.body.model import PELVIS_J14, BodyModel
from cat_ray.config import LossConfig
from cat_ray.data.types import Batch
from cat_ray.models.model import ModelOutput
from cat_ray.models.regressor import SMPLParams
from cat_ray.rotations import axis_angle_to_rotmat


@dataclass
class Targets:
    """Ground truth of a batch in the model's terms; leading dims (B, T)."""

    rotmat: Tensor  # (B, T, 24, 3, 3)
    betas: Tensor  # (B, T, 10)
    joints3d: Tensor  # (B, T, 14, 3) pelvis-centred, metres
    joints2d: Tensor  # (B, T, 14, 2)
    vertices: Tensor | None  # (B, T, V, 3), only when the mesh term is on
    has_smpl: Tensor  # (B,) float 0/1 indicators of Eq. 3
    has_3d: Tensor
    has_2d: Tensor


@dataclass
class LossTerms:
    total: Tensor  # scalar, Eq. 20: both terms (each reaches its own modules: see TemporalModel.forward)
    per_offset: Tensor  # scalar, (1/T) sum_t sum_d L^kl_{t,t+d} (plain L_Theta per offset without a variance)
    final: Tensor  # scalar, (1/T) sum_t ||Theta*_t - Theta~_t||^2


def center_on_pelvis(joints: Tensor) -> Tensor:
    """(..., 14, 3) -> the same with the mid-hip point at the origin (VIBE's evaluation centring)."""
    first, last = PELVIS_J14
    assert last == first + 1, "the hips are adjacent in J14: a slice, no index tensor to copy to the device"
    pelvis = joints[..., first:last + 1, :].mean(-2, keepdim=True)
    return joints - pelvis


def make_targets(batch: Batch, body: BodyModel, with_mesh: bool) -> Targets:
    B, T = batch.pose.shape[:2]
    rotmat = axis_angle_to_rotmat(batch.pose.reshape(B, T, 24, 3))
    vertices = None
    if with_mesh:
        vertices = body.vertices(rotmat.reshape(-1, 24, 3, 3), batch.shape.reshape(-1, 10)).reshape(B, T, -1, 3)
    return Targets(
        rotmat=rotmat, betas=batch.shape, joints3d=center_on_pelvis(batch.joints3d), joints2d=batch.joints2d,
        vertices=vertices, has_smpl=batch.has_smpl.float(), has_3d=batch.has_3d.float(), has_2d=batch.has_2d.float(),
    )


def squared_error(pred: SMPLParams, target: Targets, body: BodyModel, weights: LossConfig) -> Tensor:
    """Eq. 5 per frame: ||S (.) (Theta* - Theta^)||^2 with the indicators of Eq. 3.

    ``pred`` has leading dims (..., B, T) (e.g. (D, B, T) for the per-offset predictions);
    ``target`` has (B, T) and broadcasts. Returns (..., B, T).
    """
    lead = pred.betas.shape[:-1]
    flat_rot = pred.rotmat.reshape(-1, 24, 3, 3)
    flat_betas = pred.betas.reshape(-1, 10)
    joints = body.joints14(flat_rot, flat_betas).reshape(*lead, 14, 3)  # no mesh needed for the joints
    per_sample = lambda flag: flag[:, None]  # (B,) -> (B, 1): broadcasts over T and any leading dims  # noqa: E731
    error = weights.w_3d * per_sample(target.has_3d) * (center_on_pelvis(joints) - target.joints3d).square().mean((-1, -2))
    joints2d = project_weak_perspective(joints, pred.cam)
    error = error + weights.w_2d * per_sample(target.has_2d) * (joints2d - target.joints2d).square().mean((-1, -2))
    smpl = per_sample(target.has_smpl)
    error = error + weights.w_theta * smpl * (pred.rotmat - target.rotmat).square().mean((-1, -2, -3))
    error = error + weights.w_beta * smpl * (pred.betas - target.betas).square().mean(-1)
    if weights.w_mesh > 0:
        assert target.vertices is not None, "make_targets(with_mesh=True) when w_mesh > 0"
        vertices = body.vertices(flat_rot, flat_betas).reshape(*lead, -1, 3)
        error = error + weights.w_mesh * smpl * (vertices - target.vertices).square().mean((-1, -2))
    return error


def confidence_loss(sq_error: Tensor, log_var: Tensor) -> Tensor:
    """Eq. 16: L^kl = ||Theta* - Theta^||^2 / exp(s) + s, elementwise over (D, B, T)."""
    return sq_error * torch.exp(-log_var) + log_var


def frame_mask(inside: Tensor | None, edge_policy: str, T: int, device: torch.device) -> Tensor:
    """(T,) float: frames that are scored. ``valid`` keeps only frames whose t+d all lie in the window."""
    if inside is None or edge_policy == "replicate":
        return torch.ones(T, device=device)
    return inside.all(0).float()


def total_loss(out: ModelOutput, target: Targets, body: BodyModel, weights: LossConfig, edge_policy: str) -> LossTerms:
    """Eq. 20: (1/T) sum_t sum_d L^kl_{t,t+d}  +  (1/T) sum_t ||Theta*_t - Theta~_t||^2, averaged over the batch."""
    B, T = target.betas.shape[:2]
    mask = frame_mask(out.inside, edge_policy, T, target.betas.device)  # (T,)
    norm = mask.sum() * B
    final = (squared_error(out.final, target, body, weights) * mask).sum() / norm
    if out.per_offset is None:
        return LossTerms(final, torch.zeros_like(final), final)
    offset_error = squared_error(out.per_offset, target, body, weights)  # (D, B, T)
    if out.log_var is not None:
        offset_error = confidence_loss(offset_error, out.log_var)
    per_offset = (offset_error.sum(0) * mask).sum() / norm
    return LossTerms(per_offset + final, per_offset, final)
