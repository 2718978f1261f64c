"""Temporal feature predictors P_d (Eq. 6) and the offset gather that feeds them."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def gather_offsets(features: Tensor, offsets: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Features of frame t+d for every offset d, with t+d clamped into the window.

    Edge policy: a frame whose t+d leaves the window sees the nearest edge frame instead
    ("replicate"); ``inside`` says where t+d was really inside so that the "valid" policy can
    score only frames with all their neighbours.

    Args:
        features: (B, T, C) frame features.
    Returns:
        shifted: (D, B, T, C), shifted[i, :, t] = features[:, clamp(t + d_i)].
        inside: (D, T) bool, whether t + d_i lies in [0, T).
    """
    B, T, C = features.shape
    d = torch.tensor(offsets, device=features.device)[:, None]  # (D, 1)
    target = torch.arange(T, device=features.device)[None, :] + d  # (D, T)
    index = target.clamp(0, T - 1)
    shifted = features[:, index.reshape(-1)].reshape(B, len(offsets), T, C).transpose(0, 1)  # (D, B, T, C)
    return shifted, (target >= 0) & (target < T)


class BatchedLinear(nn.Module):
    """D independent linear layers applied as one batched matmul: (D, N, in) -> (D, N, out)."""

    def __init__(self, num: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num, 1, out_features))
        # nn.Linear's default init, per offset, so batched and per-module models start alike.
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    def load_from_linears(self, linears: list[nn.Linear]) -> None:
        """Copy D ``nn.Linear`` layers into the batched weights (tests compare against them)."""
        with torch.no_grad():
            self.weight.copy_(torch.stack([lin.weight.t() for lin in linears]))
            self.bias.copy_(torch.stack([lin.bias[None] for lin in linears]))


class TemporalPredictors(nn.Module):
    """All P_d at once (Eq. 6): per offset 3 FC layers, ReLU and dropout between, residual input -> output."""

    def __init__(self, num_offsets: int, feature_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = BatchedLinear(num_offsets, feature_dim, hidden)
        self.fc2 = BatchedLinear(num_offsets, hidden, hidden)
        self.fc3 = BatchedLinear(num_offsets, hidden, feature_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, shifted: Tensor) -> Tensor:
        """(D, B, T, C) features of frames t+d -> (D, B, T, C) predicted features f^p_{t,t+d}."""
        D, B, T, C = shifted.shape
        x = shifted.reshape(D, B * T, C)  # one matmul per layer for all offsets and frames
        h = self.dropout(torch.relu(self.fc1(x)))
        h = self.dropout(torch.relu(self.fc2(h)))
        return (x + self.fc3(h)).reshape(D, B, T, C)
