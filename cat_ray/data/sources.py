"""The body model and the data splits a config names: the synthetic benchmark or VIBE-format files."""
from __future__ import annotations

from pathlib import Path

import torch

from cat_ray.body.model import MEAN_PARAMS_FILE, BodyModel, load_mean_params as read_mean_params, resolve_body_dir
from cat_ray.config import Config, ConfigError
from cat_ray.data.feature_corruption import corrupt_features
from cat_ray.data.synthetic import load_or_generate
from cat_ray.data.types import VideoSplit
from cat_ray.data.vibe_db import load_vibe_split
from cat_ray.models.regressor import MeanParams
from cat_ray.paths import cache_root

# data.source=vibe: which VIBE file serves each role. The 3D training source is Human3.6M, the
# 2D one InstaVariety; 3DPW trains (all ground truth) and validates/tests, as in the paper.
VIBE_ROLES = {
    "train/3dpw": ("3dpw", "train"),
    "train/h36m": ("h36m", "train"),
    "train/insta": ("insta", "train"),
    "val": ("3dpw", "val"),
    "test": ("3dpw", "test"),
}


def body_dir(cfg: Config) -> Path:
    return resolve_body_dir(cfg.body.model_path)


def load_body(cfg: Config) -> BodyModel:
    return BodyModel.from_dir(body_dir(cfg))


def load_mean_params(cfg: Config) -> MeanParams:
    """The regressor's starting pose, shape and camera (VIBE's smpl_mean_params.npz), neutral when absent."""
    folder = body_dir(cfg)
    if not (folder / MEAN_PARAMS_FILE).is_file():
        return MeanParams.neutral()
    params = read_mean_params(folder)
    return MeanParams(*(torch.as_tensor(params[key], dtype=torch.float32) for key in ("pose", "shape", "cam")))


def load_vibe_splits(cfg: Config, roles: tuple[str, ...] = tuple(VIBE_ROLES)) -> dict[str, VideoSplit]:
    """VIBE-format splits for ``roles``; training sources with a zero mix proportion are not read."""
    if not cfg.data.root:
        raise ConfigError(None, "data.root", "the folder of VIBE's *_db.pt files when data.source is vibe")
    mix = {"train/3dpw": cfg.data.mix_3dpw, "train/h36m": cfg.data.mix_h36m, "train/insta": cfg.data.mix_insta}
    splits = {}
    for role in roles:
        if mix.get(role, 1.0) == 0:
            continue
        dataset, split = VIBE_ROLES[role]
        loaded = load_vibe_split(Path(cfg.data.root), dataset, split)
        if loaded.features.shape[1] != cfg.data.feature_dim:
            raise ConfigError(None, "data.feature_dim", f"{loaded.features.shape[1]} to match the features of {dataset} {split}; got {cfg.data.feature_dim}")
        # The paper corrupts training and test videos alike (Tables V/VI).
        splits[role] = corrupt_features(loaded, cfg.data.corruption, seed=cfg.data.seed)
    return splits


def load_splits(cfg: Config) -> dict[str, VideoSplit]:
    """``train/3dpw``, ``train/h36m``, ``train/insta``, ``val``, ``test`` for the configured source."""
    if cfg.data.source == "vibe":
        return load_vibe_splits(cfg)
    root = Path(cfg.data.root) if cfg.data.root else cache_root() / "synthetic"
    return load_or_generate(cfg.data, body_dir(cfg), root)
