"""VIBE-format datasets: VideoSplits from fixtures in the exact file formats, windows, the converted cache."""
from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest
import torch

from cat_ray.data import vibe_db
from cat_ray.data.types import gather_windows
from cat_ray.data.vibe_db import VibeDataError, load_vibe_extras, load_vibe_split
from cat_ray.data.windows import eval_windows, training_window_starts
from fixtures_real import write_insta_h5, write_vibe_db

LENGTHS = (40, 23, 31)


def vibe_crop_normalize(kp: np.ndarray, bbox: np.ndarray) -> np.ndarray:
    """VIBE's own path, point by point: the affine of gen_trans_from_patch_cv (3 point pairs, scale 1.2,
    no rotation) applied as trans_point2d, then normalize_2d_kp(., 224)."""
    out = np.empty(kp.shape[:-1] + (2,))
    for i, (cx, cy, w, h) in enumerate(bbox):
        sw, sh = w * 1.2, h * 1.2
        src = np.array([[cx, cy], [cx, cy + sh / 2], [cx + sw / 2, cy]])
        dst = np.array([[112.0, 112.0], [112.0, 224.0], [224.0, 112.0]])
        trans = np.linalg.solve(np.c_[src, np.ones(3)], dst).T  # (2, 3), what cv2.getAffineTransform returns
        pts = np.c_[kp[i, :, :2], np.ones(kp.shape[1])] @ trans.T
        out[i] = 2.0 * pts / 224.0 - 1.0
    return out


def test_3dpw_train_becomes_a_full_ground_truth_split(tmp_path: Path) -> None:
    _, db = write_vibe_db(tmp_path / "db", "3dpw", "train", LENGTHS)
    split = load_vibe_split(tmp_path / "db", "3dpw", "train", cache_dir=tmp_path / "cache")
    assert (split.name, split.kind, split.has_smpl, split.has_3d, split.has_2d) == ("3dpw-train", "3dpw", True, True, True)
    assert split.video_start.tolist() == [0, 40, 63, 94] and split.video_start.dtype == torch.int64
    assert split.num_frames == 94 and split.num_videos == 3
    torch.testing.assert_close(split.features, torch.from_numpy(db["features"]), rtol=0, atol=0)
    torch.testing.assert_close(split.pose, torch.from_numpy(db["pose"]), rtol=0, atol=0)
    torch.testing.assert_close(split.shape, torch.from_numpy(db["shape"]), rtol=0, atol=0)
    # VIBE's 49-joint layout: indices 25..38 are the 14 LSP joints.
    torch.testing.assert_close(split.joints3d, torch.from_numpy(db["joints3D"][:, 25:39]), rtol=0, atol=0)
    # 3DPW's 2D joints are VIBE's 14 "common" joints; normalised by VIBE's crop transform.
    want = vibe_crop_normalize(db["joints2D"], db["bbox"])
    torch.testing.assert_close(split.joints2d, torch.from_numpy(want).float(), rtol=1e-5, atol=1e-5)
    assert split.joints2d.shape == (94, 14, 2) and split.joints3d.shape == (94, 14, 3)
    assert split.corrupted.dtype == torch.bool and not split.corrupted.any()
    extras = load_vibe_extras(tmp_path / "db", "3dpw", "train", cache_dir=tmp_path / "cache")
    torch.testing.assert_close(extras.joints2d_conf, torch.from_numpy(db["joints2D"][..., 2]).float())
    assert extras.valid.tolist() == db["valid"].tolist()
    assert extras.video_names == ["courtyard_walk_00_0", "courtyard_walk_01_0", "courtyard_walk_02_0"]


def test_3dpw_test_keeps_its_14_regressed_joints(tmp_path: Path) -> None:
    _, db = write_vibe_db(tmp_path / "db", "3dpw", "test", LENGTHS)
    split = load_vibe_split(tmp_path / "db", "3dpw", "test", cache_dir=tmp_path / "cache")
    assert db["joints3D"].shape == (94, 14, 3)
    torch.testing.assert_close(split.joints3d, torch.from_numpy(db["joints3D"]), rtol=0, atol=0)


@pytest.mark.parametrize("dataset,split_name", [("h36m", "train"), ("mpii3d", "train"), ("mpii3d", "val")])
def test_3d_joint_datasets_have_2d_and_3d_but_no_smpl(dataset: str, split_name: str, tmp_path: Path) -> None:
    _, db = write_vibe_db(tmp_path / "db", dataset, split_name, LENGTHS)
    split = load_vibe_split(tmp_path / "db", dataset, split_name, cache_dir=tmp_path / "cache")
    assert (split.kind, split.has_smpl, split.has_3d, split.has_2d) == ("h36m", False, True, True)
    assert split.video_start.tolist() == [0, 40, 63, 94]
    torch.testing.assert_close(split.joints3d, torch.from_numpy(db["joints3D"][:, 25:39]).float(), rtol=0, atol=0)
    want = vibe_crop_normalize(db["joints2D"][:, 25:39], db["bbox"])
    torch.testing.assert_close(split.joints2d, torch.from_numpy(want).float(), rtol=1e-5, atol=1e-5)
    if dataset == "mpii3d":
        assert not split.pose.any() and split.pose.shape == (94, 72) and split.shape.shape == (94, 10)
    extras = load_vibe_extras(tmp_path / "db", dataset, split_name, cache_dir=tmp_path / "cache")
    want_valid = db["valid_i"][:, 0] > 0 if "valid_i" in db else np.ones(94, dtype=bool)
    assert extras.valid.tolist() == want_valid.tolist()


def test_posetrack_is_2d_only(tmp_path: Path) -> None:
    _, db = write_vibe_db(tmp_path / "db", "posetrack", "train", LENGTHS)
    split = load_vibe_split(tmp_path / "db", "posetrack", "train", cache_dir=tmp_path / "cache")
    assert (split.kind, split.has_smpl, split.has_3d, split.has_2d) == ("insta", False, False, True)
    assert not split.joints3d.any() and split.joints3d.shape == (94, 14, 3)
    want = vibe_crop_normalize(db["joints2D"][:, 25:39], db["bbox"])
    torch.testing.assert_close(split.joints2d, torch.from_numpy(want).float(), rtol=1e-5, atol=1e-5)


def test_insta_h5_is_2d_only_in_crop_coordinates(tmp_path: Path) -> None:
    _, db = write_insta_h5(tmp_path / "db", LENGTHS)
    split = load_vibe_split(tmp_path / "db", "insta", "train", cache_dir=tmp_path / "cache")
    assert (split.name, split.kind, split.has_smpl, split.has_3d, split.has_2d) == ("insta-train", "insta", False, False, True)
    assert split.video_start.tolist() == [0, 40, 63, 94]
    torch.testing.assert_close(split.features, torch.from_numpy(db["features"]), rtol=0, atol=0)
    # OpenPose ankles (24 R, 23 L) stand in for the LSP ankles; head top (13) is itself.
    kp = 2.0 * db["joints2D"][..., :2] / 224.0 - 1.0
    for j14, insta in ((0, 24), (5, 23), (2, 2), (12, 12), (13, 13)):
        torch.testing.assert_close(split.joints2d[:, j14], torch.from_numpy(kp[:, insta]).float())
    extras = load_vibe_extras(tmp_path / "db", "insta", "train", cache_dir=tmp_path / "cache")
    assert extras.video_names[1] == "data/insta_variety/train/insta_0001.tfrecord-1"


def test_windows_never_cross_a_video(tmp_path: Path) -> None:
    write_vibe_db(tmp_path / "db", "3dpw", "train", LENGTHS)
    split = load_vibe_split(tmp_path / "db", "3dpw", "train", cache_dir=tmp_path / "cache")
    seq_len = 16
    starts = training_window_starts(split.video_start, seq_len, stride=4)
    eval_starts, _ = eval_windows(split.video_start, seq_len)
    for s in (starts, eval_starts):
        frames = s[:, None] + torch.arange(seq_len)
        video = torch.searchsorted(split.video_start, frames, right=True) - 1
        assert (video == video[:, :1]).all() and int(frames.max()) < split.num_frames
    batch = gather_windows(split, starts, seq_len)
    assert batch.features.shape == (starts.shape[0], seq_len, 2048) and batch.has_smpl.all()


def test_the_cache_is_reused_without_reading_the_source_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_vibe_db(tmp_path / "db", "3dpw", "train", LENGTHS)
    first = load_vibe_split(tmp_path / "db", "3dpw", "train", cache_dir=tmp_path / "cache")
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len([c for c in cached if c.endswith(".pt")]) == 1 and not any("tmp" in c or "features" in c for c in cached)

    def no_read(*args, **kwargs):
        raise AssertionError("the joblib source was read again")

    monkeypatch.setattr(joblib, "load", no_read)
    second = load_vibe_split(tmp_path / "db", "3dpw", "train", cache_dir=tmp_path / "cache")
    assert torch.equal(first.features, second.features) and torch.equal(first.joints2d, second.joints2d)
    # A changed source (new size/mtime) is converted again.
    monkeypatch.undo()
    write_vibe_db(tmp_path / "db", "3dpw", "train", (30, 30), seed=1)
    third = load_vibe_split(tmp_path / "db", "3dpw", "train", cache_dir=tmp_path / "cache")
    assert third.video_start.tolist() == [0, 30, 60]


def test_conversion_by_chunks_equals_conversion_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_vibe_db(tmp_path / "db", "mpii3d", "val", LENGTHS)
    whole = load_vibe_split(tmp_path / "db", "mpii3d", "val", cache_dir=tmp_path / "a")
    monkeypatch.setattr(vibe_db, "CHUNK_FRAMES", 7)
    chunked = load_vibe_split(tmp_path / "db", "mpii3d", "val", cache_dir=tmp_path / "b")
    for key in ("features", "joints2d", "joints3d", "video_start"):
        assert torch.equal(getattr(whole, key), getattr(chunked, key)), key


def test_missing_file_names_the_path_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(VibeDataError) as err:
        load_vibe_split(tmp_path, "3dpw", "test", cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert str(tmp_path / "3dpw_test_db.pt") in message and "prepare_training_data.sh" in message
    assert "virtualhumans.mpi-inf.mpg.de/3DPW" in message


def test_unknown_dataset_or_split_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(VibeDataError, match="valid: 3dpw, h36m, mpii3d, insta, posetrack"):
        load_vibe_split(tmp_path, "amass", "train")
    with pytest.raises(VibeDataError, match="valid: train, val"):
        load_vibe_split(tmp_path, "mpii3d", "test")


def test_malformed_db_names_the_file_and_key(tmp_path: Path) -> None:
    path, db = write_vibe_db(tmp_path / "db", "h36m", "train", LENGTHS)
    db.pop("bbox")
    joblib.dump(db, path)
    with pytest.raises(VibeDataError, match=f"{path}: key 'bbox' missing"):
        load_vibe_split(tmp_path / "db", "h36m", "train", cache_dir=tmp_path / "cache")
    db["bbox"] = np.ones((94, 4))
    db["joints2D"] = db["joints2D"][:, :20]
    joblib.dump(db, path)
    with pytest.raises(VibeDataError, match="joints2D has 20 joints per frame"):
        load_vibe_split(tmp_path / "db", "h36m", "train", cache_dir=tmp_path / "cache")
    path.write_bytes(b"not a joblib file")
    with pytest.raises(VibeDataError, match=f"{path}: not a readable joblib db"):
        load_vibe_split(tmp_path / "db", "h36m", "train", cache_dir=tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").iterdir() if p.suffix != ".lock"]


def test_concurrent_loads_convert_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    write_vibe_db(tmp_path / "db", "posetrack", "train", LENGTHS)
    conversions = []
    convert = vibe_db._convert

    def counted(*args):
        conversions.append(args)
        convert(*args)

    monkeypatch.setattr(vibe_db, "_convert", counted)
    results = []
    threads = [threading.Thread(target=lambda: results.append(load_vibe_split(tmp_path / "db", "posetrack", "train", cache_dir=tmp_path / "cache"))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(conversions) == 1
    assert all(torch.equal(r.joints2d, results[0].joints2d) for r in results)
