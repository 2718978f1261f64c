"""Rotation conversions: VIBE's 6D layout, Rodrigues, and round trips."""
from __future__ import annotations

import math

import pytest
import smplx.lbs
import torch
import torch.nn.functional as F

from cat_ray.rotations import axis_angle_to_rotmat, rot6d_to_rotmat, rotmat_to_axis_angle, rotmat_to_rot6d


def _random_axis_angle(n: int, seed: int, max_angle: float = math.pi) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    axis = F.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    angle = torch.rand(n, 1, generator=g, dtype=torch.float64) * max_angle
    return axis * angle


def _vibe_rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """Oracle: transcription of mkocabas/VIBE lib/utils/geometry.py::rot6d_to_rotmat."""
    x = x.view(-1, 3, 2)
    b1 = F.normalize(x[:, :, 0], dim=1, eps=1e-6)
    dot_prod = torch.sum(b1 * x[:, :, 1], dim=1, keepdim=True)
    b2 = F.normalize(x[:, :, 1] - dot_prod * b1, dim=-1, eps=1e-6)
    b3 = torch.cross(b1, b2, dim=1)
    return torch.stack([b1, b2, b3], dim=-1)


def test_rot6d_of_identity_is_first_two_columns():
    rot6d = rotmat_to_rot6d(torch.eye(3))
    assert rot6d.tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert torch.equal(rot6d_to_rotmat(rot6d), torch.eye(3))


def test_rot6d_to_rotmat_equals_vibe_on_random_vectors():
    x = torch.randn(4, 24, 6, generator=torch.Generator().manual_seed(0))
    R = rot6d_to_rotmat(x)
    assert R.shape == (4, 24, 3, 3)
    torch.testing.assert_close(R.reshape(-1, 3, 3), _vibe_rot6d_to_rotmat(x), rtol=0, atol=1e-6)


def test_rot6d_to_rotmat_gives_proper_rotations():
    R = rot6d_to_rotmat(torch.randn(100, 6, dtype=torch.float64))
    eye = torch.eye(3, dtype=torch.float64).expand(100, 3, 3)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, eye)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(100, dtype=torch.float64))


def test_rot6d_round_trip():
    R = axis_angle_to_rotmat(_random_axis_angle(50, seed=1)).reshape(5, 10, 3, 3)
    rot6d = rotmat_to_rot6d(R)
    assert rot6d.shape == (5, 10, 6)
    torch.testing.assert_close(rot6d_to_rotmat(rot6d), R)


def test_axis_angle_to_rotmat_known_rotation():
    # 90 degrees about z maps x to y.
    R = axis_angle_to_rotmat(torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64))
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(R, expected)


def test_axis_angle_to_rotmat_matches_smplx_batch_rodrigues():
    aa = _random_axis_angle(200, seed=2)
    expected = smplx.lbs.batch_rodrigues(aa)
    # smplx adds 1e-8 to aa before taking the norm, hence the tolerance.
    torch.testing.assert_close(axis_angle_to_rotmat(aa), expected, rtol=0, atol=1e-7)


def test_axis_angle_to_rotmat_is_exact_and_differentiable_at_zero():
    aa = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    R = axis_angle_to_rotmat(aa)
    torch.testing.assert_close(R, torch.eye(3, dtype=torch.float64).expand(2, 3, 3), rtol=0, atol=0)
    (R * torch.randn(2, 3, 3, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(aa.grad).all()


@pytest.mark.parametrize("max_angle", [1e-6, 1e-3, 1.0, math.pi - 1e-6])
def test_axis_angle_round_trip(max_angle):
    aa = _random_axis_angle(100, seed=3, max_angle=max_angle)
    back = rotmat_to_axis_angle(axis_angle_to_rotmat(aa))
    torch.testing.assert_close(back, aa, rtol=1e-6, atol=1e-9)


def test_rotmat_to_axis_angle_angle_in_zero_pi():
    # Angles beyond pi come back as the equivalent rotation with angle 2 pi - t about -axis.
    aa = _random_axis_angle(100, seed=4, max_angle=2 * math.pi)
    R = axis_angle_to_rotmat(aa)
    back = rotmat_to_axis_angle(R)
    angle = back.norm(dim=-1)
    assert (angle >= 0).all() and (angle <= math.pi + 1e-9).all()
    torch.testing.assert_close(axis_angle_to_rotmat(back), R)


def test_rotmat_to_axis_angle_at_pi_and_identity():
    R = torch.stack([
        torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)),  # pi about x
        torch.eye(3, dtype=torch.float64),
    ]).reshape(2, 1, 3, 3)
    back = rotmat_to_axis_angle(R)
    assert back.shape == (2, 1, 3)
    torch.testing.assert_close(back[0, 0].abs(), torch.tensor([math.pi, 0.0, 0.0], dtype=torch.float64))
    assert torch.equal(back[1, 0], torch.zeros(3, dtype=torch.float64))


def test_rotmat_to_axis_angle_gradient_finite_at_identity():
    R = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1).requires_grad_(True)
    rotmat_to_axis_angle(R).sum().backward()
    assert torch.isfinite(R.grad).all()
