"""Aggregating 32 frames (2 windows x 16, 2048-d features): the confidence-aware temporal part against
VIBE's GRU temporal encoder, the paper's Sec. IV-I measurement.

Both are ``TemporalModel.aggregate`` in eval mode under no_grad, at the paper's sizes (5 offsets,
Ve hidden 512; VIBE: 2-layer GRU, hidden 1024). The paper does not state the predictors' hidden
width, so the confidence-aware model is timed for several ``model.predictor_hidden`` values.
Goal (issue 7, item 2): at most 0.6x VIBE's time on the same machine.

    python benchmarks/aggregation.py [--hidden 2048,1024,512] [--device cuda] [--precision fp32,bf16]
"""
from __future__ import annotations

import argparse
import copy

import torch

from common import add_common_args, goal_line, report, setup, time_interleaved

from cat_ray.config import ModelConfig
from cat_ray.models.model import build_model
from cat_ray.models.regressor import MeanParams

FEATURE_DIM = 2048
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def copy_to(model, device: torch.device, dtype: torch.dtype):
    """An eval-mode copy of ``model`` with its weights in ``dtype`` (cast once, not per call as autocast does)."""
    return copy.deepcopy(model).to(device=device, dtype=dtype).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", default="2048,1024,512", help="predictor_hidden values (default 2048,1024,512)")
    parser.add_argument("--precision", default="fp32",
                        help="comma-separated fp32, bf16 (default fp32): bf16 casts both models' weights and the "
                             "frames to bfloat16 once (bf16 inference; on CPUs with AMX or AVX512-BF16 it pays)")
    add_common_args(parser, repeats=20)
    args = parser.parse_args()
    precisions = args.precision.split(",")
    if not set(precisions) <= set(DTYPES):
        raise SystemExit(f"--precision: fp32 and/or bf16; got {args.precision}")
    device = setup(args)
    torch.manual_seed(0)
    frames = torch.randn(2, 16, FEATURE_DIM, device=device)
    mean = MeanParams.neutral()
    models = {"vibe (GRU 2 x 1024)": build_model(ModelConfig(aggregator="vibe"), FEATURE_DIM, mean)}
    for hidden in (int(h) for h in args.hidden.split(",")):
        model = build_model(ModelConfig(aggregator="confidence", predictor_hidden=hidden), FEATURE_DIM, mean)
        models[f"confidence, predictor_hidden {hidden}"] = model
    print(f"32 frames (2 x 16) of {FEATURE_DIM}-d features, eval, no_grad, {', '.join(precisions)}")

    def aggregate(model, x):
        return lambda: model.aggregate(x)

    candidates = {}
    for precision in precisions:
        dtype = DTYPES[precision]
        x = frames.to(dtype)
        for name, model in models.items():
            candidates[f"{name}, {precision}"] = aggregate(copy_to(model, device, dtype), x)
    with torch.no_grad():
        times = time_interleaved(candidates, args.repeats, device, warmup=3)
    report(times)
    vibe = "vibe (GRU 2 x 1024)"
    for precision in precisions:
        base = min(times[f"{vibe}, {precision}"])
        for name in list(models)[1:]:
            ratio = min(times[f"{name}, {precision}"]) / base
            print(goal_line(f"{name}, {precision}: time / VIBE's GRU time in {precision}", ratio, "<= 0.6", ratio <= 0.6))
    if "bf16" in precisions and "fp32" in precisions:  # across precisions: what bf16 inference buys against fp32 VIBE
        base = min(times[f"{vibe}, fp32"])
        for name in list(models)[1:]:
            print(goal_line(f"{name}, bf16: time / VIBE's GRU time in fp32", min(times[f"{name}, bf16"]) / base, None))


if __name__ == "__main__":
    main()
