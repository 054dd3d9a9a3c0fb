"""Where the harness finds the source tree and keeps what it builds."""

from __future__ import annotations

import os
from pathlib import Path


def source_root() -> Path:
    """The repository: the directory holding Kbuild and kmod/."""
    env = os.environ.get("PAGEBUF_SRC")
    if env:
        return Path(env).resolve()
    # python/pagebuf/vm/paths.py -> repository root
    return Path(__file__).resolve().parents[3]


def cache_root() -> Path:
    """Built artefacts live outside the repository, keyed by their inputs."""
    env = os.environ.get("PAGEBUF_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pagebuf"
