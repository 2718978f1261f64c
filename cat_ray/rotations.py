"""Rotation conversions between 6D, rotation matrices and axis-angle (torch, any leading shape).

The 6D layout is SPIN/VIBE's (``lib/utils/geometry.py``, Zhou et al. CVPR 2019): the six numbers
viewed as (3, 2) are the first two COLUMNS of the rotation matrix, i.e.
``x = (R00, R01, R10, R11, R20, R21)``, so VIBE's ``smpl_mean_params.npz`` pose reads unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Below this angle (rad) the Taylor expansions are exact to float64 precision.
_SMALL_ANGLE = 1e-4


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """6D rotation (..., 6) -> rotation matrix (..., 3, 3), as VIBE's ``rot6d_to_rotmat``.

    Gram-Schmidt on the two columns a1, a2: b1 = a1/|a1|, b2 = normalise(a2 - (b1.a2) b1),
    b3 = b1 x b2; R = [b1 b2 b3] (columns).
    """
    cols = x.reshape(*x.shape[:-1], 3, 2)  # (..., 3, 2): the two columns
    a1, a2 = cols[..., 0], cols[..., 1]
    # eps 1e-6 as VIBE, so degenerate inputs give the same (finite) result.
    b1 = F.normalize(a1, dim=-1, eps=1e-6)
    b2 = F.normalize(a2 - (b1 * a2).sum(dim=-1, keepdim=True) * b1, dim=-1, eps=1e-6)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)


def rotmat_to_rot6d(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (..., 3, 3) -> 6D (..., 6): the first two columns, row-major (R00, R01, R10, ...)."""
    return R[..., :, :2].reshape(*R.shape[:-2], 6)


def _skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrix [v]x, so that [v]x w = v x w."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack((zero, -z, y, z, zero, -x, -y, x, zero), dim=-1).reshape(*v.shape, 3)


def axis_angle_to_rotmat(aa: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) (axis * angle in rad) -> rotation matrix (..., 3, 3).

    Rodrigues: R = I + (sin t / t) K + ((1 - cos t) / t^2) K^2 with K = [aa]x and t = |aa|.
    Near t = 0 the coefficients use their Taylor series, so R and its gradient stay exact and
    finite (smplx's ``batch_rodrigues`` instead adds 1e-8 to aa before normalising).
    """
    K = _skew(aa)
    t2 = (aa * aa).sum(dim=-1)[..., None, None]  # (..., 1, 1)
    small = t2 < _SMALL_ANGLE**2
    t = torch.sqrt(torch.where(small, torch.ones_like(t2), t2))  # safe: never sqrt(0) in the used branch
    a = torch.where(small, 1.0 - t2 / 6.0, torch.sin(t) / t)
    b = torch.where(small, 0.5 - t2 / 24.0, (1.0 - torch.cos(t)) / t2.clamp_min(_SMALL_ANGLE**2))
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device)
    return eye + a * K + b * (K @ K)


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt(max(x, 0)) with a zero (not infinite) gradient where x <= 0."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def _rotmat_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (..., 3, 3) -> unit quaternion (..., 4) as (w, x, y, z) with w >= 0.

    Of the four algebraically equal formulas (one per largest diagonal term, Shepperd 1978) the
    one with the largest denominator is taken, which is stable for every angle including pi.
    """
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # The stacked terms are 4 q_i^2 for i = w, x, y, z.
    q_abs = _safe_sqrt(torch.stack((
        1.0 + m00 + m11 + m22,
        1.0 + m00 - m11 - m22,
        1.0 - m00 + m11 - m22,
        1.0 - m00 - m11 + m22,
    ), dim=-1))  # (..., 4): 2|q_i|
    # Row i is (2 q_i) * q: each row alone determines q up to the factor 2 q_i.
    candidates = torch.stack((
        torch.stack((q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01), dim=-1),
        torch.stack((m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20), dim=-1),
        torch.stack((m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21), dim=-1),
        torch.stack((m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2), dim=-1),
    ), dim=-2)  # (..., 4, 4)
    candidates = candidates / (2.0 * q_abs[..., None].clamp_min(0.1))
    best = q_abs.argmax(dim=-1)[..., None, None].expand(*q_abs.shape[:-1], 1, 4)
    q = candidates.gather(-2, best).squeeze(-2)
    q = F.normalize(q, dim=-1)
    # q and -q are the same rotation; w >= 0 puts the angle in [0, pi].
    return torch.where(q[..., :1] < 0, -q, q)


def rotmat_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (..., 3, 3) -> axis-angle (..., 3) with angle |aa| in [0, pi].

    Through the quaternion (w, v): angle = 2 atan2(|v|, w), aa = v * angle / |v|, with the
    Taylor series angle / |v| = 2 + angle^2 / 12 near zero, so the identity maps to 0 smoothly.
    """
    q = _rotmat_to_quaternion(R)
    w, v = q[..., :1], q[..., 1:]
    sin_half = v.norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(sin_half, w)
    small = angle < _SMALL_ANGLE
    safe_sin = torch.where(small, torch.ones_like(sin_half), sin_half)
    # |v| = sin(angle / 2) ~ angle/2 (1 - angle^2/24) for small angles.
    factor = torch.where(small, 2.0 + angle**2 / 12.0, angle / safe_sin)
    return v * factor
