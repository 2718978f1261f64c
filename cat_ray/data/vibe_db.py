"""VIBE's preprocessed datasets as :class:`VideoSplit` (issue 5, item 2).

Reads the files VIBE's ``lib/data_utils/*_utils.py`` write (joblib dicts ``3dpw_{train,val,test}_db.pt``,
``h36m_{train,test}_25fps_db.pt``, ``mpii3d_{train,val}_db.pt``, ``posetrack_train_db.pt``, and the h5
file ``insta_train_db.h5``) and converts them as VIBE's ``Dataset2D``/``Dataset3D``/``Insta`` do:

* videos are the runs of equal consecutive ``vid_name`` (VIBE's ``split_into_chunks``);
* 2D joints are VIBE's crop transform (box ``bbox`` = cx, cy, w, h enlarged 1.2x to a 224 patch,
  ``transfrom_keypoints``) followed by ``normalize_2d_kp(kp, 224)``, which together give
  ``2 (x - cx) / (1.2 w)``; InstaVariety's joints are already in 224-pixel crops (``2 x / 224 - 1``);
* the 14 evaluation joints are VIBE's "common" (LSP) joints: indices 25..38 of its 49-joint
  ("spin") layout, the 14-joint layout itself (3DPW's 2D joints, its val/test 3D joints), or for
  InstaVariety's 25 OpenPose-style joints their nearest counterparts (see ``INSTA_TO_J14``).

A converted split is cached once per node as a torch file (features included) written atomically
under a file lock and memory-mapped on every later load (``torch.load(mmap=True)``), so a source
larger than memory is read once, chunk by chunk, and never held whole.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from cat_ray.data.types import VideoSplit
from cat_ray.paths import cache_root

CONVERTER_VERSION = 1  # bump when the conversion changes: older cache files are then ignored
CHUNK_FRAMES = 65536  # frames converted at a time: bounds memory for files larger than RAM
CROP_SIZE = 224.0  # VIBE's patch size
CROP_SCALE = 1.2  # VIBE's transfrom_keypoints enlarges the box by this factor (do_augment=False)
SPIN_TO_J14 = list(range(25, 39))  # VIBE's 49 "spin" joints -> the 14 "common" (LSP) joints
# InstaVariety (VIBE kp_utils.get_insta_joint_names) has OpenPose joints, no LSP ones: R/L ankle are
# OP RAnkle (24) / OP LAnkle (23), hips/knees/arms/neck their OP counterparts, head top itself.
INSTA_TO_J14 = [24, 1, 2, 3, 4, 23, 6, 7, 8, 9, 10, 11, 12, 13]


class VibeDataError(ValueError):
    """A missing or malformed VIBE-format file: names the path, the key and how to obtain the file."""


@dataclass(frozen=True)
class VibeSource:
    kind: str  # VideoSplit.kind: the ground truth it carries ("3dpw" all, "h36m" 2D + 3D, "insta" 2D)
    files: dict[str, str]  # split -> file name under the VIBE db folder
    has_smpl: bool
    has_3d: bool
    has_2d: bool
    obtain: str  # where a user gets the file


_PREPARE = "VIBE's scripts/prepare_training_data.sh (https://github.com/mkocabas/VIBE, lib/data_utils/{}) writes it into data/vibe_db from the dataset at {}"
VIBE_SOURCES = {
    "3dpw": VibeSource("3dpw", {s: f"3dpw_{s}_db.pt" for s in ("train", "val", "test")}, True, True, True,
                       _PREPARE.format("threedpw_utils.py", "https://virtualhumans.mpi-inf.mpg.de/3DPW/")),
    "h36m": VibeSource("h36m", {s: f"h36m_{s}_25fps_db.pt" for s in ("train", "test")}, False, True, True,
                       "the Human3.6M db of VIBE/TCMR (https://github.com/hongsukchoi/TCMR_RELEASE, its data/preprocessed_data), made from http://vision.imar.ro/human3.6m"),
    "mpii3d": VibeSource("h36m", {s: f"mpii3d_{s}_db.pt" for s in ("train", "val")}, False, True, True,
                         _PREPARE.format("mpii3d_utils.py", "https://vcai.mpi-inf.mpg.de/3dhp-dataset/")),
    "insta": VibeSource("insta", {"train": "insta_train_db.h5"}, False, False, True,
                        _PREPARE.format("insta_utils.py", "https://github.com/akanazawa/human_dynamics (InstaVariety tfrecords)")),
    "posetrack": VibeSource("insta", {"train": "posetrack_train_db.pt"}, False, False, True,
                            _PREPARE.format("posetrack_utils.py", "https://posetrack.net")),
}


@dataclass
class VibeExtras:
    """What VIBE's files hold beyond :class:`VideoSplit`, frame-aligned with it."""

    joints2d_conf: Tensor  # (N, 14) float32, VIBE's visibility column: the weight of each 2D joint in its loss
    valid: Tensor  # (N,) bool, 3DPW's ``valid`` (camera pose valid) / MPI-INF-3DHP's ``valid_i``; True elsewhere
    video_names: list[str]  # (V,) the ``vid_name`` of each video


def vibe_db_path(root: Path, dataset: str, split: str) -> Path:
    """The file VIBE's preprocessing writes for ``dataset``/``split`` under ``root`` (VIBE's ``VIBE_DB_DIR``)."""
    if dataset not in VIBE_SOURCES:
        raise VibeDataError(f"unknown VIBE dataset {dataset!r}; valid: {', '.join(VIBE_SOURCES)}")
    files = VIBE_SOURCES[dataset].files
    if split not in files:
        raise VibeDataError(f"{dataset} has no split {split!r} in VIBE's data; valid: {', '.join(files)}")
    return Path(root) / files[split]


# --------------------------------------------------------------------------- joint conversion (pure)


def select_j14(joints: np.ndarray, source: str, key: str) -> np.ndarray:
    """(n, J, C) joints in one of VIBE's layouts -> (n, 14, C) in LSP order (49 spin, 14 common, 25 insta)."""
    count = joints.shape[1]
    if count == 49:
        return joints[:, SPIN_TO_J14]
    if count == 14:
        return joints
    if count == 25:
        return joints[:, INSTA_TO_J14]
    raise VibeDataError(f"{source}: {key} has {count} joints per frame; expected VIBE's 49 (spin), 14 (common) or 25 (InstaVariety)")


def normalize_by_bbox(xy: np.ndarray, bbox: np.ndarray) -> np.ndarray:
    """VIBE's transfrom_keypoints (scale 1.2, no rotation) + normalize_2d_kp(224), in closed form.

    xy: (n, J, 2) pixels; bbox: (n, 4) centre x, centre y, width, height in pixels. Returns (n, J, 2)
    in [-1, 1] over the enlarged box: ``2 (x - cx) / (1.2 w)``, ``2 (y - cy) / (1.2 h)``.
    """
    centre, size = bbox[:, None, :2], bbox[:, None, 2:4] * CROP_SCALE
    return 2.0 * (xy - centre) / size


def normalize_crop(xy: np.ndarray) -> np.ndarray:
    """normalize_2d_kp(kp, 224) of joints already in a 224-pixel crop (InstaVariety): ``2 x / 224 - 1``."""
    return 2.0 * xy / CROP_SIZE - 1.0


def video_starts(names: np.ndarray) -> np.ndarray:
    """(V + 1,) int64 offsets of the runs of equal consecutive names (VIBE's split_into_chunks groups)."""
    n = names.shape[0]
    change = np.nonzero(names[1:] != names[:-1])[0] + 1
    return np.concatenate([[0], change, [n]]).astype(np.int64) if n else np.zeros(1, dtype=np.int64)


# --------------------------------------------------------------------------- reading the sources


@contextmanager
def _open_source(path: Path) -> Iterator[Any]:
    """A mapping key -> array-like (sliceable, ``.shape``) without reading arrays whole."""
    if path.suffix == ".h5":
        import h5py

        try:
            handle = h5py.File(path, "r")
        except OSError as err:
            raise VibeDataError(f"{path}: not a readable HDF5 file ({err})") from None
        with handle:
            yield handle
        return
    import joblib

    try:
        # VIBE's dbs are uncompressed joblib dumps: mmap_mode maps their arrays instead of reading them.
        db = joblib.load(path, mmap_mode="r")
    except Exception as err:  # a foreign file's failure is reported as the user's file problem
        raise VibeDataError(f"{path}: not a readable joblib db ({type(err).__name__}: {err})") from None
    if not isinstance(db, dict):
        raise VibeDataError(f"{path}: expected a joblib dict of arrays, got {type(db).__name__}")
    yield db


def _names(raw: Any) -> np.ndarray:
    names = np.asarray(raw[:])
    return names.astype(str) if names.dtype.kind == "S" else names  # h5 stores vid_name as bytes


def _check(db: Any, path: Path, keys: dict[str, tuple[int | None, ...]], n: int) -> None:
    for key, shape in keys.items():
        if key not in db:
            raise VibeDataError(f"{path}: key {key!r} missing (keys: {', '.join(sorted(db.keys()))}); expected VIBE's preprocessed format")
        got = tuple(np.shape(db[key]))
        if len(got) != len(shape) + 1 or got[0] != n or any(e is not None and g != e for g, e in zip(got[1:], shape)):
            want = ", ".join(["N"] + ["*" if e is None else str(e) for e in shape])
            raise VibeDataError(f"{path}: {key} has shape {got}, expected ({want}) with N = {n} frames (len of vid_name)")


def _convert(path: Path, dataset: str, split: str, out: Path) -> None:
    """Read ``path`` once, chunk by chunk, and write the converted split to ``out`` (torch file)."""
    raw_features = out.with_name(f".{out.name}.{os.getpid()}.features")
    try:
        with _open_source(path) as db, open(raw_features, "wb") as feature_file:
            names, tensors, feature_dim = _convert_arrays(db, path, dataset, feature_file)
        n = int(names.shape[0])
        # The features go from disk to disk through a mapping: never whole in memory.
        features = torch.from_file(str(raw_features), shared=False, size=n * feature_dim, dtype=torch.float32).view(n, feature_dim)
        spec = VIBE_SOURCES[dataset]
        starts = video_starts(names)
        payload = {
            "version": CONVERTER_VERSION, "name": f"{dataset}-{split}", "kind": spec.kind,
            "has_smpl": spec.has_smpl, "has_3d": spec.has_3d, "has_2d": spec.has_2d,
            "video_start": torch.from_numpy(starts), "video_names": [str(names[i]) for i in starts[:-1]],
            "features": features, **tensors,
        }
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            torch.save(payload, tmp)
            os.replace(tmp, out)  # atomic: a reader sees no file or the whole file
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        raw_features.unlink(missing_ok=True)


def _convert_arrays(db: Any, path: Path, dataset: str, feature_file: Any) -> tuple[np.ndarray, dict[str, Tensor], int]:
    """Check ``db`` and convert it chunk by chunk: features appended to ``feature_file`` as float32."""
    spec = VIBE_SOURCES[dataset]
    if "vid_name" not in db:
        raise VibeDataError(f"{path}: key 'vid_name' missing; expected VIBE's preprocessed format")
    names = _names(db["vid_name"])
    n = int(names.shape[0])
    if n == 0:
        raise VibeDataError(f"{path}: holds no frames")
    needed: dict[str, tuple[int | None, ...]] = {"features": (None,), "joints2D": (None, 3)}
    if dataset != "insta":
        needed["bbox"] = (4,)
    if spec.has_3d:
        needed["joints3D"] = (None, 3)
    if spec.has_smpl:
        needed.update(pose=(72,), shape=(10,))
    _check(db, path, needed, n)
    with_smpl = spec.has_smpl or ("pose" in db and "shape" in db)  # H36M's file may carry fits: kept
    if with_smpl:
        _check(db, path, {"pose": (72,), "shape": (10,)}, n)
    valid_key = next((k for k in ("valid", "valid_i") if k in db), None)

    tensors = {"joints2d": torch.empty(n, 14, 2), "joints2d_conf": torch.empty(n, 14), "valid": torch.ones(n, dtype=torch.bool)}
    if spec.has_3d:
        tensors["joints3d"] = torch.empty(n, 14, 3)
    if with_smpl:
        tensors.update(pose=torch.empty(n, 72), shape=torch.empty(n, 10))

    def chunk(key: str, a: int, b: int, dtype: type = np.float32) -> np.ndarray:
        return np.array(db[key][a:b], dtype=dtype)  # a writable copy of this chunk only

    for a in range(0, n, CHUNK_FRAMES):
        b = min(a + CHUNK_FRAMES, n)
        kp = select_j14(chunk("joints2D", a, b, np.float64), str(path), "joints2D")
        xy = normalize_crop(kp[..., :2]) if dataset == "insta" else normalize_by_bbox(kp[..., :2], chunk("bbox", a, b, np.float64))
        tensors["joints2d"][a:b] = torch.from_numpy(xy.astype(np.float32))
        tensors["joints2d_conf"][a:b] = torch.from_numpy(kp[..., 2].astype(np.float32))
        if spec.has_3d:
            tensors["joints3d"][a:b] = torch.from_numpy(np.ascontiguousarray(select_j14(chunk("joints3D", a, b), str(path), "joints3D")))
        if with_smpl:
            tensors["pose"][a:b] = torch.from_numpy(chunk("pose", a, b))
            tensors["shape"][a:b] = torch.from_numpy(chunk("shape", a, b))
        if valid_key is not None:
            tensors["valid"][a:b] = torch.from_numpy(np.asarray(db[valid_key][a:b]).reshape(b - a) > 0)
        feature_file.write(chunk("features", a, b).tobytes())
    return names, tensors, int(db["features"].shape[1])


# --------------------------------------------------------------------------- cache and public loaders


def _cache_file(path: Path, dataset: str, split: str, cache_dir: Path) -> Path:
    """The cache file of one source version: keyed by its absolute path, size and mtime."""
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{CONVERTER_VERSION}".encode()).hexdigest()[:16]
    return cache_dir / f"{dataset}_{split}-{key}.pt"


@contextmanager
def _file_lock(lock_path: Path) -> Iterator[None]:
    """One converter per node: the other processes wait, then reuse its file."""
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def converted_split_path(root: Path, dataset: str, split: str, cache_dir: Path | None = None) -> Path:
    """Convert ``dataset``/``split`` once (per source version and node) and return its cache file."""
    path = vibe_db_path(root, dataset, split)
    if not path.is_file():
        raise VibeDataError(f"{path}: {dataset} {split} file not found (data.root = {root}); get it from {VIBE_SOURCES[dataset].obtain}")
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_root() / "vibe_db"
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = _cache_file(path, dataset, split, cache_dir)
    if not out.is_file():
        with _file_lock(cache_dir / f"{dataset}_{split}.lock"):
            if not out.is_file():  # another process may have converted it while this one waited
                _convert(path, dataset, split, out)
    return out


def _load_payload(root: Path, dataset: str, split: str, cache_dir: Path | None) -> dict[str, Any]:
    return torch.load(converted_split_path(root, dataset, split, cache_dir), mmap=True, weights_only=True)


def load_vibe_split(root: Path, dataset: str, split: str, cache_dir: Path | None = None) -> VideoSplit:
    """``dataset`` (3dpw, h36m, mpii3d, insta, posetrack) / ``split`` of VIBE's files under ``root`` as a VideoSplit.

    Tensors are memory-mapped from the cache file (``cache_dir``, default ``<cache_root>/vibe_db``).
    Ground truth a dataset lacks is zeros (expanded views: no memory) with its indicator off.
    Raises :class:`VibeDataError` naming the expected file and how to obtain it.
    """
    p = _load_payload(root, dataset, split, cache_dir)
    n = int(p["features"].shape[0])

    def field(key: str, *shape: int) -> Tensor:
        return p[key] if key in p else torch.zeros((1, *shape)).expand(n, *shape)

    return VideoSplit(
        name=p["name"], kind=p["kind"], features=p["features"], video_start=p["video_start"],
        pose=field("pose", 72), shape=field("shape", 10), joints3d=field("joints3d", 14, 3),
        joints2d=p["joints2d"], corrupted=torch.zeros(n, dtype=torch.bool),
        has_smpl=p["has_smpl"], has_3d=p["has_3d"], has_2d=p["has_2d"],
    )


def load_vibe_extras(root: Path, dataset: str, split: str, cache_dir: Path | None = None) -> VibeExtras:
    """The 2D joint confidences, per-frame validity and video names of the same split (same cache)."""
    p = _load_payload(root, dataset, split, cache_dir)
    return VibeExtras(joints2d_conf=p["joints2d_conf"], valid=p["valid"], video_names=list(p["video_names"]))
