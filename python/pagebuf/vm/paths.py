"""Where the harness finds the source tree and keeps what it builds."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import VmError


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


# Every spelling of the two guest architectures the harness boots.
_ARCHES = {
    "x86_64": "x86_64",
    "x86": "x86_64",
    "amd64": "x86_64",
    "arm64": "arm64",
    "aarch64": "arm64",
}


def normalize_arch(arch: str) -> str:
    """`x86_64` or `arm64`, from any usual spelling (`amd64`, `aarch64`, ...)."""
    try:
        return _ARCHES[arch]
    except KeyError:
        raise VmError(f"unsupported guest architecture {arch!r}: use x86_64 or arm64") from None
