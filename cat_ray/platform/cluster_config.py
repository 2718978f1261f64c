"""Offline check of a ``ray up`` cluster file against Ray's own cluster-config schema.

Uses Ray's private ``prepare_config`` (merges the provider's defaults) and ``validate_config``
(JSON schema of Ray's keys, head type, global against per-type worker counts). No credentials and
no cloud calls; typos inside a cloud's ``node_config`` are not caught (that schema is the cloud's).
A private API: the package pins Ray.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml

from cat_ray.config import ConfigError


def validate_cluster_file(path: str | Path) -> dict[str, Any]:
    """Load and validate ``path``; return the prepared config (defaults filled). Raises ConfigError."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise ConfigError(src, "<file>", "file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(src, "<file>", f"not valid YAML: {err}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("provider"), dict) or "type" not in raw["provider"]:
        raise ConfigError(src, "provider.type", "a cluster file with a provider section (type: aws, gcp, ...)")
    try:
        prepared = prepare_config(copy.deepcopy(raw))
    except (ValueError, KeyError, TypeError, AttributeError, AssertionError, NotImplementedError) as err:
        # Ray's merging trips over a malformed file before its schema check: say what the schema says.
        _schema_errors(raw, src)
        raise ConfigError(src, _key_of(err), str(err).strip("'\"") or type(err).__name__) from None
    try:
        validate_config(prepared)
    except jsonschema.ValidationError as err:
        raise _as_config_error(err, src) from None
    except (ValueError, RuntimeError) as err:
        raise ConfigError(src, _key_of(err), str(err)) from None
    _check_worker_counts(prepared, src)
    return prepared


def _schema_errors(raw: dict[str, Any], src: str) -> None:
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    try:
        jsonschema.validate(raw, schema)
    except jsonschema.ValidationError as err:
        raise _as_config_error(err, src) from None


def _as_config_error(err: Any, src: str) -> ConfigError:
    """A jsonschema error -> the dotted key it is about (the unexpected key itself for a typo)."""
    path = [str(p) for p in err.absolute_path]
    unexpected = re.findall(r"'([^']+)' was unexpected", err.message)
    if err.validator == "additionalProperties" and unexpected:
        path.append(unexpected[0])
    return ConfigError(src, ".".join(path) or "<top>", err.message)


def _key_of(err: Exception) -> str:
    text = str(err)
    for key in ("max_workers", "min_workers", "head_node_type", "available_node_types", "provider"):
        if key in text:
            return key
    return "<top>"


def _check_worker_counts(config: dict[str, Any], src: str) -> None:
    """Per node type min <= max, and max of a worker type within the global max (Ray caps silently)."""
    for name, node_type in config["available_node_types"].items():
        low, high = node_type.get("min_workers", 0), node_type.get("max_workers", 0)
        if low > high:
            raise ConfigError(src, f"available_node_types.{name}.min_workers", f"at most max_workers ({high}); got {low}")
        if name != config["head_node_type"] and high > config["max_workers"]:
            raise ConfigError(src, f"available_node_types.{name}.max_workers",
                              f"at most the global max_workers ({config['max_workers']}); got {high}")
