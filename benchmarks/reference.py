"""A straightforward reference of the confidence-aware model's training step, written apart from cat_ray.

What the optimised code is measured and checked against (issue 7, item 3): one ``nn.Sequential``
per offset P_d run in a Python loop, the variance estimator as a separate MLP with explicit W0 and
W1 layers (Eq. 9-10), the joints of every body from smplx's full forward pass and the H36M joint
regressor, float32 throughout. The loss is Eq. 20 with Eq. 3-5 and 16 written out again here. Only
the iterative regressor (G, Ga) is shared with cat_ray: it is not an optimisation target.

``benchmarks/train_step.py`` times it; ``tests/test_fast_paths.py`` checks that cat_ray's training
loss equals it for the same weights.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from cat_ray.body.model import PELVIS_J14, BodyModel
from cat_ray.config import LossConfig
from cat_ray.data.types import Batch
from cat_ray.models.model import TemporalModel
from cat_ray.models.regressor import MeanParams, Regressor, SMPLParams
from cat_ray.rotations import axis_angle_to_rotmat


class ReferenceVariance(nn.Module):
    """Ve: s = FC(ReLU(FC(W0 f^p + W1 f_t))), the three linear maps applied one after the other."""

    def __init__(self, feature_dim: int, hidden: int):
        super().__init__()
        self.w_pred = nn.Linear(feature_dim, feature_dim)  # W0
        self.w_target = nn.Linear(feature_dim, feature_dim, bias=False)  # W1
        self.head = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, predicted: Tensor, frame: Tensor) -> Tensor:
        return self.head(self.w_pred(predicted) + self.w_target(frame)).squeeze(-1)


class ReferenceModel(nn.Module):
    """The confidence-aware model, one module per offset, one offset at a time."""

    def __init__(self, offsets: tuple[int, ...], feature_dim: int, predictor_hidden: int, dropout: float,
                 variance_hidden: int, regressor_hidden: int, regressor_iterations: int, mean: MeanParams,
                 regressor_dropout: float = 0.5):
        super().__init__()
        self.offsets = tuple(offsets)
        C, H = feature_dim, predictor_hidden
        self.predictors = nn.ModuleList(
            nn.Sequential(nn.Linear(C, H), nn.ReLU(), nn.Dropout(dropout), nn.Linear(H, H), nn.ReLU(),
                          nn.Dropout(dropout), nn.Linear(H, C))
            for _ in self.offsets)
        self.variance = ReferenceVariance(C, variance_hidden)
        self.generator = Regressor(C, regressor_hidden, regressor_iterations, mean, regressor_dropout)
        self.final_generator = Regressor(C, regressor_hidden, regressor_iterations, mean, regressor_dropout)

    def forward(self, frames: Tensor) -> tuple[list[SMPLParams], list[Tensor], SMPLParams]:
        """frames (B, T, C) -> per-offset predictions, per-offset log variances (B, T), final prediction."""
        T = frames.shape[1]
        per_offset, log_vars, features = [], [], []
        for d, predictor in zip(self.offsets, self.predictors):
            source = [min(max(t + d, 0), T - 1) for t in range(T)]  # replicate the window's edge frames
            shifted = frames[:, source]
            predicted = shifted + predictor(shifted)  # Eq. 6
            log_vars.append(self.variance(predicted, frames))  # Eq. 9-10
            per_offset.append(self.generator(predicted))
            features.append(predicted)
        # Eq. 17-18 on stopped gradients (Eq. 20): the final loss trains Ga only.
        weights = torch.softmax(-torch.stack(log_vars).detach(), dim=0)
        refined = sum(w[..., None] * f.detach() for w, f in zip(weights, features))
        return per_offset, log_vars, self.final_generator(refined)

    @torch.no_grad()
    def load_from(self, model: TemporalModel) -> None:
        """Copy the weights of a confidence-aware ``TemporalModel`` (same sizes) into this reference."""
        assert model.offsets == self.offsets
        for d, predictor in enumerate(self.predictors):
            for layer, batched in zip((predictor[0], predictor[3], predictor[6]),
                                      (model.predictors.fc1, model.predictors.fc2, model.predictors.fc3)):
                layer.weight.copy_(batched.weight[d].T)
                layer.bias.copy_(batched.bias[d, 0])
        self.variance.load_state_dict(model.variance.state_dict())
        self.generator.load_state_dict(model.generator.state_dict())
        self.final_generator.load_state_dict(model.final_generator.state_dict())


def smplx_joints14(body: BodyModel, rotmat: Tensor, betas: Tensor) -> Tensor:
    """(N, 24, 3, 3), (N, 10) -> (N, 14, 3): smplx's mesh, then the H36M regressor rows."""
    out = body.smpl(betas=betas, global_orient=rotmat[:, :1], body_pose=rotmat[:, 1:], pose2rot=False)
    return torch.einsum("jv,nvc->njc", body.j_regressor14, out.vertices)


def reference_error(pred: SMPLParams, batch: Batch, target_rot: Tensor, body: BodyModel, w: LossConfig) -> Tensor:
    """Eq. 5 per frame (B, T): each term a mean squared error, switched by its indicator (Eq. 3)."""
    B, T = batch.shape.shape[:2]
    joints = smplx_joints14(body, pred.rotmat.reshape(-1, 24, 3, 3), pred.betas.reshape(-1, 10)).reshape(B, T, 14, 3)
    pelvis = list(PELVIS_J14)
    centred = joints - joints[..., pelvis, :].mean(-2, keepdim=True)
    truth = batch.joints3d - batch.joints3d[..., pelvis, :].mean(-2, keepdim=True)
    joints2d = pred.cam[..., None, :1] * (joints[..., :2] + pred.cam[..., None, 1:])  # weak perspective
    has_smpl, has_3d, has_2d = (flag.float()[:, None] for flag in (batch.has_smpl, batch.has_3d, batch.has_2d))
    return (w.w_3d * has_3d * ((centred - truth) ** 2).mean((-1, -2))
            + w.w_2d * has_2d * ((joints2d - batch.joints2d) ** 2).mean((-1, -2))
            + w.w_theta * has_smpl * ((pred.rotmat - target_rot) ** 2).mean((-1, -2, -3))
            + w.w_beta * has_smpl * ((pred.betas - batch.shape) ** 2).mean(-1))


def reference_loss(model: ReferenceModel, batch: Batch, body: BodyModel, weights: LossConfig) -> Tensor:
    """Eq. 20 with the replicate edge policy: (1/T) sum_t sum_d L^kl_{t,t+d} + (1/T) sum_t ||Theta* - Theta~||^2,
    averaged over the batch; L^kl = e / exp(s) + s (Eq. 16)."""
    B, T = batch.shape.shape[:2]
    target_rot = axis_angle_to_rotmat(batch.pose.reshape(B, T, 24, 3))
    per_offset, log_vars, final = model(batch.features)
    total = reference_error(final, batch, target_rot, body, weights).sum()
    for pred, log_var in zip(per_offset, log_vars):
        total = total + (reference_error(pred, batch, target_rot, body, weights) * torch.exp(-log_var) + log_var).sum()
    return total / (B * T)
