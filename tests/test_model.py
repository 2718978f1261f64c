"""The model's equations: shapes, batched predictors, Ve, the confidence weights, the stop-gradient, the registry."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cat_ray.config import AGGREGATOR_NAMES
from cat_ray.models.aggregators import AGGREGATORS, create_aggregator
from cat_ray.models.model import TemporalModel
from cat_ray.models.predictors import BatchedLinear, TemporalPredictors, gather_offsets
from cat_ray.models.regressor import MeanParams, Regressor
from cat_ray.models.variance import VarianceEstimator

C = 16


def small_model(aggregator: str, offsets=(-2, -1, 0, 1, 2)) -> TemporalModel:
    torch.manual_seed(0)
    return TemporalModel(aggregator, offsets, feature_dim=C, predictor_hidden=24, dropout=0.1, variance_hidden=8,
                         regressor_hidden=32, regressor_iterations=3, temporal_hidden=12, temporal_layers=2,
                         mean=MeanParams.neutral())


def test_registry_matches_the_config_names():
    assert tuple(AGGREGATORS) == AGGREGATOR_NAMES


def test_unknown_aggregator_lists_the_valid_ones():
    with pytest.raises(ValueError, match="confidence, average"):
        create_aggregator("lstm", C, 3, 8, 1)


@pytest.mark.parametrize("offsets", [(-2, -1, 0, 1, 2), (4, 3, 2, 1, 0), (0, -1, -2), (7,)])
def test_gather_offsets_picks_frame_t_plus_d_and_replicates_the_edges(offsets):
    B, T = 2, 6
    frames = torch.arange(B * T * C, dtype=torch.float32).reshape(B, T, C)
    shifted, inside = gather_offsets(frames, offsets)
    assert shifted.shape == (len(offsets), B, T, C) and inside.shape == (len(offsets), T)
    for i, d in enumerate(offsets):
        for t in range(T):
            source = min(max(t + d, 0), T - 1)  # replicate policy: clamp into the window
            assert torch.equal(shifted[i, :, t], frames[:, source])
            assert bool(inside[i, t]) == (0 <= t + d < T)


def test_batched_predictors_equal_one_module_per_offset():
    D, hidden = 4, 24
    batched = TemporalPredictors(D, C, hidden, dropout=0.3).eval()
    looped = [nn.Sequential(nn.Linear(C, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, C))
              for _ in range(D)]
    for layer_index, batched_layer in zip((0, 2, 4), (batched.fc1, batched.fc2, batched.fc3)):
        batched_layer.load_from_linears([seq[layer_index] for seq in looped])
    x = torch.randn(D, 3, 5, C)
    expected = torch.stack([x[i] + looped[i](x[i]) for i in range(D)])  # residual input -> output
    torch.testing.assert_close(batched(x), expected, rtol=1e-5, atol=1e-5)


def test_batched_linear_initialises_like_nn_linear():
    layer = BatchedLinear(3, 100, 50)
    bound = 1 / 100 ** 0.5
    assert layer.weight.abs().max() <= bound and layer.weight.std() > bound / 3


def test_variance_estimator_combines_prediction_and_target_linearly():
    ve = VarianceEstimator(C, 8)
    predicted, frames = torch.randn(3, 2, 5, C), torch.randn(2, 5, C)
    s = ve(predicted, frames)
    assert s.shape == (3, 2, 5)
    combined = predicted @ ve.w_pred.weight.t() + ve.w_pred.bias + (frames @ ve.w_target.weight.t())[None]  # Eq. 10
    torch.testing.assert_close(s, ve.head(combined).squeeze(-1))


def test_confidence_weights_are_softmax_of_minus_log_variance_and_sum_to_one():
    agg = AGGREGATORS["confidence"](feature_dim=C, num_offsets=3, hidden=8, layers=1)
    predicted = torch.randn(3, 2, 4, C)
    log_var = torch.randn(3, 2, 4)
    refined, weights = agg(torch.randn(2, 4, C), predicted, log_var)
    torch.testing.assert_close(weights.sum(0), torch.ones(2, 4))
    inverse_var = torch.exp(-log_var)  # Eq. 17: sigma^-2 normalised over offsets
    torch.testing.assert_close(weights, inverse_var / inverse_var.sum(0))
    torch.testing.assert_close(refined, (weights[..., None] * predicted).sum(0))


def test_a_confident_offset_dominates_the_aggregate():
    agg = AGGREGATORS["confidence"](feature_dim=C, num_offsets=3, hidden=8, layers=1)
    predicted = torch.randn(3, 1, 1, C)
    log_var = torch.tensor([5.0, -5.0, 5.0])[:, None, None]
    refined, _ = agg(torch.randn(1, 1, C), predicted, log_var)
    torch.testing.assert_close(refined, predicted[1], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_every_aggregator_gives_per_frame_outputs(name):
    model = small_model(name)
    out = model(torch.randn(2, 8, C))
    assert out.final.rotmat.shape == (2, 8, 24, 3, 3)
    assert out.final.betas.shape == (2, 8, 10) and out.final.cam.shape == (2, 8, 3)
    if model.uses_predictors:
        D = len(model.offsets)
        assert out.per_offset.rotmat.shape == (D, 2, 8, 24, 3, 3)
    if out.weights is not None:
        torch.testing.assert_close(out.weights.sum(0), torch.ones(2, 8))
    assert (out.log_var is not None) == (name == "confidence")


def test_single_frame_uses_offset_zero_only():
    assert small_model("single", offsets=(-2, -1, 0, 1, 2)).offsets == (0,)


@pytest.mark.parametrize("name", ["confidence", "average", "gru", "tcn"])
def test_final_loss_reaches_only_ga_and_the_aggregator(name):
    """Eq. 20: the gradient of the second term stops at f^r; it never reaches P_d, G or Ve."""
    model = small_model(name)
    out = model(torch.randn(2, 6, C))
    out.final.betas.square().sum().backward()
    for module_name in ("predictors", "generator", "variance"):
        module = getattr(model, module_name, None)
        if module is not None:
            assert all(p.grad is None for p in module.parameters()), module_name
    assert all(p.grad is not None for p in model.final_generator.parameters())
    assert all(p.grad is not None for p in model.aggregator.parameters())


def test_per_offset_loss_reaches_predictors_generator_and_variance_but_not_ga():
    model = small_model("confidence")
    out = model(torch.randn(2, 6, C))
    (out.per_offset.betas.square().sum() + out.log_var.sum()).backward()
    for module in (model.predictors, model.generator, model.variance):
        assert all(p.grad is not None for p in module.parameters())
    assert all(p.grad is None for p in model.final_generator.parameters())


@pytest.mark.parametrize("name", ["vibe", "thmr"])
def test_raw_feature_encoders_are_trained_by_the_final_loss(name):
    model = small_model(name)
    model(torch.randn(2, 6, C)).final.betas.sum().backward()
    assert all(p.grad is not None for p in model.aggregator.parameters())


def test_regressor_starts_at_the_mean_parameters():
    reg = Regressor(C, 32, 3, MeanParams.neutral())
    for layer in (reg.dec_pose, reg.dec_shape, reg.dec_cam):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    out = reg(torch.randn(4, C))
    torch.testing.assert_close(out.rotmat, torch.eye(3).expand(4, 24, 3, 3))
    torch.testing.assert_close(out.cam, torch.tensor([0.9, 0.0, 0.0]).expand(4, 3))


def test_prediction_of_frame_t_depends_on_frame_t_plus_d_only():
    """Predictor outputs for frame t depend on frame t+d: permuting frames permutes nothing else."""
    model = small_model("confidence", offsets=(1,)).eval()
    frames = torch.randn(1, 5, C)
    changed = frames.clone()
    changed[0, 3] += 1.0  # frame 3 feeds the prediction of frame 2 (d = +1)
    a, b = model(frames), model(changed)
    delta = (a.per_offset.betas - b.per_offset.betas).abs().sum(-1)[0, 0]  # (T,)
    assert delta[2] > 0 and delta[0] == 0 and delta[1] == 0


def test_lstm_kalman_uses_the_single_frame_measurement_only():
    assert small_model("lstm_kalman").offsets == (0,)


def test_lstm_kalman_follows_trusted_measurements_and_smooths_noisy_ones():
    agg = AGGREGATORS["lstm_kalman"](feature_dim=C, num_offsets=1, hidden=8, layers=1)
    z = torch.randn(1, 2, 6, C)
    with torch.no_grad():
        agg.measurement_out.bias.fill_(-30.0)  # R ~ 1e-4: measurements trusted, gain ~ 1
        agg.process_out.bias.fill_(5.0)  # large process noise
    trusted, _ = agg(None, z, None)
    torch.testing.assert_close(trusted, z[0], rtol=1e-3, atol=1e-3)
    with torch.no_grad():
        agg.measurement_out.bias.fill_(10.0)  # R large, Q small: the filter barely moves from its start
        agg.process_out.bias.fill_(-30.0)
    smoothed, _ = agg(None, z, None)
    assert (smoothed[:, 1:] - z[0][:, 1:]).abs().mean() > (trusted[:, 1:] - z[0][:, 1:]).abs().mean()


def test_regressor_equals_the_concatenated_input_form():
    """fc1 is applied as x W_x + state W_s (the feature part once); the same as fc1(cat[x, state])."""
    reg = Regressor(C, 32, 3, MeanParams.neutral()).eval()
    x = torch.randn(5, C)
    pose, shape, cam = reg.init_pose.expand(5, -1), reg.init_shape.expand(5, -1), reg.init_cam.expand(5, -1)
    for _ in range(3):
        h = reg.fc2(reg.fc1(torch.cat([x, pose, shape, cam], dim=1)))
        pose, shape, cam = pose + reg.dec_pose(h), shape + reg.dec_shape(h), cam + reg.dec_cam(h)
    out = reg(x)
    torch.testing.assert_close(out.betas, shape)
    torch.testing.assert_close(out.cam, cam)
