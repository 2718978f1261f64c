"""The synthetic benchmark: videos of smooth human-like motion, their ground truth, and image-like features.

Stand-in for 3DPW / H36M / InstaVariety (issue 3, item 6). Each video has per-frame SMPL pose (sums of
low-frequency sinusoids inside joint limits, a walking-like gait coupling legs and arms), one shape,
and a smooth weak-perspective camera. Ground truth comes from the body model; the per-frame feature
comes from a fixed, seeded nonlinear encoder of the body state that a network must learn to invert.
The encoder is a sum of per-body-part contributions, so the paper's blocking (Tables V/VI) can remove
the parts under the square and the model has to borrow them from neighbouring frames.

Every random draw comes from a generator seeded by ``(DataConfig.seed, split, stream)``: the same seed
gives bit-identical data, and the clean frames of a video do not depend on the corruption setting.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from cat_ray.body.camera import project_weak_perspective
from cat_ray.body.model import BodyModel
from cat_ray.config import ConfigError, DataConfig
from cat_ray.data.corruption import block_square, corrupted_frame_count, corruption_schedule, occluded_joints
from cat_ray.data.types import VideoSplit
from cat_ray.rotations import axis_angle_to_rotmat, rotmat_to_axis_angle, rotmat_to_rot6d

# Bump when the generated data change for the same config: old cache files are then ignored.
GENERATOR_VERSION = 1
FPS = 30.0
NUM_FREE_WAVES = 2  # free sinusoids per joint angle on top of the gait
# name, kind (ground truth available), DataConfig field giving its number of videos
SPLITS = (
    ("train/3dpw", "3dpw", "train_videos"),
    ("train/h36m", "h36m", "train_videos"),
    ("train/insta", "insta", "train_videos"),
    ("val", "3dpw", "val_videos"),
    ("test", "3dpw", "test_videos"),
)
GROUND_TRUTH = {"3dpw": (True, True, True), "h36m": (False, True, True), "insta": (False, False, True)}  # smpl, 3d, 2d

# --------------------------------------------------------------------------- motion

# Per SMPL joint (1..23; the root is built apart) and axis-angle component x, y, z: the joint limits
# (lo, hi), the range of a video's mean angle, and the amplitude of its free sinusoids, in rad.
# SMPL's rest frame: x to the body's left, y up, z forward; positive x bends hips back and knees forward.


def _sym(a: float) -> tuple[float, float]:
    return (-a, a)


_JOINTS = {
    #  joint: (limits x, y, z), (mean ranges x, y, z), free amplitude
    1: (((-2.0, 0.6), _sym(0.6), (-0.3, 0.9)), ((-0.6, 0.1), _sym(0.2), (-0.05, 0.3)), 0.15),  # L hip
    2: (((-2.0, 0.6), _sym(0.6), (-0.9, 0.3)), ((-0.6, 0.1), _sym(0.2), (-0.3, 0.05)), 0.15),  # R hip
    3: (((-0.4, 0.6), _sym(0.4), _sym(0.3)), ((-0.1, 0.3), _sym(0.1), _sym(0.1)), 0.08),  # spine 1
    4: (((0.0, 2.4), _sym(0.1), _sym(0.1)), ((0.0, 0.8), (0.0, 0.0), (0.0, 0.0)), 0.2),  # L knee
    5: (((0.0, 2.4), _sym(0.1), _sym(0.1)), ((0.0, 0.8), (0.0, 0.0), (0.0, 0.0)), 0.2),  # R knee
    6: (((-0.4, 0.6), _sym(0.4), _sym(0.3)), ((-0.1, 0.3), _sym(0.1), _sym(0.1)), 0.08),  # spine 2
    7: (((-0.6, 0.7), _sym(0.3), _sym(0.3)), ((-0.2, 0.3), _sym(0.1), _sym(0.1)), 0.1),  # L ankle
    8: (((-0.6, 0.7), _sym(0.3), _sym(0.3)), ((-0.2, 0.3), _sym(0.1), _sym(0.1)), 0.1),  # R ankle
    9: (((-0.4, 0.6), _sym(0.4), _sym(0.3)), ((-0.1, 0.3), _sym(0.1), _sym(0.1)), 0.08),  # spine 3
    10: ((_sym(0.3), _sym(0.3), _sym(0.3)), (_sym(0.1), _sym(0.1), _sym(0.1)), 0.05),  # L foot
    11: ((_sym(0.3), _sym(0.3), _sym(0.3)), (_sym(0.1), _sym(0.1), _sym(0.1)), 0.05),  # R foot
    12: (((-0.5, 0.6), _sym(0.7), _sym(0.4)), ((-0.1, 0.3), _sym(0.3), _sym(0.1)), 0.1),  # neck
    13: ((_sym(0.3), _sym(0.3), _sym(0.3)), (_sym(0.1), _sym(0.1), _sym(0.1)), 0.05),  # L collar
    14: ((_sym(0.3), _sym(0.3), _sym(0.3)), (_sym(0.1), _sym(0.1), _sym(0.1)), 0.05),  # R collar
    15: (((-0.4, 0.5), _sym(0.6), _sym(0.3)), ((-0.1, 0.2), _sym(0.2), _sym(0.1)), 0.1),  # head
    16: ((_sym(1.0), _sym(1.2), (-1.5, 0.6)), (_sym(0.3), (-0.5, 0.3), (-1.3, -0.2)), 0.3),  # L shoulder (z < 0: arm down)
    17: ((_sym(1.0), _sym(1.2), (-0.6, 1.5)), (_sym(0.3), (-0.3, 0.5), (0.2, 1.3)), 0.3),  # R shoulder
    18: ((_sym(0.2), (-2.5, 0.0), _sym(0.2)), ((0.0, 0.0), (-1.5, -0.1), (0.0, 0.0)), 0.3),  # L elbow (y < 0: bend forward)
    19: ((_sym(0.2), (0.0, 2.5), _sym(0.2)), ((0.0, 0.0), (0.1, 1.5), (0.0, 0.0)), 0.3),  # R elbow
    20: ((_sym(0.5), _sym(0.5), _sym(0.5)), (_sym(0.2), _sym(0.2), _sym(0.2)), 0.15),  # L wrist
    21: ((_sym(0.5), _sym(0.5), _sym(0.5)), (_sym(0.2), _sym(0.2), _sym(0.2)), 0.15),  # R wrist
    22: ((_sym(0.3), _sym(0.3), _sym(0.3)), (_sym(0.1), _sym(0.1), _sym(0.1)), 0.05),  # L hand
    23: ((_sym(0.3), _sym(0.3), _sym(0.3)), (_sym(0.1), _sym(0.1), _sym(0.1)), 0.05),  # R hand
}
_LIMITS = torch.tensor([_JOINTS[j][0] for j in range(1, 24)])  # (23, 3, 2)
_MEANS = torch.tensor([_JOINTS[j][1] for j in range(1, 24)])  # (23, 3, 2)
_FREE = torch.tensor([_JOINTS[j][2] for j in range(1, 24)])  # (23,)


def _uniform(gen: torch.Generator, shape: tuple[int, ...], low: float | Tensor, high: float | Tensor) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen, dtype=torch.float64)


def _soft_clamp(x: Tensor, limits: Tensor) -> Tensor:
    """Squash x into [lo, hi] smoothly (no kinks, so accelerations stay bounded): mid + half * tanh((x - mid) / half)."""
    lo, hi = limits[..., 0], limits[..., 1]
    mid, half = 0.5 * (lo + hi), (0.5 * (hi - lo)).clamp_min(1e-6)
    return mid + half * torch.tanh((x - mid) / half)


def _axis_rotmat(axis: int, angle: Tensor) -> Tensor:
    """Rotation (..., 3, 3) by ``angle`` (...) about the coordinate axis ``axis``."""
    aa = torch.zeros(*angle.shape, 3, dtype=angle.dtype)
    aa[..., axis] = angle
    return axis_angle_to_rotmat(aa)


def sample_motion(num_videos: int, num_frames: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Smooth human-like motion: pose (V, F, 72) axis-angle and betas (V, 10), float64.

    Body joints: a video's mean angle + a gait (hips swing in antiphase, knees bend in the swing,
    arms counter-swing, torso twists) + ``NUM_FREE_WAVES`` slow sinusoids, soft-clamped to the joint
    limits. Root: upright (y up, as the body model's mean parameters), a slowly turning heading in
    any direction, a lean and a roll. Betas ~ N(0, 1), constant over a video.
    """
    V, F = num_videos, num_frames
    t = torch.arange(F, dtype=torch.float64) / FPS  # (F,) seconds
    # Gait: 0.5-1.5 Hz steps, amplitude from standing (0.05 rad) to a run (0.6 rad).
    omega = 2 * math.pi * _uniform(gen, (V, 1), 0.5, 1.5)
    phase = omega * t + _uniform(gen, (V, 1), 0.0, 2 * math.pi)  # (V, F)
    amp = _uniform(gen, (V, 1), 0.05, 0.6)
    # Free waves: (V, 23, 3, K) amplitudes, frequencies 0.1-0.7 Hz, phases.
    wave_amp = _uniform(gen, (V, 23, 3, NUM_FREE_WAVES), 0.0, 1.0) * _FREE[:, None, None]
    wave_freq = 2 * math.pi * _uniform(gen, (V, 23, 3, NUM_FREE_WAVES), 0.1, 0.7)
    wave_phase = _uniform(gen, (V, 23, 3, NUM_FREE_WAVES), 0.0, 2 * math.pi)
    mean = _uniform(gen, (V, 23, 3), _MEANS[..., 0], _MEANS[..., 1])
    waves = wave_amp[:, None] * torch.sin(wave_freq[:, None] * t[None, :, None, None, None] + wave_phase[:, None])
    body = mean[:, None] + waves.sum(-1)  # (V, F, 23, 3), index = SMPL joint - 1
    sin, a = torch.sin(phase), amp
    body[..., 0, 0] -= a * sin  # L hip forward while ...
    body[..., 1, 0] += a * sin  # ... R hip back
    body[..., 3, 0] += 0.6 * a * (1 + torch.sin(phase + math.pi / 4))  # knees bend in the swing
    body[..., 4, 0] += 0.6 * a * (1 + torch.sin(phase + 5 * math.pi / 4))
    body[..., 15, 0] += 0.5 * a * sin  # arms counter-swing
    body[..., 16, 0] -= 0.5 * a * sin
    body[..., 8, 1] += 0.15 * a * sin  # torso twist
    body = _soft_clamp(body, _LIMITS)

    heading = _uniform(gen, (V, 1), -math.pi, math.pi) + _uniform(gen, (V, 1), -0.4, 0.4) * t
    heading = heading + 0.2 * torch.sin(2 * math.pi * _uniform(gen, (V, 1), 0.05, 0.3) * t + _uniform(gen, (V, 1), 0, 2 * math.pi))
    lean = _uniform(gen, (V, 1), -0.15, 0.25) + 0.05 * torch.sin(2 * math.pi * _uniform(gen, (V, 1), 0.1, 0.5) * t)
    roll = _uniform(gen, (V, 1), -0.1, 0.1) + 0.05 * torch.sin(2 * math.pi * _uniform(gen, (V, 1), 0.1, 0.5) * t)
    root = _axis_rotmat(0, lean) @ _axis_rotmat(2, roll) @ _axis_rotmat(1, heading)  # (V, F, 3, 3)
    pose = torch.cat([rotmat_to_axis_angle(root)[:, :, None], body], dim=2).reshape(V, F, 72)
    betas = torch.randn((V, 10), generator=gen, dtype=torch.float64)
    return pose, betas


def sample_camera_wobble(num_videos: int, num_frames: int, gen: torch.Generator) -> Tensor:
    """Smooth per-frame camera before centring: (V, F, 3) = (scale in [0.8, 1.1], dx, dy within +-0.05)."""
    t = torch.arange(num_frames, dtype=torch.float64) / FPS
    freq = 2 * math.pi * _uniform(gen, (num_videos, 1, 3), 0.05, 0.3)
    wave = torch.sin(freq * t[:, None] + _uniform(gen, (num_videos, 1, 3), 0.0, 2 * math.pi))  # (V, F, 3)
    scale = _uniform(gen, (num_videos, 1), 0.83, 1.07) + 0.03 * wave[..., 0]
    return torch.stack([scale, 0.05 * wave[..., 1], 0.05 * wave[..., 2]], dim=-1)


# --------------------------------------------------------------------------- feature encoder

# Each of the 14 evaluation joints is one body part; its appearance depends on the local rotations of
# two SMPL joints (the joint itself and its neighbour along the limb), its 2D position and its depth.
PART_SMPL_JOINTS = (
    (8, 11), (5, 2), (2, 0), (1, 0), (4, 1), (7, 10),  # R ankle, R knee, R hip, L hip, L knee, L ankle
    (21, 23), (19, 17), (17, 14), (16, 13), (18, 16), (20, 22),  # R wrist .. L wrist
    (12, 9), (15, 12),  # neck, head
)
GLOBAL_SMPL_JOINTS = (0, 3, 6, 9)  # root and spine: the torso, never hidden part by part
PART_INPUT = 2 * 6 + 2 + 1
GLOBAL_INPUT = len(GLOBAL_SMPL_JOINTS) * 6 + 10 + 3
PART_HIDDEN, GLOBAL_HIDDEN, MAX_LATENT = 64, 128, 512
# tanh of a unit-variance input has variance 0.39: this gain brings the features back to about 1.
_OUTPUT_GAIN = 1.6
CALIBRATION_VIDEOS, CALIBRATION_FRAMES = 16, 64


class FeatureEncoder:
    """A fixed random map from body state to a ``feature_dim`` vector (the benchmark's "image network").

    latent = sum over parts j of MLP_j(part state j) + MLP_g(global state), where a hidden part
    contributes the occluder code instead; feature = gain * tanh(standardise(latent @ M)) + noise.
    MLP_j: 15 -> 64 (tanh) -> latent; MLP_g: 37 -> 128 (tanh) -> latent; latent dim min(C, 512).
    ``standardise`` is a fixed per-dimension affine map set once by :meth:`calibrate`.
    """

    def __init__(self, feature_dim: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        latent = min(feature_dim, MAX_LATENT)
        P = len(PART_SMPL_JOINTS)

        def normal(*shape: int, std: float) -> Tensor:
            return torch.randn(shape, generator=gen) * std

        self.part_w1 = normal(P, PART_INPUT, PART_HIDDEN, std=1.5 / math.sqrt(PART_INPUT))
        self.part_b1 = normal(P, PART_HIDDEN, std=0.5)
        # The 14 second layers stacked: hidden (N, 14 * 64) @ (14 * 64, latent) sums the parts in one matmul.
        self.part_w2 = normal(P * PART_HIDDEN, latent, std=1.0 / math.sqrt(PART_HIDDEN))
        self.global_w1 = normal(GLOBAL_INPUT, GLOBAL_HIDDEN, std=1.5 / math.sqrt(GLOBAL_INPUT))
        self.global_b1 = normal(GLOBAL_HIDDEN, std=0.5)
        self.global_w2 = normal(GLOBAL_HIDDEN, latent, std=1.0 / math.sqrt(GLOBAL_HIDDEN))
        # The occluder's appearance in a part's hidden units; set per part by calibrate().
        self.occluder_code = normal(PART_HIDDEN, std=1.0)
        self.occluder = torch.zeros(P, PART_HIDDEN)
        self.mix = normal(latent, feature_dim, std=1.0 / math.sqrt(latent))
        self.mean = torch.zeros(feature_dim)
        self.inv_std = torch.ones(feature_dim)

    @property
    def feature_dim(self) -> int:
        return int(self.mix.shape[1])

    def part_hidden(self, state: "BodyState") -> Tensor:
        """Hidden units (N, 14, 64) of every part's MLP."""
        N = state.rotmats.shape[0]
        rot6d = rotmat_to_rot6d(state.rotmats)  # (N, 24, 6)
        joints3d = state.joints3d
        pelvis_depth = 0.5 * (joints3d[:, 2, 2] + joints3d[:, 3, 2])
        depth = 3.0 * (joints3d[..., 2] - pelvis_depth[:, None])  # (N, 14), x3: about the range of 2D coords
        parts = torch.cat([rot6d[:, PART_SMPL_JOINTS].reshape(N, -1, 12), state.joints2d, depth[..., None]], dim=-1)
        return torch.tanh(torch.einsum("npi,pih->nph", parts, self.part_w1) + self.part_b1)

    def mixed(self, state: "BodyState", hidden: Tensor) -> Tensor:
        """Pre-activation (N, C): the parts' and the global contributions, mixed. hidden: (N, 14) bool."""
        N = state.rotmats.shape[0]
        rot6d = rotmat_to_rot6d(state.rotmats)  # (N, 24, 6)
        # Tables V/VI: a part under the square shows the occluder, not itself.
        h = torch.where(hidden[..., None], self.occluder, self.part_hidden(state))  # (N, 14, 64)
        latent = h.reshape(N, -1) @ self.part_w2
        glob = torch.cat([rot6d[:, GLOBAL_SMPL_JOINTS].reshape(N, -1), 0.5 * state.betas, state.cam], dim=-1)
        latent = latent + torch.tanh(glob @ self.global_w1 + self.global_b1) @ self.global_w2
        return latent @ self.mix

    def calibrate(self, state: "BodyState") -> None:
        """Fix the occluder and the standardisation from clean reference frames.

        The occluder code of a part is its mean hidden activation shifted by one standard deviation
        times a fixed random pattern: hiding a part removes what the part says about the body and
        adds a fixed "occluder" look of the usual size, without pushing the feature off its range.
        """
        h = self.part_hidden(state)  # (N, 14, 64)
        self.occluder = (h.mean(0) + h.std(0) * self.occluder_code).clamp(-1.0, 1.0)
        pre = self.mixed(state, torch.zeros(state.joints2d.shape[:2], dtype=torch.bool))
        self.mean = pre.mean(0)
        self.inv_std = 1.0 / pre.std(0).clamp_min(1e-6)

    def __call__(self, state: "BodyState", hidden: Tensor, noise: Tensor) -> Tensor:
        """Features (N, C) float32 of the frames' ``state``; hidden (N, 14) bool; noise (N, C) already scaled."""
        pre = (self.mixed(state, hidden) - self.mean) * self.inv_std
        return _OUTPUT_GAIN * torch.tanh(pre) + noise


@dataclasses.dataclass
class BodyState:
    """Per-frame body state, float32: rotmats (N, 24, 3, 3), betas (N, 10), joints3d (N, 14, 3),
    cam (N, 3) weak perspective (s, tx, ty), joints2d (N, 14, 2)."""

    rotmats: Tensor
    betas: Tensor
    joints3d: Tensor
    cam: Tensor
    joints2d: Tensor


def body_state(pose: Tensor, betas: Tensor, wobble: Tensor, body: BodyModel) -> BodyState:
    """Pose the body: pose (N, 72), betas (N, 10), camera wobble (N, 3) -> :class:`BodyState`."""
    rotmats = axis_angle_to_rotmat(pose.reshape(-1, 24, 3))
    joints3d = body.joints14(rotmats, betas)  # (N, 14, 3)
    # The crop follows the person (as HMR's crops do): the camera centres the pelvis, plus a wobble.
    pelvis_xy = 0.5 * (joints3d[:, 2, :2] + joints3d[:, 3, :2])
    cam = torch.cat([wobble[:, :1], wobble[:, 1:] - pelvis_xy], dim=-1)
    return BodyState(rotmats, betas, joints3d, cam, project_weak_perspective(joints3d, cam))


def sample_videos(num_videos: int, num_frames: int, gen: torch.Generator, body: BodyModel) -> tuple[Tensor, BodyState]:
    """Motion, camera and body of ``num_videos`` videos: pose (N, 72) and the frames' body state, N = V * F."""
    pose, betas = sample_motion(num_videos, num_frames, gen)
    wobble = sample_camera_wobble(num_videos, num_frames, gen).reshape(-1, 3).float()
    pose = pose.reshape(-1, 72).float()
    return pose, body_state(pose, betas.float().repeat_interleave(num_frames, dim=0), wobble, body)


# --------------------------------------------------------------------------- splits


def _stream_seed(*key: int) -> int:
    """An independent 63-bit seed for one random stream (benchmark seed, split, stream)."""
    return int(np.random.SeedSequence(list(key)).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def _generator(*key: int) -> torch.Generator:
    return torch.Generator().manual_seed(_stream_seed(*key))


def generate_split(cfg: DataConfig, body: BodyModel, encoder: FeatureEncoder, split_index: int) -> VideoSplit:
    """One split of ``SPLITS``: its videos, ground truth (zeros where its kind lacks it) and features."""
    name, kind, count_field = SPLITS[split_index]
    V, F = getattr(cfg, count_field), cfg.frames_per_video
    pose, state = sample_videos(V, F, _generator(cfg.seed, split_index, 0), body)
    corrupted, hidden = _corrupt(cfg, state.joints2d, V, F, _generator(cfg.seed, split_index, 1))
    noise = cfg.feature_noise * torch.randn((V * F, encoder.feature_dim), generator=_generator(cfg.seed, split_index, 2))
    features = encoder(state, hidden, noise)
    shape, joints3d, joints2d = state.betas, state.joints3d, state.joints2d
    has_smpl, has_3d, has_2d = GROUND_TRUTH[kind]
    split_name = f"{kind}-{name.split('/')[0]}"
    return VideoSplit(
        name=split_name, kind=kind, features=features.contiguous(),
        video_start=torch.arange(V + 1, dtype=torch.int64) * F,
        pose=pose if has_smpl else torch.zeros_like(pose),
        shape=shape if has_smpl else torch.zeros_like(shape),
        joints3d=joints3d if has_3d else torch.zeros_like(joints3d),
        joints2d=joints2d if has_2d else torch.zeros_like(joints2d),
        corrupted=corrupted, has_smpl=has_smpl, has_3d=has_3d, has_2d=has_2d,
    )


def _corrupt(cfg: DataConfig, joints2d: Tensor, V: int, F: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Corrupted frames (N,) and hidden parts (N, 14): a schedule per video, the square on those frames."""
    c = cfg.corruption
    N = V * F
    if c.mode == "none" or c.ratio == 0.0:
        return torch.zeros(N, dtype=torch.bool), torch.zeros(N, joints2d.shape[1], dtype=torch.bool)
    corrupted = torch.cat([corruption_schedule(F, c.ratio, c.consecutive, gen) for _ in range(V)])
    centre, side = block_square(joints2d[corrupted], c.mode, gen)
    hidden = torch.zeros(N, joints2d.shape[1], dtype=torch.bool)
    hidden[corrupted] = occluded_joints(joints2d[corrupted], centre, side)
    return corrupted, hidden


def check_corruption(cfg: DataConfig, source: str | None = None) -> None:
    """Refuse a CR that cannot be laid out in runs of CnSc separated by clean frames (ConfigError)."""
    c = cfg.corruption
    if c.mode == "none":
        return
    F = cfg.frames_per_video
    runs = corrupted_frame_count(F, c.ratio, c.consecutive) // c.consecutive
    if runs * (c.consecutive + 1) - 1 > F:
        raise ConfigError(source, "data.corruption.ratio",
                          f"at most {(F + 1) // (c.consecutive + 1)} runs of {c.consecutive} corrupted frames, separated by "
                          f"clean frames, fit in a video of {F} frames; CR {c.ratio:g} needs {runs}")


def generate_benchmark(cfg: DataConfig, body: BodyModel) -> dict[str, VideoSplit]:
    """All splits of ``SPLITS`` (keys "train/3dpw", "train/h36m", "train/insta", "val", "test"), on the CPU."""
    check_corruption(cfg)
    with torch.no_grad():
        encoder = FeatureEncoder(cfg.feature_dim, _stream_seed(cfg.seed, len(SPLITS), 0))
        encoder.calibrate(sample_videos(CALIBRATION_VIDEOS, CALIBRATION_FRAMES, _generator(cfg.seed, len(SPLITS), 1), body)[1])
        return {SPLITS[i][0]: generate_split(cfg, body, encoder, i) for i in range(len(SPLITS))}


# --------------------------------------------------------------------------- cache

# DataConfig fields that do not change the generated data (windowing, mixing, where files live).
_NOT_IN_KEY = ("source", "root", "seq_len", "stride", "mix_3dpw", "mix_h36m", "mix_insta")


def cache_key(cfg: DataConfig, body_dir: Path) -> str:
    """Hex digest of every data-changing DataConfig field, the generator version and the body files' bytes."""
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_IN_KEY}
    c = cfg.corruption
    if c.mode == "none" or c.ratio == 0.0:  # all give clean data: share one cache file
        fields["corruption"] = {"mode": "none", "ratio": 0.0, "consecutive": 1}
    digest = hashlib.sha256(json.dumps({"version": GENERATOR_VERSION, "data": fields}, sort_keys=True).encode())
    for path in sorted(p for p in Path(body_dir).iterdir() if p.is_file()):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _to_record(split: VideoSplit) -> dict:
    return {f.name: getattr(split, f.name) for f in dataclasses.fields(split)}


def load_or_generate(cfg: DataConfig, body_dir: Path, cache_dir: Path) -> dict[str, VideoSplit]:
    """The benchmark for ``cfg``: read from ``cache_dir`` when generated before, else generated and saved.

    The file is named by :func:`cache_key`; it is written to a temporary file and renamed into place,
    so trials generating the same data at once each leave a whole file.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / f"synthetic-{cache_key(cfg, body_dir)[:24]}.pt"
    if path.is_file():
        records = torch.load(path, map_location="cpu", weights_only=True)
        return {name: VideoSplit(**record) for name, record in records.items()}
    splits = generate_benchmark(cfg, BodyModel.from_dir(body_dir))
    cache_dir.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=cache_dir, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save({name: _to_record(split) for name, split in splits.items()}, stream)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return splits
