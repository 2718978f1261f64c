"""The whole model: predictors P_d, variance estimator Ve, generator G, an aggregator and the final generator Ga."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from cat_ray.config import ModelConfig
from cat_ray.models.aggregators import create_aggregator, effective_offsets
from cat_ray.models.predictors import TemporalPredictors, gather_offsets
from cat_ray.models.regressor import MeanParams, Regressor, SMPLParams
from cat_ray.models.variance import VarianceEstimator


@dataclass
class ModelOutput:
    final: SMPLParams  # Theta~_t = Ga(f^r_t), leading dims (B, T): the reported prediction (Eq. 19)
    per_offset: SMPLParams | None  # Theta^_{t,t+d} = G(f^p_{t,t+d}), leading dims (D, B, T)
    log_var: Tensor | None  # s_{t,t+d} (D, B, T), confidence aggregator only
    weights: Tensor | None  # aggregation weight of each offset (D, B, T), where the aggregator has them
    inside: Tensor | None  # (D, T) bool, t+d inside the window (edge policy)


class TemporalModel(nn.Module):
    """Confidence-aware temporal feature aggregation and its baselines, by aggregator name."""

    def __init__(self, aggregator: str, offsets: tuple[int, ...], feature_dim: int, predictor_hidden: int,
                 dropout: float, variance_hidden: int, regressor_hidden: int, regressor_iterations: int,
                 temporal_hidden: int, temporal_layers: int, mean: MeanParams, regressor_dropout: float = 0.5):
        super().__init__()
        self.offsets = effective_offsets(aggregator, offsets)  # single-frame models: d = {0}
        self.aggregator = create_aggregator(aggregator, feature_dim, len(self.offsets), temporal_hidden, temporal_layers)
        self.uses_predictors = self.aggregator.uses_predictors
        if self.uses_predictors:
            self.predictors = TemporalPredictors(len(self.offsets), feature_dim, predictor_hidden, dropout)
            self.generator = Regressor(feature_dim, regressor_hidden, regressor_iterations, mean, regressor_dropout)
        if self.aggregator.uses_variance:
            self.variance = VarianceEstimator(feature_dim, variance_hidden)
        self.final_generator = Regressor(feature_dim, regressor_hidden, regressor_iterations, mean, regressor_dropout)

    def aggregate(self, frames: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
        """The temporal part alone (what Sec. IV-I times): frames (B, T, C) ->
        (refined f^r (B, T, C), predicted f^p (D, B, T, C), log_var s (D, B, T), weights (D, B, T), inside (D, T))."""
        if not self.uses_predictors:
            refined, _ = self.aggregator(frames, None, None)
            return refined, None, None, None, None
        shifted, inside = gather_offsets(frames, self.offsets)  # (D, B, T, C), (D, T)
        predicted = self.predictors(shifted)  # Eq. 6: f^p_{t,t+d}
        log_var = self.variance(predicted, frames) if self.aggregator.uses_variance else None  # Eq. 9
        # Eq. 20: the final loss updates Ga (and the aggregator's own weights) only: stop the gradient at f^p and s.
        refined, weights = self.aggregator(frames, predicted.detach(), None if log_var is None else log_var.detach())
        return refined, predicted, log_var, weights, inside

    def forward(self, frames: Tensor) -> ModelOutput:
        """frames (B, T, C) -> ModelOutput."""
        refined, predicted, log_var, weights, inside = self.aggregate(frames)
        per_offset = self.generator(predicted) if predicted is not None else None  # Theta^_{t,t+d} = G(f^p_{t,t+d})
        return ModelOutput(self.final_generator(refined), per_offset, log_var, weights, inside)


def build_model(cfg: ModelConfig, feature_dim: int, mean: MeanParams) -> TemporalModel:
    """The one place a config becomes modules."""
    return TemporalModel(
        aggregator=cfg.aggregator, offsets=cfg.offsets, feature_dim=feature_dim,
        predictor_hidden=cfg.predictor_hidden, dropout=cfg.dropout, variance_hidden=cfg.variance_hidden,
        regressor_hidden=cfg.regressor_hidden, regressor_iterations=cfg.regressor_iterations,
        temporal_hidden=cfg.temporal_hidden, temporal_layers=cfg.temporal_layers, mean=mean,
        regressor_dropout=cfg.regressor_dropout,
    )
