"""Fast exact joints (BodyModel.joints14) against smplx's forward pass + the H36M joint regressor.

The losses need the 14 evaluation joints of every predicted body: 3,072 bodies per step at the
paper's sizes (32 windows x 16 frames x (5 offsets + the final prediction)). Goal (issue 7, item 1):
>= 20x faster than smplx, equal within 1e-5 m.

    python benchmarks/joints.py [--bodies 3072] [--device cuda] [--body-dir DIR]
"""
from __future__ import annotations

import argparse

import torch
from smplx.lbs import batch_rodrigues

from common import add_common_args, goal_line, report, setup, speedup, time_interleaved

from cat_ray.body.model import BodyModel, resolve_body_dir


def random_bodies(n: int, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation matrices (n, 24, 3, 3) of random axis-angle poses (0.5 rad per axis) and betas (n, 10)."""
    g = torch.Generator().manual_seed(seed)
    rot = batch_rodrigues(torch.randn(n * 24, 3, generator=g) * 0.5).view(n, 24, 3, 3)
    return rot.to(device), torch.randn(n, 10, generator=g).to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bodies", type=int, default=3072, help="bodies per call (default 3072)")
    parser.add_argument("--body-dir", default="", help="body model folder (default: the stand-in under the cache)")
    add_common_args(parser, repeats=10)
    args = parser.parse_args()
    device = setup(args)
    body = BodyModel.from_dir(resolve_body_dir(args.body_dir)).to(device)
    rot, betas = random_bodies(args.bodies, seed=0, device=device)
    print(f"{args.bodies} bodies, {body.num_vertices} vertices, float32; {body.pair_bone.numel()} (joint, bone) pairs")

    def reference():
        return body.joints14_from_vertices(body.vertices(rot, betas))

    with torch.no_grad():
        diff = (body.joints14(rot, betas) - reference()).abs().max().item()
        times = time_interleaved({"smplx forward + joint regressor": reference,
                                  "BodyModel.joints14": lambda: body.joints14(rot, betas)}, args.repeats, device)
    print("forward (no_grad):")
    report(times)
    ratio = speedup(times, "smplx forward + joint regressor", "BodyModel.joints14")
    print(f"max |joints14 - smplx joints| = {diff:.3g} m")

    # The training step also back-propagates through the joints (to the pose and shape).
    rot_g, betas_g = rot.clone().requires_grad_(True), betas.clone().requires_grad_(True)
    backward = {
        "smplx + regressor, forward + backward":
            lambda: body.joints14_from_vertices(body.vertices(rot_g, betas_g)).square().sum().backward(),
        "joints14, forward + backward": lambda: body.joints14(rot_g, betas_g).square().sum().backward(),
    }
    times_bw = time_interleaved(backward, max(3, args.repeats // 2), device, warmup=1)
    print("forward + backward:")
    report(times_bw)
    ratio_bw = speedup(times_bw, *backward)
    print(goal_line("joints14 speed-up over smplx, forward", ratio, ">= 20x", ratio >= 20))
    print(goal_line("joints14 speed-up over smplx, forward + backward", ratio_bw, None))
    print(goal_line("max abs difference (m)", diff, "<= 1e-5", diff <= 1e-5, fmt=".2e"))


if __name__ == "__main__":
    main()
