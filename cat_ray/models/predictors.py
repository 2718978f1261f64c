"""Temporal feature predictors P_d (Eq. 6) and the offset gather that feeds them."""
from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn


@functools.lru_cache(maxsize=64)
def _offset_targets(offsets: tuple[int, ...], T: int, device: torch.device) -> Tensor:
    """(D, T) int64 t + d, made once per (offsets, T, device): no host-to-device copy in the training step."""
    return torch.arange(T)[None, :].add(torch.tensor(offsets)[:, None]).to(device)


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
    # Under torch.compile the index is traced into the graph (a constant), not cached.
    make_targets = _offset_targets.__wrapped__ if torch.compiler.is_compiling() else _offset_targets
    target = make_targets(tuple(offsets), T, features.device)  # (D, T) t + d
    index = target.clamp(0, T - 1)
    rows = (torch.arange(B, device=features.device)[None, :, None] * T + index[:, None, :]).reshape(-1)  # (D*B*T,)
    shifted = features.reshape(B * T, C).index_select(0, rows).view(len(offsets), B, T, C)  # one gather, (D, B, T, C) layout
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


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper mask on CPU: same distribution (keep with 1 - p, scale 1 / (1 - p)).

    On CPU, torch's dropout draws its mask with ``bernoulli_``, about 4x slower than a uniform draw
    compared with p; on GPU torch's fused kernel is already the fast one and is kept.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or x.device.type != "cpu" or not 0 < self.p < 1:
            return super().forward(x)
        return x * (torch.rand_like(x) >= self.p).to(x.dtype).mul_(1.0 / (1.0 - self.p))


class TemporalPredictors(nn.Module):
    """All P_d at once (Eq. 6): per offset 3 FC layers, ReLU and dropout between, residual input -> output."""

    def __init__(self, num_offsets: int, feature_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = BatchedLinear(num_offsets, feature_dim, hidden)
        self.fc2 = BatchedLinear(num_offsets, hidden, hidden)
        self.fc3 = BatchedLinear(num_offsets, hidden, feature_dim)
        self.dropout = Dropout(dropout)

    def forward(self, shifted: Tensor) -> Tensor:
        """(D, B, T, C) features of frames t+d -> (D, B, T, C) predicted features f^p_{t,t+d}."""
        D, B, T, C = shifted.shape
        x = shifted.reshape(D, B * T, C)  # one matmul per layer for all offsets and frames
        h = self.dropout(torch.relu_(self.fc1(x)))  # in place: baddbmm's backward does not need its output
        h = self.dropout(torch.relu_(self.fc2(h)))
        return self.fc3(h).add_(x).reshape(D, B, T, C)  # the residual input -> output
