"""``cat-ray eval``: the paper's evaluation protocol on a checkpoint, for the synthetic benchmark and VIBE-format data.

One code path for both: every frame of every video predicted once (non-overlapping windows of
``data.seq_len``, the last one aligned to the video's end; inside a window, t+d is clamped to the
window), 14 joints from the H36M regressor, pelvis-centred MPJPE and PA-MPJPE, PVE against the
neutral-model mesh of the ground truth, acceleration error within each video.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path


from cat_ray.config import ConfigError, CorruptionConfig, config_to_dict
from cat_ray.data.feature_corruption import corrupt_features
from cat_ray.data.sources import body_dir
from cat_ray.data.synthetic import load_or_generate
from cat_ray.data.types import VideoSplit
from cat_ray.data.vibe_db import VIBE_SOURCES, load_vibe_split
from cat_ray.evaluate import frame_arrays, mean_weights, predict_split
from cat_ray.paths import cache_root
from cat_ray.train_loop import load_trained_model

EVAL_DATASETS = ("synthetic", "3dpw", "mpii3d", "h36m")


@dataclass
class EvalReport:
    checkpoint: str
    data: str
    split: str
    corruption: dict
    overall: dict[str, float]  # mpjpe, pa_mpjpe, pve (mm), accel_err (mm/frame^2)
    agg_weights: dict[str, float]  # mean aggregation weight per offset
    per_video: list[dict]  # {"video": index, "frames": n, metrics...}
    config: dict

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))


def parse_corruption(text: str) -> CorruptionConfig:
    """``center:0.33:2`` -> CorruptionConfig(mode="center", ratio=0.33, consecutive=2)."""
    parts = text.split(":")
    try:
        mode, ratio, consecutive = parts[0], float(parts[1]), int(parts[2]) if len(parts) > 2 else 1
    except (IndexError, ValueError):
        raise ConfigError("--corrupt", "corrupt", f"MODE:CR[:CnSc], e.g. center:0.33:2; got {text!r}") from None
    if mode not in ("none", "center", "random") or not 0 <= ratio <= 1 or consecutive < 1:
        raise ConfigError("--corrupt", "corrupt", f"mode center|random|none, CR in [0, 1], CnSc >= 1; got {text!r}")
    return CorruptionConfig(mode=mode, ratio=ratio, consecutive=consecutive)


def load_eval_split(cfg, data: str, split: str, root: str | None) -> VideoSplit:
    if data == "synthetic":
        if split not in ("val", "test"):
            raise ConfigError("--split", "split", f"val or test for the synthetic benchmark; got {split!r}")
        cache = Path(root or cfg.data.root or cache_root() / "synthetic")
        return load_or_generate(cfg.data, body_dir(cfg), cache)[split]
    if data not in VIBE_SOURCES:
        raise ConfigError("--data", "data", f"one of {', '.join(EVAL_DATASETS)}; got {data!r}")
    folder = root or cfg.data.root
    if not folder:
        raise ConfigError("--root", "root", "the folder of VIBE's *_db.pt files (or data.root in the run's config)")
    loaded = load_vibe_split(Path(folder), data, split)
    return corrupt_features(loaded, cfg.data.corruption, seed=cfg.data.seed)


def evaluate_checkpoint(checkpoint: Path, data: str = "synthetic", split: str = "test",
                        corruption: CorruptionConfig | None = None, root: str | None = None,
                        device: str = "cpu") -> EvalReport:
    """Evaluate a run's checkpoint folder (``best/`` or ``checkpoints/last``) on a dataset's split."""
    model, cfg, body = load_trained_model(Path(checkpoint), device)
    if corruption is not None:
        cfg = replace(cfg, data=replace(cfg.data, corruption=corruption))
    target = load_eval_split(cfg, data, split, root).to(device)
    pred = predict_split(model, target, cfg.data.seq_len, cfg.train.eval_batch_size)
    arrays = frame_arrays(pred, target, body)  # joints and meshes once; every figure below reads them
    overall = arrays.evaluate().as_dict()
    bounds = target.video_start.tolist()
    per_video = [{"video": video, "frames": end - first, **arrays.evaluate(slice(first, end)).as_dict()}
                 for video, (first, end) in enumerate(zip(bounds[:-1], bounds[1:]))]
    weights = {str(d): w for d, w in mean_weights(pred, model.offsets).items()}
    return EvalReport(str(checkpoint), data, split, asdict(cfg.data.corruption), overall, weights, per_video,
                      config_to_dict(cfg))
