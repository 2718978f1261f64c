"""Shared fixtures: small generated inputs, every run writing under tmp_path."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Generated files of tests never land in the user's cache.
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "false")


@pytest.fixture(scope="session")
def body_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in body model (seed 0), generated once per test session into a tmp folder."""
    from cat_ray.body.standin import make_standin

    return make_standin(tmp_path_factory.mktemp("body") / "standin", seed=0)
