"""Windows of T consecutive frames that never cross a video boundary.

Training draws overlapping windows with a stride (VIBE's chunking of each video); evaluation tiles
every video with non-overlapping windows, the last one aligned to the video's end, and keeps each
frame's prediction exactly once.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _lengths(video_start: Tensor) -> Tensor:
    return video_start[1:] - video_start[:-1]


def training_window_starts(video_start: Tensor, seq_len: int, stride: int) -> Tensor:
    """Starts (W,) int64 of the windows ``[s, s + seq_len)`` every ``stride`` frames inside each video.

    video_start: (V + 1,) frame offsets of the videos. Video i contributes starts
    ``video_start[i] + k * stride`` for ``0 <= k * stride <= length_i - seq_len``; a video shorter than
    ``seq_len`` contributes none.
    """
    counts = ((_lengths(video_start) - seq_len).div(stride, rounding_mode="floor") + 1).clamp(min=0)
    first = torch.repeat_interleave(video_start[:-1], counts)  # (W,) start of the window's video
    # Rank of each window inside its video: position in the flat list minus the video's first position.
    offset = torch.cumsum(counts, 0) - counts
    rank = torch.arange(first.shape[0], device=video_start.device) - torch.repeat_interleave(offset, counts)
    return (first + rank * stride).to(torch.int64)


def eval_windows(video_start: Tensor, seq_len: int) -> tuple[Tensor, Tensor]:
    """Windows covering every frame once: starts (W,) int64 and keep (W, seq_len) bool.

    Each video is tiled by windows at ``0, T, 2T, ...``; when its length L is not a multiple of T the
    last window starts at ``L - T`` (inside the video) and keeps only its last ``L mod T`` frames, the
    ones no earlier window covered. Raises ValueError for a video shorter than ``seq_len``.
    """
    lengths = _lengths(video_start)
    if bool((lengths < seq_len).any()):
        short = int(torch.nonzero(lengths < seq_len)[0])
        raise ValueError(f"video {short} has {int(lengths[short])} frames, fewer than the window length {seq_len}")
    counts = (lengths + seq_len - 1).div(seq_len, rounding_mode="floor")  # ceil(L / T)
    base = torch.repeat_interleave(video_start[:-1], counts)
    length = torch.repeat_interleave(lengths, counts)
    offset = torch.cumsum(counts, 0) - counts
    rank = torch.arange(base.shape[0], device=video_start.device) - torch.repeat_interleave(offset, counts)
    within = torch.minimum(rank * seq_len, length - seq_len)  # the last window aligned to the video's end
    # A frame is new to this window when it lies at or beyond the end of the previous window's tiling.
    frame = within[:, None] + torch.arange(seq_len, device=video_start.device)  # (W, T) frame within video
    keep = frame >= rank[:, None] * seq_len
    return (base + within).to(torch.int64), keep
