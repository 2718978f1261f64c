"""One typed configuration for a run: model, loss, data, body model and training.

Defaults are the paper's (Sec. IV-C, METHOD.md). Values are layered strictly:
dataclass defaults <- YAML file <- dotted ``--set key=value`` overrides. The same dotted
names (``model.offsets``, ``loss.w_3d``, ``optim.lr``) are used by YAML, search spaces,
MLflow parameters and the command line.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

AGGREGATOR_NAMES = ("confidence", "average", "gru", "tcn", "vibe", "thmr", "single", "lstm_kalman")  # = models.aggregators.AGGREGATORS
EDGE_POLICIES = ("replicate", "valid")
CORRUPTION_MODES = ("none", "center", "random")
SPLIT_KINDS = ("3dpw", "h36m", "insta")


class ConfigError(ValueError):
    """A user error in a configuration: names the source file, the dotted key and what was expected."""

    def __init__(self, source: str | None, key: str, expected: str):
        self.source, self.key, self.expected = source, key, expected
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {expected}")


@dataclass(frozen=True)
class ModelConfig:
    aggregator: str = "confidence"  # one of AGGREGATOR_NAMES
    offsets: tuple[int, ...] = (-2, -1, 0, 1, 2)  # the set d of Eq. 6
    predictor_hidden: int = 2048  # width of the 3 FC layers of each P_d
    dropout: float = 0.1  # between the FC layers of P_d
    regressor_dropout: float = 0.5  # in G and Ga, as HMR/SPIN/VIBE
    variance_hidden: int = 512  # hidden width of Ve's two FC layers (Eq. 9-10)
    regressor_hidden: int = 1024  # HMR/SPIN regressor: feat+157 -> 1024 -> 1024 -> 157
    regressor_iterations: int = 3
    temporal_hidden: int = 1024  # GRU hidden (gru, vibe) and TCN/THMR channels
    temporal_layers: int = 2
    edge_policy: str = "replicate"  # frames whose t+d leaves the window: replicate the edge frame, or score only frames with all neighbours ("valid")


@dataclass(frozen=True)
class LossConfig:
    # Eq. 3 weights (paper: w_theta 120, w_beta 0.06, w_2d = w_3d = 300; w_mesh not given).
    w_theta: float = 120.0
    w_beta: float = 0.06
    w_mesh: float = 0.0
    w_3d: float = 300.0
    w_2d: float = 300.0


@dataclass(frozen=True)
class CorruptionConfig:
    mode: str = "none"  # none | center | random blocking (Tables V/VI)
    ratio: float = 0.0  # CR: fraction of a video's frames corrupted
    consecutive: int = 1  # CnSc: corrupted frames come in runs of this length


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"  # synthetic | vibe (real VIBE-format files)
    root: str = ""  # dataset folder for source=vibe; cache folder for synthetic ("" = ~/.cache/cat-ray)
    feature_dim: int = 2048
    seq_len: int = 16  # window length T
    stride: int = 8  # window stride for training windows
    seed: int = 0  # the benchmark's own seed: same seed, same videos and encoder
    train_videos: int = 64  # per training source
    val_videos: int = 16
    test_videos: int = 16
    frames_per_video: int = 96
    # Proportions of the training sources in a batch (VIBE mixes 2D and 3D sources).
    mix_3dpw: float = 0.4
    mix_h36m: float = 0.3
    mix_insta: float = 0.3
    feature_noise: float = 0.05  # per-frame feature noise of the synthetic encoder
    corruption: CorruptionConfig = field(default_factory=CorruptionConfig)


@dataclass(frozen=True)
class BodyConfig:
    # A folder holding SMPL_NEUTRAL.pkl and J_regressor_h36m.npy: the stand-in (made on first use
    # when empty) or the official files after `cat-ray body import`.
    model_path: str = ""


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 5e-5
    lr_decay: float = 0.1  # ReduceLROnPlateau factor
    lr_patience: int = 5  # epochs without a lower training loss before decaying
    weight_decay: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 50
    iters_per_epoch: int = 500
    batch_size: int = 32  # windows per step, global over all workers
    eval_batch_size: int = 64
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # fp32 | bf16 (autocast of the model's matmuls, on GPU and CPU alike)
    compile: bool = False  # torch.compile the model for training: for GPUs (slower on a CPU; the first steps compile)
    grad_clip: float = 0.0  # 0 disables
    weight_trace_every: int = 0  # record the batch-mean aggregation weight per offset every N steps (Fig. 7); 0 = off


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    body: BodyConfig = field(default_factory=BodyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------- parsing


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, annotation: Any, source: str | None, key: str) -> Any:
    """Check ``value`` against a field's type, converting only where lossless (int -> float, list -> tuple)."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        item_type = typing.get_args(annotation)[0]
        if isinstance(value, str):
            value = parse_offsets(value, source, key) if item_type is int else [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(source, key, f"expected a list of {item_type.__name__}, got {value!r}")
        return tuple(_coerce(v, item_type, source, key) for v in value)
    if origin in (typing.Union, types.UnionType):
        raise AssertionError("config fields are not unions")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(source, key, f"expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(source, key, f"expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(source, key, f"expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(source, key, f"expected a string, got {value!r}")
    raise AssertionError(f"unsupported annotation {annotation!r}")


def parse_offsets(text: str, source: str | None = None, key: str = "model.offsets") -> tuple[int, ...]:
    """Decode an offset set written as a string: ``"-2..2"`` (a range, either direction) or ``"2,1,0"``."""
    text = text.strip()
    try:
        if ".." in text:
            lo, hi = (int(part) for part in text.split(".."))
            step = 1 if hi >= lo else -1
            return tuple(range(lo, hi + step, step))
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(source, key, f'expected offsets like "-2..2" or "2,1,0", got {text!r}') from None


def format_offsets(offsets: tuple[int, ...]) -> str:
    """The canonical string of an offset set, the inverse of :func:`parse_offsets` (``"-2,-1,0,1,2"``)."""
    return ",".join(str(d) for d in offsets)


def _build(cls: type, values: dict[str, Any], source: str | None, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(source, prefix.rstrip(".") or "<top>", f"expected a mapping, got {values!r}")
    types_ = _field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ConfigError(source, prefix + unknown[0], f"unknown key; valid keys here: {', '.join(types_)}")
    kwargs = {}
    for name, annotation in types_.items():
        if name not in values:
            continue
        key = prefix + name
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = _build(annotation, values[name], source, key + ".")
        else:
            kwargs[name] = _coerce(values[name], annotation, source, key)
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples become lists) suitable for YAML/JSON."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"offsets": [..]}}`` -> ``{"model.offsets": [..]}``."""
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{name}."))
        else:
            flat[prefix + name] = value
    return flat


def set_dotted(tree: dict[str, Any], key: str, value: Any, source: str | None = None) -> None:
    """Set ``tree["a"]["b"] = value`` for ``key="a.b"``, refusing keys the config does not have."""
    parts = key.split(".")
    cls: Any = Config
    node = tree
    for i, part in enumerate(parts):
        types_ = _field_types(cls)
        if part not in types_:
            raise ConfigError(source, key, f"unknown key; valid keys under '{'.'.join(parts[:i]) or '<top>'}': {', '.join(types_)}")
        annotation = types_[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(annotation):
                raise ConfigError(source, key, "is a section; set one of its keys")
            node[part] = value
            return
        if not dataclasses.is_dataclass(annotation):
            raise ConfigError(source, key, f"'{'.'.join(parts[: i + 1])}' is a value, not a section")
        node = node.setdefault(part, {})
        cls = annotation


def parse_override(text: str) -> tuple[str, Any]:
    """``"loss.w_3d=300"`` -> ``("loss.w_3d", 300)``; the value is read as YAML."""
    if "=" not in text:
        raise ConfigError("--set", text, "expected KEY=VALUE, e.g. loss.w_3d=300")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def build_config(tree: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
                 source: str | None = None, override_source: str = "--set") -> Config:
    """Defaults <- ``tree`` (from ``source``) <- dotted ``overrides``; validated."""
    merged = json.loads(json.dumps(tree or {}))
    if not isinstance(merged, dict):
        raise ConfigError(source, "<top>", "expected a mapping of sections (model, loss, data, body, optim, train)")
    cfg = _build(Config, merged, source, "")
    if overrides:
        for key, value in overrides.items():
            set_dotted(merged, key, value, override_source)
        cfg = _build(Config, merged, override_source, "")
    try:
        validate(cfg, source)
    except ConfigError as err:
        if overrides and err.key in overrides:  # blame the layer the value came from
            raise ConfigError(override_source, err.key, err.expected) from None
        raise
    return cfg


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "<file>", "file not found")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(str(path), "<file>", f"not valid YAML: {err}") from None
    if not isinstance(tree, dict):
        raise ConfigError(str(path), "<top>", "expected a mapping of sections")
    return tree


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Load ``path`` (YAML; None = defaults) and apply ``--set`` style overrides."""
    tree = load_yaml(path) if path else {}
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    return build_config(tree, overrides, str(path) if path else None)


def config_yaml(cfg: Config) -> str:
    """The fully resolved config (every key) as YAML."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the fully resolved config (every key) next to a run."""
    Path(path).write_text(config_yaml(cfg))


# --------------------------------------------------------------------------- validation


def required_context(offsets: tuple[int, ...]) -> tuple[int, int]:
    """Frames needed before and after t: ``(max(0, -min d), max(0, max d))``."""
    return max(0, -min(offsets)), max(0, max(offsets))


def validate(cfg: Config, source: str | None = None) -> None:
    """Refuse impossible values, naming the key. Runs before anything is built or started."""
    m, d, t, o = cfg.model, cfg.data, cfg.train, cfg.optim

    def need(ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise ConfigError(source, key, expected)

    need(m.aggregator in AGGREGATOR_NAMES, "model.aggregator", f"one of {', '.join(AGGREGATOR_NAMES)}; got {m.aggregator!r}")
    need(len(m.offsets) > 0, "model.offsets", "a non-empty set of integer offsets, e.g. [-2, -1, 0, 1, 2]")
    need(len(set(m.offsets)) == len(m.offsets), "model.offsets", f"offsets without duplicates; got {list(m.offsets)}")
    need(m.edge_policy in EDGE_POLICIES, "model.edge_policy", f"one of {', '.join(EDGE_POLICIES)}; got {m.edge_policy!r}")
    for key in ("predictor_hidden", "variance_hidden", "regressor_hidden", "regressor_iterations", "temporal_hidden", "temporal_layers"):
        need(getattr(m, key) >= 1, f"model.{key}", f"a positive integer; got {getattr(m, key)}")
    need(0.0 <= m.dropout < 1.0, "model.dropout", f"a probability in [0, 1); got {m.dropout}")
    need(0.0 <= m.regressor_dropout < 1.0, "model.regressor_dropout", f"a probability in [0, 1); got {m.regressor_dropout}")
    for key in ("w_theta", "w_beta", "w_mesh", "w_3d", "w_2d"):
        value = getattr(cfg.loss, key)
        need(value >= 0.0, f"loss.{key}", f"a non-negative weight; got {value}")
    need(d.source in ("synthetic", "vibe"), "data.source", f"synthetic or vibe; got {d.source!r}")
    need(d.feature_dim >= 8, "data.feature_dim", f"an integer >= 8; got {d.feature_dim}")
    need(d.seq_len >= 1, "data.seq_len", f"a positive window length; got {d.seq_len}")
    need(d.stride >= 1, "data.stride", f"a positive stride; got {d.stride}")
    before, after = required_context(m.offsets)
    if m.edge_policy == "valid":
        need(d.seq_len > before + after, "data.seq_len",
             f"a window longer than the offsets need with edge_policy=valid ({before} before + {after} after + 1 = {before + after + 1} frames); got {d.seq_len}")
    else:
        need(d.seq_len > max(before, after), "data.seq_len",
             f"a window longer than the largest offset ({max(before, after)}) so that t+d stays in the window for some t; got {d.seq_len}")
    for key in ("train_videos", "val_videos", "test_videos"):
        need(getattr(d, key) >= 1, f"data.{key}", f"a positive count; got {getattr(d, key)}")
    need(d.frames_per_video >= d.seq_len, "data.frames_per_video", f"at least data.seq_len ({d.seq_len}) frames; got {d.frames_per_video}")
    for key in ("mix_3dpw", "mix_h36m", "mix_insta"):
        need(getattr(d, key) >= 0.0, f"data.{key}", f"a non-negative proportion; got {getattr(d, key)}")
    need(d.mix_3dpw + d.mix_h36m + d.mix_insta > 0, "data.mix_3dpw", "at least one training source with a positive proportion")
    need(d.feature_noise >= 0.0, "data.feature_noise", f"a non-negative noise level; got {d.feature_noise}")
    c = d.corruption
    need(c.mode in CORRUPTION_MODES, "data.corruption.mode", f"one of {', '.join(CORRUPTION_MODES)}; got {c.mode!r}")
    need(0.0 <= c.ratio <= 1.0, "data.corruption.ratio", f"a corruption ratio CR in [0, 1]; got {c.ratio}")
    need(c.consecutive >= 1, "data.corruption.consecutive", f"a run length CnSc >= 1; got {c.consecutive}")
    need(o.lr > 0.0, "optim.lr", f"a learning rate > 0; got {o.lr}")
    need(0.0 < o.lr_decay <= 1.0, "optim.lr_decay", f"a decay factor in (0, 1]; got {o.lr_decay}")
    need(o.lr_patience >= 0, "optim.lr_patience", f"a non-negative number of epochs; got {o.lr_patience}")
    need(o.weight_decay >= 0.0, "optim.weight_decay", f"a non-negative weight decay; got {o.weight_decay}")
    need(t.epochs >= 1, "train.epochs", f"a positive number of epochs; got {t.epochs}")
    need(t.iters_per_epoch >= 1, "train.iters_per_epoch", f"a positive number of iterations; got {t.iters_per_epoch}")
    need(t.batch_size >= 1, "train.batch_size", f"a positive batch size; got {t.batch_size}")
    need(t.eval_batch_size >= 1, "train.eval_batch_size", f"a positive batch size; got {t.eval_batch_size}")
    need(t.device in ("auto", "cpu", "cuda"), "train.device", f"auto, cpu or cuda; got {t.device!r}")
    need(t.precision in ("fp32", "bf16"), "train.precision", f"fp32 or bf16; got {t.precision!r}")
    need(t.grad_clip >= 0.0, "train.grad_clip", f"a non-negative clip norm; got {t.grad_clip}")
    need(t.weight_trace_every >= 0, "train.weight_trace_every", f"a step interval >= 0 (0 = off); got {t.weight_trace_every}")
