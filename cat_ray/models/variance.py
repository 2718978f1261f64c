"""The variance estimator Ve (Eq. 9-10): s_{t,t+d} = log sigma^2 from f^p_{t,t+d} and f_t."""
from __future__ import annotations

from torch import Tensor, nn


class VarianceEstimator(nn.Module):
    """Combined feature W0 f^p + W1 f_t (the paper's 1-D convolution over the pair), then FC-ReLU-FC to a scalar."""

    def __init__(self, feature_dim: int, hidden: int):
        super().__init__()
        self.w_pred = nn.Linear(feature_dim, feature_dim, bias=True)  # W0 (with the conv's bias)
        self.w_target = nn.Linear(feature_dim, feature_dim, bias=False)  # W1
        self.head = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, predicted: Tensor, frames: Tensor) -> Tensor:
        """predicted (D, B, T, C), frames (B, T, C) -> log variance s (D, B, T)."""
        combined = self.w_pred(predicted) + self.w_target(frames)[None]  # Eq. 10; W1 f_t computed once for all d
        return self.head(combined).squeeze(-1)
