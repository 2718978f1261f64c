"""Where cat-ray keeps generated files (stand-in body model, synthetic benchmark cache)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$CAT_RAY_CACHE`` or ``~/.cache/cat-ray``: generated data and body models, never committed."""
    return Path(os.environ.get("CAT_RAY_CACHE") or Path.home() / ".cache" / "cat-ray")
