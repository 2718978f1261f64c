"""The fast paths of issue 7 equal their reference paths.

The fast joints (``BodyModel.joints14`` with the level-wise kinematic chain) against smplx's mesh and
the joint regressor are tested in tests/test_body.py (``test_fast_joints14_equal_smplx``,
``test_fast_joints14_batch_dims_and_gradients``); here: the folded variance estimator, a whole
training loss against the straightforward reference of benchmarks/reference.py, and the cached
ground-truth meshes of the evaluation.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cat_ray.body.model import BodyModel
from cat_ray.config import LossConfig
from cat_ray.data.types import Batch, VideoSplit
from cat_ray.evaluate import GROUND_TRUTH_MESHES, SplitPrediction, evaluate_prediction
from cat_ray.losses import make_targets, total_loss
from cat_ray.models.model import TemporalModel
from cat_ray.models.regressor import MeanParams
from cat_ray.models.variance import VarianceEstimator, fused_is_cheaper
from cat_ray.rotations import axis_angle_to_rotmat

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks folder's reference
from benchmarks.reference import ReferenceModel, reference_loss  # noqa: E402

C = 16
OFFSETS = (-2, -1, 0, 1, 2)


@pytest.fixture(scope="module")
def body(body_dir: Path) -> BodyModel:
    return BodyModel.from_dir(body_dir)


def unfused_log_variance(ve: VarianceEstimator, predicted: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Eq. 9-10 as written: head(W0 f^p + W1 f_t)."""
    return ve.head(ve.w_pred(predicted) + ve.w_target(frames)[None]).squeeze(-1)


def random_batch(B: int, T: int, gen: torch.Generator) -> Batch:
    return Batch(
        features=torch.randn(B, T, C, generator=gen), pose=0.3 * torch.randn(B, T, 72, generator=gen),
        shape=torch.randn(B, T, 10, generator=gen), joints3d=0.3 * torch.randn(B, T, 14, 3, generator=gen),
        joints2d=0.3 * torch.randn(B, T, 14, 2, generator=gen), corrupted=torch.zeros(B, T, dtype=torch.bool),
        has_smpl=torch.tensor([1, 0, 1][:B], dtype=torch.bool), has_3d=torch.tensor([1, 1, 0][:B], dtype=torch.bool),
        has_2d=torch.ones(B, dtype=torch.bool))


def small_models(seed: int = 0) -> tuple[TemporalModel, ReferenceModel]:
    torch.manual_seed(seed)
    sizes = dict(feature_dim=C, predictor_hidden=24, dropout=0.1, variance_hidden=8, regressor_hidden=32,
                 regressor_iterations=3, mean=MeanParams.neutral())
    model = TemporalModel("confidence", OFFSETS, temporal_hidden=12, temporal_layers=2, **sizes)
    reference = ReferenceModel(OFFSETS, **sizes)
    reference.load_from(model)
    return model, reference


# --- the variance estimator (Eq. 9-10) ------------------------------------------------------


@pytest.mark.parametrize("rows", [2, 400], ids=["few rows: unfused", "many rows: fused"])
def test_variance_estimator_equals_the_unfused_equations_in_both_associations(rows: int):
    torch.manual_seed(0)
    ve = VarianceEstimator(C, 8)
    predicted, frames = torch.randn(5, rows, 1, C), torch.randn(rows, 1, C)
    assert fused_is_cheaper(5 * rows, rows, C, 8) == (rows == 400)
    torch.testing.assert_close(ve(predicted, frames), unfused_log_variance(ve, predicted, frames), rtol=1e-5, atol=1e-5)
    # and the gradients reach W0, W1 and the head alike
    fast = torch.autograd.grad(ve(predicted, frames).square().sum(), list(ve.parameters()))
    slow = torch.autograd.grad(unfused_log_variance(ve, predicted, frames).square().sum(), list(ve.parameters()))
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_variance_inference_cache_follows_parameter_updates():
    torch.manual_seed(0)
    ve = VarianceEstimator(C, 8)
    predicted, frames = torch.randn(5, 2, 3, C), torch.randn(2, 3, C)
    with torch.no_grad():
        first = ve(predicted, frames)
    torch.testing.assert_close(first, unfused_log_variance(ve, predicted, frames).detach())
    optimizer = torch.optim.SGD(ve.parameters(), lr=0.5)
    ve(predicted, frames).sum().backward()
    optimizer.step()  # in-place update: the cached fold must not be reused
    with torch.no_grad():
        second = ve(predicted, frames)
        torch.testing.assert_close(second, unfused_log_variance(ve, predicted, frames))
        assert not torch.allclose(first, second)
        ve.load_state_dict({k: torch.zeros_like(v) for k, v in ve.state_dict().items()})
        assert ve(predicted, frames).abs().max() == 0
    assert set(ve.state_dict()) == {"w_pred.weight", "w_pred.bias", "w_target.weight", "head.0.weight",
                                    "head.0.bias", "head.2.weight", "head.2.bias"}  # the paper's parameters only


# --- a whole training loss ------------------------------------------------------------------


def test_training_loss_equals_the_straightforward_reference(body: BodyModel):
    model, reference = small_models()
    model.eval(), reference.eval()  # no dropout: both compute the same function
    gen = torch.Generator().manual_seed(1)
    batch = random_batch(3, 6, gen)
    weights = LossConfig()
    ours = total_loss(model(batch.features), make_targets(batch, body, False), body, weights, "replicate").total
    theirs = reference_loss(reference, batch, body, weights)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    # and the same gradients reach the predictors (batched vs one module per offset)
    ours.backward()
    theirs.backward()
    for d, seq in enumerate(reference.predictors):
        torch.testing.assert_close(model.predictors.fc1.weight.grad[d], seq[0].weight.grad.T, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(model.variance.w_pred.weight.grad, reference.variance.w_pred.weight.grad,
                               rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(model.final_generator.fc1.weight.grad, reference.final_generator.fc1.weight.grad,
                               rtol=1e-3, atol=1e-5)


def test_reference_copies_every_weight():
    model, reference = small_models()
    assert sum(p.numel() for p in reference.parameters()) == sum(
        p.numel() for name, p in model.named_parameters() if not name.startswith("aggregator"))


# --- evaluation: ground-truth meshes computed once per split ------------------------------------


def test_ground_truth_meshes_are_computed_once_and_follow_edits(body: BodyModel):
    gen = torch.Generator().manual_seed(2)
    N = 12
    pose = 0.3 * torch.randn(N, 72, generator=gen)
    shape = torch.randn(N, 10, generator=gen)
    split = VideoSplit("val", "3dpw", torch.randn(N, C, generator=gen), torch.tensor([0, 6, 12]), pose, shape,
                       torch.randn(N, 14, 3, generator=gen), torch.randn(N, 14, 2, generator=gen),
                       torch.zeros(N, dtype=torch.bool), True, True, True)
    first = GROUND_TRUTH_MESHES(split, body)
    assert GROUND_TRUTH_MESHES(split, body) is first  # reused, not recomputed
    expected = body.vertices(axis_angle_to_rotmat(pose.reshape(N, 24, 3)), shape)
    np.testing.assert_allclose(first, expected.numpy(), rtol=1e-5, atol=1e-6)
    pred = SplitPrediction(axis_angle_to_rotmat(pose.reshape(N, 24, 3)), shape, torch.zeros(N, 3), None)
    assert evaluate_prediction(pred, split, body).as_dict()["pve"] == pytest.approx(0.0, abs=1e-3)
    split.pose.mul_(0.5)  # an in-place edit of the ground truth: recomputed
    again = GROUND_TRUTH_MESHES(split, body)
    assert again is not first
    expected = body.vertices(axis_angle_to_rotmat(split.pose.reshape(N, 24, 3)), shape)
    np.testing.assert_allclose(again, expected.numpy(), rtol=1e-5, atol=1e-6)


# --- dropout with a cheaper mask on CPU -----------------------------------------------------------


def test_cpu_dropout_keeps_with_one_minus_p_and_rescales():
    from cat_ray.models.predictors import Dropout

    torch.manual_seed(0)
    layer = Dropout(0.25)
    x = torch.ones(400, 500)
    y = layer(x)
    assert torch.equal(torch.unique(y), torch.tensor([0.0, 1.0 / 0.75]))
    assert abs(float((y > 0).float().mean()) - 0.75) < 0.005
    assert abs(float(y.mean()) - 1.0) < 0.01  # unbiased, as nn.Dropout
    layer.eval()
    assert torch.equal(layer(x), x)
