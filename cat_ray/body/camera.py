"""Weak-perspective camera (HMR/VIBE): 2D = s * (X[..., :2] + (tx, ty))."""
from __future__ import annotations

import torch


def project_weak_perspective(points: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """Project 3D points with a weak-perspective camera.

    points: (..., J, 3) metres; cam: (..., 3) = (s, tx, ty). Returns (..., J, 2) = s * (X_xy + t).
    """
    s = cam[..., None, 0:1]  # (..., 1, 1)
    t = cam[..., None, 1:3]  # (..., 1, 2)
    return s * (points[..., :2] + t)
