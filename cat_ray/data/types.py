"""The data every source (synthetic benchmark, VIBE-format files) hands to training and evaluation."""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class VideoSplit:
    """All frames of one split, videos concatenated (VIBE's db layout).

    Frames of video ``i`` are ``[video_start[i], video_start[i + 1])``. Ground truth that a
    source lacks (``has_smpl`` / ``has_3d`` / ``has_2d`` false) is still present as zeros so
    that every split batches the same way; the indicators of Eq. 3 switch its losses off.
    """

    name: str  # e.g. "3dpw-train"
    kind: str  # "3dpw" (all ground truth), "h36m" (2D + 3D joints), "insta" (2D only)
    features: Tensor  # (N, C) float32, per-frame image features
    video_start: Tensor  # (V + 1,) int64, frame offsets of the videos
    pose: Tensor  # (N, 72) axis-angle SMPL pose, radians
    shape: Tensor  # (N, 10) SMPL betas
    joints3d: Tensor  # (N, 14, 3) metres, the 14 LSP evaluation joints (not centred)
    joints2d: Tensor  # (N, 14, 2) weak-perspective image coordinates in [-1, 1]
    corrupted: Tensor  # (N,) bool, frames degraded by blocking (Tables V/VI)
    has_smpl: bool
    has_3d: bool
    has_2d: bool

    @property
    def num_frames(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_videos(self) -> int:
        return int(self.video_start.shape[0] - 1)

    def to(self, device: torch.device | str) -> "VideoSplit":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in moved.items():
            if isinstance(value, Tensor):
                moved[key] = value.to(device)
        return VideoSplit(**moved)


@dataclass
class Batch:
    """B windows of T frames, possibly from several splits (mixed as VIBE mixes 2D and 3D sources)."""

    features: Tensor  # (B, T, C)
    pose: Tensor  # (B, T, 72)
    shape: Tensor  # (B, T, 10)
    joints3d: Tensor  # (B, T, 14, 3)
    joints2d: Tensor  # (B, T, 14, 2)
    corrupted: Tensor  # (B, T) bool
    has_smpl: Tensor  # (B,) bool: pose, shape and mesh ground truth exist
    has_3d: Tensor  # (B,) bool
    has_2d: Tensor  # (B,) bool

    @property
    def batch_size(self) -> int:
        return int(self.features.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.features.shape[1])


def gather_windows(split: VideoSplit, starts: Tensor, seq_len: int) -> Batch:
    """Windows ``[s, s + seq_len)`` of ``split`` for each start ``s`` (no boundary checks: see windows.py)."""
    index = starts[:, None] + torch.arange(seq_len, device=starts.device)  # (B, T)
    flags = torch.ones(starts.shape[0], dtype=torch.bool, device=starts.device)
    return Batch(
        features=split.features[index],
        pose=split.pose[index],
        shape=split.shape[index],
        joints3d=split.joints3d[index],
        joints2d=split.joints2d[index],
        corrupted=split.corrupted[index],
        has_smpl=flags & split.has_smpl,
        has_3d=flags & split.has_3d,
        has_2d=flags & split.has_2d,
    )


def concat_batches(batches: list[Batch]) -> Batch:
    return Batch(**{f.name: torch.cat([getattr(b, f.name) for b in batches]) for f in fields(Batch)})
