"""Configuration: defaults, YAML, dotted overrides, and refusals that name the file and the key."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cat_ray.config import (
    Config, ConfigError, build_config, flatten, config_to_dict, format_offsets, load_config, parse_offsets, save_config,
)

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_defaults_are_the_papers():
    cfg = Config()
    assert cfg.model.offsets == (-2, -1, 0, 1, 2)
    assert (cfg.loss.w_theta, cfg.loss.w_beta, cfg.loss.w_2d, cfg.loss.w_3d) == (120.0, 0.06, 300.0, 300.0)
    assert (cfg.optim.lr, cfg.optim.lr_decay, cfg.optim.lr_patience) == (5e-5, 0.1, 5)
    assert (cfg.train.epochs, cfg.train.iters_per_epoch, cfg.train.batch_size) == (50, 500, 32)


def test_yaml_then_overrides_in_that_order(tmp_path):
    path = write(tmp_path, {"loss": {"w_3d": 100}, "model": {"offsets": [2, 1, 0]}})
    cfg = load_config(path, ["loss.w_3d=250", "optim.lr=1e-4", "model.offsets=-3..3"])
    assert cfg.loss.w_3d == 250.0 and isinstance(cfg.loss.w_3d, float)
    assert cfg.optim.lr == 1e-4
    assert cfg.model.offsets == (-3, -2, -1, 0, 1, 2, 3)


@pytest.mark.parametrize("text, expected", [("-2..2", (-2, -1, 0, 1, 2)), ("2..-2", (2, 1, 0, -1, -2)),
                                            ("2,1,0", (2, 1, 0)), ("0", (0,)), ("4..0", (4, 3, 2, 1, 0))])
def test_offset_strings(text, expected):
    assert parse_offsets(text) == expected
    assert parse_offsets(format_offsets(expected)) == expected


@pytest.mark.parametrize("tree, key, expected", [
    ({"model": {"ofsets": [0]}}, "model.ofsets", "unknown key"),
    ({"modle": {}}, "modle", "unknown key"),
    ({"model": {"offsets": []}}, "model.offsets", "non-empty"),
    ({"model": {"offsets": [1, 0, 1]}}, "model.offsets", "without duplicates"),
    ({"model": {"offsets": ["a"]}}, "model.offsets", "integer"),
    ({"model": {"aggregator": "lstm"}}, "model.aggregator", "one of confidence"),
    ({"loss": {"w_3d": -1}}, "loss.w_3d", "non-negative"),
    ({"loss": {"w_3d": "high"}}, "loss.w_3d", "a number"),
    ({"optim": {"lr": 0}}, "optim.lr", "> 0"),
    ({"optim": {"lr": -1e-3}}, "optim.lr", "> 0"),
    ({"train": {"epochs": 2.5}}, "train.epochs", "an integer"),
    ({"data": {"seq_len": 4}, "model": {"offsets": [-4, 0, 4], "edge_policy": "valid"}}, "data.seq_len", "longer than the offsets need"),
    ({"data": {"seq_len": 3}, "model": {"offsets": [0, 1, 2, 3]}}, "data.seq_len", "longer than the largest offset"),
    ({"data": {"corruption": {"ratio": 1.5}}}, "data.corruption.ratio", "in [0, 1]"),
    ({"data": {"corruption": {"mode": "left"}}}, "data.corruption.mode", "one of none"),
    ({"train": {"device": "tpu"}}, "train.device", "auto, cpu or cuda"),
])
def test_bad_values_are_refused_naming_file_and_key(tmp_path, tree, key, expected):
    path = write(tmp_path, tree)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == key
    assert str(path) in str(err.value) and key in str(err.value) and expected in str(err.value)


def test_bad_override_names_the_override_and_key():
    with pytest.raises(ConfigError, match=r"--set: optim\.lrr: unknown key"):
        load_config(None, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(None, ["optim.lr=0"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["optim.lr"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_resolved_config_round_trips(tmp_path):
    cfg = build_config({"model": {"offsets": [3, 2, 1, 0]}}, {"loss.w_mesh": 1.0})
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    flat = flatten(config_to_dict(cfg))
    assert flat["model.offsets"] == [3, 2, 1, 0] and flat["loss.w_mesh"] == 1.0


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    load_config(path)
