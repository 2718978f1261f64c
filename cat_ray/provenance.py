"""Where a run came from: the code's git commit, the command, the machine and the library versions."""
from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(where: Path | None = None) -> dict[str, str]:
    """``{"commit", "dirty"}`` of the repository holding ``where`` (default: cat-ray's own code); {} outside git."""
    cwd = Path(where) if where else PACKAGE_DIR
    commit = _git(cwd, "rev-parse", "HEAD")
    if not commit:
        return {}
    dirty = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": str(bool(dirty)).lower()}


def run_provenance() -> dict[str, object]:
    """Everything needed to tell how a run was made, written next to its config."""
    import torch

    return {
        "git": git_state(), "command": sys.argv, "host": platform.node(), "python": platform.python_version(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
