"""Aggregating 32 frames (2 windows x 16, 2048-d features): the confidence-aware temporal part against
VIBE's GRU temporal encoder, the paper's Sec. IV-I measurement.

Both are ``TemporalModel.aggregate`` in eval mode under no_grad, at the paper's sizes (5 offsets,
Ve hidden 512; VIBE: 2-layer GRU, hidden 1024). The paper does not state the predictors' hidden
width, so the confidence-aware model is timed for several ``model.predictor_hidden`` values.
Goal (issue 7, item 2): at most 0.6x VIBE's time on the same machine.

    python benchmarks/aggregation.py [--hidden 2048,1024,512] [--device cuda] [--precision bf16]
"""
from __future__ import annotations

import argparse

import torch

from common import add_common_args, goal_line, report, setup, time_interleaved

from cat_ray.config import ModelConfig
from cat_ray.models.model import build_model
from cat_ray.models.regressor import MeanParams

FEATURE_DIM = 2048


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", default="2048,1024,512", help="predictor_hidden values (default 2048,1024,512)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="autocast for both (default fp32)")
    add_common_args(parser, repeats=20)
    args = parser.parse_args()
    device = setup(args)
    torch.manual_seed(0)
    frames = torch.randn(2, 16, FEATURE_DIM, device=device)
    mean = MeanParams.neutral()
    vibe = build_model(ModelConfig(aggregator="vibe"), FEATURE_DIM, mean).to(device).eval()
    candidates = {"vibe (GRU 2 x 1024)": vibe}
    for hidden in (int(h) for h in args.hidden.split(",")):
        model = build_model(ModelConfig(aggregator="confidence", predictor_hidden=hidden), FEATURE_DIM, mean)
        candidates[f"confidence, predictor_hidden {hidden}"] = model.to(device).eval()
    print(f"32 frames (2 x 16) of {FEATURE_DIM}-d features, eval, no_grad, {args.precision}")

    def aggregate(model):
        def call():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                return model.aggregate(frames)
        return call

    with torch.no_grad():
        times = time_interleaved({name: aggregate(m) for name, m in candidates.items()}, args.repeats, device, warmup=3)
    report(times)
    base = min(times["vibe (GRU 2 x 1024)"])
    for name in list(candidates)[1:]:
        ratio = min(times[name]) / base
        print(goal_line(f"{name}: time / VIBE's GRU time", ratio, "<= 0.6", ratio <= 0.6))


if __name__ == "__main__":
    main()
