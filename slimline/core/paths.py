"""Where slimline keeps what it builds once and reuses: the cache root (demo checkpoint, engine caches)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """SLIMLINE_CACHE_DIR, or the user cache directory (platformdirs)."""
    override = os.environ.get("SLIMLINE_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("slimline"))
