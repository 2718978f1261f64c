"""The generator G / Ga: HMR/SPIN's iterative regressor from a feature to SMPL pose, shape and camera."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cat_ray.models.predictors import Dropout
from cat_ray.rotations import rot6d_to_rotmat

NUM_JOINTS = 24
POSE_6D = NUM_JOINTS * 6  # 144
NUM_BETAS = 10
NUM_CAM = 3  # weak perspective (s, tx, ty)


@dataclass
class SMPLParams:
    """Predicted body parameters; leading dims are whatever the input had (e.g. (B, T) or (D, B, T))."""

    rotmat: Tensor  # (..., 24, 3, 3)
    betas: Tensor  # (..., 10)
    cam: Tensor  # (..., 3)


@dataclass(frozen=True)
class MeanParams:
    """The regressor's starting point (VIBE's smpl_mean_params.npz): 6D pose (144), betas (10), camera (3)."""

    pose6d: Tensor
    betas: Tensor
    cam: Tensor

    @staticmethod
    def neutral() -> "MeanParams":
        identity6d = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).repeat(NUM_JOINTS)  # first two columns of I
        return MeanParams(identity6d, torch.zeros(NUM_BETAS), torch.tensor([0.9, 0.0, 0.0]))


class Regressor(nn.Module):
    """feature + current estimate (157) -> FC 1024 -> FC 1024 -> residual update, iterated (HMR Sec. 3.2)."""

    def __init__(self, feature_dim: int, hidden: int, iterations: int, mean: MeanParams, dropout: float = 0.5):
        super().__init__()
        self.iterations = iterations
        state = POSE_6D + NUM_BETAS + NUM_CAM
        self.fc1 = nn.Linear(feature_dim + state, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.drop = Dropout(dropout)  # nn.Dropout's distribution, a mask drawn 2x faster on CPU
        self.dec_pose = nn.Linear(hidden, POSE_6D)
        self.dec_shape = nn.Linear(hidden, NUM_BETAS)
        self.dec_cam = nn.Linear(hidden, NUM_CAM)
        for layer in (self.dec_pose, self.dec_shape, self.dec_cam):
            nn.init.xavier_uniform_(layer.weight, gain=0.01)  # small first updates, as SPIN/VIBE
        self.register_buffer("init_pose", mean.pose6d.float().clone())
        self.register_buffer("init_shape", mean.betas.float().clone())
        self.register_buffer("init_cam", mean.cam.float().clone())

    def forward(self, features: Tensor) -> SMPLParams:
        """features (..., C) -> SMPLParams with rotmat (..., 24, 3, 3)."""
        lead = features.shape[:-1]
        x = features.reshape(-1, features.shape[-1])  # (N, C)
        N = x.shape[0]
        pose = self.init_pose.expand(N, -1)
        shape = self.init_shape.expand(N, -1)
        cam = self.init_cam.expand(N, -1)
        # fc1(cat[x, state]) = x W_x + state W_s + b: the feature's part is the same in every iteration.
        C = x.shape[1]
        from_feature = nn.functional.linear(x, self.fc1.weight[:, :C], self.fc1.bias)
        for _ in range(self.iterations):
            h = self.drop(from_feature + nn.functional.linear(torch.cat([pose, shape, cam], dim=1), self.fc1.weight[:, C:]))
            h = self.drop(self.fc2(h))
            pose = pose + self.dec_pose(h)
            shape = shape + self.dec_shape(h)
            cam = cam + self.dec_cam(h)
        rotmat = rot6d_to_rotmat(pose.reshape(N, NUM_JOINTS, 6))  # (N, 24, 3, 3)
        return SMPLParams(rotmat.reshape(*lead, NUM_JOINTS, 3, 3), shape.reshape(*lead, NUM_BETAS), cam.reshape(*lead, NUM_CAM))
