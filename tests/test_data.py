"""The synthetic benchmark: corruption (CR, CnSc, blocking), windows, source mixing, generation and cache."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from cat_ray.body.model import BodyModel
from cat_ray.config import ConfigError, CorruptionConfig, DataConfig
from cat_ray.data.corruption import block_square, corrupted_frame_count, corruption_schedule, occluded_joints
from cat_ray.data.mixing import MixedWindowSampler, source_counts
from cat_ray.data.synthetic import _LIMITS, SPLITS, generate_benchmark, load_or_generate, sample_motion
from cat_ray.data.windows import eval_windows, training_window_starts
from cat_ray.rotations import axis_angle_to_rotmat

SMALL = DataConfig(feature_dim=64, train_videos=4, val_videos=3, test_videos=3, frames_per_video=48,
                   seq_len=8, stride=4, feature_noise=0.05)


def _with(cfg: DataConfig, **corruption) -> DataConfig:
    return dataclasses.replace(cfg, corruption=CorruptionConfig(**corruption))


def _runs(mask: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D bool mask."""
    padded = torch.cat([torch.tensor([False]), mask, torch.tensor([False])]).to(torch.int8)
    edges = torch.diff(padded)
    return (torch.nonzero(edges == -1)[:, 0] - torch.nonzero(edges == 1)[:, 0]).tolist()


@pytest.fixture
def body(body_dir) -> BodyModel:
    return BodyModel.from_dir(body_dir)


# --------------------------------------------------------------------------- corruption


@pytest.mark.parametrize("frames, ratio, consecutive", [
    (96, 0.33, 1), (96, 0.33, 2), (96, 0.33, 3), (96, 0.1, 2), (96, 0.2, 3), (50, 0.2, 3), (16, 0.33, 3), (7, 0.5, 1),
])
def test_schedule_has_exact_count_in_runs_of_cnsc(frames, ratio, consecutive):
    expected = consecutive * round(ratio * frames / consecutive + 1e-9)
    assert corrupted_frame_count(frames, ratio, consecutive) == expected
    for seed in range(20):
        mask = corruption_schedule(frames, ratio, consecutive, torch.Generator().manual_seed(seed))
        assert mask.shape == (frames,) and mask.dtype == torch.bool
        assert int(mask.sum()) == expected
        assert _runs(mask) == [consecutive] * (expected // consecutive)  # runs never merge


def test_schedule_rounds_to_whole_runs_half_up():
    assert corrupted_frame_count(96, 0.10, 2) == 10  # 4.8 runs -> 5
    assert corrupted_frame_count(30, 0.10, 2) == 4  # 1.5 runs -> 2
    assert corrupted_frame_count(96, 0.0, 3) == 0
    assert corrupted_frame_count(96, 1 / 3, 3) == 33


def test_schedule_positions_are_random_and_reach_both_ends():
    masks = torch.stack([corruption_schedule(20, 0.3, 2, torch.Generator().manual_seed(s)) for s in range(200)])
    assert len({tuple(m.tolist()) for m in masks}) > 50
    assert masks[:, 0].any() and masks[:, -1].any()


def test_zero_ratio_corrupts_nothing_and_too_many_runs_are_refused():
    assert not corruption_schedule(96, 0.0, 3, torch.Generator()).any()
    with pytest.raises(ValueError, match="runs of 3"):
        corruption_schedule(96, 0.9, 3, torch.Generator())
    # The densest possible layout still fits: 8 runs of 1 in 15 frames.
    assert _runs(corruption_schedule(15, 8 / 15, 1, torch.Generator())) == [1] * 8


def test_square_is_half_the_body_height_centred_or_on_the_body():
    joints = torch.rand(100, 14, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([0.6, 1.6]) - 0.8
    low, high = joints.amin(1), joints.amax(1)
    centre, side = block_square(joints, "center", torch.Generator())
    torch.testing.assert_close(side, 0.5 * (high[:, 1] - low[:, 1]))
    torch.testing.assert_close(centre, 0.5 * (low + high))
    centre_r, side_r = block_square(joints, "random", torch.Generator().manual_seed(1))
    torch.testing.assert_close(side_r, side)
    assert ((centre_r >= low) & (centre_r <= high)).all()
    assert not torch.allclose(centre_r, centre)


def test_occluded_joints_are_those_inside_the_square():
    joints = torch.tensor([[[0.0, 0.0], [0.24, 0.0], [0.26, 0.0], [0.0, -0.3], [0.2, 0.2]]])
    hidden = occluded_joints(joints, torch.zeros(1, 2), torch.tensor([0.5]))
    assert hidden.tolist() == [[True, True, False, False, True]]


# --------------------------------------------------------------------------- windows


VIDEO_START = torch.tensor([0, 20, 36, 69, 77, 90])  # lengths 20, 16, 33, 8, 13


def test_training_windows_stay_inside_videos_with_vibe_stride():
    starts = training_window_starts(VIDEO_START, 8, 4)
    assert starts.dtype == torch.int64
    video = torch.searchsorted(VIDEO_START, starts, right=True) - 1
    assert (starts + 8 <= VIDEO_START[video + 1]).all()
    lengths = (VIDEO_START[1:] - VIDEO_START[:-1]).tolist()
    assert len(starts) == sum((n - 8) // 4 + 1 for n in lengths)
    assert starts[:4].tolist() == [0, 4, 8, 12] and 20 in starts.tolist()
    assert len(training_window_starts(VIDEO_START, 14, 1)) == sum(max(0, n - 13) for n in lengths)


def test_eval_windows_keep_every_frame_exactly_once():
    for seq_len in (1, 5, 8):
        starts, keep = eval_windows(VIDEO_START, seq_len)
        assert keep.shape == (len(starts), seq_len)
        video = torch.searchsorted(VIDEO_START, starts, right=True) - 1
        assert (starts >= VIDEO_START[video]).all() and (starts + seq_len <= VIDEO_START[video + 1]).all()
        frames = (starts[:, None] + torch.arange(seq_len))[keep]
        assert torch.equal(torch.bincount(frames, minlength=90), torch.ones(90, dtype=torch.int64))


def test_eval_windows_refuse_a_video_shorter_than_the_window():
    with pytest.raises(ValueError, match="video 3 has 8 frames"):
        eval_windows(VIDEO_START, 9)


# --------------------------------------------------------------------------- mixing


def test_source_counts_round_to_the_batch_size():
    assert source_counts([0.4, 0.3, 0.3], 32) == [13, 10, 9]
    assert source_counts([1, 1, 1], 32) == [11, 11, 10]
    assert source_counts([2, 0, 1], 9) == [6, 0, 3]
    for batch in range(1, 40):
        assert sum(source_counts([0.5, 0.25, 0.25], batch)) == batch


def test_sampler_mixes_sources_in_proportion(body):
    splits = generate_benchmark(SMALL, body)
    cfg = dataclasses.replace(SMALL, mix_3dpw=0.5, mix_h36m=0.0, mix_insta=0.5)
    sampler = MixedWindowSampler.from_config(cfg, splits, seed=3)
    batch = sampler.sample(10)
    assert batch.features.shape == (10, 8, 64) and batch.corrupted.shape == (10, 8)
    assert batch.has_smpl.tolist() == [True] * 5 + [False] * 5  # 3dpw first, h36m skipped, then insta
    assert batch.has_3d.tolist() == [True] * 5 + [False] * 5
    assert batch.has_2d.all()
    # Every window is a real window of its split: features match the split's frames.
    insta = splits["train/insta"]
    for window in batch.features[5:]:
        hits = (insta.features == window[0]).all(1).nonzero()[:, 0]
        assert len(hits) == 1 and torch.equal(insta.features[hits[0]: hits[0] + 8], window)


def test_workers_share_one_global_batch(body):
    """Ranks draw the same global batch and each keeps its own contiguous rows: the shards add up to it."""
    splits = generate_benchmark(SMALL, body)

    def draw(seed: int, rank: int, world: int) -> list[torch.Tensor]:
        sampler = MixedWindowSampler.from_config(SMALL, splits, seed=seed, rank=rank, world_size=world)
        return [sampler.sample(8).features for _ in range(3)]

    whole = draw(0, 0, 1)
    shards = [draw(0, rank, 2) for rank in range(2)]
    for step in range(3):
        assert shards[0][step].shape[0] == 4
        assert torch.equal(torch.cat([shards[0][step], shards[1][step]]), whole[step])
    assert not torch.equal(whole[0], draw(1, 0, 1)[0])
    with pytest.raises(ValueError, match="rank 2"):
        MixedWindowSampler.from_config(SMALL, splits, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="does not split"):
        MixedWindowSampler.from_config(SMALL, splits, seed=0, rank=0, world_size=3).sample(8)


# --------------------------------------------------------------------------- generation


def test_generation_is_deterministic_for_a_seed(body):
    a = generate_benchmark(SMALL, body)
    b = generate_benchmark(SMALL, body)
    c = generate_benchmark(dataclasses.replace(SMALL, seed=1), body)
    assert list(a) == [name for name, _, _ in SPLITS]
    for name in a:
        for field in ("features", "pose", "shape", "joints3d", "joints2d", "video_start", "corrupted"):
            assert torch.equal(getattr(a[name], field), getattr(b[name], field)), (name, field)
        assert not torch.equal(a[name].features, c[name].features)
        assert not torch.equal(a[name].joints2d, c[name].joints2d)
    assert not torch.equal(a["train/3dpw"].pose, a["test"].pose)


def test_splits_have_the_ground_truth_of_their_dataset(body):
    splits = generate_benchmark(SMALL, body)
    expected = {"train/3dpw": (True, True, True), "train/h36m": (False, True, True),
                "train/insta": (False, False, True), "val": (True, True, True), "test": (True, True, True)}
    for name, (smpl, has3d, has2d) in expected.items():
        split = splits[name]
        assert (split.has_smpl, split.has_3d, split.has_2d) == (smpl, has3d, has2d)
        assert split.num_frames == split.num_videos * 48 and split.features.dtype == torch.float32
        assert (split.pose.abs().sum() > 0) == smpl and (split.shape.abs().sum() > 0) == smpl
        assert (split.joints3d.abs().sum() > 0) == has3d and (split.joints2d.abs().sum() > 0) == has2d
    assert splits["train/3dpw"].num_videos == 4 and splits["test"].num_videos == 3


def test_motion_is_smooth_and_inside_the_joint_limits():
    pose, betas = sample_motion(8, 96, torch.Generator().manual_seed(0))
    body = pose.reshape(8, 96, 24, 3)[:, :, 1:]
    assert (body >= _LIMITS[..., 0]).all() and (body <= _LIMITS[..., 1]).all()
    assert (body[..., 3:5, 0] >= 0).all()  # knees bend one way only
    rot = axis_angle_to_rotmat(pose.reshape(8, 96, 24, 3))
    accel = rot[:, 2:] - 2 * rot[:, 1:-1] + rot[:, :-2]
    assert accel.abs().max() < 0.05  # 30 fps: no jumps, also not for the root
    assert body.std(dim=1).mean() > 0.03  # it does move
    assert betas.shape == (8, 10)


def test_features_carry_the_pose(body):
    cfg = dataclasses.replace(SMALL, train_videos=24, test_videos=8, feature_dim=512)
    splits = generate_benchmark(cfg, body)
    train, test = splits["train/3dpw"], splits["test"]
    var = train.features.var(0)
    assert 0.3 < var.mean() < 2.0 and var.min() > 0.05  # about unit variance per dimension

    def target(split):  # rotation matrices: no axis-angle wrap-around
        return axis_angle_to_rotmat(split.pose.reshape(-1, 24, 3)).reshape(-1, 216).double()

    x, y = train.features.double(), target(train)
    mx, my = x.mean(0), y.mean(0)
    w = torch.linalg.solve((x - mx).T @ (x - mx) + 100.0 * torch.eye(x.shape[1], dtype=x.dtype), (x - mx).T @ (y - my))
    pred = (test.features.double() - mx) @ w + my
    error = ((pred - target(test)) ** 2).mean()
    baseline = ((my - target(test)) ** 2).mean()
    assert error < 0.4 * baseline  # a linear probe: a network does far better


@pytest.mark.parametrize("mode", ["center", "random"])
def test_corruption_is_exact_per_video_and_hits_only_scheduled_frames(body, mode):
    clean = generate_benchmark(SMALL, body)
    cfg = _with(SMALL, mode=mode, ratio=0.33, consecutive=3)
    corrupt = generate_benchmark(cfg, body)
    for name in clean:
        c, k = corrupt[name], clean[name]
        assert not k.corrupted.any()
        for v in range(c.num_videos):
            mask = c.corrupted[c.video_start[v]: c.video_start[v + 1]]
            assert int(mask.sum()) == corrupted_frame_count(48, 0.33, 3) == 15
            assert _runs(mask) == [3] * 5
        # Clean frames are bit-identical whatever the corruption; blocked frames lose information.
        assert torch.equal(c.features[~c.corrupted], k.features[~c.corrupted])
        changed = (c.features[c.corrupted] - k.features[c.corrupted]).norm(dim=1)
        assert (changed > 1.0).float().mean() > 0.9
        # Ground truth is that of the true body, blocked or not.
        assert torch.equal(c.joints2d, k.joints2d) and torch.equal(c.pose, k.pose)


def test_blocking_modes_differ_and_ratio_zero_is_clean(body):
    centre = generate_benchmark(_with(SMALL, mode="center", ratio=0.2, consecutive=1), body)["test"]
    random_ = generate_benchmark(_with(SMALL, mode="random", ratio=0.2, consecutive=1), body)["test"]
    assert torch.equal(centre.corrupted, random_.corrupted)  # same schedule stream
    assert not torch.equal(centre.features, random_.features)
    clean = generate_benchmark(SMALL, body)["test"]
    off = generate_benchmark(_with(SMALL, mode="center", ratio=0.0, consecutive=2), body)["test"]
    assert torch.equal(off.features, clean.features) and not off.corrupted.any()


def test_impossible_corruption_is_a_config_error(body):
    with pytest.raises(ConfigError, match="data.corruption.ratio"):
        generate_benchmark(_with(SMALL, mode="center", ratio=0.9, consecutive=2), body)


def test_cache_round_trip_is_identical_and_reused(body_dir, tmp_path):
    cfg = _with(SMALL, mode="random", ratio=0.2, consecutive=2)
    first = load_or_generate(cfg, body_dir, tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"
    stamp = files[0].stat().st_mtime_ns
    # Windowing and mixing do not change the data: the same file serves them.
    again = load_or_generate(dataclasses.replace(cfg, seq_len=4, stride=2, mix_h36m=0.0), body_dir, tmp_path)
    assert list(tmp_path.iterdir()) == files and files[0].stat().st_mtime_ns == stamp
    for name, split in first.items():
        for field in dataclasses.fields(split):
            a, b = getattr(split, field.name), getattr(again[name], field.name)
            assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, (name, field.name)
    load_or_generate(dataclasses.replace(cfg, seed=5), body_dir, tmp_path)
    assert len(list(tmp_path.iterdir())) == 2
