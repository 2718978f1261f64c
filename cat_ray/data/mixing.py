"""Training batches mixing the sources in set proportions, as VIBE mixes its 2D and 3D datasets."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cat_ray.config import DataConfig
from cat_ray.data.types import Batch, VideoSplit, concat_batches, gather_windows
from cat_ray.data.windows import training_window_starts


def source_counts(proportions: list[float], batch_size: int) -> list[int]:
    """Windows per source summing to ``batch_size``: largest-remainder rounding of p_i * B.

    Each source gets ``floor(p_i * B)``; the windows left over go to the largest remainders, ties to
    the earlier source. Deterministic, so every step has the same composition.
    """
    p = np.asarray(proportions, dtype=np.float64)
    exact = p / p.sum() * batch_size
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: batch_size - int(counts.sum())]] += 1
    return counts.tolist()


class MixedWindowSampler:
    """Random training windows from several splits, in fixed proportions per batch.

    ``splits`` and ``proportions`` pair up (normalised; a source with proportion 0 is skipped).
    Windows come from :func:`training_window_starts` (never across a video boundary) and are drawn
    uniformly with replacement. Data-parallel workers pass their ``rank`` and ``world_size``: every
    rank draws the same global batch (one generator seeded by ``seed``) and gathers only its own
    contiguous share, so DDP's averaged gradient is the gradient of the global batch, whatever the
    number of workers.
    Everything stays on the splits' device.
    """

    def __init__(self, splits: list[VideoSplit], proportions: list[float], seq_len: int, stride: int,
                 seed: int, rank: int = 0, world_size: int = 1):
        if len(splits) != len(proportions):
            raise ValueError(f"{len(splits)} splits but {len(proportions)} proportions")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size = {world_size})")
        if any(p < 0 for p in proportions) or sum(proportions) <= 0:
            raise ValueError(f"proportions must be non-negative with a positive sum; got {proportions}")
        used = [(s, p) for s, p in zip(splits, proportions) if p > 0]
        self.splits = [s for s, _ in used]
        self.proportions = [p / sum(p for _, p in used) for _, p in used]
        self.seq_len = seq_len
        self.starts = [training_window_starts(s.video_start, seq_len, stride) for s in self.splits]
        for split, starts in zip(self.splits, self.starts):
            if starts.numel() == 0:
                raise ValueError(f"split {split.name} has no video of at least {seq_len} frames")
        device = self.splits[0].features.device
        self.rank, self.world_size = rank, world_size
        seed_words = np.random.SeedSequence([seed]).generate_state(2, dtype=np.uint64)
        self.generator = torch.Generator(device=device).manual_seed(int(seed_words[0] >> np.uint64(1)))

    @classmethod
    def from_config(cls, cfg: DataConfig, splits: dict[str, VideoSplit], seed: int, rank: int = 0,
                    world_size: int = 1) -> "MixedWindowSampler":
        """The sampler of the training splits ("train/3dpw", "train/h36m", "train/insta") of ``cfg``."""
        wanted = {"train/3dpw": cfg.mix_3dpw, "train/h36m": cfg.mix_h36m, "train/insta": cfg.mix_insta}
        used = {name: p for name, p in wanted.items() if p > 0}  # unused sources need not be loaded at all
        return cls([splits[n] for n in used], list(used.values()), cfg.seq_len, cfg.stride, seed, rank, world_size)

    def counts(self, batch_size: int) -> list[int]:
        """Windows drawn from each used split per batch."""
        return source_counts(self.proportions, batch_size)

    def sample(self, batch_size: int) -> Batch:
        """This rank's share (``batch_size // world_size`` windows, (B, T, ...)) of a global batch of
        ``batch_size`` windows, the used splits' windows in order, on the splits' device."""
        if batch_size % self.world_size:
            raise ValueError(f"a global batch of {batch_size} does not split over {self.world_size} workers")
        share = batch_size // self.world_size
        low, high = self.rank * share, (self.rank + 1) * share  # this rank's rows of the global batch
        batches, first = [], 0
        for split, starts, count in zip(self.splits, self.starts, self.counts(batch_size)):
            if count == 0:
                continue
            pick = torch.randint(starts.shape[0], (count,), generator=self.generator, device=starts.device)
            mine = pick[max(low - first, 0):max(high - first, 0)]  # every rank draws all, keeps its rows
            if mine.numel():
                batches.append(gather_windows(split, starts[mine], self.seq_len))
            first += count
        return concat_batches(batches)

    def state_dict(self) -> dict[str, Tensor]:
        """The generator's state, for resuming a run with the same windows."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])
