"""Temporal aggregators behind one interface, selected by name (``model.aggregator``).

Two families:
- over the predicted features f^p_{t,t+d} of the temporal predictors (confidence, average, gru,
  tcn, single): Ga sees them with the gradient stopped (Eq. 20), so only the aggregator's own
  weights and Ga learn from the final loss;
- over the raw frame features (vibe, thmr): the encoder is trained by the final loss, as in VIBE.

Every aggregator maps ``(frames, predicted, log_var)`` to ``(refined (B, T, C), weights (D, B, T) | None)``.
Class attributes say what it needs: ``uses_predictors`` (the P_d and G), ``uses_variance`` (Ve),
``has_weights`` (it reports a weight per offset) and ``fixed_offsets`` (single-frame models: d = {0}).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class ConfidenceAggregator(nn.Module):
    """Eq. 17-18: f^r_t = sum_d softmax_d(-s_{t,t+d}) f^p_{t,t+d}."""

    uses_predictors, uses_variance, has_weights = True, True, True
    fixed_offsets: tuple[int, ...] | None = None

    def __init__(self, feature_dim: int, num_offsets: int, hidden: int, layers: int):
        super().__init__()

    def forward(self, frames: Tensor, predicted: Tensor, log_var: Tensor) -> tuple[Tensor, Tensor]:
        weights = torch.softmax(-log_var, dim=0)  # (D, B, T): inverse variances, normalised over offsets
        return (weights[..., None] * predicted).sum(0), weights


class AverageAggregator(nn.Module):
    """Equal weights over the predicted features (Table IX, "equal weight")."""

    uses_predictors, uses_variance, has_weights = True, False, True
    fixed_offsets: tuple[int, ...] | None = None

    def __init__(self, feature_dim: int, num_offsets: int, hidden: int, layers: int):
        super().__init__()

    def forward(self, frames: Tensor, predicted: Tensor, log_var: Tensor | None) -> tuple[Tensor, Tensor]:
        D = predicted.shape[0]
        weights = predicted.new_full(predicted.shape[:-1], 1.0 / D)
        return predicted.mean(0), weights


class SingleFrameAggregator(AverageAggregator):
    """SPIN-like single frame: the model is built with the offset set {0}, so this is the identity."""

    fixed_offsets = (0,)


class OffsetGRUAggregator(nn.Module):
    """A GRU run over the offsets' predicted features (ordered by d), last state -> feature, residual to their mean (Table VIII)."""

    uses_predictors, uses_variance, has_weights = True, False, False
    fixed_offsets: tuple[int, ...] | None = None

    def __init__(self, feature_dim: int, num_offsets: int, hidden: int, layers: int):
        super().__init__()
        self.gru = nn.GRU(feature_dim, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, feature_dim)

    def forward(self, frames: Tensor, predicted: Tensor, log_var: Tensor | None) -> tuple[Tensor, None]:
        D, B, T, C = predicted.shape
        seq = predicted.permute(1, 2, 0, 3).reshape(B * T, D, C)  # one short sequence over offsets per frame
        states, _ = self.gru(seq)
        refined = self.out(states[:, -1]).reshape(B, T, C)
        return refined + predicted.mean(0), None


class OffsetTCNAggregator(nn.Module):
    """Temporal convolutions over the offsets' predicted features, pooled over offsets, residual to their mean (Table VIII)."""

    uses_predictors, uses_variance, has_weights = True, False, False
    fixed_offsets: tuple[int, ...] | None = None

    def __init__(self, feature_dim: int, num_offsets: int, hidden: int, layers: int):
        super().__init__()
        blocks: list[nn.Module] = []
        channels = feature_dim
        for _ in range(layers):
            blocks += [nn.Conv1d(channels, hidden, kernel_size=3, padding=1), nn.ReLU()]
            channels = hidden
        self.convs = nn.Sequential(*blocks)
        self.out = nn.Linear(hidden, feature_dim)

    def forward(self, frames: Tensor, predicted: Tensor, log_var: Tensor | None) -> tuple[Tensor, None]:
        D, B, T, C = predicted.shape
        seq = predicted.permute(1, 2, 3, 0).reshape(B * T, C, D)  # convolve along the offset axis
        pooled = self.convs(seq).mean(-1)  # (B*T, hidden)
        return self.out(pooled).reshape(B, T, C) + predicted.mean(0), None


class VIBEEncoder(nn.Module):
    """VIBE's temporal encoder over raw frame features: GRU (2 x 1024) -> linear to C -> residual."""

    uses_predictors, uses_variance, has_weights = False, False, False
    fixed_offsets: tuple[int, ...] | None = None

    def __init__(self, feature_dim: int, num_offsets: int, hidden: int, layers: int):
        super().__init__()
        self.gru = nn.GRU(feature_dim, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, feature_dim)

    def forward(self, frames: Tensor, predicted: None, log_var: None) -> tuple[Tensor, None]:
        states, _ = self.gru(frames)  # (B, T, hidden)
        return self.out(states) + frames, None


class TemporalHMREncoder(nn.Module):
    """Temporal HMR (Kanazawa et al.): residual blocks of 1-D convolutions over time on the raw features."""

    uses_predictors, uses_variance, has_weights = False, False, False
    fixed_offsets: tuple[int, ...] | None = None

    def __init__(self, feature_dim: int, num_offsets: int, hidden: int, layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.GroupNorm(1, feature_dim), nn.ReLU(), nn.Conv1d(feature_dim, hidden, kernel_size=3, padding=1),
                nn.GroupNorm(1, hidden), nn.ReLU(), nn.Conv1d(hidden, feature_dim, kernel_size=3, padding=1),
            )
            for _ in range(layers)
        )

    def forward(self, frames: Tensor, predicted: None, log_var: None) -> tuple[Tensor, None]:
        x = frames.transpose(1, 2)  # (B, C, T): convolve over time
        for block in self.blocks:
            x = x + block(x)
        return x.transpose(1, 2), None


class LSTMKalmanAggregator(nn.Module):
    """LSTM-KF (Coskun et al., ICCV 2017; the paper's Table X) refining the single-frame predicted features.

    A Kalman filter with diagonal covariances whose motion transition f, process noise Q_t and
    measurement noise R_t come from three independent LSTMs. The measurement z_t is the
    single-frame feature f^p_{t,t}; the filtered state is the refined feature f^r_t. The filter is
    a recursion, so it runs frame by frame (the only aggregator that does).
    """

    uses_predictors, uses_variance, has_weights = True, False, False
    fixed_offsets = (0,)

    def __init__(self, feature_dim: int, num_offsets: int, hidden: int, layers: int):
        super().__init__()
        self.transition = nn.LSTM(feature_dim, hidden, num_layers=layers, batch_first=True)
        self.process = nn.LSTM(feature_dim, hidden, num_layers=layers, batch_first=True)
        self.measurement = nn.LSTM(feature_dim, hidden, num_layers=layers, batch_first=True)
        self.transition_out = nn.Linear(hidden, feature_dim)
        self.process_out = nn.Linear(hidden, feature_dim)
        self.measurement_out = nn.Linear(hidden, feature_dim)

    def forward(self, frames: Tensor, predicted: Tensor, log_var: Tensor | None) -> tuple[Tensor, None]:
        z = predicted[0]  # (B, T, C) measurements: the single-frame features
        states, _ = self.measurement(z)
        r = nn.functional.softplus(self.measurement_out(states)) + 1e-4  # R_t depends on the measurements only
        x, p = z[:, 0], r[:, 0]  # start from the first measurement, with its uncertainty
        transition_state = process_state = None
        filtered = [x]
        for t in range(1, z.shape[1]):
            step, transition_state = self.transition(x[:, None], transition_state)
            x_pred = x + self.transition_out(step[:, 0])  # motion transition f(x_{t-1})
            step, process_state = self.process(x[:, None], process_state)
            p_pred = p + nn.functional.softplus(self.process_out(step[:, 0])) + 1e-4  # P + Q_t
            gain = p_pred / (p_pred + r[:, t])  # Kalman gain, elementwise for diagonal covariances
            x = x_pred + gain * (z[:, t] - x_pred)
            p = (1 - gain) * p_pred
            filtered.append(x)
        return torch.stack(filtered, dim=1), None


def effective_offsets(name: str, offsets: tuple[int, ...]) -> tuple[int, ...]:
    """The offset set a model with aggregator ``name`` really uses (single-frame models: {0})."""
    return AGGREGATORS[name].fixed_offsets or tuple(offsets)


AGGREGATORS: dict[str, type[nn.Module]] = {
    "confidence": ConfidenceAggregator,
    "average": AverageAggregator,
    "gru": OffsetGRUAggregator,
    "tcn": OffsetTCNAggregator,
    "vibe": VIBEEncoder,
    "thmr": TemporalHMREncoder,
    "single": SingleFrameAggregator,
    "lstm_kalman": LSTMKalmanAggregator,
}


def create_aggregator(name: str, feature_dim: int, num_offsets: int, hidden: int, layers: int) -> nn.Module:
    if name not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}; valid: {', '.join(AGGREGATORS)}")
    return AGGREGATORS[name](feature_dim=feature_dim, num_offsets=num_offsets, hidden=hidden, layers=layers)
