"""The paper's blocking protocol on data that has features but no images (VIBE's preprocessed files).

A documented approximation: the paper blacks out a square of the image before the ResNet; without
images, a corrupted frame's feature is moved towards the video's mean feature by the fraction of
the 14 joints the square covers (the share of the body it hides): ``f' = (1 - a) f + a mean(f)``.
The schedule (CR, CnSc) and the square (centre or random blocking, side half the body height) are
the same code as the synthetic benchmark's.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from cat_ray.config import CorruptionConfig
from cat_ray.data.corruption import block_square, corruption_schedule, occluded_joints
from cat_ray.data.types import VideoSplit


def corrupt_features(split: VideoSplit, cfg: CorruptionConfig, seed: int) -> VideoSplit:
    """A copy of ``split`` with ``cfg``'s blocking applied to its features, deterministic for ``seed``."""
    if cfg.mode == "none" or cfg.ratio == 0:
        return split
    gen = torch.Generator().manual_seed(seed)
    features = split.features.clone()
    corrupted = torch.zeros_like(split.corrupted)
    bounds = split.video_start.tolist()
    for first, end in zip(bounds[:-1], bounds[1:]):  # one schedule per video, as the paper corrupts videos
        frames = first + torch.nonzero(corruption_schedule(end - first, cfg.ratio, cfg.consecutive, gen)).squeeze(-1)
        if frames.numel() == 0:
            continue
        joints2d = split.joints2d[frames].cpu()
        centre, side = block_square(joints2d, cfg.mode, gen)
        hidden = occluded_joints(joints2d, centre, side).float().mean(-1, keepdim=True).to(features)  # (n, 1)
        video_mean = split.features[first:end].mean(0, keepdim=True)
        features[frames] = (1 - hidden) * split.features[frames] + hidden * video_mean
        corrupted[frames] = True
    return replace(split, features=features, corrupted=corrupted)
