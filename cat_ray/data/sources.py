"""The body model and the data splits a config names: the synthetic benchmark or VIBE-format files."""
from __future__ import annotations

from pathlib import Path

import torch

from cat_ray.body.model import MEAN_PARAMS_FILE, BodyModel, load_mean_params as read_mean_params, resolve_body_dir
from cat_ray.config import Config
from cat_ray.data.synthetic import load_or_generate
from cat_ray.data.types import VideoSplit
from cat_ray.models.regressor import MeanParams
from cat_ray.paths import cache_root


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


def load_splits(cfg: Config, body: BodyModel) -> dict[str, VideoSplit]:
    """``train/3dpw``, ``train/h36m``, ``train/insta``, ``val``, ``test`` for the configured source."""
    root = Path(cfg.data.root) if cfg.data.root else cache_root() / "synthetic"
    return load_or_generate(cfg.data, body_dir(cfg), root)
