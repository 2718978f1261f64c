"""cluster.yaml against Ray's own cluster-config schema, offline (no credentials, no cloud calls)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from cat_ray.config import ConfigError
from cat_ray.platform.cluster_config import validate_cluster_file

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def _fails(tmp_path: Path, tree: dict, key: str) -> ConfigError:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError) as info:
        validate_cluster_file(path)
    assert (info.value.source, info.value.key) == (str(path), key), str(info.value)
    return info.value


def test_shipped_cluster_file_passes_rays_schema():
    config = validate_cluster_file(CLUSTER)
    head, worker = config["available_node_types"]["head"], config["available_node_types"]["gpu_worker"]
    assert config["provider"]["type"] == "aws" and config["head_node_type"] == "head"
    assert head["max_workers"] == 0 and worker["max_workers"] <= config["max_workers"]
    assert worker["node_config"]["InstanceType"].startswith(("g", "p"))  # GPU workers
    # Setup reaches every node (prepare_config merges the common commands into both lists).
    assert any("pip install" in c and "cat-ray" in c for c in config["worker_setup_commands"])
    start = " ".join(config["head_start_ray_commands"])
    assert "mlflow server" in start and "--serve-artifacts" in start and "--host 0.0.0.0" in start
    assert all("MLFLOW_TRACKING_URI" in " ".join(config[k]) for k in ("head_start_ray_commands", "worker_start_ray_commands"))


def test_typo_in_a_ray_key_fails_naming_file_and_key(tmp_path, raw):
    raw["max_worker"] = raw.pop("max_workers")
    assert "max_worker" in _fails(tmp_path, raw, "max_worker").expected


def test_typo_inside_a_node_type_fails(tmp_path, raw):
    raw["available_node_types"]["gpu_worker"]["min_worker"] = 1
    _fails(tmp_path, raw, "available_node_types.gpu_worker.min_worker")


def test_malformed_commands_fail_before_ray_merges_them(tmp_path, raw):
    raw["setup_commands"] = "pip install cat-ray"
    _fails(tmp_path, raw, "setup_commands")


@pytest.mark.parametrize("mutate,key", [
    (lambda r: r["available_node_types"]["gpu_worker"].update(min_workers=6), "max_workers"),  # above global max 4
    (lambda r: r["available_node_types"]["gpu_worker"].update(min_workers=3, max_workers=2), "available_node_types.gpu_worker.min_workers"),
    (lambda r: r["available_node_types"]["gpu_worker"].update(max_workers=8), "available_node_types.gpu_worker.max_workers"),
])
def test_inconsistent_worker_counts_fail(tmp_path, raw, mutate, key):
    mutate(raw)
    _fails(tmp_path, raw, key)


def test_unknown_head_type_or_provider_fails(tmp_path, raw):
    bad = copy.deepcopy(raw)
    bad["head_node_type"] = "cpu_head"
    _fails(tmp_path, bad, "head_node_type")
    raw["provider"]["type"] = "awz"
    _fails(tmp_path, raw, "provider")


def test_missing_file_fails(tmp_path):
    with pytest.raises(ConfigError) as info:
        validate_cluster_file(tmp_path / "nope.yaml")
    assert info.value.key == "<file>"
