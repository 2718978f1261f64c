"""Writers of small files in the exact formats of the licensed ones (nothing licensed is downloadable here).

* The official SMPL ``.pkl``: a Python-2 style protocol-2 pickle (``numpy.core.multiarray`` and
  ``__builtin__`` globals, every ``str`` as a Python-2 byte string read back through latin1) whose
  arrays are ``chumpy.ch.Ch`` objects with chumpy's pickled state (``Ch.__getstate__``: the
  instance dict minus ``_parents``/``_cache``, the value under ``x``) and whose ``J_regressor`` is a
  ``scipy.sparse.csc.csc_matrix``; made without chumpy or old scipy installed.
* VIBE's ``J_regressor_h36m.npy`` (17 x 6890), ``J_regressor_extra.npy`` (9 x 6890), ``smpl_mean_params.npz``.
* VIBE's joblib dbs (``3dpw_*_db.pt``, ``h36m_*_25fps_db.pt``, ``mpii3d_*_db.pt``, ``posetrack_train_db.pt``)
  with the keys, shapes and dtypes of VIBE's ``lib/data_utils/*_utils.py``, and InstaVariety's h5.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import h5py
import joblib
import numpy as np

from cat_ray.body.standin import build_standin

V = 6890  # SMPL vertices

# --------------------------------------------------------------------------- python-2 style pickles

# Module names as a Python-2 interpreter with numpy 1.x and scipy 0.x wrote them.
_PY2_MODULES = {
    "builtins": "__builtin__",
    "copyreg": "copy_reg",
    "numpy._core.multiarray": "numpy.core.multiarray",
    "numpy._core.numeric": "numpy.core.numeric",
}


class Py2Pickler(pickle._Pickler):  # the pure-Python pickler, so that its opcodes can be chosen
    """Protocol 2 as Python 2 wrote it: byte strings (``str``) as BINSTRING, Python-2 module names."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str

    def save_global(self, obj: Any, name: str | None = None) -> None:
        # No import check: the classes below pose as chumpy/scipy classes that are not installed.
        name = name or obj.__qualname__
        module = getattr(obj, "__module__", None) or pickle.whichmodule(obj, name)
        module = _PY2_MODULES.get(module, module)
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[type] = save_global


def py2_dumps(obj: Any) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


class FakeCh:
    """Pickles exactly as ``chumpy.ch.Ch(x)`` does, with no chumpy installed."""

    def __init__(self, x: np.ndarray):
        self.x = np.asarray(x, dtype=np.float64)

    def __getstate__(self) -> dict[str, Any]:
        # chumpy's Ch.__new__ + set(x=...): these attributes; __getstate__ drops _parents and _cache.
        return {"_dirty_vars": {"x"}, "_itr": None, "_make_dense": False, "_make_sparse": False, "_depends_on_deps": {}, "x": self.x}


FakeCh.__module__, FakeCh.__qualname__, FakeCh.__name__ = "chumpy.ch", "Ch", "Ch"


class FakeCsc:
    """Pickles as scipy 0.x's ``scipy.sparse.csc.csc_matrix`` (NEWOBJ + its instance dict)."""

    def __init__(self, dense: np.ndarray):
        from scipy import sparse

        m = sparse.csc_matrix(dense)
        self.state = {"_shape": tuple(int(s) for s in m.shape), "maxprint": 50, "format": "csc",
                      "data": m.data.astype(np.float64), "indices": m.indices.astype(np.int32),
                      "indptr": m.indptr.astype(np.int32), "has_sorted_indices": True}

    def __getstate__(self) -> dict[str, Any]:
        return self.state


FakeCsc.__module__, FakeCsc.__qualname__, FakeCsc.__name__ = "scipy.sparse.csc", "csc_matrix", "csc_matrix"


def smpl_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Plain arrays of an SMPL-shaped model (the stand-in body's, V = 6890), typed as the official file's."""
    arrays = build_standin(seed)
    arrays.pop("J_regressor_h36m")
    tree = np.asarray(arrays["kintree_table"], dtype=np.int64)
    tree[0, 0] = 2**32 - 1  # the official file stores the root's parent as uint32 -1
    return {**arrays, "J_regressor": np.asarray(arrays["J_regressor"].toarray()), "kintree_table": tree,
            "f": np.asarray(arrays["f"], dtype=np.uint32)}


def write_official_smpl(path: Path, arrays: dict[str, np.ndarray], chumpy_keys: tuple[str, ...] = ("v_template", "shapedirs", "posedirs", "weights", "J")) -> Path:
    """An SMPL ``.pkl`` laid out as the official one: chumpy arrays, a sparse J_regressor, extra keys."""
    model: dict[str, Any] = {
        "J": arrays["J_regressor"] @ arrays["v_template"],
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "vert_sym_idxs": np.arange(V, dtype=np.int64),
        "J_regressor_prior": FakeCsc(arrays["J_regressor"]),
        "weights_prior": arrays["weights"].copy(),
    }
    model.update(arrays)
    model["J_regressor"] = FakeCsc(arrays["J_regressor"])
    for key in chumpy_keys:
        model[key] = FakeCh(model[key])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(py2_dumps(model))
    return path


def write_code_running_pickle(path: Path, marker: Path) -> Path:
    """A pickle whose REDUCE would call ``os.system`` to create ``marker``: it must be refused unrun."""

    class RunsCode:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps({"v_template": RunsCode()}, protocol=2))
    return path


def write_vibe_data(folder: Path, seed: int = 0, h36m_shape: tuple[int, int] = (17, V)) -> dict[str, Path]:
    """VIBE's data files as in vibe_data.zip; ``h36m_shape`` lets a test write a malformed regressor."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def regressor(shape: tuple[int, int]) -> np.ndarray:
        reg = np.zeros(shape)
        for j in range(shape[0]):
            reg[j, rng.choice(shape[1], 6, replace=False)] = 1.0 / 6
        return reg

    paths = {"J_regressor_h36m.npy": folder / "J_regressor_h36m.npy", "J_regressor_extra.npy": folder / "J_regressor_extra.npy",
             "smpl_mean_params.npz": folder / "smpl_mean_params.npz"}
    np.save(paths["J_regressor_h36m.npy"], regressor(h36m_shape))
    np.save(paths["J_regressor_extra.npy"], regressor((9, V)))
    np.savez(paths["smpl_mean_params.npz"], pose=rng.normal(0, 0.1, 144).astype(np.float64),
             shape=rng.normal(0, 0.1, 10).astype(np.float64), cam=np.array([0.9, 0.0, 0.0]))
    return paths


# --------------------------------------------------------------------------- VIBE dbs

DB_FILES = {
    ("3dpw", "train"): "3dpw_train_db.pt", ("3dpw", "val"): "3dpw_val_db.pt", ("3dpw", "test"): "3dpw_test_db.pt",
    ("h36m", "train"): "h36m_train_25fps_db.pt", ("mpii3d", "train"): "mpii3d_train_db.pt",
    ("mpii3d", "val"): "mpii3d_val_db.pt", ("posetrack", "train"): "posetrack_train_db.pt",
    ("insta", "train"): "insta_train_db.h5",
}


def _pixels(rng: np.random.Generator, n: int, joints: int, bbox: np.ndarray) -> np.ndarray:
    """(n, joints, 3) x, y in pixels around each frame's box, visibility 0/1."""
    xy = bbox[:, None, :2] + rng.uniform(-0.5, 0.5, (n, joints, 2)) * bbox[:, None, 2:]
    vis = (rng.uniform(size=(n, joints, 1)) > 0.2).astype(np.float64)
    return np.concatenate([xy, vis], axis=2)


def vibe_db(dataset: str, split: str, lengths: tuple[int, ...], feature_dim: int = 2048, seed: int = 0) -> dict[str, np.ndarray]:
    """The dict VIBE's preprocessing writes for ``dataset``/``split``: one video per entry of ``lengths``."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    names = {"3dpw": "courtyard_walk_{:02d}_0", "h36m": "S1_Walking_{}_cam0", "mpii3d": "subj1_seq1_vid{}_seg0", "posetrack": "annotations/train/0{:05d}_mpii_train.json_0"}
    vid_name = np.concatenate([np.array([names[dataset].format(i)] * k) for i, k in enumerate(lengths)])
    frame_id = np.concatenate([np.arange(k) for k in lengths])
    bbox = np.stack([rng.uniform(400, 800, n), rng.uniform(300, 600, n), w := rng.uniform(150, 400, n), w], axis=1)
    features = rng.normal(0, 1, (n, feature_dim)).astype(np.float32)
    img_name = np.array([f"imageFiles/{v}/image_{f:05d}.jpg" for v, f in zip(vid_name, frame_id)])
    if dataset == "3dpw":
        joints3d = rng.normal(0, 0.5, (n, 49 if split == "train" else 14, 3)).astype(np.float32)
        joints2d = _pixels(rng, n, 14, bbox)
        joints2d[:, 12:, 2] = 0.0  # VIBE: 3DPW has no neck or head top
        return {"vid_name": vid_name, "frame_id": frame_id, "joints3D": joints3d, "joints2D": joints2d,
                "shape": rng.normal(0, 1, (n, 10)).astype(np.float32), "pose": rng.normal(0, 0.3, (n, 72)).astype(np.float32),
                "bbox": bbox, "img_name": img_name, "features": features, "valid": rng.uniform(size=n) > 0.1}
    if dataset == "posetrack":
        return {"img_name": img_name, "joints2D": _pixels(rng, n, 49, bbox), "bbox": bbox, "vid_name": vid_name, "features": features}
    db = {"vid_name": vid_name, "frame_id": np.array([f"img_{f + 1:06d}" for f in frame_id]),
          "joints3D": rng.normal(0, 0.5, (n, 49, 3)), "joints2D": _pixels(rng, n, 49, bbox),
          "bbox": bbox, "img_name": img_name, "features": features}
    if dataset == "h36m":
        db["pose"] = rng.normal(0, 0.3, (n, 72))
        db["shape"] = rng.normal(0, 1, (n, 10))
    if dataset == "mpii3d" and split == "val":
        db["valid_i"] = (rng.uniform(size=(n, 1)) > 0.1).astype(np.float64)
    return db


def write_vibe_db(folder: Path, dataset: str, split: str, lengths: tuple[int, ...], feature_dim: int = 2048, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """``joblib.dump`` (uncompressed, as VIBE) of :func:`vibe_db` under VIBE's file name; returns path and dict."""
    folder.mkdir(parents=True, exist_ok=True)
    db = vibe_db(dataset, split, lengths, feature_dim, seed)
    path = folder / DB_FILES[(dataset, split)]
    joblib.dump(db, path)
    return path, db


def write_insta_h5(folder: Path, lengths: tuple[int, ...], feature_dim: int = 2048, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """``insta_train_db.h5`` as VIBE's ``insta_utils.save_hdf5``: byte-string vid_name, 25 joints in 224-pixel crops."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    db = {
        "vid_name": np.concatenate([np.array([f"data/insta_variety/train/insta_{i:04d}.tfrecord-{i}"] * k, dtype=np.bytes_) for i, k in enumerate(lengths)]),
        "frame_id": np.concatenate([np.arange(k) for k in lengths]),
        "joints2D": np.concatenate([rng.uniform(10, 214, (n, 25, 2)), (rng.uniform(size=(n, 25, 1)) > 0.2).astype(np.float64)], axis=2),
        "features": rng.normal(0, 1, (n, feature_dim)).astype(np.float32),
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DB_FILES[("insta", "train")]
    with h5py.File(path, "w") as handle:
        for key, value in db.items():
            handle.create_dataset(key, data=value)
    return path, db
