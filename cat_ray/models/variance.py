"""The variance estimator Ve (Eq. 9-10): s_{t,t+d} = log sigma^2 from f^p_{t,t+d} and f_t."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def fused_is_cheaper(rows_pred: int, rows_target: int, feature_dim: int, hidden: int) -> bool:
    """Whether head_1(W0 f^p + W1 f_t) costs fewer multiply-adds as (head_1 W0) f^p + (head_1 W1) f_t.

    Three linear maps in a row (no nonlinearity between W0/W1 and the head's first FC), so both
    associations are the same function. Unfused: (rows_pred + rows_target) C^2 + rows_pred C H;
    fused: 2 H C^2 for the two weight products, then (rows_pred + rows_target) C H. Many rows (a
    training batch) favour the fused form; a few (32 frames at inference) the unfused one, unless
    the products are already at hand (see ``VarianceEstimator._fused_weights``).
    """
    C, H = feature_dim, hidden
    unfused = (rows_pred + rows_target) * C * C + rows_pred * C * H
    fused = 2 * H * C * C + (rows_pred + rows_target) * C * H
    return fused < unfused


class VarianceEstimator(nn.Module):
    """Combined feature W0 f^p + W1 f_t (the paper's 1-D convolution over the pair), then FC-ReLU-FC to a scalar.

    The parameters are the paper's (W0, W1, the head); only the order of the products changes
    with the sizes, never the function.
    """

    def __init__(self, feature_dim: int, hidden: int):
        super().__init__()
        self.w_pred = nn.Linear(feature_dim, feature_dim, bias=True)  # W0 (with the conv's bias)
        self.w_target = nn.Linear(feature_dim, feature_dim, bias=False)  # W1
        self.head = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self._folded: tuple[tuple, tuple[Tensor, Tensor, Tensor]] | None = None  # inference cache, not state

    def _fused_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """(head_1 W0, head_1 W1, head_1 b0 + b_head): the folded first layer, (H, C), (H, C), (H,)."""
        fc1 = self.head[0]
        return fc1.weight @ self.w_pred.weight, fc1.weight @ self.w_target.weight, fc1(self.w_pred.bias)

    def _cached_fused_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """The folded weights, computed once while the parameters stay unchanged (inference only).

        Keyed by each parameter's storage and version counter, which every in-place update
        (optimiser step, ``load_state_dict``) and every move (``.to``) changes.
        """
        params = (self.w_pred.weight, self.w_pred.bias, self.w_target.weight, self.head[0].weight, self.head[0].bias)
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        if self._folded is None or self._folded[0] != key:
            with torch.autocast(self.w_pred.weight.device.type, enabled=False):  # kept in the parameters' dtype
                self._folded = (key, self._fused_weights())
        return self._folded[1]

    def forward(self, predicted: Tensor, frames: Tensor) -> Tensor:
        """predicted (D, B, T, C), frames (B, T, C) -> log variance s (D, B, T)."""
        fc1 = self.head[0]
        rows_target = frames.numel() // frames.shape[-1]
        inference = not torch.is_grad_enabled()
        if inference or fused_is_cheaper(predicted.shape[0] * rows_target, rows_target, fc1.in_features,
                                         fc1.out_features):
            # Eq. 10 folded into the head's first FC: one (H x C) map per input instead of a C x C one.
            w_pred, w_target, bias = self._cached_fused_weights() if inference else self._fused_weights()
            hidden = F.linear(predicted, w_pred) + F.linear(frames, w_target, bias)[None]
        else:
            hidden = fc1(self.w_pred(predicted) + self.w_target(frames)[None])  # Eq. 10; W1 f_t once for all d
        return self.head[2](self.head[1](hidden)).squeeze(-1)
