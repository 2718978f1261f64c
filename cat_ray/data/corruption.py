"""The paper's frame corruption (Tables V/VI): which frames are blocked, and where the square lies.

A video's corrupted frames come in runs of exactly CnSc (``consecutive``) frames covering a ratio CR
of its frames; on each such frame a square of side half the body's 2D height hides the body parts
under it, either centred on the body ("center blocking") or at a random place on it ("random
blocking"). Everything here is a pure tensor function; randomness comes from an explicit
``torch.Generator``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

BLOCK_MODES = ("center", "random")


def corrupted_frame_count(num_frames: int, ratio: float, consecutive: int) -> int:
    """Frames corrupted in a video of ``num_frames``: ``n = CnSc * round_half_up(CR * N / CnSc)``.

    Corruption comes in whole runs of CnSc frames, so the count is CR * N rounded to the nearest
    multiple of CnSc (halves round up: 96 frames at CR 10 %, CnSc 2 -> 4.8 runs -> 5 runs -> 10 frames).
    """
    runs = math.floor(ratio * num_frames / consecutive + 0.5)
    return consecutive * runs


def corruption_schedule(num_frames: int, ratio: float, consecutive: int, rng: torch.Generator) -> Tensor:
    """Which frames of one video are corrupted: (num_frames,) bool.

    Exactly :func:`corrupted_frame_count` frames, in runs of exactly ``consecutive`` frames, runs
    separated by at least one clean frame (so no two runs merge into a longer one); run positions are
    uniform over all such layouts. Raises ValueError when the runs cannot fit.
    """
    if consecutive < 1:
        raise ValueError(f"consecutive (CnSc) must be >= 1; got {consecutive}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio (CR) must be in [0, 1]; got {ratio}")
    runs = corrupted_frame_count(num_frames, ratio, consecutive) // consecutive
    mask = torch.zeros(num_frames, dtype=torch.bool)
    if runs == 0:
        return mask
    # k runs of c frames and k - 1 separating clean frames leave m spare clean frames for k + 1 gaps.
    spare = num_frames - runs * consecutive - (runs - 1)
    if spare < 0:
        raise ValueError(
            f"cannot corrupt {runs * consecutive} of {num_frames} frames (CR {ratio:g}) in runs of "
            f"{consecutive} separated by clean frames: at most {(num_frames + 1) // (consecutive + 1)} runs fit; "
            f"lower data.corruption.ratio or data.corruption.consecutive")
    # Stars and bars: k sorted distinct picks p_i from range(m + k) give run starts p_i + i * c, and
    # consecutive runs are then p_{i+1} - p_i >= 1 clean frames apart.
    picks = torch.randperm(spare + runs, generator=rng)[:runs].sort().values
    starts = picks + torch.arange(runs) * consecutive
    mask[(starts[:, None] + torch.arange(consecutive)).reshape(-1)] = True
    return mask


def block_square(joints2d: Tensor, mode: str, rng: torch.Generator) -> tuple[Tensor, Tensor]:
    """The blocking square of each frame: centre (N, 2) and side (N,), in image coordinates.

    joints2d: (N, J, 2). The side is half the body's 2D height (extent of the joints in y). "center"
    puts the square on the centre of the joints' bounding box; "random" on a uniform point of that box
    (so it always lies on the body). Draws from ``rng`` (on joints2d's device) only in "random" mode.
    """
    if mode not in BLOCK_MODES:
        raise ValueError(f"blocking mode must be one of {', '.join(BLOCK_MODES)}; got {mode!r}")
    low, high = joints2d.amin(dim=1), joints2d.amax(dim=1)  # (N, 2) bounding box
    side = 0.5 * (high[:, 1] - low[:, 1])
    if mode == "center":
        return 0.5 * (low + high), side
    u = torch.rand(low.shape, generator=rng, device=joints2d.device, dtype=joints2d.dtype)
    return low + u * (high - low), side


def occluded_joints(joints2d: Tensor, centre: Tensor, side: Tensor) -> Tensor:
    """Joints inside the square: (N, J) bool from joints2d (N, J, 2), centre (N, 2), side (N,)."""
    inside = (joints2d - centre[:, None, :]).abs() <= 0.5 * side[:, None, None]
    return inside.all(dim=-1)
